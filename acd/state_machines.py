"""The agent and call lifecycles of Firstline's live state, as transition tables held as data.

Pure data plus two lookup functions; no I/O, no clock, no knowledge of AMI. `acd.state`
maps AMI events to the triggers below and applies them; this module must not learn about
events, queues or time, so that every legal move of an agent or a call can be read here.
"""

# Theory of operation
# -------------------
# Everything that decides whether an agent or a call may move from one state to another
# lives in this module, as two dictionaries keyed by (state, trigger). A missing key is an
# illegal transition and `agent_transition` / `call_transition` raise `IllegalTransition`.
#
# Agents. An agent's *activity* (ringing, on a call, in wrap-up) and its *pause* are two
# different facts: Asterisk lets a supervisor pause an agent in the middle of a call, and
# the pause must then take effect when the call (and its wrap-up) is over. So the agent
# record keeps a `paused` flag next to its state, and a table entry may name the target
# `REST` instead of a state: "whichever idle state the pause flag calls for", i.e. `paused`
# if the flag is set, else `available`. PAUSE / UNPAUSE while ringing, on a call or in
# wrap-up leave the state alone (only the flag changes). A login lands in REST as well,
# because an agent can be added to a queue already paused.
#
# Calls. A call is one caller channel (its Asterisk Uniqueid) on the hotline:
#
#   routing --JOIN--> queued --RING--> ringing --CONNECT--> connected --COMPLETE--> completed
#      ^                 |  ^------RING_NO_ANSWER---'                                  (final)
#      '--LEAVE_QUEUE----'  (alive, out of the queue: key press, timeout, overflow)
#   routing / queued / ringing --ABANDON / HANGUP / CALLBACK--> left (final, with outcome)
#
# app_queue sends QueueCallerLeave *before* AgentConnect, so a call that is answered passes
# through `routing` for an instant: CONNECT is legal from routing. `completed` and `left`
# are final: nothing leaves them, and the state model retires such calls at once.

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "AGENT_TRANSITIONS",
    "CALL_TRANSITIONS",
    "FINAL_CALL_STATES",
    "REST",
    "AgentState",
    "AgentTrigger",
    "CallState",
    "CallTrigger",
    "IllegalTransition",
    "agent_transition",
    "call_transition",
    "rest_state",
]


class AgentState(enum.StrEnum):
    """Where an agent is in its working cycle."""

    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


class AgentTrigger(enum.StrEnum):
    """What can happen to an agent."""

    LOGIN = "login"  # becomes a member of its first queue
    LOGOUT = "logout"  # leaves its last queue
    PAUSE = "pause"
    UNPAUSE = "unpause"
    RING = "ring"  # app_queue rings the agent's phone
    RING_NO_ANSWER = "ring_no_answer"  # ringing ended without an answer (or the caller left)
    CONNECT = "connect"
    COMPLETE = "complete"  # the queue call ended
    WRAPUP_END = "wrapup_end"


class CallState(enum.StrEnum):
    """Where a caller is between the hotline and the end of the call."""

    ROUTING = "routing"  # in the dialplan / IVR, not in a queue
    QUEUED = "queued"
    RINGING = "ringing"  # still in the queue, an agent's phone rings for it
    CONNECTED = "connected"
    COMPLETED = "completed"  # final: talked to an agent
    LEFT = "left"  # final: left without an agent; the outcome says how


class CallTrigger(enum.StrEnum):
    """What can happen to a call."""

    JOIN = "join"
    RING = "ring"
    RING_NO_ANSWER = "ring_no_answer"
    LEAVE_QUEUE = "leave_queue"  # left the queue alive (answered, key press, timeout)
    CONNECT = "connect"
    COMPLETE = "complete"
    ABANDON = "abandon"  # the caller hung up while waiting
    HANGUP = "hangup"  # the caller's channel is gone
    CALLBACK = "callback"  # a callback ticket was booked for this caller


class _Rest(enum.Enum):
    """Table target meaning "paused if the pause flag is set, else available"."""

    REST = "rest"


REST: Final = _Rest.REST

FINAL_CALL_STATES: Final = frozenset({CallState.COMPLETED, CallState.LEFT})


class IllegalTransition(Exception):  # noqa: N818 - reads as the event it reports
    """A trigger that the lifecycle table does not allow from the current state."""

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        super().__init__(f"{machine}: {trigger!s} is not allowed in state {state!s}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


_A = AgentState
_AT = AgentTrigger
_BUSY: Final = (_A.RINGING, _A.ON_CALL, _A.WRAP_UP)

AGENT_TRANSITIONS: Final[dict[tuple[AgentState, AgentTrigger], AgentState | _Rest]] = {
    (_A.LOGGED_OUT, _AT.LOGIN): REST,
    **{(state, _AT.LOGOUT): _A.LOGGED_OUT for state in _A if state is not _A.LOGGED_OUT},
    (_A.AVAILABLE, _AT.PAUSE): _A.PAUSED,
    (_A.PAUSED, _AT.PAUSE): _A.PAUSED,  # a new reason
    (_A.PAUSED, _AT.UNPAUSE): _A.AVAILABLE,
    (_A.AVAILABLE, _AT.UNPAUSE): _A.AVAILABLE,
    **{(state, _AT.PAUSE): state for state in _BUSY},
    **{(state, _AT.UNPAUSE): state for state in _BUSY},
    (_A.AVAILABLE, _AT.RING): _A.RINGING,
    # Asterisk's own wrap-up (queues.conf wrapuptime) is authoritative: if it rings the
    # agent, Firstline's wrap-up is over.
    (_A.WRAP_UP, _AT.RING): _A.RINGING,
    (_A.RINGING, _AT.RING): _A.RINGING,  # rung again (retry, or for another queue)
    (_A.RINGING, _AT.RING_NO_ANSWER): REST,
    (_A.RINGING, _AT.CONNECT): _A.ON_CALL,
    (_A.ON_CALL, _AT.COMPLETE): _A.WRAP_UP,
    (_A.WRAP_UP, _AT.WRAPUP_END): REST,
}

_C = CallState
_CT = CallTrigger

CALL_TRANSITIONS: Final[dict[tuple[CallState, CallTrigger], CallState]] = {
    (_C.ROUTING, _CT.JOIN): _C.QUEUED,
    (_C.QUEUED, _CT.RING): _C.RINGING,
    (_C.RINGING, _CT.RING): _C.RINGING,  # ringall: several agents ring at once
    (_C.RINGING, _CT.RING_NO_ANSWER): _C.QUEUED,
    (_C.QUEUED, _CT.LEAVE_QUEUE): _C.ROUTING,
    (_C.RINGING, _CT.LEAVE_QUEUE): _C.ROUTING,
    (_C.RINGING, _CT.CONNECT): _C.CONNECTED,
    (_C.ROUTING, _CT.CONNECT): _C.CONNECTED,  # QueueCallerLeave comes before AgentConnect
    (_C.CONNECTED, _CT.COMPLETE): _C.COMPLETED,
    (_C.CONNECTED, _CT.HANGUP): _C.COMPLETED,
    **{(state, _CT.ABANDON): _C.LEFT for state in (_C.ROUTING, _C.QUEUED, _C.RINGING)},
    **{(state, _CT.HANGUP): _C.LEFT for state in (_C.ROUTING, _C.QUEUED, _C.RINGING)},
    **{(state, _CT.CALLBACK): _C.LEFT for state in (_C.ROUTING, _C.QUEUED, _C.RINGING)},
}


def rest_state(paused: bool) -> AgentState:
    """The idle state an agent settles in."""
    return AgentState.PAUSED if paused else AgentState.AVAILABLE


def agent_transition(state: AgentState, trigger: AgentTrigger, *, paused: bool) -> AgentState:
    """The agent's next state; raises `IllegalTransition` if the table has no entry."""
    target = AGENT_TRANSITIONS.get((state, trigger))
    if target is None:
        raise IllegalTransition("agent", state, trigger)
    if isinstance(target, _Rest):
        return rest_state(paused)
    return target


def call_transition(state: CallState, trigger: CallTrigger) -> CallState:
    """The call's next state; raises `IllegalTransition` if the table has no entry."""
    target = CALL_TRANSITIONS.get((state, trigger))
    if target is None:
        raise IllegalTransition("call", state, trigger)
    return target
