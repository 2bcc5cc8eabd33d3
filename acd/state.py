"""Firstline's live model of the desk: agents, queues and calls, kept from AMI events.

`LiveState.apply(event, now)` folds one AMI event in and returns the `Change` records it
caused (for metrics, MQTT and the wallboard); `resync(...)` rebuilds everything from
QueueStatus + CoreShowChannels after a reconnect; `snapshot()` hands the routing core a
frozen copy. Pure core: no I/O, no asyncio, no clock (time always comes in as `now`, epoch
seconds), and it never raises on an odd event order: what the lifecycle tables in
`acd.state_machines` refuse is returned as an `Anomaly` and the state is set to what
Asterisk says.

Outcome of a queue visit ("leg"), one `FinishedCall` per leg:
- answered: AgentConnect (the record is written when the call ends, with its talk time).
- abandoned: the caller hung up while waiting: QueueCallerAbandon, or a Hangup while queued,
  or a Hangup after leaving the queue alive that nothing else explains.
- short_abandon: abandoned after waiting less than the queue's `short_abandon_seconds`.
- timeout: left the queue alive and then either `mark_timeout()` was called, or the caller
  joined the *same* queue again (the fallback dialplan loops on QUEUESTATUS=TIMEOUT), or
  hung up after having waited at least the queue's `max_wait_seconds`.
- callback_requested: `mark_callback()` (the callback AGI booked a ticket). app_queue sends
  no QueueCallerAbandon for the key press that leads there, and counts it as abandoned;
  Firstline does not. A caller who goes back to their place without a ticket
  (`mark_returning()`) goes on with the same visit when they join the queue again.
- overflowed: `mark_overflow()`, or the caller joined a *different* queue next.
- unknown: the call vanished while the AMI link was down (found missing at `resync`).
A call leaves the live state ("retired", kept in a bounded ring of finished legs) as soon
as its outcome is final: completed, abandoned, callback requested, or its channel is gone.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from acd.ami.codec import Event
from acd.state_machines import (
    AgentState,
    AgentTrigger,
    CallState,
    CallTrigger,
    IllegalTransition,
    agent_transition,
    call_transition,
    rest_state,
)

__all__ = [
    "HELD_PLACE_PREFIX",
    "AgentChanged",
    "AgentView",
    "Anomaly",
    "CallChanged",
    "CallFinished",
    "CallView",
    "Change",
    "DeviceState",
    "FinishedCall",
    "LiveState",
    "MemberView",
    "MembershipChanged",
    "Outcome",
    "QueueView",
    "StateSnapshot",
    "WaitingCaller",
]


class Outcome(enum.StrEnum):
    """How one queue visit ended (rules in the module docstring)."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"
    SHORT_ABANDON = "short_abandon"
    TIMEOUT = "timeout"
    CALLBACK_REQUESTED = "callback_requested"
    OVERFLOWED = "overflowed"
    UNKNOWN = "unknown"


class DeviceState(enum.StrEnum):
    """Asterisk's device state of a member's interface (the numeric `Status` field)."""

    UNKNOWN = "unknown"
    NOT_IN_USE = "not_in_use"
    IN_USE = "in_use"
    BUSY = "busy"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"
    RINGING = "ringing"
    RINGINUSE = "ringinuse"
    ON_HOLD = "on_hold"


_DEVICE_CODES: Final = {str(n): state for n, state in enumerate(DeviceState)}


# --- change records -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentChanged:
    """An agent moved (or, with before == after, its pause reason changed)."""

    agent_id: str
    before: AgentState
    after: AgentState
    pause_reason: str | None
    at: float


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """An agent joined or left a queue, or its pause/penalty in that queue changed."""

    agent_id: str
    queue: str
    member: bool
    paused: bool
    pause_reason: str | None
    penalty: int
    at: float


@dataclass(frozen=True, slots=True)
class CallChanged:
    """A call moved; `before` is None for a call seen for the first time."""

    uniqueid: str
    before: CallState | None
    after: CallState
    queue: str | None
    agent_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class FinishedCall:
    """One finished queue visit (a call that overflowed or timed out has several)."""

    uniqueid: str
    caller_number: str | None
    ivr: tuple[tuple[str, str], ...]
    queue: str | None
    outcome: Outcome
    priority: int
    joined_at: float | None
    ended_at: float
    wait: float | None
    talk: float | None
    agent_id: str | None

    @property
    def held_place(self) -> bool:
        """The visit of a callback's held place: a callback attempt, not a caller's call."""
        return self.uniqueid.startswith(HELD_PLACE_PREFIX)


@dataclass(frozen=True, slots=True)
class CallFinished:
    """A queue visit got its outcome."""

    record: FinishedCall


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something Asterisk said that the lifecycle did not expect; the state was corrected."""

    kind: str
    detail: str
    event: str | None
    at: float


Change = AgentChanged | MembershipChanged | CallChanged | CallFinished | Anomaly


# The callback dialer's held places in queues carry Uniqueids (Originate's ChannelId) with
# this prefix, so they are told from callers without extra state, also after a resync.
HELD_PLACE_PREFIX: Final = "cb-"


# --- snapshot views -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitingCaller:
    """A caller in a queue, in the queue's order."""

    uniqueid: str
    caller_number: str | None
    joined_at: float
    priority: int
    position: int
    ringing: bool

    @property
    def held_place(self) -> bool:
        """A callback's held place (the callback dialer's), not a caller on the line."""
        return self.uniqueid.startswith(HELD_PLACE_PREFIX)


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue: its waiting callers in order."""

    queue: str
    waiting: tuple[WaitingCaller, ...]


@dataclass(frozen=True, slots=True)
class MemberView:
    """An agent's membership of one queue."""

    queue: str
    penalty: int
    paused: bool
    pause_reason: str | None


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as routing sees it."""

    agent_id: str
    interface: str
    state: AgentState
    pause_reason: str | None
    device: DeviceState
    queues: Mapping[str, MemberView]
    call: str | None
    since: float
    wrapup_until: float | None


@dataclass(frozen=True, slots=True)
class CallView:
    """One live call."""

    uniqueid: str
    caller_number: str | None
    ivr: tuple[tuple[str, str], ...]
    state: CallState
    queue: str | None
    agent_id: str | None
    priority: int
    joined_at: float | None


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """A frozen copy of the live state; share it freely."""

    as_of: float
    queues: Mapping[str, QueueView]
    agents: Mapping[str, AgentView]
    calls: Mapping[str, CallView]
    agent_counts: Mapping[AgentState, int]


# --- the mutable model (private) ----------------------------------------------------------


class _ViewCached:
    """Drops an object's cached `view` whenever another of its fields is assigned."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name != "view":
            object.__setattr__(self, "view", None)


@dataclass(slots=True)
class _Member:
    penalty: int = 0
    paused: bool = False
    reason: str = ""


@dataclass(slots=True)
class _Agent(_ViewCached):
    agent_id: str
    interface: str
    configured: bool
    since: float
    state: AgentState = AgentState.LOGGED_OUT
    paused: bool = False
    reason: str | None = None
    device: DeviceState = DeviceState.UNKNOWN
    members: dict[str, _Member] = field(default_factory=dict)
    call: str | None = None
    wrapup_until: float | None = None
    # The agent's frozen view, kept until the agent changes: a snapshot is taken after
    # every change, and rebuilding every agent's and call's view each time was most of
    # the daemon's work per event. Assigning any field drops it (`_ViewCached`); code that
    # changes `members` in place drops it itself.
    view: AgentView | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(slots=True)
class _Call(_ViewCached):
    uniqueid: str
    state: CallState = CallState.ROUTING
    caller_number: str | None = None
    ivr: tuple[tuple[str, str], ...] = ()
    priority: int = 0
    queue: str | None = None
    joined_at: float | None = None
    left_at: float | None = None  # left the queue alive, outcome not decided yet
    returning_to: str | None = None  # back to this queue at its place: the visit goes on
    connected_at: float | None = None
    hold: float | None = None
    agent_id: str | None = None
    ringing: set[str] = field(default_factory=set)
    # The queue whose waiting list holds this call. Only `_enqueue` / `_unqueue` touch it,
    # so taking a call out of a list never depends on `queue`, which other paths rewrite.
    waiting_in: str | None = None
    view: CallView | None = field(default=None, init=False, repr=False, compare=False)


_CHANNEL_SUFFIX: Final = re.compile(r"-[0-9a-fA-F]+(;\d+)?$")
_UNKNOWN_NUMBERS: Final = frozenset({"", "<unknown>"})


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _number(value: str | None) -> str | None:
    return None if value is None or value in _UNKNOWN_NUMBERS else value


def _interface_of_channel(channel: str) -> str:
    """The member interface of a channel: "PJSIP/alice-0000000a" -> "PJSIP/alice"."""
    return _CHANNEL_SUFFIX.sub("", channel)


def _duration(text: str | None) -> int:
    """CoreShowChannel's "HH:MM:SS"."""
    parts = (text or "").split(":")
    if len(parts) != 3:
        return 0
    return _int(parts[0]) * 3600 + _int(parts[1]) * 60 + _int(parts[2])


class LiveState:
    """Agents, queues and calls as Asterisk reports them. Not thread-safe; one owner.

    `agent_interfaces` maps a member interface ("PJSIP/alice", "Local/alice@agents") to the
    configured agent id; members with other interfaces are tracked under the interface
    itself. `wrapup_seconds`, `short_abandon_seconds` and `max_wait_seconds` are per queue
    (missing: 0, 0, no limit). `finished_limit` bounds the ring of finished legs.
    """

    def __init__(
        self,
        agent_interfaces: Mapping[str, str],
        wrapup_seconds: Mapping[str, int],
        short_abandon_seconds: Mapping[str, int],
        *,
        max_wait_seconds: Mapping[str, int] | None = None,
        finished_limit: int = 1000,
        now: float = 0.0,
    ) -> None:
        if finished_limit < 1:
            raise ValueError("finished_limit must be at least 1")
        self._iface_to_agent = dict(agent_interfaces)
        self._wrapup = dict(wrapup_seconds)
        self._short = dict(short_abandon_seconds)
        self._max_wait = dict(max_wait_seconds or {})
        self._agents: dict[str, _Agent] = {
            agent_id: _Agent(agent_id, iface, configured=True, since=now)
            for iface, agent_id in self._iface_to_agent.items()
        }
        self._calls: dict[str, _Call] = {}
        self._waiting: dict[str, list[str]] = {}
        self._finished: deque[FinishedCall] = deque(maxlen=finished_limit)
        self._finished_total = 0
        self._retired: OrderedDict[str, None] = OrderedDict()
        self._finished_limit = finished_limit
        self._handlers: dict[str, Callable[[Event, float, list[Change]], None]] = {
            "queuememberadded": self._on_member,
            "queuememberstatus": self._on_member,
            "queuememberpause": self._on_member,
            "queuememberpenalty": self._on_member,
            "queuememberremoved": self._on_member_removed,
            "queuecallerjoin": self._on_join,
            "queuecallerleave": self._on_leave,
            "queuecallerabandon": self._on_abandon,
            "agentcalled": self._on_agent_called,
            "agentringnoanswer": self._on_ring_no_answer,
            "agentdump": self._on_ring_no_answer,
            "agentconnect": self._on_connect,
            "agentcomplete": self._on_complete,
            "hangup": self._on_hangup,
        }
        self._as_of = now
        self._cached: StateSnapshot | None = None

    # --- public API -------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> list[Change]:
        """Fold one AMI event in; events this model does not use return []."""
        handler = self._handlers.get(event.name.lower())
        if handler is None:
            return []
        out: list[Change] = []
        handler(event, now, out)
        # Forced: an event may change what a snapshot shows (a device state) without a
        # Change record; the views of what it did not touch are kept, so it costs little.
        self._touch(out, force=True)
        return out

    def tick(self, now: float) -> list[Change]:
        """Advance timers (wrap-up ends)."""
        out: list[Change] = []
        for agent in self._agents.values():
            if (
                agent.state is AgentState.WRAP_UP
                and agent.wrapup_until is not None
                and agent.wrapup_until <= now
            ):
                self._agent_move(agent, AgentTrigger.WRAPUP_END, now, out, None)
        self._touch(out)
        return out

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (the adapter's one timer), or None."""
        times = [
            a.wrapup_until
            for a in self._agents.values()
            if a.state is AgentState.WRAP_UP and a.wrapup_until is not None
        ]
        return min(times, default=None)

    def note_route(
        self,
        uniqueid: str,
        now: float,
        *,
        caller_number: str | None = None,
        ivr: Mapping[str, str] | None = None,
        priority: int | None = None,
        queue: str | None = None,
    ) -> list[Change]:
        """What the routing AGI learnt about a call (IVR answers, priority, target queue)."""
        out: list[Change] = []
        call = self._calls.get(uniqueid)
        if call is None:
            call = _Call(uniqueid, queue=queue)
            self._calls[uniqueid] = call
            out.append(CallChanged(uniqueid, None, call.state, queue, None, now))
        if caller_number:
            call.caller_number = caller_number
        if ivr:
            call.ivr = (*call.ivr, *ivr.items())
        if priority is not None:
            call.priority = priority
        if queue is not None and call.state is CallState.ROUTING:
            call.queue = queue
        self._touch(out, force=True)
        return out

    def mark_callback(self, uniqueid: str, now: float) -> list[Change]:
        """The callback AGI booked a ticket for this caller: outcome callback_requested."""
        out: list[Change] = []
        call = self._calls.get(uniqueid)
        if call is None:
            self._unknown_call(uniqueid, "mark_callback", now, out)
        else:
            self._finish(call, Outcome.CALLBACK_REQUESTED, now, out)
            # app_queue cancelled any ring without a word (no AgentRingNoAnswer for the key).
            self._release_ringing(call, now, out, "mark_callback")
            self._call_move(call, CallTrigger.CALLBACK, now, out, "mark_callback")
            self._retire(call)
        self._touch(out)
        return out

    def mark_returning(self, uniqueid: str, now: float) -> list[Change]:
        """The caller left the queue for the callback dialogue and goes back to their place
        without a ticket (cancelled, or the booking failed): their next join of that queue
        continues this visit, with its wait from the first join, rather than ending it as
        a timeout."""
        out: list[Change] = []
        call = self._calls.get(uniqueid)
        if call is None:
            self._unknown_call(uniqueid, "mark_returning", now, out)
        elif call.state is CallState.ROUTING and call.left_at is not None:
            call.returning_to = call.queue
            # app_queue cancelled any ring when the caller left by the key, without a word.
            self._release_ringing(call, now, out, "mark_returning")
        else:
            out.append(
                Anomaly("mark_ignored", f"{uniqueid} is {call.state}", "mark_returning", now)
            )
        self._touch(out)
        return out

    def mark_overflow(self, uniqueid: str, target_queue: str, now: float) -> list[Change]:
        """The call was sent on to `target_queue`: its current queue visit overflowed."""
        return self._mark_left_alive(uniqueid, Outcome.OVERFLOWED, target_queue, now)

    def mark_timeout(self, uniqueid: str, now: float) -> list[Change]:
        """The call reached its queue's maximum wait (QUEUESTATUS=TIMEOUT)."""
        return self._mark_left_alive(uniqueid, Outcome.TIMEOUT, None, now)

    def finished(self) -> tuple[FinishedCall, ...]:
        """The most recent finished queue visits, oldest first (bounded)."""
        return tuple(self._finished)

    @property
    def finished_total(self) -> int:
        """How many queue visits have finished since start: `finished()` changed when it moved."""
        return self._finished_total

    def queue_of(self, uniqueid: str) -> str | None:
        """The queue this call is in or was routed to (None: unknown call or no queue yet);
        the cheap question asked for every call event, where a snapshot would cost a copy."""
        call = self._calls.get(uniqueid)
        return call.queue if call is not None else None

    def snapshot(self) -> StateSnapshot:
        """A frozen copy, built once per change; `as_of` is the time of the last change."""
        if self._cached is not None:
            return self._cached
        queues = {
            name: QueueView(name, self._waiting_view(name)) for name in sorted(self._queue_names())
        }
        agents = {a.agent_id: a.view or self._agent_view(a) for a in self._agents.values()}
        calls = {c.uniqueid: c.view or self._call_view(c) for c in self._calls.values()}
        counts = dict.fromkeys(AgentState, 0)
        for agent in self._agents.values():
            counts[agent.state] += 1
        self._cached = StateSnapshot(
            self._as_of,
            MappingProxyType(queues),
            MappingProxyType(agents),
            MappingProxyType(calls),
            MappingProxyType(counts),
        )
        return self._cached

    def resync(
        self, queue_status_events: Sequence[Event], channels: Sequence[Event], now: float
    ) -> list[Change]:
        """Make the state what Asterisk reports after a (re)connect.

        `queue_status_events`: the QueueParams / QueueMember / QueueEntry events of a
        QueueStatus action; `channels`: the CoreShowChannel events of CoreShowChannels,
        asked *after* QueueStatus (a caller listed as waiting and as bridged is connected).
        Only queues named by a QueueParams event are rebuilt, so a QueueStatus for one
        queue leaves the others alone. What we knew finer (join times to the sub-second,
        IVR answers, wrap-up) is kept where Asterisk's coarser report agrees with it.
        """
        out: list[Change] = []
        queues = {
            e.get("Queue") or ""
            for e in queue_status_events
            if e.name.lower() == "queueparams" and e.get("Queue")
        }
        members: dict[str, list[Event]] = {}
        entries: dict[str, list[Event]] = {q: [] for q in queues}
        for e in queue_status_events:
            kind = e.name.lower()
            queue = e.get("Queue") or ""
            if kind == "queuemember" and queue in queues:
                iface = e.get("Location") or e.get("Interface") or e.get("StateInterface") or ""
                members.setdefault(iface, []).append(e)
            elif kind == "queueentry" and queue in queues:
                entries[queue].append(e)
        alive = {c.get("Uniqueid") or "": c for c in channels}
        self._resync_members(queues, members, now, out)
        self._resync_calls(queues, entries, alive, now, out)
        self._resync_agent_calls(members, alive, now, out)
        self._touch(out, force=True)
        return out

    # --- agents -----------------------------------------------------------------------

    def _agent_for(self, interface: str, now: float, out: list[Change], event: str) -> _Agent:
        agent_id = self._iface_to_agent.get(interface, interface)
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = _Agent(agent_id, interface, configured=False, since=now)
            self._agents[agent_id] = agent
            out.append(
                Anomaly("unknown_member", f"{interface} is not a configured agent", event, now)
            )
        return agent

    def _agent_move(
        self,
        agent: _Agent,
        trigger: AgentTrigger,
        now: float,
        out: list[Change],
        event: str | None,
        *,
        implied: AgentState | None = None,
    ) -> None:
        try:
            new = agent_transition(agent.state, trigger, paused=agent.paused)
        except IllegalTransition as exc:
            new = implied if implied is not None else _implied_agent(trigger, agent)
            out.append(
                Anomaly("agent_transition", f"{agent.agent_id}: {exc}; now {new}", event, now)
            )
        self._agent_set(agent, new, now, out)

    def _agent_set(self, agent: _Agent, new: AgentState, now: float, out: list[Change]) -> None:
        before = agent.state
        if new is not AgentState.WRAP_UP:
            agent.wrapup_until = None
        if new in (AgentState.AVAILABLE, AgentState.PAUSED, AgentState.LOGGED_OUT):
            agent.call = None
        if new is before:
            return
        agent.state = new
        agent.since = now
        out.append(AgentChanged(agent.agent_id, before, new, agent.reason, now))
        if new is AgentState.LOGGED_OUT and not agent.configured:
            del self._agents[agent.agent_id]  # an unknown interface leaves no trace

    @staticmethod
    def _pause_of(agent: _Agent) -> tuple[bool, str | None]:
        """An agent is paused when paused in every queue it belongs to."""
        paused = bool(agent.members) and all(m.paused for m in agent.members.values())
        reason = next((m.reason for m in agent.members.values() if m.paused and m.reason), None)
        return paused, reason if paused else None

    def _login(self, agent: _Agent, now: float, out: list[Change], event: str) -> None:
        agent.paused, agent.reason = self._pause_of(agent)
        self._agent_move(agent, AgentTrigger.LOGIN, now, out, event)

    def _repause(self, agent: _Agent, now: float, out: list[Change], event: str) -> None:
        """Follow a change of the agent's pause (or pause reason)."""
        paused, reason = self._pause_of(agent)
        if paused == agent.paused and reason == agent.reason:
            return
        agent.paused, agent.reason = paused, reason
        before = agent.state
        trigger = AgentTrigger.PAUSE if paused else AgentTrigger.UNPAUSE
        self._agent_move(agent, trigger, now, out, event)
        if agent.state is before:  # same state, new reason (or a pause pending after a call)
            out.append(AgentChanged(agent.agent_id, before, before, agent.reason, now))

    def _on_member(self, event: Event, now: float, out: list[Change]) -> None:
        queue = event.get("Queue")
        iface = event.get("Interface") or event.get("Location") or event.get("StateInterface")
        if not queue or not iface:
            out.append(
                Anomaly("malformed", "member event without Queue/Interface", event.name, now)
            )
            return
        agent = self._agent_for(iface, now, out, event.name)
        self._member_fields(agent, queue, event, now, out)
        if agent.state is AgentState.LOGGED_OUT:
            self._login(agent, now, out, event.name)
        self._repause(agent, now, out, event.name)
        self._device_check(agent, event, now, out)

    def _member_fields(
        self, agent: _Agent, queue: str, event: Event, now: float, out: list[Change]
    ) -> None:
        member = agent.members.get(queue)
        new = member is None
        if member is None:
            member = agent.members[queue] = _Member()
        agent.view = None
        before = (member.penalty, member.paused, member.reason)
        penalty = event.get("Penalty")
        if penalty is not None:
            member.penalty = _int(penalty)
        paused = event.get("Paused")
        if paused is not None:
            member.paused = paused == "1"
            member.reason = (event.get("PausedReason") or "") if member.paused else ""
        if new or before != (member.penalty, member.paused, member.reason):
            out.append(
                MembershipChanged(
                    agent.agent_id,
                    queue,
                    member=True,
                    paused=member.paused,
                    pause_reason=member.reason or None,
                    penalty=member.penalty,
                    at=now,
                )
            )

    def _device_check(self, agent: _Agent, event: Event, now: float, out: list[Change]) -> None:
        status = event.get("Status")
        if status is None:
            return
        agent.device = _DEVICE_CODES.get(status, DeviceState.UNKNOWN)
        in_call = event.get("InCall") == "1"
        if in_call and agent.state in (AgentState.AVAILABLE, AgentState.PAUSED):
            out.append(
                Anomaly("missed_connect", f"{agent.agent_id} is in a queue call", event.name, now)
            )
            self._agent_set(agent, AgentState.ON_CALL, now, out)
        elif (
            not in_call
            and agent.device is DeviceState.NOT_IN_USE
            and agent.state is AgentState.ON_CALL
        ):
            # Asterisk posts device states on their own task processor, so the phone's
            # "idle" often overtakes the AgentComplete of a call we hold as connected: that
            # is the call's end told first, not an event missed. Only an agent on a call we
            # do not know (e.g. after a lost connection) means one was missed.
            call = self._calls.get(agent.call or "")
            if call is None or call.state is not CallState.CONNECTED:
                out.append(
                    Anomaly("missed_complete", f"{agent.agent_id} is idle again", event.name, now)
                )
            self._agent_complete(agent, agent.call, now, out, event.name)

    def _on_member_removed(self, event: Event, now: float, out: list[Change]) -> None:
        queue = event.get("Queue") or ""
        iface = event.get("Interface") or event.get("Location") or event.get("StateInterface") or ""
        agent = self._agents.get(self._iface_to_agent.get(iface, iface))
        if agent is None or queue not in agent.members:
            return  # removing what we never had: already the state Asterisk says
        self._remove_member(agent, queue, now, out, event.name)

    def _remove_member(
        self, agent: _Agent, queue: str, now: float, out: list[Change], event: str
    ) -> None:
        member = agent.members.pop(queue)
        agent.view = None
        out.append(
            MembershipChanged(
                agent.agent_id, queue, False, member.paused, None, member.penalty, now
            )
        )
        if not agent.members:
            agent.paused, agent.reason = False, None
            self._agent_move(agent, AgentTrigger.LOGOUT, now, out, event)
        else:
            self._repause(agent, now, out, event)

    def _ensure_member(
        self, agent: _Agent, queue: str | None, now: float, out: list[Change], event: str
    ) -> None:
        """A queue rang/connected this agent: it is a member there, whatever we thought."""
        if queue and queue not in agent.members:
            out.append(Anomaly("missed_member", f"{agent.agent_id} is in {queue}", event, now))
            agent.members[queue] = _Member()
            agent.view = None
            out.append(MembershipChanged(agent.agent_id, queue, True, False, None, 0, now))
            if agent.state is AgentState.LOGGED_OUT:
                self._login(agent, now, out, event)
            self._repause(agent, now, out, event)

    def _agent_complete(
        self, agent: _Agent, uniqueid: str | None, now: float, out: list[Change], event: str
    ) -> None:
        queue = self._calls[uniqueid].queue if uniqueid in self._calls else None
        self._agent_move(agent, AgentTrigger.COMPLETE, now, out, event, implied=AgentState.WRAP_UP)
        wrapup = self._wrapup.get(queue or "", 0)
        if wrapup > 0:
            agent.wrapup_until = now + wrapup
        else:
            self._agent_move(agent, AgentTrigger.WRAPUP_END, now, out, event)

    def _release_ringing(
        self, call: _Call, now: float, out: list[Change], event: str, keep: str | None = None
    ) -> None:
        for agent_id in sorted(call.ringing):
            agent = self._agents.get(agent_id)
            if (
                agent_id != keep
                and agent is not None
                and agent.state is AgentState.RINGING
                and agent.call in (call.uniqueid, None)
            ):
                self._agent_move(agent, AgentTrigger.RING_NO_ANSWER, now, out, event)
        call.ringing.clear()

    # --- calls ------------------------------------------------------------------------

    def _call_move(
        self, call: _Call, trigger: CallTrigger, now: float, out: list[Change], event: str
    ) -> None:
        try:
            new = call_transition(call.state, trigger)
        except IllegalTransition as exc:
            new = _IMPLIED_CALL[trigger]
            out.append(Anomaly("call_transition", f"{call.uniqueid}: {exc}; now {new}", event, now))
        if new is call.state:
            return
        before, call.state = call.state, new
        out.append(CallChanged(call.uniqueid, before, new, call.queue, call.agent_id, now))

    def _unknown_call(self, uniqueid: str, event: str, now: float, out: list[Change]) -> None:
        if uniqueid not in self._retired:
            out.append(Anomaly("unknown_call", f"{uniqueid} is not a known call", event, now))

    def _new_call(self, event: Event, uniqueid: str, now: float, out: list[Change]) -> _Call:
        call = _Call(uniqueid, caller_number=_number(event.get("CallerIDNum")))
        self._calls[uniqueid] = call
        self._retired.pop(uniqueid, None)  # back on the hotline (a transfer): a new life
        out.append(CallChanged(uniqueid, None, call.state, None, None, now))
        return call

    def _enqueue(self, call: _Call, queue: str, position: int | None = None) -> None:
        """Put the call in `queue`'s waiting list (1-based `position`, else last)."""
        self._unqueue(call)
        waiting = self._waiting.setdefault(queue, [])
        index = len(waiting) if position is None else max(0, min(position - 1, len(waiting)))
        waiting.insert(index, call.uniqueid)
        call.queue, call.waiting_in = queue, queue

    def _unqueue(self, call: _Call) -> None:
        if call.waiting_in is not None:
            self._waiting[call.waiting_in].remove(call.uniqueid)
            call.waiting_in = None

    def _finish(
        self,
        call: _Call,
        outcome: Outcome,
        now: float,
        out: list[Change],
        *,
        talk: float | None = None,
    ) -> None:
        """Record the outcome of the call's current queue visit (if it has one)."""
        if call.joined_at is None and call.queue is None and outcome is Outcome.UNKNOWN:
            return
        if outcome is Outcome.ANSWERED:
            wait = call.hold
        elif call.joined_at is not None:
            wait = (call.left_at if call.left_at is not None else now) - call.joined_at
        else:
            wait = None
        record = FinishedCall(
            call.uniqueid,
            call.caller_number,
            call.ivr,
            call.queue,
            outcome,
            call.priority,
            call.joined_at,
            now,
            None if wait is None else max(0.0, wait),
            talk,
            call.agent_id,
        )
        self._finished.append(record)
        self._finished_total += 1
        out.append(CallFinished(record))
        call.left_at = None

    def _abandon_outcome(self, call: _Call, now: float, hold: int | None = None) -> Outcome:
        end = call.left_at if call.left_at is not None else now
        waited = end - call.joined_at if call.joined_at is not None else hold
        queue = call.queue or ""
        limit = self._max_wait.get(queue)
        if (
            limit is not None
            and waited is not None
            and call.left_at is not None
            and waited >= limit
        ):
            return Outcome.TIMEOUT
        if waited is not None and waited < self._short.get(queue, 0):
            return Outcome.SHORT_ABANDON
        return Outcome.ABANDONED

    def _retire(self, call: _Call) -> None:
        self._unqueue(call)
        self._calls.pop(call.uniqueid, None)
        self._retired[call.uniqueid] = None
        while len(self._retired) > self._finished_limit:
            self._retired.popitem(last=False)

    def _settle_pending(self, call: _Call, outcome: Outcome, now: float, out: list[Change]) -> None:
        """A call that left its queue alive goes on: close that visit with `outcome`."""
        if call.left_at is not None:
            self._finish(call, outcome, now, out)
            self._release_ringing(call, now, out, "settle")
            call.joined_at = None

    def _mark_left_alive(
        self, uniqueid: str, outcome: Outcome, target: str | None, now: float
    ) -> list[Change]:
        out: list[Change] = []
        call = self._calls.get(uniqueid)
        event = f"mark_{outcome}"
        if call is None:
            self._unknown_call(uniqueid, event, now, out)
        elif call.state in (CallState.QUEUED, CallState.RINGING):
            self._unqueue(call)
            call.left_at = now
            self._call_move(call, CallTrigger.LEAVE_QUEUE, now, out, event)
            self._settle_pending(call, outcome, now, out)
        elif call.state is CallState.ROUTING and call.left_at is not None:
            self._settle_pending(call, outcome, now, out)
        else:
            out.append(Anomaly("mark_ignored", f"{uniqueid} is {call.state}", event, now))
        if call is not None and target is not None and call.state is CallState.ROUTING:
            call.queue = target
        self._touch(out)
        return out

    def _arrive(
        self, call: _Call, queue: str, now: float, out: list[Change], event: str, *, source: Event
    ) -> _Call:
        """Asterisk has the call in `queue` now: close whatever it was doing before.

        Waiting in (or having left alive) another queue ends that visit as overflowed, or
        as a timeout when it is the same queue again; a connected call was completed and
        comes back as a new one. Returns the call, out of every waiting list, with no
        pending visit. The caller is expected to have ruled out "already waiting in
        `queue`", which is not an arrival.
        """
        if call.state in (CallState.QUEUED, CallState.RINGING):
            self._unqueue(call)
            call.left_at = now
            self._call_move(call, CallTrigger.LEAVE_QUEUE, now, out, event)
        elif call.state is CallState.CONNECTED:
            out.append(Anomaly("missed_complete", f"{call.uniqueid} back in a queue", event, now))
            self._complete_call(call, now, out, event)
            call = self._new_call(source, call.uniqueid, now, out)
        if call.left_at is not None:
            same = call.queue == queue
            self._settle_pending(call, Outcome.TIMEOUT if same else Outcome.OVERFLOWED, now, out)
        return call

    def _on_join(self, event: Event, now: float, out: list[Change]) -> None:
        uniqueid = event.get("Uniqueid") or ""
        queue = event.get("Queue") or ""
        call = self._calls.get(uniqueid) or self._new_call(event, uniqueid, now, out)
        call.caller_number = _number(event.get("CallerIDNum")) or call.caller_number
        if call.state in (CallState.QUEUED, CallState.RINGING) and call.queue == queue:
            out.append(Anomaly("duplicate_join", f"{uniqueid} in {queue}", event.name, now))
            return
        returning, call.returning_to = call.returning_to, None
        if returning == queue and call.left_at is not None and call.joined_at is not None:
            call.left_at = None  # back at their place: the same visit, waiting since then
        else:
            call = self._arrive(call, queue, now, out, event.name, source=event)
            call.joined_at, call.left_at, call.hold = now, None, None
        self._enqueue(call, queue, _int(event.get("Position"), 0) or None)
        self._call_move(call, CallTrigger.JOIN, now, out, event.name)

    def _on_leave(self, event: Event, now: float, out: list[Change]) -> None:
        uniqueid = event.get("Uniqueid") or ""
        call = self._calls.get(uniqueid)
        if call is None:
            self._unknown_call(uniqueid, event.name, now, out)
            return
        if call.state not in (CallState.QUEUED, CallState.RINGING):
            out.append(Anomaly("leave_not_queued", f"{uniqueid} is {call.state}", event.name, now))
            return
        self._unqueue(call)
        call.left_at = now
        self._call_move(call, CallTrigger.LEAVE_QUEUE, now, out, event.name)

    def _on_abandon(self, event: Event, now: float, out: list[Change]) -> None:
        uniqueid = event.get("Uniqueid") or ""
        call = self._calls.get(uniqueid)
        if call is None:
            self._unknown_call(uniqueid, event.name, now, out)
            return
        if call.state is CallState.CONNECTED:
            out.append(Anomaly("abandon_connected", uniqueid, event.name, now))
            self._complete_call(call, now, out, event.name)
            return
        hold = _int(event.get("HoldTime"), -1)
        outcome = self._abandon_outcome(call, now, None if hold < 0 else hold)
        self._unqueue(call)
        self._finish(call, outcome, now, out)
        self._release_ringing(call, now, out, event.name)
        self._call_move(call, CallTrigger.ABANDON, now, out, event.name)
        self._retire(call)

    def _queued_call(self, event: Event, now: float, out: list[Change]) -> _Call | None:
        """The call an agent event is about; Asterisk says it is in the queue."""
        uniqueid = event.get("Uniqueid") or ""
        call = self._calls.get(uniqueid)
        if call is None and uniqueid not in self._retired:
            self._unknown_call(uniqueid, event.name, now, out)
            call = self._new_call(event, uniqueid, now, out)
            hold = _int(event.get("HoldTime"), -1)
            call.joined_at = now - hold if hold >= 0 else now
            self._enqueue(call, event.get("Queue") or "")
            self._call_move(call, CallTrigger.JOIN, now, out, event.name)
        return call

    def _on_agent_called(self, event: Event, now: float, out: list[Change]) -> None:
        agent = self._agent_for(event.get("Interface") or "", now, out, event.name)
        self._ensure_member(agent, event.get("Queue"), now, out, event.name)
        call = self._queued_call(event, now, out)
        if call is None or call.state not in (CallState.QUEUED, CallState.RINGING):
            out.append(Anomaly("stale_ring", f"{event.get('Uniqueid')}", event.name, now))
            return
        agent.call = call.uniqueid
        self._agent_move(agent, AgentTrigger.RING, now, out, event.name)
        call.ringing.add(agent.agent_id)
        self._call_move(call, CallTrigger.RING, now, out, event.name)

    def _on_ring_no_answer(self, event: Event, now: float, out: list[Change]) -> None:
        uniqueid = event.get("Uniqueid") or ""
        agent = self._agent_for(event.get("Interface") or "", now, out, event.name)
        if agent.state is AgentState.RINGING and agent.call in (uniqueid, None):
            self._agent_move(agent, AgentTrigger.RING_NO_ANSWER, now, out, event.name)
        call = self._calls.get(uniqueid)
        if call is None:
            return
        call.ringing.discard(agent.agent_id)
        if call.state is CallState.RINGING and not call.ringing:
            self._call_move(call, CallTrigger.RING_NO_ANSWER, now, out, event.name)

    def _on_connect(self, event: Event, now: float, out: list[Change]) -> None:
        agent = self._agent_for(event.get("Interface") or "", now, out, event.name)
        self._ensure_member(agent, event.get("Queue"), now, out, event.name)
        call = self._queued_call(event, now, out)
        if call is None or call.state in (CallState.CONNECTED,):
            out.append(Anomaly("stale_connect", f"{event.get('Uniqueid')}", event.name, now))
            return
        previous = agent.call
        if previous is not None and previous != call.uniqueid and previous in self._calls:
            other = self._calls[previous]
            if other.state is CallState.CONNECTED and other.agent_id == agent.agent_id:
                out.append(Anomaly("missed_complete", previous, event.name, now))
                self._complete_call(other, now, out, event.name)
        self._unqueue(call)
        self._release_ringing(call, now, out, event.name, keep=agent.agent_id)
        agent.call = call.uniqueid
        self._agent_move(agent, AgentTrigger.CONNECT, now, out, event.name)
        call.queue = event.get("Queue") or call.queue
        call.agent_id, call.connected_at = agent.agent_id, now
        hold = _int(event.get("HoldTime"), -1)
        if call.joined_at is not None:
            call.hold = max(0.0, now - call.joined_at)
        elif hold >= 0:
            call.hold = float(hold)
        call.left_at = None
        self._call_move(call, CallTrigger.CONNECT, now, out, event.name)

    def _complete_call(
        self, call: _Call, now: float, out: list[Change], event: str, talk: float | None = None
    ) -> None:
        if talk is None and call.connected_at is not None:
            talk = max(0.0, now - call.connected_at)
        self._finish(call, Outcome.ANSWERED, now, out, talk=talk)
        self._call_move(call, CallTrigger.COMPLETE, now, out, event)
        agent = self._agents.get(call.agent_id or "")
        if agent is not None and agent.call == call.uniqueid and agent.state is AgentState.ON_CALL:
            self._agent_complete(agent, call.uniqueid, now, out, event)
        self._retire(call)

    def _on_complete(self, event: Event, now: float, out: list[Change]) -> None:
        uniqueid = event.get("Uniqueid") or ""
        agent = self._agent_for(event.get("Interface") or "", now, out, event.name)
        call = self._calls.get(uniqueid)
        if call is not None and call.state is CallState.CONNECTED:
            call.agent_id = agent.agent_id
            talk = _int(event.get("TalkTime"), -1)
            own = None if call.connected_at is None else max(0.0, now - call.connected_at)
            self._complete_call(call, now, out, event.name, own if own is not None else talk)
        elif call is not None:
            out.append(
                Anomaly("complete_not_connected", f"{uniqueid} is {call.state}", event.name, now)
            )
            self._finish(call, Outcome.ANSWERED, now, out)
            self._call_move(call, CallTrigger.COMPLETE, now, out, event.name)
            self._retire(call)
        if agent.state is AgentState.ON_CALL and agent.call in (uniqueid, None):
            self._agent_complete(agent, uniqueid, now, out, event.name)

    def _on_hangup(self, event: Event, now: float, out: list[Change]) -> None:
        call = self._calls.get(event.get("Uniqueid") or "")
        if call is None:
            return  # most channels are not hotline callers (agents' legs, Local halves)
        if call.state is CallState.CONNECTED:
            self._complete_call(call, now, out, event.name)
            return
        if call.state in (CallState.QUEUED, CallState.RINGING) or call.left_at is not None:
            self._unqueue(call)
            self._finish(call, self._abandon_outcome(call, now), now, out)
        else:  # hung up in the IVR (or between queues), not waiting anywhere
            self._finish(call, Outcome.ABANDONED, now, out)
        self._release_ringing(call, now, out, event.name)
        self._call_move(call, CallTrigger.HANGUP, now, out, event.name)
        self._retire(call)

    # --- resync -----------------------------------------------------------------------

    def _resync_members(
        self, queues: set[str], members: Mapping[str, list[Event]], now: float, out: list[Change]
    ) -> None:
        for agent in list(self._agents.values()):
            listed = {e.get("Queue") or "" for e in members.get(agent.interface, [])}
            for queue in [q for q in agent.members if q in queues and q not in listed]:
                self._remove_member(agent, queue, now, out, "resync")
        for iface, events in members.items():
            agent = self._agent_for(iface, now, out, "resync")
            for e in events:
                self._member_fields(agent, e.get("Queue") or "", e, now, out)
            if agent.state is AgentState.LOGGED_OUT:
                self._login(agent, now, out, "resync")
            self._repause(agent, now, out, "resync")
            status = events[0].get("Status")
            agent.device = _DEVICE_CODES.get(status or "", DeviceState.UNKNOWN)

    def _resync_calls(
        self,
        queues: set[str],
        entries: Mapping[str, list[Event]],
        alive: Mapping[str, Event],
        now: float,
        out: list[Change],
    ) -> None:
        # app_queue takes a caller out of the queue before it bridges it to the agent, so
        # a channel is never both at one instant. The daemon asks CoreShowChannels after
        # QueueStatus: a call listed both ways was answered in between, and the bridge is
        # the newer truth.
        bridged = {
            uid: c
            for uid, c in alive.items()
            if (c.get("Application") or "").lower() == "queue" and c.get("BridgeId")
        }
        queued: dict[str, tuple[str, Event]] = {}
        for queue, events in entries.items():
            for e in sorted(events, key=lambda e: _int(e.get("Position"))):
                uid = e.get("Uniqueid") or ""
                if uid not in bridged:
                    queued[uid] = (queue, e)
        for call in list(self._calls.values()):
            if call.uniqueid not in queued and call.uniqueid not in bridged:
                self._resync_unlisted(call, queues, alive, now, out)
        for queue in queues:
            for uid in list(self._waiting.get(queue, ())):
                self._unqueue(self._calls[uid])  # rebuilt in Asterisk's order below
        for uid, (queue, e) in queued.items():
            self._resync_waiting(uid, queue, e, now, out)
        for uid, c in bridged.items():
            self._resync_bridged(uid, c, now, out)

    def _resync_unlisted(
        self,
        call: _Call,
        queues: set[str],
        alive: Mapping[str, Event],
        now: float,
        out: list[Change],
    ) -> None:
        """A call Asterisk lists neither as waiting nor as bridged to an agent."""
        if call.uniqueid not in alive:
            out.append(Anomaly("vanished", f"{call.uniqueid} ended unobserved", "resync", now))
            if call.state is CallState.CONNECTED:
                self._complete_call(call, now, out, "resync")
                return
            self._unqueue(call)
            self._finish(call, Outcome.UNKNOWN, now, out)
            self._release_ringing(call, now, out, "resync")
            self._call_move(call, CallTrigger.HANGUP, now, out, "resync")
            self._retire(call)
        elif call.state is CallState.CONNECTED:
            self._complete_call(call, now, out, "resync")  # alive, but out of the bridge
        elif call.state in (CallState.QUEUED, CallState.RINGING) and call.queue in queues:
            self._unqueue(call)
            call.left_at = now
            self._call_move(call, CallTrigger.LEAVE_QUEUE, now, out, "resync")

    def _resync_waiting(
        self, uid: str, queue: str, entry: Event, now: float, out: list[Change]
    ) -> None:
        call = self._calls.get(uid) or self._new_call(entry, uid, now, out)
        still = call.state in (CallState.QUEUED, CallState.RINGING) and call.queue == queue
        if not still:  # a join we missed: end what the call was doing before
            call = self._arrive(call, queue, now, out, "resync", source=entry)
        call.caller_number = _number(entry.get("CallerIDNum")) or call.caller_number
        call.priority = _int(entry.get("Priority"), call.priority)
        joined = now - _int(entry.get("Wait"))
        # QueueEntry's Wait is whole seconds: keep our own finer join time when it agrees
        if not still or call.joined_at is None or abs(call.joined_at - joined) > 1.5:
            call.joined_at = joined
        call.left_at = None
        self._enqueue(call, queue)
        if call.state is CallState.ROUTING:
            self._call_move(call, CallTrigger.JOIN, now, out, "resync")

    def _resync_bridged(self, uid: str, channel: Event, now: float, out: list[Change]) -> None:
        call = self._calls.get(uid) or self._new_call(channel, uid, now, out)
        if call.state is CallState.CONNECTED:
            return
        queue = (channel.get("ApplicationData") or "").split(",")[0] or call.queue
        if queue is not None and queue != call.queue:  # answered from a queue we missed
            call = self._arrive(call, queue, now, out, "resync", source=channel)
            call.queue = queue
        if call.state in (CallState.QUEUED, CallState.RINGING):
            # what app_queue did unseen: QueueCallerLeave, then AgentConnect
            self._unqueue(call)
            self._call_move(call, CallTrigger.LEAVE_QUEUE, now, out, "resync")
        if call.joined_at is None:
            call.joined_at = now - _duration(channel.get("Duration"))
        call.connected_at, call.left_at = now, None
        self._release_ringing(call, now, out, "resync")
        self._call_move(call, CallTrigger.CONNECT, now, out, "resync")

    def _resync_agent_calls(
        self,
        members: Mapping[str, list[Event]],
        alive: Mapping[str, Event],
        now: float,
        out: list[Change],
    ) -> None:
        # The agent of a bridged caller: the queue's outgoing leg in the same bridge.
        by_bridge: dict[str, str] = {}
        for c in alive.values():
            bridge = c.get("BridgeId")
            if bridge and (c.get("Application") or "") == "AppQueue":
                by_bridge[bridge] = _interface_of_channel(c.get("Channel") or "")
        agent_call: dict[str, str] = {}
        for uid, call in self._calls.items():
            channel = alive.get(uid)
            if call.state is CallState.CONNECTED and channel is not None:
                iface = by_bridge.get(channel.get("BridgeId") or "")
                if iface is not None:
                    call.agent_id = self._iface_to_agent.get(iface, iface)
                    agent_call[call.agent_id] = uid
        for iface, events in members.items():
            agent = self._agents.get(self._iface_to_agent.get(iface, iface))
            if agent is not None:
                in_call = any(e.get("InCall") == "1" for e in events)
                self._resync_agent(agent, in_call, agent_call.get(agent.agent_id), now, out)

    def _resync_agent(
        self, agent: _Agent, in_call: bool, call: str | None, now: float, out: list[Change]
    ) -> None:
        if in_call or call is not None:
            agent.call = call or agent.call
            if agent.state is not AgentState.ON_CALL:
                self._agent_set(agent, AgentState.ON_CALL, now, out)
        elif agent.state is AgentState.RINGING and self._still_ringing(agent):
            return
        elif agent.state is AgentState.WRAP_UP and (agent.wrapup_until or 0) > now:
            return  # Firstline's own wrap-up: Asterisk does not know about it
        elif agent.state is AgentState.WRAP_UP:
            self._agent_move(agent, AgentTrigger.WRAPUP_END, now, out, "resync")
        elif agent.state is AgentState.ON_CALL:
            self._agent_complete(agent, agent.call, now, out, "resync")
        else:
            self._agent_set(agent, rest_state(agent.paused), now, out)

    def _still_ringing(self, agent: _Agent) -> bool:
        call = self._calls.get(agent.call or "")
        return call is not None and call.state is CallState.RINGING

    # --- views ------------------------------------------------------------------------

    def _queue_names(self) -> set[str]:
        names = set(self._wrapup) | set(self._short) | set(self._max_wait)
        names.update(q for q, w in self._waiting.items() if w)
        for agent in self._agents.values():
            names.update(agent.members)
        return names

    def _waiting_view(self, queue: str) -> tuple[WaitingCaller, ...]:
        views = []
        for position, uid in enumerate(self._waiting.get(queue, ()), 1):
            call = self._calls[uid]
            views.append(
                WaitingCaller(
                    uid,
                    call.caller_number,
                    call.joined_at if call.joined_at is not None else 0.0,
                    call.priority,
                    position,
                    call.state is CallState.RINGING,
                )
            )
        return tuple(views)

    @staticmethod
    def _agent_view(agent: _Agent) -> AgentView:
        queues = {
            q: MemberView(q, m.penalty, m.paused, m.reason or None)
            for q, m in sorted(agent.members.items())
        }
        agent.view = AgentView(
            agent.agent_id,
            agent.interface,
            agent.state,
            agent.reason,
            agent.device,
            MappingProxyType(queues),
            agent.call,
            agent.since,
            agent.wrapup_until,
        )
        return agent.view

    @staticmethod
    def _call_view(call: _Call) -> CallView:
        call.view = CallView(
            call.uniqueid,
            call.caller_number,
            call.ivr,
            call.state,
            call.queue,
            call.agent_id,
            call.priority,
            call.joined_at,
        )
        return call.view

    def _touch(self, out: Sequence[Change], *, force: bool = False) -> None:
        if force or out:
            self._cached = None
            if out:
                self._as_of = max(
                    self._as_of,
                    out[-1].at
                    if not isinstance(out[-1], CallFinished)
                    else out[-1].record.ended_at,
                )


def _implied_agent(trigger: AgentTrigger, agent: _Agent) -> AgentState:
    """The state an event says the agent is in, when the table refuses the move."""
    implied = {
        AgentTrigger.LOGOUT: AgentState.LOGGED_OUT,
        AgentTrigger.RING: AgentState.RINGING,
        AgentTrigger.CONNECT: AgentState.ON_CALL,
        AgentTrigger.COMPLETE: AgentState.WRAP_UP,
    }
    if trigger in implied:
        return implied[trigger]
    if agent.state in (AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP):
        return agent.state
    return rest_state(agent.paused)


_IMPLIED_CALL: Final = {
    CallTrigger.JOIN: CallState.QUEUED,
    CallTrigger.RING: CallState.RINGING,
    CallTrigger.RING_NO_ANSWER: CallState.QUEUED,
    CallTrigger.LEAVE_QUEUE: CallState.ROUTING,
    CallTrigger.CONNECT: CallState.CONNECTED,
    CallTrigger.COMPLETE: CallState.COMPLETED,
    CallTrigger.ABANDON: CallState.LEFT,
    CallTrigger.HANGUP: CallState.LEFT,
    CallTrigger.CALLBACK: CallState.LEFT,
}
