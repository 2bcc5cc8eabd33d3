"""asyncio adapter around the AMI codec: one long-lived, self-healing Asterisk Manager link.

`AmiClient.run()` connects, logs in, reads, keeps the link alive with `Ping`, and (if
`reconnect`) reconnects forever with jittered exponential backoff; `action()` sends one
action and returns its response plus, for list actions, the events of its EventList.

What it must never do: re-send an action after the connection dropped (an `Originate` must
not dial twice: pending actions fail with `AmiDisconnected`), turn a login refusal into a
busy reconnect loop (it raises `AmiAuthenticationError`), or await the network without a
timeout. Parsing lives in `codec.py`; this module only does I/O, timing and bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from acd.ami.codec import (
    NEED_DATA,
    AmiError,
    AmiParser,
    AmiProtocolError,
    Banner,
    Closed,
    Event,
    Response,
    format_action,
)

__all__ = [
    "ActionResult",
    "AmiActionError",
    "AmiAuthenticationError",
    "AmiClient",
    "AmiConnectionError",
    "AmiDisconnected",
    "AmiTimeout",
    "EventCallback",
]

EventCallback = Callable[[Event], None]
_Hook = Callable[["AmiClient"], Awaitable[None]]
_READ_SIZE = 65536


class AmiConnectionError(AmiError):
    """Asterisk could not be reached (refused, unreachable, no banner in time)."""


class AmiDisconnected(AmiConnectionError):  # noqa: N818 - name fixed by the AMI API brief
    """The link is down: the action was not sent, or its answer can no longer come."""


class AmiAuthenticationError(AmiError):
    """Asterisk refused the login: a configuration error, never retried."""


class AmiTimeout(AmiError, TimeoutError):  # noqa: N818 - reads like asyncio.TimeoutError
    """No complete answer within the timeout (the action may still have run)."""


class AmiActionError(AmiError):
    """Raised by `ActionResult.raise_for_status()` for a "Response: Error"."""

    def __init__(self, result: ActionResult) -> None:
        super().__init__(f"AMI action failed: {result.response.message or result.response.status}")
        self.result = result


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The response to one action and, for list actions, its events (without the final
    "...Complete" event, which is `complete`)."""

    response: Response
    events: tuple[Event, ...] = ()
    complete: Event | None = None

    @property
    def ok(self) -> bool:
        return self.response.status in ("Success", "Follows", "Goodbye")

    def raise_for_status(self) -> ActionResult:
        if not self.ok:
            raise AmiActionError(self)
        return self


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[ActionResult]
    response: Response | None = None
    events: list[Event] | None = None


def _backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before reconnect `attempt` (0-based): exponential, capped, jittered to 50-100%.

    The floor at half the nominal delay keeps a fleet of daemons from hammering a restarted
    Asterisk; the jitter spreads them.
    """
    nominal = min(maximum, initial * 2.0 ** min(attempt, 62))
    return nominal * (0.5 + 0.5 * rng.random())


class AmiClient:
    """One AMI connection, reusable across reconnects but not re-entrant (one `run()`).

    Actions issued while the link is down fail at once with `AmiDisconnected` rather than
    waiting: the caller (routing) knows better whether to retry. An error response is
    returned, not raised: `result.ok` is False and `result.raise_for_status()` raises.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5038,
        username: str,
        secret: str,
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 20.0,
        ping_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
        events: Sequence[str] | None = None,
        on_connected: _Hook | None = None,
        on_disconnected: _Hook | None = None,
        logger: Any = None,
        reconnect: bool = True,
        max_message_bytes: int = 256 * 1024,
    ) -> None:
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._event_names = None if events is None else tuple(events)
        self._events = None if events is None else frozenset(e.lower() for e in events)
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._log = logger if logger is not None else structlog.get_logger()
        self._reconnect = reconnect
        self._max_message_bytes = max_message_bytes

        self._ids = itertools.count(1)
        self._id_prefix = f"fl-{uuid.uuid4().hex[:8]}-"
        self._pending: dict[str, _Pending] = {}
        self._subscribers: dict[str | None, list[EventCallback]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = asyncio.Event()
        self._fully_booted = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_error: BaseException | None = None
        self._running = False
        self._closing = False
        self._wakeup = asyncio.Event()
        self._logins = 0
        self._banner: str | None = None
        self._logged_in_once_this_round = False

    # --- public state -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._logged_in.is_set()

    @property
    def fully_booted(self) -> bool:
        """True once this connection's Asterisk said it has loaded all its modules."""
        return self._fully_booted.is_set()

    @property
    def reconnects(self) -> int:
        """Successful logins after the first one."""
        return max(0, self._logins - 1)

    @property
    def protocol_version(self) -> str | None:
        """AMI version from the banner of the current (or last) connection."""
        return self._banner

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, log in and serve until `close()`; reconnect if so configured.

        Raises `AmiAuthenticationError` on a refused login, and `AmiConnectionError` when
        the link cannot be made or is lost while `reconnect` is False.
        """
        if self._running:
            raise RuntimeError("AmiClient.run() is already running")
        self._running = True
        self._stopped.clear()
        self._stop_error = None
        attempt = 0
        try:
            while not self._closing:
                await self._session_once()
                if self._closing:
                    break
                if self._logged_in_once_this_round:
                    attempt = 0
                delay = _backoff_delay(
                    attempt, initial=self._backoff_initial, maximum=self._backoff_max, rng=self._rng
                )
                attempt += 1
                self._log.info("ami.reconnect_wait", delay=round(delay, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
        except BaseException as exc:
            self._stop_error = exc
            raise
        finally:
            self._running = False
            self._stopped.set()

    async def _session_once(self) -> None:
        """One connection's life; raises only what must end `run()`."""
        try:
            await self._session()
        except AmiAuthenticationError:
            raise
        except (OSError, TimeoutError, AmiConnectionError, AmiProtocolError) as exc:
            if self._closing:
                return
            self._log.warning("ami.link_down", error=repr(exc))
            if not self._reconnect:
                if isinstance(exc, AmiConnectionError):
                    raise
                raise AmiConnectionError(f"AMI link lost: {exc!r}") from exc
        else:
            if not self._closing and not self._reconnect:
                raise AmiConnectionError("AMI connection closed by Asterisk")

    async def close(self) -> None:
        """Log off (best effort, bounded), close the socket and make `run()` return."""
        self._closing = True
        self._wakeup.set()
        if self.connected:
            with contextlib.suppress(AmiError, OSError):
                await self.action("Logoff", timeout=min(1.0, self._action_timeout))
        writer = self._writer
        if writer is not None:
            writer.close()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._connect_timeout)

    async def wait_logged_in(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once logged in; `AmiTimeout` after `timeout`, or the error that ended run()."""
        if self._logged_in.is_set():
            return
        logged_in = asyncio.ensure_future(self._logged_in.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {logged_in, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            logged_in.cancel()
            stopped.cancel()
        if self._logged_in.is_set():
            return
        if stopped in done:
            if self._stop_error is not None:
                raise AmiConnectionError("AMI client stopped") from self._stop_error
            raise AmiDisconnected("AMI client stopped")
        raise AmiTimeout(f"not logged in to AMI within {timeout}s")

    async def wait_fully_booted(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Return True once Asterisk has said FullyBooted on this connection, False after
        `timeout`.

        AMI accepts logins while Asterisk is still loading modules: an action of a module
        not loaded yet (QueueStatus before app_queue) fails or answers with nothing.
        Asterisk says FullyBooted at login when it is up, or when it gets there, but only
        to a user allowed to read the "system" class: hence the timeout.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._fully_booted.wait()
        return self._fully_booted.is_set()

    # --- actions and events -------------------------------------------------------------

    async def action(
        self,
        name: str,
        fields: Mapping[str, str | Sequence[str]] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per-action deadline is the API
    ) -> ActionResult:
        """Send one action and await its complete answer (fails fast when disconnected)."""
        if not self._logged_in.is_set():
            raise AmiDisconnected(f"AMI link down, {name} not sent")
        return await self._request(name, fields, timeout)

    def subscribe(self, name: str | None, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for events named `name` (any case; None = all events).

        Callbacks run synchronously in the reader, in order of arrival: they must be quick
        (hand work to a queue). One that raises is logged and skipped. Returns an
        unsubscribe function.
        """
        key = None if name is None else name.lower()
        callbacks = self._subscribers.setdefault(key, [])
        callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    # --- internals ----------------------------------------------------------------------

    async def _request(
        self,
        name: str,
        fields: Mapping[str, str | Sequence[str]] | None,
        timeout: float | None,  # noqa: ASYNC109 - per-action deadline
    ) -> ActionResult:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise AmiDisconnected(f"AMI link down, {name} not sent")
        action_id = f"{self._id_prefix}{next(self._ids)}"
        data = format_action(name, action_id, fields or {})
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(future)
        limit = self._action_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                writer.write(data)
                await writer.drain()
                return await future
        except TimeoutError:
            raise AmiTimeout(f"AMI {name} (ActionID {action_id}) unanswered in {limit}s") from None
        except (ConnectionError, OSError) as exc:
            raise AmiDisconnected(f"AMI link lost while sending {name}") from exc
        finally:
            self._pending.pop(action_id, None)

    async def _session(self) -> None:
        self._logged_in_once_this_round = False
        self._fully_booted.clear()
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, limit=_READ_SIZE
                )
        except (OSError, TimeoutError) as exc:
            raise AmiConnectionError(
                f"cannot connect to AMI at {self._host}:{self._port}: {exc!r}"
            ) from exc
        parser = AmiParser(max_message_bytes=self._max_message_bytes)
        self._writer = writer
        banner = asyncio.get_running_loop().create_future()
        read_task = asyncio.create_task(self._read_loop(reader, parser, banner), name="ami-reader")
        tasks: set[asyncio.Task[None]] = {read_task}
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await asyncio.wait({read_task, banner}, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                raise AmiConnectionError("no AMI banner from Asterisk in time") from None
            if not banner.done():
                read_task.result()  # re-raise why the reader ended
                raise AmiConnectionError("AMI connection closed before the banner")
            await self._login()
            self._logins += 1
            self._logged_in_once_this_round = True
            self._logged_in.set()
            self._log.info("ami.logged_in", host=self._host, reconnects=self.reconnects)
            tasks.add(asyncio.create_task(self._keepalive(), name="ami-keepalive"))
            if self._on_connected is not None:
                tasks.add(asyncio.create_task(self._run_hook(self._on_connected), name="ami-hook"))
            while not read_task.done():
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {read_task}:
                    tasks.discard(task)
                    task.result()  # keepalive failure propagates; the hook never raises
            read_task.result()
        finally:
            self._writer = None
            was_logged_in = self._logged_in.is_set()
            self._logged_in.clear()
            self._fully_booted.clear()
            writer.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._fail_pending()
            if was_logged_in and self._on_disconnected is not None:
                # bounded: a stuck hook must not hold up the reconnect
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._action_timeout):
                        await self._run_hook(self._on_disconnected)

    async def _login(self) -> None:
        fields: dict[str, str] = {"Username": self._username, "Secret": self._secret}
        fields["Events"] = "off" if self._events is not None and not self._events else "on"
        try:
            result = await self._request("Login", fields, self._action_timeout)
        except AmiTimeout as exc:
            raise AmiConnectionError("no answer to AMI Login") from exc
        if not result.ok:
            raise AmiAuthenticationError(
                f"AMI login as {self._username!r} refused: {result.response.message}"
            )
        # FullyBooted comes through too: it tells when a booting Asterisk is ready.
        for name in (*self._event_names, "FullyBooted") if self._event_names else ():
            # Session filter (Asterisk >= 20.8/21.3 syntax): Asterisk then skips the events
            # we would drop anyway. Needs the "system" write class; without it we only
            # filter on our side. Events of an action's EventList are never filtered.
            added = await self._request(
                "Filter", {"Operation": "Add", "MatchCriteria": f"name({name})"}, None
            )
            if not added.ok:
                self._log.warning(
                    "ami.filter_refused", ami_event=name, reason=added.response.message
                )
                break

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await self._request("Ping", None, self._ping_timeout)
            except AmiTimeout:
                self._log.warning("ami.keepalive_timeout", timeout=self._ping_timeout)
                raise AmiConnectionError("AMI keepalive: no Pong in time") from None

    async def _run_hook(self, hook: _Hook) -> None:
        try:
            await hook(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("ami.hook_failed", hook=getattr(hook, "__name__", repr(hook)))

    async def _read_loop(
        self, reader: asyncio.StreamReader, parser: AmiParser, banner: asyncio.Future[str]
    ) -> None:
        # No read timeout here: silence is bounded by the keepalive's Ping/Pong deadline.
        try:
            await self._read_messages(reader, parser, banner)
        finally:
            # Whoever awaits an answer learns at once that it cannot come.
            self._fail_pending()

    async def _read_messages(
        self, reader: asyncio.StreamReader, parser: AmiParser, banner: asyncio.Future[str]
    ) -> None:
        while True:
            data = await reader.read(_READ_SIZE)
            parser.receive_data(data)
            while True:
                message = parser.next_message()
                if message is NEED_DATA:
                    break
                if isinstance(message, Closed):
                    raise AmiDisconnected("Asterisk closed the AMI connection")
                if isinstance(message, Banner):
                    self._banner = message.version
                    if not banner.done():
                        banner.set_result(message.version)
                elif isinstance(message, Response):
                    self._on_response(message)
                elif isinstance(message, Event):
                    self._on_event(message)

    def _on_response(self, response: Response) -> None:
        pending = self._pending.get(response.action_id or "")
        if pending is None or pending.future.done():
            self._log.debug("ami.unmatched_response", action_id=response.action_id)
            return
        eventlist = response.get("EventList")
        if eventlist is not None and eventlist.lower() == "start":
            pending.response = response
            pending.events = []
        else:
            pending.future.set_result(ActionResult(response))

    def _on_event(self, event: Event) -> None:
        # Most events belong to no action: look at ActionID only while answers are awaited,
        # so events nobody reads are never split into fields.
        if self._pending and self._collect(event):
            return
        name = event.name.lower()
        if name == "fullybooted":
            self._fully_booted.set()
        if self._events is not None and name not in self._events:
            return
        for key in (name, None):
            for callback in tuple(self._subscribers.get(key, ())):
                try:
                    callback(event)
                except Exception:
                    self._log.exception("ami.subscriber_failed", ami_event=event.name)

    def _collect(self, event: Event) -> bool:
        """Add `event` to the EventList of the action awaiting it; False if none is."""
        action_id = event.get("ActionID")
        pending = None if action_id is None else self._pending.get(action_id)
        if pending is None or pending.events is None or pending.response is None:
            return False
        eventlist = event.get("EventList")
        if eventlist is not None and eventlist.lower() == "complete":
            if not pending.future.done():
                pending.future.set_result(
                    ActionResult(pending.response, tuple(pending.events), event)
                )
        else:
            pending.events.append(event)
        return True

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(AmiDisconnected("AMI link lost before the answer"))
