"""Adapts the live state into what the routing core reads (``RoutingView``).

Pure: no I/O, no clock. Kept apart so that ``acd.routing`` never imports the state module.
Per queue, the agents counted are the queue's members who are logged in and not paused in
that queue (docs/EXPECTED_WAIT.md); a busy agent is expected free after the mean handle time
(talk plus wrap-up, from the queue's answered calls) measured from when it became busy.
Callers the routing AGI sent to a queue who have not joined it yet (they hear the welcome
announcement first) count as waiting ahead: they arrived first, so they are answered first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean

from acd.expected_wait import busy_remaining
from acd.routing import AgentAvailability, QueueLoad, RoutingView
from acd.state import FinishedCall, Outcome, StateSnapshot
from acd.state_machines import AgentState, CallState

__all__ = ["handle_times", "routing_view"]

_BUSY = frozenset({AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP})
# The state says all the routing core asks of an agent: one shared value per state.
_AVAILABILITY = {
    state: AgentAvailability(
        logged_in=state is not AgentState.LOGGED_OUT,
        available=state is AgentState.AVAILABLE,
        paused=state is AgentState.PAUSED,
    )
    for state in AgentState
}


def handle_times(
    finished: Iterable[FinishedCall], wrapup_seconds: Mapping[str, int]
) -> dict[str, tuple[float, ...]]:
    """Per queue, the handle times (talk plus the queue's wrap-up) of its answered calls
    among ``finished``; they change only when a call finishes, not with every event."""
    times: dict[str, list[float]] = {}
    for record in finished:
        if record.outcome is Outcome.ANSWERED and record.queue and record.talk is not None:
            times.setdefault(record.queue, []).append(
                record.talk + wrapup_seconds.get(record.queue, 0)
            )
    return {queue: tuple(samples) for queue, samples in times.items()}


def routing_view(
    snapshot: StateSnapshot,
    handle_times: Mapping[str, Sequence[float]],
    now: float,
) -> RoutingView:
    """The routing core's view of ``snapshot`` at ``now``, with the queues' ``handle_times``."""
    agents = {agent_id: _AVAILABILITY[view.state] for agent_id, view in snapshot.agents.items()}
    members: dict[str, list[tuple[AgentState, float]]] = {}
    for view in snapshot.agents.values():
        for queue_id, member in view.queues.items():
            if not member.paused and view.state is not AgentState.PAUSED:
                members.setdefault(queue_id, []).append((view.state, view.since))
    arriving = Counter(
        call.queue
        for call in snapshot.calls.values()
        if call.state is CallState.ROUTING and call.queue is not None
    )
    queues: dict[str, QueueLoad] = {}
    for queue_id in set(snapshot.queues) | set(members) | set(arriving):
        queue_members = members.get(queue_id, [])
        samples = handle_times.get(queue_id, ())
        mean = fmean(samples) if samples else None
        busy_since = [since for state, since in queue_members if state in _BUSY]
        queues[queue_id] = QueueLoad(
            waiting=arriving[queue_id]
            + (len(snapshot.queues[queue_id].waiting) if queue_id in snapshot.queues else 0),
            agents_available=sum(state is AgentState.AVAILABLE for state, _ in queue_members),
            agents_busy_remaining=(
                busy_remaining((max(0.0, now - since) for since in busy_since), mean)
                if mean
                else tuple(0.0 for _ in busy_since)
            ),
            mean_handle_time=mean,
            samples=len(samples),
        )
    return RoutingView(agents=agents, queues=queues)
