"""The ticket lifecycle of the support desk, as one transition table held as data.

Pure data plus one check function: no database, no clock, no configuration. The ticket
store calls `check_transition` before it writes a status change; nothing else may decide
whether a ticket can move from one status to another.
"""

# Theory of operation
# -------------------
# Everything that decides whether a ticket may change its status lives in this module, in
# the dictionary `TRANSITIONS` (status -> the statuses it may move to). A target missing
# from a status' set is an illegal transition and `check_transition` raises
# `IllegalTransition`, naming the targets that would have been allowed.
#
# New tickets start in first_level (the single entry point) unless their creator says
# otherwise (an auto-informer may open a ticket directly at second level). Why each edge:
#
# - first_level: the single entry point. It solves the request at once (-> done), hands it
#   to second level (-> second_level), or puts it on hold for the customer (-> waiting).
#   It never sends a ticket to development directly: second level qualifies that.
# - second_level: works in the background. It may forward to development (-> dev), wait
#   for the customer (-> waiting), solve it (-> done), or hand it back to first level
#   when the request was misrouted and first level can close it (-> first_level).
# - waiting: the customer answered or the hold ended; the ticket goes back to the level
#   that will continue it (-> first_level / second_level), or the customer confirms the
#   problem is gone (-> done).
# - dev: development either fixes it (-> done) or returns it to second level with a
#   question or a workaround (-> second_level). Development does not talk to customers,
#   so dev never goes to waiting or first_level directly.
# - done: final for the work, but a customer may call again about the same problem: the
#   ticket is reopened at first level (-> first_level), which keeps its number and history
#   and lets the "reopened soon after closing" KPI be measured.
#
# A "transition" to the current status is refused too: it would write a history row that
# records no change.

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

__all__ = [
    "OPEN_STATUSES",
    "TRANSITIONS",
    "IllegalTransition",
    "TicketStatus",
    "allowed_targets",
    "check_transition",
]


class TicketStatus(enum.StrEnum):
    """Where a ticket stands (the desk's own status names)."""

    FIRST_LEVEL = "first_level"
    SECOND_LEVEL = "second_level"
    WAITING = "waiting"
    DEV = "dev"
    DONE = "done"


_S = TicketStatus

TRANSITIONS: Final[Mapping[TicketStatus, frozenset[TicketStatus]]] = {
    _S.FIRST_LEVEL: frozenset({_S.SECOND_LEVEL, _S.WAITING, _S.DONE}),
    _S.SECOND_LEVEL: frozenset({_S.DEV, _S.WAITING, _S.DONE, _S.FIRST_LEVEL}),
    _S.WAITING: frozenset({_S.FIRST_LEVEL, _S.SECOND_LEVEL, _S.DONE}),
    _S.DEV: frozenset({_S.SECOND_LEVEL, _S.DONE}),
    _S.DONE: frozenset({_S.FIRST_LEVEL}),
}

OPEN_STATUSES: Final[frozenset[TicketStatus]] = frozenset(TicketStatus) - {_S.DONE}


class IllegalTransition(ValueError):  # noqa: N818 - reads as the event it reports
    """A status change the desk's lifecycle does not allow."""

    def __init__(self, current: TicketStatus, target: TicketStatus) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(TRANSITIONS[current]))
        super().__init__(
            f"a ticket in status '{current}' cannot move to '{target}' "
            f"(allowed from '{current}': {allowed})"
        )


def allowed_targets(current: TicketStatus | str) -> frozenset[TicketStatus]:
    """The statuses a ticket in `current` may move to (ValueError for an unknown status)."""
    return TRANSITIONS[TicketStatus(current)]


def check_transition(current: TicketStatus | str, target: TicketStatus | str) -> None:
    """Return if `current` -> `target` is allowed; raise `IllegalTransition` if not.

    Unknown status names raise ValueError naming the valid ones.
    """
    source, dest = _status(current), _status(target)
    if dest not in TRANSITIONS[source]:
        raise IllegalTransition(source, dest)


def _status(value: TicketStatus | str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in TicketStatus)
        raise ValueError(f"unknown ticket status '{value}' (valid: {valid})") from None
