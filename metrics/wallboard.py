"""The live wallboard: one page for the support floor, pushed to the browser as it changes.

Three parts, observing only (nothing here decides anything):

- `DayFigures` counts today's queue visits from the `CallFinished` records of
  `acd.state.LiveState` (the same records `DeskMetrics.observe` gets) and starts again at
  local midnight.
- `board(...)` turns what the daemon has (a `StateSnapshot`, today's figures, the pending
  callbacks) into one JSON-able dict. Pure: time comes in as `now`.
- `WallboardServer` serves the page, `/board.json` and `/events` (Server-Sent Events) on
  plain asyncio; `publish(board)` pushes a board to every open page without blocking.

The wall hangs where visitors walk by: the board carries no caller numbers and no call
ids, only positions in line and waits.
"""

# Counting conventions (the same as metrics/desk.py, so the wall and Grafana agree)
# -------------------------------------------------------------------------------------
# A queue visit is one `FinishedCall` of a configured queue whose caller waited in it (it
# has `joined_at`, or it was answered); held places of the callback dialer, visits that
# vanished while the AMI link was down (`unknown`) and calls that never reached a queue
# are not counted. `offered` counts every such visit, short abandons included.
# Service level = answered within the queue's `service_level.answer_within` (wait <= T,
# like the histogram bucket le=T) / (offered - short abandons); none while that is 0.
# A visit counts on the local day its outcome became known (`ended_at`).

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from acd.state import CallFinished, Change, FinishedCall, Outcome, StateSnapshot
from acd.state_machines import AgentState

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from acd.config.model import ServiceLevel
    from acd.tickets.callbacks import PendingSummary

__all__ = [
    "AGENT_GROUPS",
    "DayFigures",
    "QueueDay",
    "WallboardServer",
    "board",
]

# --- today's figures ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueDay:
    """One queue's visits counted today (conventions at the top of the module)."""

    offered: int = 0
    answered: int = 0
    answered_in_time: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0
    overflowed: int = 0
    callback_requested: int = 0

    @property
    def service_level(self) -> float | None:
        """Answered in time / offered without short abandons (0..1); None before any call."""
        counted = self.offered - self.short_abandoned
        return self.answered_in_time / counted if counted > 0 else None


_OUTCOME_FIELDS: Final = {
    Outcome.ANSWERED: "answered",
    Outcome.ABANDONED: "abandoned",
    Outcome.SHORT_ABANDON: "short_abandoned",
    Outcome.TIMEOUT: "timed_out",
    Outcome.OVERFLOWED: "overflowed",
    Outcome.CALLBACK_REQUESTED: "callback_requested",
}


class DayFigures:
    """Today's queue visits per configured queue, reset at local midnight in `tz`.

    Feed it the changes of `LiveState` (`observe`); read it with `figures(now)`, which shows
    zeros once `now` is past the day counted, even before the next call ends. Not
    thread-safe; one owner (the daemon's event loop).
    """

    def __init__(
        self, service_levels: Mapping[str, ServiceLevel], tz: dt.tzinfo, now: float
    ) -> None:
        self._tz = tz
        self._levels = dict(service_levels)
        self._day_bounds = (0.0, 0.0)
        self._day = self.local_date(now)
        self._day_bounds = self._bounds(self._day)
        self._counts: dict[str, QueueDay] = {}

    @property
    def day(self) -> dt.date:
        """The local date being counted."""
        return self._day

    @property
    def service_levels(self) -> Mapping[str, ServiceLevel]:
        """The configured queues and their service-level targets."""
        return self._levels

    def reconfigure(self, service_levels: Mapping[str, ServiceLevel]) -> None:
        """New queue settings (a reload): queues still configured keep today's counts.

        A changed `answer_within` applies to the visits counted from now on.
        """
        self._levels = dict(service_levels)
        self._counts = {q: c for q, c in self._counts.items() if q in self._levels}

    def observe(self, changes: Iterable[Change], now: float) -> None:
        """Count the queue visits that ended among `changes` (other records are ignored)."""
        self._roll(now)
        for change in changes:
            if isinstance(change, CallFinished):
                self._count(change.record)

    def figures(self, now: float) -> Mapping[str, QueueDay]:
        """Per configured queue, the visits counted on the local day of `now`."""
        if self.local_date(now) != self._day:
            return dict.fromkeys(self._levels, QueueDay())
        return {q: self._counts.get(q, QueueDay()) for q in self._levels}

    def local_date(self, moment: float) -> dt.date:
        """The local date of `moment` (epoch seconds) in the desk's time zone."""
        # Asked at every change the daemon sees: the counted day's bounds answer for it.
        start, end = self._day_bounds
        if start <= moment < end:
            return self._day
        return dt.datetime.fromtimestamp(moment, self._tz).date()

    def _bounds(self, day: dt.date) -> tuple[float, float]:
        """The epoch seconds `day` starts and ends at in the desk's time zone; an empty
        span where a zone skips or repeats that midnight (the long way answers there)."""
        start, end = (
            dt.datetime.combine(when, dt.time(), self._tz).timestamp()
            for when in (day, day + dt.timedelta(days=1))
        )
        for edge, date in ((start, day), (end, day + dt.timedelta(days=1))):
            local = dt.datetime.fromtimestamp(edge, self._tz)
            before = dt.datetime.fromtimestamp(edge - 1e-3, self._tz)
            if local.date() != date or before.date() == date:
                return (0.0, 0.0)
        return (start, end)

    def _roll(self, now: float) -> None:
        today = self.local_date(now)
        if today > self._day:
            self._day, self._counts = today, {}
            self._day_bounds = self._bounds(today)

    def _count(self, record: FinishedCall) -> None:
        level = self._levels.get(record.queue or "")
        if level is None or record.held_place or record.outcome is Outcome.UNKNOWN:
            return
        if record.joined_at is None and record.outcome is not Outcome.ANSWERED:
            return  # never waited in a queue: no visit
        if self.local_date(record.ended_at) != self._day:
            return  # ended before midnight, reported after it: yesterday's figures
        counts = self._counts.get(record.queue or "", QueueDay())
        name = _OUTCOME_FIELDS[record.outcome]
        changed = {"offered": counts.offered + 1, name: getattr(counts, name) + 1}
        if (
            record.outcome is Outcome.ANSWERED
            and record.wait is not None
            and record.wait <= level.answer_within
        ):
            changed["answered_in_time"] = counts.answered_in_time + 1
        self._counts[record.queue or ""] = dataclasses.replace(counts, **changed)


# --- the board ------------------------------------------------------------------------------

AGENT_GROUPS: Final[Mapping[AgentState, str]] = {
    AgentState.AVAILABLE: "available",
    AgentState.RINGING: "on_call",  # a call is on its way to the agent: not free
    AgentState.ON_CALL: "on_call",
    AgentState.WRAP_UP: "wrap_up",
    AgentState.PAUSED: "paused",
}
"""How agent states are shown on the board (logged-out agents are not shown)."""

_GROUP_NAMES: Final = ("available", "on_call", "wrap_up", "paused")


def _agent_totals() -> dict[str, int]:
    return dict.fromkeys(_GROUP_NAMES, 0)


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(100.0 * ratio, 1)


def _seconds(value: float) -> int:
    return max(0, math.floor(value))


def _members(snapshot: StateSnapshot, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per queue, its members by group (the same rule as `acd_queue_agents`)."""
    members = {queue: _agent_totals() for queue in queues}
    for agent in snapshot.agents.values():
        for queue, member in agent.queues.items():
            state = agent.state
            if member.paused and state is AgentState.AVAILABLE:
                state = AgentState.PAUSED  # free for other queues, but this one sends it nothing
            group = AGENT_GROUPS.get(state)
            if queue in members and group is not None:
                members[queue][group] += 1
    return members


def _pending(callbacks: Iterable[PendingSummary]) -> dict[str, tuple[int, float]]:
    """Per queue: pending callbacks, and the epoch time the oldest one's caller joined."""
    pending: dict[str, tuple[int, float]] = {}
    for summary in callbacks:
        count, oldest = pending.get(summary.queue, (0, math.inf))
        joined = summary.oldest_joined_at.timestamp()
        pending[summary.queue] = (count + summary.count, min(oldest, joined))
    return pending


def board(
    snapshot: StateSnapshot,
    today: DayFigures,
    callbacks: Iterable[PendingSummary],
    now: float,
    queue_names: Mapping[str, str],
    *,
    link_up: bool = True,
) -> dict[str, Any]:
    """The wallboard for `now`: agents, callers waiting, today's figures, callbacks.

    `queue_names` maps the configured queue ids, in the order to show, to their names;
    other queues are left out. `callbacks` is `CallbackStore.pending_summary()` (the last
    one the daemon read); a callback's age counts from its caller's original queue join,
    the place in line it keeps. `link_up` False says the AMI link is down, so the live
    part may be stale. Waits and ages are whole seconds at `now`; percentages have one
    decimal, None when nothing was offered yet.
    """
    figures = today.figures(now)
    members = _members(snapshot, queue_names)
    pending = _pending(callbacks)
    queues: list[dict[str, Any]] = []
    for queue, name in queue_names.items():
        view = snapshot.queues.get(queue)
        # held places are the callback dialer's, counted with the pending callbacks
        waiting = [w for w in (view.waiting if view is not None else ()) if not w.held_place]
        callers = [
            {"position": n, "wait": _seconds(now - w.joined_at), "ringing": w.ringing}
            for n, w in enumerate(waiting, 1)
        ]
        day = figures.get(queue, QueueDay())
        level = today.service_levels.get(queue)
        count, oldest = pending.get(queue, (0, math.inf))
        queues.append(
            {
                "id": queue,
                "name": name,
                "agents": members[queue],
                "waiting": len(callers),
                "longest_wait": max((c["wait"] for c in callers), default=0),
                "callers": callers,
                "offered": day.offered,
                "answered": day.answered,
                "abandoned": day.abandoned,
                "service_level": _percent(day.service_level),
                "service_level_target": None if level is None else _percent(level.target),
                "answer_within": None if level is None else level.answer_within,
                "callbacks_pending": count,
                "oldest_callback_age": None if count == 0 else _seconds(now - oldest),
            }
        )

    agents = _agent_totals()
    for state, count in snapshot.agent_counts.items():
        group = AGENT_GROUPS.get(state)
        if group is not None:
            agents[group] += count
    whole_day = QueueDay(
        offered=sum(q.offered for q in figures.values()),
        answered_in_time=sum(q.answered_in_time for q in figures.values()),
        short_abandoned=sum(q.short_abandoned for q in figures.values()),
    )
    ages = [q["oldest_callback_age"] for q in queues if q["oldest_callback_age"] is not None]
    return {
        "day": today.local_date(now).isoformat(),
        "link_up": link_up,
        "agents": agents | {"logged_in": sum(agents.values())},
        "totals": {
            "waiting": sum(q["waiting"] for q in queues),
            "longest_wait": max((q["longest_wait"] for q in queues), default=0),
            "offered": whole_day.offered,
            "answered": sum(q["answered"] for q in queues),
            "service_level": _percent(whole_day.service_level),
            "callbacks_pending": sum(q["callbacks_pending"] for q in queues),
            "oldest_callback_age": max(ages, default=None),
        },
        "queues": queues,
    }


# --- the page -------------------------------------------------------------------------------

_STYLE: Final = """
:root {
  --bg: #070b11; --panel: #111923; --panel2: #182230; --line: #263241;
  --text: #eef2f7; --muted: #8d9aab;
  --available: #2ecc71; --on-call: #4c9bff; --wrap-up: #f5b83d; --paused: #b39dff;
  --good: #2ecc71; --warn: #f5b83d; --bad: #ff5252;
}
* { box-sizing: border-box; }
html, body { margin: 0; min-height: 100%; background: var(--bg); color: var(--text); }
body {
  font-family: "DejaVu Sans", "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: clamp(15px, 1.35vw, 48px); line-height: 1.2;
}
.num, .tick, .clock { font-variant-numeric: tabular-nums; }
header {
  display: flex; align-items: center; gap: 1em; padding: .55em 1.1em;
  background: var(--panel); border-bottom: .12em solid var(--line);
}
header h1 { margin: 0; font-size: 1.35em; font-weight: 800; letter-spacing: .03em; }
header .day { color: var(--muted); font-size: 1.05em; }
header .clock { margin-left: auto; font-size: 1.5em; font-weight: 700; }
#status {
  padding: .2em .8em; border-radius: 99em; font-size: .8em; font-weight: 800;
  letter-spacing: .1em; background: #12391f; color: #a8f0c0;
}
#status::before { content: "\\25CF\\00A0"; }
body.lost #status { background: var(--bad); color: #fff; }
.banner {
  display: none; padding: .45em 1.1em; font-size: 1.3em; font-weight: 800; text-align: center;
}
#lost { background: var(--bad); color: #fff; animation: pulse 1.4s ease-in-out infinite; }
#link { background: #7a4a00; color: #fff; }
body.lost #lost, body.linkdown #link { display: block; }
body.lost main { opacity: .35; filter: grayscale(1); }
@keyframes pulse { 50% { opacity: .6; } }
main { padding: .8em 1.1em 1.1em; }
.tiles {
  display: grid; grid-template-columns: 3.4fr 6fr; gap: .8em; margin-bottom: .9em;
}
.group {
  display: grid; gap: .5em; background: var(--panel); border-radius: .45em; padding: .5em;
}
.group.agents { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.group.calls { grid-template-columns: repeat(5, minmax(0, 1fr)); }
.tile { background: var(--panel2); border-radius: .35em; padding: .45em .7em .5em; }
.tile .label {
  color: var(--muted); font-size: .72em; font-weight: 700; text-transform: uppercase;
  letter-spacing: .07em; white-space: nowrap;
}
.tile .value { font-size: 2.4em; font-weight: 800; line-height: 1.1; white-space: nowrap; }
.tile .sub { color: var(--muted); font-size: .8em; white-space: nowrap; }
.tile.available { box-shadow: inset 0 .25em 0 var(--available); }
.tile.available .value { color: var(--available); }
.tile.on-call { box-shadow: inset 0 .25em 0 var(--on-call); }
.tile.on-call .value { color: var(--on-call); }
.tile.wrap-up { box-shadow: inset 0 .25em 0 var(--wrap-up); }
.tile.wrap-up .value { color: var(--wrap-up); }
.tile.paused { box-shadow: inset 0 .25em 0 var(--paused); }
.tile.paused .value { color: var(--paused); }
.row {
  display: grid; align-items: center; gap: .6em;
  grid-template-columns: 2.3fr 1fr 1.3fr 2.9fr 1.1fr 1.4fr 1.6fr;
}
.heads { color: var(--muted); font-size: .72em; font-weight: 700; text-transform: uppercase;
  letter-spacing: .07em; padding: 0 .9em .35em 1.2em; }
.queue {
  background: var(--panel); border-radius: .45em; margin-bottom: .55em;
  padding: .55em .9em .6em .9em; border-left: .35em solid var(--line);
}
.queue.waiting { border-left-color: var(--warn); }
.queue.late { border-left-color: var(--bad); background: #1d1217; }
.queue .name { font-size: 1.35em; font-weight: 800; }
.queue .big { font-size: 2.2em; font-weight: 800; }
.queue .mid { font-size: 1.5em; font-weight: 700; }
.queue .small { color: var(--muted); font-size: .8em; }
.agents-cell { display: flex; gap: 1.1em; font-size: 1.4em; font-weight: 800; }
.dot { display: inline-flex; align-items: center; gap: .3em; }
.dot::before {
  content: ""; width: .62em; height: .62em; border-radius: 50%; background: currentColor;
}
.dot.available { color: var(--available); }
.dot.on-call { color: var(--on-call); }
.dot.wrap-up { color: var(--wrap-up); }
.dot.paused { color: var(--paused); }
.dot.zero { opacity: .28; }
.callers { display: flex; flex-wrap: wrap; gap: .45em; margin-top: .45em; }
.callers:empty { display: none; }
.caller {
  background: #243245; border-radius: .3em; padding: .2em .65em; font-size: 1.05em;
  font-weight: 700;
}
.caller .pos { color: var(--muted); margin-right: .45em; }
.caller.ringing { background: #1b3f78; }
.caller.more { background: transparent; color: var(--muted); }
.caller.ringing::after { content: "  ringing"; color: #a9c9ff; font-size: .8em; }
.caller.warn { box-shadow: inset .22em 0 0 var(--warn); }
.caller.bad { box-shadow: inset .22em 0 0 var(--bad); }
.good { color: var(--good); } .warn { color: var(--warn); } .bad { color: var(--bad); }
.none { color: var(--muted); }
.legend { color: var(--muted); font-size: .75em; margin-top: .6em; display: flex; gap: 1.4em; }
#empty { color: var(--muted); font-size: 1.4em; padding: 2em; text-align: center; }
"""

_SCRIPT: Final = """
"use strict";
const $ = (id) => document.getElementById(id);
let receivedAt = performance.now();
const MAX_CHIPS = 14;  // one line of a full-HD screen; the rest as "+N more"

function fmt(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h > 0 ? h + ":" + two(m) + ":" + two(x) : two(m) + ":" + two(x);
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function waitClass(seconds, within) {
  if (!within) return "";
  if (seconds >= within) return "bad";
  return seconds >= within / 2 ? "warn" : "";
}
function slClass(level, target) {
  if (level === null || target === null) return "none";
  if (level >= target) return "good";
  return level >= target - 10 ? "warn" : "bad";
}
// A wait that keeps counting in the browser between two boards.
function timer(cls, seconds, within, kind) {
  const e = el("span", cls + " tick");
  e.dataset.base = String(seconds);
  e.dataset.cls = cls;
  e.dataset.kind = kind || "text";
  if (within) e.dataset.within = String(within);
  paint(e, 0);
  return e;
}
function paint(e, elapsed) {
  const seconds = Number(e.dataset.base) + elapsed;
  const within = Number(e.dataset.within || 0);
  const level = waitClass(seconds, within);
  if (e.dataset.kind === "chip") {
    e.lastChild.textContent = fmt(seconds);
    e.className = e.dataset.cls + " tick " + level;
  } else {
    e.textContent = fmt(seconds);
    e.className = e.dataset.cls + " tick " + level;
  }
}
function tick() {
  // Waits count on between two boards, but not on a lost stream: stale figures stand still.
  if (!document.body.classList.contains("lost")) {
    const elapsed = (performance.now() - receivedAt) / 1000;
    for (const e of document.querySelectorAll(".tick")) paint(e, elapsed);
  }
  $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false });
}
function setText(id, value) { $(id).textContent = String(value); }
function percent(value) { return value === null ? "\\u2013" : Math.round(value) + " %"; }

function queueRow(q) {
  const row = el("section", "queue");
  row.dataset.queue = q.id;
  if (q.waiting > 0) row.classList.add("waiting");
  if (q.answer_within && q.longest_wait >= q.answer_within) row.classList.add("late");
  const line = el("div", "row");
  line.append(el("div", "name", q.name));
  line.append(el("div", "big num waiting-count", q.waiting));
  const longest = el("div", "mid");
  longest.append(q.waiting > 0 ? timer("longest", q.longest_wait, q.answer_within)
                               : el("span", "none", "\\u2013"));
  line.append(longest);
  const agents = el("div", "agents-cell");
  for (const [key, cls, title] of [["available", "available", "available"],
      ["on_call", "on-call", "on call"], ["wrap_up", "wrap-up", "wrap-up"],
      ["paused", "paused", "paused"]]) {
    const n = q.agents[key];
    const dot = el("span", "dot num " + cls + (n === 0 ? " zero" : ""), n);
    dot.title = title;
    agents.append(dot);
  }
  line.append(agents);
  line.append(el("div", "mid num", q.answered));
  const sl = el("div");
  sl.append(el("span", "mid num " + slClass(q.service_level, q.service_level_target),
                percent(q.service_level)));
  if (q.service_level_target !== null) {
    sl.append(el("div", "small", "target " + Math.round(q.service_level_target) + " % in " +
                 q.answer_within + " s"));
  }
  line.append(sl);
  const cb = el("div");
  cb.append(el("span", "mid num" + (q.callbacks_pending ? "" : " none"), q.callbacks_pending));
  if (q.oldest_callback_age !== null) {
    const oldest = el("div", "small", "oldest ");
    oldest.append(timer("age", q.oldest_callback_age, 0));
    cb.append(oldest);
  }
  line.append(cb);
  row.append(line);
  const callers = el("div", "callers");
  for (const c of q.callers.slice(0, MAX_CHIPS)) {
    const chip = el("span", "caller" + (c.ringing ? " ringing" : ""));
    chip.dataset.position = String(c.position);
    chip.append(el("span", "pos", "#" + c.position));
    chip.append(el("span", "num", fmt(c.wait)));
    chip.dataset.base = String(c.wait);
    chip.dataset.cls = chip.className;
    chip.dataset.kind = "chip";
    if (q.answer_within) chip.dataset.within = String(q.answer_within);
    chip.classList.add("tick");
    callers.append(chip);
  }
  if (q.callers.length > MAX_CHIPS) {
    callers.append(el("span", "caller more", "+" + (q.callers.length - MAX_CHIPS) + " more"));
  }
  row.append(callers);
  return row;
}

function render(b) {
  receivedAt = performance.now();
  $("empty").hidden = true;
  $("board").hidden = false;
  document.body.classList.toggle("linkdown", !b.link_up);
  setText("day", b.day);
  for (const key of ["available", "on_call", "wrap_up", "paused"]) {
    setText("agents-" + key, b.agents[key]);
  }
  setText("agents-logged-in", b.agents.logged_in + " logged in");
  const t = b.totals;
  setText("waiting", t.waiting);
  $("waiting").className = "value num" + (t.waiting > 0 ? " warn" : "");
  // coloured by the target of the queue where that caller waits
  const worst = b.queues.reduce((a, q) => (q.longest_wait > a.longest_wait ? q : a),
                                { longest_wait: -1, answer_within: 0 });
  $("longest").replaceChildren(t.waiting > 0 ? timer("", t.longest_wait, worst.answer_within)
                                             : "\\u2013");
  setText("answered", t.answered);
  setText("offered", "of " + t.offered + " offered");
  const sl = $("service-level");
  sl.textContent = percent(t.service_level);
  sl.className = "value num " + (t.service_level === null ? "none" : "");
  setText("callbacks", t.callbacks_pending);
  const age = $("callback-age");
  age.replaceChildren();
  if (t.oldest_callback_age !== null) {
    age.append("oldest ", timer("", t.oldest_callback_age, 0));
  }
  $("queues").replaceChildren(...b.queues.map(queueRow));
  tick();
}

function setLive(live) {
  document.body.classList.toggle("lost", !live);
  setText("status", live ? "LIVE" : "OFFLINE");
}

let source = null;
let retry = null;
function connect() {
  retry = null;
  source = new EventSource("events");
  source.onopen = () => setLive(true);
  source.onmessage = (message) => { setLive(true); render(JSON.parse(message.data)); };
  source.onerror = () => {
    setLive(false);
    // EventSource retries by itself after a dropped stream, but gives up on an HTTP error
    // (a full server answers 503): then start a new one.
    if (source.readyState === EventSource.CLOSED && retry === null) {
      source.close();
      retry = setTimeout(connect, 3000);
    }
  };
}
setLive(false);
setText("status", "CONNECTING");
document.body.classList.remove("lost");
tick();
setInterval(tick, 1000);
connect();
"""

_BODY: Final = """
<header>
  <h1>Firstline &middot; Support desk</h1>
  <span class="day">Today <span id="day"></span></span>
  <span class="clock" id="clock"></span>
  <span id="status"></span>
</header>
<div class="banner" id="lost" role="alert">Connection lost &mdash; reconnecting&hellip;</div>
<div class="banner" id="link" role="alert">
  Telephony link down &mdash; live figures may be out of date
</div>
<main>
  <div id="empty">Waiting for the first figures&hellip;</div>
  <div id="board" hidden>
    <div class="tiles">
      <div class="group agents">
        <div class="tile available"><div class="label">Available</div>
          <div class="value num" id="agents-available"></div>
          <div class="sub" id="agents-logged-in"></div></div>
        <div class="tile on-call"><div class="label">On call</div>
          <div class="value num" id="agents-on_call"></div></div>
        <div class="tile wrap-up"><div class="label">Wrap-up</div>
          <div class="value num" id="agents-wrap_up"></div></div>
        <div class="tile paused"><div class="label">Paused</div>
          <div class="value num" id="agents-paused"></div></div>
      </div>
      <div class="group calls">
        <div class="tile"><div class="label">Waiting</div>
          <div class="value num" id="waiting"></div></div>
        <div class="tile"><div class="label">Longest wait</div>
          <div class="value num" id="longest"></div></div>
        <div class="tile"><div class="label">Answered</div>
          <div class="value num" id="answered"></div>
          <div class="sub" id="offered"></div></div>
        <div class="tile"><div class="label">Service level</div>
          <div class="value num" id="service-level"></div></div>
        <div class="tile"><div class="label">Callbacks</div>
          <div class="value num" id="callbacks"></div>
          <div class="sub" id="callback-age"></div></div>
      </div>
    </div>
    <div class="row heads">
      <div>Queue</div><div>Waiting</div><div>Longest wait</div>
      <div>Agents</div><div>Answered</div><div>Service level</div><div>Callbacks</div>
    </div>
    <div id="queues"></div>
    <div class="legend">
      <span class="dot available">available</span><span class="dot on-call">on call</span>
      <span class="dot wrap-up">wrap-up</span><span class="dot paused">paused</span>
    </div>
  </div>
</main>
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


_PAGE: Final = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>Firstline wallboard</title>\n"
    f"<style>{_STYLE}</style>\n</head>\n<body>{_BODY}<script>{_SCRIPT}</script>\n</body>\n</html>\n"
).encode()
# Only this page's own style and script may run; it talks to its own origin only.
_PAGE_POLICY: Final = (
    f"default-src 'none'; style-src {_csp_hash(_STYLE)}; script-src {_csp_hash(_SCRIPT)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# --- HTTP -----------------------------------------------------------------------------------

_MAX_REQUEST_LINE: Final = 2048
_MAX_HEAD: Final = 8192
_MAX_HEADERS: Final = 64
# Connections still sending their request, besides the event streams.
_EXTRA_CONNECTIONS: Final = 16
_RECONNECT_MS: Final = 2000
_CLOSE_GRACE: Final = 2.0
_KEEPALIVE_FRAME: Final = b": keepalive\n\n"
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # whole field: fullmatch
_VERSION: Final = re.compile(rb"HTTP/(\d)\.(\d)")
_ROUTES: Final = {"/": ("GET", "HEAD"), "/board.json": ("GET", "HEAD"), "/events": ("GET",)}
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _HttpError(Exception):
    def __init__(self, status: int, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]


async def _read_line(reader: asyncio.StreamReader, too_long: int) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(too_long) from None


def _request_line(line: bytes) -> tuple[str, str, bytes]:
    """Method, path (without the query) and version of a request line (CRLF included)."""
    if len(line) > _MAX_REQUEST_LINE:
        raise _HttpError(414)
    parts = line[:-2].split(b" ")
    if len(parts) != 3 or b"\n" in line[:-2] or b"\r" in line[:-2]:
        raise _HttpError(400)
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not target.startswith(b"/"):
        raise _HttpError(400)  # origin-form only: no absolute URLs, no "*"
    if any(c <= 0x20 or c >= 0x7F for c in target):
        raise _HttpError(400)
    matched = _VERSION.fullmatch(version)
    if matched is None:
        raise _HttpError(400)
    if matched.group(1) != b"1":
        raise _HttpError(505)
    return method.decode("ascii"), target.split(b"?", 1)[0].decode("ascii"), version


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    """One request head, strictly: CRLF lines, origin-form target, bounded sizes, no body."""
    line = await _read_line(reader, 414)
    method, path, version = _request_line(line)
    size = len(line)
    headers: dict[str, str] = {}
    for count in range(_MAX_HEADERS + 2):
        field = await _read_line(reader, 431)
        size += len(field)
        if size > _MAX_HEAD or count > _MAX_HEADERS:
            raise _HttpError(431)
        if field == b"\r\n":
            break
        name, colon, value = field[:-2].partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value:
            raise _HttpError(400)  # also obsolete line folding (a name starting with a space)
        headers[name.decode("ascii").lower()] = value.strip(b" \t").decode("latin-1")
    if version == b"HTTP/1.1" and "host" not in headers:
        raise _HttpError(400)
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise _HttpError(400)  # a GET has no body, and this server reads none
    return _Request(method, path, headers)


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ["X-Content-Type-Options: nosniff", "Cache-Control: no-store", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _frame(version: int, data: str) -> bytes:
    return f"id: {version}\ndata: {data}\n\n".encode()


# --- the server -----------------------------------------------------------------------------


class _Client:
    """One open event stream: the newest frame not yet written, never more."""

    __slots__ = ("closed", "frame", "version", "wake")

    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.version = 0
        self.closed = False
        self.wake = asyncio.Event()

    def offer(self, version: int, frame: bytes) -> None:
        """Replace what waits to be written (a slow reader skips the boards in between)."""
        if version > self.version:
            self.version, self.frame = version, frame
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def next(self, keepalive: float) -> bytes | None:
        """The next bytes to write: a board, a keepalive comment, or None once closed."""
        while not self.closed:
            if self.frame is not None:
                frame, self.frame = self.frame, None
                return frame
            self.wake.clear()
            try:
                async with asyncio.timeout(keepalive):
                    await self.wake.wait()
            except TimeoutError:
                return _KEEPALIVE_FRAME
        return None


class WallboardServer:
    """Serves the wallboard page, `/board.json` and the `/events` stream until `close()`.

    `publish(board)` keeps the newest board and pushes it to every open page: at most one
    push per `min_interval` seconds (the newest board always goes out within
    `min_interval`), each client holding at most one unsent board. A client that does not
    take its data for `write_timeout` seconds is dropped; past `max_clients` streams, new
    ones get 503. Not thread-safe; runs in the daemon's event loop.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        logger: FilteringBoundLogger | None = None,
        max_clients: int = 64,
        min_interval: float = 0.25,
        keepalive: float = 15.0,
        request_timeout: float = 5.0,
        write_timeout: float = 30.0,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self._host = host
        self._port = port
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("metrics.wallboard")
        )
        self._max_clients = max_clients
        self._min_interval = min_interval
        self._keepalive = keepalive
        self._request_timeout = request_timeout
        self._write_timeout = write_timeout
        self._server: asyncio.Server | None = None
        self._closing = False
        self._connections: set[asyncio.Task[Any]] = set()
        self._clients: set[_Client] = set()
        self._json: str | None = None
        self._version = 0
        self._frame = b""
        self._last_push = -math.inf
        self._push_later: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def client_count(self) -> int:
        """Open event streams (pages watching)."""
        return len(self._clients)

    async def start(self) -> None:
        self._closing = False
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_MAX_HEAD
        )
        self._log.info("wallboard.listening", host=self._host, port=self.port)

    async def close(self) -> None:
        """Stop listening, end every stream cleanly, and wait for the connections to go."""
        self._closing = True
        if self._push_later is not None:
            self._push_later.cancel()
            self._push_later = None
        if self._server is not None:
            self._server.close()
        for client in self._clients:
            client.close()
        if self._connections:
            _done, stuck = await asyncio.wait(set(self._connections), timeout=_CLOSE_GRACE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def publish(self, board: Mapping[str, Any]) -> None:
        """Make `board` the current one and push it to every page; never blocks.

        A board equal to the current one is not pushed again.
        """
        data = json.dumps(board, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        if data == self._json:
            return
        self._json = data
        self._version += 1
        self._frame = _frame(self._version, data)
        if self._server is None or self._push_later is not None:
            return  # not serving yet, or a push is already due: it takes the newest board
        loop = asyncio.get_running_loop()
        delay = self._last_push + self._min_interval - loop.time()
        if delay <= 0:
            self._push()
        else:
            self._push_later = loop.call_later(delay, self._push)

    def _push(self) -> None:
        self._push_later = None
        self._last_push = asyncio.get_running_loop().time()
        for client in self._clients:
            client.offer(self._version, self._frame)

    # --- connections ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_server runs each connection in a task
        if self._closing or len(self._connections) >= self._max_clients + _EXTRA_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the browser went away
        except TimeoutError:
            writer.transport.abort()  # it takes nothing: do not wait for its buffer
        except Exception:  # a wall screen must never take the daemon down with it
            self._log.exception("wallboard.connection_failed")
            writer.transport.abort()
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._request_timeout):
                request = await _read_request(reader)
        except TimeoutError:
            await self._reply(writer, 408, "text/plain", b"request timeout\n")
            return
        except _HttpError as error:
            body = f"{_REASONS[error.status].lower()}\n".encode()
            await self._reply(writer, error.status, "text/plain", body, error.headers)
            return
        methods = _ROUTES.get(request.path)
        if methods is None:
            await self._reply(writer, 404, "text/plain", b"not found\n")
        elif request.method not in methods:
            allow = (("Allow", ", ".join(methods)),)
            await self._reply(writer, 405, "text/plain", b"method not allowed\n", allow)
        elif request.path == "/events":
            await self._stream(reader, writer)
        elif request.path == "/board.json":
            if self._json is None:
                retry = (("Retry-After", "1"),)
                await self._reply(writer, 503, "text/plain", b"no board yet\n", retry)
            else:
                body = self._json.encode()
                await self._reply(
                    writer, 200, "application/json", body, head_only=request.method == "HEAD"
                )
        else:
            policy = (("Content-Security-Policy", _PAGE_POLICY), ("Referrer-Policy", "no-referrer"))
            await self._reply(
                writer,
                200,
                "text/html; charset=utf-8",
                _PAGE,
                policy,
                head_only=request.method == "HEAD",
            )

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        *,
        head_only: bool = False,
    ) -> None:
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        writer.write(_head(status, fields) + (b"" if head_only else body))
        await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self._write_timeout):
            await writer.drain()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self._max_clients:
            self._log.warning("wallboard.full", clients=len(self._clients))
            retry = (("Retry-After", "5"),)
            await self._reply(writer, 503, "text/plain", b"too many wallboards\n", retry)
            return
        client = _Client()
        if self._json is not None:
            client.offer(self._version, self._frame)  # the current board at once
        self._clients.add(client)
        watcher = asyncio.create_task(self._watch_hangup(reader, client))
        self._log.debug("wallboard.client_open", clients=len(self._clients))
        try:
            head = _head(200, [("Content-Type", "text/event-stream; charset=utf-8")])
            writer.write(head + f"retry: {_RECONNECT_MS}\n\n".encode())
            await self._drain(writer)
            while (frame := await client.next(self._keepalive)) is not None:
                writer.write(frame)
                try:
                    await self._drain(writer)
                except TimeoutError:
                    self._log.warning("wallboard.client_stuck", timeout=self._write_timeout)
                    raise
        finally:
            watcher.cancel()
            self._clients.discard(client)
            self._log.debug("wallboard.client_closed", clients=len(self._clients))

    @staticmethod
    async def _watch_hangup(reader: asyncio.StreamReader, client: _Client) -> None:
        """End the stream when the browser hangs up (whatever else it sends is dropped)."""
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        client.close()
