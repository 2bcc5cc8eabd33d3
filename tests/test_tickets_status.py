"""The ticket lifecycle table: what it allows, and that it refuses everything else."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd.tickets.status import (
    OPEN_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    TicketStatus,
    allowed_targets,
    check_transition,
)

_ALL_PAIRS = list(itertools.product(TicketStatus, TicketStatus))
_LEGAL = [(a, b) for a, b in _ALL_PAIRS if b in TRANSITIONS[a]]
_ILLEGAL = [(a, b) for a, b in _ALL_PAIRS if b not in TRANSITIONS[a]]


def test_the_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(TicketStatus)
    assert set(TicketStatus) - {TicketStatus.DONE} == OPEN_STATUSES


def test_the_desk_lifecycle() -> None:
    s = TicketStatus
    assert allowed_targets("first_level") == {s.SECOND_LEVEL, s.WAITING, s.DONE}
    assert allowed_targets("second_level") == {s.DEV, s.WAITING, s.DONE, s.FIRST_LEVEL}
    assert allowed_targets("waiting") == {s.FIRST_LEVEL, s.SECOND_LEVEL, s.DONE}
    assert allowed_targets("dev") == {s.SECOND_LEVEL, s.DONE}
    assert allowed_targets("done") == {s.FIRST_LEVEL}


@pytest.mark.parametrize(("current", "target"), _LEGAL)
def test_every_legal_transition_passes(current: TicketStatus, target: TicketStatus) -> None:
    check_transition(current, target)
    check_transition(current.value, target.value)


@pytest.mark.parametrize(("current", "target"), _ILLEGAL)
def test_every_illegal_transition_is_refused(current: TicketStatus, target: TicketStatus) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert info.value.current == current
    assert info.value.target == target
    message = str(info.value)
    assert f"'{current}' cannot move to '{target}'" in message
    for allowed in TRANSITIONS[current]:
        assert allowed.value in message


def test_illegal_transition_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="allowed from 'dev': done, second_level"):
        check_transition("dev", "first_level")


@pytest.mark.parametrize(("current", "target"), [("open", "done"), ("done", "closed")])
def test_unknown_status_names_are_refused(current: str, target: str) -> None:
    with pytest.raises(ValueError, match="unknown ticket status") as info:
        check_transition(current, target)
    assert not isinstance(info.value, IllegalTransition)
    assert "first_level, second_level, waiting, dev, done" in str(info.value)


def test_every_status_can_reach_done_and_back() -> None:
    # No dead ends: from anywhere a ticket can be closed, and a closed one reopened.
    for status in TicketStatus:
        reached = {status}
        frontier = [status]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in reached:
                    reached.add(nxt)
                    frontier.append(nxt)
        assert reached == set(TicketStatus), status


@given(st.lists(st.sampled_from(TicketStatus), max_size=30))
def test_random_walks_pass_exactly_on_table_edges(targets: list[TicketStatus]) -> None:
    current = TicketStatus.FIRST_LEVEL
    for target in targets:
        if target in TRANSITIONS[current]:
            check_transition(current, target)
            current = target
        else:
            with pytest.raises(IllegalTransition):
                check_transition(current, target)
