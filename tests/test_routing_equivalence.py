"""The optimized routing core against the straightforward one it replaced, on random inputs.

``reference_decide`` below is ``decide_route`` as it was before the per-config plans, the
per-minute site memo and the slot-set decision (git d356204), kept verbatim as an oracle:
every field of every decision, reasons included, must be equal -- with a fresh table, and
with one table shared by many calls, instants and eviction of its memos.
"""

# ruff: noqa: C901, RUF100

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import random
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd import routing
from acd.config import Agent, Config, Queue, Site
from acd.expected_wait import WaitEstimate
from acd.routing import (
    DEFAULT_PREFERRED_RING_SECONDS,
    PREFERRED_FALLBACK_BOOST,
    AgentAvailability,
    CallFacts,
    QueueLoad,
    RouteDecision,
    RoutingTable,
    RoutingView,
    decide_route,
)
from tests.test_routing_properties import _NOWS, _VIEWS, _calls, desks

_LANGUAGE_SKILL = re.compile(r"^lang-([a-z]{2})$")
_NORMAL_PRIORITY = "normal"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- the oracle (verbatim, renamed) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SiteHours:
    site: Site
    zone: zoneinfo.ZoneInfo
    holidays: frozenset[dt.date]
    spans: tuple[tuple[tuple[dt.time, dt.time], ...], ...]  # index: weekday (0 = Monday)


@dataclass(frozen=True, slots=True)
class _QueueEntry:
    queue: Queue
    index: int
    floors: Mapping[str, int]
    languages: frozenset[str]
    members: tuple[tuple[str, int], ...]
    excluded: tuple[tuple[str, str], ...]
    sites: tuple[str, ...]


class _ReferenceTable:
    """Everything about one ``Config`` that does not change between calls, indexed.

    Build it once per config (``_ReferenceTable(config)``) and pass it to ``decide_route``;
    building costs O(queues x agents), a decision then costs O(queues requiring the call's
    skills) plus the expected-wait estimate of the queue (and of its overflow when one is
    configured). Immutable after construction.
    """

    __slots__ = (
        "_agents",
        "_by_skill",
        "_entries",
        "_language_entry",
        "_sites",
        "config",
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        self._agents: dict[str, Agent] = {a.id: a for a in config.agents}
        self._sites: dict[str, _SiteHours] = {s.id: _site_hours(s) for s in config.sites}
        entries = [_queue_entry(config, q, i) for i, q in enumerate(config.queues)]
        self._entries: dict[str, _QueueEntry] = {e.queue.id: e for e in entries}
        by_skill: dict[str, list[_QueueEntry]] = {}
        for entry in entries:
            for skill in entry.queue.skills:
                by_skill.setdefault(skill, []).append(entry)
        self._by_skill: dict[str, tuple[_QueueEntry, ...]] = {
            k: tuple(v) for k, v in by_skill.items()
        }
        self._language_entry = self._language_siblings(config)

    def _language_siblings(self, config: Config) -> dict[str, _QueueEntry]:
        default = self._entries[config.hotline.default_queue]
        plain = {s for s in default.queue.skills if _LANGUAGE_SKILL.match(s) is None}
        result: dict[str, _QueueEntry] = {}
        for language in config.hotline.languages:
            if language in default.languages:
                result[language] = default
                continue
            sibling = next(
                (
                    e
                    for e in self._entries.values()
                    if language in e.languages
                    and e.queue.level == default.queue.level
                    and {s for s in e.queue.skills if _LANGUAGE_SKILL.match(s) is None} == plain
                ),
                default,
            )
            result[language] = sibling
        return result

    def members(self, queue_id: str) -> tuple[tuple[str, int], ...]:
        """(agent id, penalty) of every member of the queue, best first (KeyError if none)."""
        return self._entries[queue_id].members


def _site_hours(site: Site) -> _SiteHours:
    hours = site.opening_hours()
    spans = tuple(tuple(hours.get(day, ())) for day in _WEEKDAYS)
    return _SiteHours(site, zoneinfo.ZoneInfo(site.timezone), frozenset(site.holidays), spans)


def _queue_entry(config: Config, queue: Queue, index: int) -> _QueueEntry:
    final = queue.final_max_penalty
    floors = {skill: max(1, level - final) for skill, level in queue.skills.items()}
    languages = frozenset(
        m.group(1) for s in queue.skills if (m := _LANGUAGE_SKILL.match(s)) is not None
    )
    members: list[tuple[int, int, str]] = []
    excluded: list[tuple[str, str]] = []
    sites: list[str] = []
    for position, agent in enumerate(config.agents):
        penalty = queue.penalty_of(agent.skills)
        if penalty is not None and penalty <= final:
            members.append((penalty, position, agent.id))
            if agent.site not in sites:
                sites.append(agent.site)
        else:
            excluded.append((agent.id, _why_not(queue, floors, agent)))
    members.sort()
    site_order = {s.id: i for i, s in enumerate(config.sites)}
    return _QueueEntry(
        queue=queue,
        index=index,
        floors=floors,
        languages=languages,
        members=tuple((agent_id, penalty) for penalty, _, agent_id in members),
        excluded=tuple(excluded),
        sites=tuple(sorted(sites, key=lambda s: site_order.get(s, len(site_order)))),
    )


def _why_not(queue: Queue, floors: Mapping[str, int], agent: Agent) -> str:
    for skill in queue.skills:
        if skill not in agent.skills:
            return f"lacks skill {skill}"
    beyond = " (beyond final escalation)" if queue.escalation else ""
    for skill, floor in floors.items():
        if agent.skills[skill] < floor:
            return f"{skill} level {agent.skills[skill]} < {floor}{beyond}"
    raise AssertionError("unreachable: a qualified agent is a member")  # pragma: no cover


# --- opening hours --------------------------------------------------------------------------


def _open(hours: _SiteHours, now: dt.datetime) -> bool:
    local = now.astimezone(hours.zone)
    if local.date() in hours.holidays:
        return False
    moment = local.time()
    for start, end in hours.spans[local.weekday()]:
        # 24:00 is stored as time.max, which no real instant passes.
        if start <= moment and (moment < end or end == dt.time.max):
            return True
    return False


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


# --- the decision ---------------------------------------------------------------------------


def _language_of(config: Config, spoken: str) -> tuple[str, str | None]:
    code = spoken.replace("-", "_").split("_", 1)[0].lower()
    if code in config.hotline.languages:
        return code, None
    default = config.hotline.languages[0]
    return default, f"language {spoken!r} not offered; {default} applies"


def _priority(config: Config, facts: CallFacts, reasons: list[str]) -> int:
    priorities = config.sla.priorities
    if _NORMAL_PRIORITY in priorities:
        rank = priorities[_NORMAL_PRIORITY].rank
    else:
        rank = min(p.rank for p in priorities.values())
    source = "no open ticket"
    for ticket in facts.open_tickets:
        level = priorities.get(ticket.priority)
        if level is None:
            reasons.append(f"ticket {ticket.number}: unknown priority {ticket.priority!r}")
        elif level.rank > rank:
            # A ticket only raises: the call may be about something new.
            rank, source = level.rank, f"ticket {ticket.number} ({ticket.priority})"
    reasons.append(f"priority {rank} from {source}")
    customer = facts.customer
    if customer is not None and customer.sla_package is not None:
        package = config.sla.packages.get(customer.sla_package)
        if package is None:
            reasons.append(f"unknown SLA package {customer.sla_package!r}: no boost")
        elif package.priority_boost:
            rank += package.priority_boost
            reasons.append(f"+{package.priority_boost} for package {customer.sla_package}")
    return rank


def _covers(entry: _QueueEntry, required: Mapping[str, int]) -> bool:
    floors = entry.floors
    for skill, level in required.items():
        floor = floors.get(skill)
        if floor is None or floor < level:
            return False
    return True


def _language_rank(entry: _QueueEntry, language: str) -> int:
    if language in entry.languages:
        return 0
    return 1 if not entry.languages else 2


def _candidates(
    table: _ReferenceTable, facts: CallFacts, language: str, reasons: list[str]
) -> list[_QueueEntry]:
    required = facts.required_skills
    if not required:
        entry = (
            table._language_entry.get(language)
            or table._entries[table.config.hotline.default_queue]
        )
        default = table._entries[table.config.hotline.default_queue]
        reasons.append(f"no skills asked: entry queue {entry.queue.id} for language {language}")
        return [entry] if entry is default else [entry, default]
    pools = [table._by_skill.get(skill, ()) for skill in required]
    smallest = min(pools, key=len)
    qualified = [e for e in smallest if _covers(e, required)]
    qualified.sort(key=lambda e: (_language_rank(e, language), e.index))
    asked = ", ".join(f"{s}>={lvl}" for s, lvl in sorted(required.items()))
    if qualified:
        reasons.append(
            f"qualified for {asked}: {', '.join(e.queue.id for e in qualified)}"
            f" (language {language} first)"
        )
    else:
        reasons.append(f"no queue admits only agents with {asked}")
    return qualified


def _queue_open(
    table: _ReferenceTable, entry: _QueueEntry, now: dt.datetime, seen: dict[str, bool]
) -> bool:
    for site_id in entry.sites:
        state = seen.get(site_id)
        if state is None:
            hours = table._sites.get(site_id)
            state = hours is not None and _open(hours, now)
            seen[site_id] = state
        if state:
            return True
    return False


def _wait(view: RoutingView, queue_id: str) -> tuple[float | None, WaitEstimate | None]:
    """Comparable seconds (inf when nobody can answer; None when unknown) and the estimate."""
    load = view.queues.get(queue_id)
    if load is None:
        load = _EMPTY_LOAD
    if load.snapshot.agents_logged_in == 0:
        return math.inf, load.estimate
    return load.estimate.seconds, load.estimate


_EMPTY_LOAD = QueueLoad(waiting=0)


def _qualified_agent(agent: Agent | None, required: Mapping[str, int]) -> bool:
    if agent is None:
        return False
    skills = agent.skills
    return all(skills.get(s, 0) >= lvl for s, lvl in required.items())


def _preferred(
    table: _ReferenceTable,
    facts: CallFacts,
    view: RoutingView | None,
    reasons: list[str],
) -> str | None:
    """The agent to ring first: available, qualified, owner of the most urgent ticket first."""
    people: list[tuple[str, str]] = []
    priorities = table.config.sla.priorities
    tickets = sorted(
        (t for t in facts.open_tickets if t.owner is not None),
        key=lambda t: -(priorities[t.priority].rank if t.priority in priorities else -1),
    )
    people.extend((t.owner, f"owner of ticket {t.number}") for t in tickets if t.owner)
    if facts.customer is not None and facts.customer.account_manager is not None:
        people.append((facts.customer.account_manager, "account manager"))
    for agent_id, role in people:
        agent = table._agents.get(agent_id)
        if agent is None:
            reasons.append(f"{role} {agent_id}: not a configured agent")
            continue
        if not _qualified_agent(agent, facts.required_skills):
            reasons.append(f"{role} {agent_id}: lacks a required skill level")
            continue
        if view is None:
            reasons.append(f"{role} {agent_id}: availability unknown, not rung")
            continue
        state = view.agents.get(agent_id)
        if state is None or not state.available:
            reasons.append(f"{role} {agent_id}: {_live_status(state)}")
            continue
        reasons.append(f"{role} {agent_id}: available, rung first")
        return agent_id
    return None


def _has_preferred_person(table: _ReferenceTable, facts: CallFacts) -> bool:
    agents = table._agents
    if any(t.owner in agents for t in facts.open_tickets if t.owner is not None):
        return True
    customer = facts.customer
    return customer is not None and customer.account_manager in agents


def _live_status(state: AgentAvailability | None) -> str:
    if state is None or not state.logged_in:
        return "logged out"
    if state.paused:
        return "paused"
    return "available" if state.available else "busy"


def reference_decide(
    config: Config,
    facts: CallFacts,
    now: dt.datetime,
    view: RoutingView | None = None,
    *,
    table: _ReferenceTable | None = None,
) -> RouteDecision:
    """Choose the queue, priority, penalty bounds and preferred agent for a hotline call.

    ``table`` must have been built from this very ``config`` (it is rebuilt when omitted,
    which costs O(queues x agents)); ``view`` is the live state, None when unknown.
    """
    _aware(now)
    if table is None:
        table = _ReferenceTable(config)
    elif table.config is not config:
        raise ValueError("the routing table was built from another config")
    reasons: list[str] = [f"hotline {facts.dialed or '?'}"]
    language, note = _language_of(config, facts.language)
    if note is not None:
        reasons.append(note)
    priority = _priority(config, facts, reasons)
    if _has_preferred_person(table, facts):
        # Whatever happens next (rung, unavailable, closed): the priority the call has in a
        # queue, and its callback, does not depend on the moment.
        priority += PREFERRED_FALLBACK_BOOST
        reasons.append(f"+{PREFERRED_FALLBACK_BOOST} for a preferred agent's fallback")

    candidates = _candidates(table, facts, language, reasons)
    if not candidates:
        reasons.append("unroutable: callback offered")
        return RouteDecision(
            status="unroutable",
            queue=None,
            priority=priority,
            max_penalty=0,
            min_penalty=0,
            max_wait=0,
            reasons=tuple(reasons),
        )

    customer = facts.customer
    package = (
        config.sla.packages.get(customer.sla_package)
        if customer is not None and customer.sla_package is not None
        else None
    )
    always = package is not None and package.coverage == "24x7"
    ctx = _Context(table, facts, language, now, always, reasons)
    chosen: _QueueEntry | None = None
    for entry in candidates:
        if ctx.is_open(entry):
            chosen = entry
            break
        reasons.append(f"{entry.queue.id}: no site of a member is open")
    if chosen is None:
        reasons.append("closed: callback offered")
        return RouteDecision(
            status="closed",
            queue=None,
            priority=priority,
            max_penalty=0,
            min_penalty=0,
            max_wait=0,
            reasons=tuple(reasons),
        )
    if always:
        reasons.append(f"24x7 coverage ({customer.sla_package if customer else '?'})")

    overflowed_from: str | None = None
    estimate: WaitEstimate | None = None
    if view is not None:
        chosen, overflowed_from, estimate = _overflow(ctx, chosen, view)

    preferred = _preferred(table, facts, view, reasons)
    queue = chosen.queue
    reasons.append(
        f"queue {queue.id}: {len(chosen.members)} eligible, max penalty 0 "
        f"widening to {queue.final_max_penalty}"
    )
    return RouteDecision(
        status="queued",
        queue=queue.id,
        priority=priority,
        max_penalty=0,
        min_penalty=0,
        max_wait=queue.max_wait,
        reasons=tuple(reasons),
        preferred_agent=preferred,
        preferred_ring_seconds=DEFAULT_PREFERRED_RING_SECONDS if preferred else 0,
        overflowed_from=overflowed_from,
        expected_wait=estimate,
        eligible=chosen.members,
        excluded=chosen.excluded,
    )


@dataclass(slots=True)
class _Context:
    """One decision's inputs and memo of site states (per call, never shared)."""

    table: _ReferenceTable
    facts: CallFacts
    language: str
    now: dt.datetime
    always: bool
    reasons: list[str]
    seen: dict[str, bool] = field(default_factory=dict)

    def is_open(self, entry: _QueueEntry) -> bool:
        return self.always or _queue_open(self.table, entry, self.now, self.seen)


def _overflow(
    ctx: _Context, chosen: _QueueEntry, view: RoutingView
) -> tuple[_QueueEntry, str | None, WaitEstimate | None]:
    overflow = chosen.queue.overflow
    here, estimate = _wait(view, chosen.queue.id)
    if overflow is None or here is None or here <= overflow.expected_wait_over:
        return chosen, None, estimate
    target = ctx.table._entries.get(overflow.queue)
    refusal = _overflow_refusal(ctx, chosen, target)
    there, other = (None, None) if target is None else _wait(view, target.queue.id)
    if refusal is None and (there is None or there >= here):
        refusal = "not shorter"
    if refusal is not None or target is None or there is None:
        ctx.reasons.append(f"overflow {overflow.queue}: {refusal}")
        return chosen, None, estimate
    ctx.reasons.append(
        f"overflow {chosen.queue.id} -> {target.queue.id}: expected wait "
        f"{here:g} s > {overflow.expected_wait_over} s, there {there:g} s"
    )
    return target, chosen.queue.id, other


def _overflow_refusal(ctx: _Context, chosen: _QueueEntry, target: _QueueEntry | None) -> str | None:
    if target is None or not _covers(target, ctx.facts.required_skills):
        return "not qualified for this call"
    if _language_rank(target, ctx.language) > _language_rank(chosen, ctx.language):
        return f"not in language {ctx.language}"
    if not ctx.is_open(target):
        return "closed"
    return None


# --- the comparisons -------------------------------------------------------------------------


def _same(fast: RouteDecision, reference: RouteDecision) -> None:
    assert fast == reference
    assert repr(fast) == repr(reference)  # also int vs bool, 0.0 vs -0.0, str subclasses
    assert hash(fast) == hash(reference)


@settings(max_examples=400, deadline=None)
@given(
    desk_call=desks().flatmap(lambda c: st.tuples(st.just(c), _calls(c))), view=_VIEWS, now=_NOWS
)
def test_a_fresh_table_decides_like_the_reference(
    desk_call: tuple[Config, CallFacts], view: RoutingView | None, now: dt.datetime
) -> None:
    config, facts = desk_call
    _same(decide_route(config, facts, now, view), reference_decide(config, facts, now, view))


# Instants a few seconds apart share a minute memo; others straddle minutes and days.
_NEAR_NOWS = st.builds(
    lambda base, seconds: base + dt.timedelta(seconds=seconds),
    st.sampled_from(
        [
            dt.datetime(2026, 11, 23, 16, 59, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 29, 0, 59, tzinfo=dt.UTC),  # Europe: summer time starts
            dt.datetime(2026, 11, 1, 5, 59, tzinfo=dt.UTC),  # Toronto: summer time ends
        ]
    ),
    st.floats(0, 130),
)


@settings(max_examples=150, deadline=None)
@given(config=desks(), data=st.data())
def test_a_shared_table_decides_like_the_reference(config: Config, data: st.DataObject) -> None:
    table = RoutingTable(config)
    reference = _ReferenceTable(config)
    steps = data.draw(
        st.lists(st.tuples(_calls(config), _NEAR_NOWS | _NOWS, _VIEWS), min_size=1, max_size=12)
    )
    for facts, now, view in steps:
        _same(
            decide_route(config, facts, now, view, table=table),
            reference_decide(config, facts, now, view, table=reference),
        )


@settings(max_examples=60, deadline=None)
@given(config=desks(), data=st.data())
def test_evicted_memos_change_no_decision(config: Config, data: st.DataObject) -> None:
    table = RoutingTable(config)
    reference = _ReferenceTable(config)
    steps = data.draw(st.lists(st.tuples(_calls(config), _NOWS), min_size=3, max_size=12))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(routing, "_MEMO_SIZE", 2)
        for facts, now in steps:
            _same(
                decide_route(config, facts, now, table=table),
                reference_decide(config, facts, now, table=reference),
            )
            assert len(table._plans) <= 2
            assert len(table._languages) <= 2


def _one_site_desk(site: Site) -> Config:
    from acd.config.model import AmiLink, Daemon, Hotline, Skill, Sla, SlaPriority  # noqa: PLC0415
    from tests.test_routing_properties import _SECRET  # noqa: PLC0415 -- one shared secret ref

    return Config(
        hotline=Hotline(numbers=["100"], languages=["en"], default_queue="q0"),
        daemon=Daemon(ami=AmiLink(secret=_SECRET)),
        skills=[Skill(id="p0", name="p0")],
        queues=[Queue(id="q0", name="q0", skills={"p0": 1})],
        agents=[
            Agent(
                id="a0", name="A", extension="200", secret=_SECRET, skills={"p0": 1}, site=site.id
            )
        ],
        sites=[site],
        sla=Sla(
            priorities={"normal": SlaPriority(rank=20, respond_within=60, resolve_within=3600)}
        ),
    )


def _statuses(config: Config, instants: list[dt.datetime]) -> list[str]:
    table = RoutingTable(config)
    reference = _ReferenceTable(config)
    facts = CallFacts(uniqueid="1", caller_number="2", dialed="100", language="en")
    result: list[str] = []
    for now in instants:
        decision = decide_route(config, facts, now, table=table)
        _same(decision, reference_decide(config, facts, now, table=reference))
        result.append(decision.status)
    return result


def test_a_zone_offset_with_seconds_is_not_memoized_across_a_local_minute() -> None:
    # Monrovia was UTC-0:44:30 until 1972: local 10:00:00 is 10:44:30 UTC, mid-minute.
    desk = _one_site_desk(
        Site(id="mlw", timezone="Africa/Monrovia", hours={"mon-sun": ["10:00-11:00"]})
    )
    minute = dt.datetime(1970, 6, 1, 10, 44, tzinfo=dt.UTC)
    instants = [minute + dt.timedelta(seconds=s) for s in (10, 50, 10, 29.999999, 30)]
    assert _statuses(desk, instants) == ["closed", "queued", "closed", "closed", "queued"]


def test_the_minute_memo_switches_exactly_at_the_minute() -> None:
    desk = _one_site_desk(Site(id="utc", timezone="UTC", hours={"mon-sun": ["09:00-17:00"]}))
    nine = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    tiny = dt.timedelta(microseconds=1)
    instants = [nine - tiny, nine, nine - tiny, nine + dt.timedelta(hours=8) - tiny]
    assert _statuses(desk, instants) == ["closed", "queued", "closed", "queued"]
    # The same instants in another zone's terms land in the same UTC minutes.
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    assert _statuses(desk, [i.astimezone(tokyo) for i in instants]) == [
        "closed",
        "queued",
        "closed",
        "queued",
    ]


def test_summer_time_starts_between_two_memoized_minutes() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29 (01:00 UTC): 00:59:59 UTC is 01:59:59 local.
    desk = _one_site_desk(
        Site(id="ber", timezone="Europe/Berlin", hours={"mon-sun": ["03:00-04:00"]})
    )
    one = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)
    second = dt.timedelta(seconds=1)
    assert _statuses(desk, [one - second, one, one - second, one + 59 * second]) == [
        "closed",
        "queued",
        "closed",
        "queued",
    ]


def test_levels_equal_as_keys_but_printed_otherwise_keep_their_reasons() -> None:
    desk = _one_site_desk(Site(id="utc", timezone="UTC", hours={"mon-sun": ["00:00-24:00"]}))
    table = RoutingTable(desk)
    reference = _ReferenceTable(desk)
    now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    for level in (1, True, 1, 1.0):
        facts = CallFacts(
            uniqueid="1",
            caller_number="2",
            dialed="100",
            language="en",
            required_skills={"p0": level},  # type: ignore[dict-item]  # a float on purpose
        )
        decision = decide_route(desk, facts, now, table=table)
        _same(decision, reference_decide(desk, facts, now, table=reference))
    assert any("p0>=1.0" in r for r in decision.reasons)


def test_the_slot_set_decision_has_every_field() -> None:
    assert len(routing._DECISION_SETTERS) == len(fields(RouteDecision))


def _bench() -> ModuleType:
    # The benchmark's desk; bench/ is not a package, so load the file itself.
    path = Path(__file__).resolve().parents[1] / "bench" / "route.py"
    spec = importlib.util.spec_from_file_location("_bench_route", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_desk_decides_like_the_reference() -> None:
    bench = _bench()
    rng = random.Random(7)
    config = bench.build_config(200, rng)
    table = RoutingTable(config)
    reference = _ReferenceTable(config)
    view = bench.build_view(config, table, rng)
    calls = bench.build_calls(config, rng, 400)
    base = bench.NOW
    queued = overflowed = preferred = 0
    for i, facts in enumerate(calls):
        now = base + dt.timedelta(hours=i % 24, seconds=i)
        decision = decide_route(config, facts, now, view, table=table)
        _same(decision, reference_decide(config, facts, now, view, table=reference))
        queued += decision.status == "queued"
        overflowed += decision.overflowed_from is not None
        preferred += decision.preferred_agent is not None
    assert min(queued, overflowed, preferred) > 0  # the paths that matter were taken
