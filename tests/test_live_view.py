"""routing_view: what the routing core reads from the live state."""

from __future__ import annotations

from acd.ami.codec import Event
from acd.expected_wait import expected_wait
from acd.live_view import routing_view
from acd.state import LiveState

Q = "first-level"
ALICE = "Local/alice@test-agents"


def _event(name: str, **fields: str) -> Event:
    return Event(name, (("Event", name), *fields.items()))


def _state_with_alice_free() -> LiveState:
    state = LiveState({ALICE: "alice"}, {Q: 0}, {Q: 5})
    member = {"Queue": Q, "Interface": ALICE, "StateInterface": ALICE, "Penalty": "0"}
    member |= {"Paused": "0", "PausedReason": "", "Status": "1", "InCall": "0"}
    state.apply(_event("QueueMemberAdded", **member), 0.0)
    return state


def test_a_caller_routed_to_the_queue_but_not_yet_in_it_counts_as_waiting_ahead() -> None:
    """The first caller hears the welcome before Queue(): the free agent is theirs, not the
    next caller's, so the next caller is not told "no wait" and put through first."""
    state = _state_with_alice_free()
    load = routing_view(state.snapshot(), {}, 1.0).queues[Q]
    assert (load.waiting, load.agents_available) == (0, 1)
    assert expected_wait(load.snapshot).seconds == 0

    state.note_route("first", 1.0, caller_number="4930555041", queue=Q)
    load = routing_view(state.snapshot(), {}, 1.3).queues[Q]
    assert load.waiting == 1
    assert expected_wait(load.snapshot).seconds != 0

    # Once in the queue the caller is counted there, once.
    state.apply(_event("QueueCallerJoin", Uniqueid="first", Queue=Q, Position="1"), 5.0)
    assert routing_view(state.snapshot(), {}, 5.0).queues[Q].waiting == 1
    state.apply(_event("Hangup", Uniqueid="first"), 6.0)
    assert routing_view(state.snapshot(), {}, 6.0).queues[Q].waiting == 0


def test_a_routed_caller_who_hangs_up_during_the_welcome_no_longer_counts() -> None:
    state = _state_with_alice_free()
    state.note_route("gone", 1.0, queue=Q)
    state.apply(_event("Hangup", Uniqueid="gone"), 2.0)
    assert routing_view(state.snapshot(), {}, 2.0).queues[Q].waiting == 0
