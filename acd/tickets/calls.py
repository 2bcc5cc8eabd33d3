"""Call records: one row per hotline call, what the IVR captured and how the call ended.

The daemon writes a record when it routes a call (`arrived`: caller, language, skills,
answers, category, customer) and completes it when the live state says the queue visit
ended (`finished`: queue, times, agent, outcome). Both are upserts keyed by the caller
channel's Uniqueid, so a call routed again (a transfer) or finished after a daemon restart
still has one record. Reports read these rows. This module never reads the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from acd.tickets.engine import Writes, reader
from acd.tickets.schema import CallRow, CustomerRow
from acd.tickets.store import InvalidValue, check_rating, is_e164

__all__ = ["CallRecord", "CallStore"]

_UNIQUEID_MAX = 64
_ANSWER_MAX = 64  # a typed customer or contract number, never free text


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the store keeps it."""

    uniqueid: str
    caller_number: str | None
    arrived_at: dt.datetime
    language: str | None
    priority: int | None
    skills: Mapping[str, int]
    answers: Mapping[str, str]
    category: str | None
    customer_id: str | None
    queue: str | None
    queue_joined_at: dt.datetime | None
    answered_at: dt.datetime | None
    left_at: dt.datetime | None
    agent: str | None
    outcome: str | None
    recording_path: str | None
    rating: int | None


class CallStore:
    """Call records on the ticket store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._write = Writes(engine)
        self._read = async_sessionmaker(reader(engine), expire_on_commit=False)

    async def arrived(
        self,
        uniqueid: str,
        *,
        now: dt.datetime,
        caller_number: str | None,
        language: str | None = None,
        priority: int | None = None,
        skills: Mapping[str, int] | None = None,
        answers: Mapping[str, str] | None = None,
        category: str | None = None,
        customer_id: str | None = None,
        recording_path: str | None = None,
    ) -> None:
        """Record (or update, when routed again) what is known when the call is routed."""
        _check_uniqueid(uniqueid)
        if caller_number is not None and not is_e164(caller_number):
            raise InvalidValue(f"'{caller_number}' is not an E.164 number")
        for key, value in (answers or {}).items():
            if len(key) > _ANSWER_MAX or len(value) > _ANSWER_MAX:
                raise InvalidValue(f"answer '{key[:_ANSWER_MAX]}' is too long")
        async with self._write.begin() as session:
            row = await session.get(CallRow, uniqueid)
            if row is None:
                row = CallRow(uniqueid=uniqueid, arrived_at=now)
                session.add(row)
            if customer_id is not None and await session.get(CustomerRow, customer_id) is None:
                customer_id = None  # deleted since the lookup: keep the call, drop the link
            row.caller_number = caller_number
            row.language = language
            row.priority = priority
            row.skills = dict(skills) if skills else None
            row.answers = dict(answers) if answers else None
            row.category = category
            row.customer_id = customer_id
            if recording_path is not None:
                row.recording_path = recording_path

    async def finished(
        self,
        uniqueid: str,
        *,
        now: dt.datetime,
        queue: str | None,
        outcome: str,
        joined_at: dt.datetime | None,
        answered_at: dt.datetime | None,
        agent: str | None,
        recording_path: str | None = None,
    ) -> None:
        """Complete the record with how its (last) queue visit ended."""
        _check_uniqueid(uniqueid)
        async with self._write.begin() as session:
            row = await session.get(CallRow, uniqueid)
            if row is None:
                # Routed by the dialplan's fallback or before a restart: still one record.
                row = CallRow(uniqueid=uniqueid, arrived_at=joined_at or now)
                session.add(row)
            row.queue = queue
            row.outcome = outcome
            row.queue_joined_at = joined_at
            row.answered_at = answered_at
            row.left_at = now
            row.agent = agent
            if recording_path is not None:
                row.recording_path = recording_path

    async def link_recording(self, uniqueid: str, path: str, *, now: dt.datetime) -> None:
        """The recorded conversation of this call."""
        _check_uniqueid(uniqueid)
        async with self._write.begin() as session:
            row = await session.get(CallRow, uniqueid)
            if row is None:
                row = CallRow(uniqueid=uniqueid, arrived_at=now)
                session.add(row)
            row.recording_path = path

    async def rate(self, uniqueid: str, rating: int) -> None:
        """The caller's rating (1 to 5) of the help they got on this call."""
        _check_uniqueid(uniqueid)
        check_rating(rating)
        async with self._write.begin() as session:
            row = await session.get(CallRow, uniqueid)
            if row is not None:
                row.rating = rating

    async def get(self, uniqueid: str) -> CallRecord | None:
        """The record of this call, if any."""
        async with self._read() as session:
            row = await session.get(CallRow, uniqueid)
            return None if row is None else _record(row)


def _check_uniqueid(uniqueid: str) -> None:
    if not uniqueid or len(uniqueid) > _UNIQUEID_MAX:
        raise InvalidValue(f"a call's uniqueid must have 1 to {_UNIQUEID_MAX} characters")


def _record(row: CallRow) -> CallRecord:
    return CallRecord(
        uniqueid=row.uniqueid,
        caller_number=row.caller_number,
        arrived_at=row.arrived_at,
        language=row.language,
        priority=row.priority,
        skills=dict(row.skills or {}),
        answers=dict(row.answers or {}),
        category=row.category,
        customer_id=row.customer_id,
        queue=row.queue,
        queue_joined_at=row.queue_joined_at,
        answered_at=row.answered_at,
        left_at=row.left_at,
        agent=row.agent,
        outcome=row.outcome,
        recording_path=row.recording_path,
        rating=row.rating,
    )
