"""SLA deadlines: plain addition for 24x7, open seconds only for business hours."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.config.model import Site, Sla, SlaPackage, SlaPriority
from acd.tickets.deadline import deadline_from_config, resolve_deadline

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
WEEKDAYS_8_TO_17 = {d: [(dt.time(8), dt.time(17))] for d in ("mon", "tue", "wed", "thu", "fri")}
HOUR = 3600


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def business(created: dt.datetime, seconds: int, **kwargs: object) -> dt.datetime:
    arguments: dict[str, object] = {
        "coverage": "business_hours",
        "opening_hours": WEEKDAYS_8_TO_17,
        "timezone": "Europe/Berlin",
    }
    arguments.update(kwargs)
    return resolve_deadline(created, seconds, **arguments)  # type: ignore[arg-type]


def test_24x7_is_plain_addition_in_utc() -> None:
    created = berlin(2026, 3, 6, 16, 0)
    got = resolve_deadline(
        created, 4 * HOUR, coverage="24x7", opening_hours={}, timezone="Europe/Berlin"
    )
    assert got == created + dt.timedelta(hours=4)
    assert got.tzinfo is dt.UTC


def test_within_the_same_day() -> None:
    assert business(berlin(2026, 3, 4, 9, 0), 2 * HOUR) == berlin(2026, 3, 4, 11, 0)


def test_using_up_a_day_exactly_ends_at_closing_time() -> None:
    assert business(berlin(2026, 3, 4, 16, 0), HOUR) == berlin(2026, 3, 4, 17, 0)


def test_across_a_weekend() -> None:
    # Friday 16:00, 4 h: one hour on Friday, three on Monday from 08:00.
    assert business(berlin(2026, 3, 6, 16, 0), 4 * HOUR) == berlin(2026, 3, 9, 11, 0)


def test_created_on_a_weekend_starts_counting_at_the_next_opening() -> None:
    assert business(berlin(2026, 3, 7, 10, 0), HOUR) == berlin(2026, 3, 9, 9, 0)


def test_across_holidays_and_a_weekend() -> None:
    # Wednesday 2025-12-24 16:00; Thu 25 and Fri 26 are holidays, then the weekend.
    holidays = [dt.date(2025, 12, 25), dt.date(2025, 12, 26)]
    got = business(berlin(2025, 12, 24, 16, 0), 4 * HOUR, holidays=holidays)
    assert got == berlin(2025, 12, 29, 11, 0)
    assert business(berlin(2025, 12, 24, 16, 0), 4 * HOUR) == berlin(2025, 12, 25, 11, 0)


def test_several_spans_a_day_and_the_lunch_break() -> None:
    hours = {"mon": [(dt.time(13), dt.time(18)), (dt.time(8), dt.time(12, 30))]}
    got = business(berlin(2026, 3, 2, 12, 0), HOUR, opening_hours=hours)
    assert got == berlin(2026, 3, 2, 13, 30)


def test_round_the_clock_hours_count_real_time_across_dst() -> None:
    # 2026-03-29 has 23 hours in Berlin; spans ending at time.max mean midnight.
    every_day = {d: [(dt.time(0), dt.time.max)] for d in ("fri", "sat", "sun", "mon")}
    created = berlin(2026, 3, 28, 12, 0)
    got = business(created, 24 * HOUR, opening_hours=every_day)
    # (aware arithmetic on a ZoneInfo datetime is wall-clock arithmetic: compare in UTC)
    assert got == created.astimezone(dt.UTC) + dt.timedelta(hours=24)
    assert got.astimezone(BERLIN).hour == 13  # wall clock moved one hour


def test_the_site_timezone_decides_the_hours() -> None:
    created = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC)  # 07:00 in Toronto
    got = business(created, HOUR, timezone="America/Toronto")
    assert got == dt.datetime(2026, 3, 4, 14, 0, tzinfo=dt.UTC)  # 09:00 in Toronto


def test_zero_seconds_is_now() -> None:
    created = berlin(2026, 3, 7, 10, 0)
    assert business(created, 0) == created


def test_refuses_what_cannot_give_a_deadline() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        business(dt.datetime(2026, 3, 4, 9, 0), HOUR)
    with pytest.raises(ValueError, match="no opening hours"):
        business(berlin(2026, 3, 4, 9, 0), HOUR, opening_hours={"mon": []})
    with pytest.raises(ValueError, match="negative"):
        business(berlin(2026, 3, 4, 9, 0), -1)
    always_closed = [dt.date(2026, 1, 1) + dt.timedelta(days=n) for n in range(3700)]
    with pytest.raises(ValueError, match="closed for"):
        business(berlin(2026, 1, 1, 9, 0), HOUR, holidays=always_closed)


def test_from_the_configuration() -> None:
    sla = Sla(
        priorities={"high": SlaPriority(rank=30, respond_within=3600, resolve_within=4 * HOUR)},
        packages={
            "basic": SlaPackage(coverage="business_hours"),
            "enterprise": SlaPackage(priority_boost=10, coverage="24x7"),
        },
    )
    site = Site(
        id="berlin",
        timezone="Europe/Berlin",
        hours={"mon-fri": ["08:00-17:00"]},
        holidays=[dt.date(2026, 3, 9)],
    )
    created = berlin(2026, 3, 6, 16, 0)
    friday_then_tuesday = berlin(2026, 3, 10, 11, 0)
    assert (
        deadline_from_config(sla, site, priority="high", package="basic", created_at=created)
        == friday_then_tuesday
    )
    assert (
        deadline_from_config(sla, site, priority="high", package=None, created_at=created)
        == friday_then_tuesday
    )
    assert deadline_from_config(
        sla, site, priority="high", package="enterprise", created_at=created
    ) == created + dt.timedelta(hours=4)


# --- property: the deadline is the end of the n-th open minute, counted one by one ---------

# Quarter hours, but none strictly inside 02:00-03:00: that hour does not exist on the
# spring DST day (a boundary there is read with the offset before the change, documented).
_BOUNDARY = st.integers(0, 24 * 4).map(lambda q: q * 15).filter(lambda m: not 120 < m < 180)
_SPANS = st.lists(
    # Ordered by construction: filtering unordered pairs discards half the draws.
    st.tuples(_BOUNDARY, _BOUNDARY).map(lambda p: (min(p), max(p))).filter(lambda p: p[0] < p[1]),
    max_size=3,
)


def _open_minute(at: dt.datetime, hours: dict[str, list[tuple[int, int]]], zone: str) -> bool:
    local = at.astimezone(zoneinfo.ZoneInfo(zone))
    if local.date() in {dt.date(2026, 4, 3)}:
        return False
    minute = local.hour * 60 + local.minute
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
    return any(start <= minute < end for start, end in hours.get(day, []))


def _as_times(minutes: int) -> dt.time:
    return dt.time.max if minutes == 24 * 60 else dt.time(minutes // 60, minutes % 60)


@settings(max_examples=60, deadline=None)
@given(
    week=st.fixed_dictionaries(
        dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), _SPANS)
    ),
    start_minute=st.integers(0, 28 * 24 * 60),
    minutes=st.integers(1, 3 * 24 * 60),
    zone=st.sampled_from(["Europe/Berlin", "America/Toronto", "UTC"]),
)
def test_matches_counting_open_minutes(
    week: dict[str, list[tuple[int, int]]], start_minute: int, minutes: int, zone: str
) -> None:
    # Merge overlapping spans the way a valid config would not have them.
    hours: dict[str, list[tuple[int, int]]] = {}
    for day, spans in week.items():
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        if merged:
            hours[day] = merged
    weekly = sum(end - start for spans in hours.values() for start, end in spans)
    if weekly == 0:
        return
    minutes = 1 + (minutes - 1) % (2 * weekly)  # keeps the minute-by-minute count short
    # From 2026-03-02 on: crosses Toronto's (03-08) and Berlin's (03-29) change to DST.
    created = dt.datetime(2026, 3, 2, tzinfo=dt.UTC) + dt.timedelta(minutes=start_minute)
    got = resolve_deadline(
        created,
        minutes * 60,
        coverage="business_hours",
        opening_hours={d: [(_as_times(a), _as_times(b)) for a, b in s] for d, s in hours.items()},
        timezone=zone,
        holidays=[dt.date(2026, 4, 3)],
    )
    at, left = created, minutes
    while True:
        if _open_minute(at, hours, zone):
            left -= 1
            if left == 0:
                break
        at += dt.timedelta(minutes=1)
    assert got == at + dt.timedelta(minutes=1)
