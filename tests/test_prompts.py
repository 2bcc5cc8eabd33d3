"""Firstline's prompts: real espeak-ng and sox turn the YAML texts into 8 kHz WAV files.

espeak-ng and sox (installed by scripts/install-deps) are required: without them these
tests are skipped on a developer machine and fail under FIRSTLINE_REQUIRE_LIVE=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import pytest

from acd.cli import main
from ivr.prompts import (
    InstallReport,
    PromptError,
    install_prompts,
    load_prompts,
    prompt_name,
    sound,
)
from tests.live.harness import LIVE_CONFIG, TEST_SECRET

# The names the IVR, the callback flow and the agents' whispers play (issue #4).
REQUIRED = {
    "callback-offer",
    "expected-wait",
    "callback-number-is",
    "callback-confirm",
    "callback-enter-number",
    "callback-invalid-number",
    "callback-record",
    "ticket-number-is",
    "callback-booked",
    "callback-failed",
    "callback-already",
    "whisper-callback",
    "whisper-connecting",
    "callback-customer-unreachable",
    "extended-support",
    "alert-known",
    "hotline-closed",
    # The IVR's shared sentences (ivr.flow.FIXED_PROMPTS); its menus come from the config.
    "ivr-invalid",
    "ivr-invalid-entry",
    "ivr-open-ticket",
    "ivr-status-first-level",
    "ivr-status-second-level",
    "ivr-status-waiting",
    "ivr-status-dev",
    "ivr-status-done",
    "ivr-owner-choice",
    "ivr-owner-connect",
    "ivr-please-hold",
    "ivr-rating",
    "ivr-rating-thanks",
    "ivr-fallback",
}
LANGUAGES = ("en", "fr")


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} missing: run scripts/install-deps"
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    folder = tmp_path / "sounds"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the tests that are not about caching: each text is spoken once."""
    return tmp_path_factory.mktemp("prompt-cache")


def _install(
    sounds: Path,
    cache: Path,
    digits: set[str] | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
) -> InstallReport:
    return install_prompts(sounds, LANGUAGES, digits or {"9"}, overrides=overrides, cache_dir=cache)


def _tree(sounds: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(sounds)): path.read_bytes()
        for path in sorted(sounds.rglob("*"))
        if path.is_file()
    }


def test_files_are_8khz_mono_16bit_pcm_of_plausible_length(
    sounds: Path, shared_cache: Path
) -> None:
    report = _install(sounds, shared_cache)

    expected = (REQUIRED - {"callback-offer"}) | {"callback-offer-9"}
    for language in LANGUAGES:
        folder = sounds / language / "firstline"
        assert {path.stem for path in folder.glob("*.wav")} == expected
    assert len(report.installed) == 2 * len(expected)
    durations: dict[str, float] = {}
    for path in report.installed:
        with wave.open(str(path), "rb") as audio:
            assert audio.getframerate() == 8000, path
            assert audio.getnchannels() == 1, path
            assert audio.getsampwidth() == 2, path
            assert audio.getcomptype() == "NONE", path
            frames = audio.readframes(audio.getnframes())
            seconds = audio.getnframes() / 8000
        assert 0.5 < seconds < 15, (path, seconds)
        assert any(frames), f"{path} is silent"
        assert oct(path.stat().st_mode & 0o777) == oct(0o644)
        durations[f"{path.parent.parent.name}/{path.stem}"] = seconds
    for language in LANGUAGES:
        # Two sentences take clearly longer to say than four words.
        assert (
            durations[f"{language}/callback-failed"] > 2 * durations[f"{language}/ticket-number-is"]
        )


def test_second_run_takes_everything_from_the_cache(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = _install(sounds, cache)
    before = _tree(sounds)
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, no sox: nothing may run

    second = _install(sounds, cache)

    assert first.generated == len(first.installed)
    assert first.cached == 0
    assert second.generated == 0
    assert second.cached == len(second.installed) == len(first.installed)
    assert second.removed == ()
    assert _tree(sounds) == before


def test_a_changed_text_regenerates_only_that_prompt(sounds: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _install(sounds, cache)
    before = _tree(sounds)

    changed = _install(
        sounds, cache, overrides={"en": {"hotline-closed": "Our hotline opens at eight."}}
    )

    assert (changed.generated, changed.cached) == (1, len(changed.installed) - 1)
    after = _tree(sounds)
    differing = {name for name in before if before[name] != after[name]}
    assert differing == {"en/firstline/hotline-closed.wav"}
    assert len(list(cache.glob("*.wav"))) == len(changed.installed) + 1


def test_stale_prompts_are_removed(sounds: Path, shared_cache: Path) -> None:
    _install(sounds, shared_cache, digits={"9", "*"})
    retired = sounds / "en" / "firstline" / "retired-prompt.wav"
    retired.write_bytes(b"RIFF")
    notes = sounds / "en" / "firstline" / "README"
    notes.write_text("not a prompt")
    core = sounds / "en" / "queue-periodic-announce.wav"
    core.write_bytes(b"RIFF")

    report = _install(sounds, shared_cache, digits={"9"})

    assert {str(path.relative_to(sounds)) for path in report.removed} == {
        "en/firstline/callback-offer-star.wav",
        "fr/firstline/callback-offer-star.wav",
        "en/firstline/retired-prompt.wav",
    }
    assert not retired.exists()
    assert notes.exists()
    assert core.exists()
    assert (sounds / "fr" / "firstline" / "callback-offer-9.wav").exists()


def test_missing_espeak_ng_is_a_clear_error_and_changes_nothing(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_sox = tmp_path / "bin"
    only_sox.mkdir()
    sox = shutil.which("sox")
    assert sox is not None
    (only_sox / "sox").symlink_to(sox)
    monkeypatch.setenv("PATH", str(only_sox))

    with pytest.raises(PromptError) as caught:
        install_prompts(sounds, ["fr"], {"9"}, cache_dir=tmp_path / "cache")

    # The first text of fr.yaml is the callback offer.
    assert str(caught.value).startswith(
        "cannot generate prompt 'callback-offer-9' (fr): espeak-ng is not installed"
    )
    assert _tree(sounds) == {}


def test_a_failing_tool_is_named_with_its_message(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    sox = shutil.which("sox")
    assert sox is not None
    (tools / "sox").symlink_to(sox)
    broken = tools / "espeak-ng"
    broken.write_text("#!/bin/sh\necho 'voice data missing' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")

    with pytest.raises(PromptError, match=r"espeak-ng exited 3: voice data missing"):
        install_prompts(sounds, ["en"], cache_dir=tmp_path / "cache")
    assert _tree(sounds) == {}


def test_digit_placeholders_expand_per_callback_key() -> None:
    prompts = {p.name: p.text for p in load_prompts(["en"], {"9", "*", "#"})}

    assert "callback-offer" not in prompts
    assert prompts["callback-offer-9"].endswith("press 9.")
    assert prompts["callback-offer-star"].endswith("press the star key.")
    assert prompts["callback-offer-hash"].endswith("press the hash key.")
    assert not any("{" in text for text in prompts.values())
    french = {p.name: p.text for p in load_prompts(["fr"], {"*"})}
    assert french["callback-offer-star"].endswith("appuyez sur la touche étoile.")

    no_digits = {p.name for p in load_prompts(["en"])}
    assert not any(name.startswith("callback-offer") for name in no_digits)
    assert prompt_name("callback-offer", "#") == "callback-offer-hash"
    assert sound("callback-offer", "9") == "firstline/callback-offer-9"
    assert sound("hotline-closed") == "firstline/hotline-closed"
    with pytest.raises(PromptError, match="not a phone key"):
        load_prompts(["en"], {"10"})


def test_shipped_catalogues_are_complete_and_french_is_french(
    sounds: Path, shared_cache: Path
) -> None:
    english = {p.name: p for p in load_prompts(["en"], {"9"})}
    french = {p.name: p for p in load_prompts(["fr"], {"9"})}
    assert {name.removesuffix("-9") for name in english} == REQUIRED
    assert set(french) == set(english)
    assert {p.voice for p in english.values()} == {"en-us"}
    assert {p.voice for p in french.values()} == {"fr"}
    for name, prompt in english.items():
        assert french[name].text != prompt.text, name
    assert french["hotline-closed"].text == (
        "Notre assistance téléphonique est fermée pour le moment."
    )

    _install(sounds, shared_cache)
    for name in english:
        en_audio = (sounds / "en" / "firstline" / f"{name}.wav").read_bytes()
        fr_audio = (sounds / "fr" / "firstline" / f"{name}.wav").read_bytes()
        assert en_audio != fr_audio, name


def test_overrides_change_and_add_texts_for_every_language() -> None:
    prompts = load_prompts(
        LANGUAGES,
        overrides={
            "en": {"hotline-closed": "Closed for the holidays.", "holiday": "Happy holidays."},
            "fr": {"holiday": "Joyeuses fêtes."},
            "de": {"holiday": "Frohe Feiertage."},  # not offered: ignored
        },
    )
    texts = {(p.language, p.name): p.text for p in prompts}
    assert texts["en", "hotline-closed"] == "Closed for the holidays."
    assert texts["fr", "holiday"] == "Joyeuses fêtes."
    assert not any(language == "de" for language, _ in texts)

    with pytest.raises(PromptError, match="fr lacks holiday"):
        load_prompts(LANGUAGES, overrides={"en": {"holiday": "Happy holidays."}})
    with pytest.raises(PromptError, match=r"has \{queue\}; only \{digit\} is known"):
        load_prompts(["en"], overrides={"en": {"hotline-closed": "Queue {queue} is closed."}})
    with pytest.raises(PromptError, match="not a prompt name"):
        load_prompts(["en"], overrides={"en": {"Hotline Closed": "Closed."}})
    with pytest.raises(PromptError, match=r"no prompts for language 'de'.*de\.yaml"):
        load_prompts(["de"])


def test_missing_sounds_folder_is_an_error(tmp_path: Path, shared_cache: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        _install(tmp_path / "no-such-sounds", shared_cache)


def test_acd_render_installs_the_configs_prompts(
    sounds: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", TEST_SECRET)
    out = tmp_path / "asterisk"
    cache = tmp_path / "cache"
    args = ["render", str(LIVE_CONFIG), "--out", str(out), "--sounds", str(sounds)]

    assert main([*args, "--prompt-cache", str(cache)]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--prompt-cache", str(cache)]) == 0
    second = capsys.readouterr().out

    # desk-live.yaml: languages en and fr, both queues offer the callback on 9; its IVR
    # lives in ivr-live.yaml (the IVR tests add it), so only the shipped texts.
    assert "installed 62 prompts" in first
    assert "62 generated, 0 from cache" in first
    assert "0 generated, 62 from cache, 0 stale removed" in second
    assert (sounds / "fr" / "firstline" / "ivr-rating.wav").is_file()
    assert (sounds / "fr" / "firstline" / "callback-offer-9.wav").is_file()
    assert (out / "extensions.conf").is_file()


def test_acd_render_writes_nothing_when_prompts_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", TEST_SECRET)
    out = tmp_path / "asterisk"

    code = main(
        ["render", str(LIVE_CONFIG), "--out", str(out), "--sounds", str(tmp_path / "missing")]
    )

    assert code == 1
    assert "does not exist; the configuration was not written" in capsys.readouterr().err
    assert not out.exists()
