"""The `ivr:` section: valid menus load, every mistake is reported at its file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from acd.config import ConfigInvalid, load_config
from acd.config.model import Ivr, IvrLeaf, IvrMenu

REPO = Path(__file__).resolve().parent.parent

DESK = """\
hotline:
  numbers: ["100"]
  languages: [en, fr]
  default_queue: first
daemon:
  ami:
    secret: {env: AMI_SECRET}
skills:
  - {id: general, name: General}
  - {id: printing, name: Printing}
queues:
  - id: first
    name: First
    skills: {general: 1}
agents:
  - id: alice
    name: Alice
    extension: "201"
    secret: {env: ALICE_SECRET}
    skills: {general: 3, printing: 3}
    site: berlin
sites:
  - id: berlin
    timezone: Europe/Berlin
sla:
  priorities:
    normal: {rank: 1, respond_within: 60, resolve_within: 600}
    high: {rank: 2, respond_within: 60, resolve_within: 600}
ivr:
  greeting: {en: Hello., fr: Bonjour.}
  language_menu: {en: English 1., fr: Français 2.}
  menu:
    prompt: {en: Printing 1 other 2., fr: Impression 1 autre 2.}
    options:
      "1":
        prompt: {en: Down 1 quality 2., fr: Panne 1 qualité 2.}
        options:
          "1": {category: printing, skills: {printing: 3}, priority: high}
          "2": {category: print-quality, skills: {printing: 1}}
      "2": {category: general}
  questions:
    - id: customer_number
      prompt: {en: Number?, fr: Numéro ?}
      min_digits: 5
      max_digits: 10
      check: luhn
      optional: true
  record_description: {seconds: 30, prompt: {en: Speak., fr: Parlez.}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "desk.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _edited(old: str, new: str) -> str:
    assert DESK.count(old) == 1, old
    return DESK.replace(old, new)


def _problems(tmp_path: Path, text: str) -> list[tuple[int, str, str]]:
    """(line, that line's text, message) of every issue reported for ``text``."""
    with pytest.raises(ConfigInvalid) as caught:
        load_config(_write(tmp_path, text))
    lines = text.splitlines()
    for issue in caught.value.issues:
        assert issue.file.endswith("desk.yaml")
    return [(i.line, lines[i.line - 1], i.message) for i in caught.value.issues]


def test_a_valid_ivr_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, DESK))
    ivr = config.ivr
    assert ivr is not None
    assert (ivr.timeout, ivr.retries) == (5, 2)  # the defaults
    assert ivr.menu is not None
    submenu = ivr.menu.options["1"]
    assert isinstance(submenu, IvrMenu)
    assert submenu.options["1"] == IvrLeaf(
        category="printing", skills={"printing": 3}, priority="high"
    )
    assert ivr.menu.options["2"] == IvrLeaf(category="general")
    assert ivr.menu.depth == 2
    assert ivr.keys_for(["en", "fr"]) == {"1": "en", "2": "fr"}
    assert [q.id for q in ivr.questions] == ["customer_number"]
    assert ivr.record_description is not None
    assert ivr.record_description.seconds == 30


def test_no_ivr_section_means_no_ivr(tmp_path: Path) -> None:
    text = DESK[: DESK.index("ivr:\n")]
    assert load_config(_write(tmp_path, text)).ivr is None


def test_the_shipped_configs_have_a_valid_ivr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", "x")
    example = load_config(REPO / "examples" / "desk.yaml").ivr
    # The live IVR tests append ivr-live.yaml to the live desk (tests/live/test_ivr.py).
    live_dir = REPO / "tests" / "live"
    combined = tmp_path / "desk-ivr.yaml"
    combined.write_text(
        (live_dir / "desk-live.yaml").read_text() + "\n" + (live_dir / "ivr-live.yaml").read_text()
    )
    assert load_config(live_dir / "desk-live.yaml").ivr is None
    live = load_config(combined).ivr
    assert example is not None
    assert live is not None
    assert example.menu is not None
    assert sorted(example.menu.options) == ["0", "1", "2", "3"]
    assert live.menu is not None
    assert live.menu.depth == 2


@pytest.mark.parametrize(
    ("old", "new", "on_line", "message"),
    [
        (
            '"2": {category: general}',
            '"12": {category: general}',
            '"12"',
            "'12' is not one phone key 0-9",
        ),
        (
            '"2": {category: general}',
            '"2": general',
            '"2": general',
            "an option is a leaf {category, skills, priority} or a submenu {prompt, options}",
        ),
        (
            "{category: general}",
            "{category: general, skils: {general: 1}}",
            "skils",
            "unknown key 'skils' (did you mean 'skills'?)",
        ),
        (
            "skills: {printing: 1}",
            "skills: {plotting: 1}",
            "plotting",
            "unknown skill 'plotting'",
        ),
        (
            "skills: {printing: 1}",
            "skills: {printing: 6}",
            "printing: 6",
            "less than or equal to 5",
        ),
        (
            "priority: high",
            "priority: urgent",
            "urgent",
            "unknown priority 'urgent' (sla.priorities: high, normal)",
        ),
        (
            "prompt: {en: Down 1 quality 2., fr: Panne 1 qualité 2.}",
            "prompt: {en: Down 1 quality 2.}",
            "Down 1 quality",
            "no text for fr (a hotline language)",
        ),
        (
            "prompt: {en: Number?, fr: Numéro ?}",
            "prompt: {fr: Numéro ?}",
            "Numéro",
            "no text for en (a hotline language)",
        ),
        (
            "greeting: {en: Hello., fr: Bonjour.}",
            'greeting: {en: "Hello {name}.", fr: Bonjour.}',
            "Hello {name}",
            "braces are not allowed in an IVR prompt",
        ),
        (
            "greeting: {en: Hello., fr: Bonjour.}",
            "greeting: {en: '   ', fr: Bonjour.}",
            "greeting",
            "a prompt needs a text",
        ),
        (
            "  language_menu: {en: English 1., fr: Français 2.}\n",
            "",
            "ivr:",
            "missing key 'language_menu' in ivr: callers choose among en, fr",
        ),
        (
            "  greeting: {en: Hello., fr: Bonjour.}",
            "  greeting: {en: Hello., fr: Bonjour.}\n  retries: 6",
            "retries: 6",
            "less than or equal to 5",
        ),
        (
            "  greeting: {en: Hello., fr: Bonjour.}",
            "  greeting: {en: Hello., fr: Bonjour.}\n  timeout: 0",
            "timeout: 0",
            "greater than or equal to 1",
        ),
        (
            '"1":\n        prompt:',
            '"1":\n        timeout: 31\n        prompt:',
            "timeout: 31",
            "less than or equal to 30",
        ),
        (
            "      min_digits: 5",
            "      min_digits: 12",
            "- id: customer_number",
            "min_digits (12) exceeds max_digits (10)",
        ),
        (
            "      min_digits: 5",
            "      min_digits: 1",
            "- id: customer_number",
            "a Luhn-checked number has at least 2 digits",
        ),
        (
            "      check: luhn",
            "      check: mod97",
            "mod97",
            "'none', 'luhn' or 'lookup'",
        ),
        (
            "      optional: true",
            "      optional: true\n    - {id: customer_number, prompt: {en: A, fr: B}}",
            "- id: customer_number",
            "question id used twice: customer_number",
        ),
        (
            "record_description: {seconds: 30, prompt: {en: Speak., fr: Parlez.}}",
            "record_description: {seconds: 30}",
            "record_description",
            "a recording needs a prompt asking for it",
        ),
        (
            "record_description: {seconds: 30, prompt: {en: Speak., fr: Parlez.}}",
            "record_description: {seconds: 600, prompt: {en: Speak., fr: Parlez.}}",
            "seconds: 600",
            "less than or equal to 120",
        ),
    ],
)
def test_mistakes_are_reported_at_their_line(
    tmp_path: Path, old: str, new: str, on_line: str, message: str
) -> None:
    problems = _problems(tmp_path, _edited(old, new))
    found = [(line, text) for line, text, msg in problems if message in msg]
    assert len(found) == 1, problems
    assert on_line in found[0][1], (found, problems)


def test_a_submenu_cannot_also_be_a_leaf(tmp_path: Path) -> None:
    text = _edited('"1":\n        prompt:', '"1":\n        category: printing\n        prompt:')
    problems = _problems(tmp_path, text)
    assert [(text, msg) for _, text, msg in problems] == [
        (
            "        category: printing",
            "ivr.menu.options.1.submenu: an option is a leaf or a submenu, not both: a submenu "
            "(prompt, options) cannot set category; put them on its options",
        )
    ]


def test_unquoted_keys_are_read_as_keys_and_located(tmp_path: Path) -> None:
    text = _edited('"2": {category: general}', "2: {category: general, skills: {plotting: 1}}")
    problems = _problems(tmp_path, text)
    assert [(text.strip(), msg) for _, text, msg in problems] == [
        ("2: {category: general, skills: {plotting: 1}}", "unknown skill 'plotting'")
    ]
    text = _edited('"2": {category: general}', "2: {category: general, skils: {}}")
    problems = _problems(tmp_path, text)
    assert [(text.strip(), msg) for _, text, msg in problems] == [
        ("2: {category: general, skils: {}}", "unknown key 'skils' (did you mean 'skills'?)")
    ]


def test_language_keys_name_every_hotline_language_once(tmp_path: Path) -> None:
    line = "  language_keys: {'1': en, '2': de}"
    text = _edited("  menu:\n", line + "\n  menu:\n")
    problems = _problems(tmp_path, text)
    assert sorted(msg for _, _, msg in problems) == [
        "'de' is no hotline language",
        "no key for language 'fr'",
    ]
    assert all(text == line for _, text, _ in problems)
    text = _edited("  menu:\n", "  language_keys: {'1': en, '2': en}\n  menu:\n")
    assert any("given twice: en" in msg for _, _, msg in _problems(tmp_path, text))


def test_menus_nest_at_most_four_deep(tmp_path: Path) -> None:
    deep = "{category: deep}"
    for _ in range(5):
        deep = f"{{prompt: {{en: A, fr: B}}, options: {{'1': {deep}}}}}"
    text = _edited('"2": {category: general}', f'"2": {deep}')
    problems = _problems(tmp_path, text)
    assert any("menus nest at most 4 deep; this one has 5 levels" in m for _, _, m in problems)
    four = "{category: deep}"
    for _ in range(3):
        four = f"{{prompt: {{en: A, fr: B}}, options: {{'1': {four}}}}}"
    config = load_config(_write(tmp_path, _edited('"2": {category: general}', f'"2": {four}')))
    assert config.ivr is not None
    assert config.ivr.menu is not None
    assert config.ivr.menu.depth == 4


def test_a_menu_that_contains_itself_is_refused_not_looped(tmp_path: Path) -> None:
    text = _edited(
        '      "2": {category: general}',
        '      "2": &loop {prompt: {en: A, fr: B}, options: {"1": *loop}}',
    )
    problems = _problems(tmp_path, text)
    # Reported where the loop is, not a RecursionError (pydantic refuses the cycle).
    assert [text for _, text, _ in problems] == [
        '      "2": &loop {prompt: {en: A, fr: B}, options: {"1": *loop}}'
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"menu": {"prompt": {"en": "A"}, "options": {}}}, "at least 1 item"),
        ({"menu": {"prompt": {}, "options": {"1": {"category": "x"}}}}, "at least 1 item"),
        ({"menu": {"prompt": {"english": "A"}, "options": {"1": {"category": "x"}}}}, "pattern"),
        ({"menu": {"prompt": {"en": "A"}, "options": {"1": {"category": "Bad Name"}}}}, "pattern"),
        ({"menu": {"prompt": {"en": "A\x07"}, "options": {"1": {"category": "x"}}}}, "control"),
        ({"menu": {"prompt": {"en": "A"}, "options": {"#": {"category": "x"}}}}, "phone key"),
        ({"questions": [{"id": "Customer-No", "prompt": {"en": "A"}}]}, "pattern"),
        ({"language_keys": {"1": "en", "x": "fr"}}, "phone key"),
    ],
)
def test_the_model_alone_refuses_malformed_ivr(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Ivr.model_validate(data)
