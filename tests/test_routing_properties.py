"""Properties of the routing core over random desks, agents, calls and live states.

The configs are built as pydantic models in memory (no YAML), so every one is valid by the
model's own checks; references between objects are kept consistent by construction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from acd.config import Agent, Config, Queue, SecretRef, Site
from acd.config.model import (
    AmiLink,
    Daemon,
    EscalationStep,
    Hotline,
    Overflow,
    Skill,
    Sla,
    SlaPackage,
    SlaPriority,
)
from acd.routing import (
    PREFERRED_FALLBACK_BOOST,
    AgentAvailability,
    CallFacts,
    CustomerFacts,
    QueueLoad,
    RouteDecision,
    RoutingTable,
    RoutingView,
    TicketFacts,
    decide_route,
    queue_memberships,
)

_SECRET = SecretRef(env="FIRSTLINE_TEST_SECRET")
_PRODUCT_SKILLS = [f"p{i}" for i in range(6)]
_SKILLS = [*_PRODUCT_SKILLS, "lang-en", "lang-fr"]
_PRIORITIES = {"urgent": 40, "high": 30, "normal": 20, "low": 10}
_PACKAGES = {"basic": (0, "business_hours"), "premium": (10, "business_hours"), "gold": (5, "24x7")}
_ZONES = ["Europe/Berlin", "America/Toronto", "Asia/Tokyo", "UTC"]
_LEVEL = st.integers(min_value=1, max_value=5)


@st.composite
def _queue(draw: st.DrawFn, index: int, queue_ids: list[str]) -> Queue:
    skills = draw(st.dictionaries(st.sampled_from(_SKILLS), _LEVEL, min_size=1, max_size=3))
    top = max(skills.values())
    steps: list[EscalationStep] = []
    if top > 1 and draw(st.booleans()):
        lowest = draw(st.integers(min_value=1, max_value=top - 1))
        if lowest < top - 1 and draw(st.booleans()):
            steps.append(EscalationStep(after=20, min_level=top - 1))
        steps.append(EscalationStep(after=60, min_level=lowest))
    overflow = None
    others = [q for q in queue_ids if q != queue_ids[index]]
    if others and draw(st.booleans()):
        overflow = Overflow(
            queue=draw(st.sampled_from(others)),
            expected_wait_over=draw(st.integers(min_value=1, max_value=300)),
        )
    return Queue(
        id=queue_ids[index],
        name=queue_ids[index],
        level=draw(st.sampled_from(["first", "second"])),
        skills=skills,
        escalation=steps,
        overflow=overflow,
    )


@st.composite
def _site(draw: st.DrawFn, site_id: str) -> Site:
    hours = draw(
        st.sampled_from(
            [
                {"mon-sun": ["00:00-24:00"]},
                {"mon-sun": ["00:00-24:00"]},
                {"mon-sun": ["06:00-23:00"]},
                {"mon-fri": ["08:00-18:00"]},
                {"mon-fri": ["08:00-12:30", "13:00-18:00"], "sat": ["09:00-13:00"]},
                {},
            ]
        )
    )
    holidays = draw(st.lists(st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)), max_size=3))
    return Site(id=site_id, timezone=draw(st.sampled_from(_ZONES)), hours=hours, holidays=holidays)


@st.composite
def _agent_skills(draw: st.DrawFn, queues: list[Queue]) -> dict[str, int]:
    skills = draw(st.dictionaries(st.sampled_from(_SKILLS), _LEVEL, max_size=3))
    # Most agents can do most of some queue's work, at a level around its requirement.
    for queue in draw(st.lists(st.sampled_from(queues), min_size=1, max_size=2)):
        for skill, level in queue.skills.items():
            skills[skill] = min(5, max(1, level + draw(st.integers(-2, 1))))
    return skills


@st.composite
def desks(draw: st.DrawFn) -> Config:
    n_queues = draw(st.integers(min_value=1, max_value=5))
    queue_ids = [f"q{i}" for i in range(n_queues)]
    queues = [draw(_queue(i, queue_ids)) for i in range(n_queues)]
    sites = [draw(_site(f"site{i}")) for i in range(draw(st.integers(1, 3)))]
    n_agents = draw(st.integers(min_value=0, max_value=12) | st.integers(4, 12))
    agents = [
        Agent(
            id=f"a{i}",
            name=f"Agent {i}",
            extension=f"{200 + i}",
            secret=_SECRET,
            skills=draw(_agent_skills(queues)),
            site=draw(st.sampled_from([s.id for s in sites])),
        )
        for i in range(n_agents)
    ]
    return Config(
        hotline=Hotline(
            numbers=["100"],
            languages=draw(st.sampled_from([["en", "fr"], ["fr", "en"], ["en"]])),
            default_queue=draw(st.sampled_from(queue_ids)),
        ),
        daemon=Daemon(ami=AmiLink(secret=_SECRET)),
        skills=[Skill(id=s, name=s) for s in _SKILLS],
        queues=queues,
        agents=agents,
        sites=sites,
        sla=Sla(
            priorities={
                k: SlaPriority(rank=r, respond_within=60, resolve_within=3600)
                for k, r in _PRIORITIES.items()
            },
            packages={
                k: SlaPackage(priority_boost=b, coverage=c) for k, (b, c) in _PACKAGES.items()
            },
        ),
    )


_PEOPLE = st.one_of(st.none(), st.sampled_from([f"a{i}" for i in range(8)] + ["a13"]))


@st.composite
def _asked_skills(draw: st.DrawFn, config: Config) -> dict[str, int]:
    if draw(st.integers(0, 7)) == 7:
        return draw(st.dictionaries(st.sampled_from([*_SKILLS, "unknown"]), _LEVEL, max_size=3))
    # What some queue can serve, at or below its floor: usually routable.
    queue = draw(st.sampled_from(config.queues))
    final = queue.final_max_penalty
    asked = draw(st.lists(st.sampled_from(sorted(queue.skills)), max_size=2, unique=True))
    return {s: max(1, queue.skills[s] - final - draw(st.integers(0, 1))) for s in asked}


def _calls(config: Config) -> st.SearchStrategy[CallFacts]:
    return st.builds(
        CallFacts,
        uniqueid=st.text(max_size=12),
        caller_number=st.text(max_size=12),
        dialed=st.just("100"),
        language=st.sampled_from(["en", "fr", "de", "fr_CA", ""]),
        required_skills=_asked_skills(config),
        customer=st.one_of(
            st.none(),
            st.builds(
                CustomerFacts,
                sla_package=st.one_of(st.none(), st.sampled_from([*_PACKAGES, "nope"])),
                account_manager=_PEOPLE,
            ),
        ),
        open_tickets=st.lists(
            st.builds(
                TicketFacts,
                number=st.text(min_size=1, max_size=6),
                priority=st.sampled_from([*_PRIORITIES, "bogus"]),
                owner=_PEOPLE,
            ),
            max_size=3,
        ).map(tuple),
    )


_AVAILABILITY = st.sampled_from(
    [
        AgentAvailability(logged_in=True, available=True),
        AgentAvailability(logged_in=True, available=False),
        AgentAvailability(logged_in=True, available=False, paused=True),
        AgentAvailability(logged_in=False, available=False),
    ]
)
_LOAD = st.builds(
    QueueLoad,
    waiting=st.integers(0, 50),
    agents_available=st.integers(0, 3),
    agents_busy_remaining=st.lists(
        st.floats(0, 600, allow_nan=False, allow_infinity=False), max_size=4
    ).map(tuple),
    mean_handle_time=st.one_of(st.none(), st.floats(1, 600, allow_nan=False)),
    samples=st.integers(0, 40),
)
_VIEWS = st.one_of(
    st.none(),
    st.builds(
        RoutingView,
        agents=st.fixed_dictionaries({}, optional={f"a{i}": _AVAILABILITY for i in range(12)}),
        queues=st.dictionaries(st.sampled_from([f"q{i}" for i in range(5)]), _LOAD),
    ),
)
_DESK_AND_CALL = desks().flatmap(lambda c: st.tuples(st.just(c), _calls(c)))
_NOWS = st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31), timezones=st.just(dt.UTC))


def _qualified(agent: Agent, required: dict[str, int] | object) -> bool:
    assert isinstance(required, dict)
    return all(agent.skills.get(s, 0) >= level for s, level in required.items())


@settings(max_examples=300, deadline=None)
@given(config_facts=_DESK_AND_CALL, view=_VIEWS, now=_NOWS)
def test_the_target_never_includes_an_unqualified_agent(
    config_facts: tuple[Config, CallFacts], view: RoutingView | None, now: dt.datetime
) -> None:
    config, facts = config_facts
    decision = decide_route(config, facts, now, view)
    required = dict(facts.required_skills)
    if decision.queue is None:
        assert decision.status in {"closed", "unroutable"}
        assert decision.eligible == ()
        assert decision.preferred_agent is None
        return
    # Everyone Asterisk could ever ring from that queue (its members at any escalation step).
    pool = [a for a in config.agents if decision.queue in queue_memberships(config, a)]
    assert all(_qualified(a, required) for a in pool)
    assert {a.id for a in pool} == {agent_id for agent_id, _ in decision.eligible}
    everyone = [a for a, _ in decision.eligible] + [a for a, _ in decision.excluded]
    assert sorted(everyone) == sorted(a.id for a in config.agents)
    penalties = [p for _, p in decision.eligible]
    assert penalties == sorted(penalties)  # better-skilled first
    assert decision.max_penalty == 0
    assert decision.min_penalty == 0
    if decision.preferred_agent is not None:
        assert view is not None
        assert view.agents[decision.preferred_agent].available
        assert _qualified(config.agent(decision.preferred_agent), required)
        assert decision.preferred_ring_seconds > 0


@settings(max_examples=200, deadline=None)
@given(config_facts=_DESK_AND_CALL, view=_VIEWS, now=_NOWS)
def test_the_decision_is_deterministic(
    config_facts: tuple[Config, CallFacts], view: RoutingView | None, now: dt.datetime
) -> None:
    config, facts = config_facts
    first = decide_route(config, facts, now, view)
    again = decide_route(config, replace(facts), now, view, table=RoutingTable(config))
    assert first == again


def _expected_priority(config: Config, facts: CallFacts) -> int:
    ranks = [_PRIORITIES[t.priority] for t in facts.open_tickets if t.priority in _PRIORITIES]
    rank = max([_PRIORITIES["normal"], *ranks])
    customer = facts.customer
    if customer is not None and customer.sla_package in _PACKAGES:
        rank += _PACKAGES[customer.sla_package][0]
    agents = {a.id for a in config.agents}
    people = [t.owner for t in facts.open_tickets]
    if customer is not None:
        people.append(customer.account_manager)
    if any(p in agents for p in people):
        rank += PREFERRED_FALLBACK_BOOST
    return rank


@settings(max_examples=200, deadline=None)
@given(
    config_facts=_DESK_AND_CALL,
    view=_VIEWS,
    now=_NOWS,
    later=_NOWS,
    other_id=st.text(max_size=12),
    other_number=st.text(max_size=12),
    extra=st.builds(TicketFacts, number=st.just("X"), priority=st.sampled_from(list(_PRIORITIES))),
)
def test_priority_and_fifo_order_hold(
    config_facts: tuple[Config, CallFacts],
    view: RoutingView | None,
    now: dt.datetime,
    later: dt.datetime,
    other_id: str,
    other_number: str,
    extra: TicketFacts,
) -> None:
    config, facts = config_facts
    decision = decide_route(config, facts, now, view)
    assert decision.priority == _expected_priority(config, facts)
    # FIFO within a priority is app_queue's: two callers with the same facts get the same
    # queue and priority whoever they are and whenever they call, so arrival order decides.
    twin = replace(facts, uniqueid=other_id, caller_number=other_number)
    assert _placement(decide_route(config, twin, now, view)) == _placement(decision)
    assert decide_route(config, facts, later, view).priority == decision.priority
    # One more open ticket never lowers a caller's priority.
    more = replace(facts, open_tickets=(*facts.open_tickets, extra))
    assert decide_route(config, more, now, view).priority >= decision.priority


def _placement(decision: RouteDecision) -> tuple[str | None, int, str | None]:
    return decision.queue, decision.priority, decision.preferred_agent
