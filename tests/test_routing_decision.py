"""The routing decision on the example desk: queues, languages, hours, priority, owner, overflow."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest

from acd.config import Config, load_config
from acd.expected_wait import WaitEstimate
from acd.routing import (
    DEFAULT_PREFERRED_RING_SECONDS,
    PREFERRED_FALLBACK_BOOST,
    AgentAvailability,
    CallFacts,
    CustomerFacts,
    QueueLoad,
    RoutingTable,
    RoutingView,
    TicketFacts,
    decide_route,
    explain_agents,
    is_open,
    queue_memberships,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "desk.yaml"
MONDAY_11_BERLIN = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
SUNDAY_NOON = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
IDLE = AgentAvailability(logged_in=True, available=True)
BUSY = AgentAvailability(logged_in=True, available=False)
PAUSED = AgentAvailability(logged_in=True, available=False, paused=True)
OUT = AgentAvailability(logged_in=False, available=False)


@pytest.fixture(scope="module")
def desk() -> Config:
    return load_config(EXAMPLE)


@pytest.fixture(scope="module")
def table(desk: Config) -> RoutingTable:
    return RoutingTable(desk)


def _call(
    language: str = "en",
    skills: dict[str, int] | None = None,
    customer: CustomerFacts | None = None,
    tickets: tuple[TicketFacts, ...] = (),
) -> CallFacts:
    return CallFacts(
        uniqueid="1700000000.1",
        caller_number="+4930555",
        dialed="100",
        language=language,
        required_skills=skills or {},
        customer=customer,
        open_tickets=tickets,
    )


# --- queue choice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "queue"),
    [("en", "first-en"), ("fr", "first-fr"), ("fr_CA", "first-fr"), ("de", "first-en")],
)
def test_silent_ivr_takes_the_entry_queue_of_the_callers_language(
    desk: Config, table: RoutingTable, language: str, queue: str
) -> None:
    decision = decide_route(desk, _call(language), MONDAY_11_BERLIN, table=table)
    assert decision.status == "queued"
    assert decision.queue == queue
    assert (decision.max_penalty, decision.min_penalty) == (0, 0)
    assert decision.max_wait == desk.queue(queue).max_wait


def test_a_language_not_offered_is_said_in_the_reasons(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(desk, _call("de"), MONDAY_11_BERLIN, table=table)
    assert any("'de' not offered" in r for r in decision.reasons)


def test_required_skill_picks_the_queue_that_admits_only_qualified_agents(
    desk: Config, table: RoutingTable
) -> None:
    decision = decide_route(desk, _call(skills={"printing": 3}), MONDAY_11_BERLIN, table=table)
    assert decision.queue == "second-printing"
    # Better-skilled first: david (printing 4) at penalty 0, alice (printing 3) after.
    assert decision.eligible == (("david", 0), ("alice", 1))
    assert dict(decision.excluded)["bob"] == "lacks skill printing"


def test_a_level_beyond_every_queues_floor_is_unroutable_not_sent_to_the_unqualified(
    desk: Config, table: RoutingTable
) -> None:
    # second-printing escalates down to printing 3; nobody at 4 is guaranteed: no queue.
    decision = decide_route(desk, _call(skills={"printing": 4}), MONDAY_11_BERLIN, table=table)
    assert decision.status == "unroutable"
    assert decision.queue is None
    assert not decision.closed
    assert any("no queue admits only agents with printing>=4" in r for r in decision.reasons)


def test_unknown_skill_is_unroutable(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(desk, _call(skills={"plumbing": 1}), MONDAY_11_BERLIN, table=table)
    assert decision.status == "unroutable"


def test_language_ranks_the_qualified_queues(desk: Config, table: RoutingTable) -> None:
    # general>=1: first-en (floor 1) and first-overflow (floor 1) qualify, first-fr (floor 2)
    # too. English callers get first-en (language first, then config order); French first-fr.
    english = decide_route(desk, _call("en", {"general": 1}), MONDAY_11_BERLIN, table=table)
    french = decide_route(desk, _call("fr", {"general": 1}), MONDAY_11_BERLIN, table=table)
    assert english.queue == "first-en"
    assert french.queue == "first-fr"


def test_another_language_is_the_last_resort(desk: Config, table: RoutingTable) -> None:
    # general>=2 only first-fr guarantees (first-en escalates down to general 1).
    decision = decide_route(desk, _call("en", {"general": 2}), MONDAY_11_BERLIN, table=table)
    assert decision.queue == "first-fr"


def test_excluded_reason_names_the_level_beyond_the_final_escalation(desk: Config) -> None:
    gina = desk.agent("alice").model_copy(
        update={"id": "gina", "extension": "299", "skills": {"printing": 2}}
    )
    config = desk.model_copy(update={"agents": [*desk.agents, gina]})
    decision = decide_route(config, _call(skills={"printing": 3}), MONDAY_11_BERLIN)
    assert dict(decision.excluded)["gina"] == "printing level 2 < 3 (beyond final escalation)"
    assert "second-printing" not in queue_memberships(config, gina)


def test_every_agent_is_either_eligible_or_excluded(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, table=table)
    eligible = [a for a, _ in decision.eligible]
    excluded = [a for a, _ in decision.excluded]
    assert sorted(eligible + excluded) == sorted(a.id for a in desk.agents)
    assert excluded == ["david"]


# --- opening hours ----------------------------------------------------------------------


def test_closed_everywhere_means_no_queue_and_a_callback(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(desk, _call(), SUNDAY_NOON, table=table)
    assert decision.closed
    assert decision.status == "closed"
    assert decision.queue is None
    assert decision.reasons[-1] == "closed: callback offered"


def test_24x7_package_is_never_closed_out(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(
        desk, _call(customer=CustomerFacts("enterprise")), SUNDAY_NOON, table=table
    )
    assert decision.queue == "first-en"
    assert decision.priority == 20 + 10


@pytest.mark.parametrize(
    ("now", "language", "queue"),
    [
        # 07:30 in Berlin, 01:30 in Montreal: nobody.
        (dt.datetime(2026, 11, 23, 6, 30, tzinfo=dt.UTC), "en", None),
        # 08:30 in Berlin.
        (dt.datetime(2026, 11, 23, 7, 30, tzinfo=dt.UTC), "en", "first-en"),
        # 20:30 in Berlin, 14:30 in Montreal: follow-the-sun.
        (dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC), "fr", "first-fr"),
        # Saturday 11:00 in Berlin: alice (Berlin) is a member of first-fr.
        (dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC), "fr", "first-fr"),
        # Christmas is a holiday at both sites.
        (dt.datetime(2025, 12, 25, 15, 0, tzinfo=dt.UTC), "en", None),
    ],
)
def test_hours_follow_the_sun(
    desk: Config, table: RoutingTable, now: dt.datetime, language: str, queue: str | None
) -> None:
    assert decide_route(desk, _call(language), now, table=table).queue == queue


def test_second_level_queue_open_only_when_a_members_site_is(
    desk: Config, table: RoutingTable
) -> None:
    # second-licensing: only eva (Berlin). 19:30 UTC is 20:30 in Berlin.
    evening = dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC)
    decision = decide_route(desk, _call(skills={"licensing": 4}), evening, table=table)
    assert decision.closed
    assert "second-licensing: no site of a member is open" in decision.reasons


def test_is_open_uses_local_time_and_local_holidays(desk: Config) -> None:
    berlin = next(s for s in desk.sites if s.id == "berlin")
    # 2025-12-24 23:30 UTC is already the 25th (a holiday) in Berlin.
    assert not is_open(berlin, dt.datetime(2025, 12, 24, 23, 30, tzinfo=dt.UTC))
    # Lunch break 12:30-13:00 local; 12:45 Berlin = 11:45 UTC in November.
    assert not is_open(berlin, dt.datetime(2026, 11, 23, 11, 45, tzinfo=dt.UTC))
    assert is_open(berlin, dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC))
    # Summer time: 08:00 Berlin is 06:00 UTC.
    assert is_open(berlin, dt.datetime(2026, 7, 6, 6, 0, tzinfo=dt.UTC))
    assert not is_open(berlin, dt.datetime(2026, 7, 6, 5, 59, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(berlin, dt.datetime(2026, 7, 6, 6, 0))


def test_a_span_to_24_00_covers_the_last_instant(desk: Config) -> None:
    site = desk.sites[0].model_copy(update={"hours": {"mon": ["00:00-24:00"]}, "holidays": []})
    last = dt.datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    assert is_open(site, last)
    assert not is_open(site, last + dt.timedelta(microseconds=1))


# --- priority ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tickets", "package", "priority"),
    [
        ((), None, 20),
        ((TicketFacts("T1", "high"),), None, 30),
        ((TicketFacts("T1", "low"),), None, 20),  # a ticket never lowers the priority
        ((TicketFacts("T1", "low"), TicketFacts("T2", "urgent")), None, 40),
        ((TicketFacts("T1", "no-such"),), None, 20),
        ((), "premium", 30),
        ((TicketFacts("T1", "urgent"),), "premium", 50),
        ((), "no-such-package", 20),
    ],
)
def test_priority_from_tickets_and_package(
    desk: Config,
    table: RoutingTable,
    tickets: tuple[TicketFacts, ...],
    package: str | None,
    priority: int,
) -> None:
    customer = CustomerFacts(package) if package else None
    decision = decide_route(
        desk, _call(customer=customer, tickets=tickets), MONDAY_11_BERLIN, table=table
    )
    assert decision.priority == priority


def test_unknown_names_are_reported(desk: Config, table: RoutingTable) -> None:
    decision = decide_route(
        desk,
        _call(customer=CustomerFacts("gold"), tickets=(TicketFacts("T9", "blocker"),)),
        MONDAY_11_BERLIN,
        table=table,
    )
    assert "ticket T9: unknown priority 'blocker'" in decision.reasons
    assert "unknown SLA package 'gold': no boost" in decision.reasons


# --- preferred agent --------------------------------------------------------------------


def test_available_ticket_owner_is_rung_first_then_the_queue_with_raised_priority(
    desk: Config, table: RoutingTable
) -> None:
    view = RoutingView(agents={"bob": IDLE})
    facts = _call(tickets=(TicketFacts("T1", "high", owner="bob"),))
    decision = decide_route(desk, facts, MONDAY_11_BERLIN, view, table=table)
    assert decision.preferred_agent == "bob"
    assert decision.preferred_ring_seconds == DEFAULT_PREFERRED_RING_SECONDS
    assert decision.queue == "first-en"
    assert decision.priority == 30 + PREFERRED_FALLBACK_BOOST


@pytest.mark.parametrize("owner_state", [BUSY, PAUSED, OUT, None])
def test_unavailable_owner_gives_way_to_the_account_manager(
    desk: Config, table: RoutingTable, owner_state: AgentAvailability | None
) -> None:
    agents = {"chloe": IDLE} | ({"bob": owner_state} if owner_state else {})
    facts = _call(
        customer=CustomerFacts("basic", account_manager="chloe"),
        tickets=(TicketFacts("T1", "normal", owner="bob"),),
    )
    decision = decide_route(desk, facts, MONDAY_11_BERLIN, RoutingView(agents=agents), table=table)
    assert decision.preferred_agent == "chloe"
    assert decision.priority == 20 + PREFERRED_FALLBACK_BOOST


def test_the_highest_priority_tickets_owner_comes_first(desk: Config, table: RoutingTable) -> None:
    view = RoutingView(agents={"bob": IDLE, "chloe": IDLE})
    tickets = (TicketFacts("T1", "low", owner="bob"), TicketFacts("T2", "urgent", owner="chloe"))
    decision = decide_route(desk, _call(tickets=tickets), MONDAY_11_BERLIN, view, table=table)
    assert decision.preferred_agent == "chloe"


def test_an_owner_lacking_the_required_skill_is_never_rung(
    desk: Config, table: RoutingTable
) -> None:
    view = RoutingView(agents={"bob": IDLE})
    facts = _call(skills={"printing": 3}, tickets=(TicketFacts("T1", "high", owner="bob"),))
    decision = decide_route(desk, facts, MONDAY_11_BERLIN, view, table=table)
    assert decision.preferred_agent is None
    assert decision.preferred_ring_seconds == 0
    assert "owner of ticket T1 bob: lacks a required skill level" in decision.reasons


def test_without_live_view_nobody_is_rung_but_the_boost_stays(
    desk: Config, table: RoutingTable
) -> None:
    facts = _call(customer=CustomerFacts(account_manager="alice"))
    decision = decide_route(desk, facts, MONDAY_11_BERLIN, table=table)
    assert decision.preferred_agent is None
    assert decision.priority == 20 + PREFERRED_FALLBACK_BOOST
    assert "account manager alice: availability unknown, not rung" in decision.reasons


def test_an_unknown_manager_is_no_preferred_person(desk: Config, table: RoutingTable) -> None:
    facts = _call(customer=CustomerFacts(account_manager="zoe"))
    decision = decide_route(desk, facts, MONDAY_11_BERLIN, RoutingView(), table=table)
    assert decision.priority == 20
    assert "account manager zoe: not a configured agent" in decision.reasons


def test_closed_desk_rings_nobody(desk: Config, table: RoutingTable) -> None:
    view = RoutingView(agents={"bob": IDLE})
    facts = _call(tickets=(TicketFacts("T1", "high", owner="bob"),))
    decision = decide_route(desk, facts, SUNDAY_NOON, view, table=table)
    assert decision.closed
    assert decision.preferred_agent is None


# --- overflow ---------------------------------------------------------------------------

_LONG = QueueLoad(
    waiting=10, agents_busy_remaining=(100.0, 200.0), mean_handle_time=180.0, samples=50
)
_IDLE_AGENT = QueueLoad(waiting=0, agents_available=1)


def test_overflow_when_the_wait_is_too_long_and_the_other_queue_shorter(
    desk: Config, table: RoutingTable
) -> None:
    view = RoutingView(queues={"first-en": _LONG, "first-overflow": _IDLE_AGENT})
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, view, table=table)
    assert decision.queue == "first-overflow"
    assert decision.overflowed_from == "first-en"
    assert decision.expected_wait == WaitEstimate(
        0.0, reliable=True, reason="a qualified agent is idle"
    )
    assert decision.max_wait == desk.queue("first-overflow").max_wait
    assert ("david", "lacks skill general") in decision.excluded


def test_no_overflow_when_the_other_queue_is_not_shorter(desk: Config, table: RoutingTable) -> None:
    view = RoutingView(queues={"first-en": _LONG, "first-overflow": _LONG})
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, view, table=table)
    assert decision.queue == "first-en"
    assert decision.overflowed_from is None
    assert "overflow first-overflow: not shorter" in decision.reasons
    assert decision.expected_wait is not None
    assert decision.expected_wait.seconds == pytest.approx(1000.0)


def test_no_overflow_under_the_threshold(desk: Config, table: RoutingTable) -> None:
    short = QueueLoad(waiting=0, agents_busy_remaining=(100.0,), mean_handle_time=180.0, samples=5)
    view = RoutingView(queues={"first-en": short, "first-overflow": _IDLE_AGENT})
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, view, table=table)
    assert decision.queue == "first-en"
    assert decision.expected_wait is not None
    assert decision.expected_wait.seconds == 100.0


def test_a_queue_without_overflow_still_tells_its_expected_wait(
    desk: Config, table: RoutingTable
) -> None:
    # The welcome skips the callback offer when an agent is free: it needs the estimate.
    assert desk.queue("second-printing").overflow is None
    view = RoutingView(queues={"second-printing": _IDLE_AGENT})
    decision = decide_route(
        desk, _call(skills={"printing": 3}), MONDAY_11_BERLIN, view, table=table
    )
    assert decision.queue == "second-printing"
    assert decision.expected_wait == WaitEstimate(
        0.0, reliable=True, reason="a qualified agent is idle"
    )
    view = RoutingView(queues={"second-printing": _LONG})
    decision = decide_route(
        desk, _call(skills={"printing": 3}), MONDAY_11_BERLIN, view, table=table
    )
    assert decision.expected_wait is not None
    assert decision.expected_wait.seconds == pytest.approx(1000.0)


def test_nobody_logged_in_counts_as_too_long(desk: Config, table: RoutingTable) -> None:
    view = RoutingView(queues={"first-overflow": _IDLE_AGENT})
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, view, table=table)
    assert decision.overflowed_from == "first-en"


def test_overflow_never_to_a_queue_below_the_calls_level(desk: Config) -> None:
    # Without its escalation first-en guarantees general 3; first-overflow only general 1.
    strict = desk.queue("first-en").model_copy(update={"escalation": []})
    queues = [strict if q.id == "first-en" else q for q in desk.queues]
    config = desk.model_copy(update={"queues": queues})
    view = RoutingView(queues={"first-en": _LONG, "first-overflow": _IDLE_AGENT})
    decision = decide_route(config, _call(skills={"general": 2}), MONDAY_11_BERLIN, view)
    assert decision.queue == "first-en"
    assert "overflow first-overflow: not qualified for this call" in decision.reasons


def test_overflow_to_a_closed_queue_is_refused(desk: Config) -> None:
    # Only Berlin agents (bob, eva) have licensing: the overflow closes with Berlin.
    berlin_only = desk.queue("first-overflow").model_copy(
        update={"skills": {"general": 1, "lang-en": 1, "licensing": 1}}
    )
    queues = [berlin_only if q.id == "first-overflow" else q for q in desk.queues]
    config = desk.model_copy(update={"queues": queues})
    view = RoutingView(queues={"first-en": _LONG, "first-overflow": _IDLE_AGENT})
    evening = dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC)  # Montreal open only
    decision = decide_route(config, _call(), evening, view)
    assert decision.queue == "first-en"
    assert "overflow first-overflow: closed" in decision.reasons
    # The same at 11:00 in Berlin overflows.
    assert decide_route(config, _call(), MONDAY_11_BERLIN, view).queue == "first-overflow"


# --- table, determinism, explanation ----------------------------------------------------


def test_decision_with_and_without_prebuilt_table_is_the_same(
    desk: Config, table: RoutingTable
) -> None:
    facts = _call("fr", tickets=(TicketFacts("T1", "urgent", owner="chloe"),))
    view = RoutingView(agents={"chloe": BUSY})
    assert decide_route(desk, facts, MONDAY_11_BERLIN, view) == decide_route(
        desk, facts, MONDAY_11_BERLIN, view, table=table
    )


def test_table_of_another_config_is_refused(desk: Config, table: RoutingTable) -> None:
    other = desk.model_copy()
    with pytest.raises(ValueError, match="another config"):
        decide_route(other, _call(), MONDAY_11_BERLIN, table=table)


def test_explain_gives_the_live_status_of_each_eligible_agent(
    desk: Config, table: RoutingTable
) -> None:
    view = RoutingView(agents={"alice": IDLE, "bob": BUSY, "chloe": PAUSED})
    decision = decide_route(desk, _call(), MONDAY_11_BERLIN, view, table=table)
    assert dict(explain_agents(decision, view)) == {
        "alice": "available",
        "bob": "busy",
        "chloe": "paused",
        "eva": "logged out",
        "fabien": "logged out",
    }
    assert {s for _, s in explain_agents(decision, None)} == {"unknown"}


def test_live_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="available agent"):
        AgentAvailability(logged_in=False, available=True)
    with pytest.raises(ValueError, match="available agent"):
        AgentAvailability(logged_in=True, available=True, paused=True)
    with pytest.raises(ValueError, match="waiting"):
        QueueLoad(waiting=-1)
    with pytest.raises(ValueError, match="mean_handle_time"):
        QueueLoad(waiting=0, mean_handle_time=0.0)


def test_members_of_the_table_match_queue_memberships(desk: Config, table: RoutingTable) -> None:
    for queue in desk.queues:
        expected = {a.id: queue_memberships(desk, a).get(queue.id) for a in desk.agents}
        assert dict(table.members(queue.id)) == {k: v for k, v in expected.items() if v is not None}
