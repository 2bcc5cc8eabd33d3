"""Erlang C against worked examples computed independently, and its monotonicity properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd.erlang import (
    agents_for_service_level,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    service_level,
)

# The classic example: 100 calls in 30 minutes, 180 s handle time -> A = 10 Erlangs.
RATE = 100 / 1800
AHT = 180.0
TRAFFIC = 10.0


def _direct_erlang_c(traffic: float, agents: int) -> float:
    """Textbook formula with factorials: independent of the recursion, fine for small N."""
    top = traffic**agents / math.factorial(agents) * agents / (agents - traffic)
    bottom = sum(traffic**k / math.factorial(k) for k in range(agents)) + top
    return top / bottom


# N: (probability of waiting, ASA s, service level within 20 s); the table in docs/EXPECTED_WAIT.md
WORKED = {
    11: (0.682118, 122.7813, 0.389614),
    12: (0.449388, 40.4449, 0.640158),
    13: (0.285270, 17.1162, 0.795595),
    14: (0.174132, 7.8359, 0.888350),
    15: (0.102042, 3.6735, 0.941453),
}


@pytest.mark.parametrize("agents", sorted(WORKED))
def test_worked_example_matches_stated_values(agents: int) -> None:
    waiting, asa, level = WORKED[agents]
    assert erlang_c(TRAFFIC, agents) == pytest.approx(waiting, abs=1e-6)
    assert average_speed_of_answer(RATE, AHT, agents) == pytest.approx(asa, abs=1e-4)
    assert service_level(RATE, AHT, agents, 20) == pytest.approx(level, abs=1e-6)


@pytest.mark.parametrize("agents", sorted(WORKED))
def test_worked_example_matches_first_principles(agents: int) -> None:
    direct = _direct_erlang_c(TRAFFIC, agents)
    assert erlang_c(TRAFFIC, agents) == pytest.approx(direct, rel=1e-12)
    assert average_speed_of_answer(RATE, AHT, agents) == pytest.approx(
        direct * AHT / (agents - TRAFFIC), rel=1e-12
    )
    assert service_level(RATE, AHT, agents, 20) == pytest.approx(
        1 - direct * math.exp(-(agents - TRAFFIC) * 20 / AHT), rel=1e-12
    )


def test_hand_computed_small_cases() -> None:
    # A = 1, N = 2: (1/2 * 2) / (1 + 1 + 1) = 1/3; ASA with h = 60 s: (1/3) * 60 / (2 - 1) = 20 s.
    assert erlang_c(1.0, 2) == pytest.approx(1 / 3, rel=1e-12)
    assert average_speed_of_answer(1 / 60, 60.0, 2) == pytest.approx(20.0, rel=1e-12)
    # M/M/1: the probability of waiting is the utilisation.
    assert erlang_c(0.3, 1) == pytest.approx(0.3, rel=1e-12)
    # Erlang B, A = 1, N = 2: (1/2) / (1 + 1 + 1/2) = 1/5.
    assert erlang_b(1.0, 2) == pytest.approx(0.2, rel=1e-12)


def test_staffing_for_80_within_20_needs_14() -> None:
    assert agents_for_service_level(RATE, AHT, 20, 0.8) == 14
    # 13 agents reach 0.795595: just under 79.56 %, just over 79.55 %.
    assert agents_for_service_level(RATE, AHT, 20, 0.7956) == 14
    assert agents_for_service_level(RATE, AHT, 20, 0.7955) == 13


@pytest.mark.parametrize("agents", [0, 5, 9, 10])
def test_unstable_queue(agents: int) -> None:
    assert erlang_c(TRAFFIC, agents) == 1.0
    assert average_speed_of_answer(RATE, AHT, agents) == math.inf
    assert service_level(RATE, AHT, agents, 20) == 0.0


@pytest.mark.parametrize("agents", [0, 1, 7])
def test_zero_traffic_nobody_waits(agents: int) -> None:
    assert erlang_c(0.0, agents) == 0.0
    assert average_speed_of_answer(0.0, AHT, agents) == 0.0
    assert service_level(0.0, AHT, agents, 0) == 1.0
    assert agents_for_service_level(0.0, AHT, 20, 0.8) == 0


def test_two_thousand_agents_is_stable_and_finite() -> None:
    waiting = erlang_c(1950.0, 2000)
    assert 0 < waiting < 1
    # Far more agents than traffic: essentially nobody waits, and nothing overflowed.
    assert erlang_c(100.0, 2000) == pytest.approx(0.0, abs=1e-300)
    needed = agents_for_service_level(1950 / 180, 180.0, 20, 0.8)
    assert service_level(1950 / 180, 180.0, needed, 20) >= 0.8
    assert service_level(1950 / 180, 180.0, needed - 1, 20) < 0.8


def test_recursion_matches_factorials_for_all_small_cases() -> None:
    for agents in range(1, 60):
        for traffic in (0.1, 0.5 * agents, agents - 0.01):
            assert erlang_c(traffic, agents) == pytest.approx(
                _direct_erlang_c(traffic, agents), rel=1e-9
            )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: erlang_c(-1.0, 3), "traffic"),
        (lambda: erlang_c(math.nan, 3), "traffic"),
        (lambda: erlang_c(math.inf, 3), "traffic"),
        (lambda: erlang_c(1.0, -1), "agents"),
        (lambda: erlang_c(1.0, True), "agents"),
        (lambda: average_speed_of_answer(1.0, 0.0, 3), "handle time"),
        (lambda: average_speed_of_answer(-0.1, 10.0, 3), "arrival rate"),
        (lambda: service_level(0.1, 10.0, 3, -1), "target"),
        (lambda: service_level(0.1, 10.0, 3, math.nan), "target"),
        (lambda: agents_for_service_level(0.1, 10.0, 20, 1.0), "service level target"),
        (lambda: agents_for_service_level(0.1, 10.0, 20, 0.0), "service level target"),
        (lambda: agents_for_service_level(1.0, 10.0, 20, 0.8, max_agents=5), "do not reach"),
    ],
)
def test_invalid_input_is_a_clear_value_error(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()


traffics = st.floats(min_value=0.0, max_value=300.0, allow_nan=False)
agent_counts = st.integers(min_value=0, max_value=400)
rates = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)
handle_times = st.floats(min_value=1.0, max_value=1200.0, allow_nan=False)
targets = st.floats(min_value=0.0, max_value=600.0, allow_nan=False)


@given(traffics, agent_counts)
def test_probability_is_a_probability(traffic: float, agents: int) -> None:
    assert 0.0 <= erlang_c(traffic, agents) <= 1.0


@given(traffics, agent_counts)
def test_probability_decreases_with_agents(traffic: float, agents: int) -> None:
    assert erlang_c(traffic, agents + 1) <= erlang_c(traffic, agents)


@given(traffics, st.floats(min_value=0.0, max_value=50.0), agent_counts)
def test_probability_increases_with_traffic(traffic: float, extra: float, agents: int) -> None:
    assert erlang_c(traffic + extra, agents) >= erlang_c(traffic, agents) - 1e-12


@given(rates, handle_times, agent_counts, targets, st.floats(min_value=0.0, max_value=600.0))
def test_service_level_increases_with_target_and_agents(
    rate: float, handle_time: float, agents: int, target: float, extra: float
) -> None:
    level = service_level(rate, handle_time, agents, target)
    assert 0.0 <= level <= 1.0
    assert service_level(rate, handle_time, agents, target + extra) >= level
    assert service_level(rate, handle_time, agents + 1, target) >= level - 1e-12


@given(rates, handle_times, agent_counts)
def test_asa_is_non_negative_and_decreases_with_agents(
    rate: float, handle_time: float, agents: int
) -> None:
    asa = average_speed_of_answer(rate, handle_time, agents)
    assert asa >= 0.0
    assert average_speed_of_answer(rate, handle_time, agents + 1) <= asa


@given(
    st.floats(min_value=0.001, max_value=1.0),
    handle_times,
    targets,
    st.floats(min_value=0.05, max_value=0.99),
)
def test_staffing_answer_is_the_smallest_that_reaches_the_target(
    rate: float, handle_time: float, target: float, share: float
) -> None:
    agents = agents_for_service_level(rate, handle_time, target, share)
    assert service_level(rate, handle_time, agents, target) >= share
    assert service_level(rate, handle_time, agents - 1, target) < share
