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
decisions, or keep module-level state.  Every await on the network has a timeout, except
the per-session reader, which lives exactly as long as its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

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

_READ_SIZE: Final = 64 * 1024
# res_agi.c treats a command line starting with "failure" as the script's own failure
# and sets AGISTATUS=FAILURE: the one way a FastAGI server can say "not served".
_FAILURE_LINE: Final = b"FAILURE\n"
_CLOSE_TIMEOUT: Final = 2.0


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


def _escape_app_arg(arg: str) -> str:
    # Applications split their data with ast_app_separate_args, where ',' separates,
    # '"' and '(' ')' group, and a backslash makes the next character literal.
    return "".join("\\" + c if c in '\\,"()' else c for c in arg)


class AgiSession:
    """One AGI call: the request and the commands a handler sends on that channel.

    Commands run one at a time (Asterisk answers strictly in order); ``log`` is a structlog
    logger bound with the call's ``uniqueid`` and ``script``.
    """

    def __init__(
        self,
        *,
        request: AgiRequest,
        codec: AgiConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        command_timeout: float,
        log: Any,
    ) -> None:
        self.request = request
        self.log = log
        self._codec = codec
        self._reader = reader
        self._writer = writer
        self._command_timeout = command_timeout
        self._events: asyncio.Queue[AgiEvent | BaseException] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._hung_up = False
        self._hangup_reported = False
        self._broken = False
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def hung_up(self) -> bool:
        """True once Asterisk said the channel hung up (or closed the connection)."""
        return self._hung_up

    async def execute(self, *words: str, reply_timeout: float | None = None) -> AgiResult:
        """Send one command and return its 200 reply.

        Raises `AgiHangup` on a HANGUP line (once; later commands, e.g. SET VARIABLE on the
        dead channel, still run and raise only on 511 or end of stream), `AgiCommandError`
        on 510/520 and other non-200 replies, `AgiTimeout` after ``reply_timeout`` seconds
        (default: the server's command_timeout).
        """
        line = format_command(*words)
        limit = self._command_timeout if reply_timeout is None else reply_timeout
        async with self._lock:
            if self._broken:
                raise AgiHangup("session already ended")
            try:
                async with asyncio.timeout(limit):
                    self._writer.write(line)
                    await self._writer.drain()
                    reply = await self._next_reply()
            except TimeoutError:
                self._broken = True
                raise AgiTimeout(f"no reply to {words[0]!r} within {limit} s") from None
            except (ConnectionError, OSError) as exc:
                self._broken = True
                self._hung_up = True
                raise AgiHangup(f"connection lost: {exc}") from exc
        if isinstance(reply, AgiUsageError):
            raise AgiCommandError(reply.code, reply.text)
        if reply.code == 511:
            self._hung_up = True
            raise AgiHangup(reply.text)
        if reply.code != 200:
            raise AgiCommandError(reply.code, reply.text)
        if self._hung_up and not self._hangup_reported:
            self._hangup_reported = True
            raise AgiHangup("HANGUP")
        return reply

    async def _next_reply(self) -> AgiResult | AgiUsageError:
        while True:
            event = await self._events.get()
            if isinstance(event, AgiHangupNotice):
                # The reply to our command still follows; read it to stay in step.
                self._hung_up = True
                continue
            if isinstance(event, AgiResult | AgiUsageError):
                return event
            self._broken = True
            self._hung_up = True
            self._hangup_reported = True
            if isinstance(event, BaseException):
                raise AgiHangup(f"connection failed: {event}") from event
            raise AgiHangup("Asterisk closed the connection")

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
        return await self.execute("SAY", "DIGITS", digits, escape)

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> AgiResult:
        """Run a dialplan application; ``args`` are joined with ',' after escaping ``\\,"()``
        so that applications splitting their data the standard way see them unchanged."""
        data = ",".join(_escape_app_arg(a) for a in args)
        return await self.execute("EXEC", app, data, reply_timeout=reply_timeout)

    # -- plumbing for AgiServer ----------------------------------------------------------

    def _start(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop(), name="agi-session-reader")

    async def _stop(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def _read_loop(self) -> None:
        try:
            while True:
                event = self._codec.next_event()
                if event is NEED_DATA:
                    self._codec.receive_data(await self._reader.read(_READ_SIZE))
                    continue
                if isinstance(event, AgiHangupNotice):
                    self._hung_up = True
                await self._events.put(event)
                if isinstance(event, Closed):
                    return
        except (AgiProtocolError, ConnectionError, OSError) as exc:
            await self._events.put(exc)


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
        self._server = await asyncio.start_server(self._on_connect, self._host, self._port)
        self._log.info("agi.listening", host=self._host, port=self.port)

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

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels these tasks.  Ending quietly keeps asyncio's stream
            # callback from logging the cancellation as an error; close() awaits us anyway.
            return
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        peer = writer.get_extra_info("peername")
        log = self._log.bind(peer=str(peer))
        script, result = "", "bad_request"
        try:
            if len(self._tasks) > self._max_sessions:
                result = "busy"
                log.warning("agi.rejected_busy", max_sessions=self._max_sessions)
                await self._send_failure(writer)
                return
            codec = AgiConnection(
                max_header_bytes=self._max_header_bytes, max_headers=self._max_headers
            )
            request = await self._read_request(reader, codec, log)
            if request is None:
                return
            handler = self._handlers.get(request.script)
            log = log.bind(uniqueid=request.uniqueid, script=request.script)
            if handler is None:
                result = "unknown_script"
                log.warning("agi.unknown_script", channel=request.channel)
                await self._send_failure(writer)
                return
            script = request.script
            result = await self._run_handler(
                handler=handler,
                request=request,
                codec=codec,
                reader=reader,
                writer=writer,
                log=log,
            )
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            await self._close_writer(writer)
            seconds = time.monotonic() - started
            self.counters[(script, result)] += 1
            log.info("agi.request_done", result=result, seconds=round(seconds, 4))
            if self._on_request_done is not None:
                try:
                    self._on_request_done(script, result, seconds)
                except Exception:
                    log.exception("agi.observer_failed")

    async def _read_request(
        self, reader: asyncio.StreamReader, codec: AgiConnection, log: Any
    ) -> AgiRequest | None:
        try:
            async with asyncio.timeout(self._header_timeout):
                while True:
                    event = codec.next_event()
                    if event is NEED_DATA:
                        codec.receive_data(await reader.read(_READ_SIZE))
                    elif isinstance(event, AgiRequest):
                        return event
                    elif isinstance(event, Closed):
                        log.warning("agi.closed_before_request", trailing=event.trailing_bytes)
                        return None
                    else:
                        log.warning("agi.bad_request", reason=f"unexpected {event!r}")
                        return None
        except TimeoutError:
            log.warning("agi.header_timeout", timeout=self._header_timeout)
        except AgiProtocolError as exc:
            log.warning("agi.bad_request", reason=str(exc))
        except (ConnectionError, OSError) as exc:
            log.warning("agi.connection_error", reason=str(exc))
        return None

    async def _run_handler(
        self,
        *,
        handler: Handler,
        request: AgiRequest,
        codec: AgiConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log: Any,
    ) -> str:
        session = AgiSession(
            request=request,
            codec=codec,
            reader=reader,
            writer=writer,
            command_timeout=self._command_timeout,
            log=log,
        )
        session._start()
        try:
            await handler(session)
        except AgiHangup as exc:
            log.info("agi.hangup", reason=str(exc))
            return "hangup"
        except AgiTimeout:
            log.exception("agi.command_timeout")
            return "timeout"
        except Exception:
            log.exception("agi.handler_failed", channel=request.channel)
            return "error"
        finally:
            await session._stop()
        return "hangup" if session.hung_up else "ok"

    async def _send_failure(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                writer.write(_FAILURE_LINE)
                await writer.drain()

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
