"""Reports for managers: calls, answers, waits, callbacks and tickets per period.

The pure core of ``acd report``: it takes what the store recorded (`CallFacts`,
`CallbackFacts`, `TicketFacts`, loaded by `acd.tickets.report_rows`) and a `ReportSpec`
(range, period kind, the desk's time zone, the queues' service-level thresholds), and
returns one `ReportRow` per period. It also renders rows as an aligned table, CSV or JSON.
No I/O, no clock, no configuration files.

What each figure means (every count is of facts inside [start, end) only):
- offered: calls that waited in a queue (a queue join, or an answer) and whose outcome is
  known; calls that hung up in the IVR or vanished while the AMI link was down (`unknown`)
  are not offered. As in `metrics.desk`, except that the store keeps one record per call
  with its *last* queue visit, so a call that overflowed is one call of its last queue here
  and a visit of each queue in Prometheus.
- answered: offered calls that reached an agent, in the queue (answered directly) or
  through the callback booked during the call (an answered callback attempt).
- answered_directly: answered in the queue, no callback needed.
- abandoned: the caller hung up while waiting, short abandons excluded; short_abandoned:
  hung up within the queue's `short_abandon` seconds (the live state classifies them).
  Every offered call is in at most one of answered, abandoned and short_abandoned.
- asa_seconds: average speed of answer, queue join to answer, of the calls answered
  directly whose both times are known; empty (None) when there are none.
- service_level_pct: calls answered directly within their queue's threshold
  (`service_level.answer_within`, wait <= threshold) ÷ (offered - short_abandoned), in
  percent; empty when that is 0.
- callbacks: callback requests made in the period; callback_delay_seconds: the average
  from the request to an agent on the line with the customer (the start of the first
  answered attempt), over the requests that reached the customer; empty when none did.
- tickets: tickets opened in the period; solved_same_day_pct: the share of them whose first
  move to `done` fell on the same local day as their creation (a later reopening does not
  undo it); empty when no ticket was opened.

Calls are placed in periods by their arrival, callbacks by their request, tickets by their
creation, all in the desk's local time. Durations are rounded half up to 0.1 s and shares to
0.1 percentage points.

Period kinds: `day` and `month` are the calendar periods the range touches, in order, each
present even with nothing in it, so dips show. `hour` and `weekday` are profiles aggregated
over the range ("09:00" holds every 9 o'clock hour of the range, "Mon" every Monday), the
hours of day or weekdays the range touches in order; `occurrences` says how many clock
hours or days of the range each holds (on the day clocks go forward in Europe/Berlin there
is no "02:00"; on the day they go back "02:00" occurs twice: 23 and 25 hours).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

__all__ = [
    "COLUMNS",
    "OUTPUT_FORMATS",
    "PERIOD_KINDS",
    "CallFacts",
    "CallbackFacts",
    "OutputFormat",
    "PeriodKind",
    "ReportFacts",
    "ReportRow",
    "ReportSpec",
    "TicketFacts",
    "build_report",
    "render_csv",
    "render_json",
    "render_report",
    "render_table",
    "report_total",
    "resolve_range",
]

PeriodKind = Literal["hour", "weekday", "day", "month"]
PERIOD_KINDS: Final[tuple[PeriodKind, ...]] = get_args(PeriodKind)
OutputFormat = Literal["table", "csv", "json"]
OUTPUT_FORMATS: Final[tuple[OutputFormat, ...]] = get_args(OutputFormat)

# Outcome names as `acd.state.Outcome` writes them into the call records.
_ANSWERED: Final = "answered"
_ABANDONED: Final = "abandoned"
_SHORT_ABANDON: Final = "short_abandon"
_UNKNOWN: Final = "unknown"

_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MICROSECONDS: Final = 1_000_000
_ONE_MICROSECOND: Final = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the store recorded of one call (times timezone-aware)."""

    arrived_at: dt.datetime
    queue: str | None
    outcome: str | None
    joined_at: dt.datetime | None
    answered_at: dt.datetime | None
    reached_by_callback: bool = False
    """The callback booked during this call had an answered attempt."""


@dataclass(frozen=True, slots=True)
class CallbackFacts:
    """One callback request: when it was made and when an agent first reached the customer."""

    requested_at: dt.datetime
    queue: str
    reached_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """One ticket: when it was opened and when it first became done."""

    created_at: dt.datetime
    queue: str | None
    solved_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ReportFacts:
    """Everything a report counts."""

    calls: Sequence[CallFacts] = ()
    callbacks: Sequence[CallbackFacts] = ()
    tickets: Sequence[TicketFacts] = ()


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """What to report: [start, end), by which period, in which time zone, against what.

    `thresholds` maps a queue id to its service-level threshold in seconds; a queue without
    one (removed from the configuration, or no queue at all) uses `default_threshold`.
    """

    start: dt.datetime
    end: dt.datetime
    by: PeriodKind
    timezone: dt.tzinfo
    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_threshold: float = 60.0

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.start >= self.end:
            raise ValueError("the report's start must be before its end")
        if self.by not in PERIOD_KINDS:
            raise ValueError(f"unknown period kind {self.by!r}")


@dataclass(frozen=True, slots=True)
class ReportRow:
    """The figures of one period (see the module docstring for each one's meaning)."""

    period: str
    occurrences: int
    offered: int
    answered: int
    answered_directly: int
    abandoned: int
    short_abandoned: int
    asa_seconds: float | None
    service_level_pct: float | None
    callbacks: int
    callback_delay_seconds: float | None
    tickets: int
    solved_same_day_pct: float | None

    def as_dict(self) -> dict[str, str | int | float | None]:
        """The row as a flat mapping in column order (the JSON object, the CSV record)."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS: Final = (
    "period",
    "occurrences",
    "offered",
    "answered",
    "answered_directly",
    "abandoned",
    "short_abandoned",
    "asa_seconds",
    "service_level_pct",
    "callbacks",
    "callback_delay_seconds",
    "tickets",
    "solved_same_day_pct",
)


def resolve_range(
    start: dt.date | dt.datetime | None,
    end: dt.date | dt.datetime | None,
    *,
    today: dt.date,
    timezone: dt.tzinfo,
    days: int = 7,
) -> tuple[dt.datetime, dt.datetime]:
    """The report's [start, end) in UTC from what a person typed.

    A date means the local day: as `start` its first instant, as `end` the day is included
    (the range ends at the next local midnight). A datetime without offset is local time,
    one with an offset is that instant. Without `end` the range ends after `today`; without
    `start` it begins `days` local days before its end's day is over (so the default is
    the last `days` days, today included). ValueError if start is not before end.
    """
    if end is None:
        end_at = _midnight(today + dt.timedelta(days=1), timezone)
    elif isinstance(end, dt.datetime):
        end_at = _instant(end, timezone)
    else:
        end_at = _midnight(end + dt.timedelta(days=1), timezone)
    if start is None:
        last_day = _local_date(end_at - _ONE_MICROSECOND, timezone)
        start_at = _midnight(last_day - dt.timedelta(days=days - 1), timezone)
    elif isinstance(start, dt.datetime):
        start_at = _instant(start, timezone)
    else:
        start_at = _midnight(start, timezone)
    if start_at >= end_at:
        raise ValueError(
            f"the range is empty: {start_at.astimezone(timezone).isoformat()} is not before "
            f"{end_at.astimezone(timezone).isoformat()} (a date as --to includes that day)"
        )
    return start_at, end_at


def _midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The first instant of the local `day` (fold 0: where midnight is skipped, the jump)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def _instant(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    local = value.replace(tzinfo=tz) if value.tzinfo is None else value
    return local.astimezone(dt.UTC)


# --- aggregation ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    """The running sums of one period (mutable, local to one `build_report` call)."""

    offered: int = 0
    answered: int = 0
    answered_directly: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answered_within: int = 0
    wait_total_us: int = 0
    waits: int = 0
    callbacks: int = 0
    delay_total_us: int = 0
    delays: int = 0
    tickets: int = 0
    solved_same_day: int = 0

    def row(self, period: str, occurrences: int) -> ReportRow:
        return ReportRow(
            period=period,
            occurrences=occurrences,
            offered=self.offered,
            answered=self.answered,
            answered_directly=self.answered_directly,
            abandoned=self.abandoned,
            short_abandoned=self.short_abandoned,
            asa_seconds=_mean_seconds(self.wait_total_us, self.waits),
            service_level_pct=_percent(self.answered_within, self.offered - self.short_abandoned),
            callbacks=self.callbacks,
            callback_delay_seconds=_mean_seconds(self.delay_total_us, self.delays),
            tickets=self.tickets,
            solved_same_day_pct=_percent(self.solved_same_day, self.tickets),
        )


def build_report(facts: ReportFacts, spec: ReportSpec) -> list[ReportRow]:
    """One row per period of `spec.by` in [spec.start, spec.end), in time order."""
    occurrences = _occurrences(spec)
    tallies = {key: _Tally() for key in occurrences}

    def bucket_of(instant: dt.datetime) -> _Tally:
        key = _key(spec.by, instant.astimezone(spec.timezone))
        if key not in tallies:  # only a clock off the quarter-hour grid (see _samples)
            tallies[key] = _Tally()
        return tallies[key]

    _tally(facts, spec, bucket_of)
    return [
        tallies[key].row(_label(spec.by, key), occurrences.get(key, 1)) for key in sorted(tallies)
    ]


def report_total(facts: ReportFacts, spec: ReportSpec) -> ReportRow:
    """The figures of the whole range as one row ("total")."""
    tally = _Tally()
    _tally(facts, spec, lambda _instant: tally)
    return tally.row("total", 1)


def _tally(
    facts: ReportFacts, spec: ReportSpec, bucket_of: Callable[[dt.datetime], _Tally]
) -> None:
    def inside(instant: dt.datetime) -> bool:
        return spec.start <= instant < spec.end

    for call in facts.calls:
        if inside(call.arrived_at):
            _add_call(bucket_of(call.arrived_at), call, spec)
    for callback in facts.callbacks:
        if inside(callback.requested_at):
            tally = bucket_of(callback.requested_at)
            tally.callbacks += 1
            if callback.reached_at is not None:
                tally.delays += 1
                tally.delay_total_us += _microseconds(callback.requested_at, callback.reached_at)
    for ticket in facts.tickets:
        if inside(ticket.created_at):
            tally = bucket_of(ticket.created_at)
            tally.tickets += 1
            if ticket.solved_at is not None and _local_date(
                ticket.solved_at, spec.timezone
            ) == _local_date(ticket.created_at, spec.timezone):
                tally.solved_same_day += 1


def _add_call(tally: _Tally, call: CallFacts, spec: ReportSpec) -> None:
    if call.outcome is None or call.outcome == _UNKNOWN:
        return  # still going, or lost while the AMI link was down: nobody knows
    if call.joined_at is None and call.outcome != _ANSWERED:
        return  # never waited in a queue (hung up in the IVR): no call offered
    tally.offered += 1
    if call.outcome == _ANSWERED:
        tally.answered += 1
        tally.answered_directly += 1
        if call.joined_at is not None and call.answered_at is not None:
            wait_us = _microseconds(call.joined_at, call.answered_at)
            tally.waits += 1
            tally.wait_total_us += wait_us
            threshold = spec.thresholds.get(call.queue or "", spec.default_threshold)
            if wait_us <= threshold * _MICROSECONDS:
                tally.answered_within += 1
    elif call.reached_by_callback:
        tally.answered += 1
    elif call.outcome == _SHORT_ABANDON:
        tally.short_abandoned += 1
    elif call.outcome == _ABANDONED:
        tally.abandoned += 1


def _microseconds(earlier: dt.datetime, later: dt.datetime) -> int:
    """The time from `earlier` to `later`; a clock that went backwards counts as 0."""
    return max(0, (later - earlier) // _ONE_MICROSECOND)


def _half_up(numerator: int, denominator: int) -> float:
    """numerator ÷ denominator rounded half up to one decimal (both non-negative)."""
    tenths = (20 * numerator + denominator) // (2 * denominator)
    return tenths / 10


def _mean_seconds(total_us: int, count: int) -> float | None:
    return None if count == 0 else _half_up(total_us, count * _MICROSECONDS)


def _percent(part: int, whole: int) -> float | None:
    return None if whole <= 0 else _half_up(100 * part, whole)


# --- periods -------------------------------------------------------------------------------
# A period's key is a tuple of ints in time order: (hour,), (weekday,), (y, m, d), (y, m).
# Which periods the range touches, and how often, is read off samples of the range every
# quarter of an hour (UTC): every offset in use since 1970 is a whole number of quarter
# hours and changes on one, so each local hour and day of the range holds a sample, the
# hour that repeats when clocks go back holds samples of both offsets, and the hour
# skipped when they go forward holds none. Instants are compared in UTC only: Python
# compares two datetimes of the *same* tzinfo by wall time, ignoring `fold`.

_Key = tuple[int, ...]
_QUARTER_HOUR: Final = dt.timedelta(minutes=15)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _local_date(instant: dt.datetime, tz: dt.tzinfo) -> dt.date:
    return instant.astimezone(tz).date()


def _key(by: PeriodKind, local: dt.datetime) -> _Key:
    if by == "hour":
        return (local.hour,)
    if by == "weekday":
        return (local.weekday(),)
    if by == "day":
        return (local.year, local.month, local.day)
    return (local.year, local.month)


def _label(by: PeriodKind, key: _Key) -> str:
    if by == "hour":
        return f"{key[0]:02d}:00"
    if by == "weekday":
        return _WEEKDAYS[key[0]]
    return "-".join(f"{part:02d}" for part in key)


def _occurrences(spec: ReportSpec) -> dict[_Key, int]:
    """Every period the range touches -> how many clock hours (hour) or days (weekday) of
    the range it holds; 1 for a day or a month."""
    clocks: dict[_Key, set[object]] = {}
    for local in _samples(spec):
        clock: object = None
        if spec.by == "hour":
            clock = (local.date(), local.utcoffset())  # the repeated hour counts twice
        elif spec.by == "weekday":
            clock = local.date()
        clocks.setdefault(_key(spec.by, local), set()).add(clock)
    return {key: len(seen) for key, seen in clocks.items()}


def _samples(spec: ReportSpec) -> Iterator[dt.datetime]:
    """The range's start and every quarter hour (UTC) after it, in local time."""
    start = spec.start.astimezone(dt.UTC)
    end = spec.end.astimezone(dt.UTC)
    yield start.astimezone(spec.timezone)
    sample = _EPOCH + (start - _EPOCH) // _QUARTER_HOUR * _QUARTER_HOUR + _QUARTER_HOUR
    while sample < end:
        yield sample.astimezone(spec.timezone)
        sample += _QUARTER_HOUR


# --- output --------------------------------------------------------------------------------

_TABLE_HEADERS: Final = {
    "period": "period",
    "occurrences": "",  # named per kind: hours or days
    "offered": "offered",
    "answered": "answered",
    "answered_directly": "direct",
    "abandoned": "abandoned",
    "short_abandoned": "short",
    "asa_seconds": "ASA",
    "service_level_pct": "SL %",
    "callbacks": "callbacks",
    "callback_delay_seconds": "CB delay",
    "tickets": "tickets",
    "solved_same_day_pct": "same day %",
}
_DURATIONS: Final = frozenset({"asa_seconds", "callback_delay_seconds"})


def render_report(
    rows: Sequence[ReportRow], total: ReportRow, fmt: OutputFormat, by: PeriodKind
) -> str:
    """The report in `fmt`; only the table shows the total (CSV and JSON are data)."""
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "json":
        return render_json(rows)
    return render_table(rows, total, by)


def render_csv(rows: Sequence[ReportRow]) -> str:
    """A header row and one record per period (RFC 4180: CRLF, quoted where needed).

    Empty figures are empty fields; durations are seconds, shares percent.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow("" if value is None else value for value in row.as_dict().values())
    return out.getvalue()


def render_json(rows: Sequence[ReportRow]) -> str:
    """A JSON list of one object per period (empty figures are null)."""
    return json.dumps([row.as_dict() for row in rows], indent=2, ensure_ascii=False) + "\n"


def render_table(rows: Sequence[ReportRow], total: ReportRow, by: PeriodKind) -> str:
    """An aligned table for people: durations as [h:]mm:ss, a total line at the end."""
    columns = [c for c in COLUMNS if c != "occurrences" or by in ("hour", "weekday")]
    headers = {**_TABLE_HEADERS, "occurrences": "hours" if by == "hour" else "days"}
    body = [[_cell(name, getattr(row, name)) for name in columns] for row in rows]
    footer = [_cell(name, getattr(total, name)) for name in columns]
    if "occurrences" in columns:
        footer[columns.index("occurrences")] = str(sum(row.occurrences for row in rows))
    lines = [[headers[name] for name in columns], *body, footer]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(lines[0]), rule, *map(line, body), rule, line(footer)]) + "\n"


def _cell(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name in _DURATIONS and isinstance(value, float):
        return _clock(value)
    return str(value)


def _clock(seconds: float) -> str:
    """Whole seconds as m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
