"""The caller's side of the escape: a waiting caller pressed the key to be called back.

`run_escape` talks to the caller over FastAGI: confirm the number to call back (the calling
number, or one typed on the keypad), optionally record the problem, then book. Booking
(`book`, given by the daemon) creates and commits the ticket and its callback; only then
are the dialplan variables set that make the dialplan read the ticket number back. So a
number is never read without a committed ticket, and anything that fails before leaves the
caller in the queue at their place. Typed input is bounded and validated; nothing the
caller types reaches SQL, a shell or a file name unparsed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from acd.numbers import normalise_number, spoken_digits

__all__ = ["Booking", "EscapeOutcome", "EscapeSession", "run_escape"]

_CONFIRM_MS = 5000
_ENTER_MS = 12000
_MAX_TYPED = 20  # digits: the longest E.164 number has 15, plus a national prefix
_ENTER_TRIES = 2


class EscapeSession(Protocol):
    """The FastAGI operations the dialogue uses (acd.agi.AgiSession fits)."""

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str: ...
    async def say_digits(self, digits: str, escape: str = "") -> object: ...
    async def stream_file(self, name: str, escape_digits: str = "") -> object: ...
    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> object: ...
    async def get_variable(self, name: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Booking:
    """What booking gave: the ticket read to the caller and whether it is a new one."""

    ticket_number: str
    callback_id: int
    created: bool


@dataclass(frozen=True, slots=True)
class EscapeOutcome:
    """How the escape ended; `status` is what the dialplan reads (FIRSTLINE_CALLBACK)."""

    status: Literal["booked", "cancelled", "failed"]
    number: str | None = None
    booking: Booking | None = None
    recording: str | None = None


Book = Callable[[str, str | None], Awaitable[Booking]]


async def run_escape(
    session: EscapeSession,
    *,
    caller_id: str,
    region: str,
    record_seconds: int,
    recording_base: str,
    book: Book,
) -> EscapeOutcome:
    """Ask, record, book (see the module doc). Exceptions from `book` propagate."""
    number = await _number_to_call(session, normalise_number(caller_id, region), region)
    if number is None:
        return EscapeOutcome("cancelled")
    recording = None
    if record_seconds > 0:
        recording = await _record(session, recording_base, record_seconds)
    booking = await book(number, recording)
    return EscapeOutcome("booked", number, booking, recording)


async def _number_to_call(session: EscapeSession, known: str | None, region: str) -> str | None:
    if known is not None:
        await session.stream_file("firstline/callback-number-is")
        await session.say_digits(spoken_digits(known, region))
        choice = await session.get_data("firstline/callback-confirm", _CONFIRM_MS, 1)
        # No key is a yes: the caller heard their own number and said nothing against it.
        if choice in ("", "1"):
            return known
    for _ in range(_ENTER_TRIES):
        typed = await session.get_data("firstline/callback-enter-number", _ENTER_MS, _MAX_TYPED)
        number = normalise_number(typed, region) if typed.isdigit() else None
        if number is not None:
            return number
        await session.stream_file("firstline/callback-invalid-number")
    return None


async def _record(session: EscapeSession, base: str, seconds: int) -> str | None:
    """Record the problem into `base` + '.wav' (a path the daemon made from safe parts)."""
    path = base
    await session.stream_file("firstline/callback-record")
    # Record(file.format,silence,maxduration,options): 3 s of silence ends it, '#' too;
    # 'q' no beep of its own (the prompt says "after the tone" and we play one).
    await session.stream_file("beep")
    # Asterisk answers only when the recording ends: allow for all of it.
    await session.exec("Record", f"{path}.wav", "3", str(seconds), "q", reply_timeout=seconds + 15)
    status = await session.get_variable("RECORD_STATUS")
    return f"{path}.wav" if status in ("SILENCE", "DTMF", "MAXDURATION", "HANGUP") else None
