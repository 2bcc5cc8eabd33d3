"""The Firstline daemon: the one composition root that wires the parts together.

It builds the AMI link, the FastAGI server and the metrics endpoint from the validated
config, connects their callbacks, and runs until SIGTERM/SIGINT. Nothing imports this
module but the CLI. Decisions come from the pure core (``acd.routing``); this module only
turns them into AGI commands and AMI actions, and logs what Asterisk reports.

The FastAGI server is served whether or not AMI is up: routing a caller never waits for the
manager link. A refused AMI login is a configuration error and ends the daemon (exit 2)
instead of retrying forever; a lost connection is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import signal
import socket
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from acd.agi import AgiSession
from acd.agi.server import AgiServer
from acd.ami import (
    ActionResult,
    AmiAuthenticationError,
    AmiClient,
    AmiError,
    AmiTimeout,
    Event,
)
from acd.config import Agent, Config, ConfigInvalid, SecretUnavailableError, load_config
from acd.expected_wait import expected_wait
from acd.live_view import handle_times, routing_view
from acd.mailer import Mailer
from acd.membership import Member, membership_changes
from acd.mqtt import MqttLink
from acd.numbers import normalise_number
from acd.routing import (
    CallFacts,
    CustomerFacts,
    RoutingTable,
    RoutingView,
    TicketFacts,
    decide_route,
    decide_transfer,
    explain_agents,
    parse_skill_list,
    queue_memberships,
)
from acd.state import (
    AgentChanged,
    Anomaly,
    CallFinished,
    Change,
    FinishedCall,
    LiveState,
    Outcome,
    StateSnapshot,
)
from acd.state_machines import AgentState
from acd.tickets import (
    Alert,
    AlertStore,
    CallbackStore,
    CallChange,
    CallJournal,
    CallStore,
    PendingSummary,
    Ticket,
    TicketOutbox,
    TicketStore,
    TicketStoreError,
    alert_priority,
    deadline_from_config,
    migrate,
)
from acd.tickets.calls import arrival, finish, recording
from acd.tickets.calls import rating as call_rating
from callback.dialer import TALK_LEASE, CallbackDialer
from callback.escape import Booking, run_escape
from callback.schedule import welcome_announcement
from ivr.flow import FlowError, FlowResult, caller_facts
from ivr.prompts import PromptError, install_for_config
from ivr.runner import run_flow
from metrics import DeskMetrics, HealthMetrics, MetricsExporter
from metrics.wallboard import DayFigures, WallboardServer, board
from pbx_config import RenderError, render, write_rendered

__all__ = ["Daemon"]

# Modules whose files the renderer owns and that reload without dropping calls.
_RELOADED_MODULES = ("app_queue", "pbx_config", "res_pjsip")


def _live_state(config: Config, now: float) -> LiveState:
    return LiveState(
        agent_interfaces={agent.dial_interface: agent.id for agent in config.agents},
        wrapup_seconds={queue.id: queue.wrapup for queue in config.queues},
        short_abandon_seconds={queue.id: queue.short_abandon for queue in config.queues},
        max_wait_seconds={queue.id: queue.max_wait for queue in config.queues},
        now=now,
    )


def _links(config: Config) -> tuple[object, ...]:
    """The settings a reload cannot change (the daemon's own sockets)."""
    link = config.daemon
    return (link.agi, link.ami.host, link.ami.port, link.ami.username, link.metrics)


# The queue events that make up a call's journey; logged with the caller's unique id.
CALL_EVENTS = (
    "QueueCallerJoin",
    "AgentCalled",
    "AgentRingNoAnswer",
    "AgentConnect",
    "AgentComplete",
    "AgentDump",
    "QueueCallerLeave",
    "QueueCallerAbandon",
)
_AGENT_DONE = frozenset({"logged-in", "logged-out", "paused", "resumed"})
EXIT_OK = 0
EXIT_AMI_REFUSED = 2
EXIT_STORE_UNAVAILABLE = 3
EXIT_AMI_UNREACHABLE = 4
# Asterisk answers AMI logins while it still loads its modules (QueueStatus before
# app_queue is loaded fails): the state is read once Asterisk says FullyBooted, and a
# resync that still finds a part missing tries again for a while.
_BOOT_WAIT = 15.0
_RESYNC_RETRY = 0.5
_RESYNC_PATIENCE = 30.0
_DIALER_PERIOD = 1.0
# How long a change waits for the next ones before gauges and the wall screen show them all:
# each refresh walks every agent and caller, and neither a wall screen nor a scrape every
# few seconds tells half a second from a tenth (the clock's tick refreshes as often).
_DESK_REFRESH_DELAY = 0.5
# How long the queues' handle times (the last thousand finished calls, read again whenever
# one more finished) stand for the next ones: a second more or less moves no estimate.
_HANDLE_TIMES_MAX_AGE = 1.0
# The IVR menu's priority hint enters routing as a pseudo-ticket of that priority.
_MENU_HINT = "ivr-menu"
_PENDING_PERIOD = 5.0
# At stop, call records still waiting get this long to be written.
_RECORDS_DRAIN_SECONDS = 5.0
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9.-]")


def _ticket_facts(tickets: Sequence[Ticket], flow: FlowResult | None) -> tuple[TicketFacts, ...]:
    """The caller's open tickets as routing weighs them, with the menu's priority hint."""
    # A new request (the menu said so): the tickets still raise the priority, their
    # owners wait.
    owners = flow is None or flow.wants_owner
    facts = tuple(
        TicketFacts(number=t.number, priority=t.priority, owner=t.owner if owners else None)
        for t in tickets
    )
    if flow is not None and flow.priority is not None:
        # The menu's priority hint raises the call like a ticket of that priority.
        facts += (TicketFacts(number=_MENU_HINT, priority=flow.priority, owner=None),)
    return facts


def _safe_name(text: str) -> str:
    """`text` as a file-name part or dialplan argument: no separators, at most 64 chars."""
    return _UNSAFE_CHARS.sub("_", text)[:64]


class Daemon:
    """Runs Firstline against one Asterisk until stopped."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        asterisk_conf_dir: Path | None = None,
        asterisk_sounds_dir: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._store_url = config.store.resolved_url(
            config_path.parent if config_path else Path.cwd()
        )
        self._store: TicketStore | None = None
        self._callbacks: CallbackStore | None = None
        self._calls: CallJournal | None = None
        self._dialer: CallbackDialer | None = None
        self._alerts: AlertStore | None = None
        self._asterisk_conf_dir = asterisk_conf_dir
        self._asterisk_sounds_dir = asterisk_sounds_dir
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._log = structlog.get_logger("acd.daemon")
        self._registry = CollectorRegistry()
        self._health = HealthMetrics(self._registry)
        self._stop = asyncio.Event()
        link = config.daemon
        self._ami = AmiClient(
            host=link.ami.host,
            port=link.ami.port,
            username=link.ami.username,
            secret=link.ami.secret.reveal(),
            on_connected=self._ami_logged_in,
            on_disconnected=self._ami_lost,
            reconnect=True,
        )
        self._state = _live_state(config, self._now())
        self._table = RoutingTable(config)
        self._view_cache: tuple[StateSnapshot, RoutingView] | None = None
        # (finished calls counted, when, the queues' handle times)
        self._handle_times: tuple[int, float, Mapping[str, Sequence[float]]] | None = None
        self._desk = DeskMetrics(self._registry, queues=[queue.id for queue in config.queues])
        self._desk_refresh: asyncio.TimerHandle | None = None
        self._ami.subscribe(None, self._on_ami_event)
        self._agi = AgiServer(
            host=link.agi.host,
            port=link.agi.port,
            max_sessions=link.agi.max_sessions,
            handlers={
                "route": self._route,
                "agent": self._agent_feature,
                "transfer": self._transfer,
                "callback": self._callback,
                "callback-dial": self._callback_dial,
                "callback-result": self._callback_result,
                "callback-extended": self._callback_extended,
                "rate": self._rate,
            },
            on_request_done=self._health.agi_request_done,
        )
        self._exporter = MetricsExporter(
            self._registry, host=link.metrics.host, port=link.metrics.port
        )
        self._mqtt = (
            MqttLink(
                config.mqtt,
                on_alert=self._open_alert_ticket if config.mqtt.alerts_topic else None,
                logger=self._log.bind(part="mqtt"),
            )
            if config.mqtt is not None
            else None
        )
        # The wall screen's "today": calls counted on the desk's local day (first site).
        self._day = DayFigures(
            {queue.id: queue.service_level for queue in config.queues},
            zoneinfo.ZoneInfo(config.sites[0].timezone),
            self._now(),
        )
        self._callback_summary: list[PendingSummary] = []
        self._wallboard = (
            WallboardServer(
                link.wallboard.host, link.wallboard.port, logger=self._log.bind(part="wallboard")
            )
            if link.wallboard is not None
            else None
        )

    def _now(self) -> float:
        return self._clock().timestamp()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
        try:
            await migrate(self._store_url)
        except (SQLAlchemyError, OSError) as error:
            self._log.error("daemon.store_unavailable", error=str(error))
            return EXIT_STORE_UNAVAILABLE
        self._store = TicketStore(self._store_url)
        self._start_callbacks_and_mail(self._store)
        await self._agi.start()
        await self._exporter.start()
        if self._wallboard is not None:
            await self._wallboard.start()
        self._log.info(
            "daemon.started",
            agi_port=self._agi.port,
            metrics_port=self._exporter.port,
            wallboard_port=self._wallboard.port if self._wallboard is not None else None,
            ami=f"{self._config.daemon.ami.host}:{self._config.daemon.ami.port}",
        )
        ami_task = asyncio.create_task(self._ami.run(), name="ami")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        first_login = asyncio.create_task(self._first_login(), name="first-login")
        ticker = asyncio.create_task(self._tick_forever(), name="state-timers")
        self._background.add(ticker)
        exit_code = EXIT_OK
        try:
            done, _ = await asyncio.wait(
                {ami_task, stop_task, first_login}, return_when=asyncio.FIRST_COMPLETED
            )
            if done == {first_login} and first_login.result():
                # Logged in: from now on a lost link is retried, never a reason to exit.
                await asyncio.wait({ami_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if first_login.done() and not first_login.result():
                exit_code = EXIT_AMI_UNREACHABLE
            elif ami_task.done():
                exit_code = self._ami_exit_code(ami_task.exception())
        finally:
            stop_task.cancel()
            first_login.cancel()
            ami_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ami_task
            await self._close_links()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for task in self._background:
                task.cancel()
            self._log.info("daemon.stopped", exit_code=exit_code)
        return exit_code

    def _ami_exit_code(self, error: BaseException | None) -> int:
        """The exit code for the AMI task having ended (by itself only on an error)."""
        if isinstance(error, AmiAuthenticationError):
            self._log.error("daemon.ami_login_refused", error=str(error))
            return EXIT_AMI_REFUSED
        if error is not None:
            self._log.error("daemon.ami_failed", error=repr(error))
            return 1
        return EXIT_OK

    async def _close_links(self) -> None:
        await self._ami.close()
        await self._agi.close()
        await self._exporter.close()
        if self._wallboard is not None:
            await self._wallboard.close()
        if self._calls is not None and not await self._calls.drain(_RECORDS_DRAIN_SECONDS):
            self._log.warning("call.records_unwritten", pending=self._calls.pending)
        if self._store is not None:
            await self._store.aclose()

    async def _first_login(self) -> bool:
        """False when Asterisk's AMI did not let us in within the configured startup wait.

        Meanwhile the FastAGI server already serves: calls are routed, the state fills in
        once the link is up. Not waiting forever by default makes a wrong host or a closed
        port a clear error at start rather than a daemon that quietly never sees a call.
        """
        wait = self._config.daemon.ami.startup_wait
        try:
            await self._ami.wait_logged_in(timeout=wait)
        except AmiTimeout:
            ami = self._config.daemon.ami
            self._log.error(
                "daemon.ami_unreachable",
                ami=f"{ami.host}:{ami.port}",
                waited=wait,
                hint="is Asterisk running, and does manager.conf enable AMI on that port?",
            )
            return False
        except AmiError:
            pass  # run() ended with it: the AMI task says why
        return True

    def _start_callbacks_and_mail(self, store: TicketStore) -> None:
        """The callback dialer and the customers' mailer, both fed by the store."""
        self._callbacks = CallbackStore(
            store.engine, booking_lock_wait=self._config.daemon.route_timeout
        )
        self._calls = CallJournal(CallStore(store.engine), on_lost=self._record_lost)
        self._background.add(asyncio.create_task(self._calls.run(), name="call-records"))
        if self._config.callback.dial is None:
            self._log.warning(
                "callback.dialing_disabled",
                reason="callback.dial is not set: callbacks are booked but nobody is called",
            )
        else:
            self._dialer = CallbackDialer(
                self._config,
                self._callbacks,
                self._originate,
                owner=f"{socket.gethostname()}:{self._config.daemon.agi.port}"[:64],
            )
        self._background.add(asyncio.create_task(self._callbacks_forever(), name="callbacks"))
        if self._config.mail is not None:
            # Customers' e-mails from the outbox the store fills with every ticket change
            # (whoever made it: this daemon, the CLI, another daemon).
            try:
                mailer = Mailer(
                    TicketOutbox(store.engine),
                    self._config.mail,
                    hotline_languages=self._config.hotline.languages,
                    clock=self._clock,
                )
            except SecretUnavailableError as error:
                # Calls matter more than mail: run, say it loudly, keep the outbox filling.
                self._log.error("mail.disabled", error=str(error))
            else:
                self._background.add(asyncio.create_task(mailer.run(), name="mailer"))
        if self._mqtt is not None:
            self._alerts = AlertStore(store.engine)
            self._background.add(asyncio.create_task(self._mqtt.run(), name="mqtt"))

    # --- MQTT --------------------------------------------------------------------------

    def _event_out(self, kind: str, payload: dict[str, Any]) -> None:
        """Hand an event to the MQTT link (never waits: a lost broker costs events, not
        calls; the link counts what it drops)."""
        if self._mqtt is not None:
            self._mqtt.publish(kind, {**payload, "time": self._clock().isoformat()})

    async def _open_alert_ticket(self, alert: Alert) -> None:
        """A monitoring system reported an incident at a customer: a top-priority ticket,
        once per dedupe key, in the alerts queue (default: the hotline's first level)."""
        assert self._alerts is not None
        assert self._store is not None
        mqtt = self._config.mqtt
        assert mqtt is not None
        customer = await self._store.customer(alert.customer_id)
        priority, rank = alert_priority(self._config.sla)
        package = (
            customer.sla_package if customer.sla_package in self._config.sla.packages else None
        )
        now = self._clock()
        deadline = deadline_from_config(
            self._config.sla,
            self._config.sites[0],
            priority=priority,
            package=package,
            created_at=now,
        )
        queue = self._config.queue(mqtt.alerts_queue or self._config.hotline.default_queue)
        ticket = await self._alerts.open_ticket(
            alert,
            now=now,
            priority=priority,
            priority_rank=rank,
            deadline=deadline,
            queue=queue.id,
            skills=dict(queue.skills),
        )
        self._log.info(
            "alert.ticket",
            ticket=ticket.number,
            created=ticket.created,
            customer=alert.customer_id,
            severity=alert.severity,
            dedupe_key=alert.dedupe_key,
        )
        if ticket.created:
            self._event_out(
                "ticket",
                {
                    "event": "opened",
                    "ticket": ticket.number,
                    "customer": alert.customer_id,
                    "queue": queue.id,
                    "priority": priority,
                    "actor": "auto-informer",
                },
            )

    # --- Reload ------------------------------------------------------------------------

    def _reload_in_background(self) -> None:
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Re-read the config file and apply it live; an invalid file changes nothing.

        Order matters: the new config is validated first, then the rendered Asterisk files
        are replaced and only the modules that read them are reloaded (app_queue keeps its
        waiting callers and dynamic members across a reload), then logged-in agents'
        memberships are adjusted through AMI. Nobody is logged out and no call is touched.
        """
        if self._config_path is None:
            self._log.warning("config.reload_unavailable", reason="no config file path")
            return False
        async with self._reload_lock:
            try:
                new = load_config(self._config_path, check_secrets=True)
            except ConfigInvalid as invalid:
                for issue in invalid.issues:
                    self._log.error("config.invalid", issue=str(issue))
                self._log.error("config.reload_rejected", errors=len(invalid.issues))
                return False
            try:
                files = render(new)
            except (RenderError, SecretUnavailableError) as error:
                self._log.error("config.reload_rejected", error=str(error))
                return False
            if self._asterisk_sounds_dir is not None:
                try:
                    # Generating a changed prompt runs espeak-ng and sox: off the event loop.
                    await asyncio.to_thread(install_for_config, new, self._asterisk_sounds_dir)
                except (PromptError, OSError) as error:
                    self._log.error("config.reload_rejected", error=str(error))
                    return False
            if _links(new) != _links(self._config):
                self._log.warning("config.links_changed_need_restart")
            try:
                if self._asterisk_conf_dir is not None:
                    write_rendered(files, self._asterisk_conf_dir)
                    for module in _RELOADED_MODULES:
                        result = await self._ami.action("Reload", {"Module": module})
                        if not result.ok:
                            self._log.error(
                                "config.module_reload_failed",
                                module=module,
                                error=result.response.message,
                            )
                applied = await self._apply_memberships(new)
            except AmiError as error:
                # The new config is still taken: the next login or reload re-applies it.
                self._log.error("config.reload_incomplete", error=str(error))
                applied = -1
            self._config = new
            self._day.reconfigure({queue.id: queue.service_level for queue in new.queues})
            if self._dialer is not None:
                self._dialer.reconfigure(new)
            self._table = RoutingTable(new)
            self._state = _live_state(new, self._now())
            self._handle_times = None  # a new state counts its finished calls from 0
            await self._resync()
            self._log.info("config.reloaded", membership_changes=applied)
            return True

    async def _apply_memberships(self, config: Config) -> int:
        status = await self._ami.action("QueueStatus")
        members = [
            Member(
                queue=event.get("Queue") or "",
                interface=event.get("StateInterface") or event.get("Location") or "",
                penalty=int(event.get("Penalty") or 0),
                paused=event.get("Paused") == "1",
                paused_reason=event.get("PausedReason") or "",
            )
            for event in status.events
            if event.name == "QueueMember"
        ]
        changes = membership_changes(config, members)
        for change in changes:
            if change.kind == "penalty":
                fields = {
                    "Queue": change.queue,
                    "Interface": change.interface,
                    "Penalty": str(change.penalty),
                }
                result = await self._ami.action("QueuePenalty", fields)
            elif change.kind == "add":
                result = await self._queue_add(
                    change.queue,
                    change.interface,
                    penalty=change.penalty,
                    member_name=change.member_name,
                    paused=change.paused,
                    reason=change.paused_reason,
                )
            else:
                fields = {"Queue": change.queue, "Interface": change.interface}
                result = await self._ami.action("QueueRemove", fields)
            self._log.info(
                "agent.membership_changed",
                agent=change.agent_id,
                change=change.kind,
                queue=change.queue,
                penalty=change.penalty,
                ok=result.ok,
            )
        return len(changes)

    # --- AMI ---------------------------------------------------------------------------

    async def _ami_logged_in(self, client: AmiClient) -> None:
        self._health.ami_logged_in()
        self._refresh_wallboard()
        known = self._state.snapshot()  # who was logged in before the link dropped
        if not await client.wait_fully_booted(_BOOT_WAIT):
            self._log.warning(
                "ami.boot_unconfirmed",
                waited=_BOOT_WAIT,
                hint="Asterisk sent no FullyBooted: the AMI user needs read = system",
            )
        if await self._resync() and client.reconnects:
            await self._restore_memberships(known)

    async def _restore_memberships(self, known: StateSnapshot) -> None:
        """Give back the queue memberships Asterisk lost while we were apart.

        A restarted Asterisk without its astdb (a new host, a wiped disk) forgets its
        dynamic members: the agents who were taking calls would silently stop getting
        them. What Asterisk still has is kept as it is (it may be newer than our view).
        """
        now = self._state.snapshot()
        restored = 0
        for agent_id, before in known.agents.items():
            if before.state is AgentState.LOGGED_OUT:
                continue
            try:
                agent = self._config.agent(agent_id)
            except KeyError:
                continue  # removed from the config by a reload meanwhile
            current = now.agents.get(agent_id)
            have = set(current.queues) if current is not None else set()
            for queue_id, member in before.queues.items():
                if queue_id in have:
                    continue
                try:
                    result = await self._queue_add(
                        queue_id,
                        agent.dial_interface,
                        penalty=member.penalty,
                        member_name=agent.name,
                        paused=member.paused,
                        reason=member.pause_reason or "",
                    )
                except AmiError as error:
                    self._log.error("agent.restore_failed", agent=agent_id, error=str(error))
                    return
                restored += result.ok
        if restored:
            self._log.warning("agent.memberships_restored", memberships=restored)

    async def _resync(self) -> bool:
        """Rebuild the live state from what Asterisk reports (after every login and
        reload); False when Asterisk could not tell, and the state is left as it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RESYNC_PATIENCE
        while True:
            try:
                status = await self._ami.action("QueueStatus")
                channels = await self._ami.action("CoreShowChannels")
            except AmiError as error:
                self._log.error("state.resync_failed", error=str(error))
                return False
            answers = {"QueueStatus": status, "CoreShowChannels": channels}
            refused = [f"{name}: {r.response.message}" for name, r in answers.items() if not r.ok]
            if not refused:
                break
            # Its empty answer would read as "no members, no callers": never resync on it.
            why = "; ".join(refused)
            if loop.time() >= deadline:
                self._log.error("state.resync_failed", error=why)
                return False
            self._log.warning("state.resync_retry", error=why, delay=_RESYNC_RETRY)
            await asyncio.sleep(_RESYNC_RETRY)
        self._publish(self._state.resync(status.events, channels.events, self._now()))
        snapshot = self._state.snapshot()
        self._log.info(
            "state.resynced",
            agents={state.value: n for state, n in snapshot.agent_counts.items() if n},
            waiting={q: len(view.waiting) for q, view in snapshot.queues.items() if view.waiting},
        )
        return True

    async def _tick_forever(self) -> None:
        # Wrap-up ends are the state's only timers, and the oldest-wait gauge moves with
        # the clock: half a second is precise enough for both.
        while True:
            await asyncio.sleep(0.5)
            now = self._now()
            self._publish(self._state.tick(now))
            self._export_expected_waits(now)
            self._refresh_desk()  # the oldest wait grows without any event
            if self._mqtt is not None:
                self._health.mqtt_link(
                    connected=self._mqtt.connected,
                    published=self._mqtt.published,
                    queued=self._mqtt.queued,
                    dropped=self._mqtt.dropped,
                )

    def _desk_changed(self) -> None:
        """Refresh the gauges and the wall screen soon: a burst of AMI events (a dozen per
        call, more at a reload) costs one rebuild of the desk's picture, not one each."""
        if self._desk_refresh is None:
            self._desk_refresh = asyncio.get_running_loop().call_later(
                _DESK_REFRESH_DELAY, self._refresh_desk
            )

    def _refresh_desk(self) -> None:
        if self._desk_refresh is not None:
            self._desk_refresh.cancel()  # when called before the timer, the timer has no work
            self._desk_refresh = None
        self._desk.update_gauges(self._state.snapshot(), self._now())
        self._refresh_wallboard()

    def _refresh_wallboard(self) -> None:
        """Hand the wall screen the desk as it is now (unchanged boards are not re-sent)."""
        if self._wallboard is None:
            return
        self._wallboard.publish(
            board(
                self._state.snapshot(),
                self._day,
                self._callback_summary,
                self._now(),
                {queue.id: queue.name for queue in self._config.queues},
                link_up=self._ami.connected,
            )
        )

    def _export_expected_waits(self, now: float) -> None:
        """What a caller joining each queue now would be expected to wait (NaN: no reliable
        estimate, e.g. nobody logged in or too few answered calls to know a handle time)."""
        view = self._routing_view(now)
        for queue in self._config.queues:
            load = view.queues.get(queue.id)
            estimate = expected_wait(load.snapshot) if load is not None else None
            if estimate is not None and estimate.reliable:
                self._desk.set_expected_wait(queue.id, estimate.seconds)
            else:
                self._desk.set_expected_wait(queue.id, None)

    def _publish(self, changes: list[Change]) -> None:
        """Log what the live state says changed; metrics observe the same records."""
        if not changes:
            return
        self._desk.observe(changes)
        self._day.observe(changes, self._now())
        self._desk_changed()
        for change in changes:
            if isinstance(change, CallFinished):
                record = change.record
                if not record.held_place:
                    self._record_finish(record)
                finished = {
                    "uniqueid": record.uniqueid,
                    "queue": record.queue,
                    "outcome": record.outcome.value,
                    "wait": None if record.wait is None else round(record.wait, 3),
                    "talk": None if record.talk is None else round(record.talk, 3),
                    "agent": record.agent_id,
                }
                self._log.info("call.finished", **finished)
                if not record.held_place:
                    self._event_out("call", {"event": "finished", **finished})
            elif isinstance(change, AgentChanged):
                agent = {
                    "agent": change.agent_id,
                    "before": change.before.value,
                    "after": change.after.value,
                    "reason": change.pause_reason,
                }
                self._log.info("agent.state", **agent)
                self._event_out("agent", {"event": "state", **agent})
            elif isinstance(change, Anomaly):
                self._log.warning(
                    "state.anomaly", kind=change.kind, detail=change.detail, ami_event=change.event
                )

    async def _ami_lost(self, _client: AmiClient) -> None:
        self._health.ami_lost()
        self._refresh_wallboard()

    def _on_ami_event(self, event: Event) -> None:
        if event.name == "OriginateResponse" and self._dialer is not None:
            self._spawn(
                self._dialer.originate_ended(
                    event.get("Uniqueid") or "", event.get("Response") == "Success", self._clock()
                )
            )
        if event.name in CALL_EVENTS:
            # Before the state applies it: a hangup retires the call and its queue with it.
            self._log_call_event(event, self._state.queue_of(event.get("Uniqueid") or ""))
        self._publish(self._state.apply(event, self._now()))

    def _log_call_event(self, event: Event, known_queue: str | None) -> None:
        self._log.info(
            "call.event",
            ami_event=event.name,
            uniqueid=event.get("Uniqueid"),
            queue=event.get("Queue") or known_queue,
            channel=event.get("Channel"),
            member=event.get("MemberName") or None,
            position=event.get("Position") or None,
        )

    # --- FastAGI -----------------------------------------------------------------------

    async def _route(self, session: AgiSession) -> None:
        env = session.request.env
        args = session.request.args
        skills_text = await session.get_variable("FIRSTLINE_SKILLS") or ""
        required, ignored = parse_skill_list(
            skills_text, {skill.id for skill in self._config.skills}
        )
        if ignored:
            session.log.warning("call.skills_ignored", ignored=ignored)
        caller = env.get("agi_callerid", "")
        uniqueid = env.get("agi_uniqueid", "")
        customer, tickets, customer_id = await self._caller_record(session, caller)
        language = env.get("agi_language", "")
        flow = await self._run_ivr(session, caller, tickets, uniqueid)
        # The dialplan's variables go in as few round trips as they can, once decided.
        variables: dict[str, str] = {}
        if flow is not None:
            language = flow.language
            required = {**required, **flow.skills}
            if flow.skills:
                # At once: the callback and transfer steps read it even when routing fails.
                await session.set_variable("FIRSTLINE_SKILLS", flow.skills_text())
            if flow.category:
                variables["FIRSTLINE_CATEGORY"] = flow.category
        self._record_arrival(
            uniqueid=uniqueid,
            caller=caller,
            customer_id=customer_id,
            language=language,
            skills=dict(required),
            flow=flow,
        )
        if flow is not None and flow.fell_back:
            # No usable answer: the dialplan's fallback queue, never a hang-up.
            session.log.info("call.ivr_fallback", reason=flow.reason, failed_at=flow.failed_at)
            await session.set_variables({**variables, "FIRSTLINE_ROUTE": "ivr-fallback"})
            return
        facts = CallFacts(
            uniqueid=uniqueid,
            # Caller ID is whatever the far end sent: only a valid number goes on.
            caller_number=normalise_number(caller, self._config.hotline.region) or "",
            customer=customer,
            open_tickets=_ticket_facts(tickets, flow),
            # The hotline passes the number the caller dialled as the first argument.
            dialed=args[0] if args else env.get("agi_extension", ""),
            language=language,
            required_skills=required,
        )
        async with asyncio.timeout(self._config.daemon.route_timeout):
            now = self._clock()
            view = self._routing_view(now.timestamp())
            decision = decide_route(self._config, facts, now, view, table=self._table)
            session.log = session.log.bind(queue=decision.queue)
            self._event_out(
                "call",
                {
                    "event": "routed",
                    "uniqueid": uniqueid,
                    "caller": facts.caller_number,
                    "queue": decision.queue,
                    "status": decision.status,
                    "priority": decision.priority,
                    "customer": customer_id,
                },
            )
            try:
                announce = (
                    welcome_announcement(self._config.queue(decision.queue), decision.expected_wait)
                    if decision.queue is not None
                    else ()
                )
                if announce:
                    variables["FIRSTLINE_ANNOUNCE"] = "&".join(announce)
                if decision.queue is None:
                    # Closed or unroutable: until the IVR can offer a callback, the dialplan's
                    # fallback queue keeps the caller with a person rather than hanging up.
                    await session.set_variables({**variables, "FIRSTLINE_ROUTE": decision.status})
                    return
                # What the agent's phone shows (SIP headers on the ringing leg): only ids the
                # store made or the admin imported, made safe for dialplan arguments.
                ticket = tickets[0].number if tickets else None
                if ticket:
                    variables["FIRSTLINE_TICKET"] = ticket
                if customer_id:
                    variables["FIRSTLINE_CUSTOMER"] = _safe_name(customer_id)
                await self._hand_to_queue(
                    session,
                    decision.queue,
                    priority=str(decision.priority),
                    max_penalty=decision.max_penalty,
                    max_wait=decision.max_wait,
                    preferred_agent=decision.preferred_agent,
                    ticket=ticket,
                    variables=variables,
                )
            finally:
                # Once the dialplan has what it needs (or the caller left meanwhile): the
                # line's time marks the end of the route's work (bench/load.py reads it).
                session.log.info(
                    "call.routed",
                    status=decision.status,
                    priority=decision.priority,
                    max_penalty=decision.max_penalty,
                    overflowed_from=decision.overflowed_from,
                    preferred_agent=decision.preferred_agent,
                    open_tickets=[t.number for t in facts.open_tickets if t.number != _MENU_HINT],
                    expected_wait=(
                        decision.expected_wait.seconds if decision.expected_wait else None
                    ),
                    caller=facts.caller_number,
                    reasons=list(decision.reasons),
                    eligible=[
                        f"{agent}:{status}" for agent, status in explain_agents(decision, view)
                    ],
                    excluded=dict(decision.excluded),
                )
        self._publish(
            self._state.note_route(
                facts.uniqueid,
                self._now(),
                caller_number=facts.caller_number,
                priority=decision.priority,
                queue=decision.queue,
            )
        )

    def _record_finish(self, record: FinishedCall) -> None:
        if self._calls is None:
            return

        def instant(seconds: float | None) -> dt.datetime | None:
            return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)

        answered = None
        if record.outcome is Outcome.ANSWERED and record.joined_at is not None:
            answered = instant(record.joined_at + (record.wait or 0.0))
        self._journal(
            record.uniqueid,
            lambda: finish(
                record.uniqueid,
                now=instant(record.ended_at) or self._clock(),
                queue=record.queue,
                outcome=record.outcome.value,
                joined_at=instant(record.joined_at),
                answered_at=answered,
                agent=record.agent_id,
            ),
        )

    def _journal(self, uniqueid: str, build: Callable[[], CallChange]) -> None:
        """Queue a change of the call's record; one the store could not hold (a refused
        value) is logged and dropped: the call goes on without it."""
        if self._calls is None:
            return
        try:
            change = build()
        except TicketStoreError as error:
            self._log.warning("call.record_failed", uniqueid=uniqueid, error=repr(error))
            return
        self._calls.add(change)

    def _record_lost(self, change: CallChange, error: BaseException) -> None:
        self._log.warning(
            "call.record_failed",
            uniqueid=change.uniqueid,
            change=change.kind.value,
            error=repr(error),
        )

    async def _run_ivr(
        self, session: AgiSession, caller: str, tickets: tuple[Ticket, ...], uniqueid: str
    ) -> FlowResult | None:
        """Take the caller through the configured IVR (none configured: None).

        Caller-paced, so outside the route budget; every command has its own timeout. A
        broken menu is logged and the call falls back, never hangs up.
        """
        ivr = self._config.ivr
        if ivr is None:
            return None
        hotline = self._config.hotline
        facts = caller_facts(
            caller, region=hotline.region, languages=hotline.languages, tickets=tickets
        )
        recording = None
        if ivr.record_description is not None:
            safe_uid = _safe_name(uniqueid)
            recording = f"/var/spool/asterisk/monitor/firstline-ivr-{safe_uid}"
        try:
            flow = await run_flow(session, ivr, facts, recording_base=recording)
        except FlowError as error:
            session.log.exception("call.ivr_failed", error=str(error))
            return FlowResult(language=hotline.languages[0], fell_back=True, reason="invalid-input")
        session.log.info(
            "call.ivr",
            language=flow.language,
            menu_path=flow.menu_path,
            category=flow.category,
            skills=dict(flow.skills),
            priority=flow.priority,
            answers=sorted(flow.answers),
            wants_owner=flow.wants_owner,
            fell_back=flow.fell_back,
            reason=flow.reason,
        )
        return flow

    def _record_arrival(
        self,
        *,
        uniqueid: str,
        caller: str,
        customer_id: str | None,
        language: str,
        skills: dict[str, int],
        flow: FlowResult | None,
    ) -> None:
        """The call's record, written behind the call: a slow or broken store costs the
        record only."""
        if self._calls is None or not uniqueid:
            return
        self._journal(
            uniqueid,
            lambda: arrival(
                uniqueid,
                now=self._clock(),
                caller_number=normalise_number(caller, self._config.hotline.region),
                language=language or None,
                skills=skills,
                answers=flow.answers if flow else None,
                category=flow.category if flow else None,
                customer_id=customer_id,
                recording_path=flow.recording if flow else None,
            ),
        )

    async def _hand_to_queue(
        self,
        session: AgiSession,
        queue: str,
        *,
        priority: str,
        max_penalty: int,
        max_wait: int,
        preferred_agent: str | None,
        ticket: str | None,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        """Set the channel variables the dialplan's ``queue`` step reads (route and
        transfer), after `variables`; `ticket` is the caller's, for a recording's link."""
        chosen = dict(variables or {})
        if preferred_agent is not None:
            preferred = self._config.agent(preferred_agent)
            chosen["FIRSTLINE_PREFERRED"] = preferred.dial_interface
            chosen["FIRSTLINE_PREFERRED_RING"] = str(self._config.hotline.preferred_ring)
        target = self._config.queue(queue)
        chosen["FIRSTLINE_QUEUE_OPTIONS"] = "c" if target.rating else ""
        if target.record:
            # '__': inherited by the agent's channel, where MixMonitor runs.
            chosen["__FIRSTLINE_RECORDING"] = self._record_conversation(session, ticket)
        chosen["FIRSTLINE_PRIO"] = priority
        chosen["FIRSTLINE_MAX_PENALTY"] = str(max_penalty)
        chosen["FIRSTLINE_MAX_WAIT"] = str(max_wait)
        # Set last: the dialplan takes the decision only when this is present.
        chosen["FIRSTLINE_QUEUE"] = queue
        await session.set_variables(chosen)

    def _record_conversation(self, session: AgiSession, ticket: str | None) -> str:
        """Name the recording of the conversation (the agent-answered gosub starts it) and
        link it to the call and the caller's ticket, so a disputed case can be heard again."""
        uniqueid = session.request.env.get("agi_uniqueid", "")
        now = self._clock()
        safe_uid = _safe_name(uniqueid)
        base = f"{self._config.hotline.recordings_dir}/{now:%Y%m%d-%H%M%S}-{safe_uid}"
        self._spawn(self._link_recording(uniqueid, ticket, f"{base}.wav"))
        return base

    async def _link_recording(self, uniqueid: str, ticket: str | None, path: str) -> None:
        now = self._clock()
        try:
            if self._calls is not None and uniqueid:
                self._calls.add(recording(uniqueid, path, now=now))
            if self._store is not None and ticket:
                await self._store.link_recording(ticket, path, actor="recorder", now=now)
        except (SQLAlchemyError, TicketStoreError) as error:
            self._log.warning("call.recording_link_failed", uniqueid=uniqueid, error=repr(error))

    async def _rate(self, session: AgiSession) -> None:
        """The caller rates the help (1 to 5) after the agent hung up."""
        digits = await session.get_data("firstline/ivr-rating", 6000, 1)
        if not (digits.isdigit() and 1 <= int(digits) <= 5):
            session.log.info("call.rating_skipped")
            return
        rating = int(digits)
        uniqueid = session.request.env.get("agi_uniqueid", "")
        ticket = await session.get_variable("FIRSTLINE_TICKET")
        now = self._clock()
        try:
            if self._calls is not None and uniqueid:
                self._calls.add(call_rating(uniqueid, rating))
            if self._store is not None and ticket:
                await self._store.rate(
                    ticket, rating, actor="caller", now=now, low=self._config.hotline.low_rating
                )
        except (SQLAlchemyError, TicketStoreError) as error:
            session.log.warning("call.rating_lost", error=repr(error))
        session.log.info("call.rated", rating=rating, ticket=ticket)
        await session.stream_file("firstline/ivr-rating-thanks")

    async def _transfer(self, session: AgiSession) -> None:
        """An agent handed the caller on (blind transfer to a transfer code).

        Runs on the caller's channel, which still carries what the IVR captured
        (FIRSTLINE_SKILLS), its priority and ticket variables: only the target changes.
        """
        args = session.request.args
        target = args[0] if args else ""
        if target not in ("second-level", "supervisor"):
            session.log.warning("call.transfer_unknown_target", target=target[:40])
            return
        skills_text = await session.get_variable("FIRSTLINE_SKILLS") or ""
        required, _ignored = parse_skill_list(skills_text, {s.id for s in self._config.skills})
        priority = await session.get_variable("FIRSTLINE_PRIO") or "0"
        async with asyncio.timeout(self._config.daemon.route_timeout):
            decision = decide_transfer(
                self._table,
                "second-level" if target == "second-level" else "supervisor",
                required,
                self._routing_view(self._now()),
            )
            queue = self._config.queue(decision.queue)
            session.log = session.log.bind(queue=queue.id)
            ticket = await session.get_variable("FIRSTLINE_TICKET") if queue.record else None
            await self._hand_to_queue(
                session,
                queue.id,
                priority=priority if priority.isdigit() else "0",
                max_penalty=0,
                max_wait=queue.max_wait,
                preferred_agent=decision.preferred_agent,
                ticket=ticket,
            )
        session.log.info(
            "call.transferred",
            target=target,
            preferred_agent=decision.preferred_agent,
            priority=priority,
            reasons=list(decision.reasons),
        )

    async def _caller_record(
        self, session: AgiSession, caller: str
    ) -> tuple[CustomerFacts | None, tuple[Ticket, ...], str | None]:
        """The caller's customer record, open tickets and customer id; nothing when they
        can't be had.

        The lookup is bounded by half the route budget: a slow or broken database costs
        the caller owner routing, never the call.
        """
        number = normalise_number(caller, self._config.hotline.region)
        if number is None or self._store is None:
            return None, (), None
        try:
            async with asyncio.timeout(self._config.daemon.route_timeout / 2):
                record, tickets = await self._store.caller(number)
                alert = (
                    await self._alerts.active_alert_ticket(record.id)
                    if self._alerts is not None and record is not None
                    else None
                )
                if alert is not None and alert not in {t.number for t in tickets}:
                    # Opened by monitoring, not by a call from this number: theirs all the same.
                    tickets.insert(0, await self._store.get(alert))
        except (TimeoutError, SQLAlchemyError, TicketStoreError) as error:
            session.log.warning("call.lookup_failed", error=repr(error))
            return None, (), None
        customer = (
            CustomerFacts(sla_package=record.sla_package, account_manager=record.account_manager)
            if record is not None
            else None
        )
        if alert is not None:
            # "We are already working on it": the caller need not explain the incident.
            session.log.info("call.alert_known", ticket=alert)
            await session.stream_file("firstline/alert-known")
        return customer, tuple(tickets), record.id if record is not None else None

    def _routing_view(self, now: float) -> RoutingView:
        """The routing core's view of the live state, rebuilt only after the state changed.

        Busy agents' remaining times are taken when the view is built; between changes
        they age by at most the time to the next event, which only errs long.
        """
        snapshot = self._state.snapshot()
        if self._view_cache is None or self._view_cache[0] is not snapshot:
            finished = self._state.finished_total
            if self._handle_times is None or (
                self._handle_times[0] != finished
                and not 0 <= now - self._handle_times[1] < _HANDLE_TIMES_MAX_AGE
            ):
                wrapups = {queue.id: queue.wrapup for queue in self._config.queues}
                times = handle_times(self._state.finished(), wrapups)
                self._handle_times = (finished, now, times)
            view = routing_view(snapshot, self._handle_times[2], now)
            self._view_cache = (snapshot, view)
        return self._view_cache[1]

    async def _agent_feature(self, session: AgiSession) -> None:
        """Agent feature codes dialled from a softphone: login, logout, pause, resume."""
        args = session.request.args
        action = args[0] if args else ""
        extension = session.request.env.get("agi_callerid", "")
        agent = next((a for a in self._config.agents if a.extension == extension), None)
        if agent is None:
            session.log.warning(
                "agent.unknown_extension", extension=extension[:40], action=action[:40]
            )
            return
        async with asyncio.timeout(self._config.daemon.route_timeout):
            result = await self._apply_agent_action(agent.id, action, args[1:] if args else ())
        if result in _AGENT_DONE:
            # The dialplan confirms with a beep only when this is set.
            await session.set_variable("FIRSTLINE_AGENT_OK", "1")
        session.log.info("agent.feature", agent=agent.id, action=action, result=result)

    async def _queue_add(
        self,
        queue: str,
        interface: str,
        *,
        penalty: int,
        member_name: str,
        paused: bool = False,
        reason: str = "",
    ) -> ActionResult:
        fields = {
            "Queue": queue,
            "Interface": interface,
            "Penalty": str(penalty),
            "MemberName": member_name,
            "Paused": "true" if paused else "false",
        }
        if reason:
            fields["Reason"] = reason
        return await self._ami.action("QueueAdd", fields)

    async def _apply_agent_action(self, agent_id: str, action: str, rest: Any) -> str:
        agent = self._config.agent(agent_id)
        interface = agent.dial_interface
        if action == "login":
            memberships = queue_memberships(self._config, agent)
            for queue_id, penalty in sorted(memberships.items()):
                result = await self._queue_add(
                    queue_id, interface, penalty=penalty, member_name=agent.name
                )
                if not result.ok and "Already there" not in (result.response.message or ""):
                    return "failed"
            return "logged-in"
        if action == "logout":
            for queue_id in sorted(queue_memberships(self._config, agent)):
                await self._ami.action("QueueRemove", {"Queue": queue_id, "Interface": interface})
            return "logged-out"
        if action in ("pause", "resume"):
            fields = {"Interface": interface, "Paused": "true" if action == "pause" else "false"}
            if action == "pause":
                digit = rest[0] if rest else ""
                fields["Reason"] = self._config.pause_reasons.get(digit, "pause")
            result = await self._ami.action("QueuePause", fields)
            return ("paused" if action == "pause" else "resumed") if result.ok else "failed"
        return "unknown-action"

    # --- Callbacks ---------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _originate(self, fields: Any) -> bool:
        try:
            result = await self._ami.action("Originate", fields)
        except AmiError as error:
            self._log.warning("callback.originate_failed", error=str(error))
            return False
        return result.ok

    async def _callbacks_forever(self) -> None:
        """Run the dialer and refresh the pending-callbacks gauge; never let a round fail."""
        last_summary = 0.0
        while True:
            await asyncio.sleep(_DIALER_PERIOD)
            now = self._clock()
            try:
                if self._dialer is not None and self._ami.connected:
                    open_queues = [
                        q.id
                        for q in self._config.queues
                        if q.callback.enabled and self._table.queue_open(q.id, now)
                    ]
                    await self._dialer.step(now, self._state.snapshot(), open_queues)
                if (
                    self._callbacks is not None
                    and now.timestamp() - last_summary >= _PENDING_PERIOD
                ):
                    last_summary = now.timestamp()
                    summary = await self._callbacks.pending_summary()
                    self._callback_summary = list(summary)
                    self._desk.set_callbacks_pending({s.queue: s.count for s in summary})
                    if self._store is not None:
                        self._desk.set_tickets(await self._store.count_by_status())
            except (AmiError, SQLAlchemyError, TicketStoreError, OSError) as error:
                self._log.warning("callback.round_failed", error=repr(error))

    async def _callback(self, session: AgiSession) -> None:
        """A waiting caller pressed the escape key: confirm, book, and hand back to the dialplan.

        FIRSTLINE_CALLBACK is set last and only to 'booked' once the ticket is committed;
        'failed' (store down, too slow), 'cancelled' (no usable number) or anything else put
        the caller back at their place in the queue, where their visit goes on.
        """
        uniqueid = session.request.env.get("agi_uniqueid", "")
        booked = False
        try:
            booked = await self._callback_dialogue(session, uniqueid)
        finally:
            if not booked:
                self._publish(self._state.mark_returning(uniqueid, self._now()))

    async def _callback_dialogue(self, session: AgiSession, uniqueid: str) -> bool:
        """The escape dialogue and the booking; True once the caller has a committed ticket."""
        env = session.request.env
        args = session.request.args
        queue_id = args[0] if args else ""
        try:
            queue = self._config.queue(queue_id)
        except KeyError:
            session.log.warning("callback.unknown_queue", queue=queue_id[:40])
            await session.set_variable("FIRSTLINE_CALLBACK", "failed")
            return False
        session.log = session.log.bind(queue=queue.id)
        snapshot = self._state.snapshot()
        call = snapshot.calls.get(uniqueid)
        joined = call.joined_at if call is not None and call.joined_at is not None else None
        priority_text = await session.get_variable("QUEUE_PRIO") or "0"
        skills_text = await session.get_variable("FIRSTLINE_SKILLS") or ""
        skills, _ignored = parse_skill_list(skills_text, {s.id for s in self._config.skills})
        safe_uid = _safe_name(uniqueid)
        # Asterisk's own spool (inside its root): the recording is linked to the ticket.
        recording_base = f"/var/spool/asterisk/monitor/firstline-callback-{safe_uid}"

        async def book(number: str, recording: str | None) -> Booking:
            assert self._callbacks is not None
            assert self._store is not None
            now = self._clock()
            customer = await self._store.customer_by_number(number)
            name, rank = self._table.base_priority
            package = customer.sla_package if customer is not None else None
            if package not in self._config.sla.packages:
                package = None
            deadline = deadline_from_config(
                self._config.sla,
                self._config.sites[0],
                priority=name,
                package=package,
                created_at=now,
            )
            booked = await self._callbacks.request(
                now=now,
                number=number,
                queue=queue.id,
                queue_joined_at=(
                    dt.datetime.fromtimestamp(joined, dt.UTC) if joined is not None else now
                ),
                priority=name,
                priority_rank=rank,
                deadline=deadline,
                skills=skills or dict(queue.skills),
                customer_id=customer.id if customer is not None else None,
                recording_path=recording,
                uniqueid=uniqueid,
                description="callback requested while waiting",
                # The callback keeps the caller's place: their priority in the queue too.
                queue_priority=int(priority_text) if priority_text.isdigit() else None,
            )
            return Booking(booked.ticket.number, booked.callback.id, booked.created)

        try:
            # Every step that talks to the caller has its own AGI timeout; the booking
            # itself must be quick or not at all.
            outcome = await run_escape(
                session,
                caller_id=env.get("agi_callerid", ""),
                region=self._config.hotline.region,
                record_seconds=queue.callback.record_description,
                recording_base=recording_base,
                book=_bounded(book, self._config.daemon.route_timeout * 2),
            )
        except (TimeoutError, SQLAlchemyError, TicketStoreError, OSError) as error:
            session.log.error(  # noqa: TRY400 - the error is the news, not a traceback
                "callback.booking_failed", queue=queue.id, error=repr(error)
            )
            await session.set_variable("FIRSTLINE_CALLBACK", "failed")
            return False
        booking = outcome.booking
        if booking is None:
            session.log.info("callback.cancelled", queue=queue.id)
            await session.set_variable("FIRSTLINE_CALLBACK", outcome.status)
            return False
        await session.set_variable("FIRSTLINE_TICKET", booking.ticket_number)
        await session.set_variable("FIRSTLINE_CALLBACK_ID", str(booking.callback_id))
        if not booking.created:
            await session.set_variable("FIRSTLINE_CALLBACK_NOTE", "firstline/callback-already")
        person = await self._extended_support(queue.extended_support_team, booking)
        if person is not None:
            await session.set_variable("FIRSTLINE_PREFERRED", person.dial_interface)
            await session.set_variable(
                "FIRSTLINE_PREFERRED_RING", str(self._config.hotline.preferred_ring)
            )
        # Set last: from here on the dialplan reads the (committed) ticket number.
        await session.set_variable("FIRSTLINE_CALLBACK", "extended" if person else "booked")
        session.log.info(
            "callback.booked",
            queue=queue.id,
            ticket=booking.ticket_number,
            callback=booking.callback_id,
            new=booking.created,
            extended_support=person.id if person else None,
            priority=priority_text,
            joined_at=joined,
        )
        self._booked(booking, queue.id, uniqueid)
        return True

    def _booked(self, booking: Booking, queue_id: str, uniqueid: str) -> None:
        """The caller left the queue with a committed callback: their call ends here."""
        self._event_out(
            "ticket",
            {
                "event": "opened" if booking.created else "callback_again",
                "ticket": booking.ticket_number,
                "queue": queue_id,
                "uniqueid": uniqueid,
                "actor": "ivr",
            },
        )
        self._publish(self._state.mark_callback(uniqueid, self._now()))

    async def _callback_dial(self, session: AgiSession) -> None:
        """An agent answered a held place: record the attempt and say whom to dial."""
        if self._dialer is None:
            return
        env = session.request.env
        args = session.request.args
        callback_id = int(args[0]) if args and args[0].isdigit() else -1
        channel = env.get("agi_channel", "")
        interface = ""
        if channel.endswith(";1"):
            # The held place (;2) carries the member who answered (setinterfacevar=yes).
            interface = await session.get_variable(f"IMPORT({channel[:-1]}2,MEMBERINTERFACE)") or ""
        agent = self._state_agent(interface)
        result = await self._dialer.agent_answered(
            env.get("agi_uniqueid", ""), callback_id, agent, self._clock()
        )
        if result is None:
            return
        _callback, dial = result
        await session.set_variable("FIRSTLINE_CB_DIAL", dial)

    async def _callback_result(self, session: AgiSession) -> None:
        """The customer's leg ended: record the outcome, plan the retry, count it."""
        if self._dialer is None:
            return
        args = session.request.args
        callback_id = int(args[0]) if args and args[0].isdigit() else -1
        status = args[1] if len(args) > 1 else ""
        now = self._clock()
        outcome, callback = await self._dialer.attempt_ended(
            session.request.env.get("agi_uniqueid", ""), callback_id, status, now
        )
        if callback is not None:
            answered_at = await self._answered_at(session, now)
            self._count_attempt(callback.queue, callback.created_at, outcome, answered_at)

    @staticmethod
    async def _answered_at(session: AgiSession, ended_at: dt.datetime) -> dt.datetime:
        """When the customer's leg was answered: the hangup handler runs after the talk,
        and Dial's ANSWEREDTIME says how long it lasted."""
        talked = await session.get_variable("ANSWEREDTIME") or ""
        seconds = float(talked) if re.fullmatch(r"\d{1,7}(\.\d{1,6})?", talked) else 0.0
        return ended_at - dt.timedelta(seconds=seconds)

    def _count_attempt(
        self, queue: str, requested_at: dt.datetime, outcome: str, answered_at: dt.datetime
    ) -> None:
        """One attempt's result; an answered one also gives the callback's delay (request
        to the agent talking with the customer), the figure leads promise customers."""
        self._desk.callback_attempt(queue, outcome)
        if outcome == "answered":
            self._desk.callback_delay(queue, (answered_at - requested_at).total_seconds())

    async def _extended_support(self, team: str | None, booking: Booking) -> Agent | None:
        """A free member of the queue's extended-support team, who takes the new ticket now.

        The callback is claimed for the time of that call, so the dialer leaves it alone;
        the hangup handler then closes it (answered) or gives it back (not answered).
        """
        if team is None or self._callbacks is None or self._dialer is None:
            return None
        members = set(self._config.teams.get(team, ()))
        free = sorted(
            (
                a
                for a in self._state.snapshot().agents.values()
                if a.agent_id in members and a.state is AgentState.AVAILABLE
            ),
            key=lambda a: a.since,  # the one free longest
        )
        if not free:
            return None
        try:
            taken = await self._callbacks.claim_id(
                booking.callback_id, owner=self._dialer.owner, now=self._clock(), lease=TALK_LEASE
            )
        except (SQLAlchemyError, TicketStoreError) as error:
            self._log.warning("callback.extended_claim_failed", error=repr(error))
            return None
        return self._config.agent(free[0].agent_id) if taken else None

    async def _callback_extended(self, session: AgiSession) -> None:
        """Hangup handler of a caller put through to extended support: close or give back."""
        if self._callbacks is None or self._dialer is None:
            return
        args = session.request.args
        if len(args) < 3 or not args[0].isdigit():
            return
        callback_id, status, interface = int(args[0]), args[1], args[2]
        agent = self._state_agent(interface)
        now = self._clock()
        owner = self._dialer.owner
        try:
            if status == "ANSWER":
                callback = await self._callbacks.finish_attempt(
                    callback_id,
                    owner=owner,
                    now=now,
                    outcome="answered",
                    retry_at=None,
                    agent=agent,
                )
                answered_at = await self._answered_at(session, now)
                self._count_attempt(callback.queue, callback.created_at, "answered", answered_at)
            else:
                await self._callbacks.release(callback_id, owner=owner, now=now)
        except (SQLAlchemyError, TicketStoreError) as error:
            session.log.warning("callback.extended_result_lost", error=repr(error))
            return
        session.log.info(
            "callback.extended_support", callback=callback_id, agent=agent, dial_status=status
        )

    def _state_agent(self, interface: str) -> str | None:
        for agent in self._config.agents:
            if agent.dial_interface == interface:
                return agent.id
        return None


def _bounded(book: Any, seconds: float) -> Any:
    async def bounded(number: str, recording: str | None) -> Booking:
        async with asyncio.timeout(seconds):
            result: Booking = await book(number, recording)
            return result

    return bounded
