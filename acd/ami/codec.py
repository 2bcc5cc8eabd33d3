"""Sans-IO codec for the Asterisk Manager Interface (AMI): bytes in, typed messages out.

`AmiParser` turns the byte stream read from an AMI socket into `Banner`, `Response`,
`Event` and `Closed` values; `format_action` turns an action into the bytes to send.
Theory of operation: the stream is a banner line ("Asterisk Call Manager/11.0.0") then
messages of "Key: value" lines, each message ended by a blank line. Messages are cut on
the blank line while still bytes, and only then decoded (UTF-8, errors="replace"), so a
character split across two reads survives. End of input is said with `receive_data(b"")`
and yields `Closed`; a message cut short by EOF gives `Closed(incomplete=True)` rather than
an error, because for the adapter it is just a lost connection.

This module must not do I/O, import asyncio, or import anything else of ours; the only
exception the parser raises, for any input, is `AmiProtocolError`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final, overload

__all__ = [
    "NEED_DATA",
    "AmiError",
    "AmiFormatError",
    "AmiParser",
    "AmiProtocolError",
    "Banner",
    "Closed",
    "Event",
    "Fields",
    "Message",
    "NeedData",
    "Pairs",
    "ParserOutput",
    "Response",
    "format_action",
]

_BANNER_PREFIX: Final = "Asterisk Call Manager/"
# Asterisk < 14 answered `Command` with "Response: Follows" and raw output lines ended by
# this marker; Asterisk 22 sends "Output:" lines instead. Kept so an old PBX still parses.
_END_COMMAND: Final = "--END COMMAND--"
_ALL_BUT_COLON_LF: Final = bytes(b for b in range(256) if b not in b":\n")
_ASCII_WHITESPACE: Final = " \t\n\r\x0b\x0c"  # what bytes.strip() strips


class AmiError(Exception):
    """Base of every error raised by Firstline's AMI link."""


class AmiProtocolError(AmiError):
    """The peer sent something that is not AMI (or exceeds our limits)."""


class AmiFormatError(AmiError, ValueError):
    """An action cannot be encoded safely (CR/LF injection, bad key)."""


class NeedData(enum.Enum):
    """Sentinel type: the parser needs more bytes before it can return a message."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA

Pairs = tuple[tuple[str, str], ...]


class Fields(Sequence[tuple[str, str]]):
    """The ordered (key, value) pairs of one message, immutable, compares equal to a tuple.

    The parser validates every line eagerly but hands the lines over unsplit: most events
    are routed on their name alone and never read a field, so the split into pairs is
    done on first use (and then kept).
    """

    __slots__ = ("_first", "_pairs", "_source")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: Pairs | None = tuple(pairs)
        # the message's text or lines, each line already known to hold a ':'
        self._source: str | list[str] | None = None
        # lower-cased name -> first value, made at the first lookup: an event that is read
        # at all is read a dozen times (every field name compared each time, before)
        self._first: dict[str, str] | None = None

    def first(self, lowered: str) -> str | None:
        """The value of the first field whose name, lower-cased, is `lowered`."""
        first = self._first
        if first is None:
            first = {}
            for name, value in self.pairs():
                first.setdefault(name.lower(), value)
            self._first = first
        return first.get(lowered)

    def pairs(self) -> Pairs:
        """The pairs as a plain tuple."""
        pairs = self._pairs
        if pairs is None:
            source = self._source
            assert source is not None
            pairs = _split_text(source) if isinstance(source, str) else _split_lines(source)
            self._pairs = pairs
            self._source = None
        return pairs

    def __len__(self) -> int:
        source = self._source
        if source is None:
            return len(self.pairs())
        return source.count("\r\n") + 1 if isinstance(source, str) else len(source)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Pairs: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Pairs:
        return self.pairs()[index]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Fields):
            return self.pairs() == other.pairs()
        if isinstance(other, tuple):
            return self.pairs() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.pairs())

    def __repr__(self) -> str:
        return f"Fields({self.pairs()!r})"


class _FieldAccess:
    """Case-insensitive read access over an ordered sequence of (key, value) pairs."""

    __slots__ = ()
    fields: Fields | Pairs

    def get(self, key: str, default: str | None = None) -> str | None:
        """Value of the first field named `key` (any case), else `default`."""
        fields = self.fields
        if isinstance(fields, Fields):
            value = fields.first(key.lower())
            return default if value is None else value
        wanted = key.lower()
        for name, value in fields:
            if name.lower() == wanted:
                return value
        return default

    def get_all(self, key: str) -> tuple[str, ...]:
        """Values of every field named `key` (any case), in order of arrival."""
        wanted = key.lower()
        return tuple(value for name, value in self.fields if name.lower() == wanted)


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line; `version` is the AMI protocol version (e.g. "11.0.0")."""

    version: str


@dataclass(frozen=True, slots=True)
class Event(_FieldAccess):
    """An event; `fields` holds every line in order, including "Event" itself."""

    name: str
    fields: Fields | Pairs

    @property
    def action_id(self) -> str | None:
        """ActionID when the event belongs to an action's event list (or OriginateResponse)."""
        return self.get("ActionID")


@dataclass(frozen=True, slots=True)
class Response(_FieldAccess):
    """A response to an action; `status` is "Success", "Error", "Follows" or "Goodbye"."""

    status: str
    action_id: str | None
    message: str | None
    fields: Fields | Pairs


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the stream; `incomplete` if it stopped in the middle of a message."""

    incomplete: bool = False


Message = Response | Event
ParserOutput = Banner | Response | Event | Closed | NeedData


def _parse_lines(lines: list[str]) -> Pairs:
    fields: list[tuple[str, str]] = []
    append = fields.append
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            raise AmiProtocolError(f"line without ':' in AMI message: {line[:80]!r}")
        # Asterisk writes "Key: value"; one space belongs to the separator, the rest to the value.
        append((key, value[1:] if value[:1] == " " else value))
    return tuple(fields)


def _parse_follows(lines: list[str]) -> Pairs:
    """Legacy "Response: Follows": headers, then raw output lines up to --END COMMAND--."""
    fields: list[tuple[str, str]] = []
    in_output = False
    for line in lines:
        if line.endswith(_END_COMMAND):
            line = line[: -len(_END_COMMAND)]  # noqa: PLW2901 - the marker ends the last line
            if line:
                fields.append(("Output", line))
            break
        key, sep, value = line.partition(":")
        if in_output or not sep or " " in key:
            in_output = True
            fields.append(("Output", line))
        else:
            fields.append((key, value[1:] if value[:1] == " " else value))
    return tuple(fields)


def _response(status: str, fields: Fields | Pairs) -> Response:
    action_id = message = None
    for name, value in fields:
        low = name.lower()
        if low == "actionid" and action_id is None:
            action_id = value
        elif low == "message" and message is None:
            message = value
    return Response(status, action_id, message, fields)


def _split_text(text: str) -> Pairs:
    lines = text.count("\r\n") + 1
    if text.count(":") == lines and text.count(": ") == lines:
        # Each line (all known to hold a ':') has exactly one colon, followed by a space:
        # one replace and one split give key, value, key, value... all in C.
        tokens = iter(text.replace(": ", "\r\n").split("\r\n"))
        return tuple(zip(tokens, tokens, strict=True))
    return _split_lines(text.split("\r\n"))


def _split_lines(lines: list[str]) -> Pairs:
    # In C: partition every line on ": " at once. Exact only when every line has ": " and
    # no key holds ':'; otherwise the line-by-line split decides.
    keys, seps, values = zip(*map(str.partition, lines, repeat(": ")), strict=True)
    if "" not in seps and ":" not in "".join(keys):
        return tuple(zip(keys, values, strict=True))
    return _parse_lines(lines)


def _lazy_fields(source: str | list[str]) -> Fields:
    fields = _new_fields(Fields)
    fields._pairs = None
    fields._source = source
    fields._first = None
    return fields


_new_fields = Fields.__new__


def _build(text: str, *, checked: bool = False) -> Response | Event:
    """One message from its text (no trailing line end). `checked`: the caller already
    made sure every line ends in CRLF and holds a ':'."""
    fields: Fields | Pairs
    if checked and not text.startswith("Response: Follows"):
        end = text.find("\r\n")
        first = text if end < 0 else text[:end]
        fields = _lazy_fields(text)
    else:
        lines = text.split("\r\n")
        first = lines[0]
        if len(lines) != text.count("\n") + 1 or first.startswith("Response: Follows"):
            lines = [line.removesuffix("\r") for line in text.split("\n")]  # bare "\n" ends
            first = lines[0]
            legacy = first.startswith("Response: Follows")
            fields = _parse_follows(lines) if legacy else _parse_lines(lines)
        elif min(map(str.find, lines, repeat(":"))) < 0:
            _parse_lines(lines)  # raises, naming the line
            raise AssertionError("unreachable")  # pragma: no cover
        else:
            fields = _lazy_fields(lines)
    key, _, value = first.partition(":")
    if value[:1] == " ":
        value = value[1:]
    if key == "Event":
        return Event(value, fields)
    if key == "Response":
        return _response(value, fields)
    kind = key.lower()
    if kind == "event":
        return Event(value, fields)
    if kind == "response":
        return _response(value, fields)
    raise AmiProtocolError(f"AMI message is neither Event nor Response: {first[:80]!r}")


class AmiParser:
    """Incremental AMI stream parser (one per connection).

    Feed bytes with `receive_data` (b"" = EOF) and drain with `next_message` until it
    returns `NEED_DATA` (or `Closed`). `max_message_bytes` bounds the bytes held for one
    message; a longer message or banner raises `AmiProtocolError`, as does any further use
    of a parser that has raised once.
    """

    def __init__(self, *, max_message_bytes: int = 256 * 1024, expect_banner: bool = True) -> None:
        if max_message_bytes < 64:
            raise ValueError("max_message_bytes must be at least 64")
        self._limit = max_message_bytes
        self._buffer = bytearray()
        self._pos = 0  # start of the unparsed bytes; compacted lazily
        self._scan = 0  # bytes before this were already searched for a message end
        self._need_banner = expect_banner
        self._eof = False
        self._failed: AmiProtocolError | None = None
        self._ready: deque[Response | Event] = deque()
        self._ready_error: AmiProtocolError | None = None
        self._single_until = 0  # bytes before this are parsed one by one (odd framing)

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket; b"" means the peer closed the connection."""
        if self._failed is not None:
            raise self._failed
        if self._eof:
            if data:
                raise self._fail("data received after end of stream")
            return
        if not data:
            self._eof = True
            return
        buffer = self._buffer
        if self._pos > 65536 and self._pos * 2 > len(buffer):
            del buffer[: self._pos]
            self._scan -= self._pos
            self._single_until -= self._pos
            self._pos = 0
        buffer += data

    def next_message(self) -> ParserOutput:
        """The next complete message, `NEED_DATA`, or `Closed` once EOF was received."""
        if self._ready:
            return self._ready.popleft()
        if self._ready_error is not None and self._failed is None:
            raise self._fail(self._ready_error)
        if self._failed is not None:
            raise self._failed
        if self._need_banner:
            return self._next_banner()
        if self._next_batch():
            return self._ready.popleft()
        return self._next_single()

    def _next_single(self) -> ParserOutput:
        buffer = self._buffer
        while True:
            pos = self._pos
            scan = max(pos, self._scan)
            # A message ends at an empty line: "\n" then "\r\n" (or a bare "\n").
            crlf = buffer.find(b"\n\r\n", scan)
            bare = buffer.find(b"\n\n", scan, len(buffer) if crlf < 0 else crlf + 1)
            if bare >= 0:
                end, after = bare, bare + 2
            elif crlf >= 0:
                end, after = crlf, crlf + 3
            else:
                self._scan = max(pos, len(buffer) - 2)
                return self._incomplete(len(buffer) - pos)
            self._pos = self._scan = after
            if end > pos and buffer[end - 1] == 13:  # the "\r" of the last line's CRLF
                end -= 1
            if end - pos > self._limit:
                raise self._fail(f"AMI message larger than {self._limit} bytes")
            raw = buffer[pos:end]
            if not raw or raw[:1].isspace():
                raw = raw.lstrip()  # stray blank lines between messages are skipped
                if not raw:
                    continue
            try:
                return _build(raw.decode("utf-8", "replace"))
            except AmiProtocolError as exc:
                raise self._fail(exc) from None

    def _next_batch(self) -> bool:
        """Parse every complete message in the buffer at once (one find, decode and split),
        when they are all plainly CRLF-framed and within the limit; else leave them to the
        one-by-one path, which also reports errors at the right message."""
        buffer = self._buffer
        pos = self._pos
        if pos < self._single_until:
            return False
        last = buffer.rfind(b"\r\n\r\n", max(pos, self._scan - 1))
        if last < 0:
            return False
        region = buffer[pos : last + 4]
        ends = region.count(b"\r\n\r\n")
        if (
            region.count(b"\n") != region.count(b"\r\n")  # bare "\n" line ends
            or region.count(b"\n\r\n") != ends  # runs of blank lines
            # Every line holds a ':' iff, once all but ':' and LF are deleted, the only
            # empty lines left are those that end messages (and the one after the last).
            or bytes(region).translate(None, _ALL_BUT_COLON_LF).split(b"\n").count(b"") != ends + 1
            or (
                len(region) > self._limit and max(map(len, region.split(b"\r\n\r\n"))) > self._limit
            )
        ):
            # the one-by-one path takes this region, and names the bad line if there is one
            self._single_until = self._pos + len(region)
            return False
        texts = region.decode("utf-8", "replace").split("\r\n\r\n")
        ready = self._ready
        try:
            for text in texts:
                if text[:1].isspace():
                    # As the one-by-one path does on bytes: ASCII whitespace only, not
                    # str's wider idea of it ("\x1f", NBSP...), or the two paths disagree.
                    text = text.lstrip(_ASCII_WHITESPACE)  # noqa: PLW2901
                if text:
                    ready.append(_build(text, checked=True))
        except AmiProtocolError as exc:
            self._ready_error = exc  # raised once the messages before it are taken
        self._pos = self._scan = last + 4
        if not ready:
            if self._ready_error is not None:
                raise self._fail(self._ready_error)
            return False
        return True

    def _incomplete(self, pending: int) -> NeedData | Closed:
        if pending > self._limit + 4:  # + the blank line that may still be on its way
            raise self._fail(f"AMI message larger than {self._limit} bytes")
        if self._eof:
            return Closed(incomplete=bool(self._buffer[self._pos :].strip()))
        return NEED_DATA

    def _next_banner(self) -> Banner | NeedData | Closed:
        buffer = self._buffer
        end = buffer.find(b"\n", self._pos)
        if end < 0:
            return self._incomplete(len(buffer) - self._pos)
        # The limit holds for a banner that came whole as for one that came in pieces.
        if end - self._pos - (buffer[end - 1 : end] == b"\r") > self._limit:
            raise self._fail(f"AMI banner larger than {self._limit} bytes")
        line = buffer[self._pos : end].decode("utf-8", "replace").rstrip("\r")
        if not line.startswith(_BANNER_PREFIX):
            raise self._fail(f"not an AMI banner: {line[:80]!r}")
        self._pos = end + 1
        self._need_banner = False
        return Banner(line[len(_BANNER_PREFIX) :].strip())

    def _fail(self, reason: str | AmiProtocolError) -> AmiProtocolError:
        """Fail for good, letting go of what is held: a peer that broke the protocol or a
        limit must not keep it taken."""
        self._failed = reason if isinstance(reason, AmiProtocolError) else AmiProtocolError(reason)
        self._buffer = bytearray()
        self._pos = self._scan = 0
        return self._failed


def _check(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise AmiFormatError(f"CR/LF not allowed in AMI {what}: {text[:80]!r}")
    return text


def format_action(
    name: str, action_id: str, fields: Mapping[str, str | Sequence[str]] | None = None
) -> bytes:
    """Encode one action; a sequence value repeats its key (e.g. several `Variable:` lines).

    Raises `AmiFormatError` for CR/LF anywhere (header injection), for a key that is
    empty or holds ':' or spaces, and for "Action"/"ActionID" given again in `fields`.
    """
    if not name or not action_id:
        raise AmiFormatError("action name and ActionID must not be empty")
    lines = [f"Action: {_check(name, 'action name')}", f"ActionID: {_check(action_id, 'ActionID')}"]
    for key, value in (fields or {}).items():
        _check(key, "key")
        if not key or ":" in key or " " in key:
            raise AmiFormatError(f"invalid AMI key: {key!r}")
        if key.lower() in ("action", "actionid"):
            raise AmiFormatError(f"{key} is set by format_action itself")
        values = (value,) if isinstance(value, str) else value
        for item in values:
            if not isinstance(item, str):
                raise AmiFormatError(f"AMI value for {key} must be str, not {type(item).__name__}")
            lines.append(f"{key}: {_check(item, 'value')}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
        raise AmiFormatError(f"AMI action {name} is not encodable as UTF-8") from exc
