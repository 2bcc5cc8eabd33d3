"""DeskMetrics: the desk's figures from LiveState's change records and snapshots.

The counters are checked on the real Asterisk 22 transcript state_queue_life.bin (c1
answered by bob after ~1 s, c3 short-abandoned after 3.5 s, c2 answered by alice after ~6 s)
as Prometheus would scrape them, and on hand-made records for the outcomes it lacks.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from acd.ami.codec import Event
from acd.state import (
    AgentChanged,
    Anomaly,
    CallFinished,
    Change,
    FinishedCall,
    LiveState,
    Outcome,
)
from acd.state_machines import AgentState
from metrics.desk import OTHER, WAIT_BUCKETS, DeskMetrics
from tests.ami_transcripts import load_state_transcript

AGENTS = {"Local/alice@test-agents": "alice", "Local/bob@test-agents": "bob"}
ALICE, BOB = AGENTS
Q, Q2 = "first-level", "second-printing"
QUEUES = (Q, Q2)
LABELS = (*QUEUES, OTHER)
OUTCOME_COUNTERS = {
    Outcome.ANSWERED: "acd_calls_answered_total",
    Outcome.ABANDONED: "acd_calls_abandoned_total",
    Outcome.SHORT_ABANDON: "acd_calls_short_abandoned_total",
    Outcome.TIMEOUT: "acd_calls_timeout_total",
    Outcome.OVERFLOWED: "acd_calls_overflowed_total",
}
QUEUE_COUNTERS = (
    "acd_calls_offered_total",
    *OUTCOME_COUNTERS.values(),
    "acd_callbacks_requested_total",
    "acd_calls_abandoned_before_queue_total",
    "acd_calls_unknown_total",
)
OFFERED_OUTCOMES = ("answered", "abandoned", "short_abandon", "timeout", "overflowed")
WAIT_OUTCOMES = (*OFFERED_OUTCOMES, "callback_requested")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- helpers -------------------------------------------------------------------------------


def _scrape(registry: CollectorRegistry) -> Samples:
    """What Prometheus reads: sample name and sorted labels -> value (no _created)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def _bucket(samples: Samples, name: str, le: float, **labels: str) -> float:
    bound = "+Inf" if le == math.inf else str(le)
    return _get(samples, f"{name}_bucket", le=bound, **labels)


def _load_transcript() -> tuple[
    list[tuple[Event, float]], list[tuple[float, list[Event], list[Event]]]
]:
    """The broadcast events with their time, and each QueueStatus + CoreShowChannels answer."""
    transcript = load_state_transcript()
    return transcript.broadcast, [(r.now, r.queue_status, r.channels) for r in transcript.resyncs]


def _state(short: int = 5) -> LiveState:
    return LiveState(AGENTS, {Q: 0, Q2: 0}, {Q: short})


def _desk() -> tuple[CollectorRegistry, DeskMetrics]:
    registry = CollectorRegistry()
    return registry, DeskMetrics(registry, queues=QUEUES)


def _record(
    outcome: Outcome,
    queue: str | None = Q,
    *,
    wait: float | None = 10.0,
    joined_at: float | None = 100.0,
    talk: float | None = None,
    uid: str = "u1",
) -> CallFinished:
    return CallFinished(
        FinishedCall(
            uid,
            "4940999",
            (),
            queue,
            outcome,
            0,
            joined_at,
            200.0,
            wait,
            talk,
            "bob" if outcome is Outcome.ANSWERED else None,
        )
    )


def _event(name: str, **fields: str) -> Event:
    return Event(name, (("Event", name), *fields.items()))


def _member(iface: str, queue: str, paused: bool = False) -> Event:
    return _event(
        "QueueMemberAdded",
        Queue=queue,
        Interface=iface,
        Penalty="0",
        Paused="1" if paused else "0",
        PausedReason="training" if paused else "",
        Status="1",
        InCall="0",
    )


EVENTS, RESYNCS = _load_transcript()


def test_the_transcript_loader_finds_three_resyncs() -> None:
    assert len(RESYNCS) == 3
    assert all(queue_status for _, queue_status, _ in RESYNCS)


# --- start --------------------------------------------------------------------------------


def test_every_series_exists_at_zero_from_the_start() -> None:
    registry, _ = _desk()
    samples = _scrape(registry)
    for name in QUEUE_COUNTERS:
        for queue in LABELS:
            assert _get(samples, name, queue=queue) == 0.0
    for queue in LABELS:
        for result in ("answered", "no_answer", "busy", "failed", OTHER):
            assert _get(samples, "acd_callback_attempts_total", queue=queue, result=result) == 0
        for outcome in WAIT_OUTCOMES:
            for le in (*WAIT_BUCKETS, math.inf):
                assert _bucket(samples, "acd_wait_seconds", le, queue=queue, outcome=outcome) == 0
            assert _get(samples, "acd_wait_seconds_count", queue=queue, outcome=outcome) == 0
        assert _get(samples, "acd_talk_seconds_count", queue=queue) == 0
        assert _get(samples, "acd_callback_delay_seconds_count", queue=queue) == 0
        for gauge in ("acd_callers_waiting", "acd_oldest_wait_seconds", "acd_callbacks_pending"):
            assert _get(samples, gauge, queue=queue) == 0
        assert math.isnan(_get(samples, "acd_expected_wait_seconds", queue=queue))
        for state in AgentState:
            assert _get(samples, "acd_queue_agents", queue=queue, state=state.value) == 0
    for state in AgentState:
        assert _get(samples, "acd_agents", state=state.value) == 0
    for status in ("first_level", "second_level", "waiting", "dev", "done", OTHER):
        assert _get(samples, "acd_tickets", status=status) == 0
    # no outcome "unknown" in the wait histogram: those visits are not offered
    assert not any(dict(labels).get("outcome") == "unknown" for _, labels in samples)


def test_other_is_reserved_and_queues_are_deduplicated() -> None:
    with pytest.raises(ValueError, match="reserved"):
        DeskMetrics(CollectorRegistry(), queues=[Q, OTHER])
    with pytest.raises(ValueError, match="reserved"):
        DeskMetrics(CollectorRegistry(), queues=[Q], ticket_statuses=["done", OTHER])
    registry = CollectorRegistry()
    DeskMetrics(registry, queues=[Q, Q])
    queues = {dict(k[1])["queue"] for k in _scrape(registry) if k[0] == "acd_calls_offered_total"}
    assert queues == {Q, OTHER}


# --- the real transcript ------------------------------------------------------------------


def _replay(state: LiveState, desk: DeskMetrics) -> list[Change]:
    changes: list[Change] = []
    for event, now in EVENTS:
        batch = state.apply(event, now)
        desk.observe(batch)
        changes += batch
    return changes


def test_replay_counts_offered_answered_and_short_abandoned() -> None:
    registry, desk = _desk()
    changes = _replay(_state(short=5), desk)
    assert [c for c in changes if isinstance(c, Anomaly)] == []
    s = _scrape(registry)
    assert _get(s, "acd_calls_offered_total", queue=Q) == 3
    assert _get(s, "acd_calls_answered_total", queue=Q) == 2
    assert _get(s, "acd_calls_short_abandoned_total", queue=Q) == 1
    counted = {"acd_calls_offered_total", "acd_calls_answered_total"}
    counted.add("acd_calls_short_abandoned_total")
    for name in set(QUEUE_COUNTERS) - counted:
        assert _get(s, name, queue=Q) == 0, name
    for name in QUEUE_COUNTERS:
        assert _get(s, name, queue=Q2) == 0
        assert _get(s, name, queue=OTHER) == 0

    # answered: c1 after 1.0 s, c2 after 6.0 s; c3 gave up after 3.5 s
    answered = {"queue": Q, "outcome": "answered"}
    assert _bucket(s, "acd_wait_seconds", 5.0, **answered) == 1
    assert _bucket(s, "acd_wait_seconds", 10.0, **answered) == 2
    assert _bucket(s, "acd_wait_seconds", math.inf, **answered) == 2
    assert _get(s, "acd_wait_seconds_sum", **answered) == pytest.approx(7.0, abs=0.05)
    short = {"queue": Q, "outcome": "short_abandon"}
    assert _bucket(s, "acd_wait_seconds", 5.0, **short) == 1
    assert _get(s, "acd_wait_seconds_sum", **short) == pytest.approx(3.5, abs=0.05)
    assert _get(s, "acd_wait_seconds_count", queue=Q, outcome="abandoned") == 0
    # talk: c1 5.5 s with bob, c2 2.5 s with alice
    assert _bucket(s, "acd_talk_seconds", 10.0, queue=Q) == 2
    assert _get(s, "acd_talk_seconds_count", queue=Q) == 2
    assert _get(s, "acd_talk_seconds_sum", queue=Q) == pytest.approx(8.0, abs=0.05)

    # service level within 5 s, short abandons excluded: c1 of {c1, c2}
    within = _bucket(s, "acd_wait_seconds", 5.0, **answered)
    offered = _get(s, "acd_calls_offered_total", queue=Q)
    short_abandoned = _get(s, "acd_calls_short_abandoned_total", queue=Q)
    assert within / (offered - short_abandoned) == 0.5


def test_replay_with_a_lower_threshold_counts_a_plain_abandon() -> None:
    registry, desk = _desk()
    _replay(_state(short=2), desk)
    s = _scrape(registry)
    assert _get(s, "acd_calls_offered_total", queue=Q) == 3
    assert _get(s, "acd_calls_abandoned_total", queue=Q) == 1
    assert _get(s, "acd_calls_short_abandoned_total", queue=Q) == 0
    assert _bucket(s, "acd_wait_seconds", 5.0, queue=Q, outcome="abandoned") == 1


def _gauges(samples: Samples) -> Samples:
    names = ("acd_callers_waiting", "acd_agents", "acd_queue_agents")
    return {k: v for k, v in samples.items() if k[0] in names}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_gauges_after_a_resync_match_the_incremental_state(index: int) -> None:
    at, queue_status, channels = RESYNCS[index]
    incremental = _state()
    for event, now in EVENTS:
        if now > at:
            break
        incremental.apply(event, now)
    fresh = _state()
    fresh.resync(queue_status, channels, at)
    figures = []
    for state in (incremental, fresh):
        registry, desk = _desk()
        desk.update_gauges(state.snapshot(), at)
        figures.append(_scrape(registry))
    assert _gauges(figures[0]) == _gauges(figures[1])
    # Asterisk reports waits in whole seconds
    assert _get(figures[0], "acd_oldest_wait_seconds", queue=Q) == pytest.approx(
        _get(figures[1], "acd_oldest_wait_seconds", queue=Q), abs=1.0
    )


def test_gauges_follow_the_transcript_and_are_recomputed_not_incremented() -> None:
    at = RESYNCS[0][0]  # c3 has just joined behind c2; bob talks to c1; alice at lunch
    state = _state()
    registry, desk = _desk()
    for event, now in EVENTS:
        if now > at:
            break
        state.apply(event, now)
    desk.update_gauges(state.snapshot(), at)
    desk.update_gauges(state.snapshot(), at + 10.0)  # twice: set, not added
    s = _scrape(registry)
    assert _get(s, "acd_callers_waiting", queue=Q) == 2
    assert _get(s, "acd_oldest_wait_seconds", queue=Q) == pytest.approx(10.8, abs=0.05)
    assert _get(s, "acd_callers_waiting", queue=Q2) == 0
    assert _get(s, "acd_oldest_wait_seconds", queue=Q2) == 0
    expected = {"paused": 1, "on_call": 1}
    for agent_state in AgentState:
        count = expected.get(agent_state.value, 0)
        assert _get(s, "acd_agents", state=agent_state.value) == count
        assert _get(s, "acd_queue_agents", queue=Q, state=agent_state.value) == count
        assert _get(s, "acd_queue_agents", queue=Q2, state=agent_state.value) == 0

    for event, now in EVENTS:
        if now > at:
            state.apply(event, now)
    desk.update_gauges(state.snapshot(), EVENTS[-1][1])
    s = _scrape(registry)
    assert _get(s, "acd_callers_waiting", queue=Q) == 0
    assert _get(s, "acd_oldest_wait_seconds", queue=Q) == 0
    assert _get(s, "acd_agents", state="logged_out") == 2
    assert _get(s, "acd_agents", state="paused") == 0
    assert all(v == 0 for k, v in s.items() if k[0] == "acd_queue_agents")


# --- hand-made records ----------------------------------------------------------------------


def test_each_offered_outcome_has_its_counter_and_wait_series() -> None:
    registry, desk = _desk()
    desk.observe([_record(outcome, wait=12.0) for outcome in OUTCOME_COUNTERS])
    desk.observe([_record(Outcome.CALLBACK_REQUESTED, wait=40.0)])
    s = _scrape(registry)
    assert _get(s, "acd_calls_offered_total", queue=Q) == 6
    for outcome, name in OUTCOME_COUNTERS.items():
        assert _get(s, name, queue=Q) == 1
        assert _bucket(s, "acd_wait_seconds", 10.0, queue=Q, outcome=outcome.value) == 0
        assert _bucket(s, "acd_wait_seconds", 15.0, queue=Q, outcome=outcome.value) == 1
    assert _get(s, "acd_callbacks_requested_total", queue=Q) == 1
    assert _bucket(s, "acd_wait_seconds", 30.0, queue=Q, outcome="callback_requested") == 0
    assert _bucket(s, "acd_wait_seconds", 45.0, queue=Q, outcome="callback_requested") == 1


def test_what_is_not_a_queue_visit_is_not_offered() -> None:
    registry, desk = _desk()
    changes: list[Change] = [
        # hung up in the IVR, routed to Q but never joined
        _record(Outcome.ABANDONED, joined_at=None, wait=None),
        # the fallback dialplan booked a ticket after the timeout visit was closed
        _record(Outcome.TIMEOUT, wait=600.0),
        _record(Outcome.CALLBACK_REQUESTED, joined_at=None, wait=None),
        # lost while the AMI link was down
        _record(Outcome.UNKNOWN, wait=30.0),
        _record(Outcome.UNKNOWN, joined_at=None, wait=None),
        AgentChanged("bob", AgentState.AVAILABLE, AgentState.RINGING, None, 1.0),
        Anomaly("vanished", "u1", "resync", 1.0),
    ]
    desk.observe(changes)
    s = _scrape(registry)
    assert _get(s, "acd_calls_offered_total", queue=Q) == 1
    assert _get(s, "acd_calls_timeout_total", queue=Q) == 1
    assert _get(s, "acd_calls_abandoned_total", queue=Q) == 0
    # the caller who hung up before joining is counted apart, and only that one
    assert _get(s, "acd_calls_abandoned_before_queue_total", queue=Q) == 1
    assert _get(s, "acd_callbacks_requested_total", queue=Q) == 1
    assert _get(s, "acd_wait_seconds_count", queue=Q, outcome="callback_requested") == 0
    assert _get(s, "acd_calls_unknown_total", queue=Q) == 1
    assert sum(v for k, v in s.items() if k[0] == "acd_wait_seconds_count") == 1


def test_answered_with_a_missed_join_is_offered_and_talk_is_observed() -> None:
    registry, desk = _desk()
    desk.observe([_record(Outcome.ANSWERED, joined_at=None, wait=None, talk=200.0)])
    s = _scrape(registry)
    assert _get(s, "acd_calls_offered_total", queue=Q) == 1
    assert _get(s, "acd_calls_answered_total", queue=Q) == 1
    assert _get(s, "acd_wait_seconds_count", queue=Q, outcome="answered") == 0
    assert _bucket(s, "acd_talk_seconds", 180.0, queue=Q) == 0
    assert _bucket(s, "acd_talk_seconds", 300.0, queue=Q) == 1


def test_unknown_queues_share_one_label_value() -> None:
    registry, desk = _desk()
    before = set(_scrape(registry))
    for n in range(50):
        desk.observe([_record(Outcome.ANSWERED, f"from-ami-{n}", uid=f"u{n}", talk=60.0)])
        desk.callback_attempt(f"from-dialer-{n}", f"result-{n}")
        desk.callback_delay(f"from-dialer-{n}", 4000.0)
        desk.set_expected_wait(f"from-router-{n}", 30.0)
    desk.observe([_record(Outcome.OVERFLOWED, None)])
    desk.set_callbacks_pending({"nowhere": 3, "elsewhere": 4, Q: 2})
    desk.set_tickets({"first_level": 5, "escalated": 1, "archived": 2})
    s = _scrape(registry)
    assert set(s) == before
    assert _get(s, "acd_calls_offered_total", queue=OTHER) == 51
    assert _get(s, "acd_calls_answered_total", queue=OTHER) == 50
    assert _get(s, "acd_calls_overflowed_total", queue=OTHER) == 1
    assert _get(s, "acd_callback_attempts_total", queue=OTHER, result=OTHER) == 50
    assert _get(s, "acd_callback_delay_seconds_count", queue=OTHER) == 50
    assert _get(s, "acd_expected_wait_seconds", queue=OTHER) == 30.0
    assert _get(s, "acd_callbacks_pending", queue=OTHER) == 7
    assert _get(s, "acd_callbacks_pending", queue=Q) == 2
    assert _get(s, "acd_tickets", status=OTHER) == 3
    assert _get(s, "acd_tickets", status="first_level") == 5


def test_callback_dialer_figures() -> None:
    registry, desk = _desk()
    desk.callback_attempt(Q, "no_answer")
    desk.callback_attempt(Q, "answered")
    desk.callback_delay(Q, 73 * 60.0)
    desk.callback_delay(Q, -1.0)  # clock skew between hosts: counted as immediate
    s = _scrape(registry)
    assert _get(s, "acd_callback_attempts_total", queue=Q, result="no_answer") == 1
    assert _get(s, "acd_callback_attempts_total", queue=Q, result="answered") == 1
    assert _get(s, "acd_callback_attempts_total", queue=Q, result="busy") == 0
    assert _bucket(s, "acd_callback_delay_seconds", 300.0, queue=Q) == 1
    assert _bucket(s, "acd_callback_delay_seconds", 3600.0, queue=Q) == 1
    assert _bucket(s, "acd_callback_delay_seconds", 7200.0, queue=Q) == 2
    assert _get(s, "acd_callback_delay_seconds_sum", queue=Q) == 73 * 60.0


def test_set_gauges_replace_the_previous_figures() -> None:
    registry, desk = _desk()
    desk.set_callbacks_pending({Q: 4, Q2: 1})
    desk.set_callbacks_pending({Q2: 2})
    desk.set_tickets({"waiting": 3, "dev": 1})
    desk.set_tickets({"done": 9})
    desk.set_expected_wait(Q, 95.5)
    desk.set_expected_wait(Q2, 40.0)
    desk.set_expected_wait(Q2, None)
    s = _scrape(registry)
    assert (
        _get(s, "acd_callbacks_pending", queue=Q),
        _get(s, "acd_callbacks_pending", queue=Q2),
    ) == (0, 2)
    assert [_get(s, "acd_tickets", status=x) for x in ("waiting", "dev", "done")] == [0, 0, 9]
    assert _get(s, "acd_expected_wait_seconds", queue=Q) == 95.5
    assert math.isnan(_get(s, "acd_expected_wait_seconds", queue=Q2))


def test_an_agent_paused_in_one_of_its_queues_counts_as_paused_there() -> None:
    state = _state()
    state.apply(_member(ALICE, Q), 0.0)
    state.apply(_member(ALICE, Q2, paused=True), 0.0)
    state.apply(_member(BOB, "not-configured"), 0.0)
    registry, desk = _desk()
    desk.update_gauges(state.snapshot(), 1.0)
    s = _scrape(registry)
    assert _get(s, "acd_agents", state="available") == 2
    assert _get(s, "acd_queue_agents", queue=Q, state="available") == 1
    assert _get(s, "acd_queue_agents", queue=Q2, state="paused") == 1
    assert _get(s, "acd_queue_agents", queue=Q2, state="available") == 0
    assert _get(s, "acd_queue_agents", queue=OTHER, state="available") == 1


# --- properties ----------------------------------------------------------------------------

_records = st.builds(
    _record,
    st.sampled_from(list(Outcome)),
    st.sampled_from([Q, Q2, "unconfigured", None]),
    wait=st.one_of(st.none(), st.floats(0.0, 10_000.0)),
    joined_at=st.one_of(st.none(), st.just(100.0)),
    talk=st.one_of(st.none(), st.floats(0.0, 10_000.0)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_records, max_size=40))
def test_offered_is_split_exactly_by_outcome(records: list[CallFinished]) -> None:
    registry, desk = _desk()
    before = set(_scrape(registry))
    desk.observe(records)
    s = _scrape(registry)
    assert set(s) == before, "a label value appeared"
    for queue in LABELS:
        offered = _get(s, "acd_calls_offered_total", queue=queue)
        split = sum(_get(s, name, queue=queue) for name in OUTCOME_COUNTERS.values())
        visits = [
            r.record
            for r in records
            if (r.record.queue if r.record.queue in QUEUES else OTHER) == queue
            and (r.record.joined_at is not None or r.record.outcome is Outcome.ANSWERED)
        ]
        callback_visits = sum(1 for v in visits if v.outcome is Outcome.CALLBACK_REQUESTED)
        assert offered == split + callback_visits
        assert offered == sum(1 for v in visits if v.outcome is not Outcome.UNKNOWN)
        waits = sum(
            _get(s, "acd_wait_seconds_count", queue=queue, outcome=o) for o in WAIT_OUTCOMES
        )
        assert waits == sum(
            1 for v in visits if v.outcome is not Outcome.UNKNOWN and v.wait is not None
        )
