"""AMI codec against byte streams recorded from a real Asterisk 22 (tests/transcripts/ami)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.ami import (
    NEED_DATA,
    AmiFormatError,
    AmiParser,
    AmiProtocolError,
    Banner,
    Closed,
    Event,
    ParserOutput,
    Response,
    format_action,
)

TRANSCRIPTS = Path(__file__).parent / "transcripts" / "ami"


def _read(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


def _parse_chunks(chunks: list[bytes], **kwargs: Any) -> list[ParserOutput]:
    parser = AmiParser(**kwargs)
    out: list[ParserOutput] = []
    for chunk in [*chunks, b""]:
        parser.receive_data(chunk)
        while (message := parser.next_message()) is not NEED_DATA:
            out.append(message)
            if isinstance(message, Closed):
                return out
    return out


def _drain(parser: AmiParser) -> None:
    while parser.next_message() is not NEED_DATA:
        pass


def _parse(data: bytes) -> list[ParserOutput]:
    return _parse_chunks([data])


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in pieces if piece]  # b"" would mean EOF


def test_login_actions_transcript() -> None:
    out = _parse(_read("login_actions.bin"))
    assert out[0] == Banner("11.0.0")
    assert out[-1] == Closed(incomplete=False)
    login = out[1]
    assert isinstance(login, Response)
    assert (login.status, login.action_id, login.message) == (
        "Success",
        "login-1",
        "Authentication accepted",
    )
    by_id = {m.action_id: m for m in out if isinstance(m, Response)}
    # Asterisk 22 answers Command with Output: lines, not the legacy "Follows" body.
    version = by_id["cmd-1"]
    assert version.status == "Success"
    assert version.get_all("output")[0].startswith("Asterisk 22.")
    queue_show = by_id["cmd-2"].get_all("Output")
    assert len(queue_show) == 5
    assert queue_show[-1] == ""  # "Output: " with nothing after it
    assert "Agent One" in queue_show[2]
    assert by_id["cmd-3"].status == "Error"
    assert by_id["qa-1"].message == "Added interface to queue"
    assert by_id["qa-2"].status == "Error"
    assert by_id["bad-1"].status == "Error"
    assert by_id["bye-1"].status == "Goodbye"
    member = next(m for m in out if isinstance(m, Event) and m.name == "QueueMember")
    assert member.get("pausedreason") == ""
    assert member.action_id == "qs-1"
    assert member.get("Missing", "x") == "x"


def test_login_failed_transcript() -> None:
    out = _parse(_read("login_failed.bin"))
    assert out == [
        Banner("11.0.0"),
        Response(
            "Error",
            "login-1",
            "Authentication failed",
            (("Response", "Error"), ("ActionID", "login-1"), ("Message", "Authentication failed")),
        ),
        Closed(),
    ]


def test_queue_call_transcript_has_lifecycle_and_utf8() -> None:
    out = _parse(_read("login_queue_call.bin"))
    names = [m.name for m in out if isinstance(m, Event)]
    lifecycle = ["QueueCallerJoin", "AgentCalled", "QueueCallerLeave", "AgentConnect"]
    assert [n for n in names if n in lifecycle] == lifecycle
    assert "AgentComplete" in names
    join = next(m for m in out if isinstance(m, Event) and m.name == "QueueCallerJoin")
    assert join.get("CallerIDName") == "José Müller"
    assert join.get("Queue") == "support"
    # OriginateResponse is an event that also carries a "Response:" header.
    originate = next(m for m in out if isinstance(m, Event) and m.name == "OriginateResponse")
    assert originate.get("Response") == "Success"
    assert originate.action_id == "orig-1"
    # The two Variable values of the Originate come back as two VarSet events.
    values = {m.get("Value") for m in out if isinstance(m, Event) and m.name == "VarSet"}
    assert {"T-1", "de"} <= values


def test_eventfilter_transcript_keeps_only_listed_events_and_list_events() -> None:
    out = _parse(_read("login_filtered_queue_call.bin"))
    names = [m.name for m in out if isinstance(m, Event)]
    # FullyBooted is sent to the session at login and QueueStatus list events go to the
    # asking session: neither passes through eventfilter.
    assert names == [
        "FullyBooted",
        "QueueParams",
        "QueueMember",
        "QueueStatusComplete",
        "QueueCallerJoin",
        "AgentCalled",
        "QueueCallerLeave",
        "AgentConnect",
        "AgentComplete",
    ]


TRANSCRIPT_NAMES = [
    "login_actions.bin",
    "login_failed.bin",
    "login_queue_call.bin",
    "login_filtered_queue_call.bin",
    "login_session_filter_call.bin",
]


def test_session_filter_action_transcript() -> None:
    out = _parse(_read("login_session_filter_call.bin"))
    filters = [m for m in out if isinstance(m, Response) and (m.action_id or "").startswith("flt")]
    # Asterisk 22 takes advanced criteria in the Filter action: MatchCriteria: name(X)
    assert [m.status for m in filters] == ["Success", "Success", "Success", "Error"]
    assert "formatted incorrectly" in (filters[-1].message or "")
    names = [m.name for m in out if isinstance(m, Event)]
    # FullyBooted and SuccessfulAuth come before any filter can be set
    assert names == [
        "FullyBooted",
        "SuccessfulAuth",
        "QueueCallerJoin",
        "QueueCallerLeave",
        "AgentConnect",
    ]


@pytest.mark.parametrize("name", TRANSCRIPT_NAMES)
@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=60))
def test_any_chunking_gives_the_same_messages(name: str, cuts: list[int]) -> None:
    data = _read(name)
    assert _parse_chunks(_split(data, cuts)) == _parse(data)


@pytest.mark.parametrize("name", TRANSCRIPT_NAMES)
def test_bare_lf_stream_parses_like_crlf(name: str) -> None:
    # bare-LF input takes the one-by-one path; CRLF input the batched one: same result
    data = _read(name)
    assert _parse(data.replace(b"\r\n", b"\n")) == _parse(data)


def _outcome(
    chunks: list[bytes], limit: int, *, batch: bool = True
) -> tuple[list[ParserOutput], bool]:
    parser = AmiParser(max_message_bytes=limit)
    if not batch:  # white-box: force the one-by-one path the batch path must agree with
        parser._single_until = 1 << 62
    out: list[ParserOutput] = []
    try:
        for chunk in [*chunks, b""]:
            parser.receive_data(chunk)
            while (message := parser.next_message()) is not NEED_DATA:
                out.append(message)
                if isinstance(message, Closed):
                    return out, False
    except AmiProtocolError:
        return out, True
    return out, False


_TOKENS = st.sampled_from(
    [
        b"\r\n\r\n",
        b" Event: Y",
        b"V" * 40,
        b"Event: X",
        b"Response: Success",
        b"ActionID: 1",
        b"K: v",
        b"K:v",
        b"a: b: c",
        b"x",
        b"\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b" ",
        b"\xc3",
        b"\xa9",
        b"Output: --END COMMAND--",
        b"Response: Follows",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    tokens=st.lists(_TOKENS, max_size=60),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    limit=st.sampled_from([64, 100, 4096]),
)
def test_structured_noise_same_outcome_whole_or_chunked(
    tokens: list[bytes], cuts: list[int], limit: int
) -> None:
    data = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(tokens)
    whole = _outcome([data], limit)
    assert _outcome(_split(data, cuts), limit) == whole
    assert _outcome([data], limit, batch=False) == whole
    assert _outcome(_split(data, cuts), limit, batch=False) == whole


_LINES = st.sampled_from(
    ["K: v", "K: v", "K:v", "a: b: c", "K: 1.2.3.4:5060", "Empty: ", "Jos\u00e9: M\u00fcller",
     "Output: --END COMMAND--", "x", " ", "V: " + "v" * 50]
)  # fmt: skip
_MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(["Event: E", "Response: Success", "Response: Follows", " Event: S", "Q"]),
        st.lists(_LINES, max_size=4),
        st.sampled_from(["\r\n\r\n"] * 6 + ["\n\n", "\r\n\r\n\r\n", "\r\n\n"]),
    ),
    max_size=8,
)


@settings(max_examples=500, deadline=None)
@given(
    messages=_MESSAGES,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    limit=st.sampled_from([64, 80, 4096]),
)
def test_structured_messages_batch_and_single_paths_agree(
    messages: list[tuple[str, list[str], str]], cuts: list[int], limit: int
) -> None:
    text = "".join("\r\n".join([first, *lines]) + end for first, lines, end in messages)
    data = b"Asterisk Call Manager/11.0.0\r\n" + text.encode()
    whole = _outcome([data], limit, batch=False)
    assert _outcome([data], limit) == whole
    assert _outcome(_split(data, cuts), limit) == whole
    assert _outcome(_split(data, cuts), limit, batch=False) == whole


def test_byte_by_byte_equals_whole() -> None:
    data = _read("login_queue_call.bin")
    assert _parse_chunks([data[i : i + 1] for i in range(len(data))]) == _parse(data)


def test_utf8_character_split_across_reads() -> None:
    data = _read("login_queue_call.bin")
    at = data.index("José".encode()) + 4  # between the two bytes of "é"
    assert data[at - 1 : at + 1] == "é".encode()
    out = _parse_chunks([data[:at], data[at:]])
    join = next(m for m in out if isinstance(m, Event) and m.name == "QueueCallerJoin")
    assert join.get("CallerIDName") == "José Müller"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    out = _parse(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\nName: a\xff\xfeb\r\n\r\n")
    event = out[1]
    assert isinstance(event, Event)
    assert event.get("Name") == "a\ufffd\ufffdb"


def test_bare_lf_and_repeated_fields_and_case_insensitive_get() -> None:
    data = (
        b"Asterisk Call Manager/11.0.0\n"
        b"\r\n"
        b"Event: VarSet\nChanVariable: A=1\nchanvariable: B=2\nKey:nospace\n\n"
        b"Response: Success\r\nActionID: 7\nMessage: m\r\n\r\n"
    )
    out = _parse(data)
    event, response = out[1], out[2]
    assert isinstance(event, Event)
    assert event.get_all("CHANVARIABLE") == ("A=1", "B=2")
    assert event.get("chanVariable") == "A=1"
    assert event.get("key") == "nospace"
    assert isinstance(response, Response)
    assert (response.action_id, response.message) == ("7", "m")


def test_lazy_fields_behave_like_a_tuple() -> None:
    data = b"Event: X\r\nK:a: b\r\nL: x: y\r\nEmpty: \r\n\r\n"
    event = _parse_chunks([data], expect_banner=False)[0]
    assert isinstance(event, Event)
    expected = (("Event", "X"), ("K", "a: b"), ("L", "x: y"), ("Empty", ""))
    assert len(event.fields) == 4  # known before the split into pairs
    assert event.fields == expected
    assert expected == event.fields
    assert hash(event.fields) == hash(expected)
    assert event.fields[1:3] == expected[1:3]
    assert event.fields[-1] == ("Empty", "")
    assert list(event.fields) == list(expected)
    assert event == Event("X", expected)
    assert hash(event) == hash(Event("X", expected))
    assert "x: y" in repr(event)
    assert event.fields != "not fields"


_LINE_PART = st.text(st.sampled_from("aK1 :é-/."), max_size=8)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_LINE_PART, _LINE_PART), min_size=1, max_size=10))
def test_fields_split_like_the_reference(lines: list[tuple[str, str]]) -> None:
    # reference: the key runs to the first ':', one following space is the separator's
    texts = [f"{key.replace(':', '')}:{rest}" for key, rest in lines]
    expected = [("Event", "Probe")] + [
        (k, v[1:] if v.startswith(" ") else v) for k, _, v in (t.partition(":") for t in texts)
    ]
    data = ("\r\n".join(["Event: Probe", *texts]) + "\r\n\r\n").encode()
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        event = _parse_chunks(chunks, expect_banner=False)[0]
        assert isinstance(event, Event)
        assert len(event.fields) == len(expected)  # before the split into pairs
        assert event.fields == tuple(expected)


def test_legacy_follows_response() -> None:
    data = (
        b"Asterisk Call Manager/1.1\r\n"
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 3\r\n"
        b"line one\nline: two\n--END COMMAND--\r\n\r\n"
    )
    response = _parse(data)[1]
    assert isinstance(response, Response)
    assert response.status == "Follows"
    assert response.action_id == "3"
    assert response.get_all("Output") == ("line one", "line: two")


def test_eof_mid_message_is_incomplete_close() -> None:
    out = _parse(b"Asterisk Call Manager/11.0.0\r\nEvent: Half\r\nKey: va")
    assert out == [Banner("11.0.0"), Closed(incomplete=True)]
    parser = AmiParser()
    parser.receive_data(b"")
    assert parser.next_message() == Closed(incomplete=False)
    assert parser.next_message() == Closed(incomplete=False)  # stays closed, no busy loop
    with pytest.raises(AmiProtocolError):
        parser.receive_data(b"more")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"Asterisk Call Manager/11.0.0\r\nno colon here\r\n\r\n",
        b"Asterisk Call Manager/11.0.0\r\nFoo: bar\r\n\r\n",
    ],
)
def test_garbage_is_a_protocol_error_and_parser_stays_failed(data: bytes) -> None:
    parser = AmiParser()
    parser.receive_data(data)
    with pytest.raises(AmiProtocolError):
        _drain(parser)
    with pytest.raises(AmiProtocolError):
        parser.next_message()
    with pytest.raises(AmiProtocolError):
        parser.receive_data(b"Event: X\r\n\r\n")


def test_never_ending_line_is_refused_with_bounded_memory() -> None:
    parser = AmiParser(max_message_bytes=4096)
    parser.receive_data(b"Asterisk Call Manager/11.0.0\r\n")
    assert isinstance(parser.next_message(), Banner)
    parser.receive_data(b"Event: X\r\nKey: ")

    def feed_forever() -> None:
        for _ in range(100):
            parser.receive_data(b"A" * 1000)
            assert parser.next_message() is NEED_DATA

    with pytest.raises(AmiProtocolError, match="larger than 4096"):
        feed_forever()
    assert len(parser._buffer) == 0  # what was held is released


def test_never_ending_banner_is_refused() -> None:
    parser = AmiParser(max_message_bytes=1024)
    parser.receive_data(b"Asterisk Call Manager/" + b"9" * 2000)
    with pytest.raises(AmiProtocolError):
        parser.next_message()


def test_complete_message_over_limit_is_refused() -> None:
    parser = AmiParser(max_message_bytes=128, expect_banner=False)
    parser.receive_data(b"Event: X\r\nK: " + b"v" * 200 + b"\r\n\r\n")
    with pytest.raises(AmiProtocolError):
        parser.next_message()


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_message_at_limit_passes_even_when_its_end_is_late(cut: int) -> None:
    body = b"Event: X\r\nK: " + b"v" * 100
    data = body + b"\r\n\r\n"
    parser = AmiParser(max_message_bytes=len(body), expect_banner=False)
    parser.receive_data(data[: len(data) - cut])
    if cut:
        assert parser.next_message() is NEED_DATA
        parser.receive_data(data[len(data) - cut :])
    assert isinstance(parser.next_message(), Event)
    over = AmiParser(max_message_bytes=len(body) - 1, expect_banner=False)
    over.receive_data(data)
    with pytest.raises(AmiProtocolError):
        over.next_message()


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"Asterisk Call Manager/11.0.0\r\n"]),
    chunks=st.lists(st.binary(max_size=200), max_size=12),
)
def test_arbitrary_bytes_only_raise_protocol_error(prefix: bytes, chunks: list[bytes]) -> None:
    parser = AmiParser(max_message_bytes=256)
    try:
        for chunk in [prefix, *chunks]:
            if chunk:
                parser.receive_data(chunk)
            while parser.next_message() is not NEED_DATA:
                pass
        parser.receive_data(b"")
        assert isinstance(parser.next_message(), Closed)
    except AmiProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12),
            # AMI has no quoting: a value's own leading space cannot be told from the
            # separator's, so generated values don't start with one.
            st.text(
                st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=30
            ).map(str.lstrip),
        ),
        max_size=8,
    )
)
def test_format_then_parse_round_trips(pairs: list[tuple[str, str]]) -> None:
    fields = {key: value for key, value in pairs if key.lower() not in ("action", "actionid")}
    data = format_action("UserEvent", "id-1", fields)
    parser = AmiParser(expect_banner=False)
    # An action has an event's shape except for its first key: rename it and parse, which
    # checks framing, line ends and UTF-8 end to end.
    parser.receive_data(data.replace(b"Action:", b"Event:", 1))
    event = parser.next_message()
    assert isinstance(event, Event)
    assert event.name == "UserEvent"
    assert event.get("ActionID") == "id-1"
    assert event.fields[2:] == tuple(fields.items())
    assert parser.next_message() is NEED_DATA


def test_format_action_repeats_sequences_and_ends_with_blank_line() -> None:
    data = format_action(
        "Originate",
        "a1",
        {"Channel": "Local/caller@test-callers", "Variable": ["A=1", "B=2"]},
    )
    assert data == (
        b"Action: Originate\r\nActionID: a1\r\nChannel: Local/caller@test-callers\r\n"
        b"Variable: A=1\r\nVariable: B=2\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("name", "action_id", "fields"),
    [
        ("Originate", "a1", {"Channel": "x\r\nAction: Hangup"}),
        ("Originate", "a1", {"Variable": ["A=1", "B=2\nC"]}),
        ("Originate", "a1", {"Bad\nKey": "v"}),
        ("Originate", "a1", {"Bad: Key": "v"}),
        ("Originate", "a1", {"": "v"}),
        ("Originate", "a1", {"ActionID": "other"}),
        ("Ping\r\nAction: Hangup", "a1", {}),
        ("Ping", "a1\r", {}),
        ("Ping", "", {}),
        ("UserEvent", "a1", {"Name": "lone \ud800 surrogate"}),
    ],
)
def test_format_action_refuses_injection(
    name: str, action_id: str, fields: dict[str, str | list[str]]
) -> None:
    with pytest.raises(AmiFormatError):
        format_action(name, action_id, fields)
    assert issubclass(AmiFormatError, ValueError)
