"""Benchmark: FastAGI command round trip of Firstline's AgiServer vs a bare asyncio server.

A stand-in Asterisk (asyncio protocol, in this process) keeps N calls in flight: each call
connects like res_agi.c does, sends the request header Asterisk 22 sent in the recording
tests/transcripts/agi/hangup.bin (script ``ivr``, a fresh uniqueid and caller id), then
answers the five commands of an IVR step with Asterisk's replies and waits for the server
to close.  The step, byte for byte the same from both servers:

    GET VARIABLE CALLERID(num)              200 result=1 (+49305550042)
    STREAM FILE firstline/welcome 12        200 result=0 endpos=1234
    GET DATA firstline/menu 3000 1          200 result=D        (D: the call's digit)
    SET VARIABLE FIRSTLINE_MENU D           200 result=1
    SET VARIABLE FIRSTLINE_ROUTE QUEUE      200 result=1        (QUEUE chosen from D)

Servers (each in its own process, so the stand-in's work does not share their event loop):
``firstline`` is `acd.agi.AgiServer` with a handler calling get_variable, stream_file,
get_data and set_variable x2, logging configured as the daemon does (`acd.log`, level info
unless ``--log-level`` says otherwise, JSON lines to /dev/null), ``max_sessions`` raised so
that no call is turned away; ``baseline`` is ``asyncio.start_server`` with readline/write
and pre-encoded command lines: no codec, quoting, timeouts, logging or counters.  The
stand-in compares every command byte for byte and fails the run on any difference.

Measured, with ``time.perf_counter_ns`` in the stand-in:

* command round trip (the server's turnaround): from just after the stand-in handed the
  header, or its reply to the previous command, to the kernel (``transport.write``) until
  the next command line arrives (``data_received``).  Five samples per call; it includes
  loopback delivery both ways and the stand-in's event loop waking up, the same for both.
* step: from starting the TCP connect until the server's end of stream after the fifth
  reply (accept, header, five round trips, handler end and close).
* server CPU per call: the server process's user + system time (``/proc/PID/stat``, Linux
  only) over the measured rounds, divided by their calls.  Less sensitive than the
  latencies to how the scheduler places and wakes the processes on a busy machine.

The stand-in answers at once (no prompt playing, no caller thinking), so a level's calls
form a closed loop: with 50 or 200 in flight the server process runs flat out and the round
trip is mostly queueing, i.e. it follows the server's CPU time per call.

Each concurrency level runs a warm-up per server, then the measured calls in rounds (six by
default) that alternate the servers, so that drift on the machine hits both alike.  uvloop
is not a dependency of Firstline, so plain asyncio runs both sides.  Both server processes
run with glibc's mmap and trim thresholds fixed (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, unless already set): otherwise the bare server's 256 KiB read
buffers cost three system calls per reply in some runs and none in others (see
`ServerProcess.start`).

    .venv/bin/python bench/agi_latency.py [--concurrency 1 50 200] [--calls 6000] [--quick]
        [--rounds 6] [--log-level info]
    .venv/bin/python bench/agi_latency.py --profile /tmp/agi.prof   # cProfile the server

It must not be imported by the package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from acd.agi import AgiServer, AgiSession
from acd.log import configure_logging

ROOT: Final = Path(__file__).resolve().parents[1]
SCRIPT: Final = "ivr"
SERVERS: Final = ("baseline", "firstline")
ROUNDS: Final = 6
# The daemon's default of 256 would turn calls away above it: here we measure latency only.
MAX_SESSIONS: Final = 4096
MALLOC_MMAP_THRESHOLD: Final = 1024 * 1024  # above asyncio's 256 KiB reads, see ServerProcess
_RECORDED_HEADER: Final = ROOT / "tests/transcripts/agi/hangup.bin"

# The IVR step's decision: the digit pressed picks the queue (anything else: first level).
ROUTES: Final = {"1": "first-en", "2": "second-billing", "3": "second-network"}
DEFAULT_ROUTE: Final = "first-en"

GET_CALLER: Final = b"GET VARIABLE CALLERID(num)\n"
STREAM_WELCOME: Final = b"STREAM FILE firstline/welcome 12\n"
GET_MENU: Final = b"GET DATA firstline/menu 3000 1\n"
SET_MENU: Final = b"SET VARIABLE FIRSTLINE_MENU "
SET_ROUTE: Final = b"SET VARIABLE FIRSTLINE_ROUTE "
COMMANDS_PER_CALL: Final = 5
_TIMES: Final = "\N{MULTIPLICATION SIGN}"


# -- the servers (run in child processes) --------------------------------------------------


async def firstline_ivr_step(session: AgiSession) -> None:
    """The Firstline handler: five commands through AgiSession's typed helpers."""
    caller = await session.get_variable("CALLERID(num)")
    if caller is None:
        return
    await session.stream_file("firstline/welcome", "12")
    digits = await session.get_data("firstline/menu", 3000, 1)
    await session.set_variable("FIRSTLINE_MENU", digits)
    await session.set_variable("FIRSTLINE_ROUTE", ROUTES.get(digits, DEFAULT_ROUTE))


_BYTE_ROUTES: Final = {k.encode(): v.encode() for k, v in ROUTES.items()}


async def baseline_ivr_step(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The bare server: the same exchange with readline/write and no protocol handling."""
    try:
        while (line := await reader.readline()) not in (b"\n", b""):
            pass
        if not line:
            return
        writer.write(GET_CALLER)
        if not (await reader.readline()).startswith(b"200 result=1 "):
            return
        writer.write(STREAM_WELCOME)
        await reader.readline()
        writer.write(GET_MENU)
        digits = (await reader.readline())[len(b"200 result=") :].split(b" ", 1)[0].strip()
        writer.write(SET_MENU + digits + b"\n")
        await reader.readline()
        writer.write(SET_ROUTE + _BYTE_ROUTES.get(digits, DEFAULT_ROUTE.encode()) + b"\n")
        await reader.readline()
    finally:
        writer.close()


async def _serve(kind: str, log_level: str) -> None:
    if kind == "firstline":
        devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - lives as long as the process
        configure_logging(log_level, stream=devnull)
        server = AgiServer(
            host="127.0.0.1",
            port=0,
            handlers={SCRIPT: firstline_ivr_step},
            max_sessions=MAX_SESSIONS,
        )
        await server.start()
        print(server.port, flush=True)
        try:
            await _until_stdin_closes()
        finally:
            await server.close()
    else:
        bare = await asyncio.start_server(baseline_ivr_step, "127.0.0.1", 0)
        print(bare.sockets[0].getsockname()[1], flush=True)
        try:
            await _until_stdin_closes()
        finally:
            bare.close()
            await bare.wait_closed()


async def _until_stdin_closes() -> None:
    # The parent stops us by closing our stdin; a thread waits so the loop stays free.
    await asyncio.to_thread(sys.stdin.buffer.read)


def serve_main(kind: str, log_level: str, profile: str | None) -> int:
    if profile is None:
        asyncio.run(_serve(kind, log_level))
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve(kind, log_level))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)
    return 0


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, kind: str, log_level: str = "info", profile: str | None = None) -> ServerProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
        command += ["--log-level", log_level]
        if profile is not None:
            command += ["--profile", profile]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # asyncio's data_received path (the bare server's) allocates 256 KiB per recv.  glibc
        # serves that with mmap + mremap + munmap until some free raises its dynamic mmap
        # threshold (and with it the heap's trim threshold), which happens or not depending
        # on the process's history: the bare server's cost per reply then flips between two
        # levels from run to run.  Fixed thresholds keep it on the heap without trimming,
        # the cheaper level, in every run.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MALLOC_MMAP_THRESHOLD))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(2 * MALLOC_MMAP_THRESHOLD))
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.kill()
            process.wait()
            raise RuntimeError(f"{kind} server did not start (said {line!r})")
        return cls(kind=kind, process=process, port=int(line))

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server process used so far (None off Linux)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        # The fields after the ")" closing the command name; utime and stime are 14 and 15.
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"{self.kind} server did not stop") from None
        if code != 0:
            raise RuntimeError(f"{self.kind} server exited with {code}")


# -- the stand-in Asterisk ---------------------------------------------------------------


_HEADER_LINES: Final = {
    b"agi_network_script": b"agi_network_script: " + SCRIPT.encode(),
    b"agi_request": b"agi_request: agi://127.0.0.1/" + SCRIPT.encode(),
    b"agi_uniqueid": b"agi_uniqueid: 1795432407.%(n)d",
    b"agi_callerid": b"agi_callerid: %(caller)s",
    b"agi_channel": b"agi_channel: PJSIP/trunk-%(n)08x",
}


def _header_template() -> bytes:
    """The recorded header as a %-template with a per-call uniqueid, channel and caller."""
    recorded = _RECORDED_HEADER.read_bytes().split(b"\n\n", 1)[0].replace(b"%", b"%%")
    lines = [_HEADER_LINES.get(line.partition(b":")[0], line) for line in recorded.split(b"\n")]
    return b"\n".join(lines) + b"\n\n"


@dataclass
class Samples:
    """What one server did at one concurrency level, all times in ns."""

    round_trips: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    cpu_seconds: float | None = None  # of the server process, when it could be read


class BenchError(Exception):
    """The server under test did not do the expected exchange."""


class StandInCall(asyncio.Protocol):
    """One call's FastAGI connection as Asterisk drives it: header, then reply per command."""

    def __init__(self, number: int, header: bytes, samples: Samples, done: asyncio.Future[None]):
        digit = str(number % 4 + 1).encode()  # 4 is not on the menu: the default route
        caller = b"+4930555%04d" % (number % 10_000)
        self._header = header % {b"n": number, b"caller": caller}
        self._script = [
            (GET_CALLER, b"200 result=1 (" + caller + b")\n"),
            (STREAM_WELCOME, b"200 result=0 endpos=1234\n"),
            (GET_MENU, b"200 result=" + digit + b"\n"),
            (SET_MENU + digit + b"\n", b"200 result=1\n"),
            (
                SET_ROUTE + _BYTE_ROUTES.get(digit, DEFAULT_ROUTE.encode()) + b"\n",
                b"200 result=1\n",
            ),
        ]
        self._samples = samples
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._step = 0
        self._sent = 0
        self._round_trips: list[int] = []
        self.started = time.perf_counter_ns()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._header)
        self._sent = time.perf_counter_ns()

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter_ns()
        self._buffer += data
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            if self._step >= len(self._script):
                self._fail(f"unexpected line after the step: {line!r}")
                return
            expected, reply = self._script[self._step]
            if line + b"\n" != expected:
                self._fail(f"command {self._step + 1}: expected {expected!r}, got {line!r}")
                return
            self._round_trips.append(arrived - self._sent)
            self._step += 1
            assert self._transport is not None
            self._transport.write(reply)
            self._sent = time.perf_counter_ns()

    def eof_received(self) -> bool | None:
        ended = time.perf_counter_ns()
        if self._step != len(self._script) or self._buffer:
            self._fail(f"server closed after {self._step} commands")
            return None
        self._samples.round_trips.extend(self._round_trips)
        self._samples.steps.append(ended - self.started)
        self._samples.calls += 1
        if not self._done.done():
            self._done.set_result(None)
        return None  # let the transport close our side

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._fail(f"connection lost before the server's end of stream: {exc!r}")

    def _fail(self, why: str) -> None:
        if self._transport is not None:
            self._transport.abort()
        if not self._done.done():
            self._done.set_exception(BenchError(why))


async def run_calls(port: int, concurrency: int, calls: int, first_number: int) -> Samples:
    """`calls` calls against the server on `port`, `concurrency` of them in flight."""
    loop = asyncio.get_running_loop()
    header = _header_template()
    samples = Samples()
    numbers = iter(range(first_number, first_number + calls))

    async def caller() -> None:
        for number in numbers:
            done: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda n=number, d=done: StandInCall(n, header, samples, d),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
            try:
                async with asyncio.timeout(30):
                    await done
            finally:
                transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(min(concurrency, calls))))
    samples.seconds = time.perf_counter() - started
    return samples


# -- running and reporting -----------------------------------------------------------------


@dataclass
class LevelResult:
    concurrency: int
    by_server: dict[str, Samples]


def _percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q))])


async def run_level(
    ports: dict[str, int],
    concurrency: int,
    calls: int,
    warmup: int,
    rounds: int = ROUNDS,
    cpu_clocks: Mapping[str, Callable[[], float | None]] | None = None,
) -> LevelResult:
    """`warmup` calls per server, then `calls` per server in `rounds` alternating rounds;
    `cpu_clocks` read each server's CPU time, for its CPU per call."""
    number = 0
    for kind in SERVERS:
        await run_calls(ports[kind], concurrency, max(warmup, concurrency), number)
        number += max(warmup, concurrency)
    merged = {kind: Samples() for kind in SERVERS}
    for index in range(rounds):
        share = calls // rounds + (1 if index < calls % rounds else 0)
        order = SERVERS if index % 2 == 0 else SERVERS[::-1]
        for kind in order:
            clock = cpu_clocks.get(kind) if cpu_clocks is not None else None
            cpu_before = clock() if clock is not None else None
            part = await run_calls(ports[kind], concurrency, share, number)
            cpu_after = clock() if clock is not None else None
            number += share
            into = merged[kind]
            into.round_trips += part.round_trips
            into.steps += part.steps
            into.seconds += part.seconds
            into.calls += part.calls
            if cpu_before is not None and cpu_after is not None:
                into.cpu_seconds = (into.cpu_seconds or 0.0) + cpu_after - cpu_before
    return LevelResult(concurrency, merged)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )


def table(results: Sequence[LevelResult]) -> str:
    rows = [
        "| calls in flight | server | calls | calls/s | command p50 µs | command p99 µs "
        "| step p50 ms | step p99 ms | server CPU µs/call |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in results:
        figures = {}
        cpu = {}
        for kind in SERVERS:
            s = level.by_server[kind]
            figures[kind] = (
                _percentile(s.round_trips, 0.50) / 1e3,
                _percentile(s.round_trips, 0.99) / 1e3,
                _percentile(s.steps, 0.50) / 1e6,
                _percentile(s.steps, 0.99) / 1e6,
            )
            cpu[kind] = s.cpu_seconds / s.calls * 1e6 if s.cpu_seconds is not None else None
            name = "Firstline `AgiServer`" if kind == "firstline" else "bare asyncio"
            rows.append(
                f"| {level.concurrency} | {name} | {s.calls:,} | {s.calls / s.seconds:,.0f} "
                f"| {figures[kind][0]:,.0f} | {figures[kind][1]:,.0f} "
                f"| {figures[kind][2]:.2f} | {figures[kind][3]:.2f} "
                f"| {'-' if cpu[kind] is None else f'{cpu[kind]:,.0f}'} |"
            )
        ratios = [f / b for f, b in zip(figures["firstline"], figures["baseline"], strict=True)]
        r = [f"{ratio:.2f}{_TIMES}" for ratio in ratios]
        first_cpu, bare_cpu = cpu["firstline"], cpu["baseline"]
        cpu_ratio = f"{first_cpu / bare_cpu:.2f}{_TIMES}" if first_cpu and bare_cpu else "-"
        rows.append(
            f"| {level.concurrency} | ratio Firstline / bare | | "
            f"| **{r[0]}** | **{r[1]}** | {r[2]} | {r[3]} | {cpu_ratio} |"
        )
    return "\n".join(rows)


async def run(
    concurrency: Sequence[int],
    calls: int,
    warmup: int,
    *,
    rounds: int = ROUNDS,
    log_level: str = "info",
    profile: str | None = None,
) -> list[LevelResult]:
    """Start both servers, measure every level, stop them; `profile` is a cProfile file
    for the Firstline server."""
    servers = {
        kind: ServerProcess.start(kind, log_level, profile if kind == "firstline" else None)
        for kind in SERVERS
    }
    try:
        ports = {kind: server.port for kind, server in servers.items()}
        clocks = {kind: server.cpu_seconds for kind, server in servers.items()}
        return [
            await run_level(ports, level, calls, warmup, rounds, cpu_clocks=clocks)
            for level in concurrency
        ]
    finally:
        for server in servers.values():
            server.stop()


def print_profile(path: str, out: IO[str], limit: int = 30) -> None:
    stats = pstats.Stats(path, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--calls", type=int, default=6000, help="measured calls per level")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up calls per server")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternations per level")
    parser.add_argument("--quick", action="store_true", help="at most 600 calls, 100 warm-up")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="Firstline server's log level (the daemon's default: info)",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the Firstline server")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve_main(args.serve, args.log_level, args.profile)
    if args.quick:
        args.calls, args.warmup = min(args.calls, 600), min(args.warmup, 100)
    print(f"machine: {machine()}")
    print(
        f"{args.calls:,} measured calls per level and server ({COMMANDS_PER_CALL} commands "
        f"each) in {args.rounds} alternating rounds, after {args.warmup:,} warm-up calls; "
        f"Firstline logging at {args.log_level}\n"
    )
    results = asyncio.run(
        run(
            args.concurrency,
            args.calls,
            args.warmup,
            rounds=args.rounds,
            log_level=args.log_level,
            profile=args.profile,
        )
    )
    print(table(results))
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")
    if args.profile is not None:
        print(f"\nFirstline server profile ({args.profile}), by own time:")
        print_profile(args.profile, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
