"""The IVR runner (ivr.runner) against a fake session, and once over the real AgiSession.

The fake session records every AGI operation and answers GET DATA from a script; a key
can also be "pressed" while a given file plays, as a caller barging in does. The tests
say exactly which commands the flow sends, that a hang-up anywhere propagates and leaves
nothing set, and that what the caller types never reaches a command.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from acd.agi import AgiHangup, AgiServer, AgiSession
from acd.config.model import Ivr
from ivr.flow import CallerFacts, FlowResult, OpenTicket
from ivr.runner import run_flow
from tests.test_agi_codec import _asterisk_parse_args
from tests.test_agi_server import FakeAsterisk

BASE = "/var/spool/asterisk/monitor/firstline-ivr-1700000000_1"


def _texts(text: str) -> dict[str, str]:
    return {"en": text, "fr": f"{text} (fr)"}


def _ivr(**extra: Any) -> Ivr:
    return Ivr.model_validate(
        {
            "greeting": _texts("Welcome."),
            "language_menu": {"en": "English 1.", "fr": "Français 2."},
            "menu": {
                "prompt": _texts("Printing 1, licences 2."),
                "options": {
                    "1": {"category": "printing", "skills": {"printing": 3}},
                    "2": {
                        "prompt": _texts("Activation 1."),
                        "timeout": 8,
                        "options": {"1": {"category": "activation", "skills": {"licensing": 2}}},
                    },
                },
            },
            **extra,
        }
    )


EN_FR = CallerFacts(languages=("en", "fr"))
EN = CallerFacts(languages=("en",))


class Hangup(Exception):  # noqa: N818 - what the session raises, as AgiHangup does
    pass


@dataclass(frozen=True)
class Reply:
    result_int: int | None


class FakeSession:
    """A `FlowSession` that logs each operation and answers Read from a script.

    ``pressed`` maps a file (or digits) to the key the caller presses while it plays.
    """

    def __init__(
        self,
        *keys: str,
        pressed: dict[str, str] | None = None,
        record_status: str | None = "SILENCE",
        hang_up_after: int | None = None,
        missing: frozenset[str] = frozenset(),
    ) -> None:
        self.keys = list(keys)
        self.pressed = dict(pressed or {})
        self.record_status = record_status
        self.hang_up_after = hang_up_after
        self.missing = missing
        self.variables: dict[str, str] = {}
        self.log: list[tuple[str, ...]] = []
        self.reply_timeouts: list[float | None] = []

    def _note(self, *entry: str) -> None:
        if self.hang_up_after is not None and len(self.log) >= self.hang_up_after:
            raise Hangup("the caller hung up")
        self.log.append(entry)

    def _played(self, name: str, escape: str) -> Reply:
        if name in self.missing:
            return Reply(-1)
        key = self.pressed.pop(name, "")
        return Reply(ord(key) if key and key in escape else 0)

    async def stream_file(
        self, name: str, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> Reply:
        self._note("stream_file", name, escape_digits)
        self.reply_timeouts.append(reply_timeout)
        return self._played(name, escape_digits)

    async def say_digits(self, digits: str, escape: str = "") -> Reply:
        self._note("say_digits", digits, escape)
        return self._played(digits, escape)

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> Reply:
        self._note("exec", app, *args)
        self.reply_timeouts.append(reply_timeout)
        if app == "Read":
            if not self.keys:
                raise AssertionError(f"the flow asked more than scripted: {args}")
            self.variables[args[0]] = self.keys.pop(0)
        return Reply(0)

    async def set_variable(self, name: str, value: str) -> None:
        self._note("set_variable", name, value)

    async def get_variable(self, name: str) -> str | None:
        self._note("get_variable", name)
        if name == "RECORD_STATUS":
            return self.record_status
        return self.variables.get(name)

    def arguments(self) -> list[str]:
        return [arg for entry in self.log for arg in entry[1:]]

    def reads(self) -> list[tuple[str, ...]]:
        """(prompt, max digits, timeout) of every Read."""
        return [(e[3], e[4], e[7]) for e in self.log if e[:2] == ("exec", "Read")]


def _read(prompt: str, max_digits: str = "1", timeout: str = "5") -> list[tuple[str, ...]]:
    return [
        ("exec", "Read", "FIRSTLINE_IVR_KEYS", prompt, max_digits, "", "1", timeout),
        ("get_variable", "FIRSTLINE_IVR_KEYS"),
    ]


def _lang(code: str) -> tuple[str, ...]:
    return ("set_variable", "CHANNEL(language)", code)


async def test_a_caller_chooses_french_and_walks_the_menu() -> None:
    session = FakeSession("2", "2", "1")
    result = await run_flow(session, _ivr(), EN_FR)

    assert (result.language, result.category, dict(result.skills)) == (
        "fr",
        "activation",
        {"licensing": 2},
    )
    assert session.log == [
        # Each language greets and offers itself in its own voice; a key may cut in.
        _lang("en"),
        ("stream_file", "firstline/ivr-greeting", "12"),
        _lang("fr"),
        ("stream_file", "firstline/ivr-greeting", "12"),
        _lang("en"),
        ("stream_file", "firstline/ivr-language", "12"),
        _lang("fr"),
        *_read("firstline/ivr-language"),
        *_read("firstline/ivr-menu"),
        *_read("firstline/ivr-menu-2", timeout="8"),
        ("stream_file", "firstline/ivr-please-hold", ""),
    ]
    # Every command may take as long as its prompt plays and the caller types.
    assert all(limit is not None and limit >= 15 for limit in session.reply_timeouts)


async def test_a_key_pressed_during_the_greeting_is_the_answer() -> None:
    session = FakeSession("1", pressed={"firstline/ivr-greeting": "2"})
    result = await run_flow(session, _ivr(), EN_FR)
    assert (result.language, result.category) == ("fr", "printing")
    assert session.reads() == [("firstline/ivr-menu", "1", "5")]
    assert session.log[2] == _lang("fr")  # straight on, in French


async def test_silence_ends_in_the_fallback_in_the_default_language() -> None:
    session = FakeSession("", "", "", "", "", "")
    result = await run_flow(session, _ivr(), EN_FR)
    assert (result.fell_back, result.reason, result.language) == (True, "no-input", "en")
    assert len(session.reads()) == 3
    # The last thing asked was in French; the fallback is said in the default language.
    assert session.log[-2:] == [_lang("en"), ("stream_file", "firstline/ivr-fallback", "")]


async def test_the_open_ticket_is_read_and_1_during_it_reaches_the_owner() -> None:
    facts = CallerFacts(
        ("en",), "+493012345678", (OpenTicket("2025-004711", "second_level", owned=True),)
    )
    session = FakeSession(pressed={"2025004711": "1"})
    result = await run_flow(session, _ivr(), facts)
    assert (result.wants_owner, result.ticket) == (True, "2025-004711")
    assert session.log == [
        _lang("en"),
        # Keys pressed during the greeting answer the first question: here, the choice.
        ("stream_file", "firstline/ivr-greeting", "12"),
        ("stream_file", "firstline/ivr-open-ticket", "12"),
        ("say_digits", "2025004711", "12"),
        ("stream_file", "firstline/ivr-owner-connect", ""),
    ]


async def test_the_description_is_recorded_to_the_daemons_path() -> None:
    ivr = _ivr(record_description={"seconds": 30, "prompt": _texts("Speak.")})
    session = FakeSession("1")
    result = await run_flow(session, ivr, EN, recording_base=BASE)
    assert result.recording == f"{BASE}.wav"
    assert session.log[-7:] == [
        *_read("firstline/ivr-menu"),
        ("stream_file", "firstline/ivr-record", ""),
        ("stream_file", "beep", ""),
        ("exec", "Record", f"{BASE}.wav", "3", "30", "q"),
        ("get_variable", "RECORD_STATUS"),
        ("stream_file", "firstline/ivr-please-hold", ""),
    ]


@pytest.mark.parametrize("status", [None, "ERROR", ""])
async def test_a_failed_recording_is_no_recording(status: str | None) -> None:
    ivr = _ivr(record_description={"seconds": 30, "prompt": _texts("Speak.")})
    result = await run_flow(FakeSession("1", record_status=status), ivr, EN, recording_base=BASE)
    assert (result.recording, result.category) == (None, "printing")


async def test_without_a_recording_place_nothing_is_recorded() -> None:
    ivr = _ivr(record_description={"seconds": 30, "prompt": _texts("Speak.")})
    session = FakeSession("1")
    result = await run_flow(session, ivr, EN)
    assert result.recording is None
    assert all(e[:2] != ("exec", "Record") for e in session.log)
    assert ("get_variable", "RECORD_STATUS") not in session.log
    assert ("stream_file", "firstline/ivr-record", "") not in session.log


async def test_a_lookup_checks_typed_numbers_and_a_miss_asks_again() -> None:
    ivr = _ivr(questions=[{"id": "contract", "prompt": _texts("Contract?"), "check": "lookup"}])
    asked: list[tuple[str, str]] = []

    async def lookup(question: str, value: str) -> bool:
        asked.append((question, value))
        return value == "4712"

    session = FakeSession("1", "4711", "4712")
    result = await run_flow(session, ivr, EN, lookup=lookup)
    assert asked == [("contract", "4711"), ("contract", "4712")]
    assert dict(result.answers) == {"contract": "4712"}
    assert ("stream_file", "firstline/ivr-invalid-entry", "") in session.log

    unchecked = await run_flow(FakeSession("1", "4711"), ivr, EN)
    assert dict(unchecked.answers) == {"contract": "4711"}


@pytest.mark.parametrize("after", range(12))
async def test_a_hang_up_anywhere_propagates_and_sets_nothing(after: int) -> None:
    ivr = _ivr(questions=[{"id": "contract", "prompt": _texts("Contract?")}])
    session = FakeSession("2", "2", "1", "123", hang_up_after=after)
    with pytest.raises(Hangup):
        await run_flow(session, ivr, EN_FR)
    # The language is the only thing the flow sets on the channel: no routing variable,
    # no half-written answer, nothing for the daemon to clean up.
    assert {e[1] for e in session.log if e[0] == "set_variable"} <= {"CHANNEL(language)"}
    # The next call starts afresh.
    result = await run_flow(FakeSession("1", "1", "123"), ivr, EN_FR)
    assert (result.language, result.category) == ("en", "printing")


async def test_a_missing_prompt_file_does_not_cost_the_call() -> None:
    session = FakeSession("1", missing=frozenset({"firstline/ivr-greeting"}))
    result = await run_flow(session, _ivr(), EN)
    assert result.category == "printing"


@pytest.mark.parametrize(
    "typed",
    ['1"\nEXEC System "rm -rf /"', "1;HANGUP", "1\r\nSET VARIABLE X Y", "\x00", "9" * 300],
)
async def test_what_the_caller_types_reaches_no_command(typed: str) -> None:
    ivr = _ivr(questions=[{"id": "contract", "prompt": _texts("Contract?"), "max_digits": 10}])
    session = FakeSession("1", typed, typed, typed, typed)
    result: FlowResult = await run_flow(session, ivr, EN_FR)
    assert result.fell_back
    assert all(typed not in arg for arg in session.arguments())


# --- over the real AgiSession -------------------------------------------------------------


async def test_over_fastagi_slow_typing_is_waited_for_and_a_hang_up_ends_cleanly() -> None:
    ended: list[BaseException] = []

    async def handler(session: AgiSession) -> None:
        try:
            await run_flow(session, _ivr(), EN)
        except AgiHangup as error:
            ended.append(error)
            raise

    # A command timeout far shorter than the prompt plus the wait for a key.
    server = AgiServer(port=0, handlers={"ivr": handler}, command_timeout=0.5)
    await server.start()
    try:
        fake = await FakeAsterisk.connect(server.port, "ivr")

        async def expect(*words: str) -> None:
            line = await fake.command()
            assert _asterisk_parse_args(line[:-1].decode("utf-8")) == list(words)

        await expect("SET", "VARIABLE", "CHANNEL(language)", "en")
        await fake.reply(b"200 result=1\n")
        await expect("STREAM", "FILE", "firstline/ivr-greeting", "12")
        await fake.reply(b"200 result=0 endpos=8000\n")
        await expect("EXEC", "Read", "FIRSTLINE_IVR_KEYS,firstline/ivr-menu,1,,1,5")
        await asyncio.sleep(1.5)  # the menu plays, the caller thinks
        await fake.reply(b"200 result=0\n")
        await expect("GET", "VARIABLE", "FIRSTLINE_IVR_KEYS")
        await fake.reply(b"200 result=1 (9)\n")  # a wrong key
        await expect("STREAM", "FILE", "firstline/ivr-invalid", "12")
        # As Asterisk 22 says it: the HANGUP line, then the reply still comes.
        await fake.reply(b"HANGUP\n200 result=-1 endpos=0\n")
        assert await asyncio.wait_for(fake.eof(), 5) == b""
        await fake.close()
    finally:
        await server.close()
    assert len(ended) == 1
