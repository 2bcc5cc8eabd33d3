"""Bad input for the AMI and FastAGI codecs and the adapters around them (issue 8).

The codec properties are those of `fuzz.invariants`, which the atheris harnesses in fuzz/
check for hours (`make fuzz`); here hypothesis checks them within `make test`:

* any bytes, cut into reads anyhow: only the codec's own protocol error, the same events
  whatever the cuts, a bounded buffer after every read, nothing after end of input;
* well-formed streams parse to exactly what was written;
* a peer that never ends a line, or never ends a header, is refused at the limit, having
  cost no more than the limit and one read.

Then the adapters over real loopback sockets: the AMI client drops (and reconnects) a link
whose peer floods it, and the FastAGI server cuts floods and slow clients while a
well-formed session is served beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
import structlog
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.agi import NEED_DATA as AGI_NEED_DATA
from acd.agi import (
    AgiConnection,
    AgiHangupNotice,
    AgiProtocolError,
    AgiRequest,
    AgiResult,
    AgiServer,
    AgiSession,
    AgiUsageError,
)
from acd.agi import Closed as AgiClosed
from acd.ami import NEED_DATA as AMI_NEED_DATA
from acd.ami import AmiClient, AmiParser, AmiProtocolError, Banner
from acd.ami import Closed as AmiClosed
from fuzz.invariants import (
    AGI_HEADER,
    AGI_LIMITS,
    AMI_BANNER,
    AMI_LIMITS,
    AgiLimits,
    Run,
    assert_agi_bounded,
    assert_ami_bounded,
    check_agi,
    check_ami,
)

_CUTS = st.lists(st.integers(min_value=0), max_size=40)

# --- any bytes ---------------------------------------------------------------------------

# Raw bytes find little; protocol tokens mixed with raw bytes reach the deeper paths.
_AMI_TOKENS = st.sampled_from(
    [b"\r\n", b"\r\n\r\n", b"\n", b"\r", b":", b": ", b" ", b"Event: E", b"Response: Success",
     b"Response: Follows", b"--END COMMAND--", b"ActionID: 1", b"K: v", b"\xc3", b"\xa9",
     b"V" * 70, AMI_BANNER, b"\x1f", b"\x0b", b"\xc2\xa0", b"\xc2\x85"]
)  # fmt: skip
_AGI_TOKENS = st.sampled_from(
    [b"\n", b"\r\n", b"\n\n", b":", b": ", b" ", b"agi_network_script: s?a=1", b"agi_arg_1: x",
     b"agi_request: agi://[h/s", b"agi_request: agi://h:1/s", b"200 result=1 (d) endpos=3",
     b"510 Invalid", b"511 Dead", b"520-Usage", b"520 End", b"520 ", b"HANGUP", b"\xc3",
     b"x" * 70]
)  # fmt: skip


def _noise(tokens: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    pieces = st.one_of(tokens, st.binary(min_size=1, max_size=20))
    return st.lists(pieces, max_size=30).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), _noise(_AMI_TOKENS)),
    cuts=_CUTS,
    limit=st.sampled_from(AMI_LIMITS[:3]),
    banner=st.sampled_from(["expected", "expected and sent", "none"]),
)
def test_ami_any_bytes_any_reads(data: bytes, cuts: list[int], limit: int, banner: str) -> None:
    if banner == "expected and sent":
        data = AMI_BANNER + data
    check_ami(data, cuts, limit=limit, expect_banner=banner != "none")


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), _noise(_AGI_TOKENS)),
    cuts=_CUTS,
    limits=st.sampled_from(AGI_LIMITS),
    after_a_request=st.booleans(),
)
def test_agi_any_bytes_any_reads(
    data: bytes, cuts: list[int], limits: AgiLimits, after_a_request: bool
) -> None:
    check_agi(AGI_HEADER + data if after_a_request else data, cuts, limits=limits)


# --- well-formed streams parse to what was written ---------------------------------------

_NO_LINE_END = st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])
_AMI_KEY = st.text(
    st.characters(exclude_characters=":\r\n", exclude_categories=["Cs"]), min_size=1, max_size=10
)
_AMI_VALUE = st.text(_NO_LINE_END, max_size=30)  # ':' and ': ' included on purpose
_AMI_MESSAGE = st.tuples(
    st.sampled_from(
        ["", "", "\r\n", "\r\n\r\n", "\r\n\r\n\r\n", "\n", "\n\n"]
    ),  # stray blank lines
    st.sampled_from(["Event", "Response"]),
    _AMI_VALUE,
    st.lists(st.tuples(_AMI_KEY, _AMI_VALUE), max_size=6),
    st.sampled_from(["\r\n", "\r\n", "\n"]),
)


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(_AMI_MESSAGE, max_size=6), cuts=_CUTS)
def test_ami_well_formed_stream_parses_to_what_was_written(
    messages: list[tuple[str, str, str, list[tuple[str, str]], str]], cuts: list[int]
) -> None:
    stream = AMI_BANNER
    expected: list[object] = [Banner("11.0.0")]
    for gap, kind, value, rest, end in messages:
        # "Response: Follows" starts the legacy Command output, another format.
        head = "Success" if kind == "Response" and value.startswith("Follows") else value
        pairs = ((kind, head), *rest)
        stream += (gap + end.join(f"{key}: {value}" for key, value in pairs) + end * 2).encode()
        action_id = next((value for key, value in pairs if key.lower() == "actionid"), None)
        expected.append((kind, head, action_id, pairs))
    expected.append(AmiClosed(incomplete=False))
    whole = check_ami(stream, cuts, limit=256 * 1024, expect_banner=True)
    assert whole == Run(tuple(expected), failed=False)


_AGI_KEY = st.from_regex(r"agi_[a-z0-9_]{1,12}", fullmatch=True)
_AGI_VALUE = st.text(_NO_LINE_END, max_size=30)
_AGI_REPLY = st.one_of(
    st.tuples(st.just("result"), st.integers(-1, 300), st.none() | st.text(
        st.characters(exclude_characters="\r\n)", exclude_categories=["Cs"]), max_size=20)),
    st.tuples(st.just("code"), st.sampled_from([510, 511, 503]), st.text(_NO_LINE_END, max_size=20)
              .filter(lambda text: not text.startswith("result="))),
    st.tuples(st.just("usage"), st.lists(st.text(_NO_LINE_END, max_size=20).filter(
        lambda line: not line.startswith("520 ")), max_size=5), st.text(_NO_LINE_END, max_size=20)),
    st.tuples(st.just("hangup"), st.none(), st.none()),
)  # fmt: skip


def _agi_reply(reply: tuple[str, object, object], end: str) -> tuple[str, object]:
    """The reply's bytes as Asterisk writes it, and the event it must give."""
    kind, first, second = reply
    if kind == "result":
        assert isinstance(first, int)
        if second is None:
            return f"200 result={first}{end}", AgiResult(200, str(first), text=f"result={first}")
        text = f"result={first} ({second})"
        return f"200 {text}{end}", AgiResult(200, str(first), data=str(second), text=text)
    if kind == "code":
        assert isinstance(first, int)
        assert isinstance(second, str)
        return f"{first} {second}{end}", AgiResult(first, "", text=second)
    if kind == "usage":
        assert isinstance(first, list)
        assert isinstance(second, str)
        lines = [f"520-{first[0] if first else ''}", *first[1:], f"520 {second}"]
        usage = "\n".join([*(first or [""]), second])
        return "".join(line + end for line in lines), AgiUsageError(usage)
    return f"HANGUP{end}", AgiHangupNotice()


@settings(max_examples=150, deadline=None)
@given(
    env=st.dictionaries(_AGI_KEY, _AGI_VALUE, max_size=8),
    script=st.from_regex(r"[a-z][a-z0-9/_-]{0,10}", fullmatch=True),
    query=st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), _AGI_VALUE, max_size=3),
    args=st.lists(_AGI_VALUE, max_size=4),
    replies=st.lists(_AGI_REPLY, max_size=6),
    end=st.sampled_from(["\n", "\r\n"]),
    cuts=_CUTS,
)
def test_agi_well_formed_session_parses_to_what_was_written(
    env: dict[str, str],
    script: str,
    query: dict[str, str],
    args: list[str],
    replies: list[tuple[str, object, object]],
    end: str,
    cuts: list[int],
) -> None:
    env = {key: value for key, value in env.items() if not key.startswith("agi_arg_")}
    env["agi_network_script"] = f"{script}?{urlencode(query)}" if query else script
    env.update({f"agi_arg_{n}": arg for n, arg in enumerate(args, start=1)})
    header = "".join(f"{key}: {value}{end}" for key, value in env.items()) + end
    expected: list[object] = [AgiRequest(env, script.strip("/"), query, tuple(args))]
    stream = header
    for reply in replies:
        raw, event = _agi_reply(reply, end)
        stream += raw
        expected.append(event)
    expected.append(AgiClosed(trailing_bytes=0))
    whole = check_agi(stream.encode(), cuts, limits=AgiLimits())
    assert whole == Run(tuple(expected), failed=False)


# --- a peer that never stops -------------------------------------------------------------


def _endless(prefix: bytes, unit: bytes, *, past: int) -> bytes:
    """``prefix`` then ``unit`` repeated until ``past`` bytes more than the prefix."""
    return prefix + unit * (past // len(unit) + 1)


def _reads(stream: bytes, size: int) -> list[bytes]:
    return [stream[at : at + size] for at in range(0, len(stream), size)]


def _feed_ami(parser: AmiParser, reads: list[bytes], limit: int) -> tuple[int, str | None]:
    """Feed ``reads``, draining and checking the bound after each, until the parser
    refuses: the bytes it took, and why it refused (None: it never did)."""
    fed = 0
    for chunk in reads:
        try:
            parser.receive_data(chunk)
            fed += len(chunk)
            while parser.next_message() is not AMI_NEED_DATA:
                pass
        except AmiProtocolError as error:
            return fed, str(error)
        assert_ami_bounded(parser, limit, len(chunk))
    return fed, None


def _feed_agi(conn: AgiConnection, reads: list[bytes], limits: AgiLimits) -> tuple[int, str | None]:
    """As `_feed_ami`, for a FastAGI connection."""
    fed = 0
    for chunk in reads:
        try:
            conn.receive_data(chunk)
            fed += len(chunk)
            while conn.next_event() is not AGI_NEED_DATA:
                pass
        except AgiProtocolError as error:
            return fed, str(error)
        assert_agi_bounded(conn, limits, len(chunk))
    return fed, None


_AMI_FLOODS = {
    "a banner line": (b"Asterisk Call Manager/", b"1"),
    "a field line": (AMI_BANNER + b"Event: Flood\r\nKey: ", b"A"),
    "field lines": (AMI_BANNER + b"Event: Flood\r\n", b"Key: v\r\n"),
    "blank-free CR": (AMI_BANNER + b"Event: Flood\r\n", b"\r"),
}


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(sorted(_AMI_FLOODS)),
    limit=st.integers(min_value=64, max_value=4096),
    read=st.integers(min_value=16, max_value=2048),
)
def test_ami_never_ending_input_is_refused_at_the_limit(shape: str, limit: int, read: int) -> None:
    prefix, unit = _AMI_FLOODS[shape]
    # More than any bound allows: reaching its end without an error is the failure.
    stream = _endless(prefix, unit, past=limit + 4 + 2 * read)
    parser = AmiParser(max_message_bytes=limit)
    fed, refused = _feed_ami(parser, _reads(stream, read), limit)
    assert refused is not None
    assert "larger than" in refused
    assert fed <= len(prefix) + limit + 4 + read
    assert len(parser._buffer) == 0  # what was held is freed at once


def test_ami_default_limit_with_the_clients_reads() -> None:
    # As AmiClient runs it: 256 KiB per message, 64 KiB reads.
    limit, read = 256 * 1024, 65536
    parser = AmiParser()
    parser.receive_data(AMI_BANNER + b"Event: Flood\r\nKey: ")
    assert isinstance(parser.next_message(), Banner)
    fed, refused = _feed_ami(parser, [b"A" * read] * 100, limit)
    assert refused is not None
    assert fed <= limit + 4 + read


_AGI_FLOODS = {
    "a header line": (b"agi_network_script: s\nagi_x: ", b"A", "request header too big"),
    "header lines": (b"", b"agi_x: 1\n", "request header|too many request header lines"),
    "blank lines before the header": (b"", b"\r\n", "request header too big"),
    "a reply line": (AGI_HEADER + b"200 result=1 (", b"A", "reply line too long"),
    "a 520 usage text": (AGI_HEADER + b"520-Usage:\n", b"  line\n", "usage text too long"),
}


@settings(max_examples=80, deadline=None)
@given(
    shape=st.sampled_from(sorted(_AGI_FLOODS)),
    max_header_bytes=st.integers(min_value=64, max_value=4096),
    max_headers=st.integers(min_value=2, max_value=300),
    max_line_bytes=st.integers(min_value=64, max_value=4096),
    max_usage_lines=st.integers(min_value=1, max_value=600),
    read=st.integers(min_value=16, max_value=2048),
)
def test_agi_never_ending_input_is_refused_at_the_limit(
    shape: str,
    max_header_bytes: int,
    max_headers: int,
    max_line_bytes: int,
    max_usage_lines: int,
    read: int,
) -> None:
    prefix, unit, reason = _AGI_FLOODS[shape]
    limits = AgiLimits(max_header_bytes, max_headers, max_line_bytes, max_usage_lines)
    biggest = max(max_header_bytes, max_line_bytes)
    stream = _endless(prefix, unit, past=biggest + 2 * read)
    conn = AgiConnection(
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        max_line_bytes=max_line_bytes,
        max_usage_lines=max_usage_lines,
    )
    fed, refused = _feed_agi(conn, _reads(stream, read), limits)
    assert refused is not None
    assert re.search(reason, refused), refused
    assert fed <= len(prefix) + biggest + read
    assert len(conn._buf) == 0
    with pytest.raises(AgiProtocolError):
        conn.receive_data(b"more")


def test_agi_520_usage_text_is_bounded_as_one_reply() -> None:
    """A usage text may not hold more than one reply's bytes, however many its lines."""
    conn = AgiConnection(max_line_bytes=1024, max_usage_lines=512)
    conn.receive_data(AGI_HEADER + b"520-Usage:\n")
    assert isinstance(conn.next_event(), AgiRequest)
    fed, refused = _feed_agi(conn, [b"x" * 99 + b"\n"] * 100, AgiLimits(max_line_bytes=1024))
    assert refused == "520 usage text too long"
    assert fed <= 1024 + 100


def test_agi_request_with_a_malformed_url_is_a_protocol_error() -> None:
    for url in (b"agi://[h/route", b"agi://[zz]/route"):
        conn = AgiConnection()
        conn.receive_data(b"agi_request: " + url + b"\n\n")
        with pytest.raises(AgiProtocolError, match="malformed agi_request"):
            conn.next_event()


@pytest.mark.parametrize(
    "stream",
    [
        b"\n\r\n\r\r\n\r",  # found by fuzz_ami: "\n\r\n" at the very start of the stream
        b"\r\n\r\nEvent: A\r\n\r\n",
        b"Event: A\r\n\r\n\r\n\r\nEvent: B\r\n\r\n",
        b"Event: A\n\n\n\nEvent: B\n\n",
        b"Event: A\r\n\r\n" + b"\r\n" * 7 + b"Event: B\r\n\r\n",
    ],
)
def test_ami_stray_blank_lines_are_skipped_however_many_and_wherever(stream: bytes) -> None:
    # Every cut, read byte by byte too, by both parse paths (check_ami).
    run = check_ami(stream, range(len(stream) + 1), limit=4096, expect_banner=False)
    assert not run.failed
    assert [output[1] for output in run.outputs if isinstance(output, tuple)] in (
        [],
        ["A"],
        ["A", "B"],
    )


@pytest.mark.parametrize(
    "stream",
    [
        # Found by fuzz_ami: the batched path stripped str's whitespace ("\x1f" is some),
        # the one-by-one path bytes' (ASCII only), so the cuts decided which one parsed it.
        AMI_BANNER + b"Response:\n\n\x1fResponse:\r\n\r\n",
        AMI_BANNER + b"Event: A\r\n\r\n\xc2\xa0Event: B\r\n\r\n",  # NBSP
        AMI_BANNER + b"Event: A\r\n\r\n\xc2\x85Event: B\r\n\r\n",  # NEL
        AMI_BANNER + b"Event: A\n\n\x0b\x0cEvent: B\r\n\r\n",
    ],
)
def test_ami_unicode_whitespace_before_a_message_gives_the_same_outcome_however_cut(
    stream: bytes,
) -> None:
    check_ami(stream, range(len(stream) + 1), limit=4096, expect_banner=True)


def test_ami_banner_over_the_limit_is_refused_whole_or_in_pieces() -> None:
    banner = b"Asterisk Call Manager/" + b"1." * 100 + b"\r\n"
    for reads in ([banner], [banner[i : i + 10] for i in range(0, len(banner), 10)]):
        _, refused = _feed_ami(AmiParser(max_message_bytes=100), reads, 100)
        assert refused == "AMI banner larger than 100 bytes" or refused == (
            "AMI message larger than 100 bytes"
        )


# --- the AMI client against a peer that floods it ----------------------------------------

# Far more than the client may hold (its limit, a read and the kernel's socket buffers):
# a peer that gets this far was never cut off.
_FLOOD_CAP = 64 * 1024 * 1024
_CHUNK = b"A" * 65536
_OK = "Response: Success\r\nActionID: {aid}\r\nMessage: {message}\r\n\r\n"


@dataclass
class FloodingAmi:
    """An AMI server whose first connection floods; the later ones answer like Asterisk."""

    flood: str
    connections: int = 0
    flooded: int = 0
    cut_off: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        first = self.connections == 1
        try:
            if first and self.flood == "banner":
                await self._flood(writer, b"Asterisk Call Manager/")
                return
            writer.write(AMI_BANNER)
            while True:
                action = await reader.readuntil(b"\r\n\r\n")
                aid = next(
                    (
                        line[10:]
                        for line in action.decode().split("\r\n")
                        if line[:10] == "ActionID: "
                    ),
                    "",
                )
                writer.write(_OK.format(aid=aid, message="ok").encode())
                if first:
                    start = b"Event: Flood\r\n" + (b"Key: " if self.flood == "line" else b"")
                    await self._flood(writer, start)
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _flood(self, writer: asyncio.StreamWriter, start: bytes) -> None:
        writer.write(start)
        chunk = b"Key: v\r\n" * (len(_CHUNK) // 8) if self.flood == "lines" else _CHUNK
        try:
            while self.flooded < _FLOOD_CAP:
                writer.write(chunk)
                await writer.drain()
                self.flooded += len(chunk)
        except ConnectionError:
            self.cut_off = True


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - a state to watch, no event to wait on
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("flood", ["banner", "line", "lines"])
async def test_ami_client_drops_a_flooding_peer_and_reconnects(flood: str) -> None:
    peer = FloodingAmi(flood)
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient(
        port=port,
        username="firstline",
        secret="s3cret",
        connect_timeout=5.0,
        action_timeout=5.0,
        backoff_initial=0.01,
        backoff_max=0.05,
        rng=random.Random(1),
        logger=structlog.get_logger("test"),
        max_message_bytes=64 * 1024,
    )
    async with server:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(client.run())
            try:
                await _until(lambda: peer.connections >= 2 and client.connected)
            finally:
                await client.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)
                for writer in peer.writers:
                    writer.close()
    assert peer.cut_off, f"the client took {peer.flooded} bytes of one message"
    assert peer.flooded < _FLOOD_CAP
    downs = [entry for entry in logs if entry["event"] == "ami.link_down"]
    assert downs
    assert "AmiProtocolError" in downs[0]["error"]
    assert "larger than 65536" in downs[0]["error"]


# --- the FastAGI server against floods and slow clients ----------------------------------


async def _greet(session: AgiSession) -> None:
    name = await session.get_variable("NAME")
    await session.set_variable("GREETING", f"hello {name}")


def _request(script: str) -> bytes:
    return (
        f"agi_network_script: {script}\nagi_uniqueid: 1.{script}\nagi_channel: PJSIP/x\n\n".encode()
    )


async def _well_formed_session(port: int, name: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            writer.write(_request("greet"))
            assert await reader.readline() == b"GET VARIABLE NAME\n"
            writer.write(f"200 result=1 ({name})\n".encode())
            assert await reader.readline() == f'SET VARIABLE GREETING "hello {name}"\n'.encode()
            writer.write(b"200 result=1\n")
            assert await reader.read() == b""
    finally:
        writer.close()


async def _flood_until_cut(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, start: bytes, unit: bytes
) -> int:
    """Send ``start`` then ``unit`` forever; the bytes sent once the server cut us off."""
    sent = 0
    chunk = unit * (len(_CHUNK) // len(unit))
    writer.write(start)
    try:
        while sent < _FLOOD_CAP:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if reader.at_eof():
                return sent
    except ConnectionError:
        return sent
    raise AssertionError(f"the server took {sent} bytes without cutting the connection")


@pytest.fixture
async def agi_server() -> AsyncIterator[AgiServer]:
    server = AgiServer(
        port=0,
        handlers={"greet": _greet},
        header_timeout=0.5,
        command_timeout=5.0,
        max_header_bytes=16 * 1024,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _idle(server: AgiServer, sessions: int = 0) -> None:
    async with asyncio.timeout(10):
        while server.active_sessions > sessions:  # noqa: ASYNC110 - a count to watch
            await asyncio.sleep(0.01)


_HEADER_FLOODS = {
    "a never-ending header line": (b"agi_network_script: greet\nagi_x: ", b"A"),
    "a flood of header lines": (b"agi_network_script: greet\n", b"agi_x: 1\n"),
    "a flood of blank lines": (b"", b"\n"),
}


@pytest.mark.parametrize("shape", sorted(_HEADER_FLOODS))
async def test_agi_server_cuts_a_header_flood_and_serves_beside_it(
    agi_server: AgiServer, shape: str
) -> None:
    start, unit = _HEADER_FLOODS[shape]
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    try:
        async with asyncio.timeout(20):
            sent, *_ = await asyncio.gather(
                _flood_until_cut(writer, reader, start, unit),
                *(_well_formed_session(agi_server.port, f"c{i}") for i in range(5)),
            )
    finally:
        writer.close()
    assert sent < _FLOOD_CAP
    await _idle(agi_server)
    assert agi_server.counters[("", "bad_request")] == 1
    assert agi_server.counters[("greet", "ok")] == 5


@pytest.mark.parametrize(
    ("first_reply", "unit"),
    [(b"200 result=1 (", b"A"), (b"520-Usage: GET VARIABLE\n", b"more usage\n")],
    ids=["a never-ending reply line", "a never-ending 520 usage text"],
)
async def test_agi_server_cuts_a_reply_flood_and_serves_beside_it(
    agi_server: AgiServer, first_reply: bytes, unit: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    try:
        async with asyncio.timeout(20):
            writer.write(_request("greet"))
            assert await reader.readline() == b"GET VARIABLE NAME\n"
            sent, *_ = await asyncio.gather(
                _flood_until_cut(writer, reader, first_reply, unit),
                *(_well_formed_session(agi_server.port, f"c{i}") for i in range(5)),
            )
    finally:
        writer.close()
    assert sent < _FLOOD_CAP
    await _idle(agi_server)
    # The handler saw the connection fail under its command: a hang-up, not a crash.
    assert agi_server.counters[("greet", "hangup")] == 1
    assert agi_server.counters[("greet", "ok")] == 5


async def test_agi_server_cuts_a_slowloris_at_the_header_timeout(agi_server: AgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    try:
        with structlog.testing.capture_logs() as logs:
            async with asyncio.timeout(10):
                writer.write(b"agi_network_script: greet\nagi_x: ")
                # One byte at a time, well inside every size limit, until the server hangs up.
                while not reader.at_eof():
                    writer.write(b"a")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.02)
                await _idle(agi_server)
    except ConnectionError:
        pass  # the reset of a write after the server closed: cut off as well
    finally:
        writer.close()
    assert agi_server.counters[("", "bad_request")] == 1
    assert any(entry["event"] == "agi.header_timeout" for entry in logs)


async def test_half_sent_requests_do_not_stall_other_sessions() -> None:
    """Connections that stop mid-header, or mid-way through a long line, hold no one up:
    the well-formed sessions complete while those are still open."""
    server = AgiServer(port=0, handlers={"greet": _greet}, header_timeout=60.0)
    await server.start()
    stalled: list[asyncio.StreamWriter] = []
    try:
        for start in (
            b"agi_network_script: gr",
            b"agi_network_script: greet\nagi_x: " + b"A" * 8000,
        ):
            for _ in range(10):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(start)
                await writer.drain()
                stalled.append(writer)
        await _until(lambda: server.active_sessions == len(stalled))
        async with asyncio.timeout(20):
            await asyncio.gather(*(_well_formed_session(server.port, f"c{i}") for i in range(10)))
        await _idle(server, sessions=len(stalled))
        assert server.active_sessions == len(stalled)  # still waiting for their headers
        assert server.counters[("greet", "ok")] == 10
        for writer in stalled:
            writer.close()
        await _idle(server)
        assert server.counters[("", "bad_request")] == len(stalled)
    finally:
        await server.close()
