"""Monitoring alerts ("auto-informer") in the store: one high-priority ticket per dedupe key.

A monitoring system tells the desk that something is broken at a customer before anybody
calls. `AlertStore.open_ticket` opens a ticket for the alert, once per dedupe key: the same
alert again (monitoring systems repeat alerts until resolved) returns the ticket that
already exists and only counts the repeat. `active_alert_ticket` tells the daemon that a
customer's caller can be told "we are already working on it".

`Alert` is the validated alert, whatever transport brought it (`acd.mqtt.parse_alert` reads
it from MQTT). `alert_priority` picks the ticket's priority from the SLA. Like the rest of
this package, nothing here reads the clock or the configuration files.
"""

# Why a unique constraint on the dedupe key, and not "look first, then insert": two alerts
# with the same key arriving at once (two daemons on one PostgreSQL, or one daemon handling
# a burst) would both see "no ticket yet" and both open one. With the constraint the second
# insert fails, its whole transaction (ticket, number, history, e-mail) rolls back, and the
# retry finds the first one's ticket. SQLite's BEGIN IMMEDIATE serialises the two anyway.
#
# Why the alert row lives here and not in schema.py: this module owns the table; it is
# declared on the same `Base`, so `acd.tickets.schema.metadata` (which the migration test
# compares with the migrated database) includes it as soon as `acd.tickets` is imported.

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from acd.tickets.engine import Writes, reader
from acd.tickets.schema import Base, TicketRow, UtcDateTime
from acd.tickets.status import TicketStatus
from acd.tickets.store import InvalidValue, insert_ticket, validate_new_ticket

if TYPE_CHECKING:
    from acd.config.model import Sla

__all__ = [
    "ALERT_ACTOR",
    "CUSTOMER_ID_MAX",
    "DEDUPE_KEY_MAX",
    "SEVERITIES",
    "SUMMARY_MAX",
    "Alert",
    "AlertRecord",
    "AlertRow",
    "AlertStore",
    "AlertTicket",
    "alert_priority",
]

# What monitoring systems commonly send; a new one needs a migration (CHECK constraint).
SEVERITIES: Final = ("critical", "major", "minor", "warning", "info")
CUSTOMER_ID_MAX: Final = 64  # as customers.id
SUMMARY_MAX: Final = 500
DEDUPE_KEY_MAX: Final = 200
# The history's actor for everything the alert path writes.
ALERT_ACTOR: Final = "auto-informer"
# Keys are identifiers of the monitoring system (fingerprints, "host/check" paths): no
# spaces or control characters, so they can be logged and shown as they are.
_DEDUPE_KEY: Final = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:/@#+=-]{{0,{DEDUPE_KEY_MAX - 1}}}$")
_SUMMARY_SPACING: Final = frozenset("\n\t")


@dataclass(frozen=True, slots=True)
class Alert:
    """A monitoring alert about one customer; the constructor refuses invalid fields.

    - `customer_id`: 1 to 64 printable characters (the customer directory's ids), no
      whitespace at either end;
    - `severity`: one of `SEVERITIES` (lower case);
    - `summary`: 1 to 500 characters, printable apart from newlines and tabs, no
      whitespace at either end;
    - `dedupe_key`: 1 to 200 characters of letters, digits and `. _ : / @ # + = -`,
      starting with a letter or digit.

    Invalid fields raise `InvalidValue`; its message quotes at most a short prefix of the
    offending value, so it can be logged even when the value came from outside.
    """

    customer_id: str
    severity: str
    summary: str
    dedupe_key: str

    def __post_init__(self) -> None:
        _check_text("customer", self.customer_id, CUSTOMER_ID_MAX, spacing=frozenset())
        if self.severity not in SEVERITIES:
            raise InvalidValue(
                f"severity {_quote(self.severity)} is not one of {', '.join(SEVERITIES)}"
            )
        _check_text("summary", self.summary, SUMMARY_MAX, spacing=_SUMMARY_SPACING)
        if not isinstance(self.dedupe_key, str) or not _DEDUPE_KEY.match(self.dedupe_key):
            raise InvalidValue(
                f"dedupe_key {_quote(self.dedupe_key)} must be 1 to {DEDUPE_KEY_MAX} letters, "
                "digits or . _ : / @ # + = - (starting with a letter or digit)"
            )


class AlertTicket(NamedTuple):
    """The ticket an alert leads to, and whether this alert opened it."""

    number: str
    created: bool


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """What the store keeps of an alert: the first one, and how often it came again."""

    dedupe_key: str
    ticket_number: str
    customer_id: str
    severity: str
    summary: str
    received_at: dt.datetime
    last_received_at: dt.datetime
    repeats: int


class AlertRow(Base):
    """One alert (by dedupe key) and the ticket it opened."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(f"severity IN ({', '.join(repr(s) for s in SEVERITIES)})", name="severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(DEDUPE_KEY_MAX), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[str] = mapped_column(String(CUSTOMER_ID_MAX), index=True)
    severity: Mapped[str] = mapped_column(String(10))
    summary: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    repeats: Mapped[int] = mapped_column(Integer)


def alert_priority(sla: Sla) -> tuple[str, int]:
    """The priority (name, rank) of an alert's ticket: the SLA's highest rank.

    An alert means something is broken at a customer now, often before anyone called:
    the desk's most urgent work, whatever the severity (which the ticket keeps).
    """
    name, priority = max(sla.priorities.items(), key=lambda item: item[1].rank)
    return name, priority.rank


class AlertStore:
    """Alerts and their tickets on the ticket store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._write = Writes(engine)
        self._read = async_sessionmaker(reader(engine), expire_on_commit=False)

    async def open_ticket(
        self,
        alert: Alert,
        *,
        now: dt.datetime,
        priority: str,
        priority_rank: int,
        deadline: dt.datetime,
        queue: str | None = None,
        skills: Mapping[str, int] | None = None,
    ) -> AlertTicket:
        """Open a first-level ticket for the alert, once per `alert.dedupe_key`.

        The ticket belongs to `alert.customer_id` (`CustomerNotFound` if the directory has
        no such customer), describes the alert's summary, and its 'created' history entry
        is by 'auto-informer' with the severity, key and summary. If the key already has a
        ticket (open or done), that ticket is returned with `created` False and the repeat
        is counted; nothing else changes.
        """
        validate_new_ticket(now=now, deadline=deadline, actor=ALERT_ACTOR, priority=priority)
        for attempt in range(2):
            try:
                async with self._write.begin() as session:
                    existing = (
                        await session.execute(
                            select(AlertRow, TicketRow.number)
                            .join(TicketRow, TicketRow.id == AlertRow.ticket_id)
                            .where(AlertRow.dedupe_key == alert.dedupe_key)
                            .with_for_update(of=AlertRow)
                        )
                    ).one_or_none()
                    if existing is not None:
                        row, number = existing
                        row.repeats += 1
                        row.last_received_at = max(row.last_received_at, now)
                        return AlertTicket(number, created=False)
                    ticket = await insert_ticket(
                        session,
                        now=now,
                        actor=ALERT_ACTOR,
                        priority=priority,
                        priority_rank=priority_rank,
                        deadline=deadline,
                        status=TicketStatus.FIRST_LEVEL,
                        queue=queue,
                        skills=skills,
                        caller_number=None,
                        customer_id=alert.customer_id,
                        owner=None,
                        category=None,
                        description=alert.summary,
                        recording_path=None,
                        reason=f"{alert.severity} alert {alert.dedupe_key}: {alert.summary}",
                    )
                    session.add(
                        AlertRow(
                            dedupe_key=alert.dedupe_key,
                            ticket_id=ticket.id,
                            customer_id=alert.customer_id,
                            severity=alert.severity,
                            summary=alert.summary,
                            received_at=now,
                            last_received_at=now,
                            repeats=0,
                        )
                    )
                    await session.flush()
                    return AlertTicket(ticket.number, created=True)
            except IntegrityError:
                # A concurrent alert with the same key won: the retry returns its ticket.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def active_alert_ticket(self, customer_id: str) -> str | None:
        """The number of the customer's newest alert ticket that is not done, if any."""
        async with self._read() as session:
            number: str | None = await session.scalar(
                select(TicketRow.number)
                .join(AlertRow, AlertRow.ticket_id == TicketRow.id)
                .where(
                    AlertRow.customer_id == customer_id,
                    TicketRow.status != TicketStatus.DONE.value,
                )
                .order_by(AlertRow.received_at.desc(), AlertRow.id.desc())
                .limit(1)
            )
            return number

    async def get(self, dedupe_key: str) -> AlertRecord | None:
        """The alert with this dedupe key, if the store has it."""
        async with self._read() as session:
            found = (
                await session.execute(
                    select(AlertRow, TicketRow.number)
                    .join(TicketRow, TicketRow.id == AlertRow.ticket_id)
                    .where(AlertRow.dedupe_key == dedupe_key)
                )
            ).one_or_none()
            if found is None:
                return None
            row, number = found
            return AlertRecord(
                dedupe_key=row.dedupe_key,
                ticket_number=number,
                customer_id=row.customer_id,
                severity=row.severity,
                summary=row.summary,
                received_at=row.received_at,
                last_received_at=row.last_received_at,
                repeats=row.repeats,
            )


def _check_text(field: str, value: object, limit: int, *, spacing: frozenset[str]) -> None:
    if not isinstance(value, str):
        raise InvalidValue(f"{field} must be text (got {type(value).__name__})")
    if not value or len(value) > limit:
        raise InvalidValue(f"{field} must have 1 to {limit} characters (got {len(value)})")
    if value != value.strip():
        raise InvalidValue(f"{field} {_quote(value)} must not start or end with whitespace")
    bad = next((c for c in value if not c.isprintable() and c not in spacing), None)
    if bad is not None:
        raise InvalidValue(f"{field} contains the unprintable character U+{ord(bad):04X}")


def _quote(value: object, limit: int = 40) -> str:
    """A short, log-safe rendering of a value that may come from outside."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
