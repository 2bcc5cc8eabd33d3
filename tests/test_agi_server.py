"""AgiServer over real loopback TCP: a scripted "Asterisk" client, and one live Asterisk test."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from acd.agi import AgiCommandError, AgiHangup, AgiServer, AgiSession, Handler
from acd.log import configure_logging

TRANSCRIPTS = Path(__file__).parent / "transcripts" / "agi"
HEADER = (TRANSCRIPTS / "hangup.bin").read_bytes().split(b"\n\n")[0] + b"\n\n"


def _header(script: str) -> bytes:
    return HEADER.replace(b"agi_network_script: hangup", f"agi_network_script: {script}".encode())


class FakeAsterisk:
    """The Asterisk side of one FastAGI connection, driven by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, script: str | None = None) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        fake = cls(reader, writer)
        if script is not None:
            writer.write(_header(script))
        return fake

    async def command(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.readline()

    async def reply(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def eof(self, *, reset_ok: bool = False) -> bytes:
        async with asyncio.timeout(5):
            try:
                return await self.reader.read()
            except ConnectionResetError:
                # The server may close without reading what we sent: the kernel resets.
                if reset_ok:
                    return b""
                raise

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError):
            await self.writer.wait_closed()


async def _greet(session: AgiSession) -> None:
    name = await session.get_variable("NAME")
    await session.set_variable("GREETING", f"hello {name}")


async def _boom(session: AgiSession) -> None:
    await session.answer()
    raise RuntimeError("handler bug")


async def _two_commands(session: AgiSession) -> None:
    await session.answer()
    await session.verbose("after answer")


async def _bad_usage(session: AgiSession) -> None:
    try:
        await session.execute("GET", "DATA")
    except AgiCommandError as exc:
        await session.set_variable("ERR", str(exc.code))


async def _set_mixed(session: AgiSession) -> None:
    await session.set_variables({"A": "1", "B": "x y", "C": "", "D": "q&r"})


async def _set_plain(session: AgiSession) -> None:
    await session.set_variables({"FIRSTLINE_PRIO": "5", "FIRSTLINE_QUEUE": "first-en"})


HANDLERS: dict[str, Handler] = {
    "greet": _greet,
    "boom": _boom,
    "two": _two_commands,
    "usage": _bad_usage,
    "set-mixed": _set_mixed,
    "set-plain": _set_plain,
}


@pytest.fixture
async def server() -> AsyncIterator[AgiServer]:
    done: list[tuple[str, str, float]] = []
    srv = AgiServer(
        port=0,
        handlers=HANDLERS,
        header_timeout=0.3,
        command_timeout=1.0,
        on_request_done=lambda *a: done.append(a),
    )
    await srv.start()
    srv.done = done  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        await srv.close()


async def _idle(server: AgiServer) -> None:
    """The structural no-spin check: every session task has ended."""
    async with asyncio.timeout(3):
        while server.active_sessions:  # noqa: ASYNC110 - a count to watch, no event to wait on
            await asyncio.sleep(0.01)


async def _greet_works(server: AgiServer, name: bytes = b"Ana") -> None:
    fake = await FakeAsterisk.connect(server.port, "greet")
    assert await fake.command() == b"GET VARIABLE NAME\n"
    await fake.reply(b"200 result=1 (" + name + b")\n")
    assert await fake.command() == b'SET VARIABLE GREETING "hello ' + name + b'"\n'
    await fake.reply(b"200 result=1\n")
    assert await fake.eof() == b""
    await fake.close()


async def test_real_request(server: AgiServer) -> None:
    await _greet_works(server)
    await _idle(server)
    assert server.counters[("greet", "ok")] == 1
    assert server.done[0][:2] == ("greet", "ok")  # type: ignore[attr-defined]


async def test_early_close_garbage_and_silence_leave_the_server_serving(
    server: AgiServer,
) -> None:
    early = await FakeAsterisk.connect(server.port)
    await early.close()
    garbage = await FakeAsterisk.connect(server.port)
    await garbage.reply(b"\x00\xff GET / HTTP/1.1\r\n\r\n")
    assert await garbage.eof() == b""
    silent = await FakeAsterisk.connect(server.port)
    started = time.monotonic()
    assert await silent.eof() == b""  # closed by header_timeout, not by us
    assert 0.2 < time.monotonic() - started < 2.0
    half = await FakeAsterisk.connect(server.port)
    await half.reply(b"agi_network: yes\nagi_netw")
    await half.close()
    await _idle(server)
    assert server.counters[("", "bad_request")] == 4
    await _greet_works(server)
    await _idle(server)
    for fake in (garbage, silent):
        await fake.close()


async def test_unknown_script_gets_failure(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "nope")
    assert await fake.eof() == b"FAILURE\n"
    await fake.close()
    await _idle(server)
    assert server.counters[("", "unknown_script")] == 1


async def test_handler_exception_closes_connection(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "boom")
    assert await fake.command() == b"ANSWER\n"
    await fake.reply(b"200 result=0\n")
    assert await fake.eof() == b""
    await fake.close()
    await _idle(server)
    assert server.counters[("boom", "error")] == 1


async def test_hangup_notice_raises_agihangup(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "two")
    assert await fake.command() == b"ANSWER\n"
    # As recorded from Asterisk 22: the HANGUP line, then the reply still comes.
    await fake.reply(b"HANGUP\n200 result=0\n")
    assert await fake.eof() == b""
    await fake.close()
    await _idle(server)
    assert server.counters[("two", "hangup")] == 1


async def test_511_and_eof_are_hangups(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "two")
    assert await fake.command() == b"ANSWER\n"
    await fake.reply(b"511 Command Not Permitted on a dead channel or intercept routine\n")
    assert await fake.eof() == b""
    await fake.close()
    fake = await FakeAsterisk.connect(server.port, "two")
    assert await fake.command() == b"ANSWER\n"
    await fake.close()
    await _idle(server)
    assert server.counters[("two", "hangup")] == 2


async def test_usage_error_and_command_timeout(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "usage")
    assert await fake.command() == b"GET DATA\n"
    recorded = (TRANSCRIPTS / "session.bin").read_bytes()
    usage = re.search(rb"520-.*?\n520 [^\n]*\n", recorded, re.DOTALL)
    assert usage is not None
    await fake.reply(usage.group(0))
    assert await fake.command() == b"SET VARIABLE ERR 520\n"
    await fake.reply(b"200 result=1\n")
    assert await fake.eof() == b""
    await fake.close()
    fake = await FakeAsterisk.connect(server.port, "greet")
    assert await fake.command() == b"GET VARIABLE NAME\n"
    assert await fake.eof() == b""  # no reply: command_timeout (1 s) ends the session
    await fake.close()
    await _idle(server)
    assert server.counters[("usage", "ok")] == 1
    assert server.counters[("greet", "timeout")] == 1


async def test_fifty_concurrent_sessions(server: AgiServer) -> None:
    await asyncio.gather(*(_greet_works(server, f"c{i}".encode()) for i in range(50)))
    await _idle(server)
    assert server.counters[("greet", "ok")] == 50


async def test_hangup_seen_between_commands_and_a_flood_is_read_in_bounded_steps() -> None:
    sessions: list[AgiSession] = []
    parked, go = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def idle(session: AgiSession) -> None:
        sessions.append(session)
        await session.answer()
        parked.set()
        await go.wait()  # busy elsewhere: no command in flight while Asterisk talks
        try:
            await session.verbose("after")
        except AgiHangup:
            outcome.append("hangup")
            raise

    srv = AgiServer(port=0, handlers={"idle": idle}, command_timeout=5)
    await srv.start()
    try:
        fake = await FakeAsterisk.connect(srv.port, "idle")
        assert await fake.command() == b"ANSWER\n"
        await fake.reply(b"200 result=0\n")
        async with asyncio.timeout(3):
            await parked.wait()
        assert not sessions[0].hung_up
        await fake.reply(b"HANGUP\n" * 5000)
        async with asyncio.timeout(3):
            while not sessions[0].hung_up:  # noqa: ASYNC110 - a flag to watch, no event
                await asyncio.sleep(0.01)
        # Only a few of the 5,000 lines are parsed ahead; the rest waits in the socket.
        assert len(sessions[0]._stream._events) <= 16
        go.set()
        assert await fake.command() == b"VERBOSE after 1\n"
        await fake.reply(b"200 result=1\n")
        assert await fake.eof() == b""
        await fake.close()
        await _idle(srv)
        assert outcome == ["hangup"]
        assert srv.counters[("idle", "hangup")] == 1
    finally:
        await srv.close()


async def test_each_command_keeps_its_own_reply_timeout() -> None:
    timings: list[float] = []

    async def mixed(session: AgiSession) -> None:
        await session.execute("ANSWER", reply_timeout=0.2)
        await session.execute("NOOP", reply_timeout=30)  # answered after the 0.2 s passed
        started = time.monotonic()
        try:
            await session.execute("VERBOSE", "x", reply_timeout=0.3)  # never answered
        finally:
            timings.append(time.monotonic() - started)

    srv = AgiServer(port=0, handlers={"mixed": mixed}, header_timeout=30, command_timeout=30)
    await srv.start()
    try:
        fake = await FakeAsterisk.connect(srv.port, "mixed")
        assert await fake.command() == b"ANSWER\n"
        await fake.reply(b"200 result=0\n")
        assert await fake.command() == b"NOOP\n"
        await asyncio.sleep(0.5)
        await fake.reply(b"200 result=0\n")
        assert await fake.command() == b"VERBOSE x\n"
        assert await fake.eof() == b""
        await fake.close()
        await _idle(srv)
        assert srv.counters[("mixed", "timeout")] == 1
        assert len(timings) == 1
        assert 0.25 < timings[0] < 3  # its own 0.3 s, not the 30 s of the wait before
    finally:
        await srv.close()


async def test_concurrent_commands_of_one_session_go_one_at_a_time() -> None:
    async def both(session: AgiSession) -> None:
        await asyncio.gather(session.verbose("a"), session.verbose("b"))

    srv = AgiServer(port=0, handlers={"both": both})
    await srv.start()
    try:
        fake = await FakeAsterisk.connect(srv.port, "both")
        assert await fake.command() == b"VERBOSE a 1\n"
        with pytest.raises(TimeoutError):  # b waits for a's reply
            async with asyncio.timeout(0.2):
                await fake.reader.readline()
        await fake.reply(b"200 result=1\n")
        assert await fake.command() == b"VERBOSE b 1\n"
        await fake.reply(b"200 result=1\n")
        assert await fake.eof() == b""
        await fake.close()
        await _idle(srv)
        assert srv.counters[("both", "ok")] == 1
    finally:
        await srv.close()


async def test_a_command_cancelled_while_waiting_its_turn_leaves_the_others_in_order() -> None:
    async def three(session: AgiSession) -> None:
        first = asyncio.ensure_future(session.verbose("a"))
        second = asyncio.ensure_future(session.verbose("b"))
        third = asyncio.ensure_future(session.verbose("c"))
        await asyncio.sleep(0.05)  # all three sent or queued
        second.cancel()
        await asyncio.gather(first, third)
        with pytest.raises(asyncio.CancelledError):
            await second

    srv = AgiServer(port=0, handlers={"three": three})
    await srv.start()
    try:
        fake = await FakeAsterisk.connect(srv.port, "three")
        assert await fake.command() == b"VERBOSE a 1\n"
        await asyncio.sleep(0.1)  # b is cancelled meanwhile
        await fake.reply(b"200 result=1\n")
        assert await fake.command() == b"VERBOSE c 1\n"
        await fake.reply(b"200 result=1\n")
        assert await fake.eof() == b""
        await fake.close()
        await _idle(srv)
        assert srv.counters[("three", "ok")] == 1
    finally:
        await srv.close()


async def _request_done_lines(level: str, reply: bytes) -> list[dict[str, Any]]:
    """The ``agi.request_done`` lines of one "routed" request answered with ``reply``,
    logging set up as the daemon does at ``level``."""

    async def routed(session: AgiSession) -> None:
        session.log = session.log.bind(queue="first-en")
        await session.set_variable("FIRSTLINE_ROUTE", "first-en")

    saved = structlog.get_config()
    out = io.StringIO()
    configure_logging(level, stream=out)
    try:
        srv = AgiServer(port=0, handlers={"routed": routed})
        await srv.start()
        try:
            fake = await FakeAsterisk.connect(srv.port, "routed")
            assert await fake.command() == b"SET VARIABLE FIRSTLINE_ROUTE first-en\n"
            await fake.reply(reply)
            assert await fake.eof() == b""
            await fake.close()
            await _idle(srv)
        finally:
            await srv.close()
    finally:
        structlog.configure(**saved)
    return [json.loads(line) for line in out.getvalue().splitlines() if "agi.request_done" in line]


async def test_set_variables_sends_each_run_of_plain_values_in_one_mset(
    server: AgiServer,
) -> None:
    fake = await FakeAsterisk.connect(server.port, "set-mixed")
    assert await fake.command() == b"SET VARIABLE A 1\n"  # a run of one: no MSet
    await fake.reply(b"200 result=1\n")
    assert await fake.command() == b'SET VARIABLE B "x y"\n'
    await fake.reply(b"200 result=1\n")
    assert await fake.command() == b"EXEC MSet C=,D=q&r\n"
    await fake.reply(b"200 result=0\n")
    assert await fake.eof() == b""
    await fake.close()
    await _idle(server)
    assert server.counters[("set-mixed", "ok")] == 1


async def test_set_variables_without_mset_sets_them_one_by_one(server: AgiServer) -> None:
    fake = await FakeAsterisk.connect(server.port, "set-plain")
    assert await fake.command() == b"EXEC MSet FIRSTLINE_PRIO=5,FIRSTLINE_QUEUE=first-en\n"
    await fake.reply(b"200 result=-2\n")  # no such application
    assert await fake.command() == b"SET VARIABLE FIRSTLINE_PRIO 5\n"
    await fake.reply(b"200 result=1\n")
    assert await fake.command() == b"SET VARIABLE FIRSTLINE_QUEUE first-en\n"
    await fake.reply(b"200 result=1\n")
    assert await fake.eof() == b""
    await fake.close()


async def test_request_done_is_one_json_line_with_what_the_handler_bound() -> None:
    [done] = await _request_done_lines("debug", b"200 result=1\n")
    assert list(done) == [
        *["peer", "uniqueid", "script", "queue", "result", "seconds"],
        *["event", "level", "timestamp"],
    ]
    assert (done["queue"], done["result"], done["level"]) == ("first-en", "ok", "debug")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", done["timestamp"])


async def test_at_info_only_requests_that_went_wrong_log_their_end() -> None:
    # A served request is reported by its handler; a caller lost on the way is news.
    assert await _request_done_lines("info", b"200 result=1\n") == []
    [done] = await _request_done_lines("info", b"511 Command Not Permitted on a dead channel\n")
    assert (done["queue"], done["result"], done["level"]) == ("first-en", "hangup", "info")


async def test_close_cancels_running_sessions() -> None:
    srv = AgiServer(port=0, handlers=HANDLERS, command_timeout=30)
    await srv.start()
    fake = await FakeAsterisk.connect(srv.port, "greet")
    assert await fake.command() == b"GET VARIABLE NAME\n"
    await srv.close()
    assert srv.active_sessions == 0
    assert srv.counters[("", "cancelled")] + srv.counters[("greet", "cancelled")] == 1
    assert await fake.eof() == b""
    await fake.close()
    with pytest.raises(OSError):
        await FakeAsterisk.connect(srv.port)


async def test_max_sessions() -> None:
    srv = AgiServer(port=0, handlers=HANDLERS, max_sessions=1, header_timeout=5)
    await srv.start()
    try:
        first = await FakeAsterisk.connect(srv.port)
        await asyncio.sleep(0.05)
        second = await FakeAsterisk.connect(srv.port, "greet")
        assert await second.eof(reset_ok=True) == b""
        assert srv.counters[("", "busy")] == 1
        for fake in (first, second):
            await fake.close()
    finally:
        await srv.close()


# -- live Asterisk -------------------------------------------------------------------------

_LIVE_DIALPLAN = """
[general]
static = yes
writeprotect = yes

[agi-live]
exten => s,1,Answer()
 same => n,Set(CALLERID(name)=José Müller)
 same => n,Set(FIRSTLINE_OPTIONS=stale)
 same => n,AGI(agi://127.0.0.1:{port}/live,first arg)
 same => n,Verbose(1,AGILIVE status=${{AGISTATUS}} route=${{FIRSTLINE_ROUTE}})
 same => n,Verbose(1,AGISET {set_vars})
 same => n,Hangup()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.live
async def test_live_asterisk_uses_the_variable_our_handler_sets(pbx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, tuple[str, ...]]] = []

    async def live(session: AgiSession) -> None:
        seen.append((session.request.env["agi_calleridname"], session.request.args))
        await session.set_variable("FIRSTLINE_ROUTE", "queue-support")
        await session.set_variables(
            {
                "FIRSTLINE_SKILLS": "printing:2,english:1",  # a comma: not for MSet
                "FIRSTLINE_OPTIONS": "",
                "FIRSTLINE_ANNOUNCE": "firstline/a&firstline/b",
                "__FIRSTLINE_REC": "/var/spool/rec/20261206-1-x.y",
                "FIRSTLINE_QUEUE": "first-en",
            }
        )

    srv = AgiServer(port=0, handlers={"live": live})
    await srv.start()
    try:
        conf = tmp_path / "conf"
        conf.mkdir()
        for name in ("asterisk.conf", "logger.conf", "manager.conf", "modules.conf"):
            (conf / name).write_bytes((TRANSCRIPTS / "asterisk-conf" / name).read_bytes())
        (conf / "extensions.conf").write_text(
            _LIVE_DIALPLAN.format(
                port=srv.port,
                set_vars="skills=${FIRSTLINE_SKILLS} options=[${FIRSTLINE_OPTIONS}] "
                "announce=${FIRSTLINE_ANNOUNCE} inherited=${FIRSTLINE_REC} "
                "queue=${FIRSTLINE_QUEUE}",
            )
        )
        await asyncio.to_thread(pbx.start, conf)
        await asyncio.to_thread(pbx.cli, "channel originate Local/s@agi-live application Wait 3")
        async with asyncio.timeout(10):
            while "AGILIVE" not in pbx.log_since_start():  # noqa: ASYNC110 - polling a file
                await asyncio.sleep(0.1)
        assert "AGILIVE status=SUCCESS route=queue-support" in pbx.log_since_start()
        # MSet set the plain values unchanged, the empty one included, in one EXEC.
        assert (
            "AGISET skills=printing:2,english:1 options=[] announce=firstline/a&firstline/b "
            "inherited=/var/spool/rec/20261206-1-x.y queue=first-en"
        ) in pbx.log_since_start()
        assert seen == [("José Müller", ("first arg",))]
        assert srv.counters[("live", "ok")] == 1
    finally:
        await srv.close()
        await asyncio.to_thread(pbx.stop)
