"""LiveState: replayed from a real Asterisk 22 transcript, resynced, and fuzzed.

tests/transcripts/ami/state_queue_life.bin was recorded by record_state.py: alice (paused,
"lunch") and bob in first-level; c1 answered by bob and hung up by the caller, c3 (priority
5) hung up after 3.5 s of waiting, c2 answered by alice after the unpause; QueueStatus +
CoreShowChannels three times along the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from acd.ami.codec import Event
from acd.state import (
    AgentChanged,
    Anomaly,
    CallFinished,
    Change,
    DeviceState,
    LiveState,
    Outcome,
    StateSnapshot,
)
from acd.state_machines import FINAL_CALL_STATES, AgentState, CallState
from tests.ami_transcripts import Resync, load_state_transcript

AGENTS = {"Local/alice@test-agents": "alice", "Local/bob@test-agents": "bob"}
C1, C2, C3 = "1795433806.1", "1795433807.5", "1795433808.7"
Q = "first-level"


TRANSCRIPT_DATA = load_state_transcript()


def _state(short: int = 5, wrapup: int = 0, **kwargs: Any) -> LiveState:
    return LiveState(AGENTS, {Q: wrapup, "second-printing": 0}, {Q: short}, **kwargs)


def _note_daemon_priority(state: LiveState, event: Event, now: float) -> None:
    # What the routing AGI would have told the model: it set c3's QUEUE_PRIO itself.
    if event.name == "QueueCallerJoin" and event.get("Uniqueid") == C3:
        state.note_route(C3, now, priority=5)


def _normal(snap: StateSnapshot) -> dict[str, Any]:
    """The parts of a snapshot Asterisk can tell a fresh model (times to the second)."""
    return {
        "queues": {
            q: [(w.uniqueid, w.caller_number, w.priority, w.position) for w in v.waiting]
            for q, v in snap.queues.items()
        },
        "joined": {w.uniqueid: round(w.joined_at) for v in snap.queues.values() for w in v.waiting},
        "agents": {
            a.agent_id: (a.state, a.pause_reason, a.device, dict(a.queues), a.call)
            for a in snap.agents.values()
        },
        "calls": {c.uniqueid: (c.state, c.queue, c.agent_id) for c in snap.calls.values()},
        "counts": dict(snap.agent_counts),
    }


def _anomalies(changes: list[Change]) -> list[Anomaly]:
    return [c for c in changes if isinstance(c, Anomaly)]


def _event(name: str, **fields: str) -> Event:
    return Event(name, (("Event", name), *fields.items()))


# --- replay of the real transcript -----------------------------------------------------------


def test_replay_follows_agents_and_callers_without_anomalies() -> None:
    state = _state()
    changes: list[Change] = []
    seen: dict[str, StateSnapshot] = {}
    for event, now in TRANSCRIPT_DATA.broadcast:
        changes += state.apply(event, now)
        seen.setdefault(f"{event.name}:{event.get('Uniqueid')}", state.snapshot())
    assert _anomalies(changes) == []

    # while c3 (priority 5, joined at position 1) and c2 waited, bob talked and alice lunched
    during = seen[f"QueueCallerJoin:{C3}"]
    assert [w.uniqueid for w in during.queues[Q].waiting] == [C3, C2]
    assert [w.caller_number for w in during.queues[Q].waiting] == ["4940333", "4940222"]
    assert during.agents["alice"].state is AgentState.PAUSED
    assert during.agents["alice"].pause_reason == "lunch"
    assert during.agents["alice"].queues[Q].paused
    assert during.agents["bob"].state is AgentState.ON_CALL
    assert during.agents["bob"].call == C1
    assert during.calls[C1].state is CallState.CONNECTED
    assert during.agent_counts[AgentState.PAUSED] == 1

    outcomes = {f.uniqueid: f for f in state.finished()}
    assert outcomes[C3].outcome is Outcome.SHORT_ABANDON  # 3.5 s < 5 s
    assert outcomes[C3].wait == pytest.approx(3.5, abs=0.1)
    assert outcomes[C1].outcome is Outcome.ANSWERED
    assert outcomes[C1].agent_id == "bob"
    assert outcomes[C1].talk == pytest.approx(5.5, abs=0.1)
    assert outcomes[C2].outcome is Outcome.ANSWERED
    assert outcomes[C2].agent_id == "alice"
    assert outcomes[C2].wait == pytest.approx(6.0, abs=0.1)

    final = state.snapshot()
    assert final.calls == {}
    assert all(a.state is AgentState.LOGGED_OUT for a in final.agents.values())


def test_abandon_above_the_threshold_is_a_plain_abandon() -> None:
    state = _state(short=2)
    for event, now in TRANSCRIPT_DATA.broadcast:
        state.apply(event, now)
    assert {f.uniqueid: f.outcome for f in state.finished()}[C3] is Outcome.ABANDONED


def test_unpause_emits_agent_change_with_reason_then_without() -> None:
    state = _state()
    pauses = []
    for event, now in TRANSCRIPT_DATA.broadcast:
        for change in state.apply(event, now):
            if isinstance(change, AgentChanged) and change.agent_id == "alice":
                pauses.append((change.after, change.pause_reason))
    assert (AgentState.PAUSED, "lunch") in pauses
    assert pauses.index((AgentState.PAUSED, "lunch")) < pauses.index((AgentState.RINGING, None))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_resync_from_scratch_matches_the_incremental_state(index: int) -> None:
    incremental = _state()
    for step in TRANSCRIPT_DATA.steps:
        if isinstance(step, Resync):
            if step is TRANSCRIPT_DATA.resyncs[index]:
                break
            continue
        _note_daemon_priority(incremental, *step)
        incremental.apply(*step)
    resync = TRANSCRIPT_DATA.resyncs[index]
    fresh = _state()
    changes = fresh.resync(resync.queue_status, resync.channels, resync.now)
    assert not any(isinstance(c, Anomaly) and c.kind == "vanished" for c in changes)
    assert _normal(fresh.snapshot()) == _normal(incremental.snapshot())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_resync_of_a_correct_state_changes_nothing(index: int) -> None:
    state = _state()
    for step in TRANSCRIPT_DATA.steps:
        if isinstance(step, Resync):
            if step is TRANSCRIPT_DATA.resyncs[index]:
                break
            continue
        _note_daemon_priority(state, *step)
        state.apply(*step)
    before = state.snapshot()
    resync = TRANSCRIPT_DATA.resyncs[index]
    assert state.resync(resync.queue_status, resync.channels, resync.now) == []
    assert state.snapshot() == before


def test_real_queue_status_fields() -> None:
    # The names that differ between QueueMember (Location, Name) and the member events.
    first = TRANSCRIPT_DATA.resyncs[0]
    member = next(e for e in first.queue_status if e.name == "QueueMember")
    assert member.get("Location") == "Local/alice@test-agents"
    assert member.get("Interface") is None
    entry = next(e for e in first.queue_status if e.name == "QueueEntry")
    assert (entry.get("Uniqueid"), entry.get("Priority"), entry.get("Wait")) == (C3, "5", "0")
    assert entry.get("Timestamp") is None


# --- outcomes the transcript does not show -------------------------------------------------


def _join(uid: str, queue: str = Q, position: int = 1, number: str = "4940999") -> Event:
    return _event(
        "QueueCallerJoin", Uniqueid=uid, Queue=queue, Position=str(position), CallerIDNum=number
    )


def _leave(uid: str, queue: str = Q) -> Event:
    return _event("QueueCallerLeave", Uniqueid=uid, Queue=queue, Position="1", Count="0")


def _member(name: str, iface: str, queue: str = Q, **fields: str) -> Event:
    base = {"Queue": queue, "Interface": iface, "StateInterface": iface, "Penalty": "0"}
    base |= {"Paused": "0", "PausedReason": "", "Status": "1", "InCall": "0"}
    return _event(name, **(base | fields))


ALICE = "Local/alice@test-agents"
BOB = "Local/bob@test-agents"


def _agent_event(name: str, uid: str, iface: str, queue: str = Q, **fields: str) -> Event:
    return _event(name, Uniqueid=uid, Queue=queue, Interface=iface, **fields)


def _outcome(state: LiveState, uid: str) -> list[Outcome]:
    return [f.outcome for f in state.finished() if f.uniqueid == uid]


def test_key_press_exit_then_callback_is_not_an_abandon() -> None:
    state = _state()
    state.note_route("u1", 100.0, caller_number="4930", ivr={"product": "printing"})
    state.apply(_join("u1"), 101.0)
    state.apply(_leave("u1"), 130.0)  # no QueueCallerAbandon for a key press
    assert state.snapshot().calls["u1"].state is CallState.ROUTING
    assert state.snapshot().queues[Q].waiting == ()
    changes = state.mark_callback("u1", 135.0)
    finished = [c.record for c in changes if isinstance(c, CallFinished)]
    assert [f.outcome for f in finished] == [Outcome.CALLBACK_REQUESTED]
    assert finished[0].wait == pytest.approx(29.0)
    assert finished[0].ivr == (("product", "printing"),)
    assert "u1" not in state.snapshot().calls
    assert state.apply(_event("Hangup", Uniqueid="u1"), 140.0) == []  # retired quietly


def test_the_callback_key_while_an_agent_rings_frees_the_agent() -> None:
    """app_queue cancels the ring with no AgentRingNoAnswer when the caller leaves by the
    callback key: the booking must free the agent (soak of 2026-12-06: one agent stayed
    "ringing" for good)."""
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_member("QueueMemberAdded", BOB), 0.0)
    state.apply(_join("u1"), 1.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 2.0)
    state.apply(_agent_event("AgentCalled", "u1", BOB), 2.0)
    state.apply(_leave("u1"), 3.0)  # the key: QueueCallerLeave, and nothing for the ring
    # Leaving is also app_queue's first word of an answer (AgentConnect follows): not yet.
    assert state.snapshot().agents["alice"].state is AgentState.RINGING
    changes = state.mark_callback("u1", 3.5)
    assert [(c.agent_id, c.after) for c in changes if isinstance(c, AgentChanged)] == [
        ("alice", AgentState.AVAILABLE),
        ("bob", AgentState.AVAILABLE),
    ]
    assert _anomalies(changes) == []
    snap = state.snapshot()
    assert {a.state for a in snap.agents.values()} == {AgentState.AVAILABLE}
    assert snap.agent_counts[AgentState.AVAILABLE] == 2
    assert snap.agent_counts[AgentState.RINGING] == 0
    # The next caller rings alice as usual.
    state.apply(_join("u2"), 4.0)
    state.apply(_agent_event("AgentCalled", "u2", ALICE), 4.5)
    assert state.snapshot().agents["alice"].call == "u2"


def test_back_at_their_place_without_a_ticket_the_visit_goes_on() -> None:
    """The caller pressed the key while alice rang, then cancelled (or the booking failed):
    the dialplan puts them back at their place. One visit, waiting since the first join,
    not a timeout and a second offer."""
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_join("u1"), 10.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 11.0)
    state.apply(_leave("u1"), 12.0)
    changes = state.mark_returning("u1", 30.0)
    assert [(c.agent_id, c.after) for c in changes if isinstance(c, AgentChanged)] == [
        ("alice", AgentState.AVAILABLE)
    ]
    rejoined = state.apply(_join("u1", position=1), 30.5)
    assert not [c for c in rejoined if isinstance(c, CallFinished)]
    assert _anomalies(rejoined) == []
    [waiting] = state.snapshot().queues[Q].waiting
    assert (waiting.uniqueid, waiting.joined_at) == ("u1", 10.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 31.0)
    state.apply(_agent_event("AgentConnect", "u1", ALICE, HoldTime="21"), 32.0)
    state.apply(_agent_event("AgentComplete", "u1", ALICE, TalkTime="8"), 40.0)
    [record] = [f for f in state.finished() if f.uniqueid == "u1"]
    assert record.outcome is Outcome.ANSWERED
    assert record.wait == pytest.approx(22.0)


def test_back_at_their_place_then_gone_is_one_abandoned_visit() -> None:
    state = _state(short=5)
    state.apply(_join("u1"), 10.0)
    state.apply(_leave("u1"), 20.0)
    state.mark_returning("u1", 25.0)
    state.apply(_event("Hangup", Uniqueid="u1"), 26.0)
    assert _outcome(state, "u1") == [Outcome.ABANDONED]
    # Returning is only for a caller who left the queue alive and is not back yet.
    state.apply(_join("u2"), 30.0)
    assert [a.kind for a in _anomalies(state.mark_returning("u2", 31.0))] == ["mark_ignored"]
    assert state.mark_returning("u1", 32.0) == []  # retired: nothing to say


def test_rejoining_the_same_queue_is_a_timeout_another_queue_an_overflow() -> None:
    state = _state()
    state.apply(_join("u1"), 0.0)
    state.apply(_leave("u1"), 120.0)
    state.apply(_join("u1"), 120.1)  # the fallback loops on QUEUESTATUS=TIMEOUT
    state.apply(_leave("u1"), 240.0)
    state.apply(_join("u1", "second-printing"), 240.5)
    assert _outcome(state, "u1") == [Outcome.TIMEOUT, Outcome.OVERFLOWED]
    assert state.snapshot().queues["second-printing"].waiting[0].uniqueid == "u1"


def test_mark_overflow_and_mark_timeout_while_queued() -> None:
    state = _state()
    state.apply(_join("u1"), 0.0)
    state.mark_overflow("u1", "second-printing", 30.0)
    assert _outcome(state, "u1") == [Outcome.OVERFLOWED]
    assert state.snapshot().calls["u1"].queue == "second-printing"
    state.apply(_join("u1", "second-printing"), 31.0)
    state.mark_timeout("u1", 90.0)
    state.apply(_event("Hangup", Uniqueid="u1"), 95.0)
    assert _outcome(state, "u1") == [Outcome.OVERFLOWED, Outcome.TIMEOUT, Outcome.ABANDONED]
    assert "u1" not in state.snapshot().calls


def test_hangup_while_queued_without_abandon_event_is_abandoned() -> None:
    state = _state(short=5)
    state.apply(_join("u1"), 0.0)
    state.apply(_join("u2", position=2), 0.0)
    state.apply(_event("Hangup", Uniqueid="u1"), 2.0)
    state.apply(_event("Hangup", Uniqueid="u2"), 20.0)
    assert _outcome(state, "u1") == [Outcome.SHORT_ABANDON]
    assert _outcome(state, "u2") == [Outcome.ABANDONED]


def test_hangup_after_max_wait_is_a_timeout() -> None:
    state = _state(max_wait_seconds={Q: 120})
    state.apply(_join("u1"), 0.0)
    state.apply(_leave("u1"), 120.0)
    state.apply(_event("Hangup", Uniqueid="u1"), 121.0)
    assert _outcome(state, "u1") == [Outcome.TIMEOUT]


def test_wrap_up_runs_on_the_clock_and_a_pause_waits_for_it() -> None:
    state = _state(wrapup=30)
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_join("u1"), 1.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 1.0)
    state.apply(_leave("u1"), 2.0)
    state.apply(_agent_event("AgentConnect", "u1", ALICE, HoldTime="1"), 2.0)
    pause = _member(
        "QueueMemberPause", ALICE, Paused="1", PausedReason="coffee", Status="2", InCall="1"
    )
    assert _anomalies(state.apply(pause, 3.0)) == []
    assert state.snapshot().agents["alice"].state is AgentState.ON_CALL
    state.apply(_agent_event("AgentComplete", "u1", ALICE, TalkTime="8", Reason="agent"), 10.0)
    assert state.snapshot().agents["alice"].state is AgentState.WRAP_UP
    assert state.next_deadline() == 40.0
    assert state.tick(39.9) == []
    changes = state.tick(40.0)
    assert [(c.after, c.pause_reason) for c in changes if isinstance(c, AgentChanged)] == [
        (AgentState.PAUSED, "coffee")
    ]
    assert state.next_deadline() is None


def test_ring_no_answer_and_ringall_release() -> None:
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_member("QueueMemberAdded", BOB), 0.0)
    state.apply(_join("u1"), 1.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 1.0)
    state.apply(_agent_event("AgentRingNoAnswer", "u1", ALICE, RingTime="10"), 11.0)
    snap = state.snapshot()
    assert snap.agents["alice"].state is AgentState.AVAILABLE
    assert snap.calls["u1"].state is CallState.QUEUED
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 12.0)
    state.apply(_agent_event("AgentCalled", "u1", BOB), 12.0)
    assert state.snapshot().queues[Q].waiting[0].ringing
    state.apply(_leave("u1"), 13.0)
    changes = state.apply(_agent_event("AgentConnect", "u1", BOB, HoldTime="12"), 13.0)
    assert _anomalies(changes) == []
    snap = state.snapshot()
    assert snap.agents["alice"].state is AgentState.AVAILABLE  # rung in vain, released
    assert snap.agents["bob"].state is AgentState.ON_CALL


def test_device_state_codes_and_missed_complete() -> None:
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE, Status="6"), 0.0)
    assert state.snapshot().agents["alice"].device is DeviceState.RINGING
    state.apply(_member("QueueMemberStatus", ALICE, Status="2", InCall="1"), 1.0)
    assert state.snapshot().agents["alice"].state is AgentState.ON_CALL
    changes = state.apply(_member("QueueMemberStatus", ALICE, Status="1", InCall="0"), 9.0)
    assert [a.kind for a in _anomalies(changes)] == ["missed_complete"]
    assert state.snapshot().agents["alice"].state is AgentState.AVAILABLE


def test_the_phone_idle_before_agent_complete_is_no_anomaly() -> None:
    """Device states and queue events cross (load run of 2026-12-06: about 1 call in 1000):
    the phone's idle ends the agent's call, the AgentComplete after it ends the caller's."""
    state = _state(wrapup=5)
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_join("u1"), 1.0)
    state.apply(_agent_event("AgentCalled", "u1", ALICE), 1.5)
    state.apply(_leave("u1"), 2.0)
    state.apply(_agent_event("AgentConnect", "u1", ALICE, HoldTime="1"), 2.0)
    idle = state.apply(_member("QueueMemberStatus", ALICE, Status="1", InCall="0"), 9.0)
    complete = state.apply(_agent_event("AgentComplete", "u1", ALICE, TalkTime="7"), 9.0)
    assert _anomalies(idle + complete) == []
    assert [(c.before, c.after) for c in idle + complete if isinstance(c, AgentChanged)] == [
        (AgentState.ON_CALL, AgentState.WRAP_UP)
    ]
    [record] = [f for f in state.finished() if f.uniqueid == "u1"]
    assert (record.outcome, record.talk) == (Outcome.ANSWERED, pytest.approx(7.0))
    assert state.snapshot().agents["alice"].state is AgentState.WRAP_UP


def test_agent_paused_in_one_of_two_queues_is_still_available() -> None:
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_member("QueueMemberAdded", ALICE, queue="second-printing"), 0.0)
    state.apply(_member("QueueMemberPause", ALICE, Paused="1", PausedReason="training"), 1.0)
    agent = state.snapshot().agents["alice"]
    assert agent.state is AgentState.AVAILABLE
    assert agent.queues[Q].paused
    assert not agent.queues["second-printing"].paused
    state.apply(
        _member("QueueMemberPause", ALICE, queue="second-printing", Paused="1", PausedReason="x"),
        2.0,
    )
    assert state.snapshot().agents["alice"].state is AgentState.PAUSED


def test_a_snapshot_shows_every_change_of_a_membership_and_reuses_what_did_not_change() -> None:
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_member("QueueMemberAdded", ALICE, queue="second-printing"), 0.0)
    state.apply(_member("QueueMemberAdded", BOB), 0.0)
    before = state.snapshot()
    # Neither moves alice's own state or device (no Status): only her memberships change.
    state.apply(_event("QueueMemberPause", Queue=Q, Interface=ALICE, Paused="1"), 1.0)
    state.apply(
        _event("QueueMemberPenalty", Queue="second-printing", Interface=ALICE, Penalty="2"), 2.0
    )
    after = state.snapshot()
    alice = after.agents["alice"]
    assert alice.state is AgentState.AVAILABLE
    assert alice.queues[Q].paused
    assert alice.queues["second-printing"].penalty == 2
    assert not before.agents["alice"].queues[Q].paused  # the old copy stays as it was
    assert after.agents["bob"] is before.agents["bob"]


def test_unknown_member_is_tracked_under_its_interface_and_forgotten_on_logout() -> None:
    state = _state()
    changes = state.apply(_member("QueueMemberAdded", "PJSIP/zed"), 0.0)
    assert [a.kind for a in _anomalies(changes)] == ["unknown_member"]
    assert state.snapshot().agents["PJSIP/zed"].state is AgentState.AVAILABLE
    state.apply(_member("QueueMemberRemoved", "PJSIP/zed"), 1.0)
    assert "PJSIP/zed" not in state.snapshot().agents
    assert state.snapshot().agents["alice"].state is AgentState.LOGGED_OUT


def test_resync_drops_what_asterisk_no_longer_has() -> None:
    state = _state()
    state.apply(_member("QueueMemberAdded", ALICE), 0.0)
    state.apply(_member("QueueMemberAdded", BOB), 0.0)
    state.apply(_join("gone"), 1.0)
    state.apply(_join("u2", position=2), 2.0)
    params = _event("QueueParams", Queue=Q)
    member = _event("QueueMember", Queue=Q, Location=BOB, Status="1", InCall="0", Paused="0")
    entry = _event("QueueEntry", Queue=Q, Position="1", Uniqueid="u2", Wait="8", Priority="2")
    channel = _event("CoreShowChannel", Uniqueid="u2", Application="Queue", BridgeId="")
    changes = state.resync([params, member, entry], [channel], 10.0)
    snap = state.snapshot()
    assert snap.agents["alice"].state is AgentState.LOGGED_OUT
    assert snap.agents["bob"].state is AgentState.AVAILABLE
    assert [(w.uniqueid, w.priority, w.joined_at) for w in snap.queues[Q].waiting] == [
        ("u2", 2, 2.0)
    ]
    assert "gone" not in snap.calls
    assert _outcome(state, "gone") == [Outcome.UNKNOWN]
    assert "vanished" in [a.kind for a in _anomalies(changes)]


def _bridged(uid: str, queue: str = Q) -> Event:
    return _event(
        "CoreShowChannel",
        Uniqueid=uid,
        Application="Queue",
        ApplicationData=f"{queue},,,,120",
        BridgeId="b-1",
        Duration="00:00:09",
    )


def test_resync_a_call_listed_waiting_and_bridged_is_connected() -> None:
    # QueueStatus saw u1 waiting; CoreShowChannels, asked next, found it bridged to bob.
    state = _state()
    state.apply(_member("QueueMemberAdded", BOB), 0.0)
    state.apply(_join("u1"), 1.0)
    params = _event("QueueParams", Queue=Q)
    member = _event("QueueMember", Queue=Q, Location=BOB, Status="2", InCall="1", Paused="0")
    entry = _event("QueueEntry", Queue=Q, Position="1", Uniqueid="u1", Wait="8", Priority="0")
    agent_leg = _event(
        "CoreShowChannel",
        Uniqueid="a1",
        Channel=f"{BOB}-00000001;1",
        Application="AppQueue",
        BridgeId="b-1",
    )
    changes = state.resync([params, member, entry], [_bridged("u1"), agent_leg], 10.0)
    assert _anomalies(changes) == []
    snap = state.snapshot()
    assert snap.queues[Q].waiting == ()
    assert (snap.calls["u1"].state, snap.calls["u1"].agent_id) == (CallState.CONNECTED, "bob")
    assert snap.agents["bob"].state is AgentState.ON_CALL
    _check_invariants(state)


def test_resync_moves_a_caller_out_of_a_queue_the_status_did_not_cover() -> None:
    # We had u1 waiting in second-printing; a QueueStatus of first-level only lists it
    # there (waiting in one case, bridged in the other): the second-printing visit is over.
    for entries, channels in (([_join("u1")], []), ([], [_bridged("u1")])):
        state = _state()
        state.apply(_join("u1", "second-printing"), 1.0)
        listed = [
            _event("QueueEntry", Queue=Q, Position="1", Uniqueid=e.get("Uniqueid") or "", Wait="2")
            for e in entries
        ]
        state.resync([_event("QueueParams", Queue=Q), *listed], channels, 10.0)
        snap = state.snapshot()
        assert snap.queues["second-printing"].waiting == ()
        assert snap.calls["u1"].queue == Q
        assert _outcome(state, "u1") == [Outcome.OVERFLOWED]
        _check_invariants(state)


def test_finished_ring_is_bounded() -> None:
    state = _state(finished_limit=3)
    for n in range(10):
        state.apply(_join(f"u{n}"), float(n))
        state.apply(_event("Hangup", Uniqueid=f"u{n}"), n + 0.5)
    assert [f.uniqueid for f in state.finished()] == ["u7", "u8", "u9"]
    assert state.snapshot().calls == {}


def test_snapshot_is_cached_until_a_change() -> None:
    state = _state()
    first = state.snapshot()
    assert state.snapshot() is first
    state.apply(_member("QueueMemberAdded", ALICE), 1.0)
    second = state.snapshot()
    assert second is not first
    assert second.as_of == 1.0
    assert first.agents["alice"].state is AgentState.LOGGED_OUT  # the old copy stays as it was


# --- properties ----------------------------------------------------------------------------

_VOCABULARY: list[Event] = [e for e, _ in TRANSCRIPT_DATA.broadcast] + [
    _agent_event("AgentRingNoAnswer", C2, ALICE, RingTime="10"),
    _agent_event("AgentDump", C1, BOB),
    _agent_event("AgentCalled", C3, ALICE),
    _member("QueueMemberStatus", BOB, Status="6"),
    _member("QueueMemberStatus", ALICE, Status="2", InCall="1"),
    _join(C1, "second-printing"),
    _event("Hangup", Uniqueid=C2),
    _event("Hangup", Uniqueid=C1),
]
_MARKS = ["callback", "returning", "overflow", "timeout", "tick", "resync"]
_step = st.one_of(
    st.sampled_from(range(len(_VOCABULARY))),
    st.tuples(st.sampled_from(_MARKS), st.sampled_from([C1, C2, C3])),
)


def _rebuilt_snapshot(state: LiveState) -> StateSnapshot:
    """The snapshot built with every cached agent and call view thrown away."""
    for item in [*state._agents.values(), *state._calls.values()]:
        item.view = None
    state._cached = None
    return state.snapshot()


def _check_invariants(state: LiveState) -> None:
    snap = state.snapshot()
    assert snap == _rebuilt_snapshot(state), "a cached view outlived a change"
    waiting = [w.uniqueid for q in snap.queues.values() for w in q.waiting]
    assert len(waiting) == len(set(waiting)), "a caller waits twice"
    for queue in snap.queues.values():
        for w in queue.waiting:
            call = snap.calls[w.uniqueid]
            assert call.state in (CallState.QUEUED, CallState.RINGING)
            assert call.queue == queue.queue
    for call in snap.calls.values():
        assert call.state not in FINAL_CALL_STATES, "a finished call was not retired"
        assert (call.state in (CallState.QUEUED, CallState.RINGING)) == (call.uniqueid in waiting)
    assert sum(snap.agent_counts.values()) == len(snap.agents)
    for agent in snap.agents.values():
        assert (agent.state is AgentState.LOGGED_OUT) == (not agent.queues)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=80))
# C1 joins second-printing (step 49), then a QueueStatus of first-level only and channels
# that show C1 bridged from first-level: it must leave second-printing's waiting list.
@example(steps=[49, ("resync", C1)])
def test_any_interleaving_never_raises_and_keeps_invariants(steps: list[Any]) -> None:
    state = _state(wrapup=5)
    now = 1795433800.0
    last = TRANSCRIPT_DATA.resyncs[0]
    for step in steps:
        now += 0.25
        if isinstance(step, int):
            state.apply(_VOCABULARY[step], now)
        else:
            kind, uid = step
            if kind == "callback":
                state.mark_callback(uid, now)
            elif kind == "returning":
                state.mark_returning(uid, now)
            elif kind == "overflow":
                state.mark_overflow(uid, "second-printing", now)
            elif kind == "timeout":
                state.mark_timeout(uid, now)
            elif kind == "tick":
                state.tick(now + 10)
            else:
                state.resync(last.queue_status, last.channels, now)
        _check_invariants(state)


def _prefix_until(index: int) -> Iterator[tuple[Event, float]]:
    for step in TRANSCRIPT_DATA.steps:
        if isinstance(step, Resync):
            if step is TRANSCRIPT_DATA.resyncs[index]:
                return
            continue
        yield step


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_resync_repairs_any_lost_events(data: st.DataObject) -> None:
    index = data.draw(st.sampled_from([0, 1, 2]))
    prefix = list(_prefix_until(index))
    kept = data.draw(st.lists(st.booleans(), min_size=len(prefix), max_size=len(prefix)))
    truth, damaged = _state(), _state()
    for (event, now), keep in zip(prefix, kept, strict=True):
        _note_daemon_priority(truth, event, now)
        _note_daemon_priority(damaged, event, now)
        truth.apply(event, now)
        if keep:
            damaged.apply(event, now)
    resync = TRANSCRIPT_DATA.resyncs[index]
    damaged.resync(resync.queue_status, resync.channels, resync.now)
    expected, got = _normal(truth.snapshot()), _normal(damaged.snapshot())
    # a caller whose join was lost keeps the join time Asterisk reports (whole seconds)
    assert got["queues"] == expected["queues"]
    assert got["agents"] == expected["agents"]
    assert got["calls"] == expected["calls"]
    for uid, joined in got["joined"].items():
        assert abs(joined - expected["joined"][uid]) <= 1
    _check_invariants(damaged)
