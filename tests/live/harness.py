"""Live-test harness: renders a config with Local-channel callers and agents, runs the
daemon as a real subprocess (``acd run``) and reads its JSON log.

The dialplan contexts written here (extensions_local.conf, included by the rendered
extensions.conf) stand in for phones: ``test-agents`` answers like an agent's softphone,
``test-callers`` holds the caller's line open.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from acd.ami import AmiClient, Event
from acd.config import load_config
from acd.tickets import CallRecord, CallStore, create_engine_for
from ivr.prompts import install_for_config
from pbx_config import render, write_rendered
from tests.conftest import LivePbx

REPO = Path(__file__).resolve().parents[2]
LIVE_CONFIG = Path(__file__).resolve().parent / "desk-live.yaml"
TEST_SECRET = "firstline-test-secret"  # the live tests' own throwaway Asterisk

_ACD = (sys.executable, "-m", "acd.cli")

HARNESS_DIALPLAN = """
; Written by tests/live/harness.py: phones for the live tests.
[test-agents]
; An agent's softphone: rings for AGENT_RING seconds (default 0), talks AGENT_TALK (2).
exten => _[a-z].,1,Wait(${IF($["${AGENT_RING}" = ""]?0:${AGENT_RING})})
 same => n,Answer()
 same => n,Wait(${IF($["${AGENT_TALK}" = ""]?2:${AGENT_TALK})})
 same => n,Hangup()

[test-callers]
; The caller's phone: stays on the line for CALLER_HOLD seconds (default 30).
exten => hold,1,Wait(${IF($["${CALLER_HOLD}" = ""]?30:${CALLER_HOLD})})
 same => n,Hangup()
; Presses the digit(s) in the extension after PRESS_AFTER seconds, then holds on
; (CALLER_HOLD seconds, default 30).
exten => _press.,1,Wait(${IF($["${PRESS_AFTER}" = ""]?2:${PRESS_AFTER})})
 same => n,SendDTMF(${EXTEN:5})
 same => n,Wait(${IF($["${CALLER_HOLD}" = ""]?30:${CALLER_HOLD})})
 same => n,Hangup()
; Presses KEYS (SendDTMF syntax: 'W' waits a second) after PRESS_AFTER seconds, then holds
; on for CALLER_HOLD seconds (default 30).
exten => keys,1,Wait(${IF($["${PRESS_AFTER}" = ""]?1:${PRESS_AFTER})})
 same => n,SendDTMF(${KEYS})
 same => n,Wait(${IF($["${CALLER_HOLD}" = ""]?30:${CALLER_HOLD})})
 same => n,Hangup()

[test-customers]
; Customers' phones for callbacks, by number: +4930555... answer and talk
; CUSTOMER_TALK seconds (default 3), +4930666... ring and never answer, +4930777... are busy.
exten => _+4930555.,1,Wait(1)
 same => n,Answer()
 same => n,Wait(${IF($["${CUSTOMER_TALK}" = ""]?3:${CUSTOMER_TALK})})
 same => n,Hangup()
exten => _+4930666.,1,Ringing()
 same => n,Wait(120)
exten => _+4930777.,1,Busy(5)
"""


def run_acd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The ``acd`` command as an admin runs it: a real subprocess from the repository."""
    return subprocess.run(
        [*_ACD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env or dict(os.environ),
        cwd=REPO,
    )


def live_env() -> dict[str, str]:
    return {**os.environ, "FIRSTLINE_TEST_SECRET": TEST_SECRET}


def render_live(out_dir: Path, config_path: Path = LIVE_CONFIG) -> Path:
    """Render ``config_path`` plus the phone harness into ``out_dir``, and install the
    config's prompts into the live Asterisk's sounds folder (as ``acd render --sounds``)."""
    os.environ["FIRSTLINE_TEST_SECRET"] = TEST_SECRET
    config = load_config(config_path)
    files = render(config)
    files["extensions_local.conf"] = HARNESS_DIALPLAN
    write_rendered(files, out_dir)
    install_for_config(config, pbx_sounds())
    return out_dir


def pbx_sounds() -> Path:
    """Asterisk's sounds folder (holding en/, fr/) in the live root, seen from the host."""
    return LivePbx().root / "usr/share/asterisk/sounds"


class DaemonProcess:
    """``acd run CONFIG`` as a subprocess with its JSON log captured to a file."""

    def __init__(
        self,
        log_path: Path,
        config_path: Path = LIVE_CONFIG,
        env: dict[str, str] | None = None,
        asterisk_conf: Path | None = None,
    ) -> None:
        self.log_path = log_path
        if config_path.parent != log_path.parent:
            # The daemon keeps its database beside the config: never in the repository.
            copied = log_path.parent / config_path.name
            shutil.copy(config_path, copied)
            config_path = copied
        self.config_path = config_path
        self.store_url = f"sqlite+aiosqlite:///{config_path.parent.resolve() / 'firstline.db'}"
        self.pid_file = log_path.with_suffix(".pid")
        self._asterisk_conf = asterisk_conf
        self._env = {**live_env(), **(env or {})}
        self._skip = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> None:
        """Start the daemon; `lines` and `wait_for` then see this run's log only."""
        self._skip = sum(1 for _ in self._all_lines())
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                *_ACD,
                "run",
                str(self.config_path),
                "--pid-file",
                str(self.pid_file),
                *(["--asterisk-conf", str(self._asterisk_conf)] if self._asterisk_conf else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=REPO,
        )
        log.close()
        if wait_ready:
            self.wait_for(lambda line: line.get("event") == "ami.logged_in", timeout=15)

    def wait_exit(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        code = self._proc.returncode
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: the daemon dies at once, with no chance to clean up."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def reload(self) -> subprocess.CompletedProcess[str]:
        """``acd reload`` as an admin runs it."""
        return run_acd(
            "reload", str(self.config_path), "--pid-file", str(self.pid_file), env=self._env
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def lines(self) -> Iterator[dict[str, Any]]:
        """The JSON lines the current (or last) run of the daemon logged."""
        for index, line in enumerate(self._all_lines()):
            if index >= self._skip:
                yield line

    def _all_lines(self) -> Iterator[dict[str, Any]]:
        if not self.log_path.exists():
            return
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                yield parsed

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if predicate(line):
                    return line
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        raise AssertionError(f"daemon log has no matching line within {timeout} s:\n{tail}")


async def login_agent(ami: AmiClient, queue: str, interface: str, penalty: int = 0) -> None:
    result = await ami.action(
        "QueueAdd", {"Queue": queue, "Interface": interface, "Penalty": str(penalty)}, timeout=5
    )
    assert result.ok or "Already there" in result.response.message, result.response


async def logout_everyone(ami: AmiClient) -> None:
    status = await ami.action("QueueStatus", timeout=5)
    for event in status.events:
        if event.name == "QueueMember":
            await ami.action(
                "QueueRemove",
                {"Queue": event.get("Queue"), "Interface": event.get("StateInterface")},
                timeout=5,
            )


async def place_call(
    ami: AmiClient,
    caller_number: str,
    phone: str = "hold",
    variables: dict[str, str] | None = None,
) -> str:
    """Originate a Local-channel caller into the hotline; returns the caller's unique id.

    ``phone`` is the caller's behaviour, an extension of the harness's test-callers context.
    """
    uid = f"test-{uuid.uuid4().hex[:12]}"
    result = await ami.action(
        "Originate",
        {
            "Channel": "Local/100@firstline-hotline",
            "Context": "test-callers",
            "Exten": phone,
            "Priority": "1",
            "CallerID": f'"Test Caller" <{caller_number}>',
            # Asterisk names the Local channel's second half (the caller) "<ChannelId>;2".
            "ChannelId": uid,
            "Async": "true",
            # Set on the phone's half; "__" names are inherited by the caller's half.
            "Variable": [f"{name}={value}" for name, value in (variables or {}).items()],
        },
        timeout=5,
    )
    assert result.ok, result.response
    return f"{uid};2"


async def collect(ami: AmiClient, uid: str, until: str, within: float) -> list[Event]:
    seen: list[Event] = []
    done = asyncio.Event()

    def watch(event: Event) -> None:
        if event.get("Uniqueid") == uid:
            seen.append(event)
            if event.name == until:
                done.set()

    unsubscribe = ami.subscribe(None, watch)
    try:
        async with asyncio.timeout(within):
            await done.wait()
    except TimeoutError:
        journey = [e.name for e in seen]  # how far the call got
        raise AssertionError(f"no {until} for {uid} within {within} s; saw {journey}") from None
    finally:
        unsubscribe()
    return seen


async def dial_feature_code(ami: AmiClient, code: str, extension: str) -> None:
    result = await ami.action(
        "Originate",
        {
            "Channel": f"Local/{code}@firstline-agents",
            "Application": "Wait",
            "Data": "2",
            "CallerID": f"<{extension}>",
            "Async": "true",
        },
        timeout=5,
    )
    assert result.ok, result.response


async def queue_members(ami: AmiClient, queue: str) -> dict[str, Event]:
    status = await ami.action("QueueStatus", {"Queue": queue}, timeout=5)
    return {e.get("StateInterface") or "": e for e in status.events if e.name == "QueueMember"}


async def wait_members(
    ami: AmiClient, queue: str, predicate: Callable[[dict[str, Event]], bool]
) -> dict[str, Event]:
    current: dict[str, Event] = {}
    for _ in range(50):
        current = await queue_members(ami, queue)
        if predicate(current):
            return current
        await asyncio.sleep(0.2)
    raise AssertionError(f"{queue} members never matched: {list(current)}")


async def waiting_callers(ami: AmiClient, queue: str) -> list[str]:
    status = await ami.action("QueueStatus", {"Queue": queue}, timeout=5)
    entries = [e for e in status.events if e.name == "QueueEntry"]
    return [e.get("Uniqueid") or "" for e in sorted(entries, key=lambda e: int(e.get("Position")))]


def metric(name: str, **labels: str) -> float:
    """One sample of the daemon's /metrics (tests/live/desk-live.yaml's endpoint)."""
    with urllib.request.urlopen("http://127.0.0.1:9648/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels or ''} not exported")


async def call_record(
    store_url: str,
    uid: str,
    ready: Callable[[CallRecord], bool] = lambda record: True,
    within: float = 10.0,
) -> CallRecord | None:
    """The call's record once `ready` holds (the daemon writes records behind the calls,
    in batches); the last one read, or None, when it does not within `within` seconds."""
    engine = create_engine_for(store_url)
    record = None
    try:
        calls = CallStore(engine)
        deadline = time.monotonic() + within
        while True:
            record = await calls.get(uid)
            if (record is not None and ready(record)) or time.monotonic() > deadline:
                return record
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
