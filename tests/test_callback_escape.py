"""The caller's side of a callback (callback.escape) with a scripted session, no PBX.

The fake session records every AGI operation with its arguments and answers GET DATA from
a script, so the tests can say exactly what the caller heard, what they were asked, and
that nothing they control (their caller id, the keys they pressed) reached a command or
the booking unless it was a checked phone number. One test at the end runs hostile text
through the real `AgiSession` against a fake Asterisk socket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Coroutine
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from acd.agi import AgiProtocolError, AgiServer, AgiSession
from acd.numbers import normalise_number, spoken_digits
from callback.escape import Booking, EscapeOutcome, run_escape
from tests.test_agi_codec import _asterisk_parse_args
from tests.test_agi_server import FakeAsterisk

E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")
BOOKING = Booking(ticket_number="T-0042", callback_id=42, created=True)
BASE = "/var/spool/asterisk/monitor/firstline-callback-1700000000_1"

HOSTILE_CALLER_IDS = [
    "",
    "   ",
    "anonymous",
    "Anonymous",
    "<unknown>",
    '"Evil" <1234>',
    '"Evil" <+493012345678>',
    '"+493012345678"',
    "<+493012345678>",
    '030123456"\nEXEC System "rm -rf /"',
    "0301234567\r\nHANGUP",
    "030'123456",
    "1" * 200,
    "; DROP TABLE tickets; --",
    "٣٣٣",
    "٠٣٠١٢٣٤٥٦٧",  # Arabic-Indic digits of a plausible Berlin number
    "\uff10\uff13\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17",  # full-width digits
    "030123456\x00",
    "sip:+493012345678@evil.example",
]


class ScriptedSession:
    """An `EscapeSession` that records each operation and answers GET DATA from a script."""

    def __init__(self, *keys: str, record_status: str | None = "SILENCE") -> None:
        self.keys = list(keys)
        self.record_status = record_status
        self.log: list[tuple[str, ...]] = []

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        self.log.append(("get_data", prompt, str(timeout_ms), str(max_digits)))
        if not self.keys:
            raise AssertionError(f"the dialogue asked more than scripted: {prompt}")
        return self.keys.pop(0)

    async def say_digits(self, digits: str, escape: str = "") -> object:
        self.log.append(("say_digits", digits, escape))
        return None

    async def stream_file(self, name: str, escape_digits: str = "") -> object:
        self.log.append(("stream_file", name, escape_digits))
        return None

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> object:
        self.log.append(("exec", app, *args))
        return None

    async def get_variable(self, name: str) -> str | None:
        self.log.append(("get_variable", name))
        return self.record_status if name == "RECORD_STATUS" else None

    def prompts(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] in ("get_data", "stream_file")]

    def arguments(self) -> list[str]:
        return [arg for entry in self.log for arg in entry[1:]]


class Booker:
    """The daemon's `book`: records its arguments and what the session had done by then."""

    def __init__(self, session: ScriptedSession, error: Exception | None = None) -> None:
        self.session = session
        self.error = error
        self.calls: list[tuple[str, str | None, int]] = []

    async def __call__(self, number: str, recording: str | None) -> Booking:
        self.calls.append((number, recording, len(self.session.log)))
        if self.error is not None:
            raise self.error
        return BOOKING


async def _escape(
    session: ScriptedSession,
    caller_id: str,
    *,
    record_seconds: int = 0,
    region: str = "DE",
    booker: Booker | None = None,
) -> tuple[EscapeOutcome, Booker]:
    book = booker or Booker(session)
    outcome = await run_escape(
        session,
        caller_id=caller_id,
        region=region,
        record_seconds=record_seconds,
        recording_base=BASE,
        book=book,
    )
    return outcome, book


def _run(coro: Coroutine[Any, Any, Any] | Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


# --- a known caller ---------------------------------------------------------------------


async def test_known_caller_who_presses_nothing_is_booked_on_their_number() -> None:
    session = ScriptedSession("")
    outcome, book = await _escape(session, "+493012345678")
    assert outcome == EscapeOutcome("booked", "+493012345678", BOOKING, None)
    assert book.calls == [("+493012345678", None, len(session.log))]
    assert session.log == [
        ("stream_file", "firstline/callback-number-is", ""),
        ("say_digits", "03012345678", ""),  # national form, as dialled at home
        ("get_data", "firstline/callback-confirm", "5000", "1"),
    ]


@pytest.mark.parametrize(
    ("caller_id", "region", "number", "spoken"),
    [
        ("03012345678", "DE", "+493012345678", "03012345678"),
        ("0049 30 1234-5678", "DE", "+493012345678", "03012345678"),
        ("+442071234567", "DE", "+442071234567", "00442071234567"),
        ("+442071234567", "GB", "+442071234567", "02071234567"),
    ],
)
async def test_the_number_is_read_back_as_dialled_from_the_region(
    caller_id: str, region: str, number: str, spoken: str
) -> None:
    session = ScriptedSession("1")
    outcome, book = await _escape(session, caller_id, region=region)
    assert spoken_digits(number, region) == spoken
    assert ("say_digits", spoken, "") in session.log
    assert outcome.status == "booked"
    assert [call[0] for call in book.calls] == [number]


async def test_known_caller_who_presses_2_types_another_number() -> None:
    session = ScriptedSession("2", "0401234567")
    outcome, book = await _escape(session, "+493012345678")
    assert outcome.number == "+49401234567"
    assert [call[0] for call in book.calls] == ["+49401234567"]
    assert session.log[-1] == ("get_data", "firstline/callback-enter-number", "12000", "20")
    assert book.calls[0][2] == len(session.log)  # booked after the last key, not before


# --- unknown and hostile caller ids -----------------------------------------------------


@pytest.mark.parametrize("caller_id", HOSTILE_CALLER_IDS)
async def test_unknown_or_hostile_caller_ids_are_asked_for_a_number(caller_id: str) -> None:
    session = ScriptedSession("0401234567")
    outcome, book = await _escape(session, caller_id)
    assert session.log == [("get_data", "firstline/callback-enter-number", "12000", "20")]
    assert outcome == EscapeOutcome("booked", "+49401234567", BOOKING, None)
    assert book.calls == [("+49401234567", None, 1)]
    if caller_id.strip():
        assert all(caller_id not in arg for arg in session.arguments())


_NUMBERISH = st.one_of(
    st.from_regex(r"(\+|00)?[0-9][0-9 ()./-]{2,24}", fullmatch=True),
    st.from_regex(r"(\+49|0049|0)[1-9][0-9]{7,10}", fullmatch=True),
)
_TYPED = st.from_regex(r"(0049|0)[1-9][0-9]{7,10}", fullmatch=True)
_KEYS = st.sampled_from(["", "1", "2", "9", "*", "#"])


@settings(max_examples=300, deadline=None)
@given(
    caller_id=st.one_of(st.text(max_size=60), _NUMBERISH),
    keys=st.lists(
        st.one_of(st.text(max_size=30), _NUMBERISH, _TYPED, _KEYS), min_size=3, max_size=3
    ),
)
def test_whatever_the_caller_controls_only_checked_numbers_get_through(
    caller_id: str, keys: list[str]
) -> None:
    session = ScriptedSession(*keys)
    outcome, book = _run(_escape(session, caller_id))
    known = normalise_number(caller_id, "DE")
    event(f"{outcome.status}, caller {'known' if known else 'unknown'}")
    assert outcome.status in ("booked", "cancelled")
    if outcome.status == "booked":
        assert outcome.number is not None
        assert E164.match(outcome.number)
        assert book.calls == [(outcome.number, None, len(session.log))]
        # The number is the caller id only if that was a number, else one the caller typed.
        allowed = {normalise_number(k, "DE") for k in keys if k.isdigit()}
        if known:
            allowed.add(known)
        assert outcome.number in allowed
    else:
        assert book.calls == []
    said = [entry[1] for entry in session.log if entry[0] == "say_digits"]
    assert said == ([spoken_digits(known, "DE")] if known else [])
    assert all(digits.isascii() and digits.isdigit() for digits in said)
    assert all(
        entry[1].startswith("firstline/") for entry in session.log if entry[0] != "say_digits"
    )
    asked = [entry for entry in session.log if entry[0] == "get_data"]
    assert len(asked) <= 3
    assert all(int(entry[3]) <= 20 for entry in asked)


# --- typed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        ("", ""),
        ("123", "*#"),
        ("9" * 500, "0" * 500),  # a DTMF flood
        ("٣٣٣٣٣٣٣٣", "12345678901234567890123"),
        ("030-1234567", "110"),
    ],
)
async def test_garbage_typed_twice_cancels_without_booking(typed: tuple[str, str]) -> None:
    session = ScriptedSession(*typed)
    outcome, book = await _escape(session, "anonymous")
    assert outcome == EscapeOutcome("cancelled")
    assert book.calls == []
    assert (
        session.prompts()
        == [
            "firstline/callback-enter-number",
            "firstline/callback-invalid-number",
        ]
        * 2
    )
    assert all(entry[0] != "exec" for entry in session.log)


async def test_a_dtmf_flood_is_refused_and_the_second_try_counts() -> None:
    session = ScriptedSession("4" * 500, "00442071234567")
    outcome, book = await _escape(session, "")
    assert outcome.number == "+442071234567"
    assert book.calls == [("+442071234567", None, len(session.log))]
    assert all("4" * 21 not in arg for arg in session.arguments())
    asked = [entry for entry in session.log if entry[0] == "get_data"]
    assert [entry[3] for entry in asked] == ["20", "20"]


# --- recording and booking ----------------------------------------------------------------


async def test_the_problem_is_recorded_before_booking_and_passed_on() -> None:
    session = ScriptedSession("")
    outcome, book = await _escape(session, "+493012345678", record_seconds=45)
    assert outcome == EscapeOutcome("booked", "+493012345678", BOOKING, f"{BASE}.wav")
    assert session.log[3:] == [
        ("stream_file", "firstline/callback-record", ""),
        ("stream_file", "beep", ""),
        ("exec", "Record", f"{BASE}.wav", "3", "45", "q"),
        ("get_variable", "RECORD_STATUS"),
    ]
    assert book.calls == [("+493012345678", f"{BASE}.wav", len(session.log))]


@pytest.mark.parametrize("status", [None, "ERROR", ""])
async def test_a_failed_recording_books_without_one(status: str | None) -> None:
    session = ScriptedSession("", record_status=status)
    outcome, book = await _escape(session, "+493012345678", record_seconds=10)
    assert outcome.status == "booked"
    assert outcome.recording is None
    assert book.calls[0][:2] == ("+493012345678", None)


async def test_no_recording_when_the_caller_cancels() -> None:
    session = ScriptedSession("x", "y")
    outcome, book = await _escape(session, "", record_seconds=30)
    assert outcome.status == "cancelled"
    assert all(entry[0] not in ("exec", "get_variable") for entry in session.log)
    assert book.calls == []


async def test_an_error_from_booking_propagates() -> None:
    session = ScriptedSession("")
    booker = Booker(session, RuntimeError("store down"))
    with pytest.raises(RuntimeError, match="store down"):
        await _escape(session, "+493012345678", booker=booker)
    assert len(booker.calls) == 1


# --- hostile text through the real AgiSession ---------------------------------------------


async def test_a_hostile_caller_id_cannot_inject_a_second_agi_command() -> None:
    quoted = '"Evil" <1234> \\"; EXEC System rm'
    broken = '"Evil"\nEXEC System "rm -rf /"'
    refused: list[str] = []

    async def handler(session: AgiSession) -> None:
        await session.set_variable("FIRSTLINE_SEEN", quoted)
        try:
            await session.set_variable("FIRSTLINE_SEEN", broken)
        except AgiProtocolError as error:
            refused.append(str(error))
        await session.verbose("done")

    server = AgiServer(port=0, handlers={"escape": handler}, command_timeout=5)
    await server.start()
    try:
        fake = await FakeAsterisk.connect(server.port, "escape")
        first = await fake.command()
        assert first.count(b"\n") == 1
        words = _asterisk_parse_args(first[:-1].decode("utf-8"))
        assert words == ["SET", "VARIABLE", "FIRSTLINE_SEEN", quoted]
        await fake.reply(b"200 result=1\n")
        # The line break is refused before anything is written: the next line is VERBOSE.
        assert await fake.command() == b"VERBOSE done 1\n"
        await fake.reply(b"200 result=1\n")
        assert await fake.eof() == b""
        await fake.close()
        assert len(refused) == 1
    finally:
        await server.close()
