"""Re-record the AMI transcripts in this folder from a real Asterisk 22.

Usage (from the repository root, Asterisk root installed with `asterisk/pbx install`):

    .venv/bin/python tests/transcripts/ami/record.py

It takes /tmp/firstline-pbx.lock, starts Asterisk with ./asterisk-conf, opens raw TCP
sessions to 127.0.0.1:5038, writes every byte read from the socket unchanged into
`<name>.bin` (and the bytes it sent into `<name>.sent.bin`), then stops Asterisk and releases
the lock. Actions are formatted by hand here, not by acd.ami, so the recordings do not
depend on the code they test. It must not be imported by tests; it only writes fixtures.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[2]
_PBX = _REPO / "asterisk" / "pbx"
_LOCK = "/tmp/firstline-pbx.lock"
_SECRET = "firstline-test"


class _Session:
    """One raw AMI socket; keeps every byte it reads and every byte it sends."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", 5038), timeout=5)
        self.received = bytearray()
        self.sent = bytearray()

    def send(self, action: str, action_id: str, **fields: str | list[str]) -> None:
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        for key, value in fields.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {item}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sent += data
        self.sock.sendall(data)

    def read_until(self, marker: bytes, timeout: float = 10.0, end: bytes = b"\r\n\r\n") -> None:
        """Read until `marker` followed by `end` (the end of its message) is in the buffer."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.received.find(marker)
            if at >= 0 and self.received.find(end, at) >= 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} within {timeout}s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}")
            self.received += chunk

    def drain(self, seconds: float) -> None:
        """Keep reading for `seconds` (trailing events), or until the peer closes."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return
            if not chunk:
                return
            self.received += chunk

    def save(self, name: str) -> None:
        self.sock.close()
        (_HERE / f"{name}.bin").write_bytes(bytes(self.received))
        (_HERE / f"{name}.sent.bin").write_bytes(bytes(self.sent))
        print(f"{name}.bin: {len(self.received)} bytes")


def _login(session: _Session, user: str, events: str) -> None:
    session.read_until(b"Asterisk Call Manager/", 5, b"\r\n")
    session.send("Login", "login-1", Username=user, Secret=_SECRET, Events=events)
    session.read_until(b"ActionID: login-1")


def _record_actions() -> None:
    s = _Session()
    _login(s, "firstline", "off")
    s.send("Ping", "ping-1")
    s.read_until(b"ActionID: ping-1")
    s.send("QueueStatus", "qs-1")
    s.read_until(b"Event: QueueStatusComplete")
    s.send("CoreShowChannels", "csc-1")
    s.read_until(b"Event: CoreShowChannelsComplete")
    s.send("Command", "cmd-1", Command="core show version")
    s.read_until(b"ActionID: cmd-1")
    s.send("Command", "cmd-2", Command="queue show support")
    s.read_until(b"ActionID: cmd-2")
    s.send("Command", "cmd-3", Command="no such command here")
    s.read_until(b"ActionID: cmd-3")
    s.send("QueueAdd", "qa-1", Queue="support", Interface="Local/agent2@test-agents")
    s.read_until(b"ActionID: qa-1")
    s.send("QueueAdd", "qa-2", Queue="support", Interface="Local/agent2@test-agents")
    s.read_until(b"ActionID: qa-2")
    s.send("QueueRemove", "qr-1", Queue="support", Interface="Local/agent2@test-agents")
    s.read_until(b"ActionID: qr-1")
    s.send("NoSuchAction", "bad-1")
    s.read_until(b"ActionID: bad-1")
    s.send("Logoff", "bye-1")
    s.drain(2)
    s.save("login_actions")


def _record_queue_call(user: str, name: str) -> None:
    s = _Session()
    _login(s, user, "on")
    s.send("QueueStatus", "qs-1")
    s.read_until(b"Event: QueueStatusComplete")
    s.send(
        "Originate",
        "orig-1",
        Channel="Local/caller@test-callers",
        Context="hotline",
        Exten="support",
        Priority="1",
        CallerID='"José Müller" <100>',
        Variable=["FIRSTLINE_TICKET=T-1", "FIRSTLINE_LANG=de"],
        Async="true",
    )
    s.read_until(b"ActionID: orig-1")
    s.read_until(b"Event: QueueCallerLeave", 20)
    s.read_until(b"Event: AgentComplete", 20)
    s.drain(1.5)
    s.send("Logoff", "bye-1")
    s.drain(2)
    s.save(name)


def _record_session_filter() -> None:
    """Events on, then per-session filters (Filter action, advanced name() criteria)."""
    s = _Session()
    _login(s, "firstline", "on")
    for n, name in enumerate(["QueueCallerJoin", "QueueCallerLeave", "AgentConnect"]):
        s.send("Filter", f"flt-{n}", Operation="Add", MatchCriteria=f"name({name})")
        s.read_until(f"ActionID: flt-{n}".encode())
    s.send("Filter", "flt-bad", Operation="Add", MatchCriteria="nonsense(")
    s.read_until(b"ActionID: flt-bad")
    s.send(
        "Originate",
        "orig-1",
        Channel="Local/caller@test-callers",
        Context="hotline",
        Exten="support",
        Priority="1",
        CallerID='"José Müller" <100>',
        Async="true",
    )
    s.read_until(b"ActionID: orig-1")
    s.read_until(b"Event: AgentConnect", 20)
    s.drain(3)
    s.send("Logoff", "bye-1")
    s.drain(2)
    s.save("login_session_filter_call")


def _record_failed_login() -> None:
    s = _Session()
    s.read_until(b"Asterisk Call Manager/", 5, b"\r\n")
    s.send("Login", "login-1", Username="firstline", Secret="wrong")
    s.read_until(b"ActionID: login-1")
    s.drain(1)
    s.save("login_failed")


def main() -> int:
    conf = _HERE / "asterisk-conf"
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            subprocess.run([str(_PBX), "start", str(conf)], check=True)
            # Local-channel members report their state only after the dialplan is up.
            time.sleep(1)
            _record_failed_login()
            _record_actions()
            _record_queue_call("firstline", "login_queue_call")
            _record_queue_call("filtered", "login_filtered_queue_call")
            _record_session_filter()
        finally:
            subprocess.run([str(_PBX), "stop"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
