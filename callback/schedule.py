"""When and where callbacks are made: the pure decisions of the callback dialer.

A pending callback keeps its caller's place by standing in the queue itself: the dialer
puts a *held place* (a Local channel that waits in `Queue()`) into the queue's line at the
position the caller would have now, by priority and then original join time. app_queue then
offers it to the next free qualified agent in the same order as live callers, with the same
strategy, penalties, ring-in-use and wrap-up rules; when an agent answers the held place,
the agent hears the ticket (whisper) and the customer is dialled. This module decides how
many places each queue holds, where they go, when a failed attempt is retried, and whether
a joining caller hears the offer. No I/O, no asyncio, no clock: `now` comes in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from acd.config import CallbackDialing, Config, Queue
from acd.expected_wait import WaitEstimate
from acd.state import StateSnapshot, WaitingCaller
from acd.state_machines import AgentState
from ivr.prompts import sound

__all__ = [
    "HeldPlace",
    "max_penalty_after",
    "place_position",
    "places_wanted",
    "retry_at",
    "welcome_announcement",
]

# Core sounds have digits/1 .. digits/20 in every language we ship; a longer wait is not
# told as a number.
_TOLD_MINUTES_MAX = 20

_STAFFED = frozenset(
    {AgentState.AVAILABLE, AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP}
)


@dataclass(frozen=True, slots=True)
class HeldPlace:
    """A callback standing in a queue's line: its app_queue entry and the caller's place."""

    uniqueid: str
    priority: int
    joined_at: float


def welcome_announcement(queue: Queue, estimate: WaitEstimate | None) -> tuple[str, ...]:
    """What a caller joining `queue` hears before the wait (Background() files, in order):
    the expected wait, then the callback offer; nothing when an agent is free or about to be.

    The wait is told when `WaitEstimate.announce_minutes` allows it and core sounds can say
    it in every language. The offer is made only when the wait is worth leaving: over the
    queue's `offer_on_joining_over`, or not known reliably (nobody logged in, too few calls
    to know a handle time), when the caller would rather hear the option. A caller who
    waits on hears the periodic offers anyway.
    """
    files: list[str] = []
    minutes = estimate.announce_minutes if estimate is not None else None
    if minutes is not None and minutes <= _TOLD_MINUTES_MAX:
        files += [sound("expected-wait"), f"digits/{minutes}", "minutes"]
    callback = queue.callback
    if callback.enabled and (
        estimate is None
        or not estimate.reliable
        or estimate.seconds is None
        or estimate.seconds > callback.offer_on_joining_over
    ):
        files.append(sound("callback-offer", callback.digit))
    return tuple(files)


def retry_at(policy: CallbackDialing, attempts_made: int, now: dt.datetime) -> dt.datetime | None:
    """When to try again after `attempts_made` failed tries, or None: no tries left."""
    if attempts_made >= policy.attempts:
        return None
    spacing = policy.retry_after[min(max(attempts_made, 1), len(policy.retry_after)) - 1]
    return now + dt.timedelta(seconds=spacing)


def place_position(
    priority: int,
    joined_at: float,
    waiting: Iterable[WaitingCaller],
    held: Mapping[str, HeldPlace],
) -> int:
    """The 1-based position in app_queue's line for a callback of this priority and join time.

    It goes behind every entry of higher priority, and behind entries of its priority that
    joined earlier; held places count with their callers' original join times. app_queue
    itself never lets a position jump ahead of a higher priority.
    """
    ahead = 0
    for entry in waiting:
        place = held.get(entry.uniqueid)
        their_priority = place.priority if place else entry.priority
        their_join = place.joined_at if place else entry.joined_at
        if their_priority > priority or (their_priority == priority and their_join <= joined_at):
            ahead += 1
    return ahead + 1


def places_wanted(
    config: Config,
    snapshot: StateSnapshot,
    open_queues: Iterable[str],
    held_per_queue: Mapping[str, int],
) -> dict[str, int]:
    """How many more callbacks each open queue should hold in its line now.

    A queue holds at most as many places as it has staffed agents (logged in, not paused),
    and at most `places_per_queue`: enough that a freed agent finds the next callback already
    in line, few enough that nobody is called for a queue nobody serves.
    """
    limit = config.callback.places_per_queue
    wanted: dict[str, int] = {}
    for queue_id in open_queues:
        staffed = sum(
            1
            for agent in snapshot.agents.values()
            if agent.state in _STAFFED
            and queue_id in agent.queues
            and not agent.queues[queue_id].paused
        )
        more = min(limit, staffed) - held_per_queue.get(queue_id, 0)
        if more > 0:
            wanted[queue_id] = more
    return wanted


def max_penalty_after(queue: Queue, waited: float, default: int) -> int:
    """The queue's penalty bound after the caller has waited `waited` seconds in total.

    A callback keeps the escalation its caller earned by waiting: the held place starts at
    the bound the caller would have reached by now.
    """
    bound = default
    for after, penalty in queue.max_penalty_schedule():
        if waited >= after:
            bound = penalty
    return bound
