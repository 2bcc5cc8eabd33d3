"""The routing decision: which queue a call joins, with what priority and penalty bounds.

Pure decision core: a function of (config, live view, call facts, now) with no I/O, no clock
and no asyncio, so the same code runs in the daemon, the tests and the benchmarks. It must not
import the live-state module: the daemon adapts its state into a small ``RoutingView``. The
daemon turns the decision into channel variables the dialplan hands to ``Queue()``.

Rules, in the order ``decide_route`` applies them:

1. **Qualified queues.** An agent's penalty in a queue is its shortfall below the queue's
   requirement on its weakest skill (``Queue.penalty_of``; 0 = fully qualified); members are
   the agents whose penalty is within the queue's final escalation step. A queue's *floor* on
   a skill is the lowest level any member can have: ``max(1, required - final_max_penalty)``.
   A queue is qualified for a call when it requires every skill the call needs with a floor
   at least the call's level. So nobody below the call's level is ever a member, even after
   the last escalation step: the rule "never offer a call to an agent lacking a required skill
   at the required level" holds by membership, not by a bound we would have to keep in step
   with ``queuerules.conf``.
2. **Better-skilled first.** Calls start at ``max_penalty`` 0 (only fully qualified agents);
   the queue's escalation steps are rendered to ``queuerules.conf`` ``penaltychange`` lines
   (absolute values ``top requirement - min_level``) and widen the bound after each wait.
   Absolute values never exceed ``final_max_penalty``, which the floor above already allows.
   ``min_penalty`` stays 0: better agents are never excluded, they are just tried first.
3. **Choice among qualified queues.** A call with no required skills (the IVR said nothing)
   goes to the hotline's default queue, or to its *language sibling*: the first queue of the
   same support level whose non-language skills are those of the default queue and which
   requires ``lang-<code>`` for the caller's language. With required skills the qualified
   queues are ranked by language -- requiring ``lang-<code>`` first, language-neutral next,
   another language last -- then by their order in the config. Language skills follow the
   naming convention ``lang-<ISO 639-1 code>`` (``lang-en``, ``lang-fr``); a language that is
   not offered by the hotline is read as the hotline's first language.
4. **Opening hours (follow-the-sun).** A queue is open when at least one site of one of its
   members is open (site time zone, weekly spans, holidays). The first open queue in rank
   order wins; none open means *closed*: no queue, the IVR offers a callback. A customer whose
   SLA package has 24x7 coverage is never closed out.
5. **Overflow.** When the live view says the chosen queue's expected wait for a new caller
   exceeds its ``overflow.expected_wait_over`` and its overflow queue is qualified for the
   call, open, not of a worse language rank, and shorter, the call goes there (one hop only).
   Estimates are compared even when too few handle times were sampled to *announce* them.
6. **Preferred agent.** The owner of the caller's highest-priority open ticket, then the
   customer's account manager, is rung first for ``preferred_ring_seconds`` when the view
   shows them available and they have every required skill at the required level. A call
   that has such a person (whether rung or not) joins the queue with ``PREFERRED_FALLBACK_BOOST``
   added to its priority: the caller has a running case and should not start over at the back.
7. **Priority** (``QUEUE_PRIO``, higher first): the SLA rank of the highest-priority open
   ticket (``normal`` without tickets; the lowest rank if no ``normal`` exists), plus the
   package's ``priority_boost``, plus the preferred-agent fallback boost. Within one priority
   app_queue serves callers first in, first out; the decision never depends on who the caller
   is beyond these facts, nor on ``now`` except through opening hours.

With no live view (``view=None``) nothing is known about who is available: no overflow and no
preferred agent; the decision is still made. Which agents were eligible for the chosen queue
and why the others were not are part of every decision (``eligible``, ``excluded``, both
precomputed per config by ``RoutingTable``); ``explain_agents`` adds the live status of the
eligible agents for the log, at O(eligible) cost the decision itself does not pay.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from acd.config import Agent, Config, Queue, Site
from acd.expected_wait import QueueSnapshot, WaitEstimate, expected_wait

__all__ = [
    "DEFAULT_PREFERRED_RING_SECONDS",
    "PREFERRED_FALLBACK_BOOST",
    "AgentAvailability",
    "CallFacts",
    "CustomerFacts",
    "QueueLoad",
    "RouteDecision",
    "RouteStatus",
    "RoutingTable",
    "RoutingView",
    "TicketFacts",
    "decide_route",
    "explain_agents",
    "is_open",
    "language_skill",
    "parse_skill_list",
    "queue_memberships",
]

DEFAULT_PREFERRED_RING_SECONDS = 15
"""Seconds the preferred agent (ticket owner, account manager) rings before the queue."""

PREFERRED_FALLBACK_BOOST = 5
"""Priority added when a call had a preferred agent: half a rank step of the example SLA."""

_MAX_SKILL_ITEMS = 30  # more than any desk defines; bounds what a channel variable can cost
_LANGUAGE_SKILL = re.compile(r"^lang-([a-z]{2})$")
_NORMAL_PRIORITY = "normal"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order

RouteStatus = Literal["queued", "closed", "unroutable"]


def language_skill(language: str) -> str:
    """The skill id that stands for speaking ``language`` (ISO 639-1): ``lang-<code>``."""
    return f"lang-{language}"


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What the customer record says: the support contract and a dedicated manager."""

    sla_package: str | None = None
    account_manager: str | None = None


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """One of the caller's open tickets: its number, priority name and owning agent."""

    number: str
    priority: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known about a call when it asks for a route.

    ``required_skills`` (skill id -> minimum level) comes from the IVR's questions; empty
    means the IVR said nothing and the hotline's entry queue applies. ``language`` is an ISO
    639-1 code, possibly with a region (``fr_CA``).
    """

    uniqueid: str
    caller_number: str
    dialed: str
    language: str
    required_skills: Mapping[str, int] = field(default_factory=dict)
    customer: CustomerFacts | None = None
    open_tickets: tuple[TicketFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentAvailability:
    """One agent now: logged in, available (idle, not paused, not in wrap-up), paused."""

    logged_in: bool
    available: bool
    paused: bool = False

    def __post_init__(self) -> None:
        if self.available and (self.paused or not self.logged_in):
            raise ValueError("an available agent is logged in and not paused")


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """One queue now, as a new caller would find it (the ``QueueSnapshot`` inputs).

    ``waiting`` callers are ahead of the new caller; the agents are the queue's members who
    are logged in and not paused (see docs/EXPECTED_WAIT.md). The snapshot and the new
    caller's expected wait are computed once here (O(agents + waiting log agents)), when the
    daemon rebuilds the load after a change in the queue, so decisions sharing it pay nothing.
    """

    waiting: int
    agents_available: int = 0
    agents_busy_remaining: tuple[float, ...] = ()
    mean_handle_time: float | None = None
    samples: int = 0
    snapshot: QueueSnapshot = field(init=False, repr=False, compare=False)
    estimate: WaitEstimate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.waiting, bool) or self.waiting < 0:
            raise ValueError(f"waiting must be an int >= 0, got {self.waiting!r}")
        snapshot = QueueSnapshot(
            position=self.waiting + 1,
            agents_available=self.agents_available,
            agents_busy_remaining=self.agents_busy_remaining,
            mean_handle_time=self.mean_handle_time,
            samples=self.samples,
        )
        object.__setattr__(self, "snapshot", snapshot)
        object.__setattr__(self, "estimate", expected_wait(snapshot))


@dataclass(frozen=True, slots=True)
class RoutingView:
    """The live state routing needs, built by the daemon: agents and queue loads by id.

    An agent or queue absent from the view is unknown: logged out, nobody waiting.
    """

    agents: Mapping[str, AgentAvailability] = field(default_factory=dict)
    queues: Mapping[str, QueueLoad] = field(default_factory=dict)


# --- output ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where the call goes and why.

    ``queue`` is None when ``status`` is ``closed`` (outside every qualified queue's hours) or
    ``unroutable`` (no queue is qualified for the required skills); the IVR then offers a
    callback. ``eligible`` lists the target queue's members as (agent id, penalty), best
    first; ``excluded`` says for every other configured agent why it is not one.
    """

    status: RouteStatus
    queue: str | None
    priority: int
    max_penalty: int
    min_penalty: int
    max_wait: int
    reasons: tuple[str, ...]
    preferred_agent: str | None = None
    preferred_ring_seconds: int = 0
    overflowed_from: str | None = None
    expected_wait: WaitEstimate | None = None
    eligible: tuple[tuple[str, int], ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()

    @property
    def closed(self) -> bool:
        """True when the desk is closed for this call (no queue; callback offered)."""
        return self.status == "closed"


# --- the per-config table ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SiteHours:
    site: Site
    zone: zoneinfo.ZoneInfo
    holidays: frozenset[dt.date]
    spans: tuple[tuple[tuple[dt.time, dt.time], ...], ...]  # index: weekday (0 = Monday)


@dataclass(frozen=True, slots=True)
class _QueueEntry:
    queue: Queue
    index: int
    floors: Mapping[str, int]
    languages: frozenset[str]
    members: tuple[tuple[str, int], ...]
    excluded: tuple[tuple[str, str], ...]
    sites: tuple[str, ...]


class RoutingTable:
    """Everything about one ``Config`` that does not change between calls, indexed.

    Build it once per config (``RoutingTable(config)``) and pass it to ``decide_route``;
    building costs O(queues x agents), a decision then costs O(queues requiring the call's
    skills) plus the expected-wait estimate of the queue (and its overflow) when overflow is
    configured. Immutable after construction.
    """

    __slots__ = (
        "_agents",
        "_by_skill",
        "_entries",
        "_language_entry",
        "_sites",
        "config",
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        self._agents: dict[str, Agent] = {a.id: a for a in config.agents}
        self._sites: dict[str, _SiteHours] = {s.id: _site_hours(s) for s in config.sites}
        entries = [_queue_entry(config, q, i) for i, q in enumerate(config.queues)]
        self._entries: dict[str, _QueueEntry] = {e.queue.id: e for e in entries}
        by_skill: dict[str, list[_QueueEntry]] = {}
        for entry in entries:
            for skill in entry.queue.skills:
                by_skill.setdefault(skill, []).append(entry)
        self._by_skill: dict[str, tuple[_QueueEntry, ...]] = {
            k: tuple(v) for k, v in by_skill.items()
        }
        self._language_entry = self._language_siblings(config)

    def _language_siblings(self, config: Config) -> dict[str, _QueueEntry]:
        default = self._entries[config.hotline.default_queue]
        plain = {s for s in default.queue.skills if _LANGUAGE_SKILL.match(s) is None}
        result: dict[str, _QueueEntry] = {}
        for language in config.hotline.languages:
            if language in default.languages:
                result[language] = default
                continue
            sibling = next(
                (
                    e
                    for e in self._entries.values()
                    if language in e.languages
                    and e.queue.level == default.queue.level
                    and {s for s in e.queue.skills if _LANGUAGE_SKILL.match(s) is None} == plain
                ),
                default,
            )
            result[language] = sibling
        return result

    def members(self, queue_id: str) -> tuple[tuple[str, int], ...]:
        """(agent id, penalty) of every member of the queue, best first (KeyError if none)."""
        return self._entries[queue_id].members


def _site_hours(site: Site) -> _SiteHours:
    hours = site.opening_hours()
    spans = tuple(tuple(hours.get(day, ())) for day in _WEEKDAYS)
    return _SiteHours(site, zoneinfo.ZoneInfo(site.timezone), frozenset(site.holidays), spans)


def _queue_entry(config: Config, queue: Queue, index: int) -> _QueueEntry:
    final = queue.final_max_penalty
    floors = {skill: max(1, level - final) for skill, level in queue.skills.items()}
    languages = frozenset(
        m.group(1) for s in queue.skills if (m := _LANGUAGE_SKILL.match(s)) is not None
    )
    members: list[tuple[int, int, str]] = []
    excluded: list[tuple[str, str]] = []
    sites: list[str] = []
    for position, agent in enumerate(config.agents):
        penalty = queue.penalty_of(agent.skills)
        if penalty is not None and penalty <= final:
            members.append((penalty, position, agent.id))
            if agent.site not in sites:
                sites.append(agent.site)
        else:
            excluded.append((agent.id, _why_not(queue, floors, agent)))
    members.sort()
    site_order = {s.id: i for i, s in enumerate(config.sites)}
    return _QueueEntry(
        queue=queue,
        index=index,
        floors=floors,
        languages=languages,
        members=tuple((agent_id, penalty) for penalty, _, agent_id in members),
        excluded=tuple(excluded),
        sites=tuple(sorted(sites, key=lambda s: site_order.get(s, len(site_order)))),
    )


def _why_not(queue: Queue, floors: Mapping[str, int], agent: Agent) -> str:
    for skill in queue.skills:
        if skill not in agent.skills:
            return f"lacks skill {skill}"
    beyond = " (beyond final escalation)" if queue.escalation else ""
    for skill, floor in floors.items():
        if agent.skills[skill] < floor:
            return f"{skill} level {agent.skills[skill]} < {floor}{beyond}"
    raise AssertionError("unreachable: a qualified agent is a member")  # pragma: no cover


# --- opening hours --------------------------------------------------------------------------


def is_open(site: Site, now: dt.datetime) -> bool:
    """Whether ``site`` is open at ``now`` (aware): local weekly spans, minus its holidays."""
    return _open(_site_hours(site), _aware(now))


def _open(hours: _SiteHours, now: dt.datetime) -> bool:
    local = now.astimezone(hours.zone)
    if local.date() in hours.holidays:
        return False
    moment = local.time()
    for start, end in hours.spans[local.weekday()]:
        # 24:00 is stored as time.max, which no real instant passes.
        if start <= moment and (moment < end or end == dt.time.max):
            return True
    return False


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


# --- the decision ---------------------------------------------------------------------------


def _language_of(config: Config, spoken: str) -> tuple[str, str | None]:
    code = spoken.replace("-", "_").split("_", 1)[0].lower()
    if code in config.hotline.languages:
        return code, None
    default = config.hotline.languages[0]
    return default, f"language {spoken!r} not offered; {default} applies"


def _priority(config: Config, facts: CallFacts, reasons: list[str]) -> int:
    priorities = config.sla.priorities
    if _NORMAL_PRIORITY in priorities:
        rank = priorities[_NORMAL_PRIORITY].rank
    else:
        rank = min(p.rank for p in priorities.values())
    source = "no open ticket"
    for ticket in facts.open_tickets:
        level = priorities.get(ticket.priority)
        if level is None:
            reasons.append(f"ticket {ticket.number}: unknown priority {ticket.priority!r}")
        elif level.rank > rank:
            # A ticket only raises: the call may be about something new.
            rank, source = level.rank, f"ticket {ticket.number} ({ticket.priority})"
    reasons.append(f"priority {rank} from {source}")
    customer = facts.customer
    if customer is not None and customer.sla_package is not None:
        package = config.sla.packages.get(customer.sla_package)
        if package is None:
            reasons.append(f"unknown SLA package {customer.sla_package!r}: no boost")
        elif package.priority_boost:
            rank += package.priority_boost
            reasons.append(f"+{package.priority_boost} for package {customer.sla_package}")
    return rank


def _covers(entry: _QueueEntry, required: Mapping[str, int]) -> bool:
    floors = entry.floors
    for skill, level in required.items():
        floor = floors.get(skill)
        if floor is None or floor < level:
            return False
    return True


def _language_rank(entry: _QueueEntry, language: str) -> int:
    if language in entry.languages:
        return 0
    return 1 if not entry.languages else 2


def _candidates(
    table: RoutingTable, facts: CallFacts, language: str, reasons: list[str]
) -> list[_QueueEntry]:
    required = facts.required_skills
    if not required:
        entry = (
            table._language_entry.get(language)
            or table._entries[table.config.hotline.default_queue]
        )
        default = table._entries[table.config.hotline.default_queue]
        reasons.append(f"no skills asked: entry queue {entry.queue.id} for language {language}")
        return [entry] if entry is default else [entry, default]
    pools = [table._by_skill.get(skill, ()) for skill in required]
    smallest = min(pools, key=len)
    qualified = [e for e in smallest if _covers(e, required)]
    qualified.sort(key=lambda e: (_language_rank(e, language), e.index))
    asked = ", ".join(f"{s}>={lvl}" for s, lvl in sorted(required.items()))
    if qualified:
        reasons.append(
            f"qualified for {asked}: {', '.join(e.queue.id for e in qualified)}"
            f" (language {language} first)"
        )
    else:
        reasons.append(f"no queue admits only agents with {asked}")
    return qualified


def _queue_open(
    table: RoutingTable, entry: _QueueEntry, now: dt.datetime, seen: dict[str, bool]
) -> bool:
    for site_id in entry.sites:
        state = seen.get(site_id)
        if state is None:
            hours = table._sites.get(site_id)
            state = hours is not None and _open(hours, now)
            seen[site_id] = state
        if state:
            return True
    return False


def _wait(view: RoutingView, queue_id: str) -> tuple[float | None, WaitEstimate | None]:
    """Comparable seconds (inf when nobody can answer; None when unknown) and the estimate."""
    load = view.queues.get(queue_id)
    if load is None:
        load = _EMPTY_LOAD
    if load.snapshot.agents_logged_in == 0:
        return math.inf, load.estimate
    return load.estimate.seconds, load.estimate


_EMPTY_LOAD = QueueLoad(waiting=0)


def _qualified_agent(agent: Agent | None, required: Mapping[str, int]) -> bool:
    if agent is None:
        return False
    skills = agent.skills
    return all(skills.get(s, 0) >= lvl for s, lvl in required.items())


def _preferred(
    table: RoutingTable,
    facts: CallFacts,
    view: RoutingView | None,
    reasons: list[str],
) -> str | None:
    """The agent to ring first: available, qualified, owner of the most urgent ticket first."""
    people: list[tuple[str, str]] = []
    priorities = table.config.sla.priorities
    tickets = sorted(
        (t for t in facts.open_tickets if t.owner is not None),
        key=lambda t: -(priorities[t.priority].rank if t.priority in priorities else -1),
    )
    people.extend((t.owner, f"owner of ticket {t.number}") for t in tickets if t.owner)
    if facts.customer is not None and facts.customer.account_manager is not None:
        people.append((facts.customer.account_manager, "account manager"))
    for agent_id, role in people:
        agent = table._agents.get(agent_id)
        if agent is None:
            reasons.append(f"{role} {agent_id}: not a configured agent")
            continue
        if not _qualified_agent(agent, facts.required_skills):
            reasons.append(f"{role} {agent_id}: lacks a required skill level")
            continue
        if view is None:
            reasons.append(f"{role} {agent_id}: availability unknown, not rung")
            continue
        state = view.agents.get(agent_id)
        if state is None or not state.available:
            reasons.append(f"{role} {agent_id}: {_live_status(state)}")
            continue
        reasons.append(f"{role} {agent_id}: available, rung first")
        return agent_id
    return None


def _has_preferred_person(table: RoutingTable, facts: CallFacts) -> bool:
    agents = table._agents
    if any(t.owner in agents for t in facts.open_tickets if t.owner is not None):
        return True
    customer = facts.customer
    return customer is not None and customer.account_manager in agents


def _live_status(state: AgentAvailability | None) -> str:
    if state is None or not state.logged_in:
        return "logged out"
    if state.paused:
        return "paused"
    return "available" if state.available else "busy"


def decide_route(
    config: Config,
    facts: CallFacts,
    now: dt.datetime,
    view: RoutingView | None = None,
    *,
    table: RoutingTable | None = None,
) -> RouteDecision:
    """Choose the queue, priority, penalty bounds and preferred agent for a hotline call.

    ``table`` must have been built from this very ``config`` (it is rebuilt when omitted,
    which costs O(queues x agents)); ``view`` is the live state, None when unknown.
    """
    _aware(now)
    if table is None:
        table = RoutingTable(config)
    elif table.config is not config:
        raise ValueError("the routing table was built from another config")
    reasons: list[str] = [f"hotline {facts.dialed or '?'}"]
    language, note = _language_of(config, facts.language)
    if note is not None:
        reasons.append(note)
    priority = _priority(config, facts, reasons)
    if _has_preferred_person(table, facts):
        # Whatever happens next (rung, unavailable, closed): the priority the call has in a
        # queue, and its callback, does not depend on the moment.
        priority += PREFERRED_FALLBACK_BOOST
        reasons.append(f"+{PREFERRED_FALLBACK_BOOST} for a preferred agent's fallback")

    candidates = _candidates(table, facts, language, reasons)
    if not candidates:
        reasons.append("unroutable: callback offered")
        return RouteDecision(
            status="unroutable",
            queue=None,
            priority=priority,
            max_penalty=0,
            min_penalty=0,
            max_wait=0,
            reasons=tuple(reasons),
        )

    customer = facts.customer
    package = (
        config.sla.packages.get(customer.sla_package)
        if customer is not None and customer.sla_package is not None
        else None
    )
    always = package is not None and package.coverage == "24x7"
    ctx = _Context(table, facts, language, now, always, reasons)
    chosen: _QueueEntry | None = None
    for entry in candidates:
        if ctx.is_open(entry):
            chosen = entry
            break
        reasons.append(f"{entry.queue.id}: no site of a member is open")
    if chosen is None:
        reasons.append("closed: callback offered")
        return RouteDecision(
            status="closed",
            queue=None,
            priority=priority,
            max_penalty=0,
            min_penalty=0,
            max_wait=0,
            reasons=tuple(reasons),
        )
    if always:
        reasons.append(f"24x7 coverage ({customer.sla_package if customer else '?'})")

    overflowed_from: str | None = None
    estimate: WaitEstimate | None = None
    if view is not None:
        chosen, overflowed_from, estimate = _overflow(ctx, chosen, view)

    preferred = _preferred(table, facts, view, reasons)
    queue = chosen.queue
    reasons.append(
        f"queue {queue.id}: {len(chosen.members)} eligible, max penalty 0 "
        f"widening to {queue.final_max_penalty}"
    )
    return RouteDecision(
        status="queued",
        queue=queue.id,
        priority=priority,
        max_penalty=0,
        min_penalty=0,
        max_wait=queue.max_wait,
        reasons=tuple(reasons),
        preferred_agent=preferred,
        preferred_ring_seconds=DEFAULT_PREFERRED_RING_SECONDS if preferred else 0,
        overflowed_from=overflowed_from,
        expected_wait=estimate,
        eligible=chosen.members,
        excluded=chosen.excluded,
    )


@dataclass(slots=True)
class _Context:
    """One decision's inputs and memo of site states (per call, never shared)."""

    table: RoutingTable
    facts: CallFacts
    language: str
    now: dt.datetime
    always: bool
    reasons: list[str]
    seen: dict[str, bool] = field(default_factory=dict)

    def is_open(self, entry: _QueueEntry) -> bool:
        return self.always or _queue_open(self.table, entry, self.now, self.seen)


def _overflow(
    ctx: _Context, chosen: _QueueEntry, view: RoutingView
) -> tuple[_QueueEntry, str | None, WaitEstimate | None]:
    overflow = chosen.queue.overflow
    if overflow is None:
        return chosen, None, None
    here, estimate = _wait(view, chosen.queue.id)
    if here is None or here <= overflow.expected_wait_over:
        return chosen, None, estimate
    target = ctx.table._entries.get(overflow.queue)
    refusal = _overflow_refusal(ctx, chosen, target)
    there, other = (None, None) if target is None else _wait(view, target.queue.id)
    if refusal is None and (there is None or there >= here):
        refusal = "not shorter"
    if refusal is not None or target is None or there is None:
        ctx.reasons.append(f"overflow {overflow.queue}: {refusal}")
        return chosen, None, estimate
    ctx.reasons.append(
        f"overflow {chosen.queue.id} -> {target.queue.id}: expected wait "
        f"{here:g} s > {overflow.expected_wait_over} s, there {there:g} s"
    )
    return target, chosen.queue.id, other


def _overflow_refusal(ctx: _Context, chosen: _QueueEntry, target: _QueueEntry | None) -> str | None:
    if target is None or not _covers(target, ctx.facts.required_skills):
        return "not qualified for this call"
    if _language_rank(target, ctx.language) > _language_rank(chosen, ctx.language):
        return f"not in language {ctx.language}"
    if not ctx.is_open(target):
        return "closed"
    return None


def explain_agents(
    decision: RouteDecision, view: RoutingView | None
) -> tuple[tuple[str, str], ...]:
    """The live status of each eligible agent (available, busy, paused, logged out), for the log.

    Separate from ``decide_route`` so the decision stays O(1) in the number of agents; the
    qualification reasons are already in ``decision.excluded``.
    """
    if view is None:
        return tuple((agent_id, "unknown") for agent_id, _ in decision.eligible)
    agents = view.agents
    return tuple(
        (agent_id, _live_status(agents.get(agent_id))) for agent_id, _ in decision.eligible
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


def parse_skill_list(text: str, known: set[str]) -> tuple[dict[str, int], list[str]]:
    """``FIRSTLINE_SKILLS`` as the IVR sets it: ``skill:level,skill:level``.

    The variable comes from the dialplan, so anything malformed or unknown is ignored (and
    reported) rather than trusted; a skill without a level needs level 1.
    """
    required: dict[str, int] = {}
    ignored: list[str] = []
    for item in text.split(",")[:_MAX_SKILL_ITEMS]:
        name, _, level = item.strip().partition(":")
        if not name:
            continue
        if name not in known or (level and not (level.isdigit() and 1 <= int(level) <= 5)):
            ignored.append(item.strip()[:40])
            continue
        required[name] = max(required.get(name, 0), int(level or 1))
    return required, ignored
