"""Soak benchmark: Asterisk with Firstline attached under a steady mix of calls for a long
time (default 30 minutes at 9 calls/s, half the highest clean rate of bench/load.py), then
checks that the daemon's memory stayed bounded, that no call stayed in its state after the
calls ended, and that its figures agree with Asterisk's and with what the phones saw.

The set-up is bench/load.py's firstline mode (``bench.load.Bench``: the live tests' Asterisk
under /tmp/firstline-pbx.lock, the daemon through ``tests.live.harness.DaemonProcess``, one
SIPp softphone per agent logging in with *21) on bench/desk-soak.yaml, which is
bench/desk-load.yaml with the callback offer on; plus tests/sip's customers' phone (a SIPp
UAS on 127.0.0.1:5090) for the dialer to call back. Agents answer after ``--ring-ms``
(default 4 s): every caller rings an agent that long in the queue, which gives abandoning
callers and callers asking for a callback a window in which they are in the queue and not
yet answered, without starving the queue of agents.

Three SIPp processes run tests/sip/caller.xml for ``--minutes`` at fractions of ``--rate``:

* served (the rest of the rate): press 1 two seconds after the answer, hang up ``--hold``
  seconds later;
* abandon (``--abandon-share``): press 1, hang up ``--abandon-after`` seconds later, about
  two seconds into the queue, while an agent's phone rings;
* callback (``--callback-share``): press 1, then 9 ``--callback-after`` seconds later (in the
  queue while an agent's phone rings: app_queue takes the key through the queue's context
  and cancels the ring), confirm the number by silence and stay on until
  Asterisk hangs up after reading the ticket number. The dialer then holds the caller's
  place; an agent's softphone answers it, then the customers' phone answers and hangs up
  after ``--customer-talk-ms``.

The defaults follow the call's course as measured (a 3-minute run at 9 calls/s of
2026-12-06, daemon log): after the key the IVR says "please hold" (4.3 s), then the route
hands the call over. In the steady state callers ahead ring agents for ``--ring-ms``, the
wait estimate is about that long (p5-p95 2.5-3.9 s), below the queue's
``offer_on_joining_over`` (60 s) and the 30 s below which no wait is told: Background()
plays nothing and the caller joins ≈ 4.3 s after the key (p95 + 0.04 s); an agent answers
≈ 8.5-9.6 s after it (p5-p95). (The first calls of a run, before 20 handle times are known,
hear the 5.1 s offer first.) So callback callers press 9 at 6 s and abandoning callers leave
at 7 s, both while an agent's phone rings, and served callers talk about 3-4 s. Agents are
then about 90 % busy at 9 calls/s (73-77 of 80 by /metrics, ringing included).

Callers hang up, not agents (see bench/load.py on agent.xml's own hang-up).

Every ``--sample-seconds`` (60) it prints and keeps the daemon's VmRSS and VmHWM, the CPU
share of one core the daemon and Asterisk used since the last sample, the callers waiting
and agents busy by /metrics, and what an AMI client logged in as the daemon's user received
(event count, lag p99, as in bench/load.py). After the traffic it waits until Asterisk has
no channel and no caller in the queue and the daemon no pending callback (``--drain-seconds``),
then judges (PASS/FAIL each):

* memory: the daemon's VmRSS may grow at most ``--rss-bound-mib`` (10 MiB) from the sample
  at the end of the warm-up (``--warmup-minutes``, 5) to the highest later sample. Why
  these: the daemon's per-call memory is bounded by design (1000 finished queue visits and
  1000 retired call ids in ``acd.state.LiveState``, full after about 2 minutes at 9 calls/s:
  hence 5 minutes of warm-up), and what still grows legitimately afterwards is bounded too
  (SQLite's page cache, at most 2 MiB per pooled connection, filling as the database grows;
  Python's allocator arenas). At 9 calls/s the 25 minutes after the warm-up are about
  13,500 calls and 1,350 callbacks: a leak of 0.8 KiB per call (one forgotten call record
  with its strings) crosses the bound. The slope over those samples is printed too.
* Asterisk idle: no channel (CoreShowChannels) and no caller in the queue (QueueStatus) once
  the calls ended: the precondition of the next two.
* daemon gauges idle: acd_callers_waiting 0, no agent ringing, on a call or in wrap-up
  (acd_agents), acd_callbacks_pending 0.
* no call open in the daemon's log: every call it took into its state (a ``call.routed``
  line or a QueueCallerJoin ``call.event``) has a ``call.finished`` line (which the daemon
  logs when it records a visit's end, every path that drops a call from its state does).
  The daemon exposes no count of the calls in its state (``LiveState._calls``); the log is
  the closest outside view of it.
* answered, daemon = Asterisk: acd_calls_answered_total plus the callbacks' held places
  answered (daemon log) = QueueStatus Completed (Asterisk counts the held places' queue
  calls; the daemon's counter does not).
* answered, daemon = SIPp: acd_calls_answered_total = callers an agent's softphone answered,
  and held places answered (daemon log) = callback legs the softphones answered.
* abandoned, daemon = Asterisk: acd_calls_abandoned_total + acd_calls_short_abandoned_total =
  QueueStatus Abandoned (Asterisk has no short abandons).
* abandoned, daemon = SIPp: those two plus the callers who hung up before the queue
  (acd_calls_abandoned_before_queue_total: routed, not yet joined; acd_agi_requests_total
  {script="route",result="hangup"}: in the IVR) = callers who hung up without an agent.
* callbacks, daemon = SIPp: acd_callbacks_requested_total = callers who pressed 9 and were
  hung up on by Asterisk without an agent = ``callback.booked`` lines.
* callback attempts, daemon = SIPp: acd_callback_attempts_total = calls the customers' phone
  got, and its ``answered`` series = calls it answered.
* every call accounted for: each caller leg the PBX answered was answered by an agent, booked
  a callback or hung up; no visit timed out, overflowed or vanished (daemon counters).

    .venv/bin/python -m bench.soak --minutes 30 --rate 9
    .venv/bin/python -m bench.soak --minutes 3 --warmup-minutes 1    # a quick look

Results: a line per sample and a verdict per criterion on stdout, every figure as JSON in
the work folder (``--out``). Exit status 0 when every criterion passed, 1 otherwise. Needs
root (SIPp plays RFC 2833 captures from a raw socket) and the live Asterisk root; not part
of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from acd.ami import AmiClient, Event
from acd.state import HELD_PLACE_PREFIX
from bench.load import (
    BENCH_DIR,
    QUEUE,
    Bench,
    EventTap,
    args_json,
    asterisk_pid,
    caller_command,
    daemon_pid,
    live_pbx_session,
    machine,
    parse_sipp_stats,
    percentile,
    proc_text,
    process_ticks,
    quiet,
    scrape_metrics,
    status_kib,
)
from tests.conftest import LivePbx
from tests.live.harness import TEST_SECRET, DaemonProcess
from tests.sip.harness import (
    CUSTOMER_PORT,
    SIP_DIR,
    CustomerPhone,
    SipEvent,
    SoftPhone,
    parse_events,
    port_is_free,
)

SOAK_CONFIG = BENCH_DIR / "desk-soak.yaml"
MODE = "firstline"  # Bench's directory and set-up of Asterisk with the daemon
MENU_KEYS = "WW1"  # two seconds after the answer (in the menu prompt), press 1
CALLBACK_KEY = "9"  # desk-soak.yaml's queue: callback.digit
# Agent states in which an agent is busy with a call (acd_agents{state}).
BUSY_STATES = ("ringing", "on_call", "wrap_up")
MIB = 1024.0


# --- pure parts: traffic, parsers and the verdicts (tests/test_bench_soak.py) ---------------


@dataclass(frozen=True, slots=True)
class Flow:
    """One SIPp caller process: its share of the traffic and what its callers do."""

    name: str
    rate: float  # calls per second, in tenths (SIPp's -r per 10 s)
    keys: str  # caller.xml's keys
    hold: float  # seconds on the line after the last key
    prefix: str  # caller numbers: prefix + six digits

    def numbers(self, calls: int) -> list[str]:
        return [f"{self.prefix}{n:06d}" for n in range(calls)]


def traffic(
    rate: float,
    *,
    abandon_share: float,
    callback_share: float,
    hold: float,
    abandon_after: float,
    callback_after: int,
) -> list[Flow]:
    """The caller processes for ``rate`` calls/s; a share of 0 leaves its flow out."""
    abandon = round(rate * abandon_share, 1)
    callback = round(rate * callback_share, 1)
    served = round(rate - abandon - callback, 1)
    for name, share, part in (
        ("abandon", abandon_share, abandon),
        ("callback", callback_share, callback),
    ):
        if share > 0 and part < 0.1:
            raise ValueError(f"{name} share of {rate:g} calls/s is below SIPp's 0.1 calls/s")
    if served < 0.1:
        raise ValueError("no calls left to be served: lower the abandon and callback shares")
    flows = [Flow("served", served, MENU_KEYS, hold, "+4930510")]
    if abandon > 0:
        flows.append(Flow("abandon", abandon, MENU_KEYS, abandon_after, "+4930520"))
    if callback > 0:
        # Asterisk hangs up once it has read the ticket number: the hold only bounds a
        # booking that never comes.
        keys = MENU_KEYS + "W" * callback_after + CALLBACK_KEY
        flows.append(Flow("callback", callback, keys, 180, "+4930530"))
    return flows


MetricSamples = list[tuple[str, dict[str, str], float]]


def parse_metrics(text: str) -> MetricSamples:
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric_total(samples: MetricSamples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` that carry ``labels`` (0 without any)."""
    return sum(
        value
        for sample, found, value in samples
        if sample == name and all(found.get(key) == wanted for key, wanted in labels.items())
    )


@dataclass(frozen=True, slots=True)
class DaemonFigures:
    """The daemon's /metrics for one queue: counters since its start, gauges now."""

    answered: int
    abandoned: int
    short_abandoned: int
    timed_out: int
    overflowed: int
    unknown: int
    callbacks_requested: int
    before_queue: int  # routed, hung up before joining
    ivr_hangups: int  # hung up during the route request (IVR, lookup), before routing
    attempts: dict[str, int]  # acd_callback_attempts_total by result
    callers_waiting: int
    agents: dict[str, int]  # acd_agents by state
    callbacks_pending: int

    @property
    def agents_busy(self) -> int:
        return sum(self.agents.get(state, 0) for state in BUSY_STATES)


def daemon_figures(samples: MetricSamples, queue: str) -> DaemonFigures:
    def count(name: str, **labels: str) -> int:
        return round(metric_total(samples, name, queue=queue, **labels))

    attempts: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    for name, labels, value in samples:
        if name == "acd_callback_attempts_total" and labels.get("queue") == queue:
            attempts[labels.get("result", "")] += round(value)
        elif name == "acd_agents":
            agents[labels.get("state", "")] += round(value)
    return DaemonFigures(
        answered=count("acd_calls_answered_total"),
        abandoned=count("acd_calls_abandoned_total"),
        short_abandoned=count("acd_calls_short_abandoned_total"),
        timed_out=count("acd_calls_timeout_total"),
        overflowed=count("acd_calls_overflowed_total"),
        unknown=count("acd_calls_unknown_total"),
        callbacks_requested=count("acd_callbacks_requested_total"),
        before_queue=count("acd_calls_abandoned_before_queue_total"),
        # One queue in the soak's desk: the route requests are all its callers'.
        ivr_hangups=round(
            metric_total(samples, "acd_agi_requests_total", script="route", result="hangup")
        ),
        attempts=dict(attempts),
        callers_waiting=count("acd_callers_waiting"),
        agents=dict(agents),
        callbacks_pending=count("acd_callbacks_pending"),
    )


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Asterisk's own figures of a queue (QueueStatus' QueueParams) since it started."""

    waiting: int
    completed: int
    abandoned: int


def queue_counts(events: Iterable[Event], queue: str) -> QueueCounts:
    for event in events:
        if event.name == "QueueParams" and event.get("Queue") == queue:
            return QueueCounts(
                waiting=int(event.get("Calls") or 0),
                completed=int(event.get("Completed") or 0),
                abandoned=int(event.get("Abandoned") or 0),
            )
    raise ValueError(f"QueueStatus has no QueueParams for {queue}")


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What the daemon's JSON log says about the calls it handled."""

    open_calls: tuple[str, ...]  # taken into its state, never finished
    outcomes: dict[str, int]  # call.finished of callers, by outcome
    held_outcomes: dict[str, int]  # call.finished of the dialer's held places
    callbacks_booked: int
    attempts_ended: dict[str, int]  # callback.attempt_ended by outcome
    anomalies: dict[str, int]  # state.anomaly by kind
    warnings: dict[str, int]  # warning and error lines by event


def summarise_daemon_log(lines: Iterable[Mapping[str, Any]]) -> LogSummary:
    entered: dict[str, None] = {}  # in order, for a readable list of open calls
    finished: set[str] = set()
    outcomes: Counter[str] = Counter()
    held: Counter[str] = Counter()
    booked = 0
    attempts: Counter[str] = Counter()
    anomalies: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for line in lines:
        event = line.get("event")
        uniqueid = line.get("uniqueid")
        if line.get("level") in ("warning", "error", "critical"):
            warnings[str(event)] += 1
        if event == "state.anomaly":
            anomalies[str(line.get("kind"))] += 1
        elif event == "callback.booked":
            booked += 1
        elif event == "callback.attempt_ended":
            attempts[str(line.get("outcome"))] += 1
        if not isinstance(uniqueid, str) or not uniqueid:
            continue
        if event == "call.routed" or (
            event == "call.event" and line.get("ami_event") == "QueueCallerJoin"
        ):
            entered[uniqueid] = None
        elif event == "call.finished":
            finished.add(uniqueid)
            outcome = str(line.get("outcome"))
            if uniqueid.startswith(HELD_PLACE_PREFIX):
                held[outcome] += 1
                continue
            outcomes[outcome] += 1
    return LogSummary(
        open_calls=tuple(uid for uid in entered if uid not in finished),
        outcomes=dict(outcomes),
        held_outcomes=dict(held),
        callbacks_booked=booked,
        attempts_ended=dict(attempts),
        anomalies=dict(anomalies),
        warnings=dict(warnings),
    )


@dataclass(frozen=True, slots=True)
class SipTally:
    """What the SIPp phones saw."""

    callers: int  # caller legs the PBX answered
    answered_by_agent: int  # of them: an agent's softphone answered the caller
    callbacks_booked: int  # pressed the callback key, no agent, Asterisk hung up
    abandoned: int  # no agent, hung up themselves
    unexplained: int  # anything else (no end seen; hung up on without a callback key)
    callback_legs_answered: int  # softphones answered a callback's held place
    customer_calls: int  # INVITEs the customers' phone got
    customer_answered: int


def _caller_number(from_header: str) -> str | None:
    start = from_header.find("<sip:")
    end = from_header.find("@", start)
    return from_header[start + 5 : end] if start >= 0 and end > start else None


def tally_sip(
    callers: Iterable[SipEvent],
    agents: Iterable[SipEvent],
    customer: Iterable[SipEvent],
    callback_key: str = CALLBACK_KEY,
) -> SipTally:
    """Classify each caller leg by what the caller, the agents and the customer logged."""
    invited: dict[str, tuple[str | None, bool]] = {}  # agent leg -> caller number, callback
    served: set[str] = set()
    callback_legs = 0
    for event in agents:
        if event.kind == "INVITE" and len(event.fields) >= 2:
            from_header = event.fields[1]
            # The dialer's held place shows the ticket: '"Callback T-..." <sip:number@...>'.
            invited[event.call_id] = (_caller_number(from_header), '"Callback ' in from_header)
        elif event.kind == "ANSWERED" and event.call_id in invited:
            number, is_callback = invited.pop(event.call_id)
            if is_callback:
                callback_legs += 1
            elif number is not None:
                served.add(number)
    numbers: dict[str, str] = {}
    keys: dict[str, set[str]] = {}
    ends: dict[str, str] = {}
    for event in callers:
        if event.kind == "ANSWERED" and event.fields:
            numbers[event.call_id] = event.fields[0]
        elif event.kind == "KEY" and event.fields:
            keys.setdefault(event.call_id, set()).add(event.fields[0])
        elif event.kind == "ENDED":
            ends[event.call_id] = event.fields[0] if event.fields else ""
    answered = booked = abandoned = unexplained = 0
    for call_id, number in numbers.items():
        end = ends.get(call_id)
        if number in served:
            answered += 1
        elif end == "remote" and callback_key in keys.get(call_id, set()):
            booked += 1
        elif end == "local":
            abandoned += 1
        else:
            unexplained += 1
    customer_events = list(customer)
    return SipTally(
        callers=len(numbers),
        answered_by_agent=answered,
        callbacks_booked=booked,
        abandoned=abandoned,
        unexplained=unexplained,
        callback_legs_answered=callback_legs,
        customer_calls=sum(1 for e in customer_events if e.kind == "INVITE"),
        customer_answered=sum(1 for e in customer_events if e.kind == "ANSWERED"),
    )


@dataclass(slots=True)
class Sample:
    """The figures of one sampling moment (CPU: since the previous sample)."""

    seconds: float  # since the traffic started
    phase: str  # start, traffic, drain or end
    daemon_rss_mib: float | None
    daemon_hwm_mib: float | None
    daemon_cpu_pct: float | None  # of one core
    asterisk_cpu_pct: float | None
    callers_waiting: int | None
    agents_busy: int | None
    answered: int | None
    ami_events: int
    ami_lag_p99_ms: float | None
    load: float


def cpu_percent(
    before: int | None, after: int | None, seconds: float, ticks_per_second: int
) -> float | None:
    """The share of one core a process used between two utime+stime readings."""
    if before is None or after is None or seconds <= 0:
        return None
    return 100.0 * (after - before) / ticks_per_second / seconds


@dataclass(frozen=True, slots=True)
class RssGrowth:
    baseline_mib: float | None  # the first sample at or after the warm-up
    baseline_at: float | None  # its time, seconds since the traffic started
    peak_mib: float | None  # the highest sample after it
    growth_mib: float | None
    slope_mib_per_hour: float | None  # least squares over the baseline and later samples


def rss_growth(samples: Sequence[Sample], warmup_seconds: float) -> RssGrowth:
    measured = [
        (s.seconds, s.daemon_rss_mib)
        for s in samples
        if s.daemon_rss_mib is not None and s.seconds >= warmup_seconds
    ]
    if not measured:
        return RssGrowth(None, None, None, None, None)
    (start, baseline), later = measured[0], measured[1:]
    if not later:
        return RssGrowth(baseline, start, None, None, None)
    peak = max(rss for _, rss in later)
    times = [t for t, _ in measured]
    mean_t = sum(times) / len(times)
    mean_rss = sum(rss for _, rss in measured) / len(measured)
    spread = sum((t - mean_t) ** 2 for t in times)
    slope = (
        sum((t - mean_t) * (rss - mean_rss) for t, rss in measured) / spread * 3600
        if spread > 0
        else None
    )
    return RssGrowth(baseline, start, peak, peak - baseline, slope)


@dataclass(frozen=True, slots=True)
class Verdict:
    criterion: str
    passed: bool
    detail: str


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items()) if value) or "none"


def judge(
    *,
    memory: RssGrowth,
    rss_bound_mib: float,
    daemon: DaemonFigures,
    asterisk: QueueCounts,
    asterisk_channels: int,
    log: LogSummary,
    sip: SipTally,
) -> list[Verdict]:
    """PASS or FAIL per criterion of the module docstring."""
    verdicts = []
    if memory.growth_mib is None:
        verdicts.append(
            Verdict(
                f"daemon RSS growth after the warm-up <= {rss_bound_mib:g} MiB",
                False,
                "no samples after the warm-up: run longer than the warm-up",
            )
        )
    else:
        verdicts.append(
            Verdict(
                f"daemon RSS growth after the warm-up <= {rss_bound_mib:g} MiB",
                memory.growth_mib <= rss_bound_mib,
                f"{memory.baseline_mib:.1f} MiB at {memory.baseline_at:.0f} s, peak "
                f"{memory.peak_mib:.1f} MiB after it: +{memory.growth_mib:.1f} MiB "
                f"(slope {memory.slope_mib_per_hour or 0:.1f} MiB/h)",
            )
        )
    verdicts.append(
        Verdict(
            "Asterisk idle after the calls",
            asterisk.waiting == 0 and asterisk_channels == 0,
            f"{asterisk_channels} channels, {asterisk.waiting} callers in {QUEUE}",
        )
    )
    verdicts.append(
        Verdict(
            "daemon gauges idle after the calls",
            daemon.callers_waiting == 0
            and daemon.agents_busy == 0
            and daemon.callbacks_pending == 0,
            f"acd_callers_waiting {daemon.callers_waiting}, agents ringing/on call/wrap-up "
            f"{daemon.agents_busy}, acd_callbacks_pending {daemon.callbacks_pending}",
        )
    )
    shown = ", ".join(log.open_calls[:5]) + (" ..." if len(log.open_calls) > 5 else "")
    verdicts.append(
        Verdict(
            "no call open in the daemon's log",
            not log.open_calls,
            f"{len(log.open_calls)} calls taken in and never finished"
            + (f": {shown}" if shown else ""),
        )
    )
    held_answered = log.held_outcomes.get("answered", 0)
    verdicts.append(
        Verdict(
            "answered: daemon = Asterisk",
            daemon.answered + held_answered == asterisk.completed,
            f"acd_calls_answered_total {daemon.answered} + held places answered {held_answered} "
            f"vs QueueStatus Completed {asterisk.completed}",
        )
    )
    verdicts.append(
        Verdict(
            "answered: daemon = SIPp",
            daemon.answered == sip.answered_by_agent
            and held_answered == sip.callback_legs_answered,
            f"acd_calls_answered_total {daemon.answered} vs callers agents answered "
            f"{sip.answered_by_agent}; held places answered {held_answered} vs callback legs "
            f"agents answered {sip.callback_legs_answered}",
        )
    )
    abandoned = daemon.abandoned + daemon.short_abandoned
    verdicts.append(
        Verdict(
            "abandoned: daemon = Asterisk",
            abandoned == asterisk.abandoned,
            f"acd_calls_abandoned_total {daemon.abandoned} + short {daemon.short_abandoned} "
            f"vs QueueStatus Abandoned {asterisk.abandoned}",
        )
    )
    verdicts.append(
        Verdict(
            "abandoned: daemon = SIPp",
            abandoned + daemon.before_queue + daemon.ivr_hangups == sip.abandoned,
            f"abandoned + short {abandoned} + hung up before the queue {daemon.before_queue} "
            f"+ in the IVR {daemon.ivr_hangups} "
            f"vs callers who hung up without an agent {sip.abandoned}",
        )
    )
    verdicts.append(
        Verdict(
            "callbacks requested: daemon = SIPp",
            daemon.callbacks_requested == sip.callbacks_booked == log.callbacks_booked,
            f"acd_callbacks_requested_total {daemon.callbacks_requested}, callback.booked "
            f"{log.callbacks_booked} vs callers told their ticket {sip.callbacks_booked}",
        )
    )
    attempts = sum(daemon.attempts.values())
    attempts_answered = daemon.attempts.get("answered", 0)
    verdicts.append(
        Verdict(
            "callback attempts: daemon = SIPp",
            attempts == sip.customer_calls and attempts_answered == sip.customer_answered,
            f"acd_callback_attempts_total {attempts} ({_counts(daemon.attempts)}) vs "
            f"customer's phone {sip.customer_calls} calls, {sip.customer_answered} answered",
        )
    )
    lost = daemon.timed_out + daemon.overflowed + daemon.unknown
    verdicts.append(
        Verdict(
            "every call accounted for",
            sip.unexplained == 0 and lost == 0,
            f"{sip.callers} caller legs: {sip.answered_by_agent} answered, "
            f"{sip.callbacks_booked} callbacks, {sip.abandoned} hung up, {sip.unexplained} "
            f"else; daemon: timeout {daemon.timed_out}, overflowed {daemon.overflowed}, "
            f"unknown {daemon.unknown}",
        )
    )
    return verdicts


# --- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class CallerProcess:
    flow: Flow
    workdir: Path
    numbers: list[str]
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    returncode: int | None = None


@dataclass(slots=True)
class _CpuMark:
    at: float
    daemon: int | None
    asterisk: int | None


class Soak:
    """One soak run: set-up, traffic, drain and the figures for the report."""

    def __init__(self, args: argparse.Namespace, pbx: LivePbx, workdir: Path) -> None:
        self.args = args
        self.pbx = pbx
        self.workdir = workdir
        self.bench = Bench(args, pbx, workdir, config=SOAK_CONFIG)
        self.samples: list[Sample] = []
        self._mark: _CpuMark | None = None
        self._started = 0.0

    async def run(self) -> dict[str, Any]:
        if not port_is_free(CUSTOMER_PORT):
            raise SystemExit(f"UDP port {CUSTOMER_PORT} (the customers' phone) is taken")
        self.pbx.start(self.bench.render(MODE), fresh_state=True)
        phones: list[SoftPhone] = []
        customer: CustomerPhone | None = None
        daemon: DaemonProcess | None = None
        callers: list[CallerProcess] = []
        tap = EventTap(
            AmiClient(
                host="127.0.0.1",
                port=5038,
                username="firstline",
                secret=TEST_SECRET,
                reconnect=False,
            )
        )
        try:
            self.bench.start_phones(MODE, phones)
            phones_dir = self.workdir / MODE / "phones"
            customer = CustomerPhone(
                phones_dir, ring_ms=self.args.customer_ring_ms, talk_ms=self.args.customer_talk_ms
            )
            quiet(customer.process)
            customer.start()
            await tap.start()
            daemon_dir = self.workdir / MODE / "daemon"
            daemon_dir.mkdir(parents=True, exist_ok=True)
            daemon = DaemonProcess(daemon_dir / "acd.log", config_path=SOAK_CONFIG)
            daemon.start()
            await self.bench.log_in(tap.client, phones_dir)
            print(f"{await self.bench.members(tap.client)} agents in {QUEUE}", flush=True)

            self._started = time.monotonic()
            self._mark = None
            await self._sample("start", daemon, tap)
            await self._place_calls(callers)
            await self._traffic(callers, daemon, tap)
            drained = await self._drain(daemon, tap)
            await self._sample("end", daemon, tap)
            return await self._report(daemon, tap, phones, customer, callers, drained)
        finally:
            for caller in callers:
                if caller.proc.poll() is None:
                    caller.proc.kill()
                caller.proc.wait()
                caller.stderr.close()
            await tap.close()
            if daemon is not None:
                daemon.stop()
            if customer is not None:
                customer.stop()
            for phone in phones:
                phone.stop()
            self.pbx.stop()

    # -- traffic -----------------------------------------------------------------------------

    async def _place_calls(self, started: list[CallerProcess]) -> None:
        """Starts a SIPp caller process per flow, added to ``started`` (the caller stops them)."""
        args = self.args
        seconds = args.minutes * 60
        flows = traffic(
            args.rate,
            abandon_share=args.abandon_share,
            callback_share=args.callback_share,
            hold=args.hold,
            abandon_after=args.abandon_after,
            callback_after=args.callback_after,
        )
        for flow in flows:
            flowdir = self.workdir / "callers" / flow.name
            flowdir.mkdir(parents=True, exist_ok=True)
            # SIPp names its -trace_rtt file after the scenario's path: a link here keeps it
            # out of tests/sip.
            scenario = flowdir / "caller.xml"
            scenario.unlink(missing_ok=True)
            scenario.symlink_to(SIP_DIR / "caller.xml")
            calls = max(1, round(flow.rate * seconds))
            numbers = flow.numbers(calls)
            injection = flowdir / "callers.csv"
            injection.write_text(
                "SEQUENTIAL\n" + "".join(f"{n};{flow.keys};{flow.hold:g}\n" for n in numbers)
            )
            timeout = int(seconds + flow.hold + 300)
            stderr = (flowdir / "sipp.stderr").open("wb")
            proc = subprocess.Popen(  # noqa: ASYNC220 - polled below without blocking the loop
                caller_command(flowdir, scenario, injection, flow.rate, calls, timeout),
                cwd=flowdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            started.append(CallerProcess(flow, flowdir, numbers, proc, stderr))
            print(f"{flow.name}: {flow.rate:g} calls/s, {calls} calls", flush=True)
            # free_udp_port only knows the ports free now: let this SIPp bind its own first.
            await asyncio.sleep(0.5)

    async def _traffic(
        self, callers: list[CallerProcess], daemon: DaemonProcess, tap: EventTap
    ) -> None:
        """Sample until every caller process has placed and ended its calls."""
        limit = self.args.minutes * 60 + max(c.flow.hold for c in callers) + 360
        next_sample = self._started + self.args.sample_seconds
        while any(c.proc.poll() is None for c in callers):
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now >= next_sample:
                await self._sample("traffic", daemon, tap)
                next_sample += self.args.sample_seconds
            if now - self._started > limit:
                for caller in callers:
                    if caller.proc.poll() is None:
                        caller.proc.terminate()
        for caller in callers:
            caller.returncode = caller.proc.wait()

    async def _drain(self, daemon: DaemonProcess, tap: EventTap) -> bool:
        """Wait until Asterisk and the daemon are idle twice in a row, the daemon's pending
        callbacks figure refreshed in between (every 5 s); False if that never came."""
        deadline = time.monotonic() + self.args.drain_seconds
        next_sample = time.monotonic() + self.args.sample_seconds
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if await self._idle(tap.client):
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= 6:
                    return True
            else:
                idle_since = None
            if time.monotonic() >= next_sample:
                await self._sample("drain", daemon, tap)
                next_sample += self.args.sample_seconds
            await asyncio.sleep(1)
        return False

    async def _idle(self, ami: AmiClient) -> bool:
        figures = daemon_figures(parse_metrics(await asyncio.to_thread(scrape_metrics)), QUEUE)
        status = await ami.action("QueueStatus", {"Queue": QUEUE}, timeout=10)
        channels = await _channel_count(ami)
        return (
            queue_counts(status.events, QUEUE).waiting == 0
            and channels == 0
            and figures.callers_waiting == 0
            and figures.agents_busy == 0
            and figures.callbacks_pending == 0
        )

    async def _sample(self, phase: str, daemon: DaemonProcess, tap: EventTap) -> Sample:
        now = time.monotonic()
        acd_pid = daemon_pid(daemon)
        mark = _CpuMark(now, process_ticks(acd_pid), process_ticks(asterisk_pid(self.pbx)))
        status = proc_text(acd_pid, "status") if acd_pid else None
        rss = status_kib(status, "VmRSS") if status else None
        hwm = status_kib(status, "VmHWM") if status else None
        figures = daemon_figures(parse_metrics(await asyncio.to_thread(scrape_metrics)), QUEUE)
        tick = os.sysconf("SC_CLK_TCK")
        previous = self._mark
        sample = Sample(
            seconds=round(now - self._started, 1),
            phase=phase,
            daemon_rss_mib=rss / MIB if rss else None,
            daemon_hwm_mib=hwm / MIB if hwm else None,
            daemon_cpu_pct=cpu_percent(
                previous.daemon if previous else None,
                mark.daemon,
                now - (previous.at if previous else now),
                tick,
            ),
            asterisk_cpu_pct=cpu_percent(
                previous.asterisk if previous else None,
                mark.asterisk,
                now - (previous.at if previous else now),
                tick,
            ),
            callers_waiting=figures.callers_waiting,
            agents_busy=figures.agents_busy,
            answered=figures.answered,
            ami_events=tap.count,
            ami_lag_p99_ms=percentile(tap.lags_ms, 0.99),
            load=os.getloadavg()[0],
        )
        tap.reset()
        self._mark = mark
        self.samples.append(sample)
        print(_sample_line(sample), flush=True)
        return sample

    # -- the end -----------------------------------------------------------------------------

    async def _report(
        self,
        daemon: DaemonProcess,
        tap: EventTap,
        phones: list[SoftPhone],
        customer: CustomerPhone,
        callers: list[CallerProcess],
        drained: bool,
    ) -> dict[str, Any]:
        figures = daemon_figures(parse_metrics(await asyncio.to_thread(scrape_metrics)), QUEUE)
        status = await tap.client.action("QueueStatus", {"Queue": QUEUE}, timeout=10)
        asterisk = queue_counts(status.events, QUEUE)
        channels = await _channel_count(tap.client)
        log = await asyncio.to_thread(lambda: summarise_daemon_log(daemon.lines()))
        caller_events = [
            event
            for caller in callers
            for event in parse_events(_read(caller.workdir / "callers.log"))
        ]
        sip = tally_sip(
            caller_events,
            (event for phone in phones for event in phone.process.events()),
            customer.process.events(),
        )
        memory = rss_growth(self.samples, self.args.warmup_minutes * 60)
        verdicts = judge(
            memory=memory,
            rss_bound_mib=self.args.rss_bound_mib,
            daemon=figures,
            asterisk=asterisk,
            asterisk_channels=channels,
            log=log,
            sip=sip,
        )
        sipp = {}
        for caller in callers:
            stats_file = caller.workdir / "stat.csv"
            stats = parse_sipp_stats(_read(stats_file)) if stats_file.exists() else None
            sipp[caller.flow.name] = {
                "rate": caller.flow.rate,
                "calls": len(caller.numbers),
                "created": stats.created if stats else None,
                "failed": stats.failed if stats else None,
                "exit": caller.returncode,
            }
        errors = self.pbx.errors_since_start()
        warnings = [line for line in self.pbx.log_since_start().splitlines() if " WARNING[" in line]
        (self.workdir / "asterisk-errors.log").write_text("\n".join(errors + warnings))
        return {
            "drained": drained,
            "memory": asdict(memory),
            "daemon": asdict(figures),
            "asterisk": {**asdict(asterisk), "channels": channels},
            "asterisk_log": {"errors": len(errors), "warnings": len(warnings)},
            "log": {**asdict(log), "open_calls": list(log.open_calls)},
            "sip": asdict(sip),
            "sipp": sipp,
            "verdicts": [asdict(v) for v in verdicts],
        }


async def _channel_count(ami: AmiClient) -> int:
    channels = await ami.action("CoreShowChannels", timeout=10)
    return sum(1 for event in channels.events if event.name == "CoreShowChannel")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


# --- output ---------------------------------------------------------------------------------


def _figure(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def _sample_line(sample: Sample) -> str:
    minutes, seconds = divmod(int(sample.seconds), 60)
    return (
        f"{minutes:3d}:{seconds:02d} {sample.phase:<7} "
        f"RSS {_figure(sample.daemon_rss_mib, '{:.1f}')} MiB "
        f"(HWM {_figure(sample.daemon_hwm_mib, '{:.1f}')})  "
        f"CPU daemon {_figure(sample.daemon_cpu_pct, '{:.1f}')} % "
        f"Asterisk {_figure(sample.asterisk_cpu_pct, '{:.1f}')} %  "
        f"waiting {_figure(sample.callers_waiting, '{}')} busy {_figure(sample.agents_busy, '{}')} "
        f"answered {_figure(sample.answered, '{}')}  "
        f"AMI {sample.ami_events} events, lag p99 {_figure(sample.ami_lag_p99_ms, '{:.1f}')} ms  "
        f"load {sample.load:.1f}"
    )


def print_report(report: dict[str, Any]) -> None:
    daemon, asterisk, sip, log = report["daemon"], report["asterisk"], report["sip"], report["log"]
    print(f"drained: {report['drained']}")
    print(
        f"daemon: answered {daemon['answered']}, abandoned {daemon['abandoned']} "
        f"(+{daemon['short_abandoned']} short), callbacks requested "
        f"{daemon['callbacks_requested']}, attempts {_counts(daemon['attempts'])}"
    )
    print(
        f"Asterisk {QUEUE}: Completed {asterisk['completed']}, Abandoned "
        f"{asterisk['abandoned']}, Calls {asterisk['waiting']}, channels {asterisk['channels']}; "
        f"log {report['asterisk_log']['errors']} ERROR, "
        f"{report['asterisk_log']['warnings']} WARNING lines"
    )
    print(
        f"SIPp: {sip['callers']} caller legs, {sip['answered_by_agent']} answered by agents, "
        f"{sip['callbacks_booked']} callbacks booked, {sip['abandoned']} hung up, "
        f"{sip['unexplained']} else; {sip['callback_legs_answered']} callback legs answered "
        f"by agents; customer's phone {sip['customer_calls']} calls, "
        f"{sip['customer_answered']} answered; per process {report['sipp']}"
    )
    print(
        f"daemon log: callers {_counts(log['outcomes'])}; held places "
        f"{_counts(log['held_outcomes'])}; anomalies {_counts(log['anomalies'])}; "
        f"warnings {_counts(log['warnings'])}"
    )
    for verdict in report["verdicts"]:
        mark = "PASS" if verdict["passed"] else "FAIL"
        print(f"{mark}  {verdict['criterion']}: {verdict['detail']}")


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=(
            "Soak: Asterisk + Firstline under answered, abandoned and callback calls for a "
            "long time (see the module docstring). Takes the live-test lock; needs root."
        ),
    )
    parser.add_argument("--minutes", type=float, default=30, help="minutes of calls")
    parser.add_argument("--rate", type=float, default=9, help="calls/s, all flows together")
    parser.add_argument("--abandon-share", type=float, default=0.1)
    parser.add_argument("--callback-share", type=float, default=0.1)
    parser.add_argument("--agents", type=int, default=80, help="softphones (max 80)")
    parser.add_argument("--ring-ms", type=int, default=4000, help="agents answer after")
    parser.add_argument(
        "--talk-ms", type=int, default=60000, help="agent hangs up after (the caller first)"
    )
    parser.add_argument(
        "--hold", type=float, default=12.5, help="served callers hang up this long after the key"
    )
    parser.add_argument(
        "--abandon-after", type=float, default=7, help="abandoning callers hang up after (s)"
    )
    parser.add_argument(
        "--callback-after", type=int, default=6, help="whole seconds from 1 to the callback key"
    )
    parser.add_argument("--customer-ring-ms", type=int, default=1000)
    parser.add_argument("--customer-talk-ms", type=int, default=3000)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--rss-bound-mib", type=float, default=10)
    parser.add_argument("--sample-seconds", type=float, default=60)
    parser.add_argument("--drain-seconds", type=float, default=180)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh /tmp dir")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 80:
        parser.error("--agents: 1 to 80 (bench/desk-soak.yaml)")
    if args.minutes <= 0 or args.rate <= 0 or args.sample_seconds <= 0:
        parser.error("--minutes, --rate and --sample-seconds are positive")
    try:
        traffic(
            args.rate,
            abandon_share=args.abandon_share,
            callback_share=args.callback_share,
            hold=args.hold,
            abandon_after=args.abandon_after,
            callback_after=args.callback_after,
        )
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with live_pbx_session(args.workdir, "soak") as (pbx, workdir):
        soak = Soak(args, pbx, workdir)
        report = asyncio.run(soak.run())
    report = {
        "machine": machine(),
        "args": args_json(args),
        "samples": [asdict(sample) for sample in soak.samples],
        **report,
    }
    print_report(report)
    out = args.out or workdir / "soak.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"results {out}")
    return 0 if all(v["passed"] for v in report["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
