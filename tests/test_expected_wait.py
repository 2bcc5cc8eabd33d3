"""The live expected-wait estimate: worked cases, reliability, and its agreement with Erlang C."""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.erlang import average_speed_of_answer, erlang_c
from acd.expected_wait import (
    DEFAULT_MIN_SAMPLES,
    SHORTEST_TOLD_WAIT,
    QueueSnapshot,
    WaitEstimate,
    _release_time_in_rounds,
    busy_remaining,
    expected_wait,
    rounded_up_minutes,
)


def _snapshot(
    position: int,
    available: int = 0,
    busy: tuple[float, ...] = (),
    aht: float | None = 180.0,
    samples: int = 100,
) -> QueueSnapshot:
    return QueueSnapshot(
        position=position,
        agents_available=available,
        agents_busy_remaining=busy,
        mean_handle_time=aht,
        samples=samples,
    )


def test_worked_example_from_the_docs() -> None:
    estimate = expected_wait(_snapshot(5, available=1, busy=(30.0, 90.0, 150.0)))
    assert estimate.seconds == 180.0
    assert estimate.reliable
    assert estimate.announce_minutes == 3


@pytest.mark.parametrize(
    ("position", "expected"),
    # Free times {0, 30, 90, 150}; each release pushes that agent on by 180 s.
    [(1, 0.0), (2, 30.0), (3, 90.0), (4, 150.0), (5, 180.0), (6, 210.0), (9, 360.0), (10, 390.0)],
)
def test_each_position_takes_the_next_release(position: int, expected: float) -> None:
    estimate = expected_wait(_snapshot(position, available=1, busy=(30.0, 90.0, 150.0)))
    assert estimate.seconds == pytest.approx(expected)


def test_idle_agent_for_this_caller_means_no_wait_even_without_handle_time() -> None:
    estimate = expected_wait(_snapshot(2, available=2, aht=None, samples=0))
    assert estimate == WaitEstimate(0.0, reliable=True, reason="a qualified agent is idle")


@pytest.mark.parametrize(
    ("seconds", "told"),
    [(0.0, None), (5.0, None), (29.9, None), (30.0, 1), (60.0, 1), (60.5, 2), (1200.0, 20)],
)
def test_a_wait_under_half_a_minute_is_not_told(seconds: float, told: int | None) -> None:
    """A busy agent about to finish must not turn into "about 1 minute" (and an offer)."""
    assert WaitEstimate(seconds, reliable=True, reason="test").announce_minutes == told


def test_no_agent_logged_in_gives_no_estimate() -> None:
    estimate = expected_wait(_snapshot(1))
    assert estimate == WaitEstimate(None, reliable=False, reason="no qualified agent logged in")
    assert estimate.announce_minutes is None


def test_no_handle_time_gives_no_estimate() -> None:
    estimate = expected_wait(_snapshot(1, busy=(10.0,), aht=None, samples=0))
    assert estimate.seconds is None
    assert not estimate.reliable
    assert estimate.reason == "no observed handle time"


def test_too_few_samples_is_computed_but_never_announced() -> None:
    estimate = expected_wait(_snapshot(3, busy=(10.0, 20.0), samples=DEFAULT_MIN_SAMPLES - 1))
    assert estimate.seconds == pytest.approx(190.0)
    assert not estimate.reliable
    assert estimate.reason == f"only {DEFAULT_MIN_SAMPLES - 1} handle-time samples, need 20"
    assert estimate.announce_minutes is None
    assert expected_wait(
        _snapshot(3, busy=(10.0, 20.0), samples=5), min_samples=5
    ).announce_minutes == math.ceil(190 / 60)


def test_busy_remaining_clamps_overrunning_calls() -> None:
    assert busy_remaining([0.0, 100.0, 180.0, 400.0], 180.0) == (180.0, 80.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [(0.0, 1), (1.0, 1), (60.0, 1), (60.5, 2), (121.0, 3), (180.0, 3), (0.1 * 3 * 600, 3)],
)
def test_rounded_up_minutes(seconds: float, minutes: int) -> None:
    assert rounded_up_minutes(seconds) == minutes


@pytest.mark.parametrize(
    "make",
    [
        lambda: _snapshot(0, available=1),
        lambda: _snapshot(1, available=-1),
        lambda: _snapshot(1, busy=(-1.0,)),
        lambda: _snapshot(1, busy=(math.inf,)),
        lambda: _snapshot(1, busy=(1.0,), aht=0.0),
        lambda: _snapshot(1, busy=(1.0,), aht=math.nan),
        lambda: _snapshot(1, busy=(1.0,), samples=-1),
        lambda: busy_remaining([-1.0], 180.0),
        lambda: busy_remaining([1.0], 0.0),
        lambda: rounded_up_minutes(-1.0),
        lambda: rounded_up_minutes(math.inf),
        lambda: WaitEstimate(None, reliable=True, reason="x"),
        lambda: expected_wait(_snapshot(1, available=1), min_samples=-1),
    ],
)
def test_invalid_input_is_a_value_error(make: object) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match=r"must|needs"):
        make()


@pytest.mark.parametrize("agents", [11, 12, 13, 14])
def test_averaged_over_steady_state_positions_it_is_the_erlang_c_asa(agents: int) -> None:
    # M/M/N, A = 10 Erlangs, h = 180 s: an arriving caller finds everyone busy with probability
    # C and then k callers ahead with probability (1 - rho) rho^k. With remaining times spread
    # evenly (what memoryless handle times look like on average) the live estimate for
    # position k + 1 is (k + 1) h / N; averaged, that is C h / (N - A). See docs/EXPECTED_WAIT.md.
    traffic, aht = 10.0, 180.0
    rho = traffic / agents
    spread = tuple(j * aht / agents for j in range(1, agents + 1))
    mean_wait = 0.0
    for ahead in range(2000):
        weight = (1 - rho) * rho**ahead
        if weight < 1e-15:
            break
        seconds = expected_wait(_snapshot(ahead + 1, busy=spread)).seconds
        assert seconds is not None
        assert seconds == pytest.approx((ahead + 1) * aht / agents)
        mean_wait += weight * seconds
    mean_wait *= erlang_c(traffic, agents)
    assert mean_wait == pytest.approx(average_speed_of_answer(traffic / aht, aht, agents), rel=1e-9)


def test_deep_queue_many_agents() -> None:
    # Position 1000, 500 agents (every one free within a handle time: served in rounds, no
    # heap). Evenly spread remaining times -> p h / N.
    spread = tuple(j * 180.0 / 500 for j in range(1, 501))
    assert expected_wait(_snapshot(1000, busy=spread)).seconds == pytest.approx(360.0)


remaining = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
snapshots = st.builds(
    QueueSnapshot,
    position=st.integers(min_value=1, max_value=300),
    agents_available=st.integers(min_value=0, max_value=20),
    agents_busy_remaining=st.lists(remaining, max_size=30).map(tuple),
    mean_handle_time=st.one_of(st.none(), st.floats(min_value=1.0, max_value=3600.0)),
    samples=st.integers(min_value=0, max_value=1000),
)


@given(snapshots)
def test_estimate_is_non_negative_deterministic_and_never_announced_unreliable(
    snapshot: QueueSnapshot,
) -> None:
    estimate = expected_wait(snapshot)
    assert estimate == expected_wait(snapshot)
    if estimate.seconds is not None:
        assert estimate.seconds >= 0.0
    if not estimate.reliable:
        assert estimate.announce_minutes is None
    else:
        assert snapshot.agents_logged_in > 0
        assert estimate.seconds is not None
        if estimate.seconds < SHORTEST_TOLD_WAIT:
            assert estimate.announce_minutes is None
        else:
            assert estimate.announce_minutes is not None
            assert estimate.announce_minutes >= 1


@given(snapshots, st.integers(min_value=1, max_value=50))
def test_estimate_grows_with_position(snapshot: QueueSnapshot, further: int) -> None:
    later = QueueSnapshot(
        position=snapshot.position + further,
        agents_available=snapshot.agents_available,
        agents_busy_remaining=snapshot.agents_busy_remaining,
        mean_handle_time=snapshot.mean_handle_time,
        samples=snapshot.samples,
    )
    here, there = expected_wait(snapshot).seconds, expected_wait(later).seconds
    if here is not None and there is not None:
        assert there >= here


@given(snapshots, remaining)
def test_one_more_agent_never_lengthens_the_wait(snapshot: QueueSnapshot, free_in: float) -> None:
    more = QueueSnapshot(
        position=snapshot.position,
        agents_available=snapshot.agents_available,
        agents_busy_remaining=(*snapshot.agents_busy_remaining, free_in),
        mean_handle_time=snapshot.mean_handle_time,
        samples=snapshot.samples,
    )
    here, there = expected_wait(snapshot).seconds, expected_wait(more).seconds
    if here is not None and there is not None:
        assert there <= here


@given(snapshots)
def test_bounded_by_serving_everyone_ahead_with_the_slowest_agent(snapshot: QueueSnapshot) -> None:
    # Upper bound: the caller could always wait for one agent to serve everyone ahead.
    seconds = expected_wait(snapshot).seconds
    if seconds is None or snapshot.mean_handle_time is None:
        return
    first_free = min([0.0] * snapshot.agents_available + list(snapshot.agents_busy_remaining))
    bound = first_free + (snapshot.position - 1) * snapshot.mean_handle_time
    assert seconds <= bound * (1 + 1e-12)


def _heap_release_time(
    position: int, available: int, busy: tuple[float, ...], handle_time: float
) -> float:
    # The straightforward simulation the estimator must agree with to the bit.
    free_at = [0.0] * available + list(busy)
    heapq.heapify(free_at)
    for _ in range(position - 1):
        heapq.heapreplace(free_at, free_at[0] + handle_time)
    return free_at[0]


_HANDLE_TIMES = st.one_of(
    st.sampled_from([0.1, 1 / 3, 123.456, 180.0, 299.99999999999994]),
    st.floats(min_value=0.001, max_value=3600.0),
)


@st.composite
def _within_one_handle_time(draw: st.DrawFn) -> tuple[int, int, tuple[float, ...], float]:
    handle_time = draw(_HANDLE_TIMES)
    fraction = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))
    busy = tuple(min(handle_time, f * handle_time) for f in draw(st.lists(fraction, max_size=40)))
    available = draw(st.integers(min_value=0 if busy else 1, max_value=5))
    position = draw(st.integers(min_value=1, max_value=2000))
    return position, available, busy, handle_time


@settings(max_examples=500)
@given(_within_one_handle_time())
def test_the_round_shortcut_equals_the_heap_to_the_bit(
    case: tuple[int, int, tuple[float, ...], float],
) -> None:
    position, available, busy, handle_time = case
    expected = _heap_release_time(position, available, busy, handle_time)
    assert _release_time_in_rounds(position, available, busy, handle_time) == expected
    snapshot = _snapshot(position, available=available, busy=busy, aht=handle_time)
    if position > available:
        assert expected_wait(snapshot).seconds == expected


@given(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=0, max_value=3),
    st.lists(st.floats(min_value=0.0, max_value=3600.0), min_size=1, max_size=20).map(tuple),
    _HANDLE_TIMES,
)
def test_any_snapshot_equals_the_heap_to_the_bit(
    position: int, available: int, busy: tuple[float, ...], handle_time: float
) -> None:
    # Remaining times beyond one handle time take the heap; within it, the rounds.
    snapshot = _snapshot(position, available=available, busy=busy, aht=handle_time)
    expected = (
        0.0 if position <= available else _heap_release_time(position, available, busy, handle_time)
    )
    assert expected_wait(snapshot).seconds == expected


def test_rounds_add_handle_times_one_by_one_like_the_heap() -> None:
    # 0.1 added ten times is not 10 * 0.1: the shortcut must follow the heap's sums.
    seconds = expected_wait(_snapshot(21, busy=(0.1, 0.05), aht=0.1)).seconds
    assert seconds == _heap_release_time(21, 0, (0.1, 0.05), 0.1)
    assert seconds != 0.05 + 10 * 0.1
