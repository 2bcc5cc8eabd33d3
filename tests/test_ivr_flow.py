"""The IVR flow engine (ivr.flow) driven by a scripted caller: no PBX, no asyncio.

Each test plays a caller: the keys they press (or don't), what a lookup says, whether a
recording was made. The assertions say what the caller heard and asked for, and what the
daemon gets to route by. Hypothesis then presses anything at all and checks that every
flow ends, within a bound, in a result the daemon can use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.config import load_config
from acd.config.model import TICKET_STATUS_NAMES, Ivr, IvrLeaf, IvrMenu
from acd.tickets import TicketStatus
from ivr.flow import (
    FIXED_PROMPTS,
    ORDER,
    TRANSITIONS,
    Ask,
    CallerFacts,
    Checked,
    Digits,
    Done,
    Event,
    FlowError,
    FlowResult,
    Keys,
    OpenTicket,
    Outcome,
    Phase,
    Record,
    Recorded,
    Sound,
    Step,
    Verify,
    advance,
    caller_facts,
    ivr_prompt_texts,
    luhn_valid,
    start,
)
from ivr.prompts import load_prompts

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "desk.yaml"

EN_FR = CallerFacts(languages=("en", "fr"))
EN = CallerFacts(languages=("en",))
LUHN_OK = "79927398713"  # the textbook Luhn number
LUHN_BAD = "79927398710"


def _texts(text: str) -> dict[str, str]:
    return {"en": text, "fr": f"{text} (fr)"}


BASE: dict[str, Any] = {
    "greeting": _texts("Welcome."),
    "language_menu": {"en": "For English press 1.", "fr": "Pour le français, 2."},
    "timeout": 5,
    "retries": 2,
    "menu": {
        "prompt": _texts("Printing 1, licences 2, other 3."),
        "options": {
            "1": {"category": "printing", "skills": {"printing": 3}},
            "2": {
                "prompt": _texts("Activation 1, transfer 2."),
                "timeout": 8,
                "retries": 0,
                "options": {
                    "1": {"category": "activation", "skills": {"licensing": 2}},
                    "2": {
                        "category": "licence-transfer",
                        "skills": {"licensing": 4},
                        "priority": "high",
                    },
                },
            },
            "3": {"category": "other"},
        },
    },
}


def _ivr(**changes: Any) -> Ivr:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return Ivr.model_validate(data)


def _question(**values: Any) -> dict[str, Any]:
    return {"id": "customer_number", "prompt": _texts("Your number?"), **values}


Script = str | bool | Recorded


def _event(answer: Script) -> Event:
    if isinstance(answer, bool):
        return Checked(answer)
    if isinstance(answer, Recorded):
        return answer
    return Keys(answer)


def drive(ivr: Ivr, facts: CallerFacts, *script: Script) -> tuple[FlowResult, list[Step]]:
    """Run the flow with the caller's ``script``; it must be used up exactly."""
    state, step = start(ivr, facts)
    steps = [step]
    answers = list(script)
    while not isinstance(step, Done):
        assert answers, f"the flow asked more than scripted: {step}"
        state, step = advance(state, _event(answers.pop(0)))
        steps.append(step)
    assert answers == [], f"the flow ended before the script: {answers}"
    return step.result, steps


def sounds(steps: list[Step]) -> list[tuple[str, str]]:
    """(name, language) of every Firstline prompt played, in order."""
    out: list[tuple[str, str]] = []
    for step in steps:
        items: tuple[Any, ...] = ()
        if isinstance(step, Ask | Record):
            items = (*step.before, step.prompt)
        elif isinstance(step, Done):
            items = step.announce
        out.extend((item.name, item.language) for item in items if isinstance(item, Sound))
    return out


def asks(steps: list[Step]) -> list[Ask]:
    return [step for step in steps if isinstance(step, Ask)]


def leaves(menu: IvrMenu, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], IvrLeaf]]:
    for key, option in sorted(menu.options.items()):
        if isinstance(option, IvrMenu):
            yield from leaves(option, (*path, key))
        else:
            yield (*path, key), option


# --- the menu tree ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "category", "skills", "priority"),
    [
        (("1",), "printing", {"printing": 3}, None),
        (("2", "1"), "activation", {"licensing": 2}, None),
        (("2", "2"), "licence-transfer", {"licensing": 4}, "high"),
        (("3",), "other", {}, None),
    ],
)
def test_every_menu_path_sets_its_leaf(
    keys: tuple[str, ...], category: str, skills: dict[str, int], priority: str | None
) -> None:
    result, steps = drive(_ivr(), EN_FR, "1", *keys)
    assert (result.category, dict(result.skills), result.priority) == (category, skills, priority)
    assert result.menu_path == "-".join(keys)
    assert (result.fell_back, result.wants_owner, result.reason) == (False, False, "completed")
    assert result.language == "en"
    assert result.skills_text() == ",".join(f"{s}:{lv}" for s, lv in sorted(skills.items()))
    assert sounds(steps)[-1] == ("ivr-please-hold", "en")


def test_every_leaf_of_the_example_is_reachable_with_its_keys() -> None:
    config = load_config(EXAMPLE)
    assert config.ivr is not None
    assert config.ivr.menu is not None
    facts = CallerFacts(languages=tuple(config.hotline.languages))
    found = list(leaves(config.ivr.menu))
    assert len(found) == 6
    for keys, leaf in found:
        # Language 2 (French), the keys, then '#' skips the optional customer number and the
        # description is recorded.
        result, steps = drive(config.ivr, facts, "2", *keys, "", Recorded("/spool/x"))
        assert (result.category, result.skills, result.priority) == (
            leaf.category,
            leaf.skills,
            leaf.priority,
        )
        assert result.language == "fr"
        assert result.recording == "/spool/x"
        assert {lang for _, lang in sounds(steps)[4:]} == {"fr"}


def test_menu_prompts_and_timeouts_follow_the_path() -> None:
    _, steps = drive(_ivr(), EN_FR, "2", "2", "1")
    menus = asks(steps)[1:]
    assert [(a.prompt.name, a.prompt.language) for a in menus] == [
        ("ivr-menu", "fr"),
        ("ivr-menu-2", "fr"),
    ]
    assert [(a.max_digits, a.timeout_ms, a.barge_in) for a in menus] == [
        (1, 5000, "123"),
        (1, 8000, "12"),
    ]


# --- no input, invalid input: the fallback ------------------------------------------------


def test_silence_falls_back_after_the_configured_retries() -> None:
    result, steps = drive(_ivr(), EN, "", "", "")
    assert len(asks(steps)) == 3  # once, then retries: 2
    assert (result.fell_back, result.reason, result.failed_at) == (True, "no-input", "menu")
    assert (result.category, dict(result.skills)) == (None, {})
    # Silence is asked again without a reproach; the end says what happens now.
    assert sounds(steps) == [
        ("ivr-greeting", "en"),
        ("ivr-menu", "en"),
        ("ivr-menu", "en"),
        ("ivr-menu", "en"),
        ("ivr-fallback", "en"),
    ]


def test_invalid_keys_are_named_and_fall_back_after_the_retries() -> None:
    result, steps = drive(_ivr(), EN, "9", "*", "0")
    assert (result.fell_back, result.reason, result.failed_at) == (True, "invalid-input", "menu")
    assert [a.before for a in asks(steps)[1:]] == [(Sound("ivr-invalid", "en"),)] * 2


def test_a_valid_key_after_mistakes_counts() -> None:
    result, _ = drive(_ivr(), EN, "9", "", "1")
    assert (result.category, result.fell_back) == ("printing", False)


def test_a_submenu_has_its_own_retries() -> None:
    # retries: 0 in menu 2: one wrong key there is the fallback, with what was learnt.
    result, steps = drive(_ivr(), EN, "2", "7")
    assert (result.fell_back, result.failed_at, result.menu_path) == (True, "menu-2", "2")
    assert len(asks(steps)) == 2


@pytest.mark.parametrize("retries", [0, 1, 5])
def test_retries_bound_the_questions_asked(retries: int) -> None:
    result, steps = drive(_ivr(retries=retries), EN, *[""] * (retries + 1))
    assert result.fell_back
    assert len(asks(steps)) == retries + 1


# --- language choice ----------------------------------------------------------------------


def test_the_language_menu_comes_first_and_sets_every_later_prompt() -> None:
    result, steps = drive(_ivr(), EN_FR, "2", "1")
    first = steps[0]
    assert isinstance(first, Ask)
    # Each language greets and offers itself in its own voice, in key order.
    assert first.before == (
        Sound("ivr-greeting", "en"),
        Sound("ivr-greeting", "fr"),
        Sound("ivr-language", "en"),
    )
    assert (first.prompt, first.max_digits, first.barge_in) == (
        Sound("ivr-language", "fr"),
        1,
        "12",
    )
    assert result.language == "fr"
    assert sounds(steps)[4:] == [("ivr-menu", "fr"), ("ivr-please-hold", "fr")]


def test_explicit_language_keys() -> None:
    ivr = _ivr(language_keys={"7": "fr", "8": "en"})
    state, step = start(ivr, EN_FR)
    assert isinstance(step, Ask)
    assert step.barge_in == "78"
    assert step.before[-1] == Sound("ivr-language", "fr")  # key 7 first
    _, step = advance(state, Keys("8"))
    assert isinstance(step, Ask)
    assert step.prompt == Sound("ivr-menu", "en")


def test_no_language_choice_falls_back_in_the_default_language() -> None:
    result, steps = drive(_ivr(), EN_FR, "5", "", "3")
    assert (result.fell_back, result.failed_at, result.language) == (True, "language", "en")
    assert (result.reason, result.category) == ("invalid-input", None)
    # A wrong key is named in the default language: no language is chosen yet.
    assert asks(steps)[1].before[0] == Sound("ivr-invalid", "en")


def test_one_language_asks_no_language() -> None:
    result, steps = drive(_ivr(), EN, "1")
    assert result.language == "en"
    assert sounds(steps)[:2] == [("ivr-greeting", "en"), ("ivr-menu", "en")]
    assert all(name != "ivr-language" for name, _ in sounds(steps))


def test_without_greeting_or_menu_the_flow_still_ends_well() -> None:
    result, steps = drive(_ivr(greeting=None, menu=None), EN_FR, "2")
    assert (result.language, result.category, result.fell_back) == ("fr", None, False)
    result, steps = drive(_ivr(greeting=None, menu=None), EN)
    assert steps == [Done(result, (Sound("ivr-please-hold", "en"),))]


# --- the caller's open ticket -------------------------------------------------------------

OWNED = CallerFacts(
    languages=("en", "fr"),
    number="+493012345678",
    open_tickets=(
        OpenTicket("2025-000017", "waiting", owned=False),
        OpenTicket("2025-004711", "second_level", owned=True),
    ),
)


def test_an_open_ticket_is_announced_and_1_reaches_its_owner() -> None:
    result, steps = drive(_ivr(), OWNED, "2", "1")
    announce = asks(steps)[1]
    assert announce.before == (
        Sound("ivr-open-ticket", "fr"),
        Digits("2025004711", "fr"),
        Sound("ivr-status-second-level", "fr"),
    )
    assert (announce.prompt, announce.barge_in) == (Sound("ivr-owner-choice", "fr"), "12")
    assert (result.wants_owner, result.ticket, result.reason) == (True, "2025-004711", "owner")
    assert (result.fell_back, result.category, dict(result.skills)) == (False, None, {})
    assert sounds(steps)[-1] == ("ivr-owner-connect", "fr")


def test_2_is_a_new_request_through_the_menu() -> None:
    result, steps = drive(_ivr(), OWNED, "1", "2", "2", "2")
    assert (result.wants_owner, result.category, result.priority) == (
        False,
        "licence-transfer",
        "high",
    )
    assert result.ticket == "2025-004711"
    assert [a.prompt.name for a in asks(steps)] == [
        "ivr-language",
        "ivr-owner-choice",
        "ivr-menu",
        "ivr-menu-2",
    ]


def test_the_owner_choice_is_asked_again_without_the_announcement() -> None:
    result, steps = drive(_ivr(), OWNED, "1", "5", "", "")
    owner_asks = asks(steps)[1:]
    assert [a.before for a in owner_asks[1:]] == [(Sound("ivr-invalid", "en"),), ()]
    assert (result.fell_back, result.failed_at) == (True, "owner-choice")


def test_tickets_nobody_owns_are_not_announced() -> None:
    facts = CallerFacts(("en",), "+493012345678", (OpenTicket("1", "first_level", owned=False),))
    result, steps = drive(_ivr(), facts, "3")
    assert [a.prompt.name for a in asks(steps)] == ["ivr-menu"]
    assert result.ticket is None


# --- questions ----------------------------------------------------------------------------


def test_a_luhn_checked_number_is_kept_and_a_wrong_one_asked_again() -> None:
    ivr = _ivr(questions=[_question(min_digits=5, max_digits=12, check="luhn")])
    result, steps = drive(ivr, EN, "3", LUHN_BAD, LUHN_OK)
    assert dict(result.answers) == {"customer_number": LUHN_OK}
    question_asks = asks(steps)[1:]
    assert [(a.prompt.name, a.max_digits, a.barge_in) for a in question_asks] == [
        ("ivr-question-customer-number", 12, "")
    ] * 2
    assert question_asks[1].before == (Sound("ivr-invalid-entry", "en"),)


@pytest.mark.parametrize("typed", ["", "#"])
def test_an_optional_question_is_skipped_with_hash_or_silence(typed: str) -> None:
    ivr = _ivr(questions=[_question(optional=True), _question(id="contract")])
    result, _ = drive(ivr, EN, "1", typed, "123#")
    assert dict(result.answers) == {"contract": "123"}
    assert result.fell_back is False


def test_an_optional_question_is_skipped_after_the_retries() -> None:
    ivr = _ivr(questions=[_question(optional=True, check="luhn", min_digits=2, retries=1)])
    result, _ = drive(ivr, EN, "1", LUHN_BAD, "12ab")
    assert (dict(result.answers), result.fell_back, result.category) == ({}, False, "printing")


def test_a_required_question_falls_back_after_the_retries() -> None:
    ivr = _ivr(questions=[_question(min_digits=6, max_digits=8)])
    result, _ = drive(ivr, EN, "2", "1", "", "12345", "123456789")
    assert (result.fell_back, result.reason) == (True, "invalid-input")
    assert result.failed_at == "question:customer_number"
    # What was chosen is kept for the record, but routing gets no skills: the default queue.
    assert (result.category, dict(result.skills)) == ("activation", {})


def test_a_lookup_asks_the_daemon_and_a_miss_costs_a_try() -> None:
    ivr = _ivr(questions=[_question(check="lookup", max_digits=6)])
    state, step = start(ivr, EN)
    state, step = advance(state, Keys("1"))
    state, step = advance(state, Keys("4711"))
    assert step == Verify("customer_number", "4711")
    state, step = advance(state, Checked(valid=False))
    assert isinstance(step, Ask)
    assert step.before == (Sound("ivr-invalid-entry", "en"),)
    state, step = advance(state, Keys("4712"))
    state, step = advance(state, Checked(valid=True))
    assert isinstance(step, Done)
    assert dict(step.result.answers) == {"customer_number": "4712"}


def test_lookup_misses_end_in_the_fallback_however_well_formed_the_numbers() -> None:
    ivr = _ivr(questions=[_question(check="lookup")])
    result, steps = drive(ivr, EN, "1", "1", False, "2", False, "3", False)
    assert (result.fell_back, result.failed_at) == (True, "question:customer_number")
    assert sum(isinstance(s, Verify) for s in steps) == 3


def test_a_one_digit_question_may_be_answered_during_the_notice() -> None:
    ivr = _ivr(questions=[_question(max_digits=1)])
    _, steps = drive(ivr, EN, "1", "7")
    assert asks(steps)[1].barge_in == "0123456789"


# --- recording ----------------------------------------------------------------------------


def test_the_description_is_recorded_last() -> None:
    ivr = _ivr(record_description={"seconds": 30, "prompt": _texts("After the tone...")})
    result, steps = drive(ivr, EN_FR, "2", "1", Recorded("/spool/firstline-1.wav"))
    record = steps[-2]
    assert record == Record((), Sound("ivr-record", "fr"), 30)
    assert result.recording == "/spool/firstline-1.wav"
    result, _ = drive(ivr, EN_FR, "2", "1", Recorded(None))
    assert (result.recording, result.category) == (None, "printing")


def test_no_recording_with_zero_seconds_or_after_a_fallback() -> None:
    _, steps = drive(_ivr(record_description={"seconds": 0}), EN, "1")
    assert not any(isinstance(s, Record) for s in steps)
    ivr = _ivr(record_description={"seconds": 30, "prompt": _texts("Speak.")})
    _, steps = drive(ivr, EN, "", "", "")
    assert not any(isinstance(s, Record) for s in steps)


# --- hostile input ------------------------------------------------------------------------

HOSTILE_KEYS = [
    "1\n",
    "1 ",
    "1' OR '1'='1",
    "1;EXEC System rm",
    "\x00",
    "\u0661",  # an Arabic-Indic one
    "\uff11",  # a full-width one
    "11",
    "1" * 10_000,
    "*",
    "#",
    "\r\nHANGUP",
]


@pytest.mark.parametrize("keys", HOSTILE_KEYS)
def test_hostile_keys_are_invalid_input_never_an_error(keys: str) -> None:
    questions = [_question(min_digits=3, max_digits=10)]
    result, _ = drive(_ivr(questions=questions, retries=0), EN_FR, keys)
    assert (result.fell_back, result.failed_at) == (True, "language")
    result, _ = drive(_ivr(questions=questions, retries=0), EN_FR, "1", "3", keys)
    assert (result.fell_back, result.failed_at) == (True, "question:customer_number")
    assert result.answers == {}


def test_a_dtmf_flood_is_refused_even_when_all_digits() -> None:
    ivr = _ivr(questions=[_question(max_digits=10)], retries=0)
    result, _ = drive(ivr, EN, "1", "4" * 500)
    assert result.fell_back
    assert all("4" * 11 not in value for value in result.answers.values())


# --- the facts builder: caller ids are caller-controlled ------------------------------------

HOSTILE_CALLER_IDS = [
    "",
    "   ",
    "anonymous",
    "Anonymous",
    "<unknown>",
    '"Evil" <+493012345678>',
    '030123456"\nEXEC System "rm -rf /"',
    "0301234567\r\nHANGUP",
    "030'123456",
    "1" * 200,
    "+49" + "1" * 197,
    "; DROP TABLE tickets; --",
    "٠٣٠١٢٣٤٥٦٧",
    "030123456\x00",
    "sip:+493012345678@evil.example",
    None,
    12345678,
]


class _Ticket:
    def __init__(self, number: str, status: str, owner: str | None) -> None:
        self.number = number
        self.status = status
        self.owner = owner


TICKETS = [_Ticket("2025-004711", TicketStatus.SECOND_LEVEL, "alice")]


@pytest.mark.parametrize("caller_id", HOSTILE_CALLER_IDS)
def test_hostile_caller_ids_are_unknown_callers(caller_id: object) -> None:
    facts = caller_facts(caller_id, region="DE", languages=["en", "fr"], tickets=TICKETS)
    assert facts == CallerFacts(languages=("en", "fr"))
    result, _ = drive(_ivr(), facts, "1", "1")
    assert (result.ticket, result.wants_owner, result.category) == (None, False, "printing")


def test_a_known_caller_keeps_their_open_tickets_and_odd_ones_are_dropped() -> None:
    tickets = [
        _Ticket("2025-000001", "done", "bob"),
        _Ticket("2025-000002", "closed", "bob"),
        _Ticket("2025-000003\nEXEC", "first_level", "bob"),
        _Ticket("9" * 40, "first_level", "bob"),
        *TICKETS,
    ]
    facts = caller_facts("030 12345678", region="DE", languages=["en"], tickets=tickets)
    assert facts.number == "+493012345678"
    assert facts.open_tickets == (OpenTicket("2025-004711", "second_level", owned=True),)


# --- the engine's contract ----------------------------------------------------------------


def test_advancing_wrongly_is_a_flow_error() -> None:
    state, step = start(_ivr(), EN)
    with pytest.raises(FlowError, match="takes Keys, not Checked"):
        advance(state, Checked(valid=True))
    state, step = advance(state, Keys("3"))
    assert isinstance(step, Done)
    with pytest.raises(FlowError, match="over"):
        advance(state, Keys("1"))
    with pytest.raises(FlowError, match="no language"):
        start(_ivr(), CallerFacts(languages=()))


def test_the_transition_table_only_moves_forward_or_asks_again() -> None:
    for (phase, outcome), target in TRANSITIONS.items():
        back_to_the_question = (phase, target) == (Phase.VERIFY, Phase.QUESTION)
        assert ORDER.index(target) >= ORDER.index(phase) or back_to_the_question
        if target is phase:
            assert outcome in (Outcome.REJECTED, Outcome.DEEPER, Outcome.ACCEPTED, Outcome.SKIPPED)
    assert {phase for phase, _ in TRANSITIONS} == set(ORDER) - {Phase.DONE}
    # Every phase that asks the caller has a way out when the caller never answers well.
    asking = (Phase.LANGUAGE, Phase.OWNER, Phase.MENU, Phase.QUESTION, Phase.VERIFY)
    assert all(TRANSITIONS[phase, Outcome.EXHAUSTED] is Phase.DONE for phase in asking)


def test_luhn() -> None:
    assert luhn_valid(LUHN_OK)
    assert luhn_valid("0")
    assert not luhn_valid(LUHN_BAD)
    assert not luhn_valid("")
    assert not luhn_valid("\u0667\u0669\u0669\u0662\u0667\u0663\u0669\u0668\u0667\u0661\u0663")
    assert not luhn_valid("7992739871a")


def test_prompt_names_for_the_config_and_the_shipped_sentences() -> None:
    ivr = _ivr(
        questions=[_question()],
        record_description={"seconds": 10, "prompt": _texts("Speak.")},
    )
    texts = ivr_prompt_texts(ivr)
    assert sorted(texts) == ["en", "fr"]
    assert sorted(texts["fr"]) == [
        "ivr-greeting",
        "ivr-language",
        "ivr-menu",
        "ivr-menu-2",
        "ivr-question-customer-number",
        "ivr-record",
    ]
    assert texts["fr"]["ivr-menu-2"] == "Activation 1, transfer 2. (fr)"
    # The fixed sentences are shipped in every language, one per ticket status.
    for language in ("en", "fr"):
        shipped = {p.name for p in load_prompts([language])}
        assert set(FIXED_PROMPTS) <= shipped
        assert not set(texts[language]) & shipped
    statuses = [name for name in FIXED_PROMPTS if name.startswith("ivr-status-")]
    assert len(statuses) == len(TICKET_STATUS_NAMES)
    # The generator accepts the configured texts as they are.
    names = {p.name for p in load_prompts(["en", "fr"], overrides=texts)}
    assert set(texts["en"]) <= names


# --- any caller at all --------------------------------------------------------------------

_ANY_KEYS = st.one_of(
    st.sampled_from(["", "1", "2", "3", "#", "*", "0", "9", LUHN_OK, LUHN_BAD]),
    st.text(alphabet="0123456789*#", max_size=25),
    st.text(max_size=30),
)
FUZZ_IVR = _ivr(
    questions=[
        _question(min_digits=5, max_digits=12, check="luhn", optional=True),
        _question(id="contract", check="lookup", max_digits=8),
    ],
    record_description={"seconds": 20, "prompt": _texts("Speak.")},
)
FUZZ_NAMES = set(FIXED_PROMPTS) | set(ivr_prompt_texts(FUZZ_IVR)["en"])
# Language and owner choice, two menu levels, two questions of which one is looked up,
# each at most 1 + retries times (and a lookup per try), the recording, the end.
FUZZ_BOUND = 3 + 3 + 2 * 3 + 3 + 2 * 3 + 1 + 1


@settings(max_examples=400, deadline=None)
@given(
    facts=st.sampled_from([EN, EN_FR, OWNED]),
    keys=st.lists(_ANY_KEYS, max_size=40),
    checks=st.lists(st.booleans(), max_size=10),
    recorded=st.sampled_from([None, "/spool/r.wav"]),
)
def test_any_caller_ends_in_a_usable_result_within_a_bound(
    facts: CallerFacts, keys: list[str], checks: list[bool], recorded: str | None
) -> None:
    state, step = start(FUZZ_IVR, facts)
    taken = 0
    while not isinstance(step, Done):
        taken += 1
        assert taken <= FUZZ_BOUND
        for item in (*step.before, step.prompt) if isinstance(step, Ask | Record) else ():
            assert not isinstance(item, Sound) or item.name in FUZZ_NAMES
            assert item.language in facts.languages
        if isinstance(step, Ask):
            event: Event = Keys(keys.pop(0) if keys else "")
        elif isinstance(step, Verify):
            assert step.value.isdigit()
            event = Checked(checks.pop(0) if checks else False)
        else:
            event = Recorded(recorded)
        state, step = advance(state, event)
    result = step.result
    assert result.language in facts.languages
    if result.fell_back or result.wants_owner:
        assert dict(result.skills) == {}
    assert result.fell_back == (result.reason in ("no-input", "invalid-input"))
    assert (result.failed_at is not None) == result.fell_back
    assert all(value.isdigit() and len(value) <= 12 for value in result.answers.values())
    if "customer_number" in result.answers:
        assert luhn_valid(result.answers["customer_number"])
