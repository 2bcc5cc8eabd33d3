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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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
    "TransferDecision",
    "TransferTarget",
    "decide_route",
    "decide_transfer",
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


# Slot setters in field order, for ``_queued``.
_DECISION_SETTERS: tuple[Callable[[RouteDecision, object], None], ...] = tuple(
    RouteDecision.__dict__[f.name].__set__ for f in fields(RouteDecision)
)


def _queued(  # noqa: PLR0917 -- mirrors RouteDecision's positional fields
    chosen: _QueueEntry,
    priority: int,
    reasons: tuple[str, ...],
    preferred: str | None,
    overflowed_from: str | None,
    estimate: WaitEstimate | None,
) -> RouteDecision:
    """``RouteDecision(status="queued", ...)`` for ``chosen``, equal in every field.

    A frozen dataclass's ``__init__`` sets each of its 13 fields through ``object.__setattr__``,
    which cost half of a whole decision; the slot setters are the same store without the
    lookups. Unpacking fails loudly if a field is added without being set here.
    """
    (
        status,
        queue,
        priority_,
        max_penalty,
        min_penalty,
        max_wait,
        reasons_,
        preferred_agent,
        preferred_ring_seconds,
        overflowed_from_,
        expected_wait_,
        eligible,
        excluded,
    ) = _DECISION_SETTERS
    decision: RouteDecision = object.__new__(RouteDecision)
    status(decision, "queued")
    queue(decision, chosen.queue.id)
    priority_(decision, priority)
    max_penalty(decision, 0)
    min_penalty(decision, 0)
    max_wait(decision, chosen.queue.max_wait)
    reasons_(decision, reasons)
    preferred_agent(decision, preferred)
    preferred_ring_seconds(decision, DEFAULT_PREFERRED_RING_SECONDS if preferred else 0)
    overflowed_from_(decision, overflowed_from)
    expected_wait_(decision, estimate)
    eligible(decision, chosen.members)
    excluded(decision, chosen.excluded)
    return decision


# --- the per-config table ---------------------------------------------------------------------

_MEMO_SIZE = 1024  # (language, asked skills) plans or spoken languages kept; a desk uses few
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MINUTE = dt.timedelta(minutes=1)
_LAST_INSTANT = dt.timedelta(seconds=59, microseconds=999_999)  # of a minute, from its start
_PREFERRED_BOOST_REASON = f"+{PREFERRED_FALLBACK_BOOST} for a preferred agent's fallback"


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
    closed_reason: str  # the reasons this queue adds, built once rather than per call
    queued_reason: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """The qualified queues for one (language, asked skills), best first, and why.

    ``overflow`` holds, per entry, its overflow queue's entry and what rules it out whatever
    the moment and the view (not qualified, worse language), None when only hours and waits
    can still refuse it.
    """

    entries: tuple[_QueueEntry, ...]
    reason: str
    overflow: tuple[tuple[_QueueEntry | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class _Package:
    boost: int
    reason: str | None
    always: bool


@dataclass(slots=True)
class _MinuteMemo:
    """Sites' open states during one UTC minute (minutes since the epoch).

    Only states that hold for the whole minute are kept: opening hours are whole local
    minutes, so a site's state is constant over a UTC minute unless its zone's offset changes
    inside it or is not a whole number of minutes (such sites are recomputed every time).
    """

    minute: int
    states: dict[str, bool] = field(default_factory=dict)


class RoutingTable:
    """Everything about one ``Config`` that does not change between calls, indexed.

    Build it once per config (``RoutingTable(config)``) and pass it to ``decide_route``;
    building costs O(queues x agents), a decision then costs O(asked skills) once its
    (language, asked skills) plan is memoized, plus O(queues requiring them) the first time,
    plus the open state of the sites concerned once per minute. The config-derived indexes
    are immutable after construction; the memos are bounded and hold values of pure
    functions of (config, key), so sharing a table never changes a decision.
    """

    __slots__ = (
        "_agents",
        "_base_rank",
        "_base_reason",
        "_by_skill",
        "_entries",
        "_entry_plans",
        "_language_entry",
        "_languages",
        "_minute",
        "_packages",
        "_plans",
        "_ranks",
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
        priorities = config.sla.priorities
        self._ranks: dict[str, int] = {name: p.rank for name, p in priorities.items()}
        if _NORMAL_PRIORITY in priorities:
            self._base_rank: int = priorities[_NORMAL_PRIORITY].rank
        else:
            self._base_rank = min(p.rank for p in priorities.values())
        self._base_reason = f"priority {self._base_rank} from no open ticket"
        self._packages: dict[str, _Package] = {
            name: _Package(
                boost=p.priority_boost,
                reason=f"+{p.priority_boost} for package {name}" if p.priority_boost else None,
                always=p.coverage == "24x7",
            )
            for name, p in config.sla.packages.items()
        }
        # A call that asks nothing always gets one of these: build them now.
        self._entry_plans: dict[str, _Plan] = {
            language: _make_plan(self, language, {}) for language in config.hotline.languages
        }
        self._plans: dict[tuple[str, tuple[tuple[str, int], ...]], _Plan] = {}
        self._languages: dict[str, tuple[str, str | None]] = {}
        self._minute = _MinuteMemo(minute=-1)

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

    def _language(self, spoken: str) -> tuple[str, str | None]:
        found = self._languages.get(spoken)
        if found is not None and type(spoken) is str:
            return found
        found = _language_of(self.config, spoken)
        if type(spoken) is str:  # a str subclass could print otherwise in the note
            if len(self._languages) >= _MEMO_SIZE:
                self._languages.clear()
            self._languages[spoken] = found
        return found

    def _plan(self, language: str, required: Mapping[str, int]) -> _Plan:
        if not required:
            return self._entry_plans[language]
        asked = tuple(required.items())
        for skill, level in asked:
            # Equal keys must print alike in the reason: True == 1 but reads "True".
            if type(skill) is not str or type(level) is not int:
                return _make_plan(self, language, required)
        key = (language, asked)
        plan = self._plans.get(key)
        if plan is None:
            plan = _make_plan(self, language, required)
            if len(self._plans) >= _MEMO_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def queue_open(self, queue_id: str, now: dt.datetime) -> bool:
        """Whether a site of one of the queue's members is open at `now` (False: unknown)."""
        entry = self._entries.get(queue_id)
        if entry is None:
            return False
        return _queue_open(self, entry, _aware(now), self._open_now(_aware(now)))

    @property
    def base_priority(self) -> tuple[str, int]:
        """The SLA priority (name, rank) of a call that nothing raises ("normal")."""
        if _NORMAL_PRIORITY in self._ranks:
            return _NORMAL_PRIORITY, self._ranks[_NORMAL_PRIORITY]
        name = min(self._ranks, key=self._ranks.__getitem__)
        return name, self._ranks[name]

    def _open_now(self, now: dt.datetime) -> _MinuteMemo:
        # Exact integer minutes: a float timestamp could round an instant into the next one.
        since = now - _EPOCH
        minute = since.days * 1440 + since.seconds // 60
        memo = self._minute
        if memo.minute != minute:
            memo = _MinuteMemo(minute)
            self._minute = memo
        return memo

    def _site_open(self, site_id: str, now: dt.datetime, memo: _MinuteMemo) -> bool:
        hours = self._sites.get(site_id)
        if hours is None:
            memo.states[site_id] = False
            return False
        state = _open(hours, now)
        if _steady_minute(hours.zone, memo.minute):
            memo.states[site_id] = state
        return state


def _steady_minute(zone: zoneinfo.ZoneInfo, minute: int) -> bool:
    """Whether local time in ``zone`` runs as whole minutes through this UTC minute.

    Zone transitions happen at whole seconds and never twice within a minute, so equal
    offsets at the minute's first and last instant mean one offset throughout.
    """
    start = _EPOCH + dt.timedelta(minutes=minute)
    offset = start.astimezone(zone).utcoffset()
    last = (start + _LAST_INSTANT).astimezone(zone).utcoffset()
    return offset is not None and offset == last and offset % _MINUTE == dt.timedelta(0)


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
        closed_reason=f"{queue.id}: no site of a member is open",
        queued_reason=(
            f"queue {queue.id}: {len(members)} eligible, max penalty 0 widening to {final}"
        ),
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
    zone = now.tzinfo
    if zone is not dt.UTC and (zone is None or now.utcoffset() is None):
        raise ValueError("now must be timezone-aware")
    return now


# --- the decision ---------------------------------------------------------------------------


def _language_of(config: Config, spoken: str) -> tuple[str, str | None]:
    code = spoken.replace("-", "_").split("_", 1)[0].lower()
    if code in config.hotline.languages:
        return code, None
    default = config.hotline.languages[0]
    return default, f"language {spoken!r} not offered; {default} applies"


def _priority(table: RoutingTable, facts: CallFacts, reasons: list[str]) -> tuple[int, bool]:
    """The call's priority, and whether its SLA package covers every hour (24x7)."""
    rank = table._base_rank
    source: TicketFacts | None = None
    if facts.open_tickets:
        ranks = table._ranks
        for ticket in facts.open_tickets:
            level = ranks.get(ticket.priority)
            if level is None:
                reasons.append(f"ticket {ticket.number}: unknown priority {ticket.priority!r}")
            elif level > rank:
                # A ticket only raises: the call may be about something new.
                rank, source = level, ticket
    if source is None:
        reasons.append(table._base_reason)
    else:
        reasons.append(f"priority {rank} from ticket {source.number} ({source.priority})")
    customer = facts.customer
    if customer is None or customer.sla_package is None:
        return rank, False
    package = table._packages.get(customer.sla_package)
    if package is None:
        reasons.append(f"unknown SLA package {customer.sla_package!r}: no boost")
        return rank, False
    if package.reason is not None:
        rank += package.boost
        reasons.append(package.reason)
    return rank, package.always


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


def _make_plan(table: RoutingTable, language: str, required: Mapping[str, int]) -> _Plan:
    entries: tuple[_QueueEntry, ...]
    if not required:
        default = table._entries[table.config.hotline.default_queue]
        entry = table._language_entry.get(language) or default
        reason = f"no skills asked: entry queue {entry.queue.id} for language {language}"
        entries = (entry,) if entry is default else (entry, default)
    else:
        pools = [table._by_skill.get(skill, ()) for skill in required]
        smallest = min(pools, key=len)
        qualified = [e for e in smallest if _covers(e, required)]
        qualified.sort(key=lambda e: (_language_rank(e, language), e.index))
        asked = ", ".join(f"{s}>={lvl}" for s, lvl in sorted(required.items()))
        if qualified:
            reason = (
                f"qualified for {asked}: {', '.join(e.queue.id for e in qualified)}"
                f" (language {language} first)"
            )
        else:
            reason = f"no queue admits only agents with {asked}"
        entries = tuple(qualified)
    overflow = tuple(_overflow_target(table, e, language, required) for e in entries)
    return _Plan(entries=entries, reason=reason, overflow=overflow)


def _overflow_target(
    table: RoutingTable, entry: _QueueEntry, language: str, required: Mapping[str, int]
) -> tuple[_QueueEntry | None, str | None]:
    overflow = entry.queue.overflow
    if overflow is None:
        return None, None
    target = table._entries.get(overflow.queue)
    if target is None or not _covers(target, required):
        return target, "not qualified for this call"
    if _language_rank(target, language) > _language_rank(entry, language):
        return target, f"not in language {language}"
    return target, None


def _queue_open(
    table: RoutingTable, entry: _QueueEntry, now: dt.datetime, memo: _MinuteMemo | None
) -> bool:
    """Whether a site of a member is open; ``memo`` None means 24x7 coverage (always open)."""
    if memo is None:
        return True
    states = memo.states
    for site_id in entry.sites:
        state = states.get(site_id)
        if state is None:
            state = table._site_open(site_id, now, memo)
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
    for skill, level in required.items():  # noqa: SIM110 -- no generator on the hot path
        if not skills.get(skill, 0) >= level:
            return False
    return True


def _preferred(
    table: RoutingTable,
    facts: CallFacts,
    view: RoutingView | None,
    reasons: list[str],
) -> str | None:
    """The agent to ring first: available, qualified, owner of the most urgent ticket first."""
    customer = facts.customer
    manager = None if customer is None else customer.account_manager
    if not facts.open_tickets and manager is None:
        return None
    owned = [t for t in facts.open_tickets if t.owner]
    if len(owned) > 1:
        ranks = table._ranks
        owned.sort(key=lambda t: -ranks.get(t.priority, -1))  # stable: most urgent first
    people = [(t.owner, f"owner of ticket {t.number}") for t in owned if t.owner]
    if manager is not None:
        people.append((manager, "account manager"))
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
    for ticket in facts.open_tickets:
        if ticket.owner is not None and ticket.owner in agents:
            return True
    customer = facts.customer
    return customer is not None and customer.account_manager in agents


def _live_status(state: AgentAvailability | None) -> str:
    if state is None or not state.logged_in:
        return "logged out"
    if state.paused:
        return "paused"
    return "available" if state.available else "busy"


def _without_queue(status: RouteStatus, priority: int, reasons: list[str]) -> RouteDecision:
    """A decision that joins no queue (closed or unroutable): the IVR offers a callback."""
    return RouteDecision(
        status=status,
        queue=None,
        priority=priority,
        max_penalty=0,
        min_penalty=0,
        max_wait=0,
        reasons=tuple(reasons),
    )


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
    language, note = table._language(facts.language)
    if note is not None:
        reasons.append(note)
    priority, always = _priority(table, facts, reasons)
    if _has_preferred_person(table, facts):
        # Whatever happens next (rung, unavailable, closed): the priority the call has in a
        # queue, and its callback, does not depend on the moment.
        priority += PREFERRED_FALLBACK_BOOST
        reasons.append(_PREFERRED_BOOST_REASON)

    plan = table._plan(language, facts.required_skills)
    reasons.append(plan.reason)
    if not plan.entries:
        reasons.append("unroutable: callback offered")
        return _without_queue("unroutable", priority, reasons)

    # 24x7 coverage: every queue counts as open and no clock is read (memo None).
    memo = None if always else table._open_now(now)
    chosen: _QueueEntry | None = None
    position = 0
    for position, entry in enumerate(plan.entries):  # noqa: B007 -- position is used below
        if _queue_open(table, entry, now, memo):
            chosen = entry
            break
        reasons.append(entry.closed_reason)
    if chosen is None:
        reasons.append("closed: callback offered")
        return _without_queue("closed", priority, reasons)
    if always:
        customer = facts.customer
        reasons.append(f"24x7 coverage ({customer.sla_package if customer else '?'})")

    overflowed_from: str | None = None
    estimate: WaitEstimate | None = None
    if view is not None:
        overflow = plan.overflow[position]
        chosen, overflowed_from, estimate = _overflow(
            table, chosen, overflow, view, now=now, memo=memo, reasons=reasons
        )

    preferred = _preferred(table, facts, view, reasons)
    reasons.append(chosen.queued_reason)
    return _queued(
        chosen,
        priority,
        tuple(reasons),
        preferred,
        overflowed_from,
        estimate,
    )


def _overflow(
    table: RoutingTable,
    chosen: _QueueEntry,
    planned: tuple[_QueueEntry | None, str | None],
    view: RoutingView,
    *,
    now: dt.datetime,
    memo: _MinuteMemo | None,
    reasons: list[str],
) -> tuple[_QueueEntry, str | None, WaitEstimate | None]:
    overflow = chosen.queue.overflow
    here, estimate = _wait(view, chosen.queue.id)
    # The estimate goes with every decision: the welcome tells it, or skips the callback
    # offer when an agent is free, in queues without an overflow too.
    if overflow is None or here is None or here <= overflow.expected_wait_over:
        return chosen, None, estimate
    target, refusal = planned
    if refusal is None and target is not None and not _queue_open(table, target, now, memo):
        refusal = "closed"
    there, other = (None, None) if target is None else _wait(view, target.queue.id)
    if refusal is None and (there is None or there >= here):
        refusal = "not shorter"
    if refusal is not None or target is None or there is None:
        reasons.append(f"overflow {overflow.queue}: {refusal}")
        return chosen, None, estimate
    reasons.append(
        f"overflow {chosen.queue.id} -> {target.queue.id}: expected wait "
        f"{here:g} s > {overflow.expected_wait_over} s, there {there:g} s"
    )
    return target, chosen.queue.id, other


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


TransferTarget = Literal["second-level", "supervisor"]


@dataclass(frozen=True, slots=True)
class TransferDecision:
    """Where an agent's hand-on sends the caller: a queue, and maybe a supervisor first."""

    queue: str
    preferred_agent: str | None
    reasons: tuple[str, ...]


def decide_transfer(
    table: RoutingTable,
    target: TransferTarget,
    required_skills: Mapping[str, int],
    view: RoutingView | None,
) -> TransferDecision:
    """The queue (and supervisor) for a call an agent hands on with a transfer code.

    ``second-level``: the first second-level queue (config order) qualified for the call's
    required skills, else the first second-level queue at all, else the default queue.
    ``supervisor``: a supervisor shown available in ``view`` rings first (config order),
    then the call waits in the same queue a second-level hand-on would use. The caller keeps
    the priority the dialplan already holds: a transfer never sends anyone to the back.
    """
    config = table.config
    second = [e for e in table._entries.values() if e.queue.level == "second"]
    covering = [e for e in second if _covers(e, required_skills)]
    if covering:
        queue, reason = covering[0].queue.id, "second level qualified for the call's skills"
    elif second:
        queue, reason = second[0].queue.id, "no second-level queue covers the call's skills"
    else:
        queue, reason = config.hotline.default_queue, "no second-level queue: default queue"
    reasons = [f"transfer to {target}", f"{queue}: {reason}"]
    preferred = None
    if target == "supervisor":
        agents = view.agents if view is not None else {}
        for agent in config.agents:
            state = agents.get(agent.id)
            if agent.supervisor and state is not None and state.available:
                preferred = agent.id
                reasons.append(f"supervisor {agent.id} available: rings first")
                break
        else:
            reasons.append("no supervisor available: the queue takes the call")
    return TransferDecision(queue=queue, preferred_agent=preferred, reasons=tuple(reasons))
