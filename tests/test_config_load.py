"""Loading the YAML configuration: every mistake reported at once, at the right line."""

from __future__ import annotations

from pathlib import Path

import pytest

from acd.config import ConfigInvalid, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "desk.yaml"

# Line numbers matter: the assertions below name them.
BAD = """\
hotline:
  numbers: ["100"]
  languages: [en]
  default_queue: first
daemon:
  ami:
    secret: hunter2
skills:
  - {id: general, name: General}
  - {id: printing, name: Printing}
queues:
  - id: first
    name: First
    skils: {general: 1}
  - id: first
    name: Again
    skills: {general: 7}
  - id: second
    name: Second
    skills: {plotting: 2}
    strategy: rrmemory
    strategy: ringall
agents:
  - id: alice
    name: Alice
    extension: "100"
    secret: {env: ALICE_SECRET}
    skills: {general: 3}
    site: berlin
sites:
  - id: berlin
    timezone: Europe/Berlyn
sla:
  priorities:
    normal: {rank: 1, respond_within: 60, resolve_within: 600}
"""


def _write(tmp_path: Path, text: str, name: str = "desk.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _issues(path: Path) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    return [(i.line, i.col, i.message) for i in caught.value.issues]


def test_every_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    issues = _issues(path)
    by_line = {line: message for line, _, message in issues}
    assert "secrets never live in the YAML" in by_line[7]
    assert by_line[14] == "unknown key 'skils' (did you mean 'skills'?)"
    assert by_line[15] == "duplicate queue id 'first'"
    assert "less than or equal to 5" in by_line[17]
    assert by_line[20] == "unknown skill 'plotting'"
    assert by_line[22] == "duplicate key 'strategy' (first at line 21)"
    assert by_line[26] == "'100' is agent 'alice' and also a hotline number"
    assert "unknown time zone 'Europe/Berlyn'" in by_line[32]
    assert sorted(by_line) == [7, 14, 15, 17, 20, 22, 26, 32]


def test_columns_point_at_key_or_value(tmp_path: Path) -> None:
    issues = {line: col for line, col, _ in _issues(_write(tmp_path, BAD))}
    assert issues[14] == 5  # the unknown key itself
    assert issues[17] == 23  # the value 7, not the key
    assert issues[20] == 14  # the unknown skill's key inside the flow mapping


def test_str_is_one_file_line_col_per_issue(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.issues) == 8
    assert lines[0].startswith(f"{path}:7:13: ")
    assert all(line.startswith(f"{path}:") for line in lines)


def test_missing_key_points_at_its_parent(tmp_path: Path) -> None:
    text = BAD.replace('    extension: "100"\n', "")
    issues = _issues(_write(tmp_path, text))
    missing = [(line, msg) for line, _, msg in issues if "missing" in msg]
    assert missing == [(24, "missing key 'extension' in agents[0]")]


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("hotline:\n  numbers: [100\n", 3, 1, "YAML syntax"),
        ("a: b\n c: d\n", 2, 3, "mapping values are not allowed"),
        ("- just\n- a list\n", 1, 1, "mapping of sections"),
        ("", 1, 1, "mapping of sections"),
    ],
)
def test_broken_files_are_issues_not_tracebacks(
    tmp_path: Path, text: str, line: int, col: int, fragment: str
) -> None:
    issues = _issues(_write(tmp_path, text))
    assert len(issues) == 1
    assert issues[0][:2] == (line, col)
    assert fragment in issues[0][2]


def test_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    issues = _issues(tmp_path / "nope.yaml")
    assert issues[0][:2] == (1, 1)
    assert "cannot read" in issues[0][2]


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.hotline.default_queue == "first-en"
    assert config.hotline.languages == ["en", "fr"]
    assert config.daemon.agi.max_sessions == 256
    assert {q.level for q in config.queues} == {"first", "second"}
    assert len({a.site for a in config.agents}) == 2
    assert config.queue("first-en").overflow is not None
    assert config.queue("first-en").max_penalty_schedule() == [(45, 1), (120, 2)]
    assert all(ref.file is not None for _, ref in config.secret_refs())


def _example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("default_queue: first-en", "default_queue: nowhere", "unknown queue 'nowhere'"),
        ("default_queue: first-en", "default_queue: second-cad", "must be a first-level"),
        ("{queue: first-overflow,", "{queue: first-en,", "overflow to itself"),
        ("{queue: first-overflow,", "{queue: ghost,", "unknown queue 'ghost'"),
        ("extended-support: [eva, chloe]", "extended-support: [eva, zoe]", "unknown agent 'zoe'"),
        ("site: montreal", "site: tokyo", "unknown site 'tokyo'"),
        ('extension: "202"', 'extension: "201"', "'201' is agent 'bob' and also agent 'alice'"),
        ('login: "*21"', 'login: "*22"', "feature code 'logout' and also feature code 'login'"),
        ('resume: "*24"', 'resume: "*231"', "pause code with reason 1"),
        ("{after: 120, min_level: 1}", "{after: 30, min_level: 1}", "'after' must increase"),
        ("{after: 120, min_level: 1}", "{after: 130, min_level: 3}", "must not increase"),
        ("skills: {licensing: 4}", "skills: {licensing: 4, lang-fr: 3}", "no agent qualifies"),
        ("- id: bob", "- id: Bob", "should match pattern"),
        ("timezone: America/Toronto", "timezone: Mars/Olympus", "unknown time zone"),
        ('mon-fri: ["08:00-20:00"]', 'mon-fri: ["20:00-08:00"]', "must end after it starts"),
        ("sat: [", "fri: [", "fri appears in both"),
        ('numbers: ["100",', "numbers: [100,", "quote this number"),
        ('digit: "9", offer_every: 45', 'digit: "99", offer_every: 45', "pattern"),
        ("- id: david", "- id: anonymous", "reserved for the hotline"),
        ("max_sessions: 256}", "max_sessions: 0}", "greater than or equal to 1"),
    ],
)
def test_cross_checks(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = _example_with(tmp_path, old, new)
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    text = str(caught.value)
    assert fragment in text, text
    changed_line = (
        path.read_text(encoding="utf-8")
        .splitlines()
        .index(next(line for line in path.read_text(encoding="utf-8").splitlines() if new in line))
    )
    assert any(abs(i.line - (changed_line + 1)) <= 12 for i in caught.value.issues)


def test_report_is_sorted_and_deduplicated(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path)
    positions = [(i.line, i.col) for i in caught.value.issues]
    assert positions == sorted(positions)
    assert len(set(caught.value.issues)) == len(caught.value.issues)


def test_flow_and_block_style_give_the_same_model(tmp_path: Path) -> None:
    block = EXAMPLE.read_text(encoding="utf-8").replace(
        "agi: {host: 127.0.0.1, port: 4573}",
        "agi:\n    host: 127.0.0.1\n    port: 4573",
    )
    assert load_config(_write(tmp_path, block)).model_dump() == load_config(EXAMPLE).model_dump()
