"""SIP end-to-end harness: SIPp phones as real processes, and what they saw.

Every phone is a SIPp process running a scenario of this folder, with its own SIP, media
and control ports on 127.0.0.1 and its own event log (the scenarios' ``<log>`` actions,
one ``KIND|time|Call-ID|...`` line per event):

- ``SoftPhone``: an agent's softphone; registers with digest auth (register.xml) and
  answers every call Asterisk sends it (agent.xml, SIPp's out-of-call scenario).
- ``CustomerPhone``: the phone the callback dialer calls (agent.xml in server mode).
- ``start_caller`` (``Callers``): a caller of the hotline (caller.xml) pressing RFC 2833 keys.
- ``dial_feature_code``: an agent dialling a feature code such as ``*21`` (feature.xml).

SIPp plays the DTMF captures from a raw socket: it needs root (or CAP_NET_RAW).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SIP_DIR = Path(__file__).resolve().parent
SIP_CONFIG = SIP_DIR / "desk-sip.yaml"
PBX_HOST = "127.0.0.1"
PBX_SIP_PORT = 5060  # desk-sip.yaml sip.port
HOTLINE = "100"  # desk-sip.yaml hotline.numbers
CUSTOMER_PORT = 5090  # desk-sip.yaml callback.dial
METRICS_URL = "http://127.0.0.1:9648/metrics"  # desk-sip.yaml daemon.metrics


def sipp_binary() -> str | None:
    """The SIPp executable (Debian's sip-tester), if installed."""
    return shutil.which("sipp")


@dataclass(frozen=True, slots=True)
class SipEvent:
    """One line of a phone's event log: what happened, when (epoch seconds), on which call."""

    kind: str
    time: float
    call_id: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Invite:
    """An INVITE a phone got, with the headers Firstline adds to an agent's ringing leg."""

    time: float
    call_id: str
    request_uri: str
    from_header: str
    ticket: str
    category: str
    customer: str

    @classmethod
    def from_event(cls, event: SipEvent) -> Invite:
        request_uri, from_header, ticket, category, customer = (
            value.strip() for value in event.fields
        )
        return cls(event.time, event.call_id, request_uri, from_header, ticket, category, customer)


def parse_events(text: str) -> list[SipEvent]:
    """The events of a log; a line cut short by a write in progress is left for later."""
    events = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        try:
            when = float(parts[1])
        except ValueError:
            continue
        events.append(SipEvent(parts[0], when, parts[2], tuple(parts[3:])))
    return events


def free_udp_port(*, with_neighbour: bool = False) -> int:
    """A UDP port on 127.0.0.1 nobody uses now; with its +2 neighbour free too if asked
    (SIPp binds the media port and the one two above it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((PBX_HOST, 0))
            port: int = probe.getsockname()[1]
        if not with_neighbour or port_is_free(port + 2):
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((PBX_HOST, port))
        except OSError:
            return False
    return True


class SippProcess:
    """One SIPp process on its own ports, logging its scenario's events to ``name.log``."""

    def __init__(
        self, name: str, workdir: Path, args: Sequence[str], *, sip_port: int | None = None
    ) -> None:
        binary = sipp_binary()
        if binary is None:
            raise RuntimeError("SIPp is not installed (Debian package sip-tester)")
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.messages_path = workdir / f"{name}.messages"
        self._stderr_path = workdir / f"{name}.stderr"
        self.sip_port = sip_port if sip_port is not None else free_udp_port()
        self._command = [
            binary,
            *args,
            "-i",
            PBX_HOST,
            "-mi",
            PBX_HOST,
            "-p",
            str(self.sip_port),
            "-mp",
            str(free_udp_port(with_neighbour=True)),
            "-cp",
            str(free_udp_port()),
            "-nostdin",
            "-trace_logs",
            "-log_file",
            str(self.log_path),
            # Every SIP message, for the post-mortem of a failed test.
            "-trace_msg",
            "-message_file",
            str(self.messages_path),
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not port_is_free(self.sip_port):
            raise RuntimeError(f"{self.name}: UDP port {self.sip_port} is taken")
        with self._stderr_path.open("ab") as stderr:
            # SIPp redraws its statistics screen on stdout: nobody reads it.
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def events(self) -> list[SipEvent]:
        if not self.log_path.exists():
            return []
        return parse_events(self.log_path.read_text(encoding="utf-8", errors="replace"))

    def wait_for(self, predicate: Callable[[SipEvent], bool], timeout: float) -> SipEvent:
        """The first event that matches, waiting for it up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no matching SIP event within {timeout} s; "
                    f"saw {[(e.kind, e.call_id) for e in self.events()]}\n{self.tail()}"
                )
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"{self.name}: SIPp exited ({self._proc.returncode}) without a matching "
                    f"event; saw {[(e.kind, e.call_id) for e in self.events()]}\n{self.tail()}"
                )
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name}: SIPp still running after {timeout} s\n{self.tail()}"
            ) from None

    def stop(self) -> None:
        """SIGTERM (SIPp exits at once; the events are already on disk), then SIGKILL."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None

    def tail(self) -> str:
        """The end of SIPp's errors and of the SIP messages, for a failure's message."""
        parts = []
        for path in (self._stderr_path, self.messages_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"--- {path.name}:\n{text[-2500:]}")
        return "\n".join(parts)


class SoftPhone:
    """An agent's softphone: registered to Asterisk as the agent's endpoint, it answers
    each call after ``ring_ms`` and hangs up after ``talk_ms`` unless the other side does."""

    def __init__(
        self, agent: str, password: str, workdir: Path, *, ring_ms: int, talk_ms: int
    ) -> None:
        self.agent = agent
        self.process = SippProcess(
            agent,
            workdir,
            [
                f"{PBX_HOST}:{PBX_SIP_PORT}",
                "-sf",
                str(SIP_DIR / "register.xml"),
                "-oocsf",
                str(SIP_DIR / "agent.xml"),
                "-s",
                agent,
                "-au",
                agent,
                "-ap",
                password,
                "-m",
                "1",
                "-set",
                "ring_ms",
                str(ring_ms),
                "-set",
                "talk_ms",
                str(talk_ms),
            ],
        )

    @property
    def contact(self) -> str:
        """The contact Asterisk keeps for this phone once it registered."""
        return f"sip:{self.agent}@{PBX_HOST}:{self.process.sip_port}"

    def start(self) -> None:
        self.process.start()

    def wait_registered(self, timeout: float = 10) -> None:
        self.process.wait_for(lambda event: event.kind == "REGISTERED", timeout)

    def invites(self) -> list[Invite]:
        return [Invite.from_event(e) for e in self.process.events() if e.kind == "INVITE"]

    def call_ended(self, call_id: str) -> bool:
        return any(
            e.kind in ("ENDED", "CANCELLED") and e.call_id == call_id for e in self.process.events()
        )

    def stop(self) -> None:
        self.process.stop()


class CustomerPhone:
    """A customer's phone answering callbacks on ``CUSTOMER_PORT`` (any number)."""

    def __init__(self, workdir: Path, *, ring_ms: int, talk_ms: int) -> None:
        self.process = SippProcess(
            "customer",
            workdir,
            [
                "-sf",
                str(SIP_DIR / "agent.xml"),
                "-set",
                "ring_ms",
                str(ring_ms),
                "-set",
                "talk_ms",
                str(talk_ms),
            ],
            sip_port=CUSTOMER_PORT,
        )

    def start(self) -> None:
        self.process.start()

    def invites(self) -> list[Invite]:
        return [Invite.from_event(e) for e in self.process.events() if e.kind == "INVITE"]

    def stop(self) -> None:
        self.process.stop()


class Callers:
    """Callers of the hotline placed by one test; whatever still runs is stopped after it."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._started: list[SippProcess] = []

    def call(self, number: str, keys: str, hold_s: float) -> SippProcess:
        """See `start_caller`."""
        caller = start_caller(self._workdir, number, keys, hold_s)
        self._started.append(caller)
        return caller

    def stop_all(self) -> None:
        for caller in self._started:
            caller.stop()


def start_caller(workdir: Path, number: str, keys: str, hold_s: float) -> SippProcess:
    """A caller dialling the hotline from ``number``; once answered, presses ``keys``
    (caller.xml's syntax: 0-9 * # a key, w 0.5 s, W 1 s) and stays ``hold_s`` seconds
    unless Asterisk hangs up first. Returns the running SIPp process."""
    name = f"caller-{number.lstrip('+')}-{time.monotonic_ns()}"
    injection = workdir / f"{name}.csv"
    injection.write_text(f"SEQUENTIAL\n{number};{keys};{hold_s:g}\n", encoding="utf-8")
    caller = SippProcess(
        name,
        workdir,
        [
            f"{PBX_HOST}:{PBX_SIP_PORT}",
            "-sf",
            str(SIP_DIR / "caller.xml"),
            "-inf",
            str(injection),
            "-s",
            HOTLINE,
            "-m",
            "1",
        ],
    )
    caller.start()
    return caller


def dial_feature_code(
    workdir: Path, agent: str, password: str, code: str, timeout: float = 20
) -> list[SipEvent]:
    """The agent dials ``code`` from a softphone (its own port, authenticated as the
    agent's endpoint); returns once Asterisk hung up, with the call's events."""
    name = f"{agent}-{code.lstrip('*#')}-{os.getpid()}-{time.monotonic_ns()}"
    dialler = SippProcess(
        name,
        workdir,
        [
            f"{PBX_HOST}:{PBX_SIP_PORT}",
            "-sf",
            str(SIP_DIR / "feature.xml"),
            "-s",
            code,
            "-key",
            "user",
            agent,
            "-au",
            agent,
            "-ap",
            password,
            "-m",
            "1",
        ],
    )
    dialler.start()
    code_returned = dialler.wait_exit(timeout)
    events = dialler.events()
    if code_returned != 0 or [e.kind for e in events] != ["ANSWERED", "ENDED"]:
        raise AssertionError(
            f"{agent} dialling {code}: SIPp exit {code_returned}, events "
            f"{[e.kind for e in events]}\n{dialler.tail()}"
        )
    return events
