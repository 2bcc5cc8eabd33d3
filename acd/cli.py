"""The ``acd`` command: check and render the admin config, run the daemon, place test calls.

Exit codes: 0 success, 1 invalid input (config errors are printed as FILE:LINE:COL), 2 a
refused AMI login or an unreachable peer, and (argparse's own code) a malformed command line,
such as a report range or queue that makes no sense. Output meant for people goes to
stdout/stderr as plain text; the daemon itself logs JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from acd.admin import CustomerFileError, parse_customers, ticket_json, ticket_line
from acd.ami import AmiClient, AmiError, Event
from acd.config import (
    Config,
    ConfigInvalid,
    SecretUnavailableError,
    init_missing_secret_files,
    load_config,
)
from acd.daemon import Daemon
from acd.log import configure_logging
from acd.reports import (
    OUTPUT_FORMATS,
    PERIOD_KINDS,
    ReportFacts,
    ReportSpec,
    build_report,
    render_report,
    report_total,
    resolve_range,
)
from acd.tickets import (
    Customer,
    IllegalTransition,
    TicketStatus,
    TicketStore,
    TicketStoreError,
    migrate,
)
from acd.tickets.report_rows import load_report_facts
from ivr.prompts import PromptError, install_for_config
from pbx_config import RenderError, render, write_rendered

__all__ = ["main"]

_DEFAULT_PID_FILE = Path("/run/firstline/acd.pid")
_JOURNEY_END = {"QueueCallerLeave", "QueueCallerAbandon", "Hangup"}
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _load(path: Path, *, check_secrets: bool = False) -> Config | None:
    try:
        return load_config(path, check_secrets=check_secrets)
    except ConfigInvalid as invalid:
        print(invalid, file=sys.stderr)
        print(f"{path}: {len(invalid.issues)} error(s); nothing was changed", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config, check_secrets=True)
    if config is None:
        return 1
    print(
        f"{args.config}: OK ({len(config.queues)} queues, {len(config.agents)} agents, "
        f"{len(config.skills)} skills)"
    )
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    config = _load(args.config, check_secrets=True)
    if config is None:
        return 1
    try:
        files = render(config)
    except (RenderError, SecretUnavailableError) as error:
        print(f"{args.config}: {error}; nothing was written", file=sys.stderr)
        return 1
    if args.sounds is not None:
        # Before the config is written: it must never name prompts that are not there.
        try:
            report = install_for_config(config, args.sounds, cache_dir=args.prompt_cache)
        except PromptError as error:
            print(f"{args.config}: {error}; the configuration was not written", file=sys.stderr)
            return 1
        print(
            f"installed {len(report.installed)} prompts into {args.sounds}: "
            f"{report.generated} generated, {report.cached} from cache, "
            f"{len(report.removed)} stale removed"
        )
    write_rendered(files, args.out)
    print(f"rendered {len(files)} files into {args.out}")
    return 0


def _cmd_init_secrets(args: argparse.Namespace) -> int:
    created = init_missing_secret_files(args.config)
    for path in created:
        print(f"created {path} (mode 0600)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, check_secrets=True)
    if config is None:
        return 1
    configure_logging(args.log_level or config.daemon.log_level)
    daemon = Daemon(
        config,
        config_path=args.config,
        asterisk_conf_dir=args.asterisk_conf,
        asterisk_sounds_dir=args.asterisk_sounds,
    )
    pid_file: Path = args.pid_file
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(daemon.run())
    finally:
        pid_file.unlink(missing_ok=True)


def _cmd_reload(args: argparse.Namespace) -> int:
    # Validate here too, so the admin sees the errors; the daemon validates again itself.
    if _load(args.config, check_secrets=True) is None:
        print("the running configuration stays", file=sys.stderr)
        return 1
    try:
        pid = int(args.pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as error:
        print(f"no running daemon to reload ({args.pid_file}: {error})", file=sys.stderr)
        return 2
    print(f"reload requested (pid {pid}); the daemon logs config.reloaded when applied")
    return 0


def _cmd_wait_ready(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    endpoint = config.daemon.metrics
    url = f"http://{endpoint.host}:{endpoint.port}/metrics"
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if b"acd_ami_connected 1.0" in reply.read():
                    print("daemon ready: logged in to AMI")
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    print(f"daemon not ready after {args.timeout} s ({url})", file=sys.stderr)
    return 2


async def _place_call(config: Config, number: str, caller_id: str, watch: float) -> int:
    ami = config.daemon.ami
    client = AmiClient(
        host=ami.host,
        port=ami.port,
        username=ami.username,
        secret=ami.secret.reveal(),
        reconnect=False,
    )
    caller_uid = f"firstline-call-{uuid.uuid4().hex[:12]};2"
    done = asyncio.Event()
    started = time.monotonic()

    def show(event: Event) -> None:
        if caller_uid not in (event.get("Uniqueid"), event.get("Linkedid")):
            return
        details = ", ".join(
            f"{key}={event.get(key)}"
            for key in ("Queue", "MemberName", "Position", "HoldTime", "TalkTime", "Cause-txt")
            if event.get(key)
        )
        print(f"{time.monotonic() - started:6.1f}s  {event.name:<20} {details}")
        if event.name in _JOURNEY_END and event.get("Uniqueid") == caller_uid:
            done.set()

    client.subscribe(None, show)
    runner = asyncio.create_task(client.run())
    try:
        await client.wait_logged_in(timeout=10)
        result = await client.action(
            "Originate",
            {
                "Channel": f"Local/{number}@firstline-hotline",
                "Application": "Wait",
                "Data": str(int(watch)),
                "CallerID": caller_id,
                # Asterisk names the Local channel's second half (the caller) "<ChannelId>;2".
                "ChannelId": caller_uid.removesuffix(";2"),
                "Async": "true",
            },
            timeout=10,
        )
        if not result.ok:
            print(f"Originate refused: {result.response.message}", file=sys.stderr)
            return 2
        print(f"calling {number} as {caller_id}; caller unique id {caller_uid}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(watch):
                await done.wait()
    except AmiError as error:
        print(f"AMI: {error}", file=sys.stderr)
        return 2
    else:
        return 0
    finally:
        runner.cancel()
        await client.close()


def _cmd_call(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    number = args.number or config.hotline.numbers[0]
    configure_logging("warning", stream=sys.stderr)  # the call's journey is the output here
    return asyncio.run(_place_call(config, number, args.caller_id, args.watch))


def _open_store(args: argparse.Namespace) -> tuple[Config, str] | None:
    config = _load(args.config)
    if config is None:
        return None
    return config, config.store.resolved_url(args.config.parent)


async def _tickets(args: argparse.Namespace, url: str) -> int:
    await migrate(url)
    now = dt.datetime.now(dt.UTC)
    actor = args.actor if "actor" in args and args.actor else getpass.getuser()
    async with TicketStore(url) as store:
        try:
            if args.action == "list":
                tickets = await store.list(
                    status=args.status, owner=args.owner, open_only=args.open
                )
                for ticket in tickets:
                    print(ticket_json(ticket) if args.json else ticket_line(ticket))
                return 0
            if args.action == "show":
                ticket = await store.get(args.number)
                history = await store.history(args.number)
                if args.json:
                    print(ticket_json(ticket, history))
                else:
                    print(ticket_line(ticket))
                    for entry in history:
                        change = " -> ".join(v for v in (entry.old_value, entry.new_value) if v)
                        print(
                            f"  {entry.at:%Y-%m-%d %H:%M:%S}Z {entry.actor}: {entry.kind} "
                            f"{change}{f' ({entry.reason})' if entry.reason else ''}"
                        )
                return 0
            if args.action == "set-status":
                ticket = await store.set_status(
                    args.number, args.status, actor=actor, reason=args.reason, now=now
                )
            elif args.action == "assign":
                agent = None if args.agent == "nobody" else args.agent
                ticket = await store.assign(args.number, agent, actor=actor, now=now)
            else:
                await store.add_note(args.number, args.text, actor=actor, now=now)
                ticket = await store.get(args.number)
        except (TicketStoreError, IllegalTransition) as error:
            print(f"acd tickets: {error}", file=sys.stderr)
            return 1
        print(ticket_json(ticket) if args.json else ticket_line(ticket))
        return 0


def _cmd_tickets(args: argparse.Namespace) -> int:
    opened = _open_store(args)
    if opened is None:
        return 1
    config, url = opened
    agents = {agent.id for agent in config.agents}
    if args.action == "assign" and args.agent != "nobody" and args.agent not in agents:
        print(f"acd tickets: unknown agent {args.agent!r}", file=sys.stderr)
        return 1
    return asyncio.run(_tickets(args, url))


async def _import_customers(customers: list[Customer], url: str) -> int:
    await migrate(url)
    async with TicketStore(url) as store:
        return await store.import_customers(customers)


def _cmd_customers_import(args: argparse.Namespace) -> int:
    opened = _open_store(args)
    if opened is None:
        return 1
    config, url = opened
    try:
        customers = parse_customers(args.file, config)
        count = asyncio.run(_import_customers(customers, url))
    except CustomerFileError as error:
        print(error, file=sys.stderr)
        print(f"{args.file}: nothing was imported", file=sys.stderr)
        return 1
    except TicketStoreError as error:
        print(f"{args.file}: {error}; nothing was imported", file=sys.stderr)
        return 1
    print(f"imported {count} customers from {args.file}")
    return 0


def _report_time(text: str) -> dt.date | dt.datetime:
    """--from/--to: a date (the desk's local day) or an ISO datetime (local without offset)."""
    try:
        if _DATE.match(text):
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a date (YYYY-MM-DD) nor an ISO datetime "
            "(YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None


async def _report_facts(
    url: str, start: dt.datetime, end: dt.datetime, queue: str | None
) -> ReportFacts:
    await migrate(url)
    async with TicketStore(url) as store:
        return await load_report_facts(store.engine, start=start, end=end, queue=queue)


def _cmd_report(args: argparse.Namespace) -> int:
    opened = _open_store(args)
    if opened is None:
        return 1
    config, url = opened
    queues = [queue.id for queue in config.queues]
    if args.queue is not None and args.queue not in queues:
        print(
            f"acd report: unknown queue '{args.queue}' (configured: {', '.join(queues)})",
            file=sys.stderr,
        )
        return 2
    # Periods are the desk's local days and hours: those of its first site.
    timezone = ZoneInfo(config.sites[0].timezone)
    try:
        start, end = resolve_range(
            args.start, args.end, today=dt.datetime.now(timezone).date(), timezone=timezone
        )
        spec = ReportSpec(
            start=start,
            end=end,
            by=args.by,
            timezone=timezone,
            thresholds={q.id: q.service_level.answer_within for q in config.queues},
        )
    except (ValueError, OverflowError) as error:
        print(f"acd report: {error}", file=sys.stderr)
        return 2
    try:
        facts = asyncio.run(_report_facts(url, start, end, args.queue))
    except (SQLAlchemyError, TicketStoreError, OSError) as error:
        where = make_url(url).render_as_string(hide_password=True)
        print(f"acd report: cannot read the store at {where}: {error}", file=sys.stderr)
        return 2
    rows = build_report(facts, spec)
    if args.format == "table":
        print(
            f"{start.astimezone(timezone):%Y-%m-%d %H:%M} up to "
            f"{end.astimezone(timezone):%Y-%m-%d %H:%M} ({config.sites[0].timezone}), "
            f"{f'queue {args.queue}' if args.queue else 'all queues'}, by {args.by}"
        )
    sys.stdout.write(render_report(rows, report_total(facts, spec), args.format, args.by))
    return 0


def _add_report_command(sub: Any) -> None:
    report = sub.add_parser(
        "report", help="calls, answers, waits, callbacks and tickets per period, for managers"
    )
    report.add_argument("config", type=Path)
    report.add_argument(
        "--from",
        dest="start",
        type=_report_time,
        metavar="WHEN",
        help="first day (YYYY-MM-DD, local) or instant (ISO); default: 6 days before --to's day",
    )
    report.add_argument(
        "--to",
        dest="end",
        type=_report_time,
        metavar="WHEN",
        help="last day, included (YYYY-MM-DD, local), or instant, excluded (ISO); default: today",
    )
    report.add_argument(
        "--by",
        choices=PERIOD_KINDS,
        default="day",
        help="day, month: each period in the range; hour, weekday: the range's profile",
    )
    report.add_argument("--queue", help="only this queue (default: all)")
    report.add_argument("--format", choices=OUTPUT_FORMATS, default="table")
    report.set_defaults(func=_cmd_report)


def _add_store_commands(sub: Any) -> None:
    tickets = sub.add_parser("tickets", help="list, show and change tickets")
    tickets.add_argument("config", type=Path)
    tickets.add_argument("--json", action="store_true", help="one JSON object per ticket")
    tickets.set_defaults(func=_cmd_tickets)
    actions = tickets.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="tickets, oldest first")
    listing.add_argument("--status", choices=[s.value for s in TicketStatus])
    listing.add_argument("--owner")
    listing.add_argument("--open", action="store_true", help="only tickets not done")
    actions.add_parser("show", help="one ticket with its history").add_argument("number")
    set_status = actions.add_parser("set-status", help="move a ticket (the lifecycle decides)")
    set_status.add_argument("number")
    set_status.add_argument("status", choices=[s.value for s in TicketStatus])
    set_status.add_argument("--reason", required=True)
    set_status.add_argument("--actor")
    assign = actions.add_parser("assign", help="give a ticket an owner ('nobody' to clear)")
    assign.add_argument("number")
    assign.add_argument("agent")
    assign.add_argument("--actor")
    note = actions.add_parser("note", help="add a note to a ticket's history")
    note.add_argument("number")
    note.add_argument("text")
    note.add_argument("--actor")

    customers = sub.add_parser("customers", help="the customer directory")
    customers.add_argument("config", type=Path)
    customer_actions = customers.add_subparsers(dest="action", required=True)
    importing = customer_actions.add_parser(
        "import", help="import a CSV or YAML directory (all or nothing)"
    )
    importing.add_argument("file", type=Path)
    importing.set_defaults(func=_cmd_customers_import)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a config file; print every error")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_cmd_check)

    render = sub.add_parser("render", help="write the Asterisk configuration")
    render.add_argument("config", type=Path)
    render.add_argument("--out", type=Path, required=True, help="folder to write into")
    render.add_argument(
        "--sounds",
        type=Path,
        help="Asterisk's sounds folder (holding en/, fr/): also install Firstline's prompts",
    )
    render.add_argument(
        "--prompt-cache",
        type=Path,
        help="where generated prompt audio is kept (default ~/.cache/firstline/prompts)",
    )
    render.set_defaults(func=_cmd_render)

    secrets = sub.add_parser("init-secrets", help="create missing file secrets (mode 0600)")
    secrets.add_argument("config", type=Path)
    secrets.set_defaults(func=_cmd_init_secrets)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("config", type=Path)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--pid-file", type=Path, default=_DEFAULT_PID_FILE)
    run.add_argument(
        "--asterisk-conf",
        type=Path,
        help="Asterisk's configuration folder: on reload, rendered files are written there",
    )
    run.add_argument(
        "--asterisk-sounds",
        type=Path,
        help="Asterisk's sounds folder: on reload, changed prompts are generated there",
    )
    run.set_defaults(func=_cmd_run)

    reload = sub.add_parser("reload", help="validate and apply a changed config (SIGHUP)")
    reload.add_argument("config", type=Path)
    reload.add_argument("--pid-file", type=Path, default=_DEFAULT_PID_FILE)
    reload.set_defaults(func=_cmd_reload)

    ready = sub.add_parser("wait-ready", help="wait until the daemon is logged in to AMI")
    ready.add_argument("config", type=Path)
    ready.add_argument("--timeout", type=float, default=15.0)
    ready.set_defaults(func=_cmd_wait_ready)

    _add_store_commands(sub)
    _add_report_command(sub)

    call = sub.add_parser("call", help="place a test call into the hotline (Local channel)")
    call.add_argument("config", type=Path)
    call.add_argument("--number", help="hotline number to dial (default: the first)")
    call.add_argument("--caller-id", default='"Test Caller" <4930555000>')
    call.add_argument("--watch", type=float, default=60.0, help="seconds to follow the call")
    call.set_defaults(func=_cmd_call)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
