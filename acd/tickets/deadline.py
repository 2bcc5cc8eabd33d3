"""Ticket deadlines from the SLA: when a ticket must be resolved, counted in covered time.

Pure functions of (creation time, SLA seconds, the site's calendar): no clock, no database,
and no import of the configuration at run time (its types are used for annotations only),
so routing, the store, tests and a simulator compute the same deadline.
"""

# Why business hours are counted on the wall clock of the site, but summed in UTC:
# opening hours and holidays are local facts ("08:00-18:00 in Berlin, closed on
# 2025-12-25"), but a span's length must be real elapsed time, or a DST change night would
# add or lose an hour. So each open span is turned into a pair of UTC instants first and
# only UTC instants are subtracted (subtracting two datetimes of the same ZoneInfo would
# compare wall-clock readings).

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from acd.config.model import Site, Sla

__all__ = ["Coverage", "deadline_from_config", "resolve_deadline"]

Coverage = Literal["business_hours", "24x7"]

_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A calendar that never opens within ten years is a configuration error, not a deadline.
_MAX_DAYS: Final = 3660


def resolve_deadline(
    created_at: dt.datetime,
    resolve_within: int,
    *,
    coverage: Coverage,
    opening_hours: Mapping[str, Sequence[tuple[dt.time, dt.time]]],
    timezone: str | dt.tzinfo,
    holidays: Collection[dt.date] = (),
) -> dt.datetime:
    """The instant (UTC) by which a ticket created at `created_at` must be resolved.

    `24x7` adds `resolve_within` seconds. `business_hours` counts only the seconds in which
    the site is open: `opening_hours` maps 'mon'..'sun' to local (start, end) spans (an end
    of `time.max` means midnight, as `acd.config.model.Site.opening_hours()` returns it),
    `holidays` are local dates the site is closed. A deadline that uses up a span exactly
    falls on its closing time. `created_at` must be timezone-aware. A span boundary that
    the clock skips or repeats on a DST change day is read with the offset in force before
    the change (Python's fold=0); offices do not open or close at 02:30, so no more is done.
    """
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if resolve_within < 0:
        raise ValueError(f"resolve_within must not be negative (got {resolve_within})")
    start = created_at.astimezone(dt.UTC)
    if coverage == "24x7" or resolve_within == 0:
        return start + dt.timedelta(seconds=resolve_within)
    if coverage != "business_hours":
        raise ValueError(f"unknown coverage '{coverage}' (valid: business_hours, 24x7)")
    if not any(opening_hours.get(day) for day in _WEEKDAYS):
        raise ValueError("the site has no opening hours: a business-hours deadline never comes")
    zone = zoneinfo.ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    remaining = dt.timedelta(seconds=resolve_within)
    for span_start, span_end in _open_spans(start, opening_hours, zone, frozenset(holidays)):
        begin = max(span_start, start)
        if span_end <= begin:
            continue
        if remaining <= span_end - begin:
            return begin + remaining
        remaining -= span_end - begin
    raise ValueError(f"the site is closed for {_MAX_DAYS} days: no business-hours deadline")


def deadline_from_config(
    sla: Sla,
    site: Site,
    *,
    priority: str,
    package: str | None,
    created_at: dt.datetime,
) -> dt.datetime:
    """`resolve_deadline` for a priority and SLA package of the configuration.

    The package decides the coverage (no package: business hours); its priority boost
    changes the ticket's rank, not the time limit of its priority.
    """
    limits = sla.priorities[priority]
    coverage: Coverage = "business_hours" if package is None else sla.packages[package].coverage
    return resolve_deadline(
        created_at,
        limits.resolve_within,
        coverage=coverage,
        opening_hours=site.opening_hours(),
        timezone=site.timezone,
        holidays=site.holidays,
    )


def _open_spans(
    start: dt.datetime,
    opening_hours: Mapping[str, Sequence[tuple[dt.time, dt.time]]],
    zone: dt.tzinfo,
    holidays: frozenset[dt.date],
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """The site's open spans as UTC instants, in order, from the local day of `start` on."""
    day = start.astimezone(zone).date()
    for _ in range(_MAX_DAYS):
        if day not in holidays:
            for open_at, close_at in sorted(opening_hours.get(_WEEKDAYS[day.weekday()], ())):
                yield _instant(day, open_at, zone), _instant(day, close_at, zone)
        day += dt.timedelta(days=1)


def _instant(day: dt.date, at: dt.time, zone: dt.tzinfo) -> dt.datetime:
    if at == dt.time.max:  # the config's way of writing 24:00
        day, at = day + dt.timedelta(days=1), dt.time(0)
    return dt.datetime.combine(day, at, tzinfo=zone).astimezone(dt.UTC)
