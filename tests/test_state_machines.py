"""The agent and call lifecycle tables: what they allow, and that they refuse all else."""

from __future__ import annotations

import itertools

import pytest

from acd.state_machines import (
    AGENT_TRANSITIONS,
    CALL_TRANSITIONS,
    FINAL_CALL_STATES,
    REST,
    AgentState,
    AgentTrigger,
    CallState,
    CallTrigger,
    IllegalTransition,
    agent_transition,
    call_transition,
)

_AGENT_ILLEGAL = [
    pair for pair in itertools.product(AgentState, AgentTrigger) if pair not in AGENT_TRANSITIONS
]
_CALL_ILLEGAL = [
    pair for pair in itertools.product(CallState, CallTrigger) if pair not in CALL_TRANSITIONS
]


@pytest.mark.parametrize(("state", "trigger"), _AGENT_ILLEGAL)
@pytest.mark.parametrize("paused", [False, True])
def test_every_illegal_agent_transition_is_refused(
    state: AgentState, trigger: AgentTrigger, paused: bool
) -> None:
    with pytest.raises(IllegalTransition) as info:
        agent_transition(state, trigger, paused=paused)
    assert info.value.machine == "agent"
    assert info.value.state == state
    assert info.value.trigger == trigger


@pytest.mark.parametrize(("state", "trigger"), _CALL_ILLEGAL)
def test_every_illegal_call_transition_is_refused(state: CallState, trigger: CallTrigger) -> None:
    with pytest.raises(IllegalTransition, match=f"{trigger} is not allowed in state {state}"):
        call_transition(state, trigger)


def test_tables_refuse_a_real_share_of_moves() -> None:
    # a table that allowed everything would make the tests above vacuous
    assert len(_AGENT_ILLEGAL) > 20
    assert len(_CALL_ILLEGAL) > 20


@pytest.mark.parametrize(("key", "target"), list(AGENT_TRANSITIONS.items()))
def test_legal_agent_transitions(key: tuple[AgentState, AgentTrigger], target: object) -> None:
    state, trigger = key
    for paused, rest in ((False, AgentState.AVAILABLE), (True, AgentState.PAUSED)):
        expected = rest if target is REST else target
        assert agent_transition(state, trigger, paused=paused) is expected


def test_rest_follows_the_pause_flag() -> None:
    assert agent_transition(AgentState.WRAP_UP, AgentTrigger.WRAPUP_END, paused=True) is (
        AgentState.PAUSED
    )
    assert agent_transition(AgentState.RINGING, AgentTrigger.RING_NO_ANSWER, paused=False) is (
        AgentState.AVAILABLE
    )
    assert agent_transition(AgentState.LOGGED_OUT, AgentTrigger.LOGIN, paused=True) is (
        AgentState.PAUSED
    )


def test_pause_during_a_call_keeps_the_call() -> None:
    for state in (AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP):
        assert agent_transition(state, AgentTrigger.PAUSE, paused=True) is state


def test_every_agent_state_is_reachable_from_logged_out() -> None:
    seen = {AgentState.LOGGED_OUT}
    frontier = [AgentState.LOGGED_OUT]
    while frontier:
        state = frontier.pop()
        for trigger in AgentTrigger:
            for paused in (False, True):
                try:
                    nxt = agent_transition(state, trigger, paused=paused)
                except IllegalTransition:
                    continue
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
    assert seen == set(AgentState)


def test_final_call_states_have_no_way_out() -> None:
    for state, trigger in itertools.product(FINAL_CALL_STATES, CallTrigger):
        with pytest.raises(IllegalTransition):
            call_transition(state, trigger)


def test_answered_call_path_follows_app_queue_event_order() -> None:
    # QueueCallerJoin, AgentCalled, QueueCallerLeave, AgentConnect, AgentComplete
    state = CallState.ROUTING
    for trigger in (
        CallTrigger.JOIN,
        CallTrigger.RING,
        CallTrigger.LEAVE_QUEUE,
        CallTrigger.CONNECT,
        CallTrigger.COMPLETE,
    ):
        state = call_transition(state, trigger)
    assert state is CallState.COMPLETED
