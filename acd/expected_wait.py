"""Expected wait for one caller in one queue, from a snapshot of the queue's live state.

The formula and its assumptions are written down in docs/EXPECTED_WAIT.md; keep the two in
step. Pure: no I/O, no asyncio, no clock -- the adapter turns call start times and ``now`` into
remaining seconds (``busy_remaining``) before it builds the snapshot. An estimate that is not
``reliable`` must never be announced to a caller; ``WaitEstimate.announce_minutes`` enforces it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "SHORTEST_TOLD_WAIT",
    "QueueSnapshot",
    "WaitEstimate",
    "busy_remaining",
    "expected_wait",
    "rounded_up_minutes",
]

DEFAULT_MIN_SAMPLES = 20
"""Handle-time samples below which the observed mean is too noisy to tell a caller."""

SHORTEST_TOLD_WAIT = 30.0
"""Seconds below which a wait is not told: "about 1 minute" would promise a wait the caller
will not have (a busy agent about to finish)."""

# A float sum such as 3 * 60.000000000001 must still read "3 minutes", not 4.
_MINUTE_SLACK = 1e-9


def _check_seconds(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What the estimator needs to know about one queue, as seen by one waiting caller.

    ``position`` is 1-based (callers ahead + 1). Agents counted here are qualified for the
    queue, logged in and not paused: ``agents_available`` are idle, and
    ``agents_busy_remaining`` holds, for each agent on a call or in wrap-up, the expected
    seconds until it is free (>= 0). ``mean_handle_time`` is the observed mean of talk plus
    wrap-up, ``None`` when nothing was observed yet; ``samples`` is how many calls it averages.
    """

    position: int
    agents_available: int
    agents_busy_remaining: tuple[float, ...]
    mean_handle_time: float | None
    samples: int

    def __post_init__(self) -> None:
        _check_count("position", self.position, 1)
        _check_count("agents_available", self.agents_available, 0)
        _check_count("samples", self.samples, 0)
        for remaining in self.agents_busy_remaining:
            _check_seconds("each of agents_busy_remaining", remaining)
        if self.mean_handle_time is not None and (
            not math.isfinite(self.mean_handle_time) or self.mean_handle_time <= 0
        ):
            raise ValueError(
                f"mean_handle_time must be None or a finite number of seconds > 0, "
                f"got {self.mean_handle_time!r}"
            )

    @property
    def agents_logged_in(self) -> int:
        """Qualified agents who will serve this queue: idle plus busy."""
        return self.agents_available + len(self.agents_busy_remaining)


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """An estimated wait in seconds; ``reason`` says how it was reached or why it is not usable."""

    seconds: float | None
    reliable: bool
    reason: str

    def __post_init__(self) -> None:
        if self.reliable and self.seconds is None:
            raise ValueError("a reliable estimate needs a number of seconds")

    @property
    def announce_minutes(self) -> int | None:
        """Minutes to tell the caller ("about N minutes"), or ``None`` if it must not be told:
        unreliable, or shorter than `SHORTEST_TOLD_WAIT`."""
        if not self.reliable or self.seconds is None or self.seconds < SHORTEST_TOLD_WAIT:
            return None
        return rounded_up_minutes(self.seconds)


def busy_remaining(elapsed_s: Iterable[float], mean_handle_time: float) -> tuple[float, ...]:
    """Expected seconds until each busy agent is free: ``max(0, AHT - elapsed)`` per agent.

    ``elapsed_s`` is, per busy agent, ``now`` minus the start of its current call (talk plus
    wrap-up so far). An agent already past the mean is taken to be about to finish.
    """
    if not math.isfinite(mean_handle_time) or mean_handle_time <= 0:
        raise ValueError(
            f"mean_handle_time must be a finite number of seconds > 0, got {mean_handle_time!r}"
        )
    result: list[float] = []
    for elapsed in elapsed_s:
        _check_seconds("elapsed time", elapsed)
        result.append(max(0.0, mean_handle_time - elapsed))
    return tuple(result)


def expected_wait(
    snapshot: QueueSnapshot, *, min_samples: int = DEFAULT_MIN_SAMPLES
) -> WaitEstimate:
    """Expected seconds until the caller at ``snapshot.position`` reaches an agent.

    Callers ahead are served first in first-out order by whichever agent frees up first; each
    agent then stays busy for ``mean_handle_time`` per caller. The caller's wait is the time
    the ``position``-th agent release happens (idle agents release at 0). O(N + position log N),
    O(N log N + position / N) when every busy agent is free within one handle time.
    """
    _check_count("min_samples", min_samples, 0)
    if snapshot.agents_logged_in == 0:
        return WaitEstimate(None, reliable=False, reason="no qualified agent logged in")
    if snapshot.position <= snapshot.agents_available:
        return WaitEstimate(0.0, reliable=True, reason="a qualified agent is idle")
    handle_time = snapshot.mean_handle_time
    if handle_time is None:
        return WaitEstimate(None, reliable=False, reason="no observed handle time")

    seconds = _release_time(
        snapshot.position, snapshot.agents_available, snapshot.agents_busy_remaining, handle_time
    )
    if snapshot.samples < min_samples:
        return WaitEstimate(
            seconds,
            reliable=False,
            reason=f"only {snapshot.samples} handle-time samples, need {min_samples}",
        )
    return WaitEstimate(
        seconds,
        reliable=True,
        reason=(
            f"position {snapshot.position}, {snapshot.agents_logged_in} agents, "
            f"mean handle time {handle_time:g} s over {snapshot.samples} calls"
        ),
    )


def _release_time(
    position: int, available: int, busy_remaining: tuple[float, ...], handle_time: float
) -> float:
    if not busy_remaining or max(busy_remaining) <= handle_time:
        return _release_time_in_rounds(position, available, busy_remaining, handle_time)
    # A min-heap of the moments each agent is next free. Each caller ahead takes the earliest
    # one and keeps that agent busy for one more handle time; our caller takes the next.
    free_at = [0.0] * available + list(busy_remaining)
    heapq.heapify(free_at)
    for _ in range(position - 1):
        heapq.heapreplace(free_at, free_at[0] + handle_time)
    return free_at[0]


def _release_time_in_rounds(
    position: int, available: int, busy_remaining: tuple[float, ...], handle_time: float
) -> float:
    """``_release_time`` when every agent is free within one handle time: O(N log N + p/N).

    Then the heap serves the agents in rounds: each takes one caller in the order it is free
    (0 for idle agents, then the sorted remaining times), and is free again no earlier than
    every agent of its round, since ``fl(t + h) >= h`` for ``t >= 0`` and rounding is monotonic
    (by induction, round k starts where round k-1 ends). The caller at ``position`` is thus
    served by agent ``(p-1) mod N`` of the sorted order in round ``(p-1) div N``. The handle
    times are added one by one, as the heap does, so the float result is the same to the bit.
    """
    rounds, index = divmod(position - 1, available + len(busy_remaining))
    free_at = 0.0 if index < available else sorted(busy_remaining)[index - available]
    for _ in range(rounds):
        free_at += handle_time
    return free_at


def rounded_up_minutes(seconds: float) -> int:
    """Whole minutes for an announcement, rounded up, at least 1 ("about 3 minutes")."""
    _check_seconds("seconds", seconds)
    return max(1, math.ceil(seconds / 60.0 - _MINUTE_SLACK))
