"""Secret references: exactly one source, never a literal, readable only when safe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from acd.config import (
    ConfigInvalid,
    SecretRef,
    SecretUnavailableError,
    init_missing_secret_files,
    load_config,
)
from acd.config.secrets import BASE_DIR_CONTEXT

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "desk.yaml"


def _ref(data: object, base: Path) -> SecretRef:
    return SecretRef.model_validate(data, context={BASE_DIR_CONTEXT: base})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("hunter2", "secrets never live in the YAML"),
        (12345, "secrets never live in the YAML"),
        ({}, "exactly one of 'env' or 'file'"),
        ({"env": "A", "file": "b"}, "exactly one of 'env' or 'file'"),
        ({"env": "not a name"}, "pattern"),
        ({"file": ""}, "at least 1"),
        ({"value": "x"}, "Extra inputs"),
    ],
)
def test_invalid_references(tmp_path: Path, data: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        _ref(data, tmp_path)


def test_env_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _ref({"env": "FIRSTLINE_TEST_SECRET"}, tmp_path)
    monkeypatch.delenv("FIRSTLINE_TEST_SECRET", raising=False)
    with pytest.raises(SecretUnavailableError, match="is not set"):
        ref.reveal()
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", "")
    with pytest.raises(SecretUnavailableError, match="is empty"):
        ref.reveal()
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", "s3cret")
    assert ref.reveal() == "s3cret"


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        ("tok\n", 0o600, "tok"),
        ("tok\r\n", 0o400, "tok"),
        ("tok", 0o600, "tok"),
        ("tok\n", 0o640, SecretUnavailableError),
        ("tok\n", 0o604, SecretUnavailableError),
        ("\n", 0o600, SecretUnavailableError),
    ],
)
def test_file_secret(tmp_path: Path, content: str, mode: int, expected: object) -> None:
    path = tmp_path / "s.secret"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    ref = _ref({"file": "s.secret"}, tmp_path)
    assert ref.path == path
    if expected is SecretUnavailableError:
        with pytest.raises(SecretUnavailableError):
            ref.reveal()
    else:
        assert ref.reveal() == expected


def test_group_readable_file_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x\n", encoding="utf-8")
    (tmp_path / "s").chmod(0o644)
    with pytest.raises(SecretUnavailableError, match="chmod 600"):
        _ref({"file": "s"}, tmp_path).reveal()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailableError, match="does not exist"):
        _ref({"file": "nope"}, tmp_path).reveal()


@given(st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), min_size=1))
def test_file_round_trip(value: str) -> None:
    import tempfile  # noqa: PLC0415 - hypothesis runs this many times; one folder each

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        ref = _ref({"file": "s"}, base)
        fd = os.open(base / "s", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value + "\n")
        assert ref.reveal() == value


def test_init_missing_secret_files_then_check(tmp_path: Path) -> None:
    config_path = tmp_path / "desk.yaml"
    config_path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config_path, check_secrets=True)
    assert len(caught.value.issues) == 7  # the AMI user and six agents
    assert all("does not exist" in i.message for i in caught.value.issues)
    assert caught.value.issues[0].line == 31  # daemon.ami.secret in the example

    config = load_config(config_path)
    created = init_missing_secret_files(config_path)  # a path works as well as a Config
    assert len(created) == 7
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in created)
    before = {p: p.read_text(encoding="utf-8") for p in created}
    assert init_missing_secret_files(config) == []  # never overwrites
    assert before == {p: p.read_text(encoding="utf-8") for p in created}
    assert len(set(before.values())) == 7  # random, distinct
    load_config(config_path, check_secrets=True)
