"""Load benchmark: SIP callers through hotline -> IVR (one key) -> queue -> SIP agents, on
bare Asterisk and on Asterisk with Firstline attached, at increasing call rates.

Both modes run in one session on the real Asterisk 22 of the live tests, started through
``tests.conftest.LivePbx`` under the same lock as the ``pbx`` fixture
(/tmp/firstline-pbx.lock, flock), so a benchmark never runs beside a live test:

* ``bare``: Firstline's rendered pjsip/queues/manager configuration for
  bench/desk-load.yaml, but extensions.conf replaced by bench/bare-extensions.conf (Answer,
  Read one key over the same two prompts, Queue) and every agent a static queue member.
  No daemon.
* ``firstline``: the whole rendered configuration and the daemon (``acd run``, through
  ``tests.live.harness.DaemonProcess``); the agents log in by dialling *21 from their
  softphones, the route AGI runs the IVR and chooses the queue.

Phones are SIPp processes from tests/sip/ (imported, not copied): one softphone per agent
(register.xml + agent.xml, answering after ``--ring-ms``), and per rate step one SIPp
running tests/sip/caller.xml at ``-r RATE`` for ``--step-seconds``: each caller presses 1 two
seconds after the answer (during the menu prompt, which both modes play with Read()) and
hangs up ``--hold`` seconds later. The caller hangs up, not the agent (``--talk-ms``
is longer than any call): from a softphone's second call on, agent.xml's own hang-up did
not end the call (Asterisk 22.10, SIPp 3.6.1: no ENDED after the talk time, the caller
stayed connected until it gave up; cause not investigated), so a softphone takes many
calls only this way.

Per step:

* failed calls: calls placed that no agent answered within the caller's time on the line
  (an agent's softphone logged the caller's INVITE and then ANSWERED); SIPp's own failed
  calls (its -trace_stat file) are among them and are shown apart;
* INVITE -> 200 p99: SIPp's response time of the 200 (caller.xml ``rtd``, -trace_rtt, whole
  milliseconds);
* AMI events per call: what an AMI client logged in as the daemon's user (so with the
  daemon's event filter) received during the step, per call placed;
* AMI event lag p99: that client's receive time minus the event's ``Timestamp``
  (manager.conf ``timestampevents = yes``, rendered by pbx_config). A separate process
  on the same host: the daemon does not measure its own lag;
* CPU ms per call of Asterisk and of the daemon: utime + stime from /proc/<pid>/stat over
  the step (calls placed until the last one ended), per call placed;
* daemon RSS at the end of the step (VmRSS) and its peak (VmHWM);
* AGI (firstline only): p99 of ``acd_agi_duration_seconds{script="route"}`` from /metrics
  (the whole route request, caller-paced IVR included), and p99 of the route's work after
  the IVR (from the daemon's log: ``call.ivr`` to ``call.routed`` of the same call, which
  the daemon logs once the queue's variables are set: the decision and the SET VARIABLE
  round trips).

A mode stops climbing at the first step with at least ``--max-failed`` % failed calls. When
the bare mode ran first, the firstline mode ends with one more step at 90 % of the bare
mode's highest clean rate (the event-lag target). Results: a table on stdout, JSON with
every figure to ``--out``.

    .venv/bin/python -m bench.load            # both modes, 4 to 28 calls/s, 20 s steps
    .venv/bin/python -m bench.load --modes firstline --rates 4 --agents 10   # quick look

It needs root (SIPp plays the RFC 2833 captures from a raw socket) and the live Asterisk
root (``asterisk/pbx install``). It must not be imported by the package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from acd.ami import AmiClient, Event
from tests.conftest import LOCK_PATH, LivePbx
from tests.live.harness import TEST_SECRET, DaemonProcess, render_live
from tests.sip.harness import (
    HOTLINE,
    METRICS_URL,
    PBX_HOST,
    PBX_SIP_PORT,
    SIP_DIR,
    SipEvent,
    SippProcess,
    SoftPhone,
    dial_feature_code,
    free_udp_port,
    sipp_binary,
)

BENCH_DIR = Path(__file__).resolve().parent
LOAD_CONFIG = BENCH_DIR / "desk-load.yaml"
BARE_DIALPLAN = BENCH_DIR / "bare-extensions.conf"
QUEUE = "first-level"  # desk-load.yaml's only queue
CALLER_KEYS = "WW1"  # two seconds after the answer (in the menu prompt), press 1
MODES = ("bare", "firstline")
# tests/sip's phones log every SIP message for a failed test's post-mortem; under load
# that is megabytes per second of disk writes on the machine being measured.
_MESSAGE_TRACE = ("-trace_msg", "-message_file")


# --- pure parts: statistics and parsers (tests/test_bench_load.py) --------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0.99 = p99); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class SippStats:
    """The end of a SIPp -trace_stat file: calls created, succeeded and failed."""

    created: int
    successful: int
    failed: int


def parse_sipp_stats(text: str) -> SippStats:
    """The cumulative counters of the last line of SIPp's ';'-separated statistics file."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError("SIPp statistics file has no data line")
    header = lines[0].rstrip(";").split(";")
    last = lines[-1].rstrip(";").split(";")
    row = dict(zip(header, last, strict=False))

    def count(name: str) -> int:
        if name not in row:
            raise ValueError(f"SIPp statistics file has no column {name!r}")
        return int(row[name])

    return SippStats(count("TotalCallCreated"), count("SuccessfulCall(C)"), count("FailedCall(C)"))


def parse_rtt(text: str) -> list[float]:
    """Response times in ms from SIPp's -trace_rtt file (``date_ms;response_time_ms;rtd``)."""
    times = []
    for line in text.splitlines():
        parts = line.split(";")
        if len(parts) < 2:
            continue
        try:
            times.append(float(parts[1]))
        except ValueError:
            continue  # the header
    return times


def cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) of a /proc/<pid>/stat line; the command name may hold
    spaces and parentheses, so fields are counted from the last ')'."""
    after_name = stat_line[stat_line.rindex(")") + 2 :].split()
    # after_name[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(after_name[11]) + int(after_name[12])


def status_kib(status_text: str, key: str) -> int | None:
    """A ``kB`` figure of /proc/<pid>/status (VmRSS, VmHWM), in KiB."""
    match = re.search(rf"^{key}:\s+(\d+) kB", status_text, re.MULTILINE)
    return int(match.group(1)) if match else None


def histogram_buckets(
    metrics_text: str, name: str, labels: dict[str, str]
) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one Prometheus histogram series, by bound."""
    buckets = []
    pattern = re.compile(rf"^{re.escape(name)}_bucket\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$")
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        bound = found.pop("le", None)
        if bound is None or found != labels:
            continue
        buckets.append((math.inf if bound == "+Inf" else float(bound), float(match.group("value"))))
    return sorted(buckets)


def histogram_quantile(
    after: Sequence[tuple[float, float]],
    before: Sequence[tuple[float, float]],
    fraction: float,
) -> float | None:
    """The quantile of the observations made between two scrapes, interpolated linearly
    within its bucket like Prometheus' histogram_quantile (the highest finite bound when it
    falls in +Inf); None without observations."""
    earlier = dict(before)
    counts = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]
    if not counts or counts[-1][1] <= 0:
        return None
    target = fraction * counts[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in counts:
        if count >= target:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (target - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def route_after_ivr_seconds(log_lines: Iterable[dict[str, Any]]) -> list[float]:
    """Per route request: seconds from its ``call.ivr`` line to its ``call.routed`` (same
    uniqueid, logged once the dialplan has its variables): the route's own work once the
    caller has answered the menu."""
    ivr_done: dict[str, dt.datetime] = {}
    durations = []
    for line in log_lines:
        uniqueid = line.get("uniqueid")
        stamp = line.get("timestamp")
        if not isinstance(uniqueid, str) or not isinstance(stamp, str):
            continue
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if line.get("event") == "call.ivr":
            ivr_done[uniqueid] = when
        elif line.get("event") == "call.routed":
            started = ivr_done.pop(uniqueid, None)
            if started is not None:
                durations.append((when - started).total_seconds())
    return durations


_FROM_NUMBER = re.compile(r"<sip:([^@>]+)@")


def served_numbers(agent_events: Iterable[SipEvent], numbers: set[str]) -> set[str]:
    """The callers of ``numbers`` that an agent's softphone answered: an INVITE whose From
    is the caller, then the ANSWERED (the ACK of the agent's 200) of the same Call-ID."""
    invited: dict[str, str] = {}
    served: set[str] = set()
    for event in agent_events:
        if event.kind == "INVITE" and len(event.fields) >= 2:
            match = _FROM_NUMBER.search(event.fields[1])
            if match and match.group(1) in numbers:
                invited[event.call_id] = match.group(1)
        elif event.kind == "ANSWERED" and event.call_id in invited:
            served.add(invited[event.call_id])
    return served


def failed_percent(placed: int, failed: int) -> float:
    return 100.0 * failed / placed if placed else 100.0


def highest_clean_rate(steps: Iterable[StepResult], max_failed: float) -> float | None:
    """The highest rate whose step had fewer than ``max_failed`` % failed calls, counting
    only the climb up to the first step that did not (a later extra step does not count)."""
    best = None
    for step in steps:
        if step.extra:
            continue
        if step.failed_pct >= max_failed:
            break
        best = step.rate
    return best


# --- measurements ---------------------------------------------------------------------------


@dataclass(slots=True)
class StepResult:
    mode: str
    rate: float
    placed: int
    sipp_failed: int
    served: int
    failed: int
    failed_pct: float
    invite_200_p50_ms: float | None
    invite_200_p99_ms: float | None
    ami_events: int
    ami_events_per_call: float | None
    ami_lag_p50_ms: float | None
    ami_lag_p99_ms: float | None
    asterisk_cpu_ms_per_call: float | None
    daemon_cpu_ms_per_call: float | None
    daemon_rss_mib: float | None
    daemon_peak_rss_mib: float | None
    agi_route_p99_s: float | None
    route_after_ivr_p50_ms: float | None
    route_after_ivr_p99_ms: float | None
    seconds: float
    load_before: float
    extra: bool = False


@dataclass(slots=True)
class EventTap:
    """An AMI client as the daemon's user: counts events and their lag behind Asterisk."""

    client: AmiClient
    runner: asyncio.Task[None] | None = None
    count: int = 0
    lags_ms: list[float] = field(default_factory=list)

    async def start(self) -> None:
        self.runner = asyncio.create_task(self.client.run())
        await self.client.wait_logged_in(timeout=15)
        self.client.subscribe(None, self._seen)

    def _seen(self, event: Event) -> None:
        received = time.time()
        self.count += 1
        stamp = event.get("Timestamp")
        if stamp:
            with contextlib.suppress(ValueError):
                self.lags_ms.append((received - float(stamp)) * 1000)

    def reset(self) -> None:
        self.count = 0
        self.lags_ms = []

    async def close(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
        await self.client.close()


def proc_text(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return None


def process_ticks(pid: int | None) -> int | None:
    if pid is None:
        return None
    text = proc_text(pid, "stat")
    return cpu_ticks(text) if text else None


def asterisk_pid(pbx: LivePbx) -> int:
    # asterisk/pbx keeps it in the root's own run folder (see RUNDIR there).
    return int((pbx.root / "run/asterisk/firstline.pid").read_text().strip())


def scrape_metrics() -> str:
    with urllib.request.urlopen(METRICS_URL, timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def quiet(process: SippProcess) -> None:
    """Drops tests/sip's per-message trace from a phone not started yet (see _MESSAGE_TRACE)."""
    command: list[str] = process._command
    for flag in _MESSAGE_TRACE:
        index = command.index(flag)
        del command[index : index + (2 if flag == "-message_file" else 1)]


def caller_command(
    workdir: Path, scenario: Path, injection: Path, rate: float, calls: int, timeout: int
) -> list[str]:
    binary = sipp_binary()
    if binary is None:
        raise SystemExit("SIPp is not installed (Debian package sip-tester)")
    # SIPp takes whole calls per period: tenths of a call per second as calls per 10 s.
    return [
        binary,
        f"{PBX_HOST}:{PBX_SIP_PORT}",
        "-sf",
        str(scenario),
        "-inf",
        str(injection),
        "-s",
        HOTLINE,
        "-r",
        str(round(rate * 10)),
        "-rp",
        "10000",
        "-m",
        str(calls),
        # No cap on calls in progress: a slow PBX must show as failed calls, not as SIPp
        # quietly lowering the offered rate.
        "-l",
        str(calls),
        "-i",
        PBX_HOST,
        "-mi",
        PBX_HOST,
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port(with_neighbour=True)),
        "-cp",
        str(free_udp_port()),
        "-nostdin",
        "-timeout",
        f"{timeout}s",
        "-trace_stat",
        "-stf",
        str(workdir / "stat.csv"),
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_logs",
        "-log_file",
        str(workdir / "callers.log"),
    ]


class Bench:
    """Asterisk, the agents' softphones and (firstline mode) the daemon for ``config``, a
    desk of one queue (QUEUE) and agents agent01..agentNN; bench/soak.py reuses the set-up."""

    def __init__(
        self, args: argparse.Namespace, pbx: LivePbx, workdir: Path, config: Path = LOAD_CONFIG
    ) -> None:
        self.args = args
        self.pbx = pbx
        self.workdir = workdir
        self.config = config
        self.agents = [f"agent{i:02d}" for i in range(1, args.agents + 1)]
        self._step_index = 0

    # -- set-up ------------------------------------------------------------------------------

    def render(self, mode: str) -> Path:
        conf = render_live(self.workdir / mode / "asterisk-conf", self.config)
        (conf / "extensions_local.conf").unlink(missing_ok=True)
        if mode == "bare":
            shutil.copy(BARE_DIALPLAN, conf / "extensions.conf")
            queues = conf / "queues.conf"
            members = "".join(
                f"member => PJSIP/{agent},0,{agent},PJSIP/{agent}\n" for agent in self.agents
            )
            text = queues.read_text()
            if f"[{QUEUE}]" not in text:
                raise SystemExit(f"rendered queues.conf has no [{QUEUE}]")
            # desk-load.yaml has one queue: its section is the file's last.
            queues.write_text(text.rstrip("\n") + "\n" + members)
        return conf

    def start_phones(self, mode: str, phones: list[SoftPhone]) -> None:
        """Adds each registered softphone to ``phones`` (the caller stops them all)."""
        phones_dir = self.workdir / mode / "phones"
        phones_dir.mkdir(parents=True, exist_ok=True)
        for agent in self.agents:
            phones.append(self._registered_phone(agent, phones_dir))

    def _registered_phone(self, agent: str, phones_dir: Path) -> SoftPhone:
        """One softphone, started and registered before the next one picks its ports
        (free_udp_port only finds ports free now: started together, two phones can pick
        the same one)."""
        for attempt in range(3):
            phone = SoftPhone(
                agent,
                TEST_SECRET,
                phones_dir,
                ring_ms=self.args.ring_ms,
                talk_ms=self.args.talk_ms,
            )
            quiet(phone.process)
            phone.start()
            try:
                phone.wait_registered(timeout=20)
            except AssertionError:
                phone.stop()
                if attempt == 2:
                    raise
                continue
            return phone
        raise AssertionError("unreachable")

    async def members(self, ami: AmiClient) -> int:
        status = await ami.action("QueueStatus", {"Queue": QUEUE}, timeout=10)
        return sum(1 for e in status.events if e.name == "QueueMember")

    async def log_in(self, ami: AmiClient, phones_dir: Path) -> None:
        """Each agent dials *21 from a softphone, as at the start of a shift."""
        semaphore = asyncio.Semaphore(8)

        async def one(agent: str) -> None:
            async with semaphore:
                for attempt in range(3):
                    try:
                        await asyncio.to_thread(
                            dial_feature_code, phones_dir, agent, TEST_SECRET, "*21", 30
                        )
                    except (RuntimeError, AssertionError):
                        # free_udp_port raced another dialler for the same port: caught
                        # before the start (RuntimeError), or SIPp could not bind it and
                        # exited at once (AssertionError, exit 254 without events).
                        if attempt == 2:
                            raise
                        continue
                    return

        await asyncio.gather(*(one(agent) for agent in self.agents))
        for _ in range(100):
            if await self.members(ami) >= len(self.agents):
                return
            await asyncio.sleep(0.2)
        raise SystemExit(f"only {await self.members(ami)} of {len(self.agents)} agents in {QUEUE}")

    # -- one mode ----------------------------------------------------------------------------

    async def run_mode(self, mode: str, extra_rate: float | None) -> list[StepResult]:
        conf = self.render(mode)
        self.pbx.start(conf, fresh_state=True)
        phones: list[SoftPhone] = []
        daemon: DaemonProcess | None = None
        tap = EventTap(
            AmiClient(
                host="127.0.0.1",
                port=5038,
                username="firstline",
                secret=TEST_SECRET,
                reconnect=False,
            )
        )
        steps: list[StepResult] = []
        try:
            self.start_phones(mode, phones)
            await tap.start()
            if mode == "firstline":
                daemon_dir = self.workdir / mode / "daemon"
                daemon_dir.mkdir(parents=True, exist_ok=True)
                daemon = DaemonProcess(daemon_dir / "acd.log", config_path=self.config)
                daemon.start()
                await self.log_in(tap.client, self.workdir / mode / "phones")
            members = await self.members(tap.client)
            print(f"[{mode}] {members} agents in {QUEUE}", flush=True)
            for rate in self.args.rates:
                step = await self._step(mode, rate, phones, daemon, tap, extra=False)
                steps.append(step)
                _print_step(step)
                if step.failed_pct >= self.args.max_failed:
                    break
            if extra_rate is not None:
                step = await self._step(mode, extra_rate, phones, daemon, tap, extra=True)
                steps.append(step)
                _print_step(step)
            self._report_errors(mode)
        finally:
            await tap.close()
            if daemon is not None:
                daemon.stop()
            for phone in phones:
                phone.stop()
            self.pbx.stop()
        return steps

    def _report_errors(self, mode: str) -> None:
        errors = self.pbx.errors_since_start()
        warnings = [line for line in self.pbx.log_since_start().splitlines() if " WARNING[" in line]
        (self.workdir / mode / "asterisk-errors.log").write_text("\n".join(errors + warnings))
        print(f"[{mode}] Asterisk: {len(errors)} ERROR, {len(warnings)} WARNING lines", flush=True)

    async def _step(
        self,
        mode: str,
        rate: float,
        phones: list[SoftPhone],
        daemon: DaemonProcess | None,
        tap: EventTap,
        *,
        extra: bool,
    ) -> StepResult:
        stepdir = self.workdir / mode / f"rate-{rate:g}{'-extra' if extra else ''}"
        stepdir.mkdir(parents=True, exist_ok=True)
        # SIPp names its -trace_rtt file after the scenario's path: a link here keeps it
        # out of tests/sip.
        scenario = stepdir / "caller.xml"
        scenario.symlink_to(SIP_DIR / "caller.xml")
        calls = max(1, round(rate * self.args.step_seconds))
        injection = stepdir / "callers.csv"
        # Numbers unique to the step: the agents' logs tell which callers reached them.
        numbers = [f"+49305{self._step_index:03d}{n:06d}" for n in range(calls)]
        self._step_index += 1
        injection.write_text(
            "SEQUENTIAL\n" + "".join(f"{n};{CALLER_KEYS};{self.args.hold:g}\n" for n in numbers)
        )
        pbx_pid = asterisk_pid(self.pbx)
        acd_pid = daemon_pid(daemon)
        asterisk_before, daemon_before = process_ticks(pbx_pid), process_ticks(acd_pid)
        metrics_before = scrape_metrics() if daemon is not None else ""
        log_skip = sum(1 for _ in daemon.lines()) if daemon is not None else 0
        load_before = os.getloadavg()[0]
        tap.reset()
        started = time.monotonic()
        timeout = int(self.args.step_seconds + self.args.hold + 60)
        proc = subprocess.Popen(  # noqa: ASYNC220 - polled below without blocking the loop
            caller_command(stepdir, scenario, injection, rate, calls, timeout),
            cwd=stepdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(stepdir / "sipp.stderr").open("wb"),
        )
        try:
            while proc.poll() is None:
                await asyncio.sleep(0.2)
                if time.monotonic() - started > timeout + 15:
                    proc.terminate()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        # The agents' legs end with the callers' (the agent hung up first): a moment for
        # the last events and the daemon's bookkeeping.
        await asyncio.sleep(1.0)
        seconds = time.monotonic() - started
        asterisk_after, daemon_after = process_ticks(pbx_pid), process_ticks(acd_pid)
        tick = os.sysconf("SC_CLK_TCK")

        stats = parse_sipp_stats((stepdir / "stat.csv").read_text())
        rtts = parse_rtt("".join(_read(path) for path in stepdir.glob("*_rtt.csv")))
        placed = stats.created
        served = served_numbers(
            (event for phone in phones for event in phone.process.events()), set(numbers)
        )
        failed = placed - len(served)
        daemon_status = proc_text(acd_pid, "status") if acd_pid else None

        def per_call_ms(before: int | None, after: int | None) -> float | None:
            if before is None or after is None or not placed:
                return None
            return (after - before) * 1000 / tick / placed

        agi_p99 = None
        after_ivr: list[float] = []
        if daemon is not None:
            metrics_after = scrape_metrics()
            labels = {"script": "route"}
            agi_p99 = histogram_quantile(
                histogram_buckets(metrics_after, "acd_agi_duration_seconds", labels),
                histogram_buckets(metrics_before, "acd_agi_duration_seconds", labels),
                0.99,
            )
            after_ivr = route_after_ivr_seconds(
                line for index, line in enumerate(daemon.lines()) if index >= log_skip
            )
        rss = status_kib(daemon_status, "VmRSS") if daemon_status else None
        peak = status_kib(daemon_status, "VmHWM") if daemon_status else None
        return StepResult(
            mode=mode,
            rate=rate,
            placed=placed,
            sipp_failed=stats.failed,
            served=len(served),
            failed=failed,
            failed_pct=failed_percent(placed, failed),
            invite_200_p50_ms=percentile(rtts, 0.5),
            invite_200_p99_ms=percentile(rtts, 0.99),
            ami_events=tap.count,
            ami_events_per_call=tap.count / placed if placed else None,
            ami_lag_p50_ms=percentile(tap.lags_ms, 0.5),
            ami_lag_p99_ms=percentile(tap.lags_ms, 0.99),
            asterisk_cpu_ms_per_call=per_call_ms(asterisk_before, asterisk_after),
            daemon_cpu_ms_per_call=per_call_ms(daemon_before, daemon_after),
            daemon_rss_mib=rss / 1024 if rss else None,
            daemon_peak_rss_mib=peak / 1024 if peak else None,
            agi_route_p99_s=agi_p99,
            route_after_ivr_p50_ms=_ms(percentile(after_ivr, 0.5)),
            route_after_ivr_p99_ms=_ms(percentile(after_ivr, 0.99)),
            seconds=round(seconds, 1),
            load_before=load_before,
            extra=extra,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def daemon_pid(daemon: DaemonProcess | None) -> int | None:
    if daemon is None or not daemon.pid_file.exists():
        return None
    return int(daemon.pid_file.read_text().strip())


# --- output ---------------------------------------------------------------------------------

_COLUMNS = (
    ("mode", "mode", "{}"),
    ("rate", "calls/s", "{:g}"),
    ("placed", "calls", "{}"),
    ("failed_pct", "failed %", "{:.2f}"),
    ("invite_200_p99_ms", "INVITE→200 p99 ms", "{:.1f}"),
    ("ami_events_per_call", "AMI events/call", "{:.1f}"),
    ("ami_lag_p99_ms", "AMI lag p99 ms", "{:.1f}"),
    ("asterisk_cpu_ms_per_call", "Asterisk CPU ms/call", "{:.1f}"),
    ("daemon_cpu_ms_per_call", "daemon CPU ms/call", "{:.1f}"),
    ("daemon_rss_mib", "daemon RSS MiB", "{:.0f}"),
    ("agi_route_p99_s", "route AGI p99 s", "{:.2f}"),
    ("route_after_ivr_p99_ms", "route after IVR p99 ms", "{:.1f}"),
    ("load_before", "load", "{:.1f}"),
)


def _cell(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)


def markdown_table(steps: Iterable[StepResult]) -> str:
    header = "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "mode" else "---:" for key, _, _ in _COLUMNS) + "|"
    rows = []
    for step in steps:
        values = asdict(step)
        cells = [_cell(values[key], template) for key, _, template in _COLUMNS]
        if step.extra:
            cells[0] += " (90 %)"
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def _print_step(step: StepResult) -> None:
    print(json.dumps(asdict(step)), flush=True)


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = status_kib(Path("/proc/meminfo").read_text(), "MemTotal")
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round((mem_kib or 0) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# --- command line ---------------------------------------------------------------------------


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates are positive calls per second, e.g. 2,4,8")
    return rates


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=(
            "SIP load benchmark: bare Asterisk vs Asterisk + Firstline (see the module "
            "docstring). Takes the live-test lock; needs root and the live Asterisk."
        ),
    )
    parser.add_argument("--modes", default="bare,firstline", help="bare,firstline (in order)")
    parser.add_argument(
        "--rates", type=_rates, default=[4, 8, 12, 16, 20, 24, 28], help="calls/s steps"
    )
    parser.add_argument("--step-seconds", type=float, default=20, help="seconds of calls per step")
    parser.add_argument("--agents", type=int, default=80, help="softphones (max 80)")
    parser.add_argument("--ring-ms", type=int, default=200)
    parser.add_argument(
        "--talk-ms", type=int, default=60000, help="agent hangs up after (the caller first)"
    )
    parser.add_argument(
        "--hold", type=float, default=7, help="caller hangs up this long after its key (s)"
    )
    parser.add_argument("--max-failed", type=float, default=0.1, help="clean below this %%")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh /tmp dir")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if not 1 <= args.agents <= 80:
        parser.error("--agents: 1 to 80 (bench/desk-load.yaml)")
    return args


@contextlib.contextmanager
def pbx_lock() -> Iterator[None]:
    """The live tests' lock (tests/conftest.py ``pbx``): one Asterisk user at a time."""
    with LOCK_PATH.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK_PATH} (a live test holds Asterisk)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _run(args: argparse.Namespace, pbx: LivePbx, workdir: Path) -> dict[str, Any]:
    bench = Bench(args, pbx, workdir)
    results: dict[str, list[StepResult]] = {}
    for mode in args.modes:
        extra = None
        if mode == "firstline" and "bare" in results:
            bare_best = highest_clean_rate(results["bare"], args.max_failed)
            extra = round(bare_best * 0.9, 1) if bare_best else None
        results[mode] = await bench.run_mode(mode, extra)
    steps = [step for mode in args.modes for step in results[mode]]
    best = {mode: highest_clean_rate(results[mode], args.max_failed) for mode in args.modes}
    return {"machine": machine(), "args": args_json(args), "best": best, "steps": steps}


def args_json(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }


@contextlib.contextmanager
def live_pbx_session(workdir: Path | None, name: str) -> Iterator[tuple[LivePbx, Path]]:
    """The live tests' Asterisk, under their lock, and a work folder (``workdir`` or a new
    /tmp/firstline-NAME-TIME); stopped at the end. Exits with 2 without SIPp or Asterisk."""
    if sipp_binary() is None:
        print("SIPp is not installed (Debian package sip-tester)", file=sys.stderr)
        raise SystemExit(2)
    folder = workdir or Path(f"/tmp/firstline-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"workdir {folder}", flush=True)
    with pbx_lock():
        pbx = LivePbx()
        if not pbx.installed:
            print("no Asterisk root: run 'asterisk/pbx install'", file=sys.stderr)
            raise SystemExit(2)
        try:
            yield pbx, folder
        finally:
            pbx.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with live_pbx_session(args.workdir, "load") as (pbx, workdir):
        report = asyncio.run(_run(args, pbx, workdir))
    steps: list[StepResult] = report["steps"]
    print(markdown_table(steps))
    print("highest rate with < {} % failed: {}".format(args.max_failed, report["best"]))
    out = args.out or workdir / "results.json"
    report["steps"] = [asdict(step) for step in steps]
    out.write_text(json.dumps(report, indent=2))
    print(f"results {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
