"""Re-record the FastAGI transcripts in this folder from a real Asterisk 22.

Usage (from the repository root, Asterisk root installed with `asterisk/pbx install`):

    .venv/bin/python tests/transcripts/agi/record.py

It takes /tmp/firstline-pbx.lock, starts Asterisk with ./asterisk-conf, listens on
127.0.0.1:4599 with a plain socket, originates one Local channel per scenario with
`asterisk/pbx cli "channel originate Local/NAME@agi-rec application Wait N"`, writes every
byte read from Asterisk unchanged into `<name>.bin` and what it sent into `<name>.sent.bin`,
collects the "AGIREC" lines the dialplan logs into `asterisk-results.txt`, then stops
Asterisk and releases the lock.  Commands are written by hand here, not by acd.agi, so the
recordings do not depend on the code they test.  Tests never import this file.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[2]
_PBX = _REPO / "asterisk" / "pbx"
_LOCK = "/tmp/firstline-pbx.lock"
_PORT = 4599


class _Conn:
    """One accepted FastAGI socket; keeps every byte read and sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()
        self.sent = bytearray()
        self._pos = 0  # start of the not yet consumed part of `received`

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from Asterisk")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        self.received += chunk
        return bool(chunk)

    def line(self, timeout: float = 10.0) -> bytes | None:
        """The next line (without LF), or None at end of stream."""
        deadline = time.monotonic() + timeout
        while (end := self.received.find(b"\n", self._pos)) < 0:
            if not self._fill(deadline):
                return None
        line = bytes(self.received[self._pos : end])
        self._pos = end + 1
        return line

    def header(self) -> None:
        while self.line() not in (b"", None):
            pass

    def send(self, raw: bytes) -> None:
        self.sent += raw
        self.sock.sendall(raw)

    def command(self, raw: bytes) -> None:
        """Send one command line and read its whole reply (520 blocks included)."""
        self.send(raw)
        while (line := self.line()) is not None:
            if line == b"HANGUP" or line.startswith((b"520-", b" ")):
                continue
            if line[:3].isdigit() and line[3:4] == b" ":
                return
        raise ConnectionError("closed while waiting for a reply")

    def wait_eof(self, timeout: float) -> float | None:
        """Seconds until Asterisk closes its side, or None if it did not within timeout."""
        start = time.monotonic()
        deadline = start + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return None
        return time.monotonic() - start


def _session(conn: _Conn) -> None:
    conn.header()
    conn.command(b"GET VARIABLE FOO\n")
    conn.command(b"GET VARIABLE NOT_SET_ANYWHERE\n")
    conn.command(b'GET FULL VARIABLE "${CALLERID(name)}"\n')
    conn.command(b'SET VARIABLE REC_RESULT "hello \\"world\\" back\\\\slash"\n')
    conn.command(b"GET VARIABLE REC_RESULT\n")
    conn.command(b'STREAM FILE no-such-prompt ""\n')
    conn.command(b"NO SUCH COMMAND\n")
    conn.command(b"GET DATA\n")
    conn.command(b"SAY DIGITS\n")
    conn.command(b'VERBOSE "h\xc3\xa9llo from record.py" 1\n')
    conn.command(b'EXEC Log "NOTICE,AGIREC exec a\\\\,b and (c)"\n')


def _hangup(conn: _Conn) -> None:
    conn.header()
    conn.command(b"ANSWER\n")
    # The caller's half hangs up after 2 s; Asterisk then sends "HANGUP" unasked.
    while conn.line(timeout=8) not in (b"HANGUP", None):
        pass
    conn.command(b"GET VARIABLE FOO\n")
    conn.command(b'STREAM FILE beep ""\n')
    conn.command(b"SET VARIABLE AFTER_HANGUP 1\n")
    conn.command(b"ANSWER\n")


def _hangup_idle(conn: _Conn) -> None:
    conn.header()
    seconds = conn.wait_eof(timeout=8)
    _note(f"hangupidle: Asterisk closed the socket after {seconds} s (None = not within 8 s)")


def _close_early(conn: _Conn) -> None:
    conn.header()


def _failure(conn: _Conn) -> None:
    conn.header()
    conn.send(b"FAILURE\n")
    conn.wait_eof(timeout=3)


_NOTES: list[str] = []


def _note(text: str) -> None:
    _NOTES.append(text)
    print(text)


_SCENARIOS: list[tuple[str, int, Callable[[_Conn], None] | None]] = [
    ("session", 10, _session),
    ("hangup", 2, _hangup),
    ("hangupidle", 2, _hangup_idle),
    ("closeearly", 5, _close_early),
    ("failure", 5, _failure),
    ("portclosed", 5, None),
]


def _pbx(*args: str) -> str:
    done = subprocess.run(
        [str(_PBX), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"pbx {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _record(listener: socket.socket) -> None:
    for name, wait, script in _SCENARIOS:
        _pbx("cli", f"channel originate Local/{name}@agi-rec application Wait {wait}")
        if script is None:
            time.sleep(3)
            continue
        listener.settimeout(10)
        sock, _ = listener.accept()
        conn = _Conn(sock)
        try:
            script(conn)
        finally:
            sock.close()
            (_HERE / f"{name}.bin").write_bytes(bytes(conn.received))
            (_HERE / f"{name}.sent.bin").write_bytes(bytes(conn.sent))
        time.sleep(wait + 1)


def main() -> int:
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _pbx("start", str(_HERE / "asterisk-conf"))
            log_path = Path(_pbx("log").strip())
            offset = log_path.stat().st_size if log_path.exists() else 0
            _pbx("cli", "agi set debug on")
            with socket.create_server(("127.0.0.1", _PORT), reuse_port=False) as listener:
                _record(listener)
            time.sleep(1)
            with log_path.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode("utf-8", "replace").splitlines()
            kept = [ln for ln in lines if "AGIREC" in ln or "AGI Script" in ln or "agi://" in ln]
            (_HERE / "asterisk-results.txt").write_text("\n".join(kept + _NOTES) + "\n")
        finally:
            _pbx("stop")
            fcntl.flock(lock, fcntl.LOCK_UN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
