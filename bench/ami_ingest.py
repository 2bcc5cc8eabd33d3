"""Benchmark: AMI messages/s parsed by Firstline's codec vs panoramisk 1.4's parser.

Both parse the same byte stream (the recorded queue-call transcript repeated to ~200k
messages) fed in the same chunks, with no I/O: ours through AmiParser.receive_data /
next_message, panoramisk's through AMIProtocol.data_received -> Message.from_line (its
real parsing path), with handle_message replaced by a counter. panoramisk is set to
encoding="utf8", its Manager's default. Run it in the bench venv, which has panoramisk:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e . panoramisk==1.4
    .venv-bench/bin/python bench/ami_ingest.py [--messages 200000] [--chunk 65536]

Without panoramisk it measures our codec alone. It must not be imported by the package.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acd.ami.codec import NEED_DATA, AmiParser, Closed, Event, Response

_TRANSCRIPT = Path(__file__).resolve().parents[1] / "tests/transcripts/ami/login_queue_call.bin"


def build_stream(messages: int) -> tuple[bytes, int]:
    """Banner + the transcript's messages (banner stripped) repeated to >= `messages`."""
    data = _TRANSCRIPT.read_bytes()
    banner, _, body = data.partition(b"\r\n")
    per_copy = body.count(b"\r\n\r\n")
    copies = -(-messages // per_copy)
    return banner + b"\r\n" + body * copies, per_copy * copies


def chunked(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def run_ours(chunks: list[bytes]) -> int:
    parser = AmiParser()
    receive, next_message = parser.receive_data, parser.next_message
    count = -1  # the banner is not a message
    for chunk in chunks:
        receive(chunk)
        while next_message() is not NEED_DATA:
            count += 1
    receive(b"")
    assert isinstance(next_message(), Closed)
    return count


def run_ours_all_fields(chunks: list[bytes]) -> int:
    """As run_ours, but every message is also split into (key, value) pairs, which is the
    work panoramisk always does (ours does it on first access)."""
    parser = AmiParser()
    receive, next_message = parser.receive_data, parser.next_message
    count = -1
    for chunk in chunks:
        receive(chunk)
        while (message := next_message()) is not NEED_DATA:
            if isinstance(message, Event | Response):
                tuple(message.fields)
            count += 1
    return count


def _panoramisk_runner() -> Callable[[list[bytes]], int] | None:
    try:
        from panoramisk.ami_protocol import AMIProtocol  # noqa: PLC0415
    except ImportError:
        return None

    def run_panoramisk(chunks: list[bytes]) -> int:
        counter = [0]

        class _Counting(AMIProtocol):  # type: ignore[misc]
            def handle_message(self, message: Any) -> None:
                counter[0] += 1

        protocol = _Counting()
        protocol.connection_made(None)
        protocol.encoding = "utf8"
        for chunk in chunks:
            protocol.data_received(chunk)
        return counter[0]

    return run_panoramisk


def measure(
    fn: Callable[[list[bytes]], int], chunks: list[bytes], repeat: int
) -> tuple[int, float]:
    times = []
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn(chunks)
        times.append(time.perf_counter() - start)
    return count, statistics.median(times)


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--messages", type=int, default=200_000)
    args.add_argument("--chunk", type=int, default=65536)
    args.add_argument("--repeat", type=int, default=5)
    opts = args.parse_args()
    stream, expected = build_stream(opts.messages)
    chunks = chunked(stream, opts.chunk)
    print(f"stream: {len(stream) / 1e6:.1f} MB, {expected} messages, {len(chunks)} chunks")
    count, ours = measure(run_ours, chunks, opts.repeat)
    assert count == expected, (count, expected)
    print(f"firstline codec:                   {count / ours:10,.0f} msg/s ({ours:.3f} s)")
    count, full = measure(run_ours_all_fields, chunks, opts.repeat)
    assert count == expected, (count, expected)
    print(f"firstline codec, every field read: {count / full:10,.0f} msg/s ({full:.3f} s)")
    runner = _panoramisk_runner()
    if runner is None:
        print("panoramisk not installed: run in the bench venv for the comparison")
        return 0
    theirs_count, theirs = measure(runner, chunks, opts.repeat)
    print(
        f"panoramisk 1.4:                    {theirs_count / theirs:10,.0f} msg/s ({theirs:.3f} s)"
    )
    if theirs_count != expected:
        print(f"  (panoramisk produced {theirs_count} messages, expected {expected})")
    print(f"ratio (ingest, fields on demand): {theirs / ours:.2f}x")
    print(f"ratio (every field read):         {theirs / full:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
