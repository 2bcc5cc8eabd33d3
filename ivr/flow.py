"""The IVR as a pure state machine: what a caller hears and is asked, given their keys.

`start(ivr, facts)` gives the first state and step; `advance(state, event)` the next ones,
where an event is what happened on the call: the keys the caller typed (`Keys`), the
recording made (`Recorded`), the lookup's verdict on a typed number (`Checked`). A step
says what to do: `Ask` (play, then collect keys), `Verify` (look a typed number up),
`Record`, or `Done` with the `FlowResult` routing needs.

No asyncio, no I/O, no clock: `ivr.runner` executes the steps over FastAGI, and the tests
drive the same engine with a scripted caller. It must not import the AGI code, the ticket
store or the daemon. It never sees a raw caller id: `caller_facts` reduces that to an E.164
number or nothing first. Prompt names (`ivr_prompt_texts`, `FIXED_PROMPTS`) are made here
from validated ids and keys only, so they are always safe file names.
"""

# Theory of operation
# -------------------
# Everything that decides where the flow goes next lives in `TRANSITIONS`: (phase, outcome)
# -> next phase. The phases run in the order of `ORDER`:
#
#   LANGUAGE  the language menu, when the hotline offers more than one language; the key
#             pressed sets the language of every later prompt (and CHANNEL(language)).
#   OWNER     the caller has an open ticket someone is working on: it is announced (number,
#             status) and the caller presses 1 for that person or 2 for a new request.
#   MENU      the menu tree, one level per answer, down to a leaf (category, skills,
#             priority hint).
#   QUESTION  the configured questions, in order: typed digits, checked by length and the
#             Luhn digit, or handed to VERIFY for the daemon's lookup.
#   RECORD    a short recorded description of the problem.
#   DONE      the result; nothing follows.
#
# Entering a phase that has nothing to do (one language only, no owned ticket, no menu, no
# question left, no recording configured) passes straight on to the next one in `ORDER`,
# so the table only says what a phase leads to, not which phases are configured.
#
# Every question is asked at most 1 + retries times. No input and invalid input both cost
# a try; a caller who runs out of tries ends in DONE with `fell_back` (the daemon routes
# the call to the hotline's default first-level queue: never a hang-up), except at an
# optional question, which is then skipped. An optional question can also be skipped at
# once by pressing '#' alone or keeping silent. Each answer either moves forward (down a
# finite tree, along a finite list) or costs a try, so every flow ends in DONE after a
# bounded number of steps, whatever the caller presses.
#
# Keys are caller-controlled text: anything that is not 0-9, '*' or '#', or longer than
# what was asked, is an invalid answer, never an error.

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Literal, Protocol

from acd.config.model import TICKET_STATUS_NAMES, Ivr, IvrLeaf, IvrMenu, IvrQuestion
from acd.numbers import normalise_number

__all__ = [
    "FIXED_PROMPTS",
    "ORDER",
    "TRANSITIONS",
    "Ask",
    "CallerFacts",
    "Checked",
    "Digits",
    "Done",
    "Event",
    "FlowError",
    "FlowResult",
    "FlowState",
    "Item",
    "Keys",
    "OpenTicket",
    "Outcome",
    "Phase",
    "Record",
    "Recorded",
    "Sound",
    "Step",
    "Verify",
    "advance",
    "caller_facts",
    "ivr_prompt_texts",
    "luhn_valid",
    "menu_prompt_name",
    "question_prompt_name",
    "start",
    "status_prompt_name",
]


class Phase(enum.Enum):
    """Where the flow stands (see the theory of operation)."""

    LANGUAGE = "language"
    OWNER = "owner"
    MENU = "menu"
    QUESTION = "question"
    VERIFY = "verify"
    RECORD = "record"
    DONE = "done"


class Outcome(enum.Enum):
    """What the caller's last answer did to the phase it was given in."""

    ACCEPTED = "accepted"  # a valid answer: this phase (or this question) is complete
    DEEPER = "deeper"  # a submenu was chosen: the menu again, one level down
    CHECK = "check"  # a well-formed number awaits the daemon's lookup
    REJECTED = "rejected"  # no or invalid input with tries left: ask again
    SKIPPED = "skipped"  # an optional question is left unanswered
    EXHAUSTED = "exhausted"  # no valid input after the retries: the fallback
    TO_OWNER = "to-owner"  # the caller asked for the person handling their ticket


ORDER: Final = (
    Phase.LANGUAGE,
    Phase.OWNER,
    Phase.MENU,
    Phase.QUESTION,
    Phase.VERIFY,
    Phase.RECORD,
    Phase.DONE,
)

TRANSITIONS: Final[Mapping[tuple[Phase, Outcome], Phase]] = MappingProxyType(
    {
        (Phase.LANGUAGE, Outcome.ACCEPTED): Phase.OWNER,
        (Phase.LANGUAGE, Outcome.REJECTED): Phase.LANGUAGE,
        (Phase.LANGUAGE, Outcome.EXHAUSTED): Phase.DONE,
        (Phase.OWNER, Outcome.TO_OWNER): Phase.DONE,
        (Phase.OWNER, Outcome.ACCEPTED): Phase.MENU,  # 2: a new request
        (Phase.OWNER, Outcome.REJECTED): Phase.OWNER,
        (Phase.OWNER, Outcome.EXHAUSTED): Phase.DONE,
        (Phase.MENU, Outcome.DEEPER): Phase.MENU,
        (Phase.MENU, Outcome.ACCEPTED): Phase.QUESTION,  # a leaf
        (Phase.MENU, Outcome.REJECTED): Phase.MENU,
        (Phase.MENU, Outcome.EXHAUSTED): Phase.DONE,
        (Phase.QUESTION, Outcome.ACCEPTED): Phase.QUESTION,  # the next one, if any
        (Phase.QUESTION, Outcome.CHECK): Phase.VERIFY,
        (Phase.QUESTION, Outcome.REJECTED): Phase.QUESTION,
        (Phase.QUESTION, Outcome.SKIPPED): Phase.QUESTION,
        (Phase.QUESTION, Outcome.EXHAUSTED): Phase.DONE,
        (Phase.VERIFY, Outcome.ACCEPTED): Phase.QUESTION,
        (Phase.VERIFY, Outcome.REJECTED): Phase.QUESTION,  # the same question again
        (Phase.VERIFY, Outcome.SKIPPED): Phase.QUESTION,
        (Phase.VERIFY, Outcome.EXHAUSTED): Phase.DONE,
        (Phase.RECORD, Outcome.ACCEPTED): Phase.DONE,
    }
)

# Shipped texts (ivr/prompts/<lang>.yaml) the flow plays; a test keeps the two in step.
_STATUS_PREFIX = "ivr-status-"
FIXED_PROMPTS: Final = (
    "ivr-invalid",
    "ivr-invalid-entry",
    "ivr-open-ticket",
    *(_STATUS_PREFIX + status.replace("_", "-") for status in TICKET_STATUS_NAMES),
    "ivr-owner-choice",
    "ivr-owner-connect",
    "ivr-please-hold",
    "ivr-fallback",
)
_OPEN_STATUSES = frozenset(TICKET_STATUS_NAMES) - {"done"}
_KEYS = frozenset("0123456789*#")
_MAX_TICKETS = 20  # a caller with more open tickets hears about the first anyway
_TICKET_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
_MAX_TICKET_NUMBER = 32


class FlowError(Exception):
    """The engine was driven wrongly (an event after Done, or of the wrong kind): a bug in
    the caller of `advance`, never something a telephone caller can cause."""


# --- what the caller hears -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sound:
    """Firstline's prompt ``name`` (played as ``firstline/<name>``) in ``language``."""

    name: str
    language: str


@dataclass(frozen=True, slots=True)
class Digits:
    """A number read digit by digit (Asterisk's core sounds) in ``language``."""

    digits: str
    language: str


Item = Sound | Digits


# --- steps: what to do next ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """Play ``before``, then ``prompt`` while collecting up to ``max_digits`` keys.

    '#' ends the typing; ``timeout_ms`` is the wait for the first and each further key.
    A key of ``barge_in`` pressed during ``before`` is the answer at once (one-key menus).
    Answer with `Keys` (the keys as Asterisk returned them; "" for nothing).
    """

    before: tuple[Item, ...]
    prompt: Sound
    max_digits: int
    timeout_ms: int
    barge_in: str = ""


@dataclass(frozen=True, slots=True)
class Verify:
    """Look up the number typed for question ``question``; answer with `Checked`."""

    question: str
    value: str


@dataclass(frozen=True, slots=True)
class Record:
    """Play ``before`` and ``prompt``, then record up to ``seconds``; answer with `Recorded`."""

    before: tuple[Item, ...]
    prompt: Sound
    seconds: int


@dataclass(frozen=True, slots=True)
class Done:
    """The flow is over: play ``announce``, then route by ``result``."""

    result: FlowResult
    announce: tuple[Item, ...]


Step = Ask | Verify | Record | Done


# --- events: what happened -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keys:
    """What the caller typed for an `Ask` ("" : nothing before the timeout, or '#' alone)."""

    text: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """Where the recording of a `Record` step is, or None when none was made."""

    path: str | None


@dataclass(frozen=True, slots=True)
class Checked:
    """The lookup's verdict on the number of a `Verify` step."""

    valid: bool


Event = Keys | Recorded | Checked


# --- facts in, result out ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenTicket:
    """One of the caller's open tickets, as far as the IVR needs it."""

    number: str
    status: str
    owned: bool

    @property
    def spoken(self) -> str:
        """The digits read to the caller (as the dialplan reads ticket numbers)."""
        return "".join(c for c in self.number if c in "0123456789")


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What is known before the flow: the hotline's languages (first: the default) and,
    for a caller whose number is known, their open tickets (the first owned one is
    announced)."""

    languages: tuple[str, ...]
    number: str | None = None
    open_tickets: tuple[OpenTicket, ...] = ()


@dataclass(frozen=True, slots=True)
class FlowResult:
    """What the flow learnt, for routing and the call record.

    ``skills`` is empty when no leaf was reached, the caller asked for the owner, or the
    flow fell back, so routing then takes the hotline's default queue; ``category``,
    ``priority`` and ``answers`` keep what was learnt before a fallback, for the record.
    ``fell_back``: no valid input after the retries (``reason`` 'no-input' or
    'invalid-input', ``failed_at`` where: 'language', 'owner-choice', 'menu', 'menu-2',
    'question:<id>'). ``ticket``: the open ticket announced, if any; ``wants_owner``: the
    caller pressed 1 to reach its owner. ``reason`` is 'completed' or 'owner' otherwise.
    ``menu_path``: the keys pressed in the menu, e.g. '2-1'.
    """

    language: str
    category: str | None = None
    skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    priority: str | None = None
    answers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    recording: str | None = None
    menu_path: str = ""
    ticket: str | None = None
    wants_owner: bool = False
    fell_back: bool = False
    reason: Literal["completed", "owner", "no-input", "invalid-input"] = "completed"
    failed_at: str | None = None

    def skills_text(self) -> str:
        """``skill:level,...``: the FIRSTLINE_SKILLS format `acd.routing` parses."""
        return ",".join(f"{skill}:{level}" for skill, level in sorted(self.skills.items()))


@dataclass(frozen=True, slots=True)
class FlowState:
    """Everything the flow remembers between two steps (immutable: `advance` makes a new
    one). A hang-up simply drops it: there is nothing else to clean up."""

    ivr: Ivr
    facts: CallerFacts
    phase: Phase
    language: str
    tries: int = 0
    path: tuple[str, ...] = ()
    leaf: IvrLeaf | None = None
    question: int = 0
    pending: str | None = None
    answers: tuple[tuple[str, str], ...] = ()
    recording: str | None = None
    notice: tuple[Item, ...] = ()
    failure: Literal["no-input", "invalid-input"] = "no-input"
    ended: Outcome | None = None
    failed_at: str | None = None


class _TicketLike(Protocol):
    @property
    def number(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def owner(self) -> str | None: ...


def caller_facts(
    raw_caller_id: object,
    *,
    region: str,
    languages: Sequence[str],
    tickets: Iterable[_TicketLike] = (),
) -> CallerFacts:
    """The facts for `start` from the caller id as Asterisk gave it.

    Anything that is not a plausible phone number (empty, 'anonymous', quotes, newlines,
    absurd length; see `acd.numbers.normalise_number`) is an unknown caller: no number and
    no tickets, whatever ``tickets`` holds. Look tickets up only by the normalised number.
    Tickets with an unknown status or an odd number are left out.
    """
    number = normalise_number(raw_caller_id, region) if isinstance(raw_caller_id, str) else None
    if number is None:
        return CallerFacts(languages=tuple(languages))
    found: list[OpenTicket] = []
    for ticket in tickets:
        if len(found) == _MAX_TICKETS:
            break
        name = str(ticket.number)
        if (
            str(ticket.status) in _OPEN_STATUSES
            and 0 < len(name) <= _MAX_TICKET_NUMBER
            and set(name) <= _TICKET_CHARS
        ):
            found.append(OpenTicket(name, str(ticket.status), owned=bool(ticket.owner)))
    return CallerFacts(languages=tuple(languages), number=number, open_tickets=tuple(found))


# --- prompt names --------------------------------------------------------------------------


def menu_prompt_name(path: Sequence[str]) -> str:
    """``ivr-menu`` for the top menu, ``ivr-menu-2-1`` for the submenu under keys 2, 1."""
    return "-".join(("ivr-menu", *path))


def question_prompt_name(question_id: str) -> str:
    """``ivr-question-customer-number`` for question ``customer_number``."""
    return "ivr-question-" + question_id.replace("_", "-")


def status_prompt_name(status: str) -> str:
    """``ivr-status-second-level`` for the ticket status ``second_level``."""
    return _STATUS_PREFIX + status.replace("_", "-")


def ivr_prompt_texts(ivr: Ivr) -> dict[str, dict[str, str]]:
    """Language -> prompt name -> text: the configured texts, for `ivr.prompts` to speak."""
    texts: dict[str, dict[str, str]] = {}

    def put(name: str, by_language: Mapping[str, str]) -> None:
        for language, text in by_language.items():
            texts.setdefault(language, {})[name] = text

    if ivr.greeting is not None:
        put("ivr-greeting", ivr.greeting)
    if ivr.language_menu is not None:
        put("ivr-language", ivr.language_menu)
    menus: list[tuple[tuple[str, ...], IvrMenu]] = [((), ivr.menu)] if ivr.menu else []
    while menus:
        path, menu = menus.pop()
        put(menu_prompt_name(path), menu.prompt)
        menus.extend(
            ((*path, key), option)
            for key, option in menu.options.items()
            if isinstance(option, IvrMenu)
        )
    for question in ivr.questions:
        put(question_prompt_name(question.id), question.prompt)
    recording = ivr.record_description
    if recording is not None and recording.seconds > 0 and recording.prompt is not None:
        put("ivr-record", recording.prompt)
    return texts


def luhn_valid(digits: str) -> bool:
    """True when the last of ``digits`` (ASCII 0-9 only) is their Luhn check digit."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# --- the engine ----------------------------------------------------------------------------


def start(ivr: Ivr, facts: CallerFacts) -> tuple[FlowState, Step]:
    """The flow's first state and step: the greeting, then the first phase with work."""
    if not facts.languages:
        raise FlowError("the hotline offers no language")
    default = facts.languages[0]
    greeting: tuple[Item, ...] = ()
    if ivr.greeting is not None:
        # With a choice to make, each language greets in its own voice; else just one.
        spoken = facts.languages if _asks_language(ivr, facts) else (default,)
        greeting = tuple(Sound("ivr-greeting", lang) for lang in spoken if lang in ivr.greeting)
    state = FlowState(ivr=ivr, facts=facts, phase=ORDER[0], language=default, notice=greeting)
    return _enter(state, ORDER[0])


def advance(state: FlowState, event: Event) -> tuple[FlowState, Step]:
    """The state and step after ``event``, the answer to the step ``state`` last gave."""
    phase = state.phase
    handler = _HANDLERS.get(phase)
    if handler is None:
        raise FlowError("the flow is over; nothing follows Done")
    expected = _EVENTS[phase]
    if not isinstance(event, expected):
        raise FlowError(f"{phase.value} takes {expected.__name__}, not {type(event).__name__}")
    outcome, state = handler(replace(state, notice=()), event)
    if outcome not in (Outcome.REJECTED, Outcome.CHECK):
        # A lookup's verdict still counts against the tries of the question it checks.
        state = replace(state, tries=0)
    next_phase = TRANSITIONS[phase, outcome]
    if next_phase is Phase.DONE:
        state = replace(state, ended=outcome)
    return _enter(state, next_phase)


def _enter(state: FlowState, phase: Phase) -> tuple[FlowState, Step]:
    index = ORDER.index(phase)
    while not _APPLIES[ORDER[index]](state):
        index += 1
    state = replace(state, phase=ORDER[index])
    return state, _STEPS[state.phase](state)


# --- what each phase needs ----------------------------------------------------------------


def _asks_language(ivr: Ivr, facts: CallerFacts) -> bool:
    return len(facts.languages) > 1 and ivr.language_menu is not None


def _language_keys(state: FlowState) -> dict[str, str]:
    """Key -> language, for the offered languages the language menu has a text for."""
    offered = set(state.facts.languages)
    texts = state.ivr.language_menu or {}
    keys = state.ivr.keys_for(list(state.facts.languages))
    return {key: lang for key, lang in sorted(keys.items()) if lang in offered and lang in texts}


def _owned_ticket(facts: CallerFacts) -> OpenTicket | None:
    return next((t for t in facts.open_tickets if t.owned), None)


def _menu_at(state: FlowState) -> IvrMenu:
    menu = state.ivr.menu
    if menu is None:
        raise FlowError("no menu configured")
    for key in state.path:
        option = menu.options[key]
        if not isinstance(option, IvrMenu):
            raise FlowError(f"menu path {'-'.join(state.path)} runs through a leaf")
        menu = option
    return menu


def _question(state: FlowState) -> IvrQuestion:
    return state.ivr.questions[state.question]


def _records(state: FlowState) -> bool:
    recording = state.ivr.record_description
    return recording is not None and recording.seconds > 0


# Whether a phase has work to do for this call; `_enter` passes by those that have none.
_APPLIES: Final[Mapping[Phase, Callable[[FlowState], bool]]] = MappingProxyType(
    {
        Phase.LANGUAGE: lambda s: _asks_language(s.ivr, s.facts) and bool(_language_keys(s)),
        Phase.OWNER: lambda s: _owned_ticket(s.facts) is not None,
        Phase.MENU: lambda s: s.ivr.menu is not None,
        Phase.QUESTION: lambda s: s.question < len(s.ivr.questions),
        Phase.VERIFY: lambda s: s.pending is not None,
        Phase.RECORD: _records,
        Phase.DONE: lambda s: True,
    }
)


def _retries(state: FlowState) -> int:
    override: int | None = None
    if state.phase is Phase.MENU:
        override = _menu_at(state).retries
    elif state.phase in (Phase.QUESTION, Phase.VERIFY):
        override = _question(state).retries
    return state.ivr.retries if override is None else override


def _timeout_ms(ivr: Ivr, override: int | None) -> int:
    return (ivr.timeout if override is None else override) * 1000


# --- the step each phase gives ------------------------------------------------------------


def _ask_language(state: FlowState) -> Step:
    keys = _language_keys(state)
    # Each language's text in its own voice, in key order: "For English press 1. Pour..."
    sounds = [Sound("ivr-language", code) for code in keys.values()]
    timeout = state.ivr.timeout * 1000
    return Ask((*state.notice, *sounds[:-1]), sounds[-1], 1, timeout, "".join(keys))


def _ask_owner(state: FlowState) -> Step:
    lang = state.language
    ticket = _owned_ticket(state.facts)
    announce: tuple[Item, ...] = ()
    if ticket is not None and state.tries == 0:
        announce = (
            Sound("ivr-open-ticket", lang),
            Digits(ticket.spoken, lang),
            Sound(status_prompt_name(ticket.status), lang),
        )
    prompt = Sound("ivr-owner-choice", lang)
    return Ask((*state.notice, *announce), prompt, 1, state.ivr.timeout * 1000, "12")


def _ask_menu(state: FlowState) -> Step:
    menu = _menu_at(state)
    prompt = Sound(menu_prompt_name(state.path), state.language)
    timeout = _timeout_ms(state.ivr, menu.timeout)
    return Ask(state.notice, prompt, 1, timeout, "".join(sorted(menu.options)))


def _ask_question(state: FlowState) -> Step:
    question = _question(state)
    prompt = Sound(question_prompt_name(question.id), state.language)
    barge_in = "0123456789" if question.max_digits == 1 else ""
    timeout = _timeout_ms(state.ivr, question.timeout)
    return Ask(state.notice, prompt, question.max_digits, timeout, barge_in)


def _verify(state: FlowState) -> Step:
    return Verify(_question(state).id, state.pending or "")


def _record(state: FlowState) -> Step:
    recording = state.ivr.record_description
    seconds = recording.seconds if recording is not None else 0
    return Record(state.notice, Sound("ivr-record", state.language), seconds)


def _done(state: FlowState) -> Step:
    lang = state.language
    ticket = _owned_ticket(state.facts)
    leaf = state.leaf
    fell_back = state.ended is Outcome.EXHAUSTED
    wants_owner = state.ended is Outcome.TO_OWNER
    reason: Literal["completed", "owner", "no-input", "invalid-input"] = "completed"
    if wants_owner:
        reason, farewell = "owner", "ivr-owner-connect"
    elif fell_back:
        reason, farewell = state.failure, "ivr-fallback"
    else:
        farewell = "ivr-please-hold"
    result = FlowResult(
        language=lang,
        category=leaf.category if leaf is not None else None,
        # Without skills routing takes the default queue: what a fallback must do.
        skills=MappingProxyType(dict(leaf.skills) if leaf is not None and not fell_back else {}),
        priority=leaf.priority if leaf is not None else None,
        answers=MappingProxyType(dict(state.answers)),
        recording=state.recording,
        menu_path="-".join(state.path),
        ticket=ticket.number if ticket is not None else None,
        wants_owner=wants_owner,
        fell_back=fell_back,
        reason=reason,
        failed_at=state.failed_at if fell_back else None,
    )
    return Done(result, (*state.notice, Sound(farewell, lang)))


_STEPS: Final[Mapping[Phase, Callable[[FlowState], Step]]] = MappingProxyType(
    {
        Phase.LANGUAGE: _ask_language,
        Phase.OWNER: _ask_owner,
        Phase.MENU: _ask_menu,
        Phase.QUESTION: _ask_question,
        Phase.VERIFY: _verify,
        Phase.RECORD: _record,
        Phase.DONE: _done,
    }
)


# --- what each phase makes of the answer --------------------------------------------------

_Failure = Literal["no-input", "invalid-input"]


def _failure(text: str) -> _Failure:
    return "no-input" if text == "" else "invalid-input"


def _on_language(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    text = event.text if isinstance(event, Keys) else ""
    language = _language_keys(state).get(text)
    if language is not None:
        return Outcome.ACCEPTED, replace(state, language=language)
    return _failed(state, _failure(text), "language", "ivr-invalid")


def _on_owner(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    text = event.text if isinstance(event, Keys) else ""
    if text == "1":
        return Outcome.TO_OWNER, state
    if text == "2":
        return Outcome.ACCEPTED, state
    return _failed(state, _failure(text), "owner-choice", "ivr-invalid")


def _on_menu(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    text = event.text if isinstance(event, Keys) else ""
    option = _menu_at(state).options.get(text) if len(text) == 1 else None
    if isinstance(option, IvrMenu):
        return Outcome.DEEPER, replace(state, path=(*state.path, text))
    if isinstance(option, IvrLeaf):
        return Outcome.ACCEPTED, replace(state, path=(*state.path, text), leaf=option)
    return _failed(state, _failure(text), "-".join(("menu", *state.path)), "ivr-invalid")


def _on_answer(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    text = event.text if isinstance(event, Keys) else ""
    question = _question(state)
    # Bounded and from a known alphabet before anything else looks at it.
    typed = text if len(text) <= question.max_digits and set(text) <= _KEYS else None
    if typed is not None:
        typed = typed.removesuffix("#")  # '#' ends the typing; Asterisk usually drops it
    if typed == "" and question.optional:
        return Outcome.SKIPPED, replace(state, question=state.question + 1)
    if (
        typed is None
        or not typed.isdigit()
        or not question.min_digits <= len(typed) <= question.max_digits
        or (question.check == "luhn" and not luhn_valid(typed))
    ):
        failure = _failure(text if typed is None else typed)
        return _failed(state, failure, f"question:{question.id}", "ivr-invalid-entry")
    if question.check == "lookup":
        return Outcome.CHECK, replace(state, pending=typed)
    return Outcome.ACCEPTED, _answered(state, typed)


def _on_checked(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    value, state = state.pending, replace(state, pending=None)
    if isinstance(event, Checked) and event.valid and value is not None:
        return Outcome.ACCEPTED, _answered(state, value)
    where = f"question:{_question(state).id}"
    return _failed(state, "invalid-input", where, "ivr-invalid-entry")


def _on_recorded(state: FlowState, event: Event) -> tuple[Outcome, FlowState]:
    path = event.path if isinstance(event, Recorded) else None
    return Outcome.ACCEPTED, replace(state, recording=path)


_HANDLERS: Final[Mapping[Phase, Callable[[FlowState, Event], tuple[Outcome, FlowState]]]] = (
    MappingProxyType(
        {
            Phase.LANGUAGE: _on_language,
            Phase.OWNER: _on_owner,
            Phase.MENU: _on_menu,
            Phase.QUESTION: _on_answer,
            Phase.VERIFY: _on_checked,
            Phase.RECORD: _on_recorded,
        }
    )
)
_EVENTS: Final[Mapping[Phase, type[Event]]] = MappingProxyType(
    {
        Phase.LANGUAGE: Keys,
        Phase.OWNER: Keys,
        Phase.MENU: Keys,
        Phase.QUESTION: Keys,
        Phase.VERIFY: Checked,
        Phase.RECORD: Recorded,
    }
)


def _answered(state: FlowState, value: str) -> FlowState:
    question = _question(state)
    return replace(
        state, answers=(*state.answers, (question.id, value)), question=state.question + 1
    )


def _failed(
    state: FlowState, failure: _Failure, where: str, invalid_prompt: str
) -> tuple[Outcome, FlowState]:
    """One try used up: ask again, or give up (skip an optional question, else fall back)."""
    tries = state.tries + 1
    if tries > _retries(state):
        if state.phase in (Phase.QUESTION, Phase.VERIFY) and _question(state).optional:
            return Outcome.SKIPPED, replace(state, question=state.question + 1)
        return Outcome.EXHAUSTED, replace(state, failure=failure, failed_at=where)
    # The invalid-key notice is said in the default language while none is chosen yet.
    lang = state.facts.languages[0] if state.phase is Phase.LANGUAGE else state.language
    notice = () if failure == "no-input" else (Sound(invalid_prompt, lang),)
    return Outcome.REJECTED, replace(state, tries=tries, notice=notice, failure=failure)
