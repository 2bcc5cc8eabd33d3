"""The callback dialer's decisions (callback.schedule) and the dialer itself (callback.dialer).

No PBX and no database: the dialer gets a fake store (`CallbackRecords`) and a fake
`originate`, both of which record what they were asked; the snapshots are built by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.config import CallbackDialing, Config, Queue, load_config
from acd.config.model import Callback, EscalationStep
from acd.expected_wait import WaitEstimate
from acd.state import (
    HELD_PLACE_PREFIX,
    AgentView,
    DeviceState,
    MemberView,
    QueueView,
    StateSnapshot,
    WaitingCaller,
)
from acd.state_machines import AgentState
from callback.dialer import CallbackDialer
from callback.schedule import (
    HeldPlace,
    max_penalty_after,
    place_position,
    places_wanted,
    retry_at,
    welcome_announcement,
)

DESK = """\
hotline:
  numbers: ["100"]
  languages: [en]
  region: DE
  default_queue: first
daemon:
  ami:
    secret: {env: FIRSTLINE_TEST_AMI_SECRET}
skills:
  - {id: general, name: General}
queues:
  - id: first
    name: First
    skills: {general: 4}
    ring_timeout: 20
    escalation:
      - {after: 45, min_level: 3}
      - {after: 120, min_level: 1}
  - id: second
    name: Second
    skills: {general: 1}
  - id: third
    name: Third
    skills: {general: 1}
agents:
  - {id: a1, name: A1, extension: "201", secret: {env: FIRSTLINE_TEST_A1}, skills: {general: 5},
     site: hq}
sites:
  - id: hq
    timezone: Europe/Berlin
    hours: {mon-sun: ["00:00-24:00"]}
sla:
  priorities:
    normal: {rank: 1, respond_within: 60, resolve_within: 600}
callback:
  dial: "PJSIP/{number}@trunk"
  attempts: 3
  retry_after: [300, 900]
  places_per_queue: 2
  place_refresh: 60
"""

QUEUES = ("first", "second", "third")
STAFFED = (AgentState.AVAILABLE, AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP)
NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
T = NOW.timestamp()


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path: Path = tmp_path_factory.mktemp("desk") / "desk.yaml"
    path.write_text(DESK, encoding="utf-8")
    return load_config(path)


def _agent(
    agent_id: str, state: AgentState, queues: Mapping[str, bool], *, paused: bool = False
) -> AgentView:
    """An agent in `state`, member of each queue in `queues` (queue -> paused there)."""
    return AgentView(
        agent_id=agent_id,
        interface=f"PJSIP/{agent_id}",
        state=state,
        pause_reason="break" if paused else None,
        device=DeviceState.NOT_IN_USE,
        queues={q: MemberView(q, 0, p, "break" if p else None) for q, p in queues.items()},
        call=None,
        since=T - 600,
        wrapup_until=None,
    )


def _waiting(uid: str, priority: int, joined_at: float, position: int = 1) -> WaitingCaller:
    return WaitingCaller(uid, "+4930999999", joined_at, priority, position, ringing=False)


def _snapshot(
    agents: Sequence[AgentView] = (), waiting: Mapping[str, Sequence[WaitingCaller]] | None = None
) -> StateSnapshot:
    counts: dict[AgentState, int] = {}
    for agent in agents:
        counts[agent.state] = counts.get(agent.state, 0) + 1
    return StateSnapshot(
        as_of=T,
        queues={q: QueueView(q, tuple(w)) for q, w in (waiting or {}).items()},
        agents={a.agent_id: a for a in agents},
        calls={},
        agent_counts=counts,
    )


# --- retry_at -----------------------------------------------------------------------------


def test_retry_spacing_follows_the_list_and_repeats_its_last_value() -> None:
    policy = CallbackDialing(attempts=5, retry_after=[60, 300, 900])
    spacings = [retry_at(policy, made, NOW) for made in range(1, 6)]
    assert spacings == [
        NOW + dt.timedelta(seconds=60),
        NOW + dt.timedelta(seconds=300),
        NOW + dt.timedelta(seconds=900),
        NOW + dt.timedelta(seconds=900),
        None,  # five tries made, five allowed
    ]


def test_no_retry_once_the_attempts_are_used_up() -> None:
    policy = CallbackDialing(attempts=1, retry_after=[300])
    assert retry_at(policy, 1, NOW) is None
    assert retry_at(policy, 7, NOW) is None
    policy = CallbackDialing(attempts=3, retry_after=[300, 900])
    assert retry_at(policy, 2, NOW) == NOW + dt.timedelta(seconds=900)
    assert retry_at(policy, 3, NOW) is None


@settings(max_examples=300, deadline=None)
@given(
    attempts=st.integers(1, 20),
    spacing=st.lists(st.integers(1, 86_400), min_size=1, max_size=6),
    made=st.integers(1, 30),
)
def test_retry_at_property(attempts: int, spacing: list[int], made: int) -> None:
    policy = CallbackDialing(attempts=attempts, retry_after=spacing)
    got = retry_at(policy, made, NOW)
    if made >= attempts:
        assert got is None
    else:
        expected = spacing[made - 1] if made <= len(spacing) else spacing[-1]
        assert got == NOW + dt.timedelta(seconds=expected)


# --- place_position -----------------------------------------------------------------------


def test_higher_priority_and_earlier_joins_are_ahead() -> None:
    waiting = [
        _waiting("early-low", 0, T - 300),
        _waiting("late-high", 5, T - 10),
        _waiting("late-low", 0, T - 20),
        _waiting("early-lower", -1, T - 900),
    ]
    # Priority 0, joined 100 s ago: behind early-low (earlier) and late-high (higher),
    # ahead of late-low (later) and early-lower (lower, however long it waited).
    assert place_position(0, T - 100, waiting, {}) == 3
    assert place_position(9, T - 1, waiting, {}) == 1
    assert place_position(-5, T - 10_000, waiting, {}) == 5
    assert place_position(0, T, [], {}) == 1


def test_equal_priority_and_join_time_goes_behind() -> None:
    waiting = [_waiting("same", 2, T - 50)]
    assert place_position(2, T - 50, waiting, {}) == 2
    assert place_position(2, T - 50.001, waiting, {}) == 1


def test_held_places_count_with_their_callers_original_join_time() -> None:
    # A held place's Local channel joined the queue just now at app_queue's priority 0;
    # what counts is its caller's priority and first join, which only `held` knows.
    waiting = [_waiting("cb-1-abc;2", 0, T - 1), _waiting("caller", 0, T - 200)]
    assert place_position(0, T - 300, waiting, {}) == 1  # without the mapping: first
    held = {"cb-1-abc;2": HeldPlace("cb-1-abc;2", priority=3, joined_at=T - 1)}
    assert place_position(0, T - 300, waiting, held) == 2  # its caller's priority 3 is ahead
    held = {"cb-1-abc;2": HeldPlace("cb-1-abc;2", priority=0, joined_at=T - 500)}
    assert place_position(0, T - 300, waiting, held) == 2  # its caller joined earlier
    assert place_position(0, T - 600, waiting, held) == 1  # older than both
    assert place_position(0, T - 100, waiting, held) == 3  # younger than both
    # A held place that is not in the line (already left) counts for nothing.
    ghost = {"cb-9-zzz;2": HeldPlace("cb-9-zzz;2", priority=9, joined_at=T - 9999)}
    assert place_position(0, T - 600, waiting, ghost) == 1


_ENTRY = st.tuples(st.integers(-3, 3), st.integers(0, 50), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(_ENTRY, max_size=15),
    priority=st.integers(-3, 3),
    joined=st.integers(0, 50),
    originals=st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 50)), min_size=15),
)
def test_position_is_one_plus_the_entries_that_precede(
    entries: list[tuple[int, int, bool]],
    priority: int,
    joined: int,
    originals: list[tuple[int, int]],
) -> None:
    waiting = []
    held: dict[str, HeldPlace] = {}
    effective: list[tuple[int, float]] = []
    for index, (their_priority, their_join, is_held) in enumerate(entries):
        uid = f"{HELD_PLACE_PREFIX}{index};2" if is_held else f"17000.{index}"
        waiting.append(_waiting(uid, their_priority, T + their_join, index + 1))
        if is_held:
            original_priority, original_join = originals[index]
            held[uid] = HeldPlace(uid, original_priority, T + original_join)
            effective.append((original_priority, T + original_join))
        else:
            effective.append((their_priority, T + their_join))
    position = place_position(priority, T + joined, waiting, held)
    precede = sum(1 for p, j in effective if (-p, j) <= (-priority, T + joined))
    assert position == 1 + precede
    assert 1 <= position <= len(waiting) + 1


# --- places_wanted ------------------------------------------------------------------------


def test_only_staffed_unpaused_members_of_the_queue_count(desk: Config) -> None:
    agents = [
        _agent("avail", AgentState.AVAILABLE, {"first": False}),
        _agent("ringing", AgentState.RINGING, {"first": False}),
        _agent("talking", AgentState.ON_CALL, {"second": False}),
        _agent("wrapup", AgentState.WRAP_UP, {"second": False}),
        _agent("paused-all", AgentState.PAUSED, {"first": True, "second": True}, paused=True),
        _agent("paused-here", AgentState.AVAILABLE, {"third": True, "second": False}),
        _agent("out", AgentState.LOGGED_OUT, {"third": False}),
    ]
    snapshot = _snapshot(agents)
    assert places_wanted(desk, snapshot, QUEUES, {}) == {"first": 2, "second": 2}
    wide = desk.model_copy(update={"callback": CallbackDialing(places_per_queue=10)})
    # 'second' has talking, wrapup and paused-here (paused only in 'third'); 'third' nobody.
    assert places_wanted(wide, snapshot, QUEUES, {}) == {"first": 2, "second": 3}


def test_places_are_capped_and_reduced_by_what_is_held(desk: Config) -> None:
    agents = [_agent(f"x{i}", AgentState.AVAILABLE, dict.fromkeys(QUEUES, False)) for i in range(5)]
    snapshot = _snapshot(agents)
    assert places_wanted(desk, snapshot, QUEUES, {}) == dict.fromkeys(QUEUES, 2)
    assert places_wanted(desk, snapshot, QUEUES, {"first": 1, "second": 2, "third": 7}) == {
        "first": 1
    }


def test_closed_queues_get_no_places(desk: Config) -> None:
    agents = [_agent("a", AgentState.AVAILABLE, dict.fromkeys(QUEUES, False))]
    snapshot = _snapshot(agents)
    assert places_wanted(desk, snapshot, ["second"], {}) == {"second": 1}
    assert places_wanted(desk, snapshot, [], {}) == {}


_AGENT = st.tuples(
    st.sampled_from(list(AgentState)),
    st.dictionaries(st.sampled_from([*QUEUES, "other"]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(
    agents=st.lists(_AGENT, max_size=12),
    open_queues=st.sets(st.sampled_from(QUEUES)),
    held=st.dictionaries(st.sampled_from(QUEUES), st.integers(0, 6)),
    limit=st.integers(1, 50),
)
def test_places_wanted_property(
    desk: Config,
    agents: list[tuple[AgentState, dict[str, bool]]],
    open_queues: set[str],
    held: dict[str, int],
    limit: int,
) -> None:
    config = desk.model_copy(update={"callback": CallbackDialing(places_per_queue=limit)})
    views = [_agent(f"a{i}", state, queues) for i, (state, queues) in enumerate(agents)]
    wanted = places_wanted(config, _snapshot(views), sorted(open_queues), held)
    assert set(wanted) <= open_queues
    for queue in open_queues:
        staffed = sum(
            1 for state, queues in agents if state in STAFFED and queues.get(queue) is False
        )
        more = min(limit, staffed) - held.get(queue, 0)
        assert wanted.get(queue, 0) == max(more, 0)
        assert queue not in wanted or wanted[queue] > 0


# --- max_penalty_after --------------------------------------------------------------------


def test_penalty_bound_follows_the_escalation_steps(desk: Config) -> None:
    first = desk.queue("first")  # requires level 4; steps: 45 s -> level 3, 120 s -> level 1
    assert max_penalty_after(first, 0, default=0) == 0
    assert max_penalty_after(first, 44.9, default=0) == 0
    assert max_penalty_after(first, 45, default=0) == 1
    assert max_penalty_after(first, 119, default=0) == 1
    assert max_penalty_after(first, 120, default=0) == 3
    assert max_penalty_after(first, 10**6, default=0) == 3
    assert max_penalty_after(first, 10, default=7) == 7
    assert max_penalty_after(desk.queue("second"), 10**6, default=2) == 2  # no steps


@settings(max_examples=200, deadline=None)
@given(
    afters=st.lists(st.integers(1, 599), min_size=1, max_size=4, unique=True),
    levels=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    waited=st.floats(0, 1000, allow_nan=False),
    default=st.integers(0, 4),
)
def test_penalty_bound_property(
    afters: list[int], levels: list[int], waited: float, default: int
) -> None:
    steps = [
        EscalationStep(after=after, min_level=level)
        for after, level in zip(sorted(afters), sorted(levels, reverse=True), strict=False)
    ]
    queue = Queue(id="q", name="Q", skills={"general": 5}, escalation=steps)
    reached = [5 - s.min_level for s in steps if waited >= s.after]
    assert max_penalty_after(queue, waited, default) == (reached[-1] if reached else default)
    later = max_penalty_after(queue, waited + 30, default)
    if reached:
        assert later >= max_penalty_after(queue, waited, default)


# --- welcome_announcement -----------------------------------------------------------------

WAIT_TOLD = ("firstline/expected-wait", "digits/{}", "minutes")
OFFER = "firstline/callback-offer-9"


def _told(minutes: int) -> tuple[str, ...]:
    return tuple(part.format(minutes) for part in WAIT_TOLD)


def _reliable(seconds: float) -> WaitEstimate:
    return WaitEstimate(seconds, reliable=True, reason="test")


@pytest.mark.parametrize(
    ("estimate", "heard"),
    [
        # An agent is free, or about to be: straight into the queue, no offer.
        (_reliable(0.0), ()),
        (_reliable(4.0), ()),
        # Told ("about 1 minute") but not worth leaving for.
        (_reliable(45.0), _told(1)),
        (_reliable(60.0), _told(1)),
        (_reliable(61.0), (*_told(2), OFFER)),
        (_reliable(20 * 60.0), (*_told(20), OFFER)),
        # Too long to say with core sounds: only the offer.
        (_reliable(20 * 60.0 + 1), (OFFER,)),
        # Not known: the caller would rather hear the option.
        (None, (OFFER,)),
        (WaitEstimate(None, reliable=False, reason="no qualified agent logged in"), (OFFER,)),
        (WaitEstimate(5.0, reliable=False, reason="only 3 handle-time samples"), (OFFER,)),
    ],
)
def test_a_joining_caller_hears_the_wait_and_the_offer_only_when_worth_it(
    desk: Config, estimate: WaitEstimate | None, heard: tuple[str, ...]
) -> None:
    assert desk.queue("first").callback.offer_on_joining_over == 60  # the default
    assert welcome_announcement(desk.queue("first"), estimate) == heard


def test_the_offer_threshold_and_key_come_from_the_queue(desk: Config) -> None:
    def queue(**callback: Any) -> Queue:
        return desk.queue("first").model_copy(update={"callback": Callback(**callback)})

    always = queue(offer_on_joining_over=0)
    assert welcome_announcement(always, _reliable(3.0)) == (OFFER,)
    assert welcome_announcement(always, _reliable(0.0)) == ()  # a free agent: never an offer
    # The installed file names of * and #, as the prompts are rendered (not "-*").
    star = queue(digit="*", offer_on_joining_over=0)
    assert welcome_announcement(star, _reliable(3.0)) == ("firstline/callback-offer-star",)
    assert welcome_announcement(queue(digit="#"), None) == ("firstline/callback-offer-hash",)
    assert welcome_announcement(queue(enabled=False), _reliable(600.0)) == _told(10)
    assert welcome_announcement(queue(enabled=False), None) == ()


# --- the dialer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeCallback:
    id: int
    ticket_number: str
    number: str
    queue: str
    queue_joined_at: dt.datetime
    priority: int = 0
    attempts: int = 0
    created_at: dt.datetime = NOW


class FakeRecords:
    """A store of callbacks that records every call (the `CallbackRecords` protocol)."""

    def __init__(self, *callbacks: FakeCallback) -> None:
        self.by_id = {c.id: c for c in callbacks}
        self.pending = {c.id for c in callbacks}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for call, args in self.calls if call == name]

    def _note(self, name: str, **args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    async def claim(
        self,
        *,
        now: dt.datetime,
        owner: str,
        lease: dt.timedelta,
        queues: Sequence[str] | None = None,
        limit: int = 1,
    ) -> Sequence[FakeCallback]:
        self._note("claim", now=now, owner=owner, lease=lease, queues=queues, limit=limit)
        due = sorted(
            (self.by_id[i] for i in self.pending),
            key=lambda c: (-c.priority, c.queue_joined_at, c.id),
        )
        picked = [c for c in due if queues is None or c.queue in queues][:limit]
        self.pending -= {c.id for c in picked}
        return picked

    async def renew(
        self, callback_id: int, *, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> None:
        self._note("renew", id=callback_id, owner=owner, lease=lease)

    async def release(self, callback_id: int, *, owner: str, now: dt.datetime) -> None:
        self._note("release", id=callback_id, owner=owner)
        self.pending.add(callback_id)

    async def start_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        agent: str | None,
        uniqueid: str | None,
        lease: dt.timedelta,
    ) -> int:
        self._note(
            "start_attempt",
            id=callback_id,
            owner=owner,
            agent=agent,
            uniqueid=uniqueid,
            lease=lease,
        )
        return 1000 + callback_id

    async def finish_attempt(
        self,
        callback_id: int,
        *,
        owner: str,
        now: dt.datetime,
        outcome: Any,
        retry_at: dt.datetime | None,
        agent: str | None = None,
    ) -> Any:
        self._note(
            "finish_attempt",
            id=callback_id,
            owner=owner,
            outcome=outcome,
            retry_at=retry_at,
            agent=agent,
        )
        return self.by_id[callback_id]

    async def get(self, callback_id: int) -> FakeCallback:
        self._note("get", id=callback_id)
        return self.by_id[callback_id]


class FakeOriginate:
    """AMI Originate as the dialer sees it: records the fields, answers as scripted."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[Mapping[str, str | Sequence[str]]] = []

    async def __call__(self, fields: Mapping[str, str | Sequence[str]]) -> bool:
        self.sent.append(fields)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def _variables(fields: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    raw = fields["Variable"]
    assert isinstance(raw, list)
    return dict(item.split("=", 1) for item in raw)


def _staff(queue_counts: Mapping[str, int]) -> list[AgentView]:
    return [
        _agent(f"{queue}-{i}", AgentState.AVAILABLE, {queue: False})
        for queue, count in queue_counts.items()
        for i in range(count)
    ]


CB1 = FakeCallback(1, "T-0001", "+493012345678", "first", NOW - dt.timedelta(seconds=50))
CB2 = FakeCallback(2, "T-0002", "+442071234567", "first", NOW - dt.timedelta(seconds=30))
CB3 = FakeCallback(3, "T-0003", "+493099999999", "second", NOW - dt.timedelta(seconds=500), 4)


async def test_step_claims_for_wanted_queues_and_holds_a_place_at_the_callers_position(
    desk: Config,
) -> None:
    records = FakeRecords(CB1, CB3)
    originate = FakeOriginate()
    dialer = CallbackDialer(desk, records, originate, owner="node-a")
    waiting = [
        _waiting("c-early", 0, T - 100),
        _waiting("c-high", 5, T - 5),
        _waiting("c-late", 0, T - 20),
    ]
    # 'first': one agent (one place); 'second': staffed but closed; 'third': nobody.
    snapshot = _snapshot(_staff({"first": 1, "second": 3}), {"first": waiting})
    await dialer.step(NOW, snapshot, ["first", "third"])

    claims = records.named("claim")
    assert [(c["queues"], c["limit"], c["owner"]) for c in claims] == [(["first"], 1, "node-a")]
    assert claims[0]["lease"] == dt.timedelta(seconds=60 + 60)
    assert len(originate.sent) == 1
    fields = originate.sent[0]
    assert fields["Channel"] == "Local/hold@firstline-callback/n"
    assert (fields["Context"], fields["Exten"], fields["Priority"]) == (
        "firstline-callback",
        "customer",
        "1",
    )
    channel_id = fields["ChannelId"]
    assert isinstance(channel_id, str)
    assert channel_id.startswith(f"{HELD_PLACE_PREFIX}1-")
    variables = _variables(fields)
    assert all(name.startswith("__FIRSTLINE_CB_") for name in variables)
    assert variables["__FIRSTLINE_CB_POSITION"] == "3"  # behind c-early and c-high
    assert variables["__FIRSTLINE_CB_TICKET"] == "T-0001"
    assert variables["__FIRSTLINE_CB_ID"] == "1"
    assert variables["__FIRSTLINE_CB_QUEUE"] == "first"
    assert variables["__FIRSTLINE_CB_MAX_PENALTY"] == "1"  # waited 50 s: past the 45 s step
    assert fields["CallerID"] == '"Callback T-0001" <+493012345678>'
    assert list(dialer.held()) == [f"{channel_id};2"]
    assert records.named("release") == []


async def test_a_second_place_goes_behind_a_held_place_by_the_callers_original_join(
    desk: Config,
) -> None:
    records = FakeRecords(CB1, CB2)
    originate = FakeOriginate()
    dialer = CallbackDialer(desk, records, originate, owner="node-a")
    await dialer.step(NOW, _snapshot(_staff({"first": 1})), ["first"])
    (place,) = dialer.held()
    # CB1's place joined the queue just now; CB1's caller joined 50 s ago, CB2's 30 s ago.
    later = NOW + dt.timedelta(seconds=5)
    waiting = [_waiting(place, 0, later.timestamp() - 1), _waiting("caller", 0, T - 40)]
    await dialer.step(later, _snapshot(_staff({"first": 2}), {"first": waiting}), ["first"])
    assert [c["limit"] for c in records.named("claim")] == [1, 1]
    second = _variables(originate.sent[1])
    assert second["__FIRSTLINE_CB_TICKET"] == "T-0002"
    assert second["__FIRSTLINE_CB_POSITION"] == "3"  # behind CB1's place and 'caller'
    assert len(dialer.held()) == 2
    assert [r["id"] for r in records.named("renew")] == [1]


@pytest.mark.parametrize("refusal", [False, OSError("AMI link down")])
async def test_a_refused_originate_gives_the_claim_back(
    desk: Config, refusal: bool | Exception
) -> None:
    records = FakeRecords(CB1)
    dialer = CallbackDialer(desk, records, FakeOriginate(refusal), owner="node-a")
    snapshot = _snapshot(_staff({"first": 1}))
    # A refusal and a raising originate alike: the round goes on, the claim goes back.
    await dialer.step(NOW, snapshot, ["first"])
    assert records.named("release") == [{"id": 1, "owner": "node-a"}]
    assert dialer.held() == {}
    # Given back: the next round holds it again.
    await dialer.step(NOW, snapshot, ["first"])
    assert len(dialer.held()) == 1


async def test_a_place_that_ends_without_an_agent_is_released(desk: Config) -> None:
    records = FakeRecords(CB1, CB3)
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-a")
    await dialer.step(NOW, _snapshot(_staff({"first": 1, "second": 1})), ["first", "second"])
    by_callback = {held.callback.id: held.channel_id for held in dialer.held().values()}
    assert sorted(by_callback) == [1, 3]
    await dialer.originate_ended(by_callback[3], ok=True, now=NOW)  # an agent answered
    await dialer.originate_ended("cb-77-unknown", ok=False, now=NOW)
    assert records.named("release") == []
    await dialer.originate_ended(by_callback[1], ok=False, now=NOW)
    assert records.named("release") == [{"id": 1, "owner": "node-a"}]
    assert [h.callback.id for h in dialer.held().values()] == [3]


async def test_agent_answered_starts_the_attempt_and_gives_the_dial_string(desk: Config) -> None:
    records = FakeRecords(CB1)
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-a")
    await dialer.step(NOW, _snapshot(_staff({"first": 1})), ["first"])
    (held,) = dialer.held().values()
    result = await dialer.agent_answered(held.channel_id, 1, "alice", NOW)
    assert result is not None
    callback, dial = result
    assert callback.id == 1
    assert dial == "PJSIP/+493012345678@trunk"
    (start,) = records.named("start_attempt")
    assert start == {
        "id": 1,
        "owner": "node-a",
        "agent": "alice",
        "uniqueid": held.channel_id,
        "lease": dt.timedelta(hours=2),
    }
    assert held.dialling
    assert held.agent == "alice"
    # The place has left the line for the talk: its end is the attempt's, not a release.
    await dialer.originate_ended(held.channel_id, ok=False, now=NOW)
    assert records.named("release") == []
    assert list(dialer.held().values()) == [held]
    # While the customer is called, the lease covers the talk and the place is not counted:
    # the one agent's queue may hold the next callback.
    records.by_id[5] = replace(CB2, id=5)
    records.pending.add(5)
    await dialer.step(NOW, _snapshot(_staff({"first": 1})), ["first"])
    assert records.named("renew")[0]["lease"] == dt.timedelta(hours=2)
    assert [c["limit"] for c in records.named("claim")] == [1, 1]


async def test_agent_answered_after_a_restart_and_when_the_claim_is_not_ours(
    desk: Config,
) -> None:
    records = FakeRecords(CB1)
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-b")
    result = await dialer.agent_answered("cb-1-fromearlier", 1, None, NOW)
    assert result is not None
    assert result[1] == "PJSIP/+493012345678@trunk"
    assert records.named("get") == [{"id": 1}]
    assert "cb-1-fromearlier;2" in dialer.held()
    records.fail["start_attempt"] = LookupError("lease lost")
    assert await dialer.agent_answered("cb-1-fromearlier", 1, "bob", NOW) is None
    assert dialer.held() == {}


@pytest.mark.parametrize(
    ("status", "outcome", "retry_seconds"),
    [
        ("ANSWER", "answered", None),
        ("BUSY", "busy", 300),
        ("busy", "busy", 300),
        ("NOANSWER", "no_answer", 300),
        ("CHANUNAVAIL", "failed", 300),
        ("CONGESTION", "failed", 300),
        ("", "failed", 300),
    ],
)
async def test_attempt_outcomes_and_their_retry(
    desk: Config, status: str, outcome: str, retry_seconds: int | None
) -> None:
    records = FakeRecords(CB1)
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-a")
    await dialer.step(NOW, _snapshot(_staff({"first": 1})), ["first"])
    (held,) = dialer.held().values()
    await dialer.agent_answered(held.channel_id, 1, "alice", NOW)
    got, callback = await dialer.attempt_ended(held.channel_id, 1, status, NOW)
    assert got == outcome
    assert callback is CB1
    (finish,) = records.named("finish_attempt")
    assert finish["outcome"] == outcome
    assert finish["agent"] == "alice"
    expected = None if retry_seconds is None else NOW + dt.timedelta(seconds=retry_seconds)
    assert finish["retry_at"] == expected
    assert dialer.held() == {}


@pytest.mark.parametrize(("made_before", "retry_seconds"), [(1, 900), (2, None), (5, None)])
async def test_retry_uses_the_attempts_already_made(
    desk: Config, made_before: int, retry_seconds: int | None
) -> None:
    records = FakeRecords(replace(CB1, attempts=made_before))
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-a")
    await dialer.step(NOW, _snapshot(_staff({"first": 1})), ["first"])
    (held,) = dialer.held().values()
    await dialer.agent_answered(held.channel_id, 1, "alice", NOW)
    assert await dialer.attempt_ended(held.channel_id, 1, "NOANSWER", NOW) == (
        "no_answer",
        records.by_id[1],
    )
    expected = None if retry_seconds is None else NOW + dt.timedelta(seconds=retry_seconds)
    assert records.named("finish_attempt")[0]["retry_at"] == expected


async def test_attempt_ended_after_a_restart_reads_the_attempts_from_the_store(
    desk: Config,
) -> None:
    records = FakeRecords(replace(CB1, attempts=2))
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-b")
    assert await dialer.attempt_ended("cb-1-old", 1, "BUSY", NOW) == ("busy", None)
    assert records.named("finish_attempt")[0]["retry_at"] is None  # third of three tries
    assert records.named("finish_attempt")[0]["agent"] is None


@pytest.mark.parametrize("error", [RuntimeError("db gone"), LookupError("no such callback")])
async def test_a_place_whose_lease_cannot_be_renewed_is_dropped(
    desk: Config, error: Exception
) -> None:
    records = FakeRecords(CB1, CB2)
    dialer = CallbackDialer(desk, records, FakeOriginate(), owner="node-a")
    snapshot = _snapshot(_staff({"first": 2}))
    await dialer.step(NOW, snapshot, ["first"])
    assert len(dialer.held()) == 2
    records.fail["renew"] = error
    records.pending.add(9)
    records.by_id[9] = replace(CB2, id=9, ticket_number="T-0009")
    await dialer.step(NOW, snapshot, ["first"])
    assert len(records.named("renew")) == 2
    # Both places forgotten, so the round asks for two again (only #9 is still pending).
    assert records.named("claim")[-1]["limit"] == 2
    assert [h.callback.id for h in dialer.held().values()] == [9]
