"""The pure core of ``acd report``: figures per period, local time and DST, rounding, output."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.reports import (
    COLUMNS,
    PERIOD_KINDS,
    CallbackFacts,
    CallFacts,
    PeriodKind,
    ReportFacts,
    ReportRow,
    ReportSpec,
    TicketFacts,
    build_report,
    render_csv,
    render_json,
    render_table,
    report_total,
    resolve_range,
)

BERLIN = ZoneInfo("Europe/Berlin")
ADDITIVE = (
    "offered",
    "answered",
    "answered_directly",
    "abandoned",
    "short_abandoned",
    "callbacks",
    "tickets",
)


def berlin(*parts: int) -> dt.datetime:
    """A Berlin wall-clock time as a UTC instant (fold 0 where the hour repeats)."""
    return dt.datetime(*parts, tzinfo=BERLIN).astimezone(dt.UTC)


def days(first: dt.date, last: dt.date, tz: dt.tzinfo = BERLIN) -> tuple[dt.datetime, dt.datetime]:
    return resolve_range(first, last, today=last, timezone=tz)


def spec(
    first: dt.date,
    last: dt.date,
    by: PeriodKind = "day",
    thresholds: dict[str, float] | None = None,
) -> ReportSpec:
    start, end = days(first, last)
    return ReportSpec(start, end, by, BERLIN, thresholds or {})


def call(
    arrived: dt.datetime,
    outcome: str | None,
    *,
    wait: float | None = None,
    queue: str | None = "first-level",
    reached: bool = False,
    joined: bool = True,
) -> CallFacts:
    joined_at = arrived + dt.timedelta(seconds=2) if joined else None
    answered_at = (
        joined_at + dt.timedelta(seconds=wait)
        if joined_at is not None and wait is not None
        else None
    )
    return CallFacts(arrived, queue, outcome, joined_at, answered_at, reached)


def only(rows: Sequence[ReportRow], period: str) -> ReportRow:
    (row,) = (r for r in rows if r.period == period)
    return row


MARCH_30 = dt.date(2026, 3, 30)


# --- figures ---------------------------------------------------------------------------------


def test_each_figure_of_a_day() -> None:
    at = berlin(2026, 3, 30, 9)
    calls = [
        call(at, "answered", wait=10),  # within 20 s
        call(at, "answered", wait=30.0),  # too late
        call(at, "abandoned"),
        call(at, "short_abandon"),
        call(at, "callback_requested", reached=True),  # answered, by the callback
        call(at, "callback_requested"),  # not reached (yet)
        call(at, "timeout"),
        call(at, "overflowed"),
        call(at, "unknown"),  # lost while the AMI link was down: not offered
        call(at, "abandoned", joined=False),  # hung up in the IVR: not offered
        call(at, None),  # still going: not offered
    ]
    rows = build_report(
        ReportFacts(calls=calls), spec(MARCH_30, MARCH_30, thresholds={"first-level": 20})
    )
    assert rows == [
        ReportRow(
            period="2026-03-30",
            occurrences=1,
            offered=8,
            answered=3,
            answered_directly=2,
            abandoned=1,
            short_abandoned=1,
            asa_seconds=20.0,
            service_level_pct=14.3,  # 1 of 8 - 1
            callbacks=0,
            callback_delay_seconds=None,
            tickets=0,
            solved_same_day_pct=None,
        )
    ]


def test_service_level_uses_each_queues_threshold_and_counts_the_threshold_itself() -> None:
    at = berlin(2026, 3, 30, 9)
    calls = [
        call(at, "answered", wait=20, queue="first-level"),  # exactly the threshold: in
        call(at, "answered", wait=20.5, queue="first-level"),
        call(at, "answered", wait=50, queue="second-printing"),  # within its 60 s
        call(at, "answered", wait=50, queue="gone"),  # no such queue: the default, 30 s
    ]
    rows = build_report(
        ReportFacts(calls=calls),
        ReportSpec(
            *days(MARCH_30, MARCH_30),
            "day",
            BERLIN,
            {"first-level": 20, "second-printing": 60},
            default_threshold=30,
        ),
    )
    assert rows[0].service_level_pct == 50.0


def test_an_answer_whose_wait_is_unknown_is_answered_but_neither_fast_nor_slow() -> None:
    at = berlin(2026, 3, 30, 9)
    rows = build_report(
        ReportFacts(calls=[call(at, "answered", joined=False)]), spec(MARCH_30, MARCH_30)
    )
    assert (rows[0].offered, rows[0].answered, rows[0].asa_seconds) == (1, 1, None)
    assert rows[0].service_level_pct == 0.0


def test_only_short_abandons_leave_the_service_level_empty() -> None:
    rows = build_report(
        ReportFacts(calls=[call(berlin(2026, 3, 30, 9), "short_abandon")]),
        spec(MARCH_30, MARCH_30),
    )
    assert (rows[0].offered, rows[0].short_abandoned, rows[0].service_level_pct) == (1, 1, None)


@pytest.mark.parametrize(
    ("waits", "asa"),
    [
        ((1.0, 2.0), 1.5),
        ((0.05,), 0.1),  # half up, not to even
        ((0.25,), 0.3),
        ((0.2499,), 0.2),
        ((10.0, 10.0, 11.0), 10.3),
        ((10.0, 11.0, 11.0), 10.7),
    ],
)
def test_asa_is_rounded_half_up_to_a_tenth(waits: tuple[float, ...], asa: float) -> None:
    at = berlin(2026, 3, 30, 9)
    calls = [call(at, "answered", wait=wait) for wait in waits]
    assert build_report(ReportFacts(calls=calls), spec(MARCH_30, MARCH_30))[0].asa_seconds == asa


@pytest.mark.parametrize(
    ("within", "offered", "percent"), [(1, 16, 6.3), (1, 8, 12.5), (2, 3, 66.7)]
)
def test_shares_are_rounded_half_up_to_a_tenth(within: int, offered: int, percent: float) -> None:
    at = berlin(2026, 3, 30, 9)
    calls = [call(at, "answered", wait=1)] * within + [call(at, "abandoned")] * (offered - within)
    rows = build_report(ReportFacts(calls=calls), spec(MARCH_30, MARCH_30))
    assert rows[0].service_level_pct == percent


def test_callback_delay_runs_from_the_request_to_the_first_answered_attempt() -> None:
    callbacks = [
        CallbackFacts(berlin(2026, 3, 30, 9), "first-level", berlin(2026, 3, 30, 9, 30)),
        CallbackFacts(berlin(2026, 3, 30, 10), "first-level", berlin(2026, 3, 30, 11, 0, 1)),
        CallbackFacts(berlin(2026, 3, 30, 11), "first-level", None),  # not reached
        CallbackFacts(berlin(2026, 3, 31, 11), "first-level", None),
    ]
    rows = build_report(ReportFacts(callbacks=callbacks), spec(MARCH_30, dt.date(2026, 3, 31)))
    assert [(r.callbacks, r.callback_delay_seconds) for r in rows] == [(3, 2700.5), (1, None)]


def test_solved_the_same_day_means_the_desks_local_day() -> None:
    tickets = [
        # 23:30 to 00:30 in Berlin is the same UTC day, but two days at the desk.
        TicketFacts(berlin(2026, 6, 1, 23, 30), None, berlin(2026, 6, 2, 0, 30)),
        # 00:30 to 23:00 in Berlin is two UTC days, but one day at the desk.
        TicketFacts(berlin(2026, 6, 1, 0, 30), None, berlin(2026, 6, 1, 23)),
        TicketFacts(berlin(2026, 6, 1, 12), "first-level", None),  # still open
    ]
    rows = build_report(
        ReportFacts(tickets=tickets), spec(dt.date(2026, 6, 1), dt.date(2026, 6, 1))
    )
    assert (rows[0].tickets, rows[0].solved_same_day_pct) == (3, 33.3)


def test_facts_outside_the_range_are_not_counted() -> None:
    start, end = days(MARCH_30, MARCH_30)
    facts = ReportFacts(
        calls=[
            call(start - dt.timedelta(microseconds=1), "answered", wait=1),
            call(end, "abandoned"),
        ],
        callbacks=[CallbackFacts(end, "q", None)],
        tickets=[TicketFacts(start - dt.timedelta(seconds=1), None, None)],
    )
    total = report_total(facts, spec(MARCH_30, MARCH_30))
    assert [getattr(total, name) for name in ADDITIVE] == [0] * len(ADDITIVE)


# --- periods ---------------------------------------------------------------------------------


def test_days_without_calls_keep_their_row() -> None:
    facts = ReportFacts(
        calls=[
            call(berlin(2026, 3, 2, 9), "answered", wait=5),
            call(berlin(2026, 3, 4, 9), "abandoned"),
        ]
    )
    rows = build_report(facts, spec(dt.date(2026, 3, 2), dt.date(2026, 3, 4)))
    assert [(r.period, r.offered, r.asa_seconds, r.service_level_pct) for r in rows] == [
        ("2026-03-02", 1, 5.0, 100.0),
        ("2026-03-03", 0, None, None),
        ("2026-03-04", 1, None, 0.0),
    ]


def test_the_day_clocks_go_forward_has_23_hours() -> None:
    rows = build_report(ReportFacts(), spec(dt.date(2026, 3, 29), dt.date(2026, 3, 29), "hour"))
    assert len(rows) == 23
    assert "02:00" not in [r.period for r in rows]
    assert {r.occurrences for r in rows} == {1}


def test_the_day_clocks_go_back_has_25_hours_and_0200_twice() -> None:
    first = dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)  # CEST, +02:00
    second = first.replace(fold=1)  # an hour later, CET, +01:00
    assert second.astimezone(dt.UTC) - first.astimezone(dt.UTC) == dt.timedelta(hours=1)
    facts = ReportFacts(
        calls=[
            call(first.astimezone(dt.UTC), "abandoned"),
            call(second.astimezone(dt.UTC), "abandoned"),
        ]
    )
    rows = build_report(facts, spec(dt.date(2026, 10, 25), dt.date(2026, 10, 25), "hour"))
    assert len(rows) == 24
    assert sum(r.occurrences for r in rows) == 25
    assert (only(rows, "02:00").occurrences, only(rows, "02:00").abandoned) == (2, 2)
    assert only(rows, "03:00").occurrences == 1


def test_hours_are_a_profile_of_the_range() -> None:
    facts = ReportFacts(
        calls=[
            call(berlin(2026, 3, 2, 9, 10), "abandoned"),
            call(berlin(2026, 3, 3, 9, 50), "abandoned"),
            call(berlin(2026, 3, 3, 17), "abandoned"),
        ]
    )
    rows = build_report(facts, spec(dt.date(2026, 3, 2), dt.date(2026, 3, 8), "hour"))
    assert [r.period for r in rows] == [f"{hour:02d}:00" for hour in range(24)]
    assert {r.occurrences for r in rows} == {7}
    assert [(r.period, r.abandoned) for r in rows if r.abandoned] == [("09:00", 2), ("17:00", 1)]


def test_weekdays_start_on_monday_and_count_their_days() -> None:
    facts = ReportFacts(calls=[call(berlin(2026, 3, 4, 9), "abandoned")])  # a Wednesday
    rows = build_report(facts, spec(dt.date(2026, 3, 4), dt.date(2026, 3, 16), "weekday"))
    assert [(r.period, r.occurrences) for r in rows] == [
        ("Mon", 2),
        ("Tue", 1),
        ("Wed", 2),
        ("Thu", 2),
        ("Fri", 2),
        ("Sat", 2),
        ("Sun", 2),
    ]
    assert only(rows, "Wed").abandoned == 1
    short = build_report(facts, spec(dt.date(2026, 3, 4), dt.date(2026, 3, 6), "weekday"))
    assert [r.period for r in short] == ["Wed", "Thu", "Fri"]


def test_months_across_the_new_year() -> None:
    facts = ReportFacts(tickets=[TicketFacts(berlin(2027, 1, 1, 0, 10), None, None)])
    rows = build_report(facts, spec(dt.date(2026, 12, 15), dt.date(2027, 2, 10), "month"))
    assert [(r.period, r.tickets) for r in rows] == [("2026-12", 0), ("2027-01", 1), ("2027-02", 0)]


def test_a_range_of_instants_touches_partial_periods() -> None:
    start = berlin(2026, 3, 30, 9, 30)
    report = ReportSpec(start, start + dt.timedelta(hours=2), "hour", BERLIN)
    assert [r.period for r in build_report(ReportFacts(), report)] == ["09:00", "10:00", "11:00"]


# --- range -------------------------------------------------------------------------------------


def test_the_default_range_is_the_last_seven_days_today_included() -> None:
    start, end = resolve_range(None, None, today=dt.date(2026, 3, 31), timezone=BERLIN)
    assert (start, end) == (berlin(2026, 3, 25), berlin(2026, 4, 1))
    assert end - start == dt.timedelta(days=7, hours=-1)  # clocks went forward on the 29th


def test_a_date_as_end_includes_that_day() -> None:
    start, end = resolve_range(
        dt.date(2026, 3, 1), dt.date(2026, 3, 1), today=MARCH_30, timezone=BERLIN
    )
    assert (start, end) == (berlin(2026, 3, 1), berlin(2026, 3, 2))


def test_only_an_end_reaches_back_seven_days() -> None:
    start, end = resolve_range(None, dt.date(2026, 3, 8), today=MARCH_30, timezone=BERLIN)
    assert (start, end) == (berlin(2026, 3, 2), berlin(2026, 3, 9))


def test_datetimes_without_offset_are_local_and_with_offset_exact() -> None:
    start, end = resolve_range(
        dt.datetime(2026, 3, 30, 8),
        dt.datetime(2026, 3, 30, 8, tzinfo=dt.UTC),
        today=MARCH_30,
        timezone=BERLIN,
    )
    assert (start, end) == (berlin(2026, 3, 30, 8), berlin(2026, 3, 30, 10))


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="range is empty"):
        resolve_range(dt.date(2026, 3, 2), dt.date(2026, 3, 1), today=MARCH_30, timezone=BERLIN)
    with pytest.raises(ValueError, match="before its end"):
        ReportSpec(berlin(2026, 3, 2), berlin(2026, 3, 2), "day", BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        ReportSpec(dt.datetime(2026, 3, 2), berlin(2026, 3, 3), "day", BERLIN)


# --- output ------------------------------------------------------------------------------------


def _sample_rows() -> tuple[list[ReportRow], ReportRow]:
    facts = ReportFacts(
        calls=[
            call(berlin(2026, 3, 2, 9), "answered", wait=75),
            call(berlin(2026, 3, 3, 9), "abandoned"),
        ],
        callbacks=[CallbackFacts(berlin(2026, 3, 2, 10), "q", berlin(2026, 3, 2, 12, 0, 5))],
    )
    report = spec(dt.date(2026, 3, 2), dt.date(2026, 3, 3))
    return build_report(facts, report), report_total(facts, report)


def test_csv_is_rfc_4180_with_empty_fields_for_empty_figures() -> None:
    rows, _total = _sample_rows()
    text = render_csv(rows)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert records[0] == list(COLUMNS)
    assert records[1][COLUMNS.index("asa_seconds")] == "75.0"
    assert records[2][COLUMNS.index("asa_seconds")] == ""
    assert records[2][COLUMNS.index("service_level_pct")] == "0.0"
    assert len(records) == 3


def test_json_is_a_list_of_objects_with_null_for_empty_figures() -> None:
    rows, _total = _sample_rows()
    data = json.loads(render_json(rows))
    assert [list(item) for item in data] == [list(COLUMNS)] * 2
    assert data[0]["callback_delay_seconds"] == 7205.0
    assert data[1]["asa_seconds"] is None
    assert data[1]["period"] == "2026-03-03"


def test_the_table_is_aligned_and_ends_with_the_total() -> None:
    rows, total = _sample_rows()
    lines = render_table(rows, total, "day").splitlines()
    assert lines[0].split()[:3] == ["period", "offered", "answered"]
    assert "hours" not in lines[0]
    assert lines[-1].split()[:2] == ["total", "2"]
    assert len({len(line) for line in lines}) == 1  # right-aligned, no ragged ends
    assert "1:15" in lines[2]  # ASA of 75 s
    assert "2:00:05" in lines[2]  # the callback delay
    assert lines[3].split()[6] == "-"  # no answer, no ASA
    hours = render_table(
        build_report(ReportFacts(), spec(dt.date(2026, 3, 2), dt.date(2026, 3, 3), "hour")),
        total,
        "hour",
    ).splitlines()
    assert hours[0].split()[:2] == ["period", "hours"]
    assert hours[-1].split()[:2] == ["total", "48"]


# --- properties --------------------------------------------------------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",  # clocks move at midnight
    "Australia/Lord_Howe",  # clocks move by half an hour
    "Asia/Kathmandu",  # +05:45
    "UTC",
]
OUTCOMES = [
    "answered",
    "abandoned",
    "short_abandon",
    "timeout",
    "callback_requested",
    "overflowed",
    "unknown",
    None,
]
QUEUES = ["first-level", "second-printing", None]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ZoneInfo, dt.date, int, ReportFacts]:
    """A zone, a first day (often one when clocks change), a number of days and facts."""
    tz = ZoneInfo(draw(st.sampled_from(ZONES)))
    first = draw(
        st.one_of(
            st.sampled_from(
                [
                    dt.date(2026, 3, 29),
                    dt.date(2026, 10, 25),
                    dt.date(2026, 4, 5),
                    dt.date(2026, 9, 6),
                ]
            ),
            st.dates(dt.date(2025, 1, 1), dt.date(2027, 12, 31)),
        )
    )
    span = draw(st.integers(1, 40))
    start, end = resolve_range(first, first + dt.timedelta(days=span - 1), today=first, timezone=tz)
    seconds = int((end - start).total_seconds())
    # Some facts fall just outside the range: they must not count.
    instants = st.integers(-3600, seconds + 3600).map(lambda s: start + dt.timedelta(seconds=s))
    waits = st.one_of(st.none(), st.floats(0, 900, allow_nan=False))

    @st.composite
    def calls(draw_call: st.DrawFn) -> CallFacts:
        arrived = draw_call(instants)
        joined = draw_call(st.booleans())
        wait = draw_call(waits)
        joined_at = arrived + dt.timedelta(seconds=3) if joined else None
        answered_at = (
            joined_at + dt.timedelta(seconds=wait) if joined_at and wait is not None else None
        )
        return CallFacts(
            arrived,
            draw_call(st.sampled_from(QUEUES)),
            draw_call(st.sampled_from(OUTCOMES)),
            joined_at,
            answered_at,
            draw_call(st.booleans()),
        )

    callbacks = st.builds(
        lambda at, delay: CallbackFacts(
            at, "first-level", None if delay is None else at + dt.timedelta(seconds=delay)
        ),
        instants,
        st.one_of(st.none(), st.integers(0, 86_400 * 3)),
    )
    tickets = st.builds(
        lambda at, after: TicketFacts(
            at, None, None if after is None else at + dt.timedelta(seconds=after)
        ),
        instants,
        st.one_of(st.none(), st.integers(0, 86_400 * 2)),
    )
    facts = ReportFacts(
        calls=draw(st.lists(calls(), max_size=40)),
        callbacks=draw(st.lists(callbacks, max_size=10)),
        tickets=draw(st.lists(tickets, max_size=10)),
    )
    return tz, first, span, facts


def _spec(tz: ZoneInfo, first: dt.date, span: int, by: PeriodKind) -> ReportSpec:
    start, end = resolve_range(first, first + dt.timedelta(days=span - 1), today=first, timezone=tz)
    return ReportSpec(start, end, by, tz, {"first-level": 20, "second-printing": 60})


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_every_row_adds_up(scenario: tuple[ZoneInfo, dt.date, int, ReportFacts]) -> None:
    tz, first, span, facts = scenario
    for by in PERIOD_KINDS:
        report = _spec(tz, first, span, by)
        rows = build_report(facts, report)
        total = report_total(facts, report)
        for row in [*rows, total]:
            assert row.answered + row.abandoned + row.short_abandoned <= row.offered
            assert row.answered_directly <= row.answered
            for share in (row.service_level_pct, row.solved_same_day_pct):
                assert share is None or 0.0 <= share <= 100.0
            assert (row.asa_seconds is None) or row.answered_directly > 0
            assert (row.callback_delay_seconds is None) or row.callbacks > 0
            assert (row.solved_same_day_pct is None) == (row.tickets == 0)
        for name in ADDITIVE:
            assert sum(getattr(row, name) for row in rows) == getattr(total, name), (by, name)
        if by in ("day", "month"):
            assert len({row.period for row in rows}) == len(rows)
            assert [row.period for row in rows] == sorted(row.period for row in rows)
    days_rows = build_report(facts, _spec(tz, first, span, "day"))
    assert len(days_rows) == span
    weekday_rows = build_report(facts, _spec(tz, first, span, "weekday"))
    assert sum(row.occurrences for row in weekday_rows) == span


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_the_hours_of_each_day_sum_to_that_day(
    scenario: tuple[ZoneInfo, dt.date, int, ReportFacts],
) -> None:
    tz, first, span, facts = scenario
    day_rows = build_report(facts, _spec(tz, first, span, "day"))
    for offset in range(min(span, 3)):
        day = first + dt.timedelta(days=offset)
        one_day = _spec(tz, day, 1, "hour")
        hours = build_report(facts, one_day)
        (day_row,) = (row for row in day_rows if row.period == day.isoformat())
        for name in ADDITIVE:
            assert sum(getattr(row, name) for row in hours) == getattr(day_row, name), name
        length = one_day.end - one_day.start
        if length % dt.timedelta(hours=1) == dt.timedelta(0):  # not Lord Howe's 23.5 h days
            assert sum(row.occurrences for row in hours) == length // dt.timedelta(hours=1)


@settings(max_examples=30, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_order_of_the_facts_does_not_matter(
    scenario: tuple[ZoneInfo, dt.date, int, ReportFacts], shuffler: random.Random
) -> None:
    tz, first, span, facts = scenario
    shuffled = ReportFacts(
        calls=shuffler.sample(list(facts.calls), len(facts.calls)),
        callbacks=shuffler.sample(list(facts.callbacks), len(facts.callbacks)),
        tickets=shuffler.sample(list(facts.tickets), len(facts.tickets)),
    )
    for by in PERIOD_KINDS:
        report = _spec(tz, first, span, by)
        assert build_report(shuffled, report) == build_report(facts, report)
