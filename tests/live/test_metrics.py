"""Live: the daemon's Prometheus figures equal what happened, and what Asterisk counted."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acd.ami import AmiClient
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

METRICS_URL = "http://127.0.0.1:9648/metrics"  # tests/live/desk-live.yaml


def _scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(METRICS_URL, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_counters_match_what_happened_and_asterisk(
    ami: AmiClient, daemon: DaemonProcess
) -> None:
    before = _scrape()
    status = await ami.action("QueueStatus", {"Queue": "first-level"}, timeout=5)
    params = next(e for e in status.events if e.name == "QueueParams")
    completed0, abandoned0 = int(params.get("Completed")), int(params.get("Abandoned"))

    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice answers, talks 2 s each
    await wait_members(ami, "first-level", lambda m: "Local/alice@test-agents" in m)
    first = await place_call(ami, "4930555041")
    await asyncio.sleep(0.3)
    second = await place_call(ami, "4930555042")
    await asyncio.sleep(0.3)
    # Waits behind the second caller and gives up after 1.5 s: a short abandon.
    third = await place_call(ami, "4930555043", variables={"CALLER_HOLD": "1.5"})
    await asyncio.gather(
        collect(ami, first, until="AgentComplete", within=20),
        collect(ami, second, until="AgentComplete", within=20),
        collect(ami, third, until="QueueCallerAbandon", within=20),
    )
    for uid in (first, second, third):
        daemon.wait_for(
            lambda line, uid=uid: (
                line.get("event") == "call.finished" and line.get("uniqueid") == uid
            )
        )
    await asyncio.sleep(1)  # the next gauge tick

    after = _scrape()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - before.get(
            (name, tuple(sorted(labels.items()))), 0.0
        )

    q = {"queue": "first-level"}
    assert delta("acd_calls_offered_total", **q) == 3
    assert delta("acd_calls_answered_total", **q) == 2
    assert delta("acd_calls_short_abandoned_total", **q) == 1
    assert delta("acd_calls_abandoned_total", **q) == 0
    assert delta("acd_wait_seconds_count", outcome="answered", **q) == 2
    assert delta("acd_talk_seconds_count", **q) == 2
    assert _value(after, "acd_callers_waiting", **q) == 0
    assert _value(after, "acd_ami_connected") == 1

    # Asterisk's own figures for the same calls: app_queue counts short abandons as abandons.
    status = await ami.action("QueueStatus", {"Queue": "first-level"}, timeout=5)
    params = next(e for e in status.events if e.name == "QueueParams")
    assert int(params.get("Completed")) - completed0 == delta("acd_calls_answered_total", **q)
    assert int(params.get("Abandoned")) - abandoned0 == (
        delta("acd_calls_abandoned_total", **q) + delta("acd_calls_short_abandoned_total", **q)
    )
