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
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from acd.agi import AgiSession
from acd.agi.server import AgiServer
from acd.ami import ActionResult, AmiAuthenticationError, AmiClient, AmiError, Event
from acd.config import Config, ConfigInvalid, SecretUnavailableError, load_config
from acd.live_view import routing_view
from acd.membership import Member, membership_changes
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
from acd.state import AgentChanged, Anomaly, CallFinished, Change, LiveState, StateSnapshot
from acd.tickets import TicketStore, TicketStoreError, migrate
from metrics import DeskMetrics, HealthMetrics, MetricsExporter
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


class Daemon:
    """Runs Firstline against one Asterisk until stopped."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        asterisk_conf_dir: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._store_url = config.store.resolved_url(
            config_path.parent if config_path else Path.cwd()
        )
        self._store: TicketStore | None = None
        self._asterisk_conf_dir = asterisk_conf_dir
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
        self._desk = DeskMetrics(self._registry, queues=[queue.id for queue in config.queues])
        self._ami.subscribe(None, self._on_ami_event)
        self._agi = AgiServer(
            host=link.agi.host,
            port=link.agi.port,
            handlers={
                "route": self._route,
                "agent": self._agent_feature,
                "transfer": self._transfer,
            },
            on_request_done=self._health.agi_request_done,
        )
        self._exporter = MetricsExporter(
            self._registry, host=link.metrics.host, port=link.metrics.port
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
        await self._agi.start()
        await self._exporter.start()
        self._log.info(
            "daemon.started",
            agi_port=self._agi.port,
            metrics_port=self._exporter.port,
            ami=f"{self._config.daemon.ami.host}:{self._config.daemon.ami.port}",
        )
        ami_task = asyncio.create_task(self._ami.run(), name="ami")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        ticker = asyncio.create_task(self._tick_forever(), name="state-timers")
        self._background.add(ticker)
        exit_code = EXIT_OK
        try:
            await asyncio.wait({ami_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if ami_task.done():
                exc = ami_task.exception()
                if isinstance(exc, AmiAuthenticationError):
                    self._log.error("daemon.ami_login_refused", error=str(exc))
                    exit_code = EXIT_AMI_REFUSED
                elif exc is not None:
                    self._log.error("daemon.ami_failed", error=repr(exc))
                    exit_code = 1
        finally:
            stop_task.cancel()
            ami_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ami_task
            await self._ami.close()
            await self._agi.close()
            await self._exporter.close()
            if self._store is not None:
                await self._store.aclose()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for task in self._background:
                task.cancel()
            self._log.info("daemon.stopped", exit_code=exit_code)
        return exit_code

    # --- Reload ------------------------------------------------------------------------

    def _reload_in_background(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            self._table = RoutingTable(new)
            self._state = _live_state(new, self._now())
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

    async def _ami_logged_in(self, _client: AmiClient) -> None:
        self._health.ami_logged_in()
        await self._resync()

    async def _resync(self) -> None:
        """Rebuild the live state from what Asterisk reports (after every login)."""
        try:
            status = await self._ami.action("QueueStatus")
            channels = await self._ami.action("CoreShowChannels")
        except AmiError as error:
            self._log.error("state.resync_failed", error=str(error))
            return
        self._publish(self._state.resync(status.events, channels.events, self._now()))
        snapshot = self._state.snapshot()
        self._log.info(
            "state.resynced",
            agents={state.value: n for state, n in snapshot.agent_counts.items() if n},
            waiting={q: len(view.waiting) for q, view in snapshot.queues.items() if view.waiting},
        )

    async def _tick_forever(self) -> None:
        # Wrap-up ends are the state's only timers, and the oldest-wait gauge moves with
        # the clock: half a second is precise enough for both.
        while True:
            await asyncio.sleep(0.5)
            self._publish(self._state.tick(self._now()))
            self._desk.update_gauges(self._state.snapshot(), self._now())

    def _publish(self, changes: list[Change]) -> None:
        """Log what the live state says changed; metrics observe the same records."""
        if not changes:
            return
        self._desk.observe(changes)
        self._desk.update_gauges(self._state.snapshot(), self._now())
        for change in changes:
            if isinstance(change, CallFinished):
                record = change.record
                self._log.info(
                    "call.finished",
                    uniqueid=record.uniqueid,
                    queue=record.queue,
                    outcome=record.outcome.value,
                    wait=None if record.wait is None else round(record.wait, 3),
                    talk=None if record.talk is None else round(record.talk, 3),
                    agent=record.agent_id,
                )
            elif isinstance(change, AgentChanged):
                self._log.info(
                    "agent.state",
                    agent=change.agent_id,
                    before=change.before.value,
                    after=change.after.value,
                    reason=change.pause_reason,
                )
            elif isinstance(change, Anomaly):
                self._log.warning(
                    "state.anomaly", kind=change.kind, detail=change.detail, ami_event=change.event
                )

    async def _ami_lost(self, _client: AmiClient) -> None:
        self._health.ami_lost()

    def _on_ami_event(self, event: Event) -> None:
        changes = self._state.apply(event, self._now())
        if event.name in CALL_EVENTS:
            self._log_call_event(event)
        self._publish(changes)

    def _log_call_event(self, event: Event) -> None:
        self._log.info(
            "call.event",
            ami_event=event.name,
            uniqueid=event.get("Uniqueid"),
            queue=event.get("Queue"),
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
        customer, tickets = await self._caller_record(session, caller)
        facts = CallFacts(
            uniqueid=env.get("agi_uniqueid", ""),
            caller_number=caller,
            customer=customer,
            open_tickets=tickets,
            # The hotline passes the number the caller dialled as the first argument.
            dialed=args[0] if args else env.get("agi_extension", ""),
            language=env.get("agi_language", ""),
            required_skills=required,
        )
        async with asyncio.timeout(self._config.daemon.route_timeout):
            now = self._clock()
            view = self._routing_view(now.timestamp())
            decision = decide_route(self._config, facts, now, view, table=self._table)
            session.log.info(
                "call.routed",
                status=decision.status,
                queue=decision.queue,
                priority=decision.priority,
                max_penalty=decision.max_penalty,
                overflowed_from=decision.overflowed_from,
                preferred_agent=decision.preferred_agent,
                open_tickets=[ticket.number for ticket in facts.open_tickets],
                expected_wait=(decision.expected_wait.seconds if decision.expected_wait else None),
                caller=facts.caller_number,
                reasons=list(decision.reasons),
                eligible=[f"{agent}:{status}" for agent, status in explain_agents(decision, view)],
                excluded=dict(decision.excluded),
            )
            if decision.queue is None:
                # Closed or unroutable: until the IVR can offer a callback, the dialplan's
                # fallback queue keeps the caller with a person rather than hanging up.
                await session.set_variable("FIRSTLINE_ROUTE", decision.status)
                return
            await self._hand_to_queue(
                session,
                decision.queue,
                priority=str(decision.priority),
                max_penalty=decision.max_penalty,
                max_wait=decision.max_wait,
                preferred_agent=decision.preferred_agent,
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

    async def _hand_to_queue(
        self,
        session: AgiSession,
        queue: str,
        *,
        priority: str,
        max_penalty: int,
        max_wait: int,
        preferred_agent: str | None,
    ) -> None:
        """The channel variables the dialplan's ``queue`` step reads (route and transfer)."""
        if preferred_agent is not None:
            preferred = self._config.agent(preferred_agent)
            await session.set_variable("FIRSTLINE_PREFERRED", preferred.dial_interface)
            await session.set_variable(
                "FIRSTLINE_PREFERRED_RING", str(self._config.hotline.preferred_ring)
            )
        await session.set_variable("FIRSTLINE_PRIO", priority)
        await session.set_variable("FIRSTLINE_MAX_PENALTY", str(max_penalty))
        await session.set_variable("FIRSTLINE_MAX_WAIT", str(max_wait))
        # Set last: the dialplan takes the decision only when this is present.
        await session.set_variable("FIRSTLINE_QUEUE", queue)

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
            await self._hand_to_queue(
                session,
                queue.id,
                priority=priority if priority.isdigit() else "0",
                max_penalty=0,
                max_wait=queue.max_wait,
                preferred_agent=decision.preferred_agent,
            )
        session.log.info(
            "call.transferred",
            target=target,
            queue=queue.id,
            preferred_agent=decision.preferred_agent,
            priority=priority,
            reasons=list(decision.reasons),
        )

    async def _caller_record(
        self, session: AgiSession, caller: str
    ) -> tuple[CustomerFacts | None, tuple[TicketFacts, ...]]:
        """The caller's customer record and open tickets; nothing when they can't be had.

        The lookup is bounded by half the route budget: a slow or broken database costs
        the caller owner routing, never the call.
        """
        number = normalise_number(caller, self._config.hotline.region)
        if number is None or self._store is None:
            return None, ()
        try:
            async with asyncio.timeout(self._config.daemon.route_timeout / 2):
                record = await self._store.customer_by_number(number)
                tickets = await self._store.open_tickets_for_number(number)
        except (TimeoutError, SQLAlchemyError, TicketStoreError) as error:
            session.log.warning("call.lookup_failed", error=repr(error))
            return None, ()
        customer = (
            CustomerFacts(sla_package=record.sla_package, account_manager=record.account_manager)
            if record is not None
            else None
        )
        return customer, tuple(
            TicketFacts(number=t.number, priority=t.priority, owner=t.owner) for t in tickets
        )

    def _routing_view(self, now: float) -> RoutingView:
        """The routing core's view of the live state, rebuilt only after the state changed.

        Busy agents' remaining times are taken when the view is built; between changes
        they age by at most the time to the next event, which only errs long.
        """
        snapshot = self._state.snapshot()
        if self._view_cache is None or self._view_cache[0] is not snapshot:
            wrapups = {queue.id: queue.wrapup for queue in self._config.queues}
            view = routing_view(snapshot, self._state.finished(), wrapups, now)
            self._view_cache = (snapshot, view)
        return self._view_cache[1]

    async def _agent_feature(self, session: AgiSession) -> None:
        """Agent feature codes dialled from a softphone: login, logout, pause, resume."""
        args = session.request.args
        action = args[0] if args else ""
        extension = session.request.env.get("agi_callerid", "")
        agent = next((a for a in self._config.agents if a.extension == extension), None)
        if agent is None:
            session.log.warning("agent.unknown_extension", extension=extension, action=action)
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
