"""AmiClient against an in-process fake AMI server (timeouts, reconnect, keepalive) and,
marked live, against the real Asterisk 22."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st

from acd.ami import (
    AmiActionError,
    AmiAuthenticationError,
    AmiClient,
    AmiConnectionError,
    AmiDisconnected,
    AmiTimeout,
    Event,
)
from acd.ami.client import _backoff_delay
from tests.conftest import LivePbx

REPO = Path(__file__).resolve().parents[1]
Handler = Callable[[dict[str, str]], list[str] | None]


def _msg(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n\r\n"


_FULLY_BOOTED = _msg("Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted")


@dataclass
class FakeAmi:
    """A scriptable AMI server: `handlers` answer actions; None means stay silent."""

    secret: str = "s3cret"
    handlers: dict[str, Handler] = field(default_factory=dict)
    received: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0
    # like Asterisk at login when it is up and the user may read the "system" class
    fully_booted_at_login: bool = False

    def reply(self, action: dict[str, str]) -> list[str] | None:
        aid = action.get("ActionID", "")
        name = action["Action"].lower()
        if name == "login":
            if action.get("Secret") == self.secret:
                accepted = _msg(
                    "Response: Success", f"ActionID: {aid}", "Message: Authentication accepted"
                )
                if self.fully_booted_at_login:
                    return [accepted, _FULLY_BOOTED]
                return [accepted]
            return [_msg("Response: Error", f"ActionID: {aid}", "Message: Authentication failed")]
        if name in self.handlers:
            return self.handlers[name](action)
        if name == "ping":
            return [_msg("Response: Success", f"ActionID: {aid}", "Ping: Pong")]
        if name == "logoff":
            return [_msg("Response: Goodbye", f"ActionID: {aid}", "Message: Thanks")]
        return [_msg("Response: Error", f"ActionID: {aid}", "Message: Invalid/unknown command")]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = {}
                for line in raw.decode().strip().split("\r\n"):
                    key, _, value = line.partition(": ")
                    action.setdefault(key, value)
                self.received.append(action)
                for message in self.reply(action) or []:
                    writer.write(message.encode())
                await writer.drain()
        writer.close()

    def broadcast(self, message: str) -> None:
        for writer in self.writers:
            writer.write(message.encode())

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    def names(self) -> list[str]:
        return [a["Action"] for a in self.received]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server_state = FakeAmi()
    server = await asyncio.start_server(server_state.serve, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield server_state
        server_state.drop_all()


def _client(fake: FakeAmi, **kwargs: object) -> AmiClient:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": fake.port,
        "username": "firstline",
        "secret": "s3cret",
        "connect_timeout": 2.0,
        "action_timeout": 2.0,
        "ping_interval": 30.0,
        "ping_timeout": 1.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "rng": random.Random(7),
        "logger": structlog.get_logger("test"),
    }
    settings.update(kwargs)
    return AmiClient(**settings)  # type: ignore[arg-type]


async def _until(predicate: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def _running(client: AmiClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 3)


async def test_login_success_and_action(fake: FakeAmi) -> None:
    client = _client(fake)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        assert client.connected
        assert client.reconnects == 0
        result = await client.action("Ping")
        assert result.ok
        assert result.response.get("Ping") == "Pong"
    assert not client.connected
    login = fake.received[0]
    assert (login["Action"], login["Username"], login["Events"]) == ("Login", "firstline", "on")
    assert fake.names()[-1] == "Logoff"


async def test_login_refused_raises_and_does_not_loop(fake: FakeAmi) -> None:
    client = _client(fake, secret="wrong", reconnect=True)
    with pytest.raises(AmiAuthenticationError, match="Authentication failed"):
        await asyncio.wait_for(client.run(), 3)
    assert fake.connections == 1
    with pytest.raises(AmiConnectionError):
        await client.wait_logged_in(timeout=1)


async def test_closed_port_without_reconnect_raises() -> None:
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        client = AmiClient(username="u", secret="s", port=port, reconnect=False, connect_timeout=1)
        with pytest.raises(AmiConnectionError):
            await asyncio.wait_for(client.run(), 3)


async def test_action_while_disconnected_fails_fast(fake: FakeAmi) -> None:
    client = _client(fake)
    with pytest.raises(AmiDisconnected):
        await asyncio.wait_for(client.action("Ping"), 0.5)
    assert fake.received == []


async def test_eventlist_collection(fake: FakeAmi) -> None:
    def queue_status(action: dict[str, str]) -> list[str]:
        aid = action["ActionID"]
        return [
            _msg("Response: Success", f"ActionID: {aid}", "EventList: start", "Message: follows"),
            _msg("Event: QueueParams", "Queue: support", f"ActionID: {aid}"),
            _msg("Event: QueueCallerJoin", "Queue: support"),  # live event in between
            _msg("Event: QueueMember", "Queue: support", "Name: Agent One", f"ActionID: {aid}"),
            _msg("Event: QueueStatusComplete", f"ActionID: {aid}", "EventList: Complete"),
        ]

    fake.handlers["queuestatus"] = queue_status
    client = _client(fake)
    live: list[Event] = []
    client.subscribe("QueueCallerJoin", live.append)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        result = await client.action("QueueStatus", {"Queue": "support"})
    assert [e.name for e in result.events] == ["QueueParams", "QueueMember"]
    assert result.complete is not None
    assert result.complete.name == "QueueStatusComplete"
    assert [e.name for e in live] == ["QueueCallerJoin"]  # list events are not broadcast
    assert fake.received[1]["Queue"] == "support"


async def test_error_response_is_returned_and_raise_for_status(fake: FakeAmi) -> None:
    client = _client(fake)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        result = await client.action("NoSuchAction")
        assert not result.ok
        with pytest.raises(AmiActionError, match="Invalid/unknown"):
            result.raise_for_status()


async def test_action_timeout(fake: FakeAmi) -> None:
    fake.handlers["queueadd"] = lambda action: None  # never answered
    client = _client(fake)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        with pytest.raises(AmiTimeout):
            await client.action("QueueAdd", {"Queue": "q"}, timeout=0.2)
        assert client.connected  # a slow action does not kill the link
        assert (await client.action("Ping")).ok


async def test_pending_action_fails_on_drop_and_is_never_resent(fake: FakeAmi) -> None:
    fake.handlers["originate"] = lambda action: None  # Asterisk dies before answering
    connected: list[int] = []

    async def on_connected(client: AmiClient) -> None:
        connected.append(client.reconnects)

    client = _client(fake, on_connected=on_connected)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        pending = asyncio.create_task(client.action("Originate", {"Channel": "Local/1@x"}))
        await _until(lambda: "Originate" in fake.names())
        fake.drop_all()
        with pytest.raises(AmiDisconnected):
            await asyncio.wait_for(pending, 2)
        # reconnects by itself, runs the resync hook again, and does not dial twice
        await _until(lambda: client.reconnects >= 1 and client.connected)
        assert client.reconnects == 1
        assert (await client.action("Ping")).ok
        assert connected == [0, 1]
    assert fake.names().count("Originate") == 1
    assert fake.names().count("Login") == 2


async def test_keepalive_detects_silent_peer(fake: FakeAmi) -> None:
    silent = {"on": True}

    def ping(action: dict[str, str]) -> list[str] | None:
        if silent["on"]:
            silent["on"] = False  # only the first connection's peer is frozen
            return None
        return [_msg("Response: Success", f"ActionID: {action['ActionID']}", "Ping: Pong")]

    fake.handlers["ping"] = ping
    disconnected: list[bool] = []

    async def on_disconnected(client: AmiClient) -> None:
        disconnected.append(client.connected)

    client = _client(fake, ping_interval=0.1, ping_timeout=0.2, on_disconnected=on_disconnected)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        await _until(lambda: client.reconnects >= 1 and client.connected)
        assert client.reconnects == 1
        assert disconnected == [False]
        assert fake.connections == 2


async def test_keepalive_timeout_without_reconnect_ends_run(fake: FakeAmi) -> None:
    fake.handlers["ping"] = lambda action: None
    client = _client(fake, ping_interval=0.05, ping_timeout=0.1, reconnect=False)
    with pytest.raises(AmiConnectionError, match="keepalive"):
        await asyncio.wait_for(client.run(), 3)


async def test_subscriber_errors_are_contained_and_order_kept(fake: FakeAmi) -> None:
    def burst(action: dict[str, str]) -> list[str]:
        aid = action["ActionID"]
        return [
            _msg("Event: A", "N: 1"),
            _msg("Event: B", "N: 2"),
            _msg("Event: A", "N: 3"),
            _msg("Response: Success", f"ActionID: {aid}"),
        ]

    fake.handlers["userevent"] = burst
    client = _client(fake)
    seen: list[str] = []

    def explode(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    client.subscribe("a", explode)
    client.subscribe(None, lambda e: seen.append(f"{e.name}{e.get('N')}"))
    unsubscribe = client.subscribe("B", lambda e: seen.append("b-only"))
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        await client.action("UserEvent")
        unsubscribe()
        await client.action("UserEvent")
        assert client.connected
    assert seen == ["A1", "b-only", "B2", "A3", "A1", "B2", "A3"]


async def test_events_filter_is_applied_client_side(fake: FakeAmi) -> None:
    fake.handlers["userevent"] = lambda action: [
        _msg("Event: Newexten"),
        _msg("Event: QueueCallerJoin"),
        _msg("Response: Success", f"ActionID: {action['ActionID']}"),
    ]
    client = _client(fake, events=["QueueCallerJoin"])
    seen: list[str] = []
    client.subscribe(None, lambda e: seen.append(e.name))
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        await client.action("UserEvent")
    assert seen == ["QueueCallerJoin"]
    # it asked Asterisk to filter too (the fake refuses, so the client filters alone)
    assert fake.received[1]["Action"] == "Filter"
    assert fake.received[1]["MatchCriteria"] == "name(QueueCallerJoin)"


async def test_fully_booted_said_at_login_is_known_at_once(fake: FakeAmi) -> None:
    fake.fully_booted_at_login = True
    client = _client(fake, events=["QueueCallerJoin"])
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        assert await client.wait_fully_booted(timeout=2)
        assert client.fully_booted
    assert not client.fully_booted  # it belongs to a connection


async def test_a_booting_asterisk_is_waited_for_and_each_connection_asks_again(
    fake: FakeAmi,
) -> None:
    """Logged in while Asterisk still loads its modules: not booted until it says so, and
    a new connection (Asterisk restarted) starts from not booted again."""
    fake.handlers["filter"] = lambda action: [
        _msg("Response: Success", f"ActionID: {action['ActionID']}")
    ]
    client = _client(fake, events=["QueueCallerJoin"])
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        assert not await client.wait_fully_booted(timeout=0.2)
        fake.broadcast(_FULLY_BOOTED)  # filtered out for subscribers, still heard
        assert await client.wait_fully_booted(timeout=2)
        fake.drop_all()
        await _until(lambda: fake.connections == 2 and client.connected)
        assert not client.fully_booted
        fake.broadcast(_FULLY_BOOTED)
        assert await client.wait_fully_booted(timeout=2)
    # the session filter lets the event through on Asterisk's side as well
    filters = [a["MatchCriteria"] for a in fake.received if a["Action"] == "Filter"]
    assert filters[:2] == ["name(QueueCallerJoin)", "name(FullyBooted)"]


async def test_run_is_not_reentrant(fake: FakeAmi) -> None:
    client = _client(fake)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        with pytest.raises(RuntimeError):
            await client.run()


async def test_garbage_from_peer_reconnects(fake: FakeAmi) -> None:
    fake.handlers["userevent"] = lambda action: ["this is not AMI\r\n\r\n"]
    client = _client(fake)
    async with _running(client):
        await client.wait_logged_in(timeout=2)
        with pytest.raises(AmiDisconnected):
            await client.action("UserEvent")
        await _until(lambda: client.reconnects >= 1 and client.connected)
        assert client.reconnects == 1


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=10),
    maximum=st.floats(min_value=0.01, max_value=600),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_bounded_and_jittered(
    attempt: int, initial: float, maximum: float, seed: int
) -> None:
    delay = _backoff_delay(attempt, initial=initial, maximum=maximum, rng=random.Random(seed))
    nominal = min(maximum, initial * 2.0 ** min(attempt, 62))
    assert nominal / 2 <= delay <= nominal <= maximum


def test_backoff_grows_then_caps_and_varies() -> None:
    rng = random.Random(1)
    delays = [_backoff_delay(a, initial=0.5, maximum=30, rng=rng) for a in range(12)]
    assert delays[0] <= 0.5
    assert delays[3] > delays[0]
    assert all(d <= 30 for d in delays)
    assert len({round(d, 6) for d in delays[8:]}) > 1  # capped, but still spread


# --- live: the real Asterisk 22 ---------------------------------------------------------

_CONF = REPO / "tests" / "transcripts" / "ami" / "asterisk-conf"


@pytest.fixture
def transcript_pbx(pbx: LivePbx) -> LivePbx:
    """The shared live Asterisk (conftest, under the lock) on the transcript config."""
    pbx.start(_CONF)
    return pbx


@pytest.mark.live
@pytest.mark.usefixtures("transcript_pbx")
async def test_live_login_queuestatus_command() -> None:
    client = AmiClient(
        username="firstline",
        secret="firstline-test",
        events=["QueueCallerJoin", "AgentConnect"],
        reconnect=False,
    )
    with structlog.testing.capture_logs() as logs:
        async with _running(client):
            await client.wait_logged_in(timeout=10)
            assert await client.wait_fully_booted(timeout=10)
            await _live_actions(client)
    assert not [log for log in logs if log["log_level"] in ("warning", "error")]
    bad = AmiClient(username="firstline", secret="nope", reconnect=False)
    with pytest.raises(AmiAuthenticationError):
        await asyncio.wait_for(bad.run(), 10)


async def _live_actions(client: AmiClient) -> None:
    status = await client.action("QueueStatus", {"Queue": "support"})
    assert status.ok
    assert [e.name for e in status.events] == ["QueueParams", "QueueMember"]
    assert status.events[1].get("Location") == "Local/agent1@test-agents"
    version = await client.action("Command", {"Command": "core show version"})
    assert version.response.get_all("Output")[0].startswith("Asterisk 22.")
    added = await client.action(
        "QueueAdd", {"Queue": "support", "Interface": "Local/agent9@test-agents"}
    )
    assert added.ok
    assert added.events == ()
