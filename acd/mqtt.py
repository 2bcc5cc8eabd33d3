"""MQTT adapter: call, agent and ticket events out, monitoring alerts ("auto-informer") in.

`MqttLink.publish(kind, payload)` is what call handling calls: it never awaits and never
does I/O, it only puts the event (topic `<prefix>/<kind>`, JSON with sorted keys) on a
bounded queue. One publisher task drains the queue while the broker is connected (QoS 1,
one event at a time); while it is away, events wait in the queue, and when the queue is
full the OLDEST event is dropped and counted (`dropped`). `MqttLink.run()` connects,
subscribes to the alerts topic, and reconnects forever with jittered exponential backoff;
it only ends when cancelled.

Alerts arrive as JSON (`parse_alert` says exactly what is accepted); valid ones are handed
to `on_alert` by one worker task, in order of arrival. An invalid alert, or an `on_alert`
that fails, is logged and counted, never fatal. Secrets are never logged.
"""

# Why drop the oldest event and not the new one: consumers of these events (dashboards,
# integrations) care about the desk's current state. After an outage the newest events
# describe it; the oldest ones describe calls long finished. A deque with a maximum length
# drops from the old end in O(1).
#
# Why one event at a time: the event being published is the only one outside the queue.
# If the link drops before the broker acknowledged it, it goes back to the front of the
# queue (or, if the queue has filled up meanwhile, it is the oldest and counts as dropped,
# although the broker may have got it). So every event is either acknowledged
# (`published`), still queued, or counted as dropped; delivery is at least once (an event
# whose acknowledgement was lost is sent again). A broker on the local network acknowledges
# within about a millisecond, far faster than a desk makes events.
#
# Why a fresh aiomqtt client per connection: paho keeps unacknowledged messages inside the
# client object and may resend them after a reconnect, which would bypass the accounting
# above. A new client starts empty. With an alerts subscription the session on the broker
# side is kept (clean_session False), so alerts published while the daemon was away (up to
# the broker's limit) are delivered when it returns.
#
# Why alerts go through their own task: `on_alert` writes to the database. The reader must
# keep reading (it is what notices a lost connection), so it only parses and hands over.

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import enum
import json
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from acd.config.model import Mqtt
from acd.config.secrets import SecretUnavailableError
from acd.tickets.alerts import SUMMARY_MAX, Alert
from acd.tickets.store import InvalidValue

__all__ = [
    "ALERT_FIELDS",
    "MAX_ALERT_BYTES",
    "AlertHandler",
    "AlertInvalid",
    "MqttLink",
    "backoff_delay",
    "parse_alert",
]

AlertHandler = Callable[[Alert], Awaitable[None]]

MAX_ALERT_BYTES: Final = 16 * 1024
ALERT_FIELDS: Final = ("customer", "severity", "summary", "dedupe_key")
# An event kind is one topic level: no separators, no wildcards.
_KIND: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LOG_TEXT_MAX: Final = 200


class AlertInvalid(ValueError):  # noqa: N818 - reads as what happened
    """An alert message that is not accepted; the message says why (bounded, log-safe)."""


def parse_alert(payload: bytes | bytearray) -> Alert:
    """The alert in an MQTT message, or `AlertInvalid` saying why it is refused.

    Accepted: at most 16 KiB of UTF-8 JSON, one object without repeated names, with the
    string fields
    - `customer`: the customer's id in the directory, 1 to 64 printable characters;
    - `severity`: critical, major, minor, warning or info (any letter case);
    - `summary`: what is wrong, non-empty; surrounding whitespace is removed, and a summary
      longer than 500 characters is cut to 500 (ending in '…') rather than losing the alert;
    - `dedupe_key`: the monitoring system's key of the problem, 1 to 200 letters, digits
      or `. _ : / @ # + = -`, starting with a letter or digit.
    Other fields are ignored (monitoring systems add their own).
    """
    if not isinstance(payload, bytes | bytearray):
        raise AlertInvalid(f"payload must be bytes (got {type(payload).__name__})")
    if len(payload) > MAX_ALERT_BYTES:
        raise AlertInvalid(f"payload has {len(payload)} bytes, more than {MAX_ALERT_BYTES}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as error:
        raise AlertInvalid(f"payload is not UTF-8 (bad byte at {error.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_names, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise AlertInvalid(
            f"payload is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise AlertInvalid("payload is not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise AlertInvalid(f"payload must be a JSON object (got {_json_type(data)})")
    missing = [name for name in ALERT_FIELDS if name not in data]
    if missing:
        raise AlertInvalid(f"missing field(s): {', '.join(missing)}")
    for name in ALERT_FIELDS:
        if not isinstance(data[name], str):
            raise AlertInvalid(f"{name} must be a string (got {_json_type(data[name])})")
    summary = data["summary"].strip()
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1].rstrip() + "…"
    try:
        return Alert(
            customer_id=data["customer"],
            severity=data["severity"].lower(),
            summary=summary,
            dedupe_key=data["dedupe_key"],
        )
    except InvalidValue as error:
        raise AlertInvalid(str(error)) from None


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before reconnect `attempt` (0-based): exponential, capped, jittered to 50-100%.

    The floor at half the nominal delay keeps many daemons from hammering a restarted
    broker at once; the jitter spreads them.
    """
    nominal = min(maximum, initial * 2.0 ** min(attempt, 62))
    return nominal * (0.5 + 0.5 * rng.random())


class MqttLink:
    """One daemon's link to the MQTT broker: a bounded event queue out, alerts in.

    `publish` must be called from the event loop's thread (it is not thread-safe); `run`
    runs once at a time.
    """

    def __init__(
        self,
        config: Mqtt,
        *,
        on_alert: AlertHandler | None = None,
        logger: Any = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
        alert_backlog: int = 1000,
    ) -> None:
        """`timeout`: seconds for the broker to accept the connection, a subscription or
        an event (a slower broker counts as gone). `alert_backlog`: valid alerts waiting
        for `on_alert`; beyond that they are dropped and counted (`alerts_dropped`).
        """
        self._config = config
        self._on_alert = on_alert
        self._log = logger if logger is not None else structlog.get_logger()
        self._keepalive = keepalive
        self._timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        # Only subscribe when someone handles alerts: a daemon without a store would
        # otherwise acknowledge (and so lose) alerts meant for one that has.
        self._alerts_topic = config.alerts_topic if on_alert is not None else None

        self._events: collections.deque[tuple[str, bytes]] = collections.deque(
            maxlen=config.queue_size
        )
        self._events_ready = asyncio.Event()
        self._alerts: asyncio.Queue[Alert] = asyncio.Queue(maxsize=alert_backlog)
        self._connected = False
        self._running = False
        self._queue_was_full = False
        self._dropped = 0
        self._published = 0
        self._connections = 0
        self._alerts_received = 0
        self._alerts_invalid = 0
        self._alerts_dropped = 0
        self._alerts_failed = 0

    # --- figures ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected to the broker (and subscribed to alerts, if any)."""
        return self._connected

    @property
    def published(self) -> int:
        """Events the broker acknowledged."""
        return self._published

    @property
    def dropped(self) -> int:
        """Events lost because the queue was full (the oldest ones)."""
        return self._dropped

    @property
    def queued(self) -> int:
        """Events waiting to be published."""
        return len(self._events)

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        return max(0, self._connections - 1)

    @property
    def alerts_received(self) -> int:
        """Messages that arrived on the alerts topic, valid or not."""
        return self._alerts_received

    @property
    def alerts_invalid(self) -> int:
        """Alert messages refused by `parse_alert`."""
        return self._alerts_invalid

    @property
    def alerts_dropped(self) -> int:
        """Valid alerts lost because `alert_backlog` alerts were already waiting."""
        return self._alerts_dropped

    @property
    def alerts_failed(self) -> int:
        """Valid alerts whose `on_alert` raised."""
        return self._alerts_failed

    # --- events out ---------------------------------------------------------------------

    def publish(self, kind: str, payload: Mapping[str, Any]) -> bool:
        """Queue an event for `<prefix>/<kind>`; never waits. False if it was refused.

        Refused (and logged): a `kind` that is not one topic level of letters, digits,
        '_' or '-', or a payload JSON cannot represent (datetimes and enums are written as
        ISO text and their values). A full queue drops its oldest event to make room.
        """
        if not isinstance(kind, str) or not _KIND.match(kind):
            self._log.warning("mqtt.event_refused", kind=_short(repr(kind)), reason="bad kind")
            return False
        try:
            body = json.dumps(
                payload,
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
                default=_json_default,
            ).encode("utf-8")
        except (TypeError, ValueError) as error:
            self._log.warning("mqtt.event_refused", kind=kind, reason=_short(str(error)))
            return False
        if len(self._events) == self._events.maxlen:
            self._dropped += 1
            if not self._queue_was_full:
                # Once per backlog (until the queue is empty again), not once per event.
                self._queue_was_full = True
                self._log.warning(
                    "mqtt.queue_full", queue_size=self._config.queue_size, dropped=self._dropped
                )
        self._events.append((f"{self._config.topic_prefix}/{kind}", body))
        self._events_ready.set()
        return True

    # --- the link -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish and receive alerts until cancelled; reconnect after any failure."""
        if self._running:
            raise RuntimeError("MqttLink.run() is already running")
        self._running = True
        worker = asyncio.create_task(self._handle_alerts(), name="mqtt-alerts")
        attempt = 0
        try:
            while True:
                connections = self._connections
                try:
                    await self._session()
                except (aiomqtt.MqttError, OSError, TimeoutError) as error:
                    self._log.warning("mqtt.link_down", error=_short(repr(error)))
                except SecretUnavailableError as error:
                    # The message names where the secret lives, never its value.
                    self._log.error("mqtt.password_unavailable", error=_short(str(error)))
                except Exception as error:  # the link must outlive any bug
                    self._log.error("mqtt.link_error", error=_short(repr(error)), exc_info=True)
                finally:
                    self._connected = False
                if self._connections != connections:
                    attempt = 0
                delay = backoff_delay(
                    attempt, initial=self._backoff_initial, maximum=self._backoff_max, rng=self._rng
                )
                attempt += 1
                self._log.info("mqtt.reconnect_wait", delay=round(delay, 3))
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._log.info("mqtt.stopped", queued=len(self._events), dropped=self._dropped)
            raise
        finally:
            self._running = False
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _session(self) -> None:
        """One connection's life: returns or raises when it ends."""
        config = self._config
        password = config.password.reveal() if config.password is not None else None
        client = aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=password,
            identifier=config.client_id,
            # Without an alerts subscription there is nothing to keep, and a clean session
            # drops a subscription an earlier configuration left behind.
            clean_session=self._alerts_topic is None,
            keepalive=self._keepalive,
            timeout=self._timeout,
            tls_context=ssl.create_default_context() if config.tls else None,
            max_queued_incoming_messages=1000,
            logger=_paho_logger(),
        )
        async with client:
            if self._alerts_topic is not None:
                granted = await client.subscribe(self._alerts_topic, qos=1)
                if any(_refused(code) for code in granted):
                    self._log.error("mqtt.subscribe_refused", topic=self._alerts_topic)
            self._connected = True
            self._connections += 1
            self._log.info(
                "mqtt.connected",
                host=config.host,
                port=config.port,
                tls=config.tls,
                client_id=config.client_id,
                alerts_topic=self._alerts_topic,
                queued=len(self._events),
                dropped=self._dropped,
            )
            publisher = asyncio.create_task(self._publish_events(client), name="mqtt-publish")
            reader = asyncio.create_task(self._read_messages(client), name="mqtt-read")
            try:
                done, _ = await asyncio.wait(
                    {publisher, reader}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                publisher.cancel()
                reader.cancel()
                await asyncio.gather(publisher, reader, return_exceptions=True)
                # Only now: the event in flight is back in the queue (or counted).
                self._connected = False
            for task in done:
                task.result()  # the error that ended the connection

    async def _publish_events(self, client: aiomqtt.Client) -> None:
        events = self._events
        while True:
            while not events:
                self._queue_was_full = False
                self._events_ready.clear()
                await self._events_ready.wait()
            event = events.popleft()
            try:
                await client.publish(event[0], event[1], qos=1)
            except BaseException:
                # Not acknowledged: back to the front, unless newer events filled the queue
                # meanwhile; then it is the oldest, and the one to drop.
                if len(events) == events.maxlen:
                    self._dropped += 1
                else:
                    events.appendleft(event)
                raise
            self._published += 1

    async def _read_messages(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self._alerts_topic is None or not message.topic.matches(self._alerts_topic):
                # A subscription left in the broker's session by an earlier configuration.
                self._log.info("mqtt.message_ignored", topic=_short(message.topic.value))
                continue
            self._accept_alert(message.topic.value, message.payload)

    def _accept_alert(self, topic: str, payload: object) -> None:
        self._alerts_received += 1
        try:
            alert = parse_alert(payload)  # type: ignore[arg-type]  # checked inside
        except AlertInvalid as error:
            self._alerts_invalid += 1
            size = len(payload) if isinstance(payload, bytes | bytearray | str) else None
            self._log.warning(
                "mqtt.alert_invalid", topic=_short(topic), size=size, reason=_short(str(error))
            )
            return
        self._log.info(
            "mqtt.alert_received",
            customer=alert.customer_id,
            severity=alert.severity,
            dedupe_key=alert.dedupe_key,
        )
        try:
            self._alerts.put_nowait(alert)
        except asyncio.QueueFull:
            self._alerts_dropped += 1
            self._log.error(
                "mqtt.alert_dropped",
                customer=alert.customer_id,
                dedupe_key=alert.dedupe_key,
                backlog=self._alerts.maxsize,
            )

    async def _handle_alerts(self) -> None:
        handler = self._on_alert
        if handler is None:
            return
        while True:
            alert = await self._alerts.get()
            try:
                await handler(alert)
            except Exception as error:  # one alert must not stop the others
                self._alerts_failed += 1
                self._log.error(
                    "mqtt.alert_handler_failed",
                    customer=alert.customer_id,
                    dedupe_key=alert.dedupe_key,
                    error=_short(repr(error)),
                )


def _refused(code: int | ReasonCode) -> bool:
    # MQTT 3.1.1 grants a QoS (0-2) per topic or answers 0x80; MQTT 5 reason codes agree.
    return code.is_failure if isinstance(code, ReasonCode) else code >= 0x80


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise AlertInvalid(f"field {_short(repr(name), 60)} appears twice")
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    raise AlertInvalid(f"payload is not JSON: {name} is not a number")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _paho_logger() -> logging.Logger:
    # paho reports through the stdlib what `run` already logs as mqtt.link_down; unhandled
    # it would reach stderr as plain text beside the JSON log lines.
    quiet = logging.getLogger(f"{__name__}.paho")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    return quiet


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def _short(text: str, limit: int = _LOG_TEXT_MAX) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
