"""Firstline's asyncio FastAGI server: accepts Asterisk's AGI() connections, runs handlers.

Contract with the dialplan (read this before writing a handler):

* A handler is ``async def handler(session: AgiSession) -> None``, chosen by the script
  name of ``AGI(agi://host:port/SCRIPT?query,args)``.  Only scripts in ``handlers`` run.
* Success is what the handler says it is: it must set a channel variable on success
  (``await session.set_variable("FIRSTLINE_ROUTE", ...)``) and the dialplan must check that
  variable, not only AGISTATUS.  Asterisk 22 reports AGISTATUS=SUCCESS when the server
  simply closes the connection, whatever happened on our side (and FAILURE for the rest of
  the session once a command failed, e.g. STREAM FILE of a missing prompt; both recorded
  in tests/transcripts/agi/).
* If a handler raises anything but `AgiHangup`, the traceback is logged and the connection
  closed: the dialplan goes on after AGI() and takes its fallback (the variable is unset).
* An unknown script, a malformed or oversized request header, silence for
  ``header_timeout`` seconds, or more than ``max_sessions`` connections: we log, send
  ``FAILURE`` when a request was read (res_agi.c then sets AGISTATUS=FAILURE) and close.
* `AgiHangup` means the caller is gone (``HANGUP`` line, a 511 reply or end of stream);
  the handler may let it propagate (counted as ``hangup``, not an error).  After HANGUP
  Asterisk keeps the channel's thread waiting until we close (seen: > 8 s, no limit), so a
  handler must not linger once it has seen `AgiHangup`.

What this module must not do: parse the protocol (that is `acd.agi.codec`), make routing
decisions, or keep module-level state.  Every await on the network has a timeout.  There is
no reader task: each connection's protocol object feeds the codec as bytes arrive (so a
HANGUP line is seen even while the handler is between commands) and wakes the handler only
when an event is there, which keeps a command's round trip to one task wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn, cast

import structlog

from acd.agi.codec import (
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

__all__ = [
    "AgiCommandError",
    "AgiError",
    "AgiHangup",
    "AgiServer",
    "AgiSession",
    "AgiTimeout",
    "Handler",
    "RequestObserver",
]

Handler = Callable[["AgiSession"], Awaitable[None]]
RequestObserver = Callable[[str, str, float], None]

# Asterisk sends one reply per command, plus at most one HANGUP line: more events waiting
# than this means a peer flooding us, so the connection stops reading until they are taken.
_MAX_PENDING_EVENTS: Final = 16
# res_agi.c treats a command line starting with "failure" as the script's own failure
# and sets AGISTATUS=FAILURE: the one way a FastAGI server can say "not served".
_FAILURE_LINE: Final = b"FAILURE\n"
_CLOSE_TIMEOUT: Final = 2.0
# Reads go into one buffer per server and are copied into the codec at once.  asyncio's
# data_received path allocates a 256 KiB bytes object per recv and shrinks it to the data:
# above glibc's mmap threshold that is an mmap, mremap and munmap per reply (strace of
# bench/agi_latency.py).  Asterisk's replies are lines: 64 KiB per read is plenty.
_READ_BUFFER_BYTES: Final = 64 * 1024


class AgiError(Exception):
    """Base of the errors an `AgiSession` raises to its handler."""


class AgiHangup(AgiError):  # noqa: N818 - names the event the handler sees, as the API says
    """The channel hung up (HANGUP line, 511 reply, or Asterisk closed the connection)."""


class AgiCommandError(AgiError):
    """Asterisk refused the command: 510 (unknown command) or 520 (wrong usage)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class AgiTimeout(AgiError, TimeoutError):  # noqa: N818 - pairs with AgiHangup
    """No reply within the command timeout; the session cannot be trusted any more."""


# What MSet passes through unchanged: it splits its data twice (pairs at ',', then each pair
# at '='), and each split drops quotes and backslashes again.
_MSET_NAME: Final = re.compile(r"_{0,2}[A-Za-z][A-Za-z0-9_]*")
_MSET_VALUE: Final = re.compile(r"[A-Za-z0-9_.:/&+@*#-]*")


def _escape_app_arg(arg: str) -> str:
    # Applications split their data with ast_app_separate_args, where ',' separates,
    # '"' and '(' ')' group, and a backslash makes the next character literal.
    return "".join("\\" + c if c in '\\,"()' else c for c in arg)


class _AgiStream(asyncio.BufferedProtocol):
    """One FastAGI connection: its transport, and the codec fed straight from it.

    Events are parsed as bytes arrive and handed out in order by `next_event` to the one
    task reading them (the connection's `_serve`, then its handler's commands); at most
    `_MAX_PENDING_EVENTS` are parsed ahead, the rest waits in the codec and the socket.
    A terminal event (`Closed`, or the exception that ended the connection) comes last.
    ``read_buffer`` may be shared with other connections of the loop: the transport fills it
    and hands it back in one step (`get_buffer`, then `buffer_updated`), and its bytes are
    copied into the codec before that returns.
    """

    def __init__(
        self,
        codec: AgiConnection,
        on_connect: Callable[[_AgiStream], None],
        read_buffer: memoryview,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._codec = codec
        self._on_connect = on_connect
        self._read_buffer = read_buffer
        # Handed in, not looked up per wait: get_running_loop() makes a getpid() syscall
        # in Python 3.11.
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.hangup_seen = False
        self._events: deque[AgiEvent | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0  # of the wait in progress, on the loop's clock
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False  # the terminal event is queued
        self._paused = False
        self._gone = False  # connection_lost has run
        self._lost: asyncio.Future[None] | None = None  # made only by a close that must wait

    # -- asyncio.BufferedProtocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._ended:
            return
        self._codec.receive_data(self._read_buffer[:nbytes])
        self._parse()

    def eof_received(self) -> bool:
        if not self._ended:
            self._codec.receive_data(b"")
            self._parse()
        # Keep our side open: `close` ends the connection once the session is done.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._ended:
            if exc is None:
                # What is still buffered is parsed as `next_event` takes events (reading may
                # have been paused at _MAX_PENDING_EVENTS); `Closed` comes after it.
                self._codec.receive_data(b"")
                self._parse()
            else:
                self._end(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gone = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    # -- for the session -----------------------------------------------------------------

    async def next_event(self, deadline: float) -> AgiEvent | BaseException:
        """The next event in arrival order; after the terminal one, `Closed` again.

        Raises TimeoutError when none came by `deadline` (the loop's clock).
        """
        while (event := self.event_nowait()) is None:
            await self.wait(deadline)
        return event

    def event_nowait(self) -> AgiEvent | BaseException | None:
        """The next event if one is there (`Closed` after the terminal one), else None."""
        if not self._events:
            return Closed() if self._ended else None
        event = self._events.popleft()
        if self._paused:
            self._parse()
        return event

    def wait(self, deadline: float) -> asyncio.Future[None]:
        """A future that is done once an event is there, or fails with TimeoutError at
        `deadline` (the loop's clock).  Only one wait is in progress at a time."""
        waiter = self.loop.create_future()
        self._deadline = deadline
        # One timer serves many waits: it is only armed anew when it would fire too late,
        # and when it fires early it re-arms for the wait then in progress.  Commands
        # follow each other within milliseconds, so this saves a timer per command.
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)
        self._waiter = waiter
        return waiter

    def write(self, data: bytes) -> None:
        # No drain: one command (at most 2 KiB, see format_command) is in flight at a time,
        # so what the transport buffers is bounded without flow control.
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection lost")
        self.transport.write(data)

    async def close(self) -> None:
        """Close (sending what is buffered first), waiting up to _CLOSE_TIMEOUT s for it."""
        if self.transport is None:
            return
        self.transport.close()
        if self._gone or not self.transport.get_write_buffer_size():
            # Nothing to flush: the socket is closed on the loop's next turn, for certain.
            return
        # connection_lost comes after the flush, so not before this await.
        self._lost = self.loop.create_future()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._lost
        except TimeoutError:
            self.transport.abort()

    # -- internals -------------------------------------------------------------------------

    def _parse(self) -> None:
        codec, events = self._codec, self._events
        try:
            while not self._ended:
                if len(events) >= _MAX_PENDING_EVENTS:
                    if not self._paused and self.transport is not None:
                        self._paused = True
                        self.transport.pause_reading()
                    break
                event = codec.next_event()
                if event is NEED_DATA:
                    if self._paused and self.transport is not None:
                        self._paused = False
                        self.transport.resume_reading()
                    break
                events.append(event)
                if not isinstance(event, AgiResult):  # the one check for nearly every event
                    if isinstance(event, AgiHangupNotice):
                        self.hangup_seen = True
                    self._ended = isinstance(event, Closed)
        except AgiProtocolError as exc:
            self._end(exc)
        waiter = self._waiter
        if events and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no wait in progress: the next one arms a timer
        if self.loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _end(self, exc: BaseException) -> None:
        self._events.append(exc)
        self._ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class AgiSession:
    """One AGI call: the request and the commands a handler sends on that channel.

    Commands run one at a time (Asterisk answers strictly in order); ``log`` is a structlog
    logger bound with the call's ``uniqueid`` and ``script``.  Sessions are made by
    `AgiServer`, one per connection.
    """

    def __init__(
        self,
        *,
        request: AgiRequest,
        stream: _AgiStream,
        command_timeout: float,
        log: Any,
    ) -> None:
        self.request = request
        self.log = log
        self._stream = stream
        self._command_timeout = command_timeout
        # The handler's commands come one at a time, so taking the turn is a flag; commands
        # sent concurrently (asyncio.gather) queue here in order, like with a lock.
        self._busy = False
        self._turns: deque[asyncio.Future[None]] = deque()
        self._hung_up = False
        self._hangup_reported = False
        self._broken = False

    @property
    def hung_up(self) -> bool:
        """True once Asterisk said the channel hung up (or closed the connection)."""
        return self._hung_up or self._stream.hangup_seen

    async def execute(self, *words: str, reply_timeout: float | None = None) -> AgiResult:
        """Send one command and return its 200 reply.

        Raises `AgiHangup` on a HANGUP line (once; later commands, e.g. SET VARIABLE on the
        dead channel, still run and raise only on 511 or end of stream), `AgiCommandError`
        on 510/520 and other non-200 replies, `AgiTimeout` after ``reply_timeout`` seconds
        (default: the server's command_timeout).
        """
        line = format_command(*words)
        limit = self._command_timeout if reply_timeout is None else reply_timeout
        stream = self._stream
        if self._busy:
            await self._wait_turn()
        self._busy = True
        try:
            if self._broken:
                raise AgiHangup("session already ended")
            stream.write(line)
            deadline = stream.loop.time() + limit
            # stream.next_event inlined: one coroutine fewer per command.
            while (reply := stream.event_nowait()) is None:
                await stream.wait(deadline)
            while isinstance(reply, AgiHangupNotice):
                # The reply to our command still follows; read it to stay in step.
                self._hung_up = True
                reply = await stream.next_event(deadline)
        except TimeoutError:
            self._broken = True
            raise AgiTimeout(f"no reply to {words[0]!r} within {limit} s") from None
        except (ConnectionError, OSError) as exc:
            self._broken = True
            self._hung_up = True
            raise AgiHangup(f"connection lost: {exc}") from exc
        finally:
            self._pass_turn()
        if not isinstance(reply, AgiResult):
            self._raise_for(reply)
        if reply.code == 511:
            self._hung_up = True
            raise AgiHangup(reply.text)
        if reply.code != 200:
            raise AgiCommandError(reply.code, reply.text)
        if (self._hung_up or stream.hangup_seen) and not self._hangup_reported:
            self._hangup_reported = True
            raise AgiHangup("HANGUP")
        return reply

    def _raise_for(self, reply: AgiEvent | BaseException) -> NoReturn:
        # What stands in a command's reply when it is not a result line.
        if isinstance(reply, AgiUsageError):
            raise AgiCommandError(reply.code, reply.text)
        self._broken = self._hung_up = self._hangup_reported = True
        if isinstance(reply, BaseException):
            raise AgiHangup(f"connection failed: {reply}") from reply
        raise AgiHangup("Asterisk closed the connection")

    async def _wait_turn(self) -> None:
        turn = self._stream.loop.create_future()
        self._turns.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._pass_turn()  # handed to us just before the cancellation: hand it on
            elif turn in self._turns:
                self._turns.remove(turn)
            raise

    def _pass_turn(self) -> None:
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():  # a cancelled waiter is done
                turn.set_result(None)
                return
        self._busy = False

    # -- convenience commands ----------------------------------------------------------------

    async def answer(self) -> AgiResult:
        return await self.execute("ANSWER")

    async def hangup(self) -> AgiResult:
        return await self.execute("HANGUP")

    async def verbose(self, message: str, level: int = 1) -> AgiResult:
        return await self.execute("VERBOSE", message, str(level))

    async def get_variable(self, name: str) -> str | None:
        """The variable's value, or None when it is not set (``200 result=0``)."""
        reply = await self.execute("GET", "VARIABLE", name)
        if reply.result_int == 1:
            return reply.data if reply.data is not None else ""
        return None

    async def set_variable(self, name: str, value: str) -> None:
        await self.execute("SET", "VARIABLE", name, value)

    async def set_variables(self, values: Mapping[str, str]) -> None:
        """Set several channel variables in order: each run of values that MSet carries
        unchanged in one round trip, any other value with its own SET VARIABLE (a route
        sets half a dozen, and a round trip costs both ends more than the work it carries)."""
        run: list[tuple[str, str]] = []
        for name, value in values.items():
            if _MSET_NAME.fullmatch(name) and _MSET_VALUE.fullmatch(value):
                run.append((name, value))
            else:
                await self._set_all(run)
                run = []
                await self.set_variable(name, value)
        await self._set_all(run)

    async def _set_all(self, run: list[tuple[str, str]]) -> None:
        if len(run) > 1:
            reply = await self.exec("MSet", *(f"{name}={value}" for name, value in run))
            if reply.result_int == 0:
                return
        for name, value in run:  # one, or MSet is missing (-2)
            await self.set_variable(name, value)

    async def stream_file(
        self, name: str, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> AgiResult:
        """Play a prompt; ``.digit`` of the reply is the escape digit pressed, if any.

        ``result=-1`` means the file could not be played or the channel failed.
        """
        return await self.execute(
            "STREAM", "FILE", name, escape_digits, reply_timeout=reply_timeout
        )

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """Play ``prompt`` and collect up to ``max_digits`` DTMF digits ("" if none)."""
        reply = await self.execute(
            "GET",
            "DATA",
            prompt,
            str(timeout_ms),
            str(max_digits),
            reply_timeout=self._command_timeout + timeout_ms / 1000,
        )
        if reply.result == "-1":
            self._hung_up = True
            raise AgiHangup("GET DATA failed: channel hung up")
        return reply.result

    async def say_digits(self, digits: str, escape: str = "") -> AgiResult:
        # About a second per digit is spoken before Asterisk replies: allow for it.
        reply_timeout = self._command_timeout + len(digits)
        return await self.execute("SAY", "DIGITS", digits, escape, reply_timeout=reply_timeout)

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> AgiResult:
        """Run a dialplan application; ``args`` are joined with ',' after escaping ``\\,"()``
        so that applications splitting their data the standard way see them unchanged."""
        data = ",".join(_escape_app_arg(a) for a in args)
        return await self.execute("EXEC", app, data, reply_timeout=reply_timeout)


class AgiServer:
    """FastAGI listener: one task per connection, handlers chosen by script name.

    Counters of finished requests by ``(script, result)`` are in `counters`; results are
    ``ok``, ``error``, ``hangup``, ``timeout``, ``unknown_script``, ``bad_request``, ``busy``
    and ``cancelled``.  Unknown scripts and bad requests are counted under script "" so that
    callers cannot grow metric label sets.  ``on_request_done(script, result, seconds)`` is
    called for each finished connection.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        handlers: Mapping[str, Handler],
        header_timeout: float = 5.0,
        command_timeout: float = 10.0,
        max_sessions: int = 256,
        max_header_bytes: int = 16 * 1024,
        max_headers: int = 256,
        logger: Any = None,
        on_request_done: RequestObserver | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._handlers = dict(handlers)
        self._header_timeout = header_timeout
        self._command_timeout = command_timeout
        self._max_sessions = max_sessions
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._log = logger if logger is not None else structlog.get_logger("acd.agi")
        self._on_request_done = on_request_done
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._read_buffer = memoryview(bytearray(_READ_BUFFER_BYTES))
        self.counters: Counter[tuple[str, str]] = Counter()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port=0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("AgiServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            functools.partial(self._new_stream, loop), self._host, self._port
        )
        self._log.info(
            "agi.listening", host=self._host, port=self.port, max_sessions=self._max_sessions
        )

    async def close(self) -> None:
        """Stop accepting, cancel the running sessions and wait for them."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _new_stream(self, loop: asyncio.AbstractEventLoop) -> _AgiStream:
        codec = AgiConnection(
            max_header_bytes=self._max_header_bytes, max_headers=self._max_headers
        )
        return _AgiStream(codec, self._on_connect, self._read_buffer, loop)

    def _on_connect(self, stream: _AgiStream) -> None:
        # Only close() cancels these tasks, and it gathers them, so nothing goes unreported.
        task = stream.loop.create_task(self._serve(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: _AgiStream) -> None:
        started = time.monotonic()
        assert stream.transport is not None
        peer = str(stream.transport.get_extra_info("peername"))
        # The logger is bound once, with the request's ids, or with the peer alone when there
        # is no request: a bind copies the context, and this is paid on every call.
        log: Any = None
        script, result = "", "bad_request"
        try:
            if len(self._tasks) > self._max_sessions:
                result = "busy"
                log = self._log.bind(peer=peer)
                log.warning("agi.rejected_busy", max_sessions=self._max_sessions)
                self._send_failure(stream)
                return
            request = await self._read_request(stream, peer)
            if request is None:
                return
            handler = self._handlers.get(request.script)
            log = self._log.bind(peer=peer, uniqueid=request.uniqueid, script=request.script)
            if handler is None:
                result = "unknown_script"
                log.warning("agi.unknown_script", channel=request.channel)
                self._send_failure(stream)
                return
            script = request.script
            result, log = await self._run_handler(
                handler=handler, request=request, stream=stream, log=log
            )
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            await stream.close()
            seconds = time.monotonic() - started
            self.counters[(script, result)] += 1
            if log is None:
                log = self._log.bind(peer=peer)
            # A served request is the handler's to report (it logs what it decided); the
            # line stays for debugging.  Every other ending is news at info.
            done = log.debug if result == "ok" else log.info
            done("agi.request_done", result=result, seconds=round(seconds, 4))
            if self._on_request_done is not None:
                try:
                    self._on_request_done(script, result, seconds)
                except Exception:
                    log.exception("agi.observer_failed")

    async def _read_request(self, stream: _AgiStream, peer: str) -> AgiRequest | None:
        event: AgiEvent | BaseException | None  # None: none came in time
        try:
            deadline = stream.loop.time() + self._header_timeout
            event = await stream.next_event(deadline)
        except TimeoutError:
            event = None
        if isinstance(event, AgiRequest):
            return event
        log = self._log.bind(peer=peer)
        if event is None:
            log.warning("agi.header_timeout", timeout=self._header_timeout)
        elif isinstance(event, Closed):
            log.warning("agi.closed_before_request", trailing=event.trailing_bytes)
        elif isinstance(event, AgiProtocolError):
            log.warning("agi.bad_request", reason=str(event))
        elif isinstance(event, ConnectionError | OSError):
            log.warning("agi.connection_error", reason=str(event))
        else:
            log.warning("agi.bad_request", reason=f"unexpected {event!r}")
        return None

    async def _run_handler(
        self, *, handler: Handler, request: AgiRequest, stream: _AgiStream, log: Any
    ) -> tuple[str, Any]:
        """The request's result, and the session's logger as the handler left it (a handler
        binds what it learns, e.g. the queue, and the lines after it carry that too)."""
        session = AgiSession(
            request=request, stream=stream, command_timeout=self._command_timeout, log=log
        )
        try:
            await handler(session)
        except AgiHangup as exc:
            session.log.info("agi.hangup", reason=str(exc))
            return "hangup", session.log
        except AgiTimeout:
            session.log.exception("agi.command_timeout")
            return "timeout", session.log
        except Exception:
            session.log.exception("agi.handler_failed", channel=request.channel)
            return "error", session.log
        return ("hangup" if session.hung_up else "ok"), session.log

    def _send_failure(self, stream: _AgiStream) -> None:
        # Sent before the close, which flushes it (waiting at most _CLOSE_TIMEOUT).
        with contextlib.suppress(ConnectionError):
            stream.write(_FAILURE_LINE)
