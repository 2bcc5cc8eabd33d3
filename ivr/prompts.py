"""Firstline's own voice prompts: YAML texts per language turned into 8 kHz WAV files.

Asterisk's core sounds give digits, numbers and "minutes"; the sentences only Firstline
says live in ``ivr/prompts/<lang>.yaml`` (the espeak-ng voice, how the keys ``*`` and
``#`` are said, and prompt name -> text). At render time each text is spoken by espeak-ng,
converted by sox to what Asterisk's ``wav`` format reads (8000 Hz, mono, 16-bit signed
PCM) and installed as ``<sounds>/<lang>/firstline/<name>.wav``. The dialplan plays it as
``firstline/<name>`` (``sound(name)``) and Asterisk picks the folder from
CHANNEL(language). Audio is cached under the sha256 of text, voice and settings, so only
new or changed sentences are ever spoken again: a changed sentence or a new language is
one YAML edit. The IVR's own texts (greeting, menus, questions) come from the ``ivr:``
section of the configuration (`install_for_config`, through ``ivr.flow.ivr_prompt_texts``).

A text containing ``{digit}`` (a queue's callback key) is installed once per digit in
use, named ``<name>-<digit>`` with ``*`` and ``#`` named ``star`` and ``hash``
(``callback-offer-9``, ``callback-offer-star``); the bare name is not installed.

This module runs espeak-ng and sox synchronously: at render or reload time, never during
a call. It does not render Asterisk configuration and does not read the admin config file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ivr.flow import ivr_prompt_texts

if TYPE_CHECKING:
    from acd.config import Config

__all__ = [
    "SOUND_FOLDER",
    "InstallReport",
    "Prompt",
    "PromptError",
    "default_cache_dir",
    "install_for_config",
    "install_prompts",
    "load_prompts",
    "prompt_name",
    "sound",
]

SOUND_FOLDER = "firstline"
"""Sub-folder of each language's sounds folder that holds Firstline's prompts (ours alone)."""

_RATE = 8000
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DIGITS = "0123456789*#"
_KEY_NAMES = {"*": "star", "#": "hash"}  # file names stay plain and shell-safe
# 150 words a minute instead of espeak-ng's 175: telephone audio loses consonants first.
# -b 1: the text arrives on stdin as UTF-8 (accents in French).
_ESPEAK_ARGS = ("-s", "150", "-b", "1", "--stdout")
_SOX_INPUT = ("-t", "wav", "-")
_SOX_OUTPUT = ("-r", str(_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "wav")
# espeak-ng speaks quietly; -3 dBFS peaks match the loudness of Asterisk's core sounds.
_SOX_EFFECTS = ("norm", "-3")
_TOOL_TIMEOUT = 60.0


class PromptError(Exception):
    """A prompt catalogue is wrong, or a prompt could not be generated or installed."""


@dataclass(frozen=True)
class Prompt:
    """One sound file to install: ``<language>/firstline/<name>.wav`` speaking ``text``."""

    language: str
    name: str
    text: str
    voice: str


@dataclass(frozen=True)
class InstallReport:
    """What ``install_prompts`` did; ``generated + cached`` is the number of prompts."""

    generated: int
    cached: int
    installed: tuple[Path, ...]
    removed: tuple[Path, ...]


def prompt_name(name: str, digit: str) -> str:
    """The installed name of ``name``'s variant for callback key ``digit``."""
    _check_digit(digit)
    return f"{name}-{_KEY_NAMES.get(digit, digit)}"


def sound(name: str, digit: str | None = None) -> str:
    """What Playback/Background/periodic-announce take: ``firstline/<name>[-<digit>]``."""
    return f"{SOUND_FOLDER}/{name if digit is None else prompt_name(name, digit)}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "firstline" / "prompts"


def load_prompts(
    languages: Iterable[str],
    digits: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Prompt]:
    """Every prompt to install for ``languages``, ``{digit}`` texts expanded for ``digits``.

    ``overrides`` (language -> name -> text) change or add texts over the shipped YAML;
    overrides for languages not listed are ignored. Every language must end up with the
    same prompt names, or a caller in one language would hear "file does not exist".
    """
    wanted = list(dict.fromkeys(languages))
    keys = set(digits)
    for digit in keys:
        _check_digit(digit)
    ordered = sorted(keys, key=_DIGITS.index)
    texts: dict[str, dict[str, str]] = {}
    catalogues: dict[str, tuple[str, dict[str, str]]] = {}
    for language in wanted:
        voice, spoken_keys, shipped = _catalogue(language)
        merged = {
            **shipped,
            **_checked_texts(f"overrides for {language!r}", (overrides or {}).get(language, {})),
        }
        texts[language] = merged
        catalogues[language] = (voice, spoken_keys)
    _check_same_names(texts)

    prompts: list[Prompt] = []
    for language, merged in texts.items():
        voice, spoken_keys = catalogues[language]
        seen: set[str] = set()
        for name, text in merged.items():
            for final_name, final_text in _expand(language, name, text, ordered, spoken_keys):
                if final_name in seen:
                    raise PromptError(f"{language}: prompt name {final_name!r} is given twice")
                seen.add(final_name)
                prompts.append(Prompt(language, final_name, final_text, voice))
    return prompts


def install_prompts(
    sounds_dir: Path,
    languages: Iterable[str],
    digits: Iterable[str] = (),
    *,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
    cache_dir: Path | None = None,
) -> InstallReport:
    """Generate (or take from the cache) and install the prompts; remove stale ones.

    ``sounds_dir`` is Asterisk's sounds folder (the one holding ``en/``, ``fr/``). Nothing
    in it changes unless every prompt could be generated.
    """
    prompts = load_prompts(languages, digits, overrides)
    if not sounds_dir.is_dir():
        raise PromptError(f"sounds folder {sounds_dir} does not exist")
    for language in {prompt.language for prompt in prompts}:
        folder = sounds_dir / language
        if folder.is_symlink() and not folder.exists():
            # e.g. an absolute link inside a chroot, seen from outside it
            raise PromptError(f"{folder} links to {os.readlink(folder)}, which is not there")
    cache = cache_dir or default_cache_dir()
    audio: list[tuple[Prompt, Path]] = []
    generated = 0
    for prompt in prompts:
        cached = cache / f"{_cache_key(prompt)}.wav"
        if not _is_prompt_audio(cached):
            try:
                cache.mkdir(parents=True, exist_ok=True)
                _generate(prompt, cached)
            except OSError as error:
                raise PromptError(
                    f"prompt {prompt.name!r} ({prompt.language}): cache {cache}: {error}"
                ) from error
            generated += 1
        audio.append((prompt, cached))

    installed: list[Path] = []
    wanted: dict[Path, set[str]] = {}
    for prompt, cached in audio:
        folder = sounds_dir / prompt.language / SOUND_FOLDER
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{prompt.name}.wav"
            _install_file(cached, target)
        except OSError as error:
            raise PromptError(
                f"prompt {prompt.name!r} ({prompt.language}): cannot install: {error}"
            ) from error
        installed.append(target)
        wanted.setdefault(folder, set()).add(target.name)

    removed: list[Path] = []
    for folder, names in wanted.items():
        for stale in sorted(folder.glob("*.wav")):
            if stale.name not in names:
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return InstallReport(
        generated=generated,
        cached=len(prompts) - generated,
        installed=tuple(installed),
        removed=tuple(removed),
    )


def install_for_config(
    config: Config, sounds_dir: Path, *, cache_dir: Path | None = None
) -> InstallReport:
    """The prompts ``config`` needs: its hotline languages, its queues' callback digits,
    the texts of its IVR."""
    digits = {queue.callback.digit for queue in config.queues if queue.callback.enabled}
    overrides = ivr_prompt_texts(config.ivr) if config.ivr is not None else None
    return install_prompts(
        sounds_dir, config.hotline.languages, digits, overrides=overrides, cache_dir=cache_dir
    )


# --- catalogues --------------------------------------------------------------------------


def _check_digit(digit: str) -> None:
    if len(digit) != 1 or digit not in _DIGITS:
        raise PromptError(f"callback digit {digit!r} is not a phone key (0-9, * or #)")


def _catalogue(language: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The shipped ``ivr/prompts/<language>.yaml``: voice, spoken keys, texts."""
    source = f"ivr/prompts/{language}.yaml"
    if not _LANGUAGE.fullmatch(language):
        raise PromptError(f"{language!r} is not a language code")
    resource = resources.files("ivr") / "prompts" / f"{language}.yaml"
    if not resource.is_file():
        raise PromptError(f"no prompts for language {language!r}: {source} is missing")
    try:
        data: Any = YAML(typ="safe").load(resource.read_text(encoding="utf-8"))
    except YAMLError as error:
        raise PromptError(f"{source}: {error}") from error
    if not isinstance(data, dict) or set(data) - {"voice", "keys", "prompts"}:
        raise PromptError(f"{source}: expected the keys voice, keys and prompts")
    voice = data.get("voice")
    if not isinstance(voice, str) or not voice:
        raise PromptError(f"{source}: voice must name an espeak-ng voice")
    keys = data.get("keys") or {}
    if not isinstance(keys, dict) or not all(
        key in _KEY_NAMES and isinstance(said, str) and said for key, said in keys.items()
    ):
        raise PromptError(f'{source}: keys maps "*" and "#" to how they are said')
    return voice, dict(keys), _checked_texts(source, data.get("prompts"))


def _checked_texts(source: str, texts: object) -> dict[str, str]:
    if not isinstance(texts, Mapping):
        raise PromptError(f"{source}: expected prompt name -> text")
    checked: dict[str, str] = {}
    for name, text in texts.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PromptError(f"{source}: {name!r} is not a prompt name (a-z, 0-9, '-')")
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"{source}: prompt {name!r} needs a text")
        checked[name] = " ".join(text.split())
    return checked


def _check_same_names(texts: Mapping[str, Mapping[str, str]]) -> None:
    every = set().union(*(set(named) for named in texts.values())) if texts else set()
    gaps = [
        f"{language} lacks {', '.join(sorted(every - set(named)))}"
        for language, named in texts.items()
        if every - set(named)
    ]
    if gaps:
        raise PromptError(f"every language needs every prompt: {'; '.join(gaps)}")


def _expand(
    language: str, name: str, text: str, digits: list[str], spoken_keys: Mapping[str, str]
) -> list[tuple[str, str]]:
    fields = set(_PLACEHOLDER.findall(text))
    if fields - {"digit"}:
        unknown = ", ".join(f"{{{field}}}" for field in sorted(fields - {"digit"}))
        raise PromptError(f"{language}: prompt {name!r} has {unknown}; only {{digit}} is known")
    if not fields:
        return [(name, text)]
    variants = []
    for digit in digits:
        if digit in _KEY_NAMES and digit not in spoken_keys:
            raise PromptError(
                f"{language}: prompt {name!r} needs how {digit!r} is said "
                f"(keys in ivr/prompts/{language}.yaml)"
            )
        variants.append(
            (prompt_name(name, digit), text.replace("{digit}", spoken_keys.get(digit, digit)))
        )
    return variants


# --- audio -------------------------------------------------------------------------------


def _cache_key(prompt: Prompt) -> str:
    recipe = {
        "text": prompt.text,
        "voice": prompt.voice,
        "espeak": _ESPEAK_ARGS,
        "sox": [*_SOX_INPUT, *_SOX_OUTPUT, *_SOX_EFFECTS],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _is_prompt_audio(path: Path) -> bool:
    try:
        with wave.open(str(path), "rb") as audio:
            return (
                audio.getframerate() == _RATE
                and audio.getnchannels() == 1
                and audio.getsampwidth() == 2
                and audio.getnframes() > 0
            )
    except (OSError, EOFError, wave.Error):
        return False


def _generate(prompt: Prompt, cached: Path) -> None:
    espeak = _tool("espeak-ng", prompt)
    sox = _tool("sox", prompt)
    speech = _run(prompt, [espeak, "-v", prompt.voice, *_ESPEAK_ARGS], prompt.text.encode())
    descriptor, temporary = tempfile.mkstemp(dir=cached.parent, prefix=".", suffix=".tmp")
    os.close(descriptor)
    try:
        _run(
            prompt,
            [sox, "-q", *_SOX_INPUT, *_SOX_OUTPUT, temporary, *_SOX_EFFECTS],
            speech,
        )
        if not _is_prompt_audio(Path(temporary)):
            raise PromptError(
                f"prompt {prompt.name!r} ({prompt.language}): sox wrote no 8 kHz mono audio"
            )
        # Renamed into place only when complete: a cached file is always a whole one.
        os.replace(temporary, cached)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _tool(command: str, prompt: Prompt) -> str:
    found = shutil.which(command)
    if found is None:
        raise PromptError(
            f"cannot generate prompt {prompt.name!r} ({prompt.language}): {command} is not "
            "installed or not on PATH (scripts/install-deps installs it)"
        )
    return found


def _run(prompt: Prompt, command: list[str], stdin: bytes) -> bytes:
    tool = Path(command[0]).name
    try:
        done = subprocess.run(  # noqa: S603 - fixed tools, texts go on stdin
            command, input=stdin, capture_output=True, timeout=_TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PromptError(
            f"cannot generate prompt {prompt.name!r} ({prompt.language}): {tool}: {error}"
        ) from error
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or "no message"
        raise PromptError(
            f"cannot generate prompt {prompt.name!r} ({prompt.language}) with voice "
            f"{prompt.voice!r}: {tool} exited {done.returncode}: {message}"
        )
    return done.stdout


def _install_file(source: Path, target: Path) -> None:
    data = source.read_bytes()
    if target.is_file() and target.read_bytes() == data:
        return
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        # Asterisk may run as its own user: the prompts must be world-readable.
        Path(temporary).chmod(0o644)
        # A call playing the prompt meanwhile sees the old file or the new one, never half.
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
