"""The pure parts of the load benchmark (bench/load.py): statistics and the parsers of
SIPp's, /proc's, Prometheus' and the daemon's output. No Asterisk, no SIPp."""

from __future__ import annotations

import json
import math

import pytest

from bench.load import (
    StepResult,
    cpu_ticks,
    failed_percent,
    highest_clean_rate,
    histogram_buckets,
    histogram_quantile,
    markdown_table,
    parse_args,
    parse_rtt,
    parse_sipp_stats,
    percentile,
    route_after_ivr_seconds,
    served_numbers,
    status_kib,
)
from tests.sip.harness import parse_events

# The head and two rows of a SIPp 3.6.1 -trace_stat file (columns cut after FailedCall).
SIPP_STATS = (
    "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;"
    "CallRate(P);CallRate(C);IncomingCall(P);IncomingCall(C);OutgoingCall(P);"
    "OutgoingCall(C);TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);"
    "FailedCall(P);FailedCall(C);\n"
    "2026-11-23\t17:30:00.000000\t1795000000.000000;x;x;00:00:01;00:00:01;2;2;2;0;0;2;2;"
    "2;2;0;0;0;0;\n"
    "2026-11-23\t17:30:00.000000\t1795000000.000000;x;x;00:00:01;00:00:14;2;0;1.4;0;0;0;20;"
    "20;0;0;19;0;1;\n"
)


def test_sipp_stats_are_the_last_line_cumulative_counters() -> None:
    stats = parse_sipp_stats(SIPP_STATS)
    assert (stats.created, stats.successful, stats.failed) == (20, 19, 1)


def test_sipp_stats_without_a_data_line_are_an_error() -> None:
    with pytest.raises(ValueError, match="no data line"):
        parse_sipp_stats(SIPP_STATS.splitlines()[0])


def test_rtt_file_gives_response_times_in_ms_without_the_header() -> None:
    text = "Date_ms;response_time_ms;rtd_no\n1004;12;1\n2004;0;1\n"  # as SIPp 3.6.1 wrote it
    assert parse_rtt(text) == [12.0, 0.0]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) is None


def test_cpu_ticks_count_fields_after_a_command_name_with_spaces() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    line = "4242 (python3 (acd) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0\n"
    assert cpu_ticks(line) == 1234 + 567


def test_status_kib_reads_one_figure() -> None:
    text = "Name:\tpython3\nVmHWM:\t  81234 kB\nVmRSS:\t   70000 kB\n"
    assert status_kib(text, "VmRSS") == 70000
    assert status_kib(text, "VmHWM") == 81234
    assert status_kib(text, "VmSwap") is None


METRICS_BEFORE = """\
# TYPE acd_agi_duration_seconds histogram
acd_agi_duration_seconds_bucket{le="0.5",script="route"} 0.0
acd_agi_duration_seconds_bucket{le="1.0",script="route"} 0.0
acd_agi_duration_seconds_bucket{le="2.5",script="route"} 10.0
acd_agi_duration_seconds_bucket{le="+Inf",script="route"} 10.0
acd_agi_duration_seconds_bucket{le="0.5",script="agent"} 3.0
acd_agi_duration_seconds_bucket{le="+Inf",script="agent"} 3.0
"""
METRICS_AFTER = """\
acd_agi_duration_seconds_bucket{le="0.5",script="route"} 0.0
acd_agi_duration_seconds_bucket{le="1.0",script="route"} 50.0
acd_agi_duration_seconds_bucket{le="2.5",script="route"} 110.0
acd_agi_duration_seconds_bucket{le="+Inf",script="route"} 110.0
acd_agi_duration_seconds_count{script="route"} 110.0
"""


def test_histogram_buckets_of_one_series_sorted_by_bound() -> None:
    buckets = histogram_buckets(METRICS_BEFORE, "acd_agi_duration_seconds", {"script": "route"})
    assert buckets == [(0.5, 0.0), (1.0, 0.0), (2.5, 10.0), (math.inf, 10.0)]


def test_histogram_quantile_of_the_observations_between_two_scrapes() -> None:
    labels = {"script": "route"}
    after = histogram_buckets(METRICS_AFTER, "acd_agi_duration_seconds", labels)
    before = histogram_buckets(METRICS_BEFORE, "acd_agi_duration_seconds", labels)
    # 100 new observations: 50 in (0.5, 1], 50 in (1, 2.5]. p50 is the top of the first,
    # p99 interpolates 49/50 of the way through the second.
    assert histogram_quantile(after, before, 0.5) == pytest.approx(1.0)
    assert histogram_quantile(after, before, 0.99) == pytest.approx(1.0 + 1.5 * 49 / 50)
    assert histogram_quantile(before, before, 0.99) is None


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    after = [(1.0, 1.0), (math.inf, 10.0)]
    assert histogram_quantile(after, [], 0.99) == 1.0


def _line(event: str, uniqueid: str, stamp: str, **fields: str) -> dict[str, str]:
    return {"event": event, "uniqueid": uniqueid, "timestamp": stamp, **fields}


def test_route_after_ivr_pairs_each_call_with_its_own_routed_line() -> None:
    lines = [
        _line("call.ivr", "a", "2026-11-23T17:30:01.100000Z"),
        _line("call.ivr", "b", "2026-11-23T17:30:01.200000Z"),
        _line("call.routed", "b", "2026-11-23T17:30:01.215000Z", script="route"),
        _line("call.routed", "x", "2026-11-23T17:30:01.300000Z", script="route"),
        _line("agi.request_done", "a", "2026-11-23T17:30:01.140000Z", script="route"),
        _line("call.routed", "a", "2026-11-23T17:30:01.150000Z", script="route"),
        json.loads('{"event": "daemon.started"}'),
    ]
    assert route_after_ivr_seconds(lines) == pytest.approx([0.015, 0.05])


def test_served_numbers_are_callers_an_agent_answered() -> None:
    log = (
        'INVITE|1.0|c1@pbx|sip:agent01@127.0.0.1:5071| "Caller" <sip:+4930500000001@127.0.0.1>'
        ";tag=x|||\n"
        "ANSWERED|1.3|c1@pbx\n"
        'INVITE|2.0|c2@pbx|sip:agent01@127.0.0.1:5071| "Caller" <sip:+4930500000002@127.0.0.1>'
        ";tag=y|||\n"
        "CANCELLED|2.1|c2@pbx\n"
        'INVITE|3.0|c3@pbx|sip:agent01@127.0.0.1:5071| "Caller" <sip:+4930599999999@127.0.0.1>'
        ";tag=z|||\n"
        "ANSWERED|3.3|c3@pbx\n"
        "ANSWERED|4.0|unknown@pbx\n"
    )
    numbers = {"+4930500000001", "+4930500000002", "+4930500000003"}
    assert served_numbers(parse_events(log), numbers) == {"+4930500000001"}


def _step(rate: float, failed_pct: float, *, extra: bool = False) -> StepResult:
    return StepResult(
        mode="bare",
        rate=rate,
        placed=100,
        sipp_failed=0,
        served=100,
        failed=0,
        failed_pct=failed_pct,
        invite_200_p50_ms=1.0,
        invite_200_p99_ms=2.0,
        ami_events=1000,
        ami_events_per_call=10.0,
        ami_lag_p50_ms=None,
        ami_lag_p99_ms=None,
        asterisk_cpu_ms_per_call=20.0,
        daemon_cpu_ms_per_call=None,
        daemon_rss_mib=None,
        daemon_peak_rss_mib=None,
        agi_route_p99_s=None,
        route_after_ivr_p50_ms=None,
        route_after_ivr_p99_ms=None,
        seconds=30.0,
        load_before=1.0,
        extra=extra,
    )


def test_highest_clean_rate_stops_at_the_first_failing_step() -> None:
    steps = [
        _step(2, 0.0),
        _step(4, 0.05),
        _step(8, 0.5),
        _step(12, 0.0),
        _step(3, 0.0, extra=True),
    ]
    assert highest_clean_rate(steps, 0.1) == 4
    assert highest_clean_rate([_step(2, 1.0)], 0.1) is None


def test_failed_percent_of_nothing_placed_is_a_failure() -> None:
    assert failed_percent(1000, 1) == 0.1
    assert failed_percent(0, 0) == 100.0


def test_markdown_table_has_one_row_per_step_and_dashes_for_missing_figures() -> None:
    table = markdown_table([_step(2, 0.0), _step(3, 0.0, extra=True)]).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| bare | 2 | 100 | 0.00 |")
    assert "| - |" in table[2]
    assert table[3].startswith("| bare (90 %) | 3 |")


def test_args_rates_and_modes() -> None:
    args = parse_args(["--rates", "2,4.5", "--modes", "firstline"])
    assert args.rates == [2.0, 4.5]
    assert args.modes == ["firstline"]
    with pytest.raises(SystemExit):
        parse_args(["--modes", "asterisk"])
