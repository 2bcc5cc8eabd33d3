"""Live: the daemon's Prometheus figures equal what happened, and what Asterisk counted."""

from __future__ import annotations

import asyncio
import urllib.request
import wave

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acd.ami import AmiClient, Event
from acd.state import HELD_PLACE_PREFIX
from tests.live.harness import (
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    pbx_sounds,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

METRICS_URL = "http://127.0.0.1:9648/metrics"  # tests/live/desk-live.yaml


def _prompt_seconds(name: str) -> float:
    """How long one of our installed prompts plays."""
    with wave.open(str(pbx_sounds() / name)) as audio:
        return audio.getnframes() / audio.getframerate()


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
    """Five callers: two answered, a short and a long abandon, one pressing the callback
    key (the callback is made later: alice first, then the customer)."""
    before = _scrape()
    status = await ami.action("QueueStatus", {"Queue": "first-level"}, timeout=5)
    params = next(e for e in status.events if e.name == "QueueParams")
    completed0, abandoned0 = int(params.get("Completed")), int(params.get("Abandoned"))
    # The callback's held place is a queue entry Asterisk counts too; it is not a caller.
    held: list[str] = []

    def watch(event: Event) -> None:
        if (event.get("Uniqueid") or "").startswith(HELD_PLACE_PREFIX):
            held.append(event.name)

    unsubscribe = ami.subscribe(None, watch)
    await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": "20"}, timeout=5)
    try:
        await logout_everyone(ami)
        await dial_feature_code(ami, "*21", "201")  # alice answers, talks 20 s each
        await wait_members(ami, "first-level", lambda m: "Local/alice@test-agents" in m)
        first = await place_call(ami, "4930555041")
        await asyncio.sleep(0.3)
        second = await place_call(ami, "4930555042", variables={"CALLER_HOLD": "60"})
        await asyncio.sleep(0.3)
        # The others hear the welcome offer (nobody is free) and wait behind the second.
        offer = _prompt_seconds("en/firstline/callback-offer-9.wav")
        # Gives up 1.5 s after joining the queue: a short abandon.
        third = await place_call(ami, "4930555043", variables={"CALLER_HOLD": f"{offer + 1.5:.1f}"})
        # Presses 9 two seconds into the queue and books a callback.
        fourth = await place_call(ami, "+4930555044", "press9", {"PRESS_AFTER": f"{offer + 2:.1f}"})
        # Gives up after 8 s in the queue, while alice still talks to the first: abandoned.
        fifth = await place_call(ami, "4930555045", variables={"CALLER_HOLD": f"{offer + 8:.1f}"})
        await asyncio.gather(
            collect(ami, first, until="AgentComplete", within=40),
            collect(ami, second, until="AgentComplete", within=70),
            collect(ami, third, until="QueueCallerAbandon", within=20),
            collect(ami, fifth, until="QueueCallerAbandon", within=30),
        )
        attempt = await asyncio.to_thread(
            daemon.wait_for,
            lambda line: line.get("event") == "callback.attempt_ended",
            90,
        )
        assert attempt["outcome"] == "answered"
        for uid in (first, second, third, fourth, fifth):
            daemon.wait_for(
                lambda line, uid=uid: (
                    line.get("event") == "call.finished" and line.get("uniqueid") == uid
                )
            )
        await asyncio.sleep(1)  # the next gauge tick
    finally:
        unsubscribe()
        await ami.action("Setvar", {"Variable": "AGENT_TALK", "Value": ""}, timeout=5)

    after = _scrape()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - before.get(
            (name, tuple(sorted(labels.items()))), 0.0
        )

    q = {"queue": "first-level"}
    assert delta("acd_calls_offered_total", **q) == 5
    assert delta("acd_calls_answered_total", **q) == 2
    assert delta("acd_calls_short_abandoned_total", **q) == 1
    assert delta("acd_calls_abandoned_total", **q) == 1
    assert delta("acd_callbacks_requested_total", **q) == 1
    assert delta("acd_callback_attempts_total", result="answered", **q) == 1
    assert delta("acd_callback_delay_seconds_count", **q) == 1
    assert delta("acd_wait_seconds_count", outcome="answered", **q) == 2
    assert delta("acd_wait_seconds_count", outcome="abandoned", **q) == 1
    assert delta("acd_talk_seconds_count", **q) == 2
    assert delta("acd_talk_seconds_sum", **q) >= 2 * 19
    assert _value(after, "acd_callers_waiting", **q) == 0
    assert _value(after, "acd_expected_wait_seconds", **q) == 0  # alice is free again
    assert _value(after, "acd_ami_connected") == 1

    # Asterisk's own figures for the same calls: app_queue counts short abandons as abandons.
    status = await ami.action("QueueStatus", {"Queue": "first-level"}, timeout=5)
    params = next(e for e in status.events if e.name == "QueueParams")
    # The held place alice answered before the customer was called is app_queue's call
    # too (its AgentComplete may come after the place's channel is gone, without its id:
    # count it by the answered attempt). A held place refreshed while waiting is an
    # abandon there.
    held_answered = delta("acd_callback_attempts_total", result="answered", **q)
    assert int(params.get("Completed")) - completed0 == (
        delta("acd_calls_answered_total", **q) + held_answered
    )
    assert int(params.get("Abandoned")) - abandoned0 == (
        delta("acd_calls_abandoned_total", **q)
        + delta("acd_calls_short_abandoned_total", **q)
        + held.count("QueueCallerAbandon")
    )
