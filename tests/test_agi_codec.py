"""The FastAGI codec against transcripts recorded from Asterisk 22, plus property tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.agi import (
    NEED_DATA,
    AgiConnection,
    AgiEvent,
    AgiHangupNotice,
    AgiProtocolError,
    AgiRequest,
    AgiResult,
    AgiUsageError,
    Closed,
    format_command,
)

TRANSCRIPTS = Path(__file__).parent / "transcripts" / "agi"
NAMES = ["session", "hangup", "hangupidle", "closeearly", "failure"]


def _events(chunks: list[bytes], **limits: int) -> list[AgiEvent]:
    conn = AgiConnection(**limits)
    out: list[AgiEvent] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            assert not isinstance(event, type(NEED_DATA))
            out.append(event)
            if isinstance(event, Closed):
                return out
    raise AssertionError("no Closed event after end of input")


def _transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"{name}.bin").read_bytes()


def test_session_transcript() -> None:
    events = _events([_transcript("session")])
    request = events[0]
    assert isinstance(request, AgiRequest)
    assert request.script == "session"
    assert dict(request.query) == {"x": "1", "y": "two"}
    assert request.args == ("arg one", "quoted", "")
    assert request.env["agi_calleridname"] == "José Müller"
    assert request.uniqueid == request.env["agi_uniqueid"] != ""
    assert request.channel.startswith("Local/session@agi-rec-")
    replies = events[1:-1]
    assert [type(r).__name__ for r in replies] == [
        *["AgiResult"] * 7,
        "AgiUsageError",
        "AgiUsageError",
        "AgiResult",
        "AgiResult",
    ]
    foo, unset, name, set_ok, back, stream, unknown = replies[:7]
    assert isinstance(foo, AgiResult)
    assert (foo.code, foo.result_int, foo.data) == (200, 1, "bar baz (x)")
    assert isinstance(unset, AgiResult)
    assert (unset.result_int, unset.data) == (0, None)
    assert isinstance(name, AgiResult)
    assert name.data == "José Müller"
    assert isinstance(set_ok, AgiResult)
    assert set_ok.ok
    assert isinstance(back, AgiResult)
    assert back.data == 'hello "world" back\\slash'
    assert isinstance(stream, AgiResult)
    assert (stream.result_int, stream.data, dict(stream.extras)) == (-1, None, {"endpos": "0"})
    assert isinstance(unknown, AgiResult)
    assert (unknown.code, unknown.text) == (510, "Invalid or unknown command")
    usage = replies[7]
    assert isinstance(usage, AgiUsageError)
    assert usage.text.startswith("Invalid command syntax.  Proper usage follows:\n")
    assert usage.text.endswith("\nEnd of proper usage.")
    assert events[-1] == Closed()


def test_hangup_transcript() -> None:
    events = _events([_transcript("hangup")])
    assert isinstance(events[0], AgiRequest)
    assert events[1] == AgiResult(code=200, result="0", text="result=0")
    assert events[2] == AgiHangupNotice()
    assert isinstance(events[3], AgiResult)
    assert events[3].data == "still here"
    assert isinstance(events[4], AgiResult)
    assert events[4].code == 511
    assert events[-1] == Closed()


@pytest.mark.parametrize("name", NAMES)
def test_every_transcript_parses(name: str) -> None:
    events = _events([_transcript(name)])
    assert isinstance(events[0], AgiRequest)
    assert events[0].script == name
    assert isinstance(events[-1], Closed)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), cuts=st.lists(st.integers(min_value=0, max_value=2000)))
def test_chunking_does_not_change_events(name: str, cuts: list[int]) -> None:
    data = _transcript(name)
    points = sorted({c % (len(data) + 1) for c in cuts})
    # b"" means end of input, so empty slices are left out.
    bounds = zip([0, *points], [*points, len(data)], strict=True)
    chunks = [data[a:b] for a, b in bounds if b > a]
    assert _events(chunks) == _events([data])


def _outcome(chunks: list[bytes], **limits: int) -> list[AgiEvent] | str:
    try:
        return _events(chunks, **limits)
    except AgiProtocolError as exc:
        return f"error: {exc}"


_HEADER_LINES = st.one_of(
    st.sampled_from([b"agi_network_script: s?x=1&y", b"agi_request: agi://h/r?q", b"agi_arg_1:"]),
    st.builds(
        lambda key, value: key + b": " + value.replace(b"\n", b""),
        st.sampled_from([b"agi_channel", b"agi_arg_1", b"agi_arg_2", b"bad key", b" "]),
        st.binary(max_size=12),
    ),
    st.binary(max_size=10).map(lambda line: line.replace(b"\n", b"")),
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.sampled_from([b"", b"\n", b"\r\n"]),
    lines=st.lists(_HEADER_LINES, max_size=10),
    after=st.sampled_from([b"", b"200 result=1 (v)\n", b"HANGUP\n", b"\r\n"]),
    max_headers=st.integers(min_value=1, max_value=12),
    max_header_bytes=st.integers(min_value=8, max_value=300),
)
def test_a_whole_header_parses_as_it_does_byte_by_byte(
    before: bytes, lines: list[bytes], after: bytes, max_headers: int, max_header_bytes: int
) -> None:
    # Whole, the block takes the one-step path; byte by byte it goes line by line.
    data = before + b"\n".join(lines) + b"\n\n" + after
    limits = {"max_headers": max_headers, "max_header_bytes": max_header_bytes}
    whole = _outcome([data], **limits)
    assert whole == _outcome([data[i : i + 1] for i in range(len(data))], **limits)


def test_utf8_split_between_reads() -> None:
    data = _transcript("session")
    at = data.index("Müller".encode()) + 2  # inside the two bytes of 'ü'
    events = _events([data[:at], data[at:]])
    assert isinstance(events[0], AgiRequest)
    assert events[0].env["agi_calleridname"] == "José Müller"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), split=st.integers(min_value=0, max_value=600))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes, split: int) -> None:
    conn = AgiConnection(max_header_bytes=256, max_headers=8, max_line_bytes=128)
    try:
        for chunk in (data[:split], data[split:], b""):
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, Closed):
                    return
    except AgiProtocolError:
        return


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=300))
def test_arbitrary_replies_after_a_request(tail: bytes) -> None:
    conn = AgiConnection(max_line_bytes=64, max_usage_lines=4)
    conn.receive_data(b"agi_network_script: x\n\n" + tail)
    conn.receive_data(b"")
    try:
        while not isinstance(conn.next_event(), Closed):
            pass
    except AgiProtocolError:
        pass


def test_limits() -> None:
    with pytest.raises(AgiProtocolError, match="header too big"):
        _events([b"agi_x: " + b"a" * 100], max_header_bytes=64)
    with pytest.raises(AgiProtocolError, match="header too big"):
        _events([b"agi_x: 1\n" * 20], max_header_bytes=64)
    with pytest.raises(AgiProtocolError, match="too many"):
        _events([b"agi_x: 1\n" * 5], max_headers=4)
    with pytest.raises(AgiProtocolError, match="too long"):
        _events([b"agi_network_script: s\n\n200 result=" + b"1" * 100], max_line_bytes=64)
    with pytest.raises(AgiProtocolError, match="not a FastAGI request"):
        _events([b"Host: example\n\n"])
    with pytest.raises(AgiProtocolError, match="malformed"):
        _events([b"GET / HTTP/1.1\r\n\r\n"])


def test_eof_is_an_event_and_more_data_after_it_is_an_error() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_netw")
    conn.receive_data(b"")
    assert conn.next_event() == Closed(trailing_bytes=8)
    assert conn.next_event() == Closed()
    with pytest.raises(AgiProtocolError):
        conn.receive_data(b"more")


def test_request_without_network_script_uses_agi_request() -> None:
    (request, _) = _events([b"agi_request: agi://h:1/a/b?k=v\r\nagi_arg_1: z\r\n\r\n"])
    assert isinstance(request, AgiRequest)
    assert (request.script, dict(request.query), request.args) == ("a/b", {"k": "v"}, ("z",))


@pytest.mark.parametrize(
    ("line", "result", "data", "extras"),
    [
        (
            b"200 result=1 (digit) digit=5 endpos=1234",
            "1",
            "digit",
            {"digit": "5", "endpos": "1234"},
        ),
        (b"200 result=12 (timeout)", "12", "timeout", {}),
        (b"200 result=1 (a) b=c)", "1", "a) b=c", {}),
        (b"200 result=1 (x (y) z) endpos=9", "1", "x (y) z", {"endpos": "9"}),
        (b"200 result=1 (unclosed", "1", "unclosed", {}),
        (b"200 result=0 endpos=0", "0", None, {"endpos": "0"}),
        (b"503 result=-2 Memory allocation failure", "-2", None, {}),
    ],
)
def test_reply_shapes(line: bytes, result: str, data: str | None, extras: dict[str, str]) -> None:
    events = _events([b"agi_network_script: s\n\n" + line + b"\n"])
    reply = events[1]
    assert isinstance(reply, AgiResult)
    assert (reply.result, reply.data, dict(reply.extras)) == (result, data, extras)


@settings(max_examples=300, deadline=None)
@given(
    replies=st.lists(
        st.one_of(
            st.sampled_from([b"result=0", b"result=1", b"result=-1", b"result=1 (v) endpos=3"]),
            st.binary(max_size=40).map(lambda tail: tail.replace(b"\n", b"")),
        ).map(lambda tail: b"200 " + tail),
        min_size=1,
        max_size=4,
    ),
    end=st.sampled_from([b"\n", b"\r\n"]),
)
def test_a_200_reply_parses_as_it_does_after_a_blank_line(replies: list[bytes], end: bytes) -> None:
    # A reply right at the start of the buffer takes the one-step 200 path; after a blank
    # line (skipped) it goes through the general one.
    header = b"agi_network_script: s\n\n"
    direct = _outcome([header + b"".join(r + end for r in replies)], max_line_bytes=32)
    after_blank = _outcome([header + b"".join(b"\n" + r + end for r in replies)], max_line_bytes=32)
    assert direct == after_blank


def test_every_numeric_result_parses_as_it_does_after_a_blank_line() -> None:
    # Key codes and digits cover the replies the codec keeps ready-made: each must be what
    # parsing the line gives.
    header = b"agi_network_script: s\n\n"
    for number in range(-3, 300):
        reply = b"200 result=%d\n" % number
        direct = _events([header + reply])
        assert direct == _events([header + b"\n" + reply])
        assert direct[1] == AgiResult(code=200, result=str(number), text=f"result={number}")


def test_single_line_520() -> None:
    events = _events([b"agi_network_script: s\n\n520 Invalid command syntax.  No usage.\n"])
    assert events[1] == AgiUsageError(text="Invalid command syntax.  No usage.")


# -- quoting ----------------------------------------------------------------------------------


def _asterisk_parse_args(line: str, max_args: int = 128) -> list[str]:
    """res_agi.c parse_args (Asterisk 22), transcribed step by step, including its quirks."""
    argv: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for c in line:
        normal = False
        if c == '"':
            if escaped:
                normal = True
            else:
                quoted = not quoted
                if quoted and whitespace:
                    # starting a quote coming off white space starts a new word too
                    argv.append([])
                    whitespace = False
                escaped = False
        elif c in " \t":
            if not quoted and not escaped:
                whitespace = True
            else:
                normal = True
        elif c == "\\":
            if escaped:
                normal = True
            else:
                escaped = True
        else:
            normal = True
        if normal:
            if whitespace:
                if len(argv) >= max_args - 1:
                    continue  # "Too many arguments, truncating": the character is dropped
                argv.append([])
                whitespace = False
            argv[-1].append(c)
            escaped = False
    return ["".join(w) for w in argv]


def test_parse_args_reimplementation_matches_known_cases() -> None:
    assert _asterisk_parse_args('GET VARIABLE "a b"') == ["GET", "VARIABLE", "a b"]
    assert _asterisk_parse_args('SET VARIABLE X ""') == ["SET", "VARIABLE", "X", ""]
    assert _asterisk_parse_args('x "a\\"b" c\\ d') == ["x", 'a"b', "c d"]
    assert _asterisk_parse_args('a"b c"d') == ["ab cd"]


_WORD = st.text(st.characters(blacklist_characters="\x00\r\n", codec="utf-8"), max_size=40)


@settings(max_examples=500, deadline=None)
@given(words=st.lists(_WORD, min_size=1, max_size=12))
def test_format_command_round_trips_through_parse_args(words: list[str]) -> None:
    line = format_command(*words)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    assert _asterisk_parse_args(line[:-1].decode("utf-8")) == words


def test_the_recorded_command_quoting_matches_format_command() -> None:
    # session.sent.bin was written by hand and accepted by Asterisk (see session.bin).
    assert format_command("SET", "VARIABLE", "REC_RESULT", 'hello "world" back\\slash') == (
        b'SET VARIABLE REC_RESULT "hello \\"world\\" back\\\\slash"\n'
    )
    assert format_command("STREAM", "FILE", "no-such-prompt", "") == (
        b'STREAM FILE no-such-prompt ""\n'
    )


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (("VERBOSE", "a\x1bb", "1"), b"VERBOSE a\x1bb 1\n"),  # control character: bare
        (("VERBOSE", "a\u00a0b"), "VERBOSE a\u00a0b\n".encode()),  # no-break space: bare
        (("VERBOSE", "a\tb"), b'VERBOSE "a\tb"\n'),
        (("SET", "VARIABLE", "X", "José"), "SET VARIABLE X José\n".encode()),
    ],
)
def test_words_quoted_only_where_parse_args_needs_it(words: tuple[str, ...], line: bytes) -> None:
    assert format_command(*words) == line


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_format_command_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(AgiProtocolError):
        format_command("VERBOSE", bad)


def test_format_command_limits() -> None:
    with pytest.raises(AgiProtocolError):
        format_command()
    with pytest.raises(AgiProtocolError):
        format_command(*["x"] * 128)
    with pytest.raises(AgiProtocolError):
        format_command("VERBOSE", "x" * 2100)
    assert len(format_command("VERBOSE", "x" * 2030)) <= 2047
