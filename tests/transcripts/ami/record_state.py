"""Record `state_queue_life.bin`: the AMI events Firstline's live state model is built from.

Usage (from the repository root, Asterisk root installed with `asterisk/pbx install`):

    .venv/bin/python tests/transcripts/ami/record_state.py

It renders tests/live/desk-live.yaml (plus the Local-channel phone harness), takes
/tmp/firstline-pbx.lock, starts Asterisk with a fresh astdb (persistent queue members would
leak in from earlier runs), and drives one scenario through the project's own
`acd.ami.AmiClient`, connected through a small in-process TCP relay that keeps every byte
Asterisk sent, unchanged, in `state_queue_life.bin`. The Firstline daemon is not running, so
the hotline's AGI fails and calls reach `first-level` through the dialplan fallback.

Scenario: alice and bob are added to first-level, alice is paused ("lunch"); three callers
arrive (c1 talks to bob, c2 and c3 wait; c3 has priority 5 and hangs up while waiting);
QueueStatus + CoreShowChannels run while they wait and again while c1 and c2 are connected;
alice is unpaused and answers c2; c1 hangs up during the talk (Reason: caller), alice ends
c2's call (Reason: agent); a last QueueStatus + CoreShowChannels, then both leave the queue.
It writes fixtures only and must not be imported by tests.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parents[2]
sys.path.insert(0, str(_REPO))

from acd.ami import AmiClient, Event  # noqa: E402
from tests.live.harness import render_live  # noqa: E402

_PBX = _REPO / "asterisk" / "pbx"
_LOCK = "/tmp/firstline-pbx.lock"
_NAME = "state_queue_life"
_QUEUE = "first-level"
_ALICE = "Local/alice@test-agents"
_BOB = "Local/bob@test-agents"


class _Relay:
    """127.0.0.1:<ephemeral> → 127.0.0.1:5038, keeping what Asterisk sends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        pbx_r, pbx_w = await asyncio.open_connection("127.0.0.1", 5038)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            while data := await src.read(65536):
                if keep:
                    self.received += data
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pump(pbx_r, client_w, True), pump(client_r, pbx_w, False), return_exceptions=True
        )


class _Seen:
    """Counts the broadcast events by name, and wakes whoever waits for more."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.counts[event.name] += 1
        self.changed.set()
        if os.environ.get("RECORD_DEBUG"):
            print(event.name, dict(event.fields))

    async def wait_for(self, name: str, count: int, limit: float = 20.0) -> None:
        async with asyncio.timeout(limit):
            while self.counts[name] < count:
                self.changed.clear()
                await self.changed.wait()


async def _snapshot(client: AmiClient) -> None:
    (await client.action("QueueStatus", {"Queue": _QUEUE})).raise_for_status()
    (await client.action("CoreShowChannels")).raise_for_status()


def _caller(number: str, name: str, variables: list[str]) -> dict[str, str | list[str]]:
    return {
        "Channel": "Local/100@firstline-hotline",
        "Context": "test-callers",
        "Exten": "hold",
        "Priority": "1",
        "CallerID": f'"{name}" <{number}>',
        "Variable": variables,
        "Async": "true",
    }


async def _scenario() -> bytes:
    relay = _Relay()
    await relay.start()
    client = AmiClient(
        port=relay.port,
        username="firstline",
        secret=os.environ["FIRSTLINE_TEST_SECRET"],
        reconnect=False,
    )
    seen = _Seen()
    client.subscribe(None, seen)
    runner = asyncio.create_task(client.run())
    await client.wait_logged_in(10)
    for iface, name in ((_ALICE, "Alice Martin"), (_BOB, "Bob Keller")):
        fields = {"Queue": _QUEUE, "Interface": iface, "MemberName": name, "Penalty": "0"}
        (await client.action("QueueAdd", fields)).raise_for_status()
    pause = {"Queue": _QUEUE, "Interface": _ALICE, "Paused": "true", "Reason": "lunch"}
    (await client.action("QueuePause", pause)).raise_for_status()
    # Variables are copied from the Local ;1 half to ;2 (the queue caller); "__" ones are
    # inherited on by the agent's Local channel, so each caller sets its agent's timing.
    c1 = _caller("4940111", "Carla One", ["CALLER_HOLD=7", "__AGENT_RING=1", "__AGENT_TALK=20"])
    c2 = _caller("4940222", "Chris Two", ["CALLER_HOLD=30", "__AGENT_RING=1", "__AGENT_TALK=2"])
    c3 = _caller("4940333", "Cleo Three", ["CALLER_HOLD=4", "QUEUE_PRIO=5"])
    for n, caller in enumerate((c1, c2, c3), 1):
        (await client.action("Originate", caller)).raise_for_status()
        await seen.wait_for("QueueCallerJoin", n)
        await asyncio.sleep(0.3)
    await seen.wait_for("AgentConnect", 1)
    await _snapshot(client)  # c1 on call with bob, c3 (prio 5) and c2 waiting, alice paused
    await seen.wait_for("QueueCallerAbandon", 1)
    unpause = {"Queue": _QUEUE, "Interface": _ALICE, "Paused": "false"}
    (await client.action("QueuePause", unpause)).raise_for_status()
    await seen.wait_for("AgentConnect", 2)
    await _snapshot(client)  # c1 with bob, c2 with alice, nobody waiting
    await seen.wait_for("AgentComplete", 2, limit=30)
    await asyncio.sleep(1.0)
    await _snapshot(client)
    for iface in (_ALICE, _BOB):
        fields = {"Queue": _QUEUE, "Interface": iface}
        (await client.action("QueueRemove", fields)).raise_for_status()
    await asyncio.sleep(0.5)
    await client.close()
    await runner
    await relay.stop()
    return bytes(relay.received)


def main() -> int:
    conf = Path(tempfile.mkdtemp(prefix="firstline-state-conf-"))
    render_live(conf)
    root = Path(
        subprocess.run(
            [str(_PBX), "root"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            subprocess.run([str(_PBX), "stop"], check=False)
            (root / "var/lib/asterisk/astdb.sqlite3").unlink(missing_ok=True)
            subprocess.run([str(_PBX), "start", str(conf)], check=True)
            data = asyncio.run(_scenario())
        finally:
            subprocess.run([str(_PBX), "stop"], check=False)
    (_HERE / f"{_NAME}.bin").write_bytes(data)
    print(f"{_NAME}.bin: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
