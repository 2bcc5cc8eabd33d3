"""Hostile callers through the IVR (issue 8): caller ids and DTMF floods.

A caller controls the caller id Asterisk hands over (``agi_callerid``: any text, any
length, through a SIP header) and the keys they press (hundreds at a time, or anything a
broken or malicious PBX puts in FIRSTLINE_IVR_KEYS). Whatever they send, the flow ends in
a usable result within a bound, and nothing of theirs leaves it unchecked:

* the caller id becomes an E.164 number or nothing (no tickets looked up for nothing);
* every prompt played is one the configuration or the shipped texts name: a caller cannot
  make up a file name;
* every answer kept (call record, SQL lookup, log) is ASCII digits within the question's
  limits, and every other result field comes from the configuration;
* every command the IVR sends is one of a few fixed shapes whose variable parts are
  digits or configured names, encoded by the real FastAGI encoder (no CR, LF or NUL).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from acd.agi.codec import format_command
from acd.agi.server import _escape_app_arg
from acd.config import load_config
from acd.config.model import TICKET_STATUS_NAMES, Ivr, IvrLeaf, IvrMenu
from acd.daemon import _safe_name
from ivr.flow import (
    FIXED_PROMPTS,
    Ask,
    CallerFacts,
    Checked,
    Digits,
    Done,
    Event,
    FlowResult,
    Keys,
    Record,
    Recorded,
    Sound,
    Step,
    Verify,
    advance,
    caller_facts,
    ivr_prompt_texts,
    start,
)
from ivr.runner import run_flow

REPO = Path(__file__).resolve().parent.parent
DESK = load_config(REPO / "examples" / "desk.yaml")
assert DESK.ivr is not None
LANGUAGES = tuple(DESK.hotline.languages)


def _texts(text: str) -> dict[str, str]:
    return {language: f"{text} ({language})" for language in LANGUAGES}


# Deeper and stricter than the example: a lookup, a Luhn check, a required question.
STRICT = Ivr.model_validate(
    {
        "greeting": _texts("Hello."),
        "language_menu": _texts("Language?"),
        "retries": 1,
        "menu": {
            "prompt": _texts("Menu."),
            "options": {
                "1": {"category": "printing", "skills": {"printing": 3}, "priority": "high"},
                "2": {
                    "prompt": _texts("Sub."),
                    "retries": 3,
                    "options": {
                        "9": {
                            "prompt": _texts("Subsub."),
                            "options": {"0": {"category": "deep", "skills": {"licensing": 5}}},
                        }
                    },
                },
            },
        },
        "questions": [
            {"id": "contract", "prompt": _texts("Contract?"), "max_digits": 8, "check": "lookup"},
            {
                "id": "customer_number",
                "prompt": _texts("Customer?"),
                "min_digits": 6,
                "max_digits": 12,
                "check": "luhn",
                "optional": True,
            },
            {"id": "pin", "prompt": _texts("PIN?"), "min_digits": 4, "max_digits": 4},
        ],
        "record_description": {"seconds": 20, "prompt": _texts("Speak.")},
    }
)
IVRS = {"example": DESK.ivr, "strict": STRICT}

E164 = re.compile(r"\+[1-9][0-9]{5,14}")
TICKET_NUMBER = re.compile(r"[0-9A-Za-z-]{1,32}")
OPEN_STATUSES = set(TICKET_STATUS_NAMES) - {"done"}

# --- what hostile callers send ---------------------------------------------------------------

_NASTY = st.sampled_from(
    ['"', "'", ",", ";", "|", "\n", "\r\n", "\x00", "\t", "\\", "--", "/*", "' OR '1'='1",
     "'; DROP TABLE tickets; --", "${EXEC(System(rm -rf /))}", "${SHELL(id)}", "$[1+1]",
     "../../../etc/passwd", "/var/spool/asterisk/", "..", "%00", "%0a", "<", ">", "&", "sip:",
     "@evil.example", "\u202e", "\u0663", "\uff11", "\ufeff", " ", "+", "(", ")", "-", ".",
     "HANGUP", "200 result=1", "anonymous", "Anonymous", "<unknown>", "*", "#"]
)  # fmt: skip
_DIGITS = st.text("0123456789", min_size=1, max_size=16)
_NUMBERS = st.sampled_from(
    ["+493012345678", "030 12345678", "0049 30 1234 5678", "+1 (212) 555-0100", "+447911123456"]
)
CALLER_IDS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_NASTY, _DIGITS, _NUMBERS), max_size=12).map("".join),
    st.tuples(_NASTY, _NUMBERS, _NASTY).map("".join),
    st.integers(min_value=100, max_value=20_000).map(lambda n: "1" * n),  # very long
    _NUMBERS,
)
# What a DTMF flood or a forged FIRSTLINE_IVR_KEYS looks like.
KEYS = st.one_of(
    st.sampled_from(["", "", "1", "2", "3", "0", "9", "#", "*", "1#", "79927398713", "12345678"]),
    st.text("0123456789*#", min_size=100, max_size=1000),  # hundreds of keys
    st.integers(min_value=21, max_value=2000).map(lambda n: "4" * n),  # hundreds of digits
    st.text(max_size=40),
    st.lists(st.one_of(_NASTY, _DIGITS), max_size=10).map("".join),
)


@dataclass(frozen=True)
class _Ticket:
    number: str
    status: str
    owner: str | None


TICKETS = st.lists(
    st.builds(
        _Ticket,
        number=st.one_of(
            st.from_regex(r"20[0-9]{2}-[0-9]{6}", fullmatch=True),
            st.text(max_size=40),
            st.lists(st.one_of(_NASTY, _DIGITS), max_size=6).map("".join),
        ),
        status=st.one_of(st.sampled_from(sorted(TICKET_STATUS_NAMES)), st.text(max_size=12)),
        owner=st.one_of(st.none(), st.just("alice"), st.text(max_size=10)),
    ),
    max_size=30,
)


# --- caller ids --------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(caller_id=CALLER_IDS, tickets=TICKETS)
def test_a_hostile_caller_id_becomes_e164_or_nothing(
    caller_id: str, tickets: list[_Ticket]
) -> None:
    facts = caller_facts(
        caller_id, region=DESK.hotline.region, languages=LANGUAGES, tickets=tickets
    )
    assert facts.languages == LANGUAGES
    if facts.number is None:
        # Tickets are found by the normalised number only: nothing for an unknown caller.
        assert facts.open_tickets == ()
        return
    assert E164.fullmatch(facts.number), facts.number
    assert len(facts.open_tickets) <= 20
    for ticket in facts.open_tickets:
        assert TICKET_NUMBER.fullmatch(ticket.number), ticket.number
        assert ticket.status in OPEN_STATUSES
        assert re.fullmatch(r"[0-9]{0,32}", ticket.spoken), ticket.spoken


# --- the engine: DTMF floods and forged keys ----------------------------------------------------


def _allowed_prompts(ivr: Ivr) -> set[str]:
    return set(FIXED_PROMPTS) | {name for texts in ivr_prompt_texts(ivr).values() for name in texts}


def _leaves(menu: IvrMenu | None) -> list[IvrLeaf]:
    found: list[IvrLeaf] = []
    menus = [menu] if menu is not None else []
    while menus:
        for option in menus.pop().options.values():
            (menus if isinstance(option, IvrMenu) else found).append(option)  # type: ignore[arg-type]
    return found


def _bound(ivr: Ivr) -> int:
    """Steps a flow may take at most: each phase asked 1 + retries times, a lookup per try."""
    retries = [ivr.retries]
    menus = [ivr.menu] if ivr.menu is not None else []
    depth = 0
    while menus:
        depth += 1
        retries.extend(m.retries for m in menus if m.retries is not None)
        menus = [o for m in menus for o in m.options.values() if isinstance(o, IvrMenu)]
    retries.extend(q.retries for q in ivr.questions if q.retries is not None)
    tries = 1 + max(retries)
    return tries * (2 + depth + 2 * len(ivr.questions)) + 2


def _assert_items_safe(items: Iterable[object], allowed: set[str], facts: CallerFacts) -> None:
    for item in items:
        assert isinstance(item, Sound | Digits)
        assert item.language in facts.languages
        if isinstance(item, Sound):
            assert item.name in allowed, item.name  # a caller cannot make up a file name
        else:
            assert re.fullmatch(r"[0-9]{0,32}", item.digits), item.digits


def _assert_step_safe(step: Step, ivr: Ivr, facts: CallerFacts) -> None:
    allowed = _allowed_prompts(ivr)
    if isinstance(step, Ask):
        _assert_items_safe((*step.before, step.prompt), allowed, facts)
        assert set(step.barge_in) <= set("0123456789*#")
        assert 1 <= step.max_digits <= 20
        assert 1000 <= step.timeout_ms <= 30_000
    elif isinstance(step, Record):
        _assert_items_safe((*step.before, step.prompt), allowed, facts)
    elif isinstance(step, Verify):
        question = next(q for q in ivr.questions if q.id == step.question)
        assert re.fullmatch(r"[0-9]+", step.value), step.value
        assert question.min_digits <= len(step.value) <= question.max_digits
    else:
        _assert_items_safe(step.announce, allowed, facts)


def _assert_result_safe(
    result: FlowResult, ivr: Ivr, facts: CallerFacts, recordings: set[str | None]
) -> None:
    assert result.language in facts.languages
    questions = {q.id: q for q in ivr.questions}
    for question_id, value in result.answers.items():
        question = questions[question_id]
        assert re.fullmatch(r"[0-9]+", value), value
        assert question.min_digits <= len(value) <= question.max_digits
    leaves = _leaves(ivr.menu)
    if result.category is not None:
        assert any(leaf.category == result.category for leaf in leaves)
    assert result.priority is None or any(leaf.priority == result.priority for leaf in leaves)
    assert not result.skills or any(dict(leaf.skills) == dict(result.skills) for leaf in leaves)
    assert re.fullmatch(r"([0-9](-[0-9]){0,7})?", result.menu_path), result.menu_path
    assert result.ticket in {None, *(t.number for t in facts.open_tickets)}
    assert result.recording in recordings
    menus = r"menu(-[0-9])*"
    asked = "|".join(re.escape(f"question:{q}") for q in questions) or "-"
    where = rf"language|owner-choice|{menus}|{asked}"
    assert result.failed_at is None or re.fullmatch(where, result.failed_at), result.failed_at


FACTS = st.one_of(
    st.builds(lambda: CallerFacts(languages=LANGUAGES)),
    st.builds(
        lambda caller, tickets: caller_facts(
            caller, region=DESK.hotline.region, languages=LANGUAGES, tickets=tickets
        ),
        st.one_of(CALLER_IDS, _NUMBERS),
        TICKETS,
    ),
)


# Keys that move the flow on, so that floods also reach the menus and questions behind.
_GOOD_KEYS = st.sampled_from(["1", "2", "9", "0", "3", "79927398713", "1234", "12345678"])


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from(sorted(IVRS)),
    facts=FACTS,
    recorded=st.sampled_from([None, "/var/spool/asterisk/monitor/firstline-ivr-1.2.wav"]),
    data=st.data(),
)
def test_dtmf_floods_and_forged_keys_end_in_a_safe_result(
    which: str, facts: CallerFacts, recorded: str | None, data: st.DataObject
) -> None:
    ivr = IVRS[which]
    state, step = start(ivr, facts)
    steps = 0
    while not isinstance(step, Done):
        steps += 1
        assert steps <= _bound(ivr)
        _assert_step_safe(step, ivr, facts)
        event: Event
        if isinstance(step, Ask):
            valid = st.sampled_from(sorted(step.barge_in)) if step.barge_in else _GOOD_KEYS
            event = Keys(data.draw(st.one_of(valid, KEYS), label="keys"))
        elif isinstance(step, Verify):
            event = Checked(data.draw(st.booleans(), label="lookup"))
        else:
            event = Recorded(recorded)
        state, step = advance(state, event)
    _assert_step_safe(step, ivr, facts)
    _assert_result_safe(step.result, ivr, facts, {None, recorded})


# --- the runner: every command the IVR sends ----------------------------------------------------

_PROMPT_FILE = r"firstline/[a-z0-9]+(-[a-z0-9]+)*"
_COMMANDS = [
    re.compile(rf"STREAM FILE ({_PROMPT_FILE}|beep) [0-9*#]*"),
    re.compile(r"SAY DIGITS [0-9]{0,32} [0-9*#]*"),
    re.compile(rf"EXEC Read FIRSTLINE_IVR_KEYS,{_PROMPT_FILE},[0-9]{{1,2}},,1,[0-9]{{1,2}}"),
    re.compile(r"EXEC Record /var/spool/asterisk/monitor/firstline-ivr-[A-Za-z0-9._-]{1,64}"
               r"\.wav,3,[0-9]{1,4},q"),
    re.compile(r"SET VARIABLE CHANNEL\(language\) [a-z]{2,3}(_[A-Za-z]{2})?"),
    re.compile(r"GET VARIABLE (FIRSTLINE_IVR_KEYS|RECORD_STATUS)"),
]  # fmt: skip


@dataclass(frozen=True)
class _Reply:
    result_int: int | None


@dataclass
class HostileChannel:
    """Asterisk's side of the IVR as `ivr.runner` sees it, with a hostile caller on it.

    Each command is encoded by the real FastAGI encoder (`format_command`, which refuses
    CR, LF and NUL) as `acd.agi.AgiSession` would send it; replies carry what the caller
    chose: forged keys, odd result codes, odd recording states.
    """

    keys: st.DataObject
    codes: list[int]
    record_status: str
    lines: list[str] = field(default_factory=list)
    asked_digits: int = 1  # by the last Read: 1 for a menu, more for a question
    looked_up: list[tuple[str, str]] = field(default_factory=list)

    def _send(self, *words: str) -> _Reply:
        line = format_command(*words)
        assert line.count(b"\n") == 1
        assert line.endswith(b"\n")
        self.lines.append(" ".join(words))
        return _Reply(self.codes.pop(0) if self.codes else 0)

    async def stream_file(
        self, name: str, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> _Reply:
        return self._send("STREAM", "FILE", name, escape_digits)

    async def say_digits(self, digits: str, escape: str = "") -> _Reply:
        return self._send("SAY", "DIGITS", digits, escape)

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> _Reply:
        reply = self._send("EXEC", app, ",".join(_escape_app_arg(arg) for arg in args))
        if app == "Read":
            self.asked_digits = int(args[2])
        return _Reply(0) if app == "Read" and reply.result_int not in (0, -1) else reply

    async def set_variable(self, name: str, value: str) -> None:
        self._send("SET", "VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        self._send("GET", "VARIABLE", name)
        if name == "FIRSTLINE_IVR_KEYS":
            # Often a key that leads on, so that floods reach the questions too.
            good = st.sampled_from("12903") if self.asked_digits == 1 else _GOOD_KEYS
            return self.keys.draw(st.one_of(good, good, good, KEYS, st.none()), label="keys")
        return self.record_status

    async def lookup(self, question: str, digits: str) -> bool:
        self.looked_up.append((question, digits))
        return len(self.looked_up) % 2 == 0


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(sorted(IVRS)),
    facts=FACTS,
    keys=st.data(),
    codes=st.lists(
        st.one_of(st.sampled_from([0, -1, 0x31, 0x32, 0x23]), st.integers(-(2**40), 2**40)),
        max_size=30,
    ),
    record_status=st.one_of(st.sampled_from(["SILENCE", "HANGUP", "ERROR"]), st.text(max_size=20)),
    uniqueid=st.one_of(st.text(max_size=100), st.sampled_from(["../../etc/passwd", "1.2", ".."])),
)
def test_every_ivr_command_has_a_fixed_shape_whatever_the_caller_sends(
    which: str,
    facts: CallerFacts,
    keys: st.DataObject,
    codes: list[int],
    record_status: str,
    uniqueid: str,
) -> None:
    ivr = IVRS[which]
    channel = HostileChannel(keys, codes, record_status)
    # The recording's file name as the daemon makes it from the AGI request's unique id.
    base = f"/var/spool/asterisk/monitor/firstline-ivr-{_safe_name(uniqueid) or 'x'}"
    result = asyncio.run(run_flow(channel, ivr, facts, recording_base=base, lookup=channel.lookup))
    for line in channel.lines:
        assert any(shape.fullmatch(line) for shape in _COMMANDS), line
    for question, digits in channel.looked_up:
        assert question in {q.id for q in ivr.questions}
        assert re.fullmatch(r"[0-9]{1,20}", digits), digits
    _assert_result_safe(result, ivr, facts, {None, f"{base}.wav"})


@settings(max_examples=300, deadline=None)
@given(uniqueid=st.one_of(st.text(), st.lists(_NASTY).map("".join)))
def test_recording_names_from_any_unique_id_stay_in_the_spool(uniqueid: str) -> None:
    spool = Path("/var/spool/asterisk/monitor")
    name = f"firstline-ivr-{_safe_name(uniqueid)}.wav"
    assert re.fullmatch(r"firstline-ivr-[A-Za-z0-9._-]{0,64}\.wav", name)
    assert (spool / name).resolve().parent == spool.resolve()
