"""Malformed YAML (issue 8): every mistake reported with its line, never a traceback.

Hypothesis breaks examples/desk.yaml the ways files get broken (lines deleted or doubled,
indentation changed, tabs, stray bytes, invalid UTF-8, a file cut short) and loads it:
the result is a valid Config or a ConfigInvalid whose every issue names a line of the
file. Then `acd check`, as an admin runs it, on a few such files: exit 1, FILE:LINE:COL
for each error, no traceback.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acd.config import ConfigInvalid, load_config
from acd.config.model import Config
from tests.live.harness import run_acd

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = (REPO / "examples" / "desk.yaml").read_bytes()
EXAMPLE_LINES = EXAMPLE.split(b"\n")

_YAML_NOISE = [b"\t", b":", b": ", b"- ", b"[", b"]", b"{", b"}", b"&a ", b"*a", b"*nope",
               b"!", b"!!str ", b"!!python/object:os.system ", b"|", b">", b"'", b'"', b"%",
               b"@", b"`", b"#", b"? ", b",", b"<<: ", b"<<: *a", b"~", b"---", b"...",
               b"\x00", b"\x1b", b"\x7f", b"\xef\xbb\xbf", b"\r", b"\xc2\x85", b"\xe2\x80\xa8",
               b"0x1F", b"1e999", b".nan", b"yes", b"null", b"2025-01-01", b"-1",
               b"9" * 30]  # fmt: skip
_INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80",
                 b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80"]  # fmt: skip

_LINE = st.integers(min_value=0, max_value=len(EXAMPLE_LINES) * 2)
_AT = st.integers(min_value=0, max_value=200)
_MUTATION = st.one_of(
    st.tuples(st.just("delete"), _LINE),
    st.tuples(st.just("duplicate"), _LINE),
    st.tuples(st.just("indent"), _LINE, st.integers(min_value=-6, max_value=6)),
    st.tuples(st.just("tab"), _LINE, _AT),
    st.tuples(st.just("insert"), _LINE, _AT, st.sampled_from(_YAML_NOISE)),
    st.tuples(st.just("insert"), _LINE, _AT, st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("insert"), _LINE, _AT, st.sampled_from(_INVALID_UTF8)),
    st.tuples(st.just("swap"), _LINE, _LINE),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=len(EXAMPLE))),
)


def _mutate(data: bytes, mutation: tuple[Any, ...]) -> bytes:
    lines = data.split(b"\n")
    kind, *args = mutation
    i = args[0] % len(lines) if kind != "truncate" else 0
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "indent":
        delta = args[1]
        line = lines[i]
        if delta >= 0:
            lines[i] = b" " * delta + line
        else:
            lines[i] = line[min(-delta, len(line) - len(line.lstrip(b" "))) :]
    elif kind == "tab":
        at = args[1] % (len(lines[i]) + 1)
        lines[i] = lines[i][:at] + b"\t" + lines[i][at:]
    elif kind == "insert":
        at = args[1] % (len(lines[i]) + 1)
        lines[i] = lines[i][:at] + args[2] + lines[i][at:]
    elif kind == "swap":
        j = args[1] % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
    else:
        return data[: args[0]]
    return b"\n".join(lines)


def _line_count(data: bytes) -> int:
    """Lines as a YAML reader counts them (it also breaks at NEL, LS and PS)."""
    text = data.decode("utf-8", "replace")
    return len(re.findall("\r\n|[\r\n\x85\u2028\u2029]", text)) + 1


def _assert_every_issue_located(path: Path, data: bytes) -> Config | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ruamel.yaml warns about reused anchors
        try:
            return load_config(path)
        except ConfigInvalid as invalid:
            issues = invalid.issues
    assert issues, "ConfigInvalid without a single issue"
    last_line = _line_count(data)
    for issue in issues:
        assert issue.file == str(path)
        assert 1 <= issue.line <= last_line, f"line {issue.line} of {last_line}: {issue}"
        assert issue.col >= 1, issue
        assert issue.message.strip(), issue
        assert "\n" not in issue.message, f"one issue, one output line: {issue.message!r}"
    return None


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4))
def test_a_broken_example_loads_or_says_where(
    tmp_path: Path, mutations: list[tuple[Any, ...]]
) -> None:
    data = EXAMPLE
    for mutation in mutations:
        data = _mutate(data, mutation)
    path = tmp_path / "desk.yaml"
    path.write_bytes(data)
    _assert_every_issue_located(path, data)


def _deep(depth: int) -> bytes:
    return EXAMPLE.replace(
        b'numbers: ["100", "+493012345600"]', b"numbers: " + b"[" * depth + b"]" * depth, 1
    )


def _at(needle: bytes, insert: bytes) -> bytes:
    return EXAMPLE.replace(needle, needle + insert, 1)


def _line_of(needle: bytes) -> int:
    return EXAMPLE[: EXAMPLE.index(needle)].count(b"\n") + 1


# (file content, the line the first issue must name, a word of its message)
_FRANCAIS = "français".encode()
_DEEP_BLOCK = EXAMPLE + b"\nteams_x:\n  " + b"- " * 10_000 + b"x\n"
_CUT = EXAMPLE[: EXAMPLE.index(b"  - id: first-fr") + 9]
_MERGED_QUEUES = EXAMPLE.replace(
    b"\n\n  - id: second-licensing", b"\n<<:\n  - id: second-licensing", 1
)
_TAB = EXAMPLE.replace(b"\n  - id: first-en", b"\n\t- id: first-en", 1)

# (file content, a line an issue must name (None: any), a word of the messages)
CASES: dict[str, tuple[bytes, int | None, str]] = {
    "NUL byte": (_at(b"queues:", b"\x00"), _line_of(b"queues:"), "not allowed"),
    "escape character": (_at(b"skills:\n", b"  \x1b\n"), _line_of(b"skills:\n") + 1, "U+001B"),
    "invalid UTF-8": (_at(b"queues:", b" \xff\xfe"), _line_of(b"queues:"), "UTF-8"),
    "Latin-1 text": (
        EXAMPLE.replace(_FRANCAIS, "français".encode("latin-1")),
        _line_of(_FRANCAIS),
        "UTF-8",
    ),
    "tab indentation": (_TAB, _line_of(b"  - id: first-en"), "YAML syntax"),
    "nested 400 deep": (_deep(400), _line_of(b"numbers:"), "nested too deeply"),
    # Deeper than the YAML library's recursion goes ("- - - ...": a list in a list in ...).
    "nested 10000 deep": (_DEEP_BLOCK, len(EXAMPLE_LINES) + 2, "nested too deeply"),
    "cut mid-file": (_CUT, None, ""),
    "a duplicated section": (EXAMPLE + b"\nhotline: {}\n", None, "duplicate key 'hotline'"),
    "an alias of itself": (EXAMPLE + b"\nteams_x: &t [*t]\n", None, ""),
    # Found by a long mutation run: the queues after it merged into the top level.
    "a merge key at the top": (
        _MERGED_QUEUES,
        _line_of(b"  - id: second-licensing"),
        "unknown key 'id'",
    ),
    "a sequence as key": (EXAMPLE + b"\n? [a, b]\n: c\n", None, ""),
    "an empty file": (b"", 1, "mapping"),
    "binary garbage": (bytes(range(256)) * 4, None, "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_known_nasty_files_are_located(tmp_path: Path, case: str) -> None:
    data, line, word = CASES[case]
    path = tmp_path / "desk.yaml"
    path.write_bytes(data)
    assert _assert_every_issue_located(path, data) is None
    with pytest.raises(ConfigInvalid) as raised:
        load_config(path)
    first = raised.value.issues[0]
    if line is not None:
        assert any(issue.line == line for issue in raised.value.issues), raised.value.issues
    assert word in str(raised.value), first


@pytest.mark.parametrize(
    "case", ["NUL byte", "invalid UTF-8", "tab indentation", "nested 10000 deep", "cut mid-file"]
)
def test_acd_check_says_where_and_never_shows_a_traceback(tmp_path: Path, case: str) -> None:
    data, line, _ = CASES[case]
    path = tmp_path / "desk.yaml"
    path.write_bytes(data)
    done = run_acd("check", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Traceback" not in done.stdout
    *issues, summary = done.stderr.strip().split("\n")
    assert issues
    assert re.fullmatch(rf"{re.escape(str(path))}: \d+ error\(s\); nothing was changed", summary)
    located = [re.fullmatch(rf"{re.escape(str(path))}:(\d+):(\d+): .+", text) for text in issues]
    assert all(located), issues
    lines = {int(match.group(1)) for match in located if match}
    assert min(lines) >= 1
    if line is not None:
        assert line in lines
