"""Runs the IVR flow (`ivr.flow`) on a call: each step becomes FastAGI commands.

`run_flow` starts the engine, executes its steps over a session (STREAM FILE, SAY DIGITS,
the Read and Record applications, CHANNEL(language)) and feeds back what happened until the
engine is done; it returns the `FlowResult`. It decides nothing itself: where the flow goes
is the engine's business, and what the result means for routing is the daemon's.

Keys are collected with the Read application rather than GET DATA: Asterisk replies to
either only once the prompt has played and the caller has typed, which can take longer
than the session's default command timeout (a long menu prompt, ten digits typed slowly),
and EXEC is the command whose reply timeout can be set. Read leaves the keys in the channel
variable FIRSTLINE_IVR_KEYS.

It holds no state but the engine's, in local variables: a hang-up (any exception from the
session, e.g. `acd.agi.AgiHangup`) propagates at once and leaves nothing behind. It must
not import the AGI server, the store or the daemon; `lookup`, given by the daemon, is the
only way out. Nothing the caller types reaches a command except keys the engine checked,
and Record's file name comes from the daemon's ``recording_base`` alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from acd.config.model import Ivr
from ivr.flow import (
    Ask,
    CallerFacts,
    Checked,
    Digits,
    Done,
    Event,
    FlowResult,
    Item,
    Keys,
    Record,
    Recorded,
    Step,
    Verify,
    advance,
    start,
)
from ivr.prompts import sound

__all__ = ["FlowSession", "Lookup", "run_flow"]

# Record(): this much silence ends the description early (as '#' does).
_RECORD_SILENCE = "3"
_RECORDED = ("SILENCE", "DTMF", "MAXDURATION", "HANGUP")
_KEYS_VARIABLE = "FIRSTLINE_IVR_KEYS"
# Seconds a prompt may play: a prompt text has at most 500 characters, about 40 s spoken.
_LONGEST_PROMPT = 60.0
# Seconds on top of what the caller may take, for Asterisk to answer the command.
_SLACK = 10.0

Lookup = Callable[[str, str], Awaitable[bool]]
"""``lookup(question_id, digits)``: True when the typed number is known (e.g. a contract).
It bounds its own time; an exception from it propagates like a hang-up."""


class _Reply(Protocol):
    @property
    def result_int(self) -> int | None: ...


class FlowSession(Protocol):
    """The FastAGI operations the flow uses (acd.agi.AgiSession fits)."""

    async def stream_file(
        self, name: str, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> _Reply: ...
    async def say_digits(self, digits: str, escape: str = "") -> _Reply: ...
    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> _Reply: ...
    async def set_variable(self, name: str, value: str) -> None: ...
    async def get_variable(self, name: str) -> str | None: ...


class _Call:
    """The session plus the language its channel is set to (set only when it changes)."""

    def __init__(self, session: FlowSession) -> None:
        self.session = session
        self.language: str | None = None

    async def use_language(self, language: str) -> None:
        if language != self.language:
            # Asterisk picks <sounds>/<language>/firstline/... from this for every file.
            await self.session.set_variable("CHANNEL(language)", language)
            self.language = language

    async def play(self, item: Item, escape: str = "") -> str:
        """Play one item; the key of ``escape`` pressed to interrupt it, or ""."""
        await self.use_language(item.language)
        if isinstance(item, Digits):
            reply = await self.session.say_digits(item.digits, escape)
        else:
            reply = await self.session.stream_file(
                sound(item.name), escape, reply_timeout=_LONGEST_PROMPT + _SLACK
            )
        code = reply.result_int
        # result is the key's character code; 0: played through; -1: could not be played
        # (a missing file must not cost the caller the call).
        return chr(code) if code is not None and 0 < code < 128 and chr(code) in escape else ""


async def run_flow(
    session: FlowSession,
    ivr: Ivr,
    facts: CallerFacts,
    *,
    recording_base: str | None = None,
    lookup: Lookup | None = None,
) -> FlowResult:
    """Take the caller through the IVR; the result routing needs.

    ``recording_base`` is the path (without extension) the description is recorded to,
    made by the daemon from safe parts; None skips the recording step. Without ``lookup``
    a number whose question asks for a lookup is accepted unchecked. The channel's
    language is left set to the result's language.
    """
    call = _Call(session)
    state, step = start(ivr, facts)
    while not isinstance(step, Done):
        event = await _execute(call, step, recording_base, lookup)
        state, step = advance(state, event)
    for item in step.announce:
        await call.play(item)
    await call.use_language(step.result.language)
    return step.result


async def _execute(
    call: _Call, step: Step, recording_base: str | None, lookup: Lookup | None
) -> Event:
    if isinstance(step, Ask):
        return Keys(await _ask(call, step))
    if isinstance(step, Verify):
        return Checked(True if lookup is None else bool(await lookup(step.question, step.value)))
    if isinstance(step, Record):
        return Recorded(await _record(call, step, recording_base))
    raise TypeError(f"not a step to execute: {step!r}")


async def _ask(call: _Call, step: Ask) -> str:
    # A one-key answer may come while the prompts before the question still play.
    escape = step.barge_in if step.max_digits == 1 else ""
    for item in step.before:
        pressed = await call.play(item, escape)
        if pressed:
            return pressed
    await call.use_language(step.prompt.language)
    seconds = step.timeout_ms / 1000
    # Read(variable,filename,maxdigits,options,attempts,timeout): plays the prompt (keys cut
    # in), then waits `timeout` for each key; '#' ends the typing.
    reply = await call.session.exec(
        "Read",
        _KEYS_VARIABLE,
        sound(step.prompt.name),
        str(step.max_digits),
        "",
        "1",
        f"{seconds:g}",
        reply_timeout=_LONGEST_PROMPT + step.max_digits * seconds + _SLACK,
    )
    if reply.result_int != 0:
        return ""  # Read did not run: the variable may hold an older answer
    return await call.session.get_variable(_KEYS_VARIABLE) or ""


async def _record(call: _Call, step: Record, base: str | None) -> str | None:
    if base is None:
        return None
    for item in (*step.before, step.prompt):
        await call.play(item)
    await call.session.stream_file("beep", reply_timeout=_SLACK)
    # Record(file.format,silence,maxduration,options); 'q': no beep of its own (played above).
    path = f"{base}.wav"
    await call.session.exec(
        "Record",
        path,
        _RECORD_SILENCE,
        str(step.seconds),
        "q",
        reply_timeout=step.seconds + _SLACK,
    )
    status = await call.session.get_variable("RECORD_STATUS")
    return path if status in _RECORDED else None
