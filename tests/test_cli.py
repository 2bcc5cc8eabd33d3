"""The ``acd`` command as an admin runs it: a real subprocess, real files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.live.harness import LIVE_CONFIG, run_acd

BROKEN = """\
hotline:
  numbers: ["100"]
  languages: [en]
  region: DE
  default_queue: first-level
daemon:
  ami:
    secret: hunter2
skills:
  - {id: general, name: General}
queues:
  - id: first-level
    name: First level
    skills: {general: 7, printing: 2}
    stratgy: ringall
agents:
  - id: alice
    name: Alice
    extension: "201"
    secret: {env: ALICE_SECRET}
    skills: {general: 3}
    site: paris
sites:
  - id: berlin
    timezone: Europe/Berlln
sla:
  priorities: {}
"""


def _acd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_acd(*args, env=env)


def test_check_prints_every_mistake_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "desk.yaml"
    config.write_text(BROKEN)
    done = _acd("check", str(config), env={**os.environ, "ALICE_SECRET": "x"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    located = re.findall(rf"^{re.escape(str(config))}:(\d+):(\d+): (.+)$", done.stderr, re.M)
    lines = {int(line) for line, _col, _msg in located}
    # literal secret (8), level 7 (14), unknown skill (14), typo'd key (15),
    # unknown site (22), bad time zone (25)
    assert {8, 14, 15, 22, 25} <= lines, done.stderr
    assert len(located) >= 6


def test_check_accepts_the_live_config() -> None:
    done = _acd("check", str(LIVE_CONFIG), env={**os.environ, "FIRSTLINE_TEST_SECRET": "s"})
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_render_writes_asterisk_files_and_keeps_old_ones_on_error(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    env = {**os.environ, "FIRSTLINE_TEST_SECRET": "s"}
    done = _acd("render", str(LIVE_CONFIG), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    rendered = {p.name for p in out.iterdir()}
    assert {"extensions.conf", "queues.conf", "pjsip.conf", "manager.conf"} <= rendered
    before = (out / "queues.conf").read_text()

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    done = _acd("render", str(broken), "--out", str(out), env=env)
    assert done.returncode == 1
    assert (out / "queues.conf").read_text() == before
