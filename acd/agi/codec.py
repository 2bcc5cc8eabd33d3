"""FastAGI protocol core: bytes from Asterisk in, typed frozen events out (sans-IO, like h11).

One `AgiConnection` codes a whole FastAGI session: first the request header block Asterisk
sends on connect (``agi_*: value`` lines ended by an empty line), then the replies to our
commands (``200 result=...``, ``510 ...``, the multi-line ``520-...``/``520 ...`` usage text)
and the unsolicited ``HANGUP`` line.  `format_command` quotes a command the way res_agi.c's
``parse_args`` splits it.

It must not do I/O, read the clock, import asyncio or anything else of ours.  End of input is
said explicitly (``receive_data(b"")``) and comes out as a `Closed` event.  For any input
bytes the only exception raised is `AgiProtocolError`; limits are constructor arguments.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NoReturn
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "NEED_DATA",
    "AgiConnection",
    "AgiEvent",
    "AgiHangupNotice",
    "AgiProtocolError",
    "AgiRequest",
    "AgiResult",
    "AgiUsageError",
    "Closed",
    "ConnectionState",
    "NeedData",
    "format_command",
]

# res_agi.c reads one command into a 2048-byte buffer and splits it into at most 128 words
# (MAX_ARGS, the last slot is the terminating NULL): longer commands are silently cut there,
# so we refuse them instead of letting Asterisk run a truncated command.
_ASTERISK_MAX_COMMAND_BYTES = 2047
_ASTERISK_MAX_WORDS = 127
_EXTRAS_RE = re.compile(r"(?: [A-Za-z0-9_]+=\S*)+")
_NEEDS_QUOTES_RE = re.compile(r'[ \t"\\]')
_UNSENDABLE_RE = re.compile("[\r\n\0]")


class AgiProtocolError(Exception):
    """The peer broke the protocol or a limit; the connection cannot go on."""


class NeedData(enum.Enum):
    """Type of the `NEED_DATA` sentinel: feed more bytes before asking again."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


class ConnectionState(enum.Enum):
    """Where the session is: reading the request header, then replies, then done."""

    HEADER = "HEADER"
    COMMANDS = "COMMANDS"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


# The states as plain globals: on CPython 3.11 ``ConnectionState.X`` goes through the enum
# metaclass and costs ten times a global lookup, and the states are compared several times
# per event.
_HEADER: Final = ConnectionState.HEADER
_COMMANDS: Final = ConnectionState.COMMANDS
_CLOSED: Final = ConnectionState.CLOSED
_ERROR: Final = ConnectionState.ERROR


def _frozen_map(items: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


_EMPTY_MAP: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The request header block: what Asterisk asked for and about which channel.

    ``script`` is the path part of ``agi_network_script`` without leading ``/``
    (``route`` for ``agi://host/route?x=1``), ``query`` its query string (last value wins),
    ``args`` the ``agi_arg_N`` values in order.
    """

    env: Mapping[str, str]
    script: str
    query: Mapping[str, str]
    args: tuple[str, ...]

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")


@dataclass(frozen=True, slots=True)
class AgiResult:
    """One reply line to a command: ``200 result=1 (data) endpos=123``, ``510 Invalid ...``.

    ``result`` is the text after ``result=`` ("" when absent), ``data`` the parenthesised
    part (None when absent), ``extras`` the trailing ``key=value`` pairs and ``text`` the
    whole line after the code.
    """

    code: int
    result: str
    data: str | None = None
    extras: Mapping[str, str] = field(default_factory=lambda: _EMPTY_MAP)
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        """``result=`` as an integer, or None when it is not one."""
        try:
            return int(self.result)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class AgiUsageError:
    """A 520 reply: the command's syntax was wrong; ``text`` is Asterisk's usage text."""

    text: str
    code: int = 520


@dataclass(frozen=True, slots=True)
class AgiHangupNotice:
    """The unsolicited ``HANGUP`` line: the channel hung up (AGISIGHUP is on)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the connection; ``trailing_bytes`` were left unparsed."""

    trailing_bytes: int = 0


AgiEvent = AgiRequest | AgiResult | AgiUsageError | AgiHangupNotice | Closed

# The replies most commands get, made once: results are frozen, so handing out the same one
# is the same as parsing the line again (and a frozen dataclass is slow to build).  0, 1 and
# -1 answer SET VARIABLE, ANSWER, EXEC ...; a key pressed during WAIT FOR DIGIT, STREAM FILE
# or SAY comes as its character code, and a one-key GET DATA menu choice as the digit.
_PLAIN_200_REPLIES: Mapping[str, AgiResult] = MappingProxyType(
    {
        f"result={r}": AgiResult(code=200, result=r, text=f"result={r}")
        for r in map(str, range(-1, 256))
    }
)


class AgiConnection:
    """Sans-IO codec for one FastAGI session (request header, then command replies).

    Feed bytes with `receive_data` (``b""`` for end of input) and drain `next_event` until it
    returns `NEED_DATA` or `Closed`.  Replies are parsed in the order they arrive; matching
    them to commands is the adapter's business, since Asterisk answers strictly in order.

    Limits: the request header holds at most ``max_header_bytes`` and ``max_headers`` lines;
    one reply, a multi-line 520 usage text included, at most ``max_line_bytes`` (and
    ``max_usage_lines`` lines).  After a drain that ended in `NEED_DATA` the codec holds no
    more than the applicable limit plus the last read.  Breaking one raises
    `AgiProtocolError`, which frees what was held; from then on every call raises it.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = 16 * 1024,
        max_headers: int = 256,
        max_line_bytes: int = 64 * 1024,
        max_usage_lines: int = 512,
    ) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_line_bytes = max_line_bytes
        self._max_usage_lines = max_usage_lines
        self._buf = bytearray()
        self._pos = 0  # _buf[:_pos] is parsed; it is dropped when more data comes
        self._scan_from = 0  # _buf[_pos:_scan_from] is known to hold no newline
        self._eof = False
        self._state = _HEADER
        self._header_lines: list[bytes] = []
        self._header_bytes = 0
        self._usage_lines: list[str] | None = None
        self._reply_bytes = 0  # of the 520 usage block being read, line ends included

    @property
    def state(self) -> ConnectionState:
        return self._state

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer (copied: ``data`` may be reused once this returns);
        ``b""`` says the peer closed its side."""
        if self._state is _ERROR:
            raise AgiProtocolError("connection already failed")
        if self._eof:
            if data:
                self._fail("data received after end of input")
            return
        if data:
            if self._pos:
                # Dropping the parsed bytes here, not after each line, keeps a burst of
                # lines (the request header) from being moved once per line.  Usually all
                # of them were parsed (one reply per read): clear() is cheaper then.
                if self._pos == len(self._buf):
                    self._buf.clear()
                    self._scan_from = 0
                else:
                    del self._buf[: self._pos]
                    self._scan_from -= self._pos
                self._pos = 0
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> AgiEvent | NeedData:
        """The next complete event, `NEED_DATA`, or `Closed` once input has ended."""
        if self._state is _COMMANDS and self._usage_lines is None:
            # What nearly every call during a session comes to, kept short: nothing new
            # to parse, or one whole "200 ..." reply.
            if self._scan_from == len(self._buf):
                if not self._eof:
                    return NEED_DATA
            elif (reply := self._whole_200_reply()) is not None:
                return reply
        return self._next_event_line_by_line()

    def _next_event_line_by_line(self) -> AgiEvent | NeedData:
        if self._state is _ERROR:
            raise AgiProtocolError("connection already failed")
        if self._state is _CLOSED:
            return Closed()
        if self._scan_from == len(self._buf) and not self._eof:
            # Every byte left was already searched for a newline (and checked against the
            # limits): no event can be complete.
            return NEED_DATA
        while True:
            if self._state is _HEADER and not self._header_lines:
                request = self._whole_header()
                if request is not None:
                    return request
            line = self._next_line()
            if line is None:
                if self._eof:
                    self._state = _CLOSED
                    trailing = len(self._buf) - self._pos + self._header_bytes
                    return Closed(trailing_bytes=trailing)
                return NEED_DATA
            event = (
                self._on_header_line(line) if self._state is _HEADER else self._on_reply_line(line)
            )
            if event is not None:
                return event

    # -- internals -------------------------------------------------------------------------

    def _fail(self, why: str) -> NoReturn:
        self._state = _ERROR
        # Nothing held is of use any more: a peer that broke a limit must not keep it taken.
        self._buf = bytearray()
        self._pos = self._scan_from = 0
        self._header_lines = []
        self._usage_lines = None
        raise AgiProtocolError(why)

    def _next_line(self) -> bytes | None:
        # Split on bytes before decoding so a UTF-8 sequence cut between reads survives.
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", self._scan_from)
        header = self._state is _HEADER
        # A usage text is one reply however many lines it has: its lines share the limit.
        limit = (
            self._max_header_bytes - self._header_bytes
            if header
            else self._max_line_bytes - self._reply_bytes
        )
        if (len(buf) if end < 0 else end + 1) - pos > limit:
            if header:
                self._fail("request header too big")
            self._fail("520 usage text too long" if self._reply_bytes else "reply line too long")
        if end < 0:
            self._scan_from = len(buf)
            return None
        line = bytes(buf[pos:end])
        self._pos = self._scan_from = end + 1
        if header:
            self._header_bytes += end + 1 - pos
        elif self._usage_lines is not None or line.startswith(b"520-"):
            self._reply_bytes += end + 1 - pos
        return line.removesuffix(b"\r")

    def _whole_200_reply(self) -> AgiResult | None:
        # Nearly every reply: one buffered "200 ..." line within the limit, parsed in one
        # step.  Anything else goes line by line; both ways give the same result.
        buf, pos = self._buf, self._pos
        if not buf.startswith(b"200 ", pos):
            return None
        end = buf.find(b"\n", self._scan_from)
        if end < 0 or end + 1 - pos > self._max_line_bytes:
            return None
        self._pos = self._scan_from = end + 1
        if buf[end - 1] == 0x0D:  # a CR before the LF is not part of the reply
            end -= 1
        rest = buf[pos + 4 : end].decode("utf-8", "replace")
        return _PLAIN_200_REPLIES.get(rest) or _parse_reply(200, rest)

    def _whole_header(self) -> AgiRequest | None:
        # The usual case in one step: the whole header block is buffered, LF-ended, with no
        # blank line before it.  Anything else (or over a limit) goes line by line, which
        # also raises the errors; both ways give the same request.
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n\n", pos)
        if end <= pos or end + 2 - pos > self._max_header_bytes - self._header_bytes:
            return None
        block = bytes(buf[pos:end])
        if block[0] == 0x0A or b"\r" in block or block.count(b"\n") >= self._max_headers:
            return None
        self._pos = self._scan_from = end + 2
        request = self._build_request(block)
        self._state = _COMMANDS
        self._header_bytes = 0
        return request

    def _on_header_line(self, line: bytes) -> AgiRequest | None:
        if line:
            if len(self._header_lines) >= self._max_headers:
                self._fail("too many request header lines")
            self._header_lines.append(line)
            return None
        if not self._header_lines:
            # Blank lines before the header are noise, not an empty request.
            return None
        request = self._build_request(b"\n".join(self._header_lines))
        self._state = _COMMANDS
        self._header_lines = []
        self._header_bytes = 0
        return request

    def _build_request(self, block: bytes) -> AgiRequest:
        # One decode for the block: LF cannot be part of a UTF-8 sequence, so this is the
        # same as decoding line by line.
        env: dict[str, str] = {}
        for line in block.decode("utf-8", "replace").split("\n"):
            key, sep, value = line.partition(":")
            key = key.strip()
            if not sep or not key or " " in key:
                self._fail(f"malformed request header line {line[:80]!r}")
            env[key] = value.removeprefix(" ")
        if "agi_network_script" not in env and "agi_request" not in env:
            self._fail("not a FastAGI request: no agi_network_script or agi_request")
        if "agi_network_script" in env:
            script_ref = env["agi_network_script"]
        else:
            try:
                parts = urlsplit(env["agi_request"])
            except ValueError as exc:  # e.g. "agi://[x/route": a bracketed host that is none
                self._fail(f"malformed agi_request {env['agi_request'][:80]!r}: {exc}")
            script_ref = parts.path + (f"?{parts.query}" if parts.query else "")
        path, _, query = script_ref.partition("?")
        args: list[str] = []
        while (arg := env.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(arg)
        return AgiRequest(
            env=MappingProxyType(env),
            script=path.strip("/"),
            query=_frozen_map(dict(parse_qsl(query, keep_blank_values=True)))
            if query
            else _EMPTY_MAP,
            args=tuple(args),
        )

    def _on_reply_line(self, line: bytes) -> AgiEvent | None:
        text = line.decode("utf-8", "replace")
        if self._usage_lines is not None:
            return self._on_usage_line(self._usage_lines, text)
        if text == "HANGUP":
            return AgiHangupNotice()
        if not text:
            return None
        if text.startswith("520-"):
            self._usage_lines = [text[4:]]
            return None
        if text.startswith("200 "):  # nearly every reply
            code, rest = 200, text[4:]
        else:
            code_text, _, rest = text.partition(" ")
            if len(code_text) != 3 or not code_text.isdigit() or not code_text.isascii():
                self._fail(f"malformed reply line {line[:80]!r}")
            code = int(code_text)
            if code == 520:
                return AgiUsageError(text=rest)
        return _parse_reply(code, rest)

    def _on_usage_line(self, lines: list[str], text: str) -> AgiUsageError | None:
        # "520-" opened a usage block; Asterisk ends it with "520 End of proper usage.".
        if text.startswith("520 "):
            lines.append(text[4:])
            self._usage_lines = None
            self._reply_bytes = 0
            return AgiUsageError(text="\n".join(lines))
        if len(lines) >= self._max_usage_lines:
            self._fail("520 usage text too long")
        lines.append(text)
        return None


def _parse_reply(code: int, rest: str) -> AgiResult:
    # One return per reply shape, so that each builds its result in one step.
    if not rest.startswith("result="):
        return AgiResult(code, "", None, _EMPTY_MAP, rest)
    value, _, tail = rest[len("result=") :].partition(" ")
    if not tail:
        return AgiResult(code, value, None, _EMPTY_MAP, rest)
    if not tail.startswith("("):
        return AgiResult(code, value, None, _parse_extras(tail), rest)
    if tail.endswith(")"):
        # GET VARIABLE puts the value last: everything up to the final ')' is data,
        # even when the value itself holds ") key=value".
        return AgiResult(code, value, tail[1:-1], _EMPTY_MAP, rest)
    close = tail.find(")")
    while close >= 0 and not _EXTRAS_RE.fullmatch(tail[close + 1 :]):
        close = tail.find(")", close + 1)
    if close < 0:
        return AgiResult(code, value, tail[1:], _EMPTY_MAP, rest)
    return AgiResult(code, value, tail[1:close], _parse_extras(tail[close + 1 :]), rest)


def _parse_extras(text: str) -> Mapping[str, str]:
    extras: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key:
            extras[key] = value
    return MappingProxyType(extras) if extras else _EMPTY_MAP


def _quote_word(word: str) -> str:
    # parse_args ends a word at an unquoted space or tab and treats '"' and '\\' as
    # syntax; other words go bare so that commands stay readable in Asterisk's debug log.
    if word and not _NEEDS_QUOTES_RE.search(word):
        return word
    # Inside double quotes a backslash makes the next character literal, so only '\\'
    # and '"' need one.
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(*words: str) -> bytes:
    """One AGI command line, words quoted where needed so res_agi.c splits it back exactly.

    Raises `AgiProtocolError` for a word holding CR, LF or NUL (Asterisk reads commands
    line by line and as C strings, so no escaping can carry them), for more words than
    Asterisk accepts, or for a line longer than its command buffer.
    """
    if not words:
        raise AgiProtocolError("empty AGI command")
    if len(words) > _ASTERISK_MAX_WORDS:
        raise AgiProtocolError(f"AGI command has {len(words)} words, Asterisk takes 127")
    text = " ".join(words)
    # The usual command needs no quoting: no word is empty or holds a space, tab, quote,
    # backslash (or CR, LF, NUL), which a look at the joined line tells.  isprintable() is
    # False for tab, CR, LF and NUL (and other control characters, which then go the
    # careful way below and come out unquoted all the same).
    if (
        not all(words)
        or text.count(" ") >= len(words)
        or not text.isprintable()
        or '"' in text
        or "\\" in text
    ):
        text = " ".join([_quote_word(w) for w in words])
        # Quoting adds no CR, LF or NUL and removes none: one check covers every word.
        if _UNSENDABLE_RE.search(text):
            raise AgiProtocolError("AGI command words cannot hold CR, LF or NUL")
    line = text.encode("utf-8")
    if len(line) > _ASTERISK_MAX_COMMAND_BYTES - 1:
        raise AgiProtocolError(f"AGI command of {len(line)} bytes exceeds Asterisk's buffer")
    return line + b"\n"
