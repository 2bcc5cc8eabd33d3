"""The wallboard: the board built from a LiveState fed with AMI events, today's figures and
their midnight, and the HTTP / Server-Sent Events server over real sockets."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import socket
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd.ami.codec import Event
from acd.config.model import ServiceLevel
from acd.state import Change, LiveState
from acd.tickets.callbacks import PendingSummary
from metrics.wallboard import DayFigures, WallboardServer, board

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
Q1, Q2, Q3 = "first-level", "second-level", "billing"
NAMES = {Q1: "First level", Q2: "Second level", Q3: "Billing"}
LEVELS = {
    Q1: ServiceLevel(answer_within=20, target=0.8),
    Q2: ServiceLevel(answer_within=60, target=0.9),
    Q3: ServiceLevel(answer_within=30, target=0.8),
}
AGENTS = {
    f"Local/{name}@agents": name for name in ("alice", "bob", "carol", "dave", "erin", "frank")
}
# 2026-03-10 09:00 in Berlin
T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=BERLIN).timestamp()


def _event(name: str, **fields: str) -> Event:
    return Event(name, (("Event", name), *fields.items()))


def _iface(agent: str) -> str:
    return f"Local/{agent}@agents"


class Desk:
    """A LiveState driven by the AMI events app_queue sends; today's figures follow it."""

    def __init__(self, now: float = T0, tz: dt.tzinfo = BERLIN) -> None:
        self.state = LiveState(AGENTS, dict.fromkeys(NAMES, 0), dict.fromkeys(NAMES, 5), now=now)
        self.today = DayFigures(LEVELS, tz, now)
        self.pending: list[PendingSummary] = []

    def apply(self, now: float, name: str, **fields: str) -> list[Change]:
        changes = self.state.apply(_event(name, **fields), now)
        self.today.observe(changes, now)
        return changes

    def member(self, now: float, agent: str, queue: str, paused: str = "") -> None:
        self.apply(
            now,
            "QueueMemberAdded",
            Queue=queue,
            Interface=_iface(agent),
            StateInterface=_iface(agent),
            Penalty="0",
            Paused="1" if paused else "0",
            PausedReason=paused,
            Status="1",
            InCall="0",
        )

    def join(self, now: float, uid: str, queue: str, number: str = "+4930555123") -> None:
        view = self.state.snapshot().queues.get(queue)
        position = str(len(view.waiting) + 1 if view is not None else 1)
        self.apply(
            now, "QueueCallerJoin", Uniqueid=uid, Queue=queue, Position=position, CallerIDNum=number
        )

    def ring(self, now: float, uid: str, agent: str, queue: str) -> None:
        self.apply(now, "AgentCalled", Uniqueid=uid, Queue=queue, Interface=_iface(agent))

    def answer(self, now: float, uid: str, agent: str, queue: str) -> None:
        self.apply(now, "QueueCallerLeave", Uniqueid=uid, Queue=queue, Position="1", Count="0")
        self.apply(
            now, "AgentConnect", Uniqueid=uid, Queue=queue, Interface=_iface(agent), HoldTime="0"
        )

    def complete(self, now: float, uid: str, agent: str, queue: str) -> None:
        self.apply(
            now,
            "AgentComplete",
            Uniqueid=uid,
            Queue=queue,
            Interface=_iface(agent),
            TalkTime="0",
            Reason="caller",
        )

    def hangup(self, now: float, uid: str) -> None:
        self.apply(now, "Hangup", Uniqueid=uid)

    def leave(self, now: float, uid: str, queue: str) -> None:
        self.apply(now, "QueueCallerLeave", Uniqueid=uid, Queue=queue, Position="1", Count="0")

    def answered_call(self, uid: str, queue: str, agent: str, at: float, wait: float) -> None:
        """A whole call: waits `wait` seconds, talks 60 s, hangs up."""
        self.join(at, uid, queue)
        self.ring(at + wait - 1, uid, agent, queue)
        self.answer(at + wait, uid, agent, queue)
        self.complete(at + wait + 60, uid, agent, queue)
        self.hangup(at + wait + 60, uid)

    def board(self, now: float, *, link_up: bool = True) -> dict[str, Any]:
        return board(self.state.snapshot(), self.today, self.pending, now, NAMES, link_up=link_up)


def _queue(result: dict[str, Any], queue: str) -> dict[str, Any]:
    return next(q for q in result["queues"] if q["id"] == queue)


# --- the board ------------------------------------------------------------------------------


def test_an_empty_desk_shows_every_configured_queue_with_zeros() -> None:
    desk = Desk()
    result = desk.board(T0 + 1)
    assert [q["id"] for q in result["queues"]] == [Q1, Q2, Q3]
    assert result["agents"] == {
        "available": 0,
        "on_call": 0,
        "wrap_up": 0,
        "paused": 0,
        "logged_in": 0,
    }
    first = _queue(result, Q1)
    assert first["name"] == "First level"
    assert (first["waiting"], first["longest_wait"], first["callers"]) == (0, 0, [])
    assert (first["answered"], first["service_level"]) == (0, None)
    assert (first["service_level_target"], first["answer_within"]) == (80.0, 20)
    assert (first["callbacks_pending"], first["oldest_callback_age"]) == (0, None)
    assert result["totals"]["service_level"] is None
    assert result["day"] == "2026-03-10"
    assert result["link_up"] is True
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_agents_are_counted_by_state_overall_and_per_queue() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.member(T0, "alice", Q2)
    desk.member(T0, "bob", Q1, paused="lunch")  # paused in first level only
    desk.member(T0, "bob", Q2)
    desk.member(T0, "carol", Q1)
    desk.member(T0, "dave", Q2, paused="training")
    desk.member(T0, "erin", Q3)
    desk.join(T0 + 1, "u1", Q1)
    desk.ring(T0 + 2, "u1", "carol", Q1)
    desk.answer(T0 + 3, "u1", "carol", Q1)
    desk.join(T0 + 4, "u2", Q3)
    desk.ring(T0 + 5, "u2", "erin", Q3)

    result = desk.board(T0 + 6)

    assert result["agents"] == {
        "available": 2,  # alice, and bob, who still takes second-level calls
        "on_call": 2,  # carol talking, erin's phone ringing
        "wrap_up": 0,
        "paused": 1,
        "logged_in": 5,
    }
    assert _queue(result, Q1)["agents"] == {
        "available": 1,
        "on_call": 1,
        "wrap_up": 0,
        "paused": 1,
    }
    assert _queue(result, Q2)["agents"] == {
        "available": 2,
        "on_call": 0,
        "wrap_up": 0,
        "paused": 1,
    }
    assert _queue(result, Q3)["agents"]["on_call"] == 1
    assert _queue(result, Q3)["callers"] == [{"position": 1, "wait": 2, "ringing": True}]


def test_wrap_up_is_shown_apart_from_calls() -> None:
    desk = Desk()
    desk.state = LiveState(AGENTS, {Q1: 30}, dict.fromkeys(NAMES, 5), now=T0)
    desk.member(T0, "alice", Q1)
    desk.answered_call("u1", Q1, "alice", T0 + 1, wait=4)
    result = desk.board(T0 + 70)
    assert result["agents"]["wrap_up"] == 1
    assert _queue(result, Q1)["agents"]["wrap_up"] == 1


def test_callers_show_position_and_wait_but_never_their_number() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.join(T0, "1795433806.1", Q1, number="+4930111222")
    desk.join(T0 + 10, "cb-42-1", Q1, number="+4930999888")  # a callback's held place
    desk.join(T0 + 12.5, "1795433807.5", Q1, number="+4930333444")

    result = desk.board(T0 + 25.4)

    first = _queue(result, Q1)
    assert first["callers"] == [
        {"position": 1, "wait": 25, "ringing": False},
        {"position": 2, "wait": 12, "ringing": False},
    ]
    assert (first["waiting"], first["longest_wait"]) == (2, 25)
    assert (result["totals"]["waiting"], result["totals"]["longest_wait"]) == (2, 25)
    text = json.dumps(result)
    for secret in ("4930111222", "4930999888", "4930333444", "1795433806", "cb-42"):
        assert secret not in text


def test_a_caller_leaving_leaves_the_board() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.join(T0, "u1", Q1)
    desk.join(T0 + 5, "u2", Q1)
    assert _queue(desk.board(T0 + 6), Q1)["waiting"] == 2
    desk.hangup(T0 + 8, "u1")
    first = _queue(desk.board(T0 + 9), Q1)
    assert first["callers"] == [{"position": 1, "wait": 4, "ringing": False}]


def test_answered_today_and_service_level_leave_short_abandons_out() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.answered_call("u1", Q1, "alice", T0, wait=10)  # in time (20 s)
    desk.answered_call("u2", Q1, "alice", T0 + 100, wait=20)  # exactly in time
    desk.answered_call("u3", Q1, "alice", T0 + 200, wait=35)  # late
    desk.join(T0 + 300, "u4", Q1)
    desk.hangup(T0 + 302, "u4")  # short abandon: not counted against the desk
    desk.join(T0 + 400, "u5", Q1)
    desk.hangup(T0 + 440, "u5")  # abandoned

    first = _queue(desk.board(T0 + 500), Q1)
    assert (first["offered"], first["answered"], first["abandoned"]) == (5, 3, 1)
    assert first["service_level"] == 50.0  # 2 in time / (5 offered - 1 short abandon)
    totals = desk.board(T0 + 500)["totals"]
    assert (totals["offered"], totals["answered"], totals["service_level"]) == (5, 3, 50.0)


def test_totals_weigh_queues_by_their_calls() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.member(T0, "bob", Q2)
    desk.answered_call("u1", Q1, "alice", T0, wait=5)
    desk.answered_call("u2", Q2, "bob", T0, wait=90)  # late for second level (60 s)
    desk.answered_call("u3", Q2, "bob", T0 + 300, wait=30)
    desk.answered_call("u4", Q2, "bob", T0 + 600, wait=30)
    result = desk.board(T0 + 1000)
    assert _queue(result, Q1)["service_level"] == 100.0
    assert _queue(result, Q2)["service_level"] == pytest.approx(66.7)
    assert result["totals"]["service_level"] == 75.0
    assert result["totals"]["answered"] == 4


def test_callbacks_pending_and_the_oldest_age() -> None:
    desk = Desk()
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    desk.pending = [
        PendingSummary(Q1, 2, start - dt.timedelta(minutes=12)),
        PendingSummary(Q3, 1, start - dt.timedelta(minutes=3)),
        PendingSummary("retired-queue", 7, start - dt.timedelta(hours=5)),
    ]
    result = desk.board(T0 + 0.5)
    assert (_queue(result, Q1)["callbacks_pending"], _queue(result, Q1)["oldest_callback_age"]) == (
        2,
        720,
    )
    assert _queue(result, Q2)["oldest_callback_age"] is None
    assert (result["totals"]["callbacks_pending"], result["totals"]["oldest_callback_age"]) == (
        3,
        720,
    )


def test_a_lost_ami_link_is_on_the_board() -> None:
    assert Desk().board(T0, link_up=False)["link_up"] is False


# --- today's figures ------------------------------------------------------------------------


def test_visits_that_are_no_callers_calls_are_not_counted() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.join(T0, "cb-7-1", Q1)  # the callback dialer's held place
    desk.hangup(T0 + 30, "cb-7-1")
    desk.state.note_route("u1", T0, caller_number="+4930555000")
    desk.hangup(T0 + 5, "u1")  # hung up in the IVR, never queued
    desk.answered_call("u2", "not-configured", "alice", T0, wait=3)
    assert {f.uniqueid for f in desk.state.finished()} == {"cb-7-1", "u1", "u2"}
    assert all(q.offered == 0 for q in desk.today.figures(T0 + 100).values())


def test_the_day_starts_again_at_local_midnight() -> None:
    before = dt.datetime(2026, 3, 10, 23, 58, 0, tzinfo=BERLIN).timestamp()
    midnight = dt.datetime(2026, 3, 11, 0, 0, 0, tzinfo=BERLIN).timestamp()
    desk = Desk(now=before)
    desk.member(before, "alice", Q1)
    desk.answered_call("u1", Q1, "alice", before, wait=5)  # ends 23:59:05
    assert desk.today.figures(midnight - 1)[Q1].answered == 1
    assert desk.board(midnight - 1)["day"] == "2026-03-10"

    # after midnight the board shows the new day at once, even before any call ends
    assert desk.today.figures(midnight + 1)[Q1].answered == 0
    assert desk.board(midnight + 1)["day"] == "2026-03-11"
    assert _queue(desk.board(midnight + 1), Q1)["answered"] == 0

    # a call that ended before midnight but is reported after it is yesterday's
    desk.join(midnight - 50, "u2", Q1)
    desk.ring(midnight - 45, "u2", "alice", Q1)
    desk.answer(midnight - 40, "u2", "alice", Q1)
    desk.state.apply(
        _event("AgentComplete", Uniqueid="u2", Queue=Q1, Interface=_iface("alice")), midnight - 2
    )
    late = desk.state.apply(_event("Hangup", Uniqueid="u2"), midnight - 1)
    desk.today.observe(late, midnight + 2)
    assert desk.today.day == dt.date(2026, 3, 11)
    assert desk.today.figures(midnight + 2)[Q1].offered == 0

    desk.answered_call("u3", Q1, "alice", midnight + 10, wait=8)
    assert desk.today.figures(midnight + 100)[Q1].answered == 1
    assert desk.today.figures(midnight + 100)[Q1].answered_in_time == 1


def test_midnight_is_the_desks_not_utc() -> None:
    evening = dt.datetime(2026, 3, 10, 23, 30, tzinfo=BERLIN).timestamp()  # 22:30 UTC
    desk_utc = Desk(now=evening, tz=dt.UTC)
    desk_utc.member(evening, "alice", Q1)
    desk_utc.answered_call("u1", Q1, "alice", evening, wait=5)
    after_berlin_midnight = evening + 45 * 60  # 00:15 in Berlin, 23:15 UTC
    assert desk_utc.today.figures(after_berlin_midnight)[Q1].answered == 1

    desk_berlin = Desk(now=evening)
    desk_berlin.member(evening, "alice", Q1)
    desk_berlin.answered_call("u1", Q1, "alice", evening, wait=5)
    assert desk_berlin.today.figures(after_berlin_midnight)[Q1].answered == 0


# Zones whose clocks jump at or across midnight, or by odd amounts, next to plain ones.
_ZONES = (
    "Europe/Berlin",
    "America/Santiago",  # DST starts at 24:00: that midnight does not exist
    "America/Havana",  # DST at 00:00 to 01:00
    "Asia/Beirut",  # DST back at 00:00: that midnight comes twice
    "Pacific/Apia",  # skipped the whole of 2011-12-30
    "Australia/Lord_Howe",  # half-hour DST
    "UTC",
)


@given(
    zone=st.sampled_from(_ZONES),
    start=st.floats(min_value=1.28e9, max_value=1.9e9),
    offsets=st.lists(st.floats(min_value=-3 * 86400, max_value=3 * 86400), max_size=20),
)
def test_the_local_date_is_the_zones_however_its_midnights_fall(
    zone: str, start: float, offsets: list[float]
) -> None:
    """The counted day's bounds answer most questions; the answers are the zone's."""
    tz = zoneinfo.ZoneInfo(zone)
    today = DayFigures(LEVELS, tz, start)
    for moment in sorted(start + offset for offset in offsets):
        today.observe([], max(moment, start))
        for asked in (moment, start):
            assert today.local_date(asked) == dt.datetime.fromtimestamp(asked, tz).date()


@given(
    zone=st.sampled_from(_ZONES),
    day=st.dates(min_value=dt.date(2011, 1, 1), max_value=dt.date(2030, 12, 31)),
    nudge=st.sampled_from((-3600.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 3600.0)),
)
def test_the_local_date_is_the_zones_at_its_midnights(
    zone: str, day: dt.date, nudge: float
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    today = DayFigures(LEVELS, tz, dt.datetime.combine(day, dt.time(12), tz).timestamp())
    for edge in (day, day + dt.timedelta(days=1)):
        moment = dt.datetime.combine(edge, dt.time(), tz).timestamp() + nudge
        assert today.local_date(moment) == dt.datetime.fromtimestamp(moment, tz).date()


def test_reconfigure_keeps_the_counts_of_queues_still_there() -> None:
    desk = Desk()
    desk.member(T0, "alice", Q1)
    desk.member(T0, "alice", Q2)
    desk.answered_call("u1", Q1, "alice", T0, wait=5)
    desk.answered_call("u2", Q2, "alice", T0 + 100, wait=5)
    desk.today.reconfigure({Q1: LEVELS[Q1]})
    figures = desk.today.figures(T0 + 500)
    assert set(figures) == {Q1}
    assert figures[Q1].answered == 1


# --- HTTP -----------------------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[WallboardServer]]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    servers: list[WallboardServer] = []

    async def start(**options: Any) -> WallboardServer:
        server = WallboardServer("127.0.0.1", 0, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read the whole answer (the server closes), split it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status), headers, body


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: wall\r\n\r\n".encode()


def _inline(tag: str, page: str) -> str:
    match = re.search(f"<{tag}>(.*)</{tag}>", page, re.DOTALL)
    assert match is not None
    return match.group(1)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_page_is_self_contained_and_may_run_only_its_own_code(
    serve: ServerFactory,
) -> None:
    server = await serve()
    status, headers, body = await _exchange(server.port, _get("/"))
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    page = body.decode()
    assert "EventSource" in page
    assert not re.search(r"(src|href)=|https?://|@import|url\(", page)  # nothing to fetch
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert _hash(_inline("script", page)) in policy
    assert _hash(_inline("style", page)) in policy


async def test_head_gives_the_headers_only(serve: ServerFactory) -> None:
    server = await serve()
    status, headers, body = await _exchange(server.port, _get("/", "HEAD"))
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 1000


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_get("/nothing"), 404),
        (_get("/events/"), 404),
        (_get("/metrics"), 404),
        (_get("/", "POST"), 405),
        (_get("/board.json", "DELETE"), 405),
        (_get("/events", "HEAD"), 405),
        (b"GET /\r\n\r\n", 400),
        (b"GET http://wall/ HTTP/1.1\r\nHost: wall\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 needs Host
        (b"GET / HTTP/1.1\r\nHost: wall\r\nContent-Length: 4\r\n\r\nbody", 400),
        (b"GET / HTTP/1.1\r\nHost: wall\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost wall\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: wall\r\n\r\n", 505),
        (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: wall\r\n\r\n", 414),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: wall\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: wall\r\nCookie: " + b"x" * 10000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: wall\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    ],
)
async def test_anything_else_is_refused(
    serve: ServerFactory, request_bytes: bytes, status: int
) -> None:
    server = await serve()
    got, headers, _body = await _exchange(server.port, request_bytes)
    assert got == status
    assert headers["connection"] == "close"
    if status == 405:
        assert "GET" in headers["allow"]


async def test_http_1_0_without_host_and_a_query_are_fine(serve: ServerFactory) -> None:
    server = await serve()
    status, _headers, body = await _exchange(server.port, b"GET /?screen=2 HTTP/1.0\r\n\r\n")
    assert status == 200
    assert b"<!doctype html>" in body


async def test_a_request_that_never_ends_times_out(serve: ServerFactory) -> None:
    server = await serve(request_timeout=0.3)
    status, _headers, _body = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost: w")
    assert status == 408


async def test_board_json_is_the_latest_board(serve: ServerFactory) -> None:
    server = await serve()
    status, headers, _body = await _exchange(server.port, _get("/board.json"))
    assert (status, headers["retry-after"]) == (503, "1")
    result = Desk().board(T0)
    server.publish(result)
    status, headers, body = await _exchange(server.port, _get("/board.json"))
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == result


# --- Server-Sent Events ---------------------------------------------------------------------


_LIMIT = 4 * 1024 * 1024  # room for the big boards below


def _unread_stream(port: int) -> socket.socket:
    """An /events connection that reads nothing: a page on a stalled screen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(_get("/events"))
    sock.setblocking(False)
    return sock


class Stream:
    """A raw /events connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, port: int) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_LIMIT)
        stream = cls(reader, writer)
        writer.write(_get("/events"))
        await writer.drain()
        return stream

    @classmethod
    async def attach(cls, sock: socket.socket) -> Stream:
        """Start reading a connection that has been left unread so far."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=_LIMIT)
        return cls(reader, writer)

    async def read_head(self) -> None:
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(": ")
                self.headers[name.lower()] = value

    async def block(self) -> str:
        """The next SSE block (lines up to a blank line), as text."""
        async with asyncio.timeout(10):
            raw = await self.reader.readuntil(b"\n\n")
        return raw.decode()[:-2]

    async def board(self) -> tuple[int, dict[str, Any]]:
        """The next board event: its id and its data (keepalives are skipped)."""
        while True:
            block = await self.block()
            if block.startswith((":", "retry:")):
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            assert set(fields) == {"id", "data"}
            return int(fields["id"]), json.loads(fields["data"])

    def close(self) -> None:
        self.writer.close()


async def _opened(port: int) -> Stream:
    stream = await Stream.open(port)
    await stream.read_head()
    return stream


async def test_a_page_gets_the_current_board_at_once_then_every_change(
    serve: ServerFactory,
) -> None:
    server = await serve(min_interval=0.05)
    desk = Desk()
    desk.member(T0, "alice", Q1)
    server.publish(desk.board(T0))
    stream = await _opened(server.port)
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert stream.headers["cache-control"] == "no-store"
    assert await stream.block() == "retry: 2000"
    event_id, first = await stream.board()
    assert (event_id, first) == (1, desk.board(T0))

    desk.join(T0 + 1, "u1", Q1)
    server.publish(desk.board(T0 + 1))
    server.publish(desk.board(T0 + 1))  # the same board again is no change
    event_id, joined = await stream.board()
    assert (event_id, _queue(joined, Q1)["waiting"]) == (2, 1)
    desk.hangup(T0 + 2, "u1")
    server.publish(desk.board(T0 + 2))
    event_id, left = await stream.board()
    assert (event_id, _queue(left, Q1)["waiting"]) == (3, 0)
    stream.close()


async def test_a_burst_of_changes_is_coalesced_into_the_latest(serve: ServerFactory) -> None:
    server = await serve(min_interval=0.3)
    stream = await _opened(server.port)
    assert await stream.block() == "retry: 2000"
    for n in range(1, 51):
        server.publish({"n": n})
    # the first change goes out at once, the other 49 as one push of the newest
    assert await stream.board() == (1, {"n": 1})
    assert await stream.board() == (50, {"n": 50})
    server.publish({"n": 51})
    assert await stream.board() == (51, {"n": 51})
    stream.close()


async def test_a_quiet_stream_gets_keepalive_comments(serve: ServerFactory) -> None:
    server = await serve(keepalive=0.1)
    server.publish({"n": 1})
    stream = await _opened(server.port)
    assert await stream.block() == "retry: 2000"
    assert await stream.board() == (1, {"n": 1})
    assert await stream.block() == ": keepalive"
    assert await stream.block() == ": keepalive"
    stream.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for the server to get somewhere (it has no event to await from outside)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the server never got there")


async def test_too_many_pages_get_503_until_one_leaves(serve: ServerFactory) -> None:
    server = await serve(max_clients=2)
    first, second = await _opened(server.port), await _opened(server.port)
    third = await _opened(server.port)
    assert (first.status, second.status, third.status) == (200, 200, 503)
    assert third.headers["retry-after"] == "5"
    first.close()
    await _until(lambda: server.client_count == 1)
    fourth = await _opened(server.port)
    assert fourth.status == 200
    second.close()
    fourth.close()


async def test_close_ends_every_stream_cleanly(serve: ServerFactory) -> None:
    server = await serve()
    server.publish({"n": 1})
    streams = [await _opened(server.port) for _ in range(3)]
    for stream in streams:
        assert await stream.block() == "retry: 2000"
        assert await stream.board() == (1, {"n": 1})
    await server.close()
    for stream in streams:
        async with asyncio.timeout(10):
            assert await stream.reader.read() == b""  # EOF, not a reset
    assert server.client_count == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


def _big(n: int) -> dict[str, Any]:
    return {"n": n, "padding": "x" * 512 * 1024}


async def test_a_slow_page_gets_the_latest_board_not_every_one(serve: ServerFactory) -> None:
    server = await serve(min_interval=0.0)
    fast = await _opened(server.port)
    slow_socket = _unread_stream(server.port)
    await _until(lambda: server.client_count == 2)
    published = 100
    fast_ids = []
    for n in range(1, published + 1):
        server.publish(_big(n))
        fast_ids.append((await fast.board())[0])
    assert fast_ids == list(range(1, published + 1))  # a page that keeps up sees each one

    slow = await Stream.attach(slow_socket)
    await slow.read_head()
    assert await slow.block() == "retry: 2000"
    slow_ids: list[int] = []
    while not slow_ids or slow_ids[-1] != published:
        event_id, data = await slow.board()
        assert data == _big(event_id)
        slow_ids.append(event_id)
    assert slow_ids == sorted(slow_ids)
    assert len(slow_ids) < published / 2  # only what was in flight, then the newest
    fast.close()
    slow.close()


async def test_a_page_that_takes_nothing_is_dropped(serve: ServerFactory) -> None:
    server = await serve(min_interval=0.0, write_timeout=0.3)
    stalled = _unread_stream(server.port)
    await _until(lambda: server.client_count == 1)
    n = 0
    async with asyncio.timeout(30):
        while server.client_count:
            n += 1
            server.publish(_big(n))
            await asyncio.sleep(0.02)
    healthy = await _opened(server.port)
    assert await healthy.block() == "retry: 2000"
    assert (await healthy.board())[0] == n
    healthy.close()
    stalled.close()
