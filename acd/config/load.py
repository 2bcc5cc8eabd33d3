"""Load the YAML configuration and report every mistake at once, with file:line:col.

The file is parsed with ruamel.yaml's round-trip loader so each mapping and sequence knows
where its keys and items are; pydantic validates the data; cross-reference checks (unknown
ids, duplicates, colliding numbers, queues nobody can staff) run on the same parsed tree.
Every problem becomes a ``ConfigIssue``; if there is any, ``ConfigInvalid`` carries all of
them. Nothing here raises a traceback at an admin for a mistake in the file, and nothing
here writes files.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML, MappingNode, Node, SequenceNode
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.reader import ReaderError

from acd.config import model as _model
from acd.config.model import Config
from acd.config.secrets import BASE_DIR_CONTEXT, SecretUnavailableError

__all__ = ["ConfigInvalid", "ConfigIssue", "init_missing_secret_files", "load_config"]

Loc = tuple[str | int, ...]
_Kind = Literal["key", "value", "parent"]
Finding = tuple[Loc, _Kind, str]

# Levels of mappings and sequences in one another; a desk needs about twenty. Deeper input
# (a pasted blob, "[[[[...") would exhaust Python's stack in the YAML library.
_MAX_NESTING = 100
# What ruamel.yaml counts as a line break, so positions computed here match its marks.
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_BYTE_LINE_BREAK = re.compile(b"\r\n|[\r\n]")


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem in the configuration, at a 1-based line and column of ``file``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigInvalid(Exception):  # noqa: N818 - the name the CLI and docs use
    """The configuration has problems; ``issues`` lists all of them, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = sorted(set(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load_config(path: Path, *, check_secrets: bool = False) -> Config:
    """Read, validate and cross-check the configuration at ``path``.

    With ``check_secrets`` every referenced secret must also be readable (``acd check``).
    Raises ``ConfigInvalid`` listing every problem found.
    """
    name = str(path)
    text = _read_text(path)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True  # reported below, with the others, instead of aborting
    try:
        tree = yaml.compose(text)
        too_deep = _too_deep(tree)
        if too_deep is not None:
            raise ConfigInvalid([ConfigIssue(name, *too_deep, _TOO_DEEP)])
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigInvalid([ConfigIssue(name, line, col, f"YAML syntax: {what}")]) from None
    except ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line, col = _position(text, exc.position)
        char = exc.character
        what = (
            f"character U+{char:04X} is not allowed in YAML"
            if isinstance(char, int)
            else f"YAML syntax: {exc.reason}"
        )
        raise ConfigInvalid([ConfigIssue(name, line, col, what)]) from None
    except YAMLError as exc:
        raise ConfigInvalid([ConfigIssue(name, 1, 1, f"YAML syntax: {exc}")]) from None
    except RecursionError:  # nested deeper than the composer's recursion can go
        deep = _first_too_deep_event(text)
        raise ConfigInvalid([ConfigIssue(name, *deep, _TOO_DEEP)]) from None
    if not isinstance(data, CommentedMap):
        raise ConfigInvalid([ConfigIssue(name, 1, 1, "the file must hold a mapping of sections")])

    locator = _Locator(name, data)
    issues = [ConfigIssue(name, line, col, msg) for line, col, msg in _duplicate_keys(tree)]
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={BASE_DIR_CONTEXT: path.parent.absolute()})
    except ValidationError as exc:
        issues.extend(_from_pydantic(exc, locator))
    issues.extend(locator.issue(loc, kind, msg) for loc, kind, msg in _cross_check(data))
    if config is not None and check_secrets:
        for loc, ref in config.secret_refs():
            try:
                ref.reveal()
            except SecretUnavailableError as exc:
                issues.append(locator.issue(loc, "value", f"secret unavailable: {exc}"))
    if issues or config is None:
        raise ConfigInvalid(issues)
    return config


def _read_text(path: Path) -> str:
    """The file's text, newlines translated as text mode does; unreadable or non-UTF-8
    content is a `ConfigInvalid` saying where."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid([ConfigIssue(name, 1, 1, f"cannot read the file: {exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        breaks = list(_BYTE_LINE_BREAK.finditer(before))
        line = len(breaks) + 1
        col = exc.start - (breaks[-1].end() if breaks else 0) + 1
        message = f"not UTF-8: byte 0x{raw[exc.start]:02x} ({exc.reason}); save the file as UTF-8"
        raise ConfigInvalid([ConfigIssue(name, line, col, message)]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, col) of character ``index`` of ``text``, lines as ruamel.yaml counts."""
    breaks = list(_LINE_BREAK.finditer(text, 0, max(0, min(index, len(text)))))
    return len(breaks) + 1, index - (breaks[-1].end() if breaks else 0) + 1


_TOO_DEEP = f"YAML nested too deeply (more than {_MAX_NESTING} levels of mappings and lists)"


def _too_deep(tree: Node | None) -> tuple[int, int] | None:
    """(line, col) of the first collection nested deeper than _MAX_NESTING, if any.

    Iterative, so that it cannot itself run out of stack; an alias is visited once.
    """
    found: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack: list[tuple[Node, int]] = [] if tree is None else [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or not isinstance(node, MappingNode | SequenceNode):
            continue
        seen.add(id(node))
        if depth > _MAX_NESTING:
            found.append((node.start_mark.line + 1, node.start_mark.column + 1))
            continue
        children = (
            [part for pair in node.value for part in pair]
            if isinstance(node, MappingNode)
            else node.value
        )
        stack.extend((child, depth + 1) for child in children)
    return min(found, default=None)


def _first_too_deep_event(text: str) -> tuple[int, int]:
    """(line, col) where the nesting first passes _MAX_NESTING, found from the parser's
    events, which come without recursion; (1, 1) if it never does."""
    depth = 0
    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > _MAX_NESTING:
                    return event.start_mark.line + 1, event.start_mark.column + 1
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except YAMLError:
        pass
    return 1, 1


def init_missing_secret_files(config: Config | Path) -> list[Path]:
    """Create every missing ``file:`` secret with a random token (0600); return their paths.

    Takes a loaded config or the path of one (loaded here, so ``ConfigInvalid`` may rise).
    """
    if isinstance(config, Path):
        config = load_config(config)
    created: list[Path] = []
    for _, ref in config.secret_refs():
        path = ref.create_if_missing()
        if path is not None:
            created.append(path)
    return created


# --- positions -----------------------------------------------------------------------------


class _Locator:
    """Maps a location path (as pydantic reports it) to a position in the YAML file."""

    def __init__(self, file: str, root: CommentedMap) -> None:
        self._file = file
        self._root = root

    def issue(self, loc: Loc, kind: _Kind, message: str) -> ConfigIssue:
        line, col = self.position(loc, kind)
        return ConfigIssue(self._file, line, col, message)

    def position(self, loc: Loc, kind: _Kind) -> tuple[int, int]:
        """1-based (line, col) of the key, the value, or (for a missing key) the parent."""
        node: Any = self._root
        pos = (0, 0)
        steps = list(loc[:-1]) if kind == "parent" else list(loc)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            if isinstance(node, CommentedMap) and isinstance(step, str) and step not in node:
                # pydantic names keys as strings; YAML's unquoted `1:` is the int key 1.
                number = int(step) if step.isascii() and step.isdigit() else None
                step = number if number is not None and number in node else step  # noqa: PLW2901
            if isinstance(node, CommentedMap) and step in node:
                found = _key_positions(node, step)
                if found is not None:
                    key_pos, value_pos = found
                    pos = key_pos if (last and kind in ("key", "parent")) else value_pos
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    pos = node.lc.item(step)
                node = node[step]
            else:
                # pydantic adds steps that are not in the file (a function name, '[key]'):
                # stay at the deepest node that exists.
                continue
        return pos[0] + 1, pos[1] + 1


def _key_positions(node: CommentedMap, key: Any) -> tuple[Any, Any] | None:
    """Where ``key`` and its value are written: in ``node`` or, for a key merged in with
    ``<<``, in the mapping it came from (None if nowhere, e.g. a key made up by a tag)."""
    maps: list[Any] = [node]
    seen: set[int] = set()
    while maps:
        current = maps.pop(0)
        if id(current) in seen or not isinstance(current, CommentedMap):
            continue
        seen.add(id(current))
        if key in current.lc.data:
            return current.lc.key(key), current.lc.value(key)
        # ruamel.yaml keeps the merged mappings in order of precedence (older versions as
        # (index, mapping) pairs).
        for merged in getattr(current, "merge", None) or ():
            maps.append(merged[1] if isinstance(merged, tuple) else merged)
    return None


def _duplicate_keys(node: Node, seen: set[int] | None = None) -> Iterator[tuple[int, int, str]]:
    # An alias is the node it names: visit each once (an alias inside itself would loop).
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key.value, str):
                continue
            mark = key.start_mark
            if key.value in first and key.value != "<<":
                yield (
                    mark.line + 1,
                    mark.column + 1,
                    f"duplicate key '{key.value}' (first at line {first[key.value]})",
                )
            else:
                first.setdefault(key.value, mark.line + 1)
            yield from _duplicate_keys(value, seen)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, seen)


def _field_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(_model).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            names.update(obj.model_fields)
    names.update({"env", "file"})
    return names


def _dotted(loc: Loc) -> str:
    out = ""
    for step in loc:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + step
    return out


def _from_pydantic(exc: ValidationError, locator: _Locator) -> Iterator[ConfigIssue]:
    known = _field_names()
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        kind = error["type"]
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden":
            key = str(loc[-1])
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close and close[0] != key else ""
            yield locator.issue(loc, "key", f"unknown key '{key}'{hint}")
        elif kind == "missing":
            where = _dotted(loc[:-1]) or "the top level"
            yield locator.issue(loc, "parent", f"missing key '{loc[-1]}' in {where}")
        elif loc and loc[-1] == "[key]":
            yield locator.issue(loc[:-1], "key", f"{_dotted(loc[:-1])}: key: {message}")
        else:
            yield locator.issue(loc, "value", f"{_dotted(loc)}: {message}")


# --- cross-reference checks on the parsed tree (defensive: parts may be invalid) ---------


def _seq(node: Any, key: str) -> list[tuple[int, Mapping[str, Any]]]:
    value = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)]


def _map(node: Any, key: str) -> Mapping[Any, Any]:
    value = node.get(key) if isinstance(node, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ids(
    data: Mapping[str, Any], section: str, findings: list[tuple[Loc, _Kind, str]]
) -> dict[str, int]:
    """Index of first occurrence by id; reports duplicates."""
    seen: dict[str, int] = {}
    for i, item in _seq(data, section):
        ident = _str(item.get("id"))
        if ident is None:
            continue
        if ident in seen:
            findings.append(((section, i, "id"), "value", f"duplicate {section[:-1]} id '{ident}'"))
        else:
            seen[ident] = i
    return seen


def _levels(node: Any) -> dict[str, int]:
    if not isinstance(node, Mapping):
        return {}
    return {str(k): v for k, v in node.items() if isinstance(v, int) and not isinstance(v, bool)}


def _cross_check(data: Mapping[str, Any]) -> list[tuple[Loc, _Kind, str]]:
    found: list[tuple[Loc, _Kind, str]] = []
    ids = {
        section: _ids(data, section, found) for section in ("skills", "queues", "agents", "sites")
    }
    found.extend(_default_queue(data, ids["queues"]))
    alerts_queue = _str(_map(data, "mqtt").get("alerts_queue"))
    if alerts_queue is not None and alerts_queue not in ids["queues"]:
        found.append((("mqtt", "alerts_queue"), "value", f"unknown queue '{alerts_queue}'"))
    found.extend(_queue_references(data, ids["skills"], ids["queues"]))
    found.extend(_agent_references(data, ids["skills"], ids["sites"]))
    for team, members in _map(data, "teams").items():
        if not isinstance(members, list):
            continue
        for j, member in enumerate(members):
            if isinstance(member, str) and member not in ids["agents"]:
                found.append((("teams", team, j), "value", f"unknown agent '{member}'"))
    found.extend(_number_collisions(data))
    found.extend(_unstaffable_queues(data, ids["skills"]))
    found.extend(_ivr_references(data, ids["skills"]))
    return found


def _default_queue(data: Mapping[str, Any], queues: dict[str, int]) -> Iterator[Finding]:
    default_queue = _str(_map(data, "hotline").get("default_queue"))
    loc: Loc = ("hotline", "default_queue")
    if default_queue is None:
        return
    if default_queue not in queues:
        yield loc, "value", f"unknown queue '{default_queue}'"
    elif dict(_seq(data, "queues"))[queues[default_queue]].get("level", "first") != "first":
        yield loc, "value", f"default queue '{default_queue}' must be a first-level queue"


def _queue_references(
    data: Mapping[str, Any], skills: dict[str, int], queues: dict[str, int]
) -> Iterator[Finding]:
    teams = {str(k) for k in _map(data, "teams")}
    for i, queue in _seq(data, "queues"):
        for skill in _map(queue, "skills"):
            if skill not in skills:
                yield ("queues", i, "skills", skill), "key", f"unknown skill '{skill}'"
        target = _str(_map(queue, "overflow").get("queue"))
        if target is not None and target == queue.get("id"):
            yield ("queues", i, "overflow", "queue"), "value", "overflow to itself"
        elif target is not None and target not in queues:
            yield ("queues", i, "overflow", "queue"), "value", f"unknown queue '{target}'"
        team = _str(queue.get("extended_support_team"))
        if team is not None and team not in teams:
            yield ("queues", i, "extended_support_team"), "value", f"unknown team '{team}'"


def _agent_references(
    data: Mapping[str, Any], skills: dict[str, int], sites: dict[str, int]
) -> Iterator[Finding]:
    endpoints: set[str] = set()
    for i, agent in _seq(data, "agents"):
        for skill in _map(agent, "skills"):
            if skill not in skills:
                yield ("agents", i, "skills", skill), "key", f"unknown skill '{skill}'"
        site = _str(agent.get("site"))
        if site is not None and site not in sites:
            yield ("agents", i, "site"), "value", f"unknown site '{site}'"
        endpoint = _str(agent.get("endpoint")) or _str(agent.get("id"))
        loc: Loc = ("agents", i, "endpoint" if "endpoint" in agent else "id")
        if endpoint == "anonymous":
            yield loc, "value", "'anonymous' is reserved for the hotline's own SIP endpoint"
        elif endpoint is not None and endpoint in endpoints:
            yield loc, "value", f"PJSIP endpoint '{endpoint}' used twice"
        elif endpoint is not None:
            endpoints.add(endpoint)


def _number_collisions(data: Mapping[str, Any]) -> Iterator[Finding]:
    """Numbers that mean two things: hotline numbers, agent extensions, feature codes."""
    numbers: list[tuple[str, Loc, str]] = []
    hotline_numbers = _map(data, "hotline").get("numbers")
    if isinstance(hotline_numbers, list):
        numbers.extend(
            (n, ("hotline", "numbers", j), "a hotline number")
            for j, n in enumerate(hotline_numbers)
            if isinstance(n, str)
        )
    for i, agent in _seq(data, "agents"):
        ext = agent.get("extension")
        if isinstance(ext, str):
            numbers.append((ext, ("agents", i, "extension"), f"agent '{agent.get('id')}'"))
    codes = {**_model.FeatureCodes().as_dict(), **_map(data, "feature_codes")}
    for name, code in codes.items():
        if not isinstance(code, str):
            continue
        loc: Loc = ("feature_codes", name)
        numbers.append((code, loc, f"feature code '{name}'"))
        if name == "pause":
            reasons = _map(data, "pause_reasons") or {"1": "", "2": "", "3": ""}
            numbers.extend((code + str(d), loc, f"pause code with reason {d}") for d in reasons)
    first: dict[str, str] = {}
    for number, loc, what in numbers:
        if number in first and first[number] != what:
            yield loc, "value", f"'{number}' is {what} and also {first[number]}"
        first.setdefault(number, what)


def _unstaffable_queues(data: Mapping[str, Any], skills: dict[str, int]) -> Iterator[Finding]:
    """A queue no agent can ever take a call from would hold its callers until max_wait."""
    agent_skills = [_levels(agent.get("skills")) for _, agent in _seq(data, "agents")]
    for i, queue in _seq(data, "queues"):
        needed = _levels(queue.get("skills"))
        if any(s not in skills or not 1 <= lv <= _model.MAX_LEVEL for s, lv in needed.items()):
            continue  # already reported; guessing on top of a wrong requirement is noise
        steps: list[int] = [
            s["min_level"]
            for s in (queue.get("escalation") or [])
            if isinstance(s, Mapping) and isinstance(s.get("min_level"), int)
        ]
        top = max(needed.values(), default=0)
        # Same rule as Queue.penalty_of / final_max_penalty: shortfall on the weakest skill.
        final = top - min(steps) if steps else 0
        lenient = {s: max(1, level - final) for s, level in needed.items()}
        if not any(all(have.get(s, 0) >= lv for s, lv in lenient.items()) for have in agent_skills):
            wanted = ", ".join(f"{s} >= {lv}" for s, lv in sorted(lenient.items())) or "none"
            where: Loc = ("queues", i, "skills") if needed else ("queues", i, "id")
            yield where, "value", f"no agent qualifies for queue '{queue.get('id')}' ({wanted})"


def _ivr_references(data: Mapping[str, Any], skills: dict[str, int]) -> Iterator[Finding]:
    """Every IVR text in every hotline language; known skills, priorities and languages."""
    ivr = _map(data, "ivr")
    if not ivr:
        return
    listed = _map(data, "hotline").get("languages")
    languages = (
        [lang for lang in listed if isinstance(lang, str)] if isinstance(listed, list) else []
    )
    yield from _ivr_languages(ivr, languages)
    priorities = {str(name) for name in _map(_map(data, "sla"), "priorities")}
    texts: list[tuple[Loc, Any]] = [
        (("ivr", k), ivr[k]) for k in ("greeting", "language_menu") if k in ivr
    ]
    yield from _ivr_menus(_map(ivr, "menu"), skills, priorities, texts)
    for i, question in _seq(ivr, "questions"):
        if "prompt" in question:
            texts.append((("ivr", "questions", i, "prompt"), question["prompt"]))
    recording = _map(ivr, "record_description")
    if "prompt" in recording:
        texts.append((("ivr", "record_description", "prompt"), recording["prompt"]))
    for loc, text in texts:
        missing = [lang for lang in languages if isinstance(text, Mapping) and lang not in text]
        if missing:
            yield loc, "value", f"no text for {', '.join(missing)} (a hotline language)"


def _ivr_menus(
    top: Mapping[str, Any],
    skills: dict[str, int],
    priorities: set[str],
    texts: list[tuple[Loc, Any]],
) -> Iterator[Finding]:
    """The leaves' references; each menu's prompt is added to ``texts``."""
    menus: list[tuple[Loc, Mapping[Any, Any]]] = [(("ivr", "menu"), top)]
    # Level by level and bounded: a YAML alias can make a menu its own option.
    for _ in range(_model.MAX_IVR_DEPTH + 1):
        deeper: list[tuple[Loc, Mapping[Any, Any]]] = []
        for loc, menu in menus:
            if "prompt" in menu:
                texts.append(((*loc, "prompt"), menu["prompt"]))
            for key, option in _map(menu, "options").items():
                if not isinstance(option, Mapping):
                    continue
                if "options" in option or "prompt" in option:
                    deeper.append(((*loc, "options", key), option))
                else:
                    yield from _ivr_leaf((*loc, "options", key), option, skills, priorities)
        menus = deeper


def _ivr_languages(ivr: Mapping[str, Any], languages: list[str]) -> Iterator[Finding]:
    if len(languages) > 1 and "language_menu" not in ivr:
        yield (
            ("ivr", "language_menu"),
            "parent",
            f"missing key 'language_menu' in ivr: callers choose among {', '.join(languages)}",
        )
    keys = _map(ivr, "language_keys")
    if not keys:
        return
    for key, language in keys.items():
        if isinstance(language, str) and language not in languages:
            yield ("ivr", "language_keys", key), "value", f"'{language}' is no hotline language"
    for language in languages:
        if language not in keys.values():
            yield ("ivr", "language_keys"), "value", f"no key for language '{language}'"


def _ivr_leaf(
    loc: Loc, leaf: Mapping[str, Any], skills: dict[str, int], priorities: set[str]
) -> Iterator[Finding]:
    for skill in _map(leaf, "skills"):
        if skill not in skills:
            yield (*loc, "skills", skill), "key", f"unknown skill '{skill}'"
    priority = _str(leaf.get("priority"))
    if priority is not None and priority not in priorities:
        known = ", ".join(sorted(priorities)) or "none"
        yield (
            (*loc, "priority"),
            "value",
            f"unknown priority '{priority}' (sla.priorities: {known})",
        )
