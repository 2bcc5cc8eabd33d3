"""Shared fixtures: the live Asterisk (one at a time, behind a file lock) and helpers.

Live tests are marked ``live``. Without an Asterisk root they are skipped on a developer
machine, but with FIRSTLINE_REQUIRE_LIVE=1 (set by .ci/run) a missing PBX fails the run:
CI must never pass by skipping the tests that matter.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PBX_SCRIPT = REPO / "asterisk" / "pbx"
LOCK_PATH = Path("/tmp/firstline-pbx.lock")


class LivePbx:
    """Drives the real Asterisk through ``asterisk/pbx``."""

    def __init__(self) -> None:
        self.root = Path(self._run("root").strip())
        self._full_log = self.root / "var/log/asterisk/full"
        self._log_offset = 0

    def _run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(PBX_SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"asterisk/pbx {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    @property
    def installed(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists()

    def start(self, conf_dir: Path, *, fresh_state: bool = False) -> None:
        """(Re)start Asterisk on the rendered configuration in ``conf_dir``.

        ``fresh_state`` forgets what Asterisk kept from earlier runs (its astdb holds
        persistent queue members), so a test starts from logged-out agents.
        """
        self._run("stop", check=False)
        if fresh_state:
            (self.root / "var/lib/asterisk/astdb.sqlite3").unlink(missing_ok=True)
        self._log_offset = self._full_log.stat().st_size if self._full_log.exists() else 0
        self._run("start", str(conf_dir))

    def stop(self) -> None:
        self._run("stop", check=False)

    def cli(self, command: str) -> str:
        return self._run("cli", command)

    def log_since_start(self) -> str:
        if not self._full_log.exists():
            return ""
        with self._full_log.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", "replace")

    def errors_since_start(self) -> list[str]:
        return [line for line in self.log_since_start().splitlines() if " ERROR[" in line]


@pytest.fixture(scope="session")
def pbx() -> Iterator[LivePbx]:
    """The one live Asterisk, held under the machine-wide lock for the whole session."""
    live = LivePbx()
    if not live.installed:
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail("no Asterisk root: run 'asterisk/pbx install' (make test does)")
        pytest.skip("no Asterisk root: run 'asterisk/pbx install' to enable live tests")
    with LOCK_PATH.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield live
        finally:
            live.stop()
            fcntl.flock(lock, fcntl.LOCK_UN)
