"""The pure parts of the soak benchmark (bench/soak.py): the traffic split, the parsers of
/metrics, QueueStatus, the daemon's log and the phones' logs, and the verdicts. No Asterisk,
no SIPp."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from acd.ami import Event
from bench.soak import (
    DaemonFigures,
    LogSummary,
    QueueCounts,
    RssGrowth,
    Sample,
    SipTally,
    cpu_percent,
    daemon_figures,
    judge,
    metric_total,
    parse_args,
    parse_metrics,
    queue_counts,
    rss_growth,
    summarise_daemon_log,
    tally_sip,
    traffic,
)
from tests.sip.harness import parse_events


def test_traffic_splits_the_rate_in_tenths_of_a_call_per_second() -> None:
    flows = traffic(
        5, abandon_share=0.1, callback_share=0.1, hold=16, abandon_after=6.5, callback_after=6
    )
    assert [(f.name, f.rate) for f in flows] == [
        ("served", 4.0),
        ("abandon", 0.5),
        ("callback", 0.5),
    ]
    served, abandon, callback = flows
    assert (served.keys, served.hold) == ("WW1", 16)
    assert (abandon.keys, abandon.hold) == ("WW1", 6.5)
    # 1, six seconds, then the callback key: rising keys, as caller.xml needs.
    assert callback.keys == "WW1WWWWWW9"
    assert served.numbers(2) == ["+4930510000000", "+4930510000001"]
    assert len({f.prefix for f in flows}) == 3


def test_traffic_leaves_out_a_flow_without_share_and_refuses_too_small_a_share() -> None:
    flows = traffic(
        2, abandon_share=0, callback_share=0.5, hold=16, abandon_after=6, callback_after=6
    )
    assert [(f.name, f.rate) for f in flows] == [("served", 1.0), ("callback", 1.0)]
    with pytest.raises(ValueError, match="abandon share"):
        traffic(
            0.4, abandon_share=0.1, callback_share=0, hold=16, abandon_after=6, callback_after=6
        )
    with pytest.raises(ValueError, match="no calls left"):
        traffic(
            1, abandon_share=0.5, callback_share=0.5, hold=16, abandon_after=6, callback_after=6
        )


METRICS = """\
# HELP acd_calls_answered_total Queue visits answered by an agent.
# TYPE acd_calls_answered_total counter
acd_calls_answered_total{queue="first-level"} 812.0
acd_calls_answered_total{queue="_other"} 3.0
# HELP acd_calls_answered_created Queue visits answered by an agent.
# TYPE acd_calls_answered_created gauge
acd_calls_answered_created{queue="first-level"} 1.7954563e+09
# TYPE acd_calls_abandoned_total counter
acd_calls_abandoned_total{queue="first-level"} 2.0
# TYPE acd_calls_short_abandoned_total counter
acd_calls_short_abandoned_total{queue="first-level"} 88.0
# TYPE acd_callbacks_requested_total counter
acd_callbacks_requested_total{queue="first-level"} 90.0
# TYPE acd_calls_abandoned_before_queue_total counter
acd_calls_abandoned_before_queue_total{queue="first-level"} 1.0
# TYPE acd_agi_requests_total counter
acd_agi_requests_total{script="route",result="hangup"} 4.0
acd_agi_requests_total{script="route",result="ok"} 990.0
acd_agi_requests_total{script="rate",result="hangup"} 7.0
# TYPE acd_callback_attempts_total counter
acd_callback_attempts_total{queue="first-level",result="answered"} 89.0
acd_callback_attempts_total{queue="first-level",result="no_answer"} 1.0
acd_callback_attempts_total{queue="first-level",result="busy"} 0.0
# TYPE acd_callers_waiting gauge
acd_callers_waiting{queue="first-level"} 0.0
# TYPE acd_agents gauge
acd_agents{state="available"} 78.0
acd_agents{state="on_call"} 1.0
acd_agents{state="ringing"} 1.0
# TYPE acd_callbacks_pending gauge
acd_callbacks_pending{queue="first-level"} 0.0
# TYPE acd_expected_wait_seconds gauge
acd_expected_wait_seconds{queue="first-level"} NaN
"""


def test_metric_total_sums_the_samples_with_the_labels_asked_for() -> None:
    samples = parse_metrics(METRICS)
    assert metric_total(samples, "acd_calls_answered_total") == 815.0
    assert metric_total(samples, "acd_calls_answered_total", queue="first-level") == 812.0
    assert metric_total(samples, "acd_callback_attempts_total", result="answered") == 89.0
    assert metric_total(samples, "acd_calls_timeout_total") == 0.0


def test_daemon_figures_of_one_queue() -> None:
    figures = daemon_figures(parse_metrics(METRICS), "first-level")
    assert (figures.answered, figures.abandoned, figures.short_abandoned) == (812, 2, 88)
    assert figures.callbacks_requested == 90
    assert (figures.before_queue, figures.ivr_hangups) == (1, 4)
    assert figures.attempts == {"answered": 89, "no_answer": 1, "busy": 0}
    assert figures.agents_busy == 2  # ringing and on a call; available agents are not busy
    assert (figures.callers_waiting, figures.callbacks_pending, figures.timed_out) == (0, 0, 0)


def _event(name: str, **fields: str) -> Event:
    return Event(name, (("Event", name), *fields.items()))


def test_queue_counts_come_from_the_queues_params() -> None:
    events = [
        _event("QueueParams", Queue="other", Calls="5", Completed="1", Abandoned="1"),
        _event("QueueParams", Queue="first-level", Calls="0", Completed="901", Abandoned="90"),
        _event("QueueMember", Queue="first-level", Name="agent01"),
    ]
    assert queue_counts(events, "first-level") == QueueCounts(0, 901, 90)
    with pytest.raises(ValueError, match="no QueueParams"):
        queue_counts(events[2:], "first-level")


def _log(event: str, uniqueid: str | None = None, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"event": event, "level": "info", **fields}
    if uniqueid is not None:
        line["uniqueid"] = uniqueid
    return line


def test_daemon_log_summary_finds_calls_taken_in_and_never_finished() -> None:
    lines = [
        _log("daemon.started"),
        # answered
        _log("call.routed", "1.1", queue="first-level"),
        _log("call.event", "1.1", ami_event="QueueCallerJoin"),
        _log("call.event", "1.1", ami_event="AgentConnect"),
        _log("call.finished", "1.1", outcome="answered", wait=4.1),
        # a short abandon in the queue
        _log("call.routed", "1.2"),
        _log("call.event", "1.2", ami_event="QueueCallerJoin"),
        _log("call.finished", "1.2", outcome="short_abandon", wait=2.0),
        # hung up after routing, before joining
        _log("call.routed", "1.3"),
        _log("call.finished", "1.3", outcome="abandoned", wait=None),
        # a callback: booked, then Asterisk's leave for a call the daemon already retired
        _log("call.routed", "1.4"),
        _log("call.event", "1.4", ami_event="QueueCallerJoin"),
        _log("callback.booked", "1.4", ticket="T-1"),
        _log("call.finished", "1.4", outcome="callback_requested", wait=1.5),
        _log("call.event", "1.4", ami_event="QueueCallerLeave"),
        # the callback's held place, answered; the attempt
        _log("call.event", "cb-1-abc;2", ami_event="QueueCallerJoin"),
        _log("call.finished", "cb-1-abc;2", outcome="answered", wait=4.0),
        _log("callback.attempt_ended", callback=1, outcome="answered"),
        # never finished: in the daemon's state for good
        _log("call.routed", "1.5"),
        _log("call.event", "1.6", ami_event="QueueCallerJoin"),
        {**_log("state.anomaly", kind="unknown_call"), "level": "warning"},
        {**_log("call.record_failed", "1.2"), "level": "warning"},
    ]
    summary = summarise_daemon_log(lines)
    assert summary.open_calls == ("1.5", "1.6")
    assert summary.outcomes == {
        "answered": 1,
        "short_abandon": 1,
        "abandoned": 1,
        "callback_requested": 1,
    }
    assert summary.held_outcomes == {"answered": 1}
    assert summary.callbacks_booked == 1
    assert summary.attempts_ended == {"answered": 1}
    assert summary.anomalies == {"unknown_call": 1}
    assert summary.warnings == {"state.anomaly": 1, "call.record_failed": 1}


# What the phones logged (tests/sip's scenarios): three callers, two agents, the customer.
CALLERS = """\
ANSWERED|10.0|a-1@sipp|+4930510000000
KEY|12.4|a-1@sipp|1
ENDED|28.5|a-1@sipp|local
ANSWERED|10.2|b-1@sipp|+4930520000000
KEY|12.6|b-1@sipp|1
ENDED|19.2|b-1@sipp|local
ANSWERED|10.4|c-1@sipp|+4930530000000
KEY|12.8|c-1@sipp|1
KEY|19.1|c-1@sipp|9
ENDED|45.0|c-1@sipp|remote
ANSWERED|11.0|d-1@sipp|+4930510000001
KEY|13.4|d-1@sipp|1
"""
AGENTS = (
    'INVITE|17.0|x1@pbx|sip:agent01@127.0.0.1:5071| "Caller" <sip:+4930510000000@127.0.0.1>|||\n'
    "ANSWERED|21.0|x1@pbx\n"
    "ENDED|28.5|x1@pbx|remote\n"
    'INVITE|17.1|x2@pbx|sip:agent02@127.0.0.1:5072| "Caller" <sip:+4930520000000@127.0.0.1>|||\n'
    "CANCELLED|19.2|x2@pbx\n"
    # The held place of the callback caller +4930530000000, ticket T-2026-000001.
    'INVITE|50.0|x3@pbx|sip:agent02@127.0.0.1:5072| "Callback T-2026-000001" '
    "<sip:+4930530000000@127.0.0.1>| T-2026-000001||\n"
    "ANSWERED|54.0|x3@pbx\n"
)
CUSTOMER = """\
INVITE|60.0|y1@pbx|sip:+4930530000000@127.0.0.1:5090| "" <sip:100@127.0.0.1>;tag=4|||
ANSWERED|61.0|y1@pbx
ENDED|64.0|y1@pbx|local
"""


def test_sip_tally_classifies_each_caller_by_what_the_phones_saw() -> None:
    tally = tally_sip(parse_events(CALLERS), parse_events(AGENTS), parse_events(CUSTOMER))
    assert tally == SipTally(
        callers=4,
        answered_by_agent=1,
        callbacks_booked=1,
        abandoned=1,
        unexplained=1,  # d-1 never ended
        callback_legs_answered=1,
        customer_calls=1,
        customer_answered=1,
    )


def test_a_callback_leg_does_not_count_its_customer_as_served() -> None:
    # The held place shows the customer's number: its answer is no answer of the caller.
    tally = tally_sip(parse_events(CALLERS), parse_events(AGENTS), ())
    assert tally.callbacks_booked == 1
    assert tally.answered_by_agent == 1


def test_cpu_percent_is_of_one_core() -> None:
    assert cpu_percent(100, 3100, 30.0, 100) == pytest.approx(100.0)
    assert cpu_percent(100, 130, 60.0, 100) == pytest.approx(0.5)
    assert cpu_percent(None, 130, 60.0, 100) is None
    assert cpu_percent(100, 130, 0.0, 100) is None


def _sample(seconds: float, rss: float | None) -> Sample:
    return Sample(seconds, "traffic", rss, rss, None, None, 0, 0, 0, 0, None, 0.0)


def test_rss_growth_counts_from_the_first_sample_after_the_warm_up_to_the_peak() -> None:
    samples = [
        _sample(0, 80),
        _sample(60, 88),
        _sample(120, 90),
        _sample(180, 93),
        _sample(240, 92),
    ]
    growth = rss_growth(samples, warmup_seconds=120)
    assert (growth.baseline_mib, growth.baseline_at, growth.peak_mib) == (90, 120, 93)
    assert growth.growth_mib == pytest.approx(3.0)
    # Least squares through (120, 90), (180, 93), (240, 92): 1 MiB per minute.
    assert growth.slope_mib_per_hour == pytest.approx(60.0)


def test_rss_growth_needs_a_sample_after_the_baseline() -> None:
    assert rss_growth([_sample(0, 80), _sample(60, 81)], warmup_seconds=60).growth_mib is None
    assert rss_growth([_sample(0, 80)], warmup_seconds=60).baseline_mib is None
    assert rss_growth([_sample(60, None), _sample(120, 81)], 60).growth_mib is None


CLEAN_DAEMON = DaemonFigures(
    answered=800,
    abandoned=2,
    short_abandoned=88,
    timed_out=0,
    overflowed=0,
    unknown=0,
    callbacks_requested=90,
    before_queue=1,
    ivr_hangups=0,
    attempts={"answered": 90, "no_answer": 0},
    callers_waiting=0,
    agents={"available": 80, "on_call": 0},
    callbacks_pending=0,
)
CLEAN_LOG = LogSummary(
    open_calls=(),
    outcomes={"answered": 800, "abandoned": 3, "short_abandon": 88, "callback_requested": 90},
    held_outcomes={"answered": 90},
    callbacks_booked=90,
    attempts_ended={"answered": 90},
    anomalies={},
    warnings={},
)
CLEAN_SIP = SipTally(
    callers=981,
    answered_by_agent=800,
    callbacks_booked=90,
    abandoned=91,
    unexplained=0,
    callback_legs_answered=90,
    customer_calls=90,
    customer_answered=90,
)
CLEAN: dict[str, Any] = {
    "memory": RssGrowth(90.0, 300.0, 94.5, 4.5, 6.0),
    "rss_bound_mib": 10.0,
    "daemon": CLEAN_DAEMON,
    "asterisk": QueueCounts(waiting=0, completed=890, abandoned=90),
    "asterisk_channels": 0,
    "log": CLEAN_LOG,
    "sip": CLEAN_SIP,
}


def _failed(**changes: Any) -> list[str]:
    return [v.criterion for v in judge(**{**CLEAN, **changes}) if not v.passed]


def test_a_clean_run_passes_every_criterion() -> None:
    verdicts = judge(**CLEAN)
    assert len(verdicts) == 11
    assert all(v.passed for v in verdicts), [v for v in verdicts if not v.passed]
    assert verdicts[0].criterion == "daemon RSS growth after the warm-up <= 10 MiB"
    assert "+4.5 MiB" in verdicts[0].detail


def test_memory_beyond_the_bound_or_unmeasured_fails() -> None:
    grown = RssGrowth(90.0, 300.0, 100.5, 10.5, 20.0)
    assert _failed(memory=grown) == ["daemon RSS growth after the warm-up <= 10 MiB"]
    unmeasured = RssGrowth(90.0, 300.0, None, None, None)
    assert _failed(memory=unmeasured) == ["daemon RSS growth after the warm-up <= 10 MiB"]


def test_a_call_left_anywhere_fails_its_criterion() -> None:
    assert _failed(asterisk_channels=2) == ["Asterisk idle after the calls"]
    busy = dataclasses.replace(CLEAN_DAEMON, agents={"available": 79, "wrap_up": 1})
    assert _failed(daemon=busy) == ["daemon gauges idle after the calls"]
    pending = dataclasses.replace(CLEAN_DAEMON, callbacks_pending=1)
    assert _failed(daemon=pending) == ["daemon gauges idle after the calls"]
    leaked = dataclasses.replace(CLEAN_LOG, open_calls=("1.5",))
    assert _failed(log=leaked) == ["no call open in the daemon's log"]


def test_figures_that_disagree_fail_their_comparison() -> None:
    asterisk = QueueCounts(waiting=0, completed=891, abandoned=90)
    assert _failed(asterisk=asterisk) == ["answered: daemon = Asterisk"]
    asterisk = QueueCounts(waiting=0, completed=890, abandoned=91)
    assert _failed(asterisk=asterisk) == ["abandoned: daemon = Asterisk"]
    sip = dataclasses.replace(CLEAN_SIP, answered_by_agent=799, unexplained=1)
    assert _failed(sip=sip) == ["answered: daemon = SIPp", "every call accounted for"]
    sip = dataclasses.replace(CLEAN_SIP, abandoned=92, callers=982)
    assert _failed(sip=sip) == ["abandoned: daemon = SIPp"]
    # a caller who hung up in the IVR is one of them
    assert _failed(sip=sip, daemon=dataclasses.replace(CLEAN_DAEMON, ivr_hangups=1)) == []
    log = dataclasses.replace(CLEAN_LOG, callbacks_booked=89)
    assert _failed(log=log) == ["callbacks requested: daemon = SIPp"]
    sip = dataclasses.replace(CLEAN_SIP, customer_answered=89)
    assert _failed(sip=sip) == ["callback attempts: daemon = SIPp"]
    daemon = dataclasses.replace(CLEAN_DAEMON, timed_out=1)
    assert _failed(daemon=daemon) == ["every call accounted for"]


def test_args_defaults_are_the_soak_of_the_issue() -> None:
    args = parse_args([])
    assert (args.minutes, args.rate, args.warmup_minutes, args.rss_bound_mib) == (30, 9, 5, 10)
    with pytest.raises(SystemExit):
        parse_args(["--agents", "81"])
    with pytest.raises(SystemExit):
        parse_args(["--rate", "0.4"])  # 0.04 calls/s of abandons: below SIPp's resolution
