"""The routing decision: which queue a call joins, with what priority and penalty bounds.

Pure decision core: a function of (config, call facts, now) with no I/O and no asyncio, so
the same code runs in the daemon, the tests and the benchmarks. The daemon turns the
decision into channel variables the dialplan hands to ``Queue()``.

Penalties follow ``acd.config.model``: an agent's penalty in a queue is its shortfall below
the queue's requirement (0 = fully qualified); a call starts at ``max_penalty`` 0 and the
queue's escalation rule (rendered to queuerules.conf) widens it after the configured waits.
An agent lacking a required skill is never a member of the queue at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from acd.config import Agent, Config

__all__ = ["CallFacts", "RouteDecision", "decide_route", "queue_memberships"]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known about a call when it asks for a route."""

    uniqueid: str
    caller_number: str
    dialed: str
    language: str


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where the call goes; ``reasons`` says why, for the log."""

    queue: str
    priority: int
    max_penalty: int
    max_wait: int
    reasons: tuple[str, ...]


def decide_route(config: Config, facts: CallFacts, now: dt.datetime) -> RouteDecision:
    """Choose the queue for a call that reached the hotline.

    The entry point of every hotline call is the default first-level queue (the desk's single
    entry point); the call starts with only fully qualified agents and widens by the queue's
    escalation steps.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    queue = config.queue(config.hotline.default_queue)
    reasons = [f"hotline {facts.dialed or '?'}: entry queue {queue.id}"]
    if facts.language and facts.language not in config.hotline.languages:
        reasons.append(f"language {facts.language!r} not offered; default applies")
    return RouteDecision(
        queue=queue.id,
        priority=0,
        max_penalty=0,
        max_wait=queue.max_wait,
        reasons=tuple(reasons),
    )


def queue_memberships(config: Config, agent: Agent) -> dict[str, int]:
    """Queue id -> penalty for every queue the agent can ever be offered calls from.

    An agent joins a queue only when it has every required skill and its shortfall is within
    the most lenient escalation step of that queue.
    """
    memberships: dict[str, int] = {}
    for queue in config.queues:
        penalty = queue.penalty_of(agent.skills)
        if penalty is not None and penalty <= queue.final_max_penalty:
            memberships[queue.id] = penalty
    return memberships
