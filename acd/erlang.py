"""Erlang C: probability of waiting, average speed of answer and service level for an M/M/N queue.

Used for staffing reports and as the steady-state yardstick for ``acd.expected_wait``. Pure
arithmetic on floats: no I/O, no clock, no state, stdlib only. It must not read live queue
state -- callers pass traffic and agent counts in.

Conventions: traffic ``A = arrival_rate * handle_time`` in Erlangs; ``N`` agents. A queue with
``N <= A`` (and traffic > 0) is unstable: every caller waits, the wait grows without bound, so
the probability of waiting is 1, the average speed of answer ``math.inf`` and the service level
0. Zero traffic means nobody waits: probability 0, ASA 0, service level 1, for any ``N``.
"""

from __future__ import annotations

import math

__all__ = [
    "agents_for_service_level",
    "average_speed_of_answer",
    "erlang_b",
    "erlang_c",
    "service_level",
]


def _check_traffic(traffic_erlangs: float) -> None:
    if not math.isfinite(traffic_erlangs) or traffic_erlangs < 0:
        raise ValueError(
            f"traffic must be a finite number of Erlangs >= 0, got {traffic_erlangs!r}"
        )


def _check_agents(agents: int) -> None:
    # bool is an int subclass; True agents is almost certainly a caller's mistake.
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 0:
        raise ValueError(f"agents must be an int >= 0, got {agents!r}")


def _traffic(arrival_rate_per_s: float, handle_time_s: float) -> float:
    if not math.isfinite(arrival_rate_per_s) or arrival_rate_per_s < 0:
        raise ValueError(
            f"arrival rate must be a finite number of calls per second >= 0, "
            f"got {arrival_rate_per_s!r}"
        )
    if not math.isfinite(handle_time_s) or handle_time_s <= 0:
        raise ValueError(
            f"handle time must be a finite number of seconds > 0, got {handle_time_s!r}"
        )
    traffic = arrival_rate_per_s * handle_time_s
    if not math.isfinite(traffic):
        raise ValueError(f"traffic {arrival_rate_per_s!r} * {handle_time_s!r} overflows")
    return traffic


def _erlang_b_step(blocking: float, traffic: float, k: int) -> float:
    # B(k) = A B(k-1) / (k + A B(k-1)): every term stays in [0, 1], so no factorial or power
    # ever overflows, and for N far above A the value underflows gracefully to 0.
    numerator = traffic * blocking
    return numerator / (k + numerator)


def _c_from_b(blocking: float, traffic: float, agents: int) -> float:
    # C = N B / (N - A (1 - B)), valid for N > A.
    return agents * blocking / (agents - traffic * (1.0 - blocking))


def erlang_b(traffic_erlangs: float, agents: int) -> float:
    """Blocking probability of an Erlang B (loss) system, by the stable recursion."""
    _check_traffic(traffic_erlangs)
    _check_agents(agents)
    blocking = 1.0
    for k in range(1, agents + 1):
        blocking = _erlang_b_step(blocking, traffic_erlangs, k)
    return blocking


def erlang_c(traffic_erlangs: float, agents: int) -> float:
    """Probability that a caller has to wait (Erlang C) for traffic ``A`` and ``N`` agents."""
    _check_traffic(traffic_erlangs)
    _check_agents(agents)
    if traffic_erlangs == 0:
        return 0.0
    if agents <= traffic_erlangs:
        return 1.0
    blocking = erlang_b(traffic_erlangs, agents)
    return min(1.0, max(0.0, _c_from_b(blocking, traffic_erlangs, agents)))


def average_speed_of_answer(arrival_rate_per_s: float, handle_time_s: float, agents: int) -> float:
    """Mean wait in seconds over all callers (those answered at once count 0): C * AHT / (N - A)."""
    traffic = _traffic(arrival_rate_per_s, handle_time_s)
    _check_agents(agents)
    if traffic == 0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return erlang_c(traffic, agents) * handle_time_s / (agents - traffic)


def service_level(
    arrival_rate_per_s: float, handle_time_s: float, agents: int, target_s: float
) -> float:
    """Share of callers answered within ``target_s``: 1 - C * exp(-(N - A) * t / AHT)."""
    traffic = _traffic(arrival_rate_per_s, handle_time_s)
    _check_agents(agents)
    if math.isnan(target_s) or target_s < 0:
        raise ValueError(f"target must be a number of seconds >= 0, got {target_s!r}")
    if traffic == 0:
        return 1.0
    if agents <= traffic:
        return 0.0
    waiting = erlang_c(traffic, agents)
    return _service_level(waiting, traffic, handle_time_s, agents, target_s)


def _service_level(
    waiting: float, traffic: float, handle_time_s: float, agents: int, target_s: float
) -> float:
    return min(
        1.0, max(0.0, 1.0 - waiting * math.exp(-(agents - traffic) * target_s / handle_time_s))
    )


def agents_for_service_level(
    arrival_rate_per_s: float,
    handle_time_s: float,
    target_s: float,
    service_level_target: float,
    *,
    max_agents: int = 100_000,
) -> int:
    """The smallest number of agents whose service level for ``target_s`` reaches the target.

    ``service_level_target`` is a share in (0, 1), e.g. 0.8 for "80 % within 20 s". Zero traffic
    needs 0 agents. Raises ``ValueError`` if even ``max_agents`` agents do not reach it.
    """
    traffic = _traffic(arrival_rate_per_s, handle_time_s)
    if math.isnan(target_s) or target_s < 0:
        raise ValueError(f"target must be a number of seconds >= 0, got {target_s!r}")
    if not 0 < service_level_target < 1:
        raise ValueError(
            f"service level target must be a share strictly between 0 and 1, "
            f"got {service_level_target!r}"
        )
    _check_agents(max_agents)
    if traffic == 0:
        return 0
    # One pass of the Erlang B recursion serves every candidate N: O(answer), not O(answer^2).
    blocking = 1.0
    for agents in range(1, max_agents + 1):
        blocking = _erlang_b_step(blocking, traffic, agents)
        if agents <= traffic:
            continue
        waiting = min(1.0, max(0.0, _c_from_b(blocking, traffic, agents)))
        level = _service_level(waiting, traffic, handle_time_s, agents, target_s)
        if level >= service_level_target:
            return agents
    raise ValueError(
        f"{max_agents} agents do not reach a service level of {service_level_target!r} "
        f"within {target_s!r} s for {traffic!r} Erlangs"
    )
