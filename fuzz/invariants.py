"""What the AMI and FastAGI codecs promise for any input, checked on one input at a time.

Shared by the bounded hypothesis tests (tests/test_fuzz_codecs.py, part of `make test`) and
the atheris harnesses (fuzz/fuzz_ami.py, fuzz/fuzz_agi.py, `make fuzz`), so the long run
checks exactly what the short one does:

* the only exception a codec raises is its own protocol error, and once raised the codec
  stays failed (no further events, no further bytes taken);
* how the bytes are cut into reads changes nothing: the same events, the same failure;
* after the drain that follows each read (NEED_DATA), what the codec holds is bounded by
  its limits plus that read, so a peer sending a never-ending line or endless header
  lines hits the limit instead of growing the buffer;
* end of input gives `Closed`, after it `Closed` again and never another event, and bytes
  after it are a protocol error.

`check_ami` and `check_agi` raise AssertionError when a promise is broken; anything else
escaping them is a bug found in the codec. They look at the codecs' private buffers on
purpose: "memory held is bounded" cannot be seen from outside.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from acd.agi.codec import NEED_DATA as AGI_NEED_DATA
from acd.agi.codec import AgiConnection, AgiProtocolError, ConnectionState
from acd.agi.codec import Closed as AgiClosed
from acd.ami.codec import NEED_DATA as AMI_NEED_DATA
from acd.ami.codec import AmiParser, AmiProtocolError, Event, ParserOutput, Response
from acd.ami.codec import Closed as AmiClosed

__all__ = [
    "AGI_HEADER",
    "AGI_LIMITS",
    "AMI_BANNER",
    "AMI_COMPACT_AFTER",
    "AMI_LIMITS",
    "AgiLimits",
    "Run",
    "assert_agi_bounded",
    "assert_ami_bounded",
    "check_agi",
    "check_ami",
    "run_agi",
    "run_ami",
    "seeded_cuts",
    "split",
]

AMI_BANNER: Final = b"Asterisk Call Manager/11.0.0\r\n"
AGI_HEADER: Final = b"agi_network_script: r?x=1\nagi_arg_1: 1\n\n"
# AmiParser drops the bytes it has parsed only once more than this many lie before the
# unparsed ones (acd/ami/codec.py, receive_data): part of the bound on what it holds.
AMI_COMPACT_AFTER: Final = 65536
# The smallest limits reach the limit checks with short inputs; the last are the defaults.
AMI_LIMITS: Final = (64, 100, 4096, 256 * 1024)
# Shorter inputs are also read one byte at a time (longer ones would cost too many runs).
_BYTE_BY_BYTE_UP_TO: Final = 256
# Blank line: the message end that may still be on its way when the limit is checked.
_AMI_SLACK: Final = 4


@dataclass(frozen=True, slots=True)
class AgiLimits:
    """The constructor limits of one `AgiConnection`."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 256
    max_line_bytes: int = 64 * 1024
    max_usage_lines: int = 512


AGI_LIMITS: Final = (
    AgiLimits(max_header_bytes=64, max_headers=4, max_line_bytes=64, max_usage_lines=4),
    AgiLimits(max_header_bytes=300, max_headers=8, max_line_bytes=128, max_usage_lines=16),
    AgiLimits(),
)


@dataclass(frozen=True, slots=True)
class Run:
    """What a codec made of a whole input: its outputs in order, and whether it failed."""

    outputs: tuple[object, ...]
    failed: bool


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length), without empty reads,
    since an empty read means end of input."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in pieces if piece]


def seeded_cuts(seed: int, size: int) -> list[int]:
    """Up to 64 cut offsets into ``size`` bytes, chosen by ``seed``."""
    rng = random.Random(seed)  # noqa: S311 - picks cut points, no secret
    return [rng.randrange(size + 1) for _ in range(rng.randrange(min(size // 4, 63) + 2))]


# --- AMI ---------------------------------------------------------------------------------


def _ami_plain(message: ParserOutput) -> object:
    """A message as plain values; splits lazy fields now, so a failure there shows."""
    if isinstance(message, Event | Response):
        try:
            fields = tuple(message.fields)
        except AmiProtocolError as exc:
            raise AssertionError(f"fields of a returned message failed to split: {exc}") from exc
        head = message.name if isinstance(message, Event) else message.status
        return (type(message).__name__, head, message.get("ActionID"), fields)
    return message


def assert_ami_bounded(parser: AmiParser, limit: int, read: int) -> None:
    """What ``parser`` holds after a drain that ended in NEED_DATA, ``read`` the last read."""
    pending = len(parser._buffer) - parser._pos
    assert pending <= limit + _AMI_SLACK, f"{pending} unparsed bytes held, limit {limit}"
    bound = max(AMI_COMPACT_AFTER + limit + _AMI_SLACK, 2 * (limit + _AMI_SLACK)) + read
    assert len(parser._buffer) <= bound, f"buffer of {len(parser._buffer)} bytes > {bound}"


def _assert_ami_failed_for_good(parser: AmiParser) -> None:
    assert not parser._buffer, "a failed AMI parser still holds its buffer"
    for attempt in (parser.next_message, lambda: parser.receive_data(b"Event: X\r\n\r\n")):
        try:
            attempt()
        except AmiProtocolError:
            continue
        raise AssertionError("a failed AMI parser went on")


def run_ami(
    chunks: Sequence[bytes], *, limit: int, expect_banner: bool = True, batch: bool = True
) -> Run:
    """Feed ``chunks`` then end of input, draining after each read; check the promises
    that hold along the way."""
    parser = AmiParser(max_message_bytes=limit, expect_banner=expect_banner)
    if not batch:  # white box: the one-by-one path the batched one must agree with
        parser._single_until = 1 << 62
    out: list[object] = []
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            while (message := parser.next_message()) is not AMI_NEED_DATA:
                assert not isinstance(message, AmiClosed), "Closed before end of input"
                out.append(_ami_plain(message))
            assert_ami_bounded(parser, limit, len(chunk))
        parser.receive_data(b"")
        # Each message takes at least one byte: more outputs than bytes is a loop.
        for _ in range(sum(map(len, chunks)) + 2):
            message = parser.next_message()
            assert message is not AMI_NEED_DATA, "NEED_DATA after end of input"
            out.append(_ami_plain(message))
            if isinstance(message, AmiClosed):
                break
        else:
            raise AssertionError("no Closed after end of input")
    except AmiProtocolError:
        _assert_ami_failed_for_good(parser)
        return Run(tuple(out), failed=True)
    assert parser.next_message() == message, "something after Closed"
    try:
        parser.receive_data(b"Event: Late\r\n\r\n")
    except AmiProtocolError:
        return Run(tuple(out), failed=False)
    raise AssertionError("bytes after end of input were taken")


def check_ami(data: bytes, cuts: Sequence[int], *, limit: int, expect_banner: bool) -> Run:
    """Every AMI promise for ``data``, read whole, cut at ``cuts`` and byte by byte when
    short, by the batched and the one-by-one parse path."""
    at_once = split(data, ())
    whole = run_ami(at_once, limit=limit, expect_banner=expect_banner)
    readings = [(split(data, cuts), True), (at_once, False), (split(data, cuts), False)]
    if len(data) <= _BYTE_BY_BYTE_UP_TO:
        readings.append(([data[i : i + 1] for i in range(len(data))], True))
    for reads, batch in readings:
        got = run_ami(reads, limit=limit, expect_banner=expect_banner, batch=batch)
        assert got == whole, f"{len(reads)} reads, batch={batch}: {got} != {whole}"
    return whole


# --- FastAGI -----------------------------------------------------------------------------


def assert_agi_bounded(conn: AgiConnection, limits: AgiLimits, read: int) -> None:
    """What ``conn`` holds after a drain that ended in NEED_DATA, ``read`` the last read."""
    pending = len(conn._buf) - conn._pos
    if conn.state is ConnectionState.HEADER:
        held = pending + conn._header_bytes
        assert held <= limits.max_header_bytes, f"{held} header bytes held"
        assert len(conn._header_lines) <= limits.max_headers, "too many header lines held"
    else:
        assert pending <= limits.max_line_bytes, f"{pending} bytes of one reply line held"
        usage = conn._usage_lines or []
        assert len(usage) <= limits.max_usage_lines, "too many usage lines held"
        # Decoding makes at most one character of each byte: characters bound the bytes.
        held = sum(map(len, usage)) + pending
        assert held <= limits.max_line_bytes, f"{held} bytes of one 520 usage reply held"
    bound = max(limits.max_header_bytes, limits.max_line_bytes) + read
    assert len(conn._buf) <= bound, f"buffer of {len(conn._buf)} bytes > {bound}"


def _assert_agi_failed_for_good(conn: AgiConnection) -> None:
    assert conn.state is ConnectionState.ERROR
    assert not conn._buf, "a failed connection still holds its buffer"
    for attempt in (conn.next_event, lambda: conn.receive_data(b"200 result=1\n")):
        try:
            attempt()
        except AgiProtocolError:
            continue
        raise AssertionError("a failed FastAGI connection went on")


def run_agi(chunks: Sequence[bytes], *, limits: AgiLimits) -> Run:
    """Feed ``chunks`` then end of input, draining after each read; check the promises
    that hold along the way."""
    conn = AgiConnection(
        max_header_bytes=limits.max_header_bytes,
        max_headers=limits.max_headers,
        max_line_bytes=limits.max_line_bytes,
        max_usage_lines=limits.max_usage_lines,
    )
    out: list[object] = []
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not AGI_NEED_DATA:
                assert not isinstance(event, AgiClosed), "Closed before end of input"
                out.append(event)
            assert_agi_bounded(conn, limits, len(chunk))
        conn.receive_data(b"")
        for _ in range(sum(map(len, chunks)) + 2):
            event = conn.next_event()
            assert event is not AGI_NEED_DATA, "NEED_DATA after end of input"
            out.append(event)
            if isinstance(event, AgiClosed):
                break
        else:
            raise AssertionError("no Closed after end of input")
    except AgiProtocolError:
        _assert_agi_failed_for_good(conn)
        return Run(tuple(out), failed=True)
    assert conn.next_event() == AgiClosed(), "something after Closed"
    try:
        conn.receive_data(b"HANGUP\n")
    except AgiProtocolError:
        return Run(tuple(out), failed=False)
    raise AssertionError("bytes after end of input were taken")


def check_agi(data: bytes, cuts: Sequence[int], *, limits: AgiLimits) -> Run:
    """Every FastAGI promise for ``data``, read whole, cut at ``cuts`` and byte by byte
    when short."""
    whole = run_agi(split(data, ()), limits=limits)
    readings = [split(data, cuts)]
    if len(data) <= _BYTE_BY_BYTE_UP_TO:
        readings.append([data[i : i + 1] for i in range(len(data))])
    for reads in readings:
        got = run_agi(reads, limits=limits)
        assert got == whole, f"reads {len(reads)}: {got} != {whole}"
    return whole
