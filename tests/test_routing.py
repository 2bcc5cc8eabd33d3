"""The pure routing core: deterministic, aware of time zones, never a lacking agent."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd.config import Config, load_config
from acd.routing import (
    AgentAvailability,
    CallFacts,
    RoutingTable,
    RoutingView,
    decide_route,
    decide_transfer,
    parse_skill_list,
    queue_memberships,
)
from tests.live.harness import LIVE_CONFIG

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def config() -> Config:
    os.environ.setdefault("FIRSTLINE_TEST_SECRET", "s")
    return load_config(LIVE_CONFIG)


def _facts(**overrides: str) -> CallFacts:
    fields = {"uniqueid": "1.1", "caller_number": "4930555", "dialed": "100", "language": "en"}
    fields.update(overrides)
    return CallFacts(**fields)


def test_hotline_call_goes_to_the_default_queue(config: Config) -> None:
    decision = decide_route(config, _facts(), NOW)
    assert decision.queue == "first-level"
    assert decision.max_penalty == 0
    assert decision.max_wait == config.queue("first-level").max_wait
    assert decision.reasons


def test_naive_time_is_refused(config: Config) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_route(config, _facts(), dt.datetime(2026, 11, 23, 10, 0))


@given(
    caller=st.text(max_size=200),
    dialed=st.text(max_size=30),
    language=st.text(max_size=5),
)
def test_decision_is_deterministic_for_any_caller_facts(
    caller: str, dialed: str, language: str
) -> None:
    os.environ.setdefault("FIRSTLINE_TEST_SECRET", "s")
    config = load_config(LIVE_CONFIG)
    facts = _facts(caller_number=caller, dialed=dialed, language=language)
    assert decide_route(config, facts, NOW) == decide_route(config, facts, NOW)


def test_memberships_only_where_every_required_skill_is_present(config: Config) -> None:
    alice = config.agent("alice")  # general 4, printing 2
    bob = config.agent("bob")  # printing 5 only
    assert queue_memberships(config, alice) == {"first-level": 0}
    # bob lacks 'general': never a member of first-level, whatever the escalation.
    assert queue_memberships(config, bob) == {"second-printing": 0}


def test_skill_list_from_the_dialplan_is_bounded_and_checked() -> None:
    known = {"general", "printing"}
    assert parse_skill_list("printing:4, general", known) == ({"printing": 4, "general": 1}, [])
    required, ignored = parse_skill_list('printing:9,"; DROP TABLE,general:3,cad:2', known)
    assert required == {"general": 3}
    assert ignored == ["printing:9", '"; DROP TABLE', "cad:2"]
    assert parse_skill_list("", known) == ({}, [])
    required, ignored = parse_skill_list("general:1," * 500, known)
    assert required == {"general": 1}


@given(st.text(max_size=300))
def test_any_skill_text_parses_without_error(text: str) -> None:
    required, _ignored = parse_skill_list(text, {"general", "printing"})
    assert set(required) <= {"general", "printing"}
    assert all(1 <= level <= 5 for level in required.values())


def test_transfer_to_second_level_and_supervisor() -> None:
    desk = load_config(Path(__file__).parent.parent / "examples" / "desk.yaml")
    table = RoutingTable(desk)
    licensing = decide_transfer(table, "second-level", {"licensing": 4}, None)
    assert licensing.queue == "second-licensing"
    assert licensing.preferred_agent is None
    unknown = decide_transfer(table, "second-level", {"general": 5}, None)
    assert unknown.queue == "second-printing"  # the first second-level queue
    assert "no second-level queue covers" in " ".join(unknown.reasons)

    eva_free = RoutingView(agents={"eva": AgentAvailability(logged_in=True, available=True)})
    assert decide_transfer(table, "supervisor", {}, eva_free).preferred_agent == "eva"
    eva_busy = RoutingView(agents={"eva": AgentAvailability(logged_in=True, available=False)})
    busy = decide_transfer(table, "supervisor", {}, eva_busy)
    assert busy.preferred_agent is None
    assert "no supervisor available" in " ".join(busy.reasons)
