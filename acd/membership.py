"""Which queue memberships a configuration wants for the agents who are logged in.

Pure: given the config and the members Asterisk reports (from QueueStatus), returns the
changes that make Asterisk match the config without logging anybody out — penalties
adjusted in place, queues the agent now qualifies for joined (keeping its pause), queues it
no longer qualifies for left. An agent counts as logged in while it is a member of any
queue; agents not in the config are left alone (the admin may be mid-edit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from acd.config import Config
from acd.routing import queue_memberships

__all__ = ["Member", "MembershipChange", "membership_changes"]


@dataclass(frozen=True, slots=True)
class Member:
    """One interface's membership in one queue, as Asterisk reports it."""

    queue: str
    interface: str
    penalty: int
    paused: bool
    paused_reason: str = ""


@dataclass(frozen=True, slots=True)
class MembershipChange:
    kind: Literal["add", "remove", "penalty"]
    queue: str
    interface: str
    agent_id: str
    penalty: int = 0
    paused: bool = False
    paused_reason: str = ""
    member_name: str = ""


def membership_changes(config: Config, members: list[Member]) -> list[MembershipChange]:
    """The AMI changes that bring logged-in agents' memberships in line with ``config``."""
    by_interface: dict[str, dict[str, Member]] = {}
    for member in members:
        by_interface.setdefault(member.interface, {})[member.queue] = member
    agents = {agent.dial_interface: agent for agent in config.agents}
    known_queues = {queue.id for queue in config.queues}
    changes: list[MembershipChange] = []
    for interface in sorted(by_interface):
        agent = agents.get(interface)
        if agent is None:
            continue
        current: Mapping[str, Member] = by_interface[interface]
        wanted = queue_memberships(config, agent)
        # A pause holds for the agent, not for one queue: new queues inherit it.
        paused = next((m for m in current.values() if m.paused), None)
        for queue_id in sorted(wanted):
            penalty = wanted[queue_id]
            present = current.get(queue_id)
            if present is None:
                changes.append(
                    MembershipChange(
                        "add",
                        queue_id,
                        interface,
                        agent.id,
                        penalty=penalty,
                        paused=paused is not None,
                        paused_reason=paused.paused_reason if paused else "",
                        member_name=agent.name,
                    )
                )
            elif present.penalty != penalty:
                changes.append(
                    MembershipChange("penalty", queue_id, interface, agent.id, penalty=penalty)
                )
        changes.extend(
            MembershipChange("remove", queue_id, interface, agent.id)
            for queue_id in sorted(current)
            if queue_id not in wanted and queue_id in known_queues
        )
    return changes
