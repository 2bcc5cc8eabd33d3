"""The desk's Prometheus figures: calls offered and how they ended, waits, talk times,
callers waiting, agents by state, callbacks and tickets.

Counters and histograms come from the `CallFinished` records of `acd.state.LiveState`
(`observe`); gauges are recomputed from a `StateSnapshot` (`update_gauges`) or set whole by
their owners (`set_*`). Metric names and labels are part of the product (dashboards and
alerts depend on them). Observes only: nothing here decides anything, and nothing here keeps
a label value that did not come from configuration or a fixed enum.
"""

# Counting conventions
# --------------------
# A *queue visit* is one `FinishedCall` whose caller actually waited in a queue: it has a
# `joined_at`, or it was answered (AgentConnect comes from a queue even when we missed the
# join). Calls that hung up in the IVR, or between two queues, are no visit of any queue.
#
# - acd_calls_offered_total{queue}: every queue visit, once, when its outcome is known and
#   the outcome is not `unknown`. Each offered visit is counted in exactly one of
#   acd_calls_{answered,abandoned,short_abandoned,timeout,overflowed}_total or as a visit
#   ending in a callback request; short abandons ARE offered. A call that overflows or
#   times out and rejoins is offered again to the next queue (per-queue figures; summed
#   over queues they count visits, not distinct calls).
# - acd_calls_abandoned_total and acd_calls_short_abandoned_total are disjoint (the state
#   model classifies an abandon as one or the other by the queue's `short_abandon`).
# - acd_callbacks_requested_total{queue}: every callback booking (`mark_callback`), also one
#   made after its visit was already closed (the fallback dialplan after a timeout books a
#   ticket: that visit counts as a timeout, the booking here as well). So this counter
#   counts bookings and can exceed the visits that ended in a callback request; those are
#   `acd_wait_seconds_count{outcome="callback_requested"}`.
# - acd_calls_abandoned_before_queue_total{queue}: routed calls whose caller hung up before
#   joining `queue` (during the welcome or the callback offer, or on the way from one queue
#   to the next). No visit, so not offered. Callers who hang up in the IVR, before the route,
#   are acd_agi_requests_total{script="route",result="hangup"}: the two together are the
#   callers the desk lost before they waited.
# - acd_calls_unknown_total{queue}: visits that vanished while the AMI link was down (found
#   missing at resync). They are not offered: nobody knows whether they were answered.
# - acd_wait_seconds{queue,outcome}: the wait of each offered visit (for answered: join to
#   answer); `outcome` is one of the six outcomes above, never `unknown`.
#
# Service level, "answered within T ÷ offered, short abandons excluded", for a T that is
# one of the wait buckets (the queues' `service_level.answer_within` should be one):
#   sum by (queue) (increase(acd_wait_seconds_bucket{outcome="answered",le="60"}[1h]))
#   / sum by (queue) (increase(acd_calls_offered_total[1h])
#                     - increase(acd_calls_short_abandoned_total[1h]))
#
# Bounded labels: `queue` is one of the configured queue ids or OTHER ("_other", which no
# queue id can be: ids start with a letter or digit); `state` is an `AgentState`; `status`
# and `result` come from lists given at construction, anything else becomes OTHER. Every
# series exists from the start: counters and histograms at 0, gauges at 0, except
# acd_expected_wait_seconds, which is NaN until an estimate is set ("no estimate", so an
# alert on `> 300` stays quiet).

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from acd.state import CallFinished, Change, FinishedCall, Outcome, StateSnapshot
from acd.state_machines import AgentState

__all__ = [
    "CALLBACK_DELAY_BUCKETS",
    "DEFAULT_CALLBACK_RESULTS",
    "DEFAULT_TICKET_STATUSES",
    "OTHER",
    "TALK_BUCKETS",
    "WAIT_BUCKETS",
    "DeskMetrics",
]

OTHER: Final = "_other"
"""The label value of every queue, status or result that is not configured."""

WAIT_BUCKETS: Final = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
# Support calls last minutes; the low end still shows calls cut short.
TALK_BUCKETS: Final = (
    10.0,
    30.0,
    60.0,
    120.0,
    180.0,
    300.0,
    450.0,
    600.0,
    900.0,
    1200.0,
    1800.0,
    3600.0,
)
# Desks report callbacks within the hour to within a working day (73 min on average).
CALLBACK_DELAY_BUCKETS: Final = (
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    172800.0,
)
DEFAULT_TICKET_STATUSES: Final = ("first_level", "second_level", "waiting", "dev", "done")
DEFAULT_CALLBACK_RESULTS: Final = ("answered", "no_answer", "busy", "failed")

# The outcomes a visit can be offered with, and the counter (name stem) of each.
_OUTCOME_COUNTERS: Final = {
    Outcome.ANSWERED: ("acd_calls_answered_total", "Queue visits answered by an agent."),
    Outcome.ABANDONED: (
        "acd_calls_abandoned_total",
        "Queue visits the caller hung up on after the short-abandon threshold.",
    ),
    Outcome.SHORT_ABANDON: (
        "acd_calls_short_abandoned_total",
        "Queue visits the caller hung up on within the short-abandon threshold.",
    ),
    Outcome.TIMEOUT: (
        "acd_calls_timeout_total",
        "Queue visits that reached the queue's maximum wait.",
    ),
    Outcome.OVERFLOWED: (
        "acd_calls_overflowed_total",
        "Queue visits sent on to another queue.",
    ),
}
_OFFERED_OUTCOMES: Final = (*_OUTCOME_COUNTERS, Outcome.CALLBACK_REQUESTED)


def _labels(name: str, values: Iterable[str]) -> tuple[str, ...]:
    """Configured label values, in order, without repeats, plus OTHER."""
    unique = tuple(dict.fromkeys(values))
    if OTHER in unique:
        raise ValueError(f"{name} {OTHER!r} is reserved for values that are not configured")
    return (*unique, OTHER)


class DeskMetrics:
    """The desk's figures, registered in `registry`, for the queues with these ids.

    `ticket_statuses` and `callback_results` are the only `status` / `result` label values
    besides OTHER. Not thread-safe; call from the daemon's event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        queues: Sequence[str],
        ticket_statuses: Sequence[str] = DEFAULT_TICKET_STATUSES,
        callback_results: Sequence[str] = DEFAULT_CALLBACK_RESULTS,
    ) -> None:
        self._queues = _labels("queue", queues)
        self._statuses = _labels("ticket status", ticket_statuses)
        self._results = _labels("callback result", callback_results)

        def counter(name: str, doc: str, labels: Sequence[str] = ("queue",)) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self._offered = counter(
            "acd_calls_offered_total",
            "Queue visits that ended with a known outcome (short abandons included).",
        )
        self._by_outcome = {
            outcome: counter(name, doc) for outcome, (name, doc) in _OUTCOME_COUNTERS.items()
        }
        self._callbacks_requested = counter(
            "acd_callbacks_requested_total",
            "Callback tickets booked for callers of the queue.",
        )
        self._before_queue = counter(
            "acd_calls_abandoned_before_queue_total",
            "Routed calls whose caller hung up before joining the queue (no visit).",
        )
        self._unknown = counter(
            "acd_calls_unknown_total",
            "Queue visits that vanished while the AMI link was down (not offered).",
        )
        self._callback_attempts = counter(
            "acd_callback_attempts_total",
            "Calls the callback dialer placed, by result.",
            ("queue", "result"),
        )
        self._wait = Histogram(
            "acd_wait_seconds",
            "Wait of each offered queue visit, by outcome (answered: join to answer).",
            ("queue", "outcome"),
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._talk = Histogram(
            "acd_talk_seconds",
            "Talk time of answered queue visits.",
            ("queue",),
            buckets=TALK_BUCKETS,
            registry=registry,
        )
        self._callback_delay = Histogram(
            "acd_callback_delay_seconds",
            "From the callback request to an agent talking to the customer.",
            ("queue",),
            buckets=CALLBACK_DELAY_BUCKETS,
            registry=registry,
        )
        self._waiting = Gauge(
            "acd_callers_waiting",
            "Callers in the queue now (ringing an agent included).",
            ("queue",),
            registry=registry,
        )
        self._oldest = Gauge(
            "acd_oldest_wait_seconds",
            "How long the longest-waiting caller has waited (0 when nobody waits).",
            ("queue",),
            registry=registry,
        )
        self._agents = Gauge("acd_agents", "Agents by state.", ("state",), registry=registry)
        self._queue_agents = Gauge(
            "acd_queue_agents",
            "Members of the queue by state (available but paused in this queue: paused).",
            ("queue", "state"),
            registry=registry,
        )
        self._pending = Gauge(
            "acd_callbacks_pending",
            "Callback tickets waiting to be called back.",
            ("queue",),
            registry=registry,
        )
        self._expected = Gauge(
            "acd_expected_wait_seconds",
            "Expected wait of a caller joining now; NaN when there is no estimate.",
            ("queue",),
            registry=registry,
        )
        self._tickets = Gauge("acd_tickets", "Tickets by status.", ("status",), registry=registry)
        self._create_series()

    # --- counters and histograms --------------------------------------------------------

    def observe(self, changes: Sequence[Change]) -> None:
        """Count the queue visits that ended among `changes` (other records are ignored)."""
        for change in changes:
            if isinstance(change, CallFinished):
                self._finished(change.record)

    def callback_attempt(self, queue: str, result: str) -> None:
        """The callback dialer placed a call for a ticket of `queue`; `result` is how it went."""
        result = result if result in self._results else OTHER
        self._callback_attempts.labels(queue=self._queue(queue), result=result).inc()

    def callback_delay(self, queue: str, seconds: float) -> None:
        """An agent talks to a customer `seconds` after the customer asked for the callback."""
        self._callback_delay.labels(queue=self._queue(queue)).observe(max(0.0, seconds))

    # --- gauges -------------------------------------------------------------------------

    def update_gauges(self, snapshot: StateSnapshot, now: float) -> None:
        """Recompute callers waiting, oldest wait and agents by state from `snapshot`.

        Every series is set, so after a resync the figures are the snapshot's, whatever they
        were before.
        """
        waiting = dict.fromkeys(self._queues, 0)
        oldest = dict.fromkeys(self._queues, 0.0)
        for view in snapshot.queues.values():
            queue = self._queue(view.queue)
            for caller in view.waiting:
                if caller.held_place:
                    continue  # pending callbacks have their own gauge
                waiting[queue] += 1
                oldest[queue] = max(oldest[queue], now - caller.joined_at)
        members = {(q, s): 0 for q in self._queues for s in AgentState}
        for agent in snapshot.agents.values():
            for name, member in agent.queues.items():
                state = agent.state
                # Available for other queues, but this one sends it nothing.
                if member.paused and state is AgentState.AVAILABLE:
                    state = AgentState.PAUSED
                members[self._queue(name), state] += 1
        for queue in self._queues:
            self._waiting.labels(queue=queue).set(waiting[queue])
            self._oldest.labels(queue=queue).set(oldest[queue])
        for state in AgentState:
            self._agents.labels(state=state.value).set(snapshot.agent_counts.get(state, 0))
        for (queue, state), count in members.items():
            self._queue_agents.labels(queue=queue, state=state.value).set(count)

    def set_callbacks_pending(self, pending: Mapping[str, int]) -> None:
        """Pending callback tickets by queue; queues not in `pending` have none."""
        totals = dict.fromkeys(self._queues, 0)
        for queue, count in pending.items():
            totals[self._queue(queue)] += count
        for queue, count in totals.items():
            self._pending.labels(queue=queue).set(count)

    def set_expected_wait(self, queue: str, seconds: float | None) -> None:
        """The expected wait of `queue`; None (no estimate, e.g. no agent) sets NaN.

        NaN rather than removing the series: the series stays listed and comparisons
        with it are false. An unconfigured queue writes OTHER (the last one set wins).
        """
        value = math.nan if seconds is None else max(0.0, seconds)
        self._expected.labels(queue=self._queue(queue)).set(value)

    def set_tickets(self, tickets: Mapping[str, int]) -> None:
        """Tickets by status; statuses not in `tickets` have none."""
        totals = dict.fromkeys(self._statuses, 0)
        for status, count in tickets.items():
            totals[status if status in totals else OTHER] += count
        for status, count in totals.items():
            self._tickets.labels(status=status).set(count)

    # --- private ------------------------------------------------------------------------

    def _queue(self, name: str | None) -> str:
        return name if name is not None and name in self._queues else OTHER

    def _finished(self, record: FinishedCall) -> None:
        if record.held_place:
            return  # a callback attempt: counted by the dialer, never as a caller's call
        queue = self._queue(record.queue)
        if record.outcome is Outcome.CALLBACK_REQUESTED:
            self._callbacks_requested.labels(queue=queue).inc()
        if record.joined_at is None and record.outcome is not Outcome.ANSWERED:
            # Never waited in a queue: no visit to count.
            if record.outcome is Outcome.ABANDONED:
                self._before_queue.labels(queue=queue).inc()
            return
        if record.outcome is Outcome.UNKNOWN:
            self._unknown.labels(queue=queue).inc()
            return
        self._offered.labels(queue=queue).inc()
        counter = self._by_outcome.get(record.outcome)
        if counter is not None:
            counter.labels(queue=queue).inc()
        if record.wait is not None:
            self._wait.labels(queue=queue, outcome=record.outcome.value).observe(record.wait)
        if record.outcome is Outcome.ANSWERED and record.talk is not None:
            self._talk.labels(queue=queue).observe(record.talk)

    def _create_series(self) -> None:
        """Every labelled series, so dashboards see zeros rather than gaps."""
        for queue in self._queues:
            for metric in (
                self._offered,
                self._callbacks_requested,
                self._before_queue,
                self._unknown,
                *self._by_outcome.values(),
            ):
                metric.labels(queue=queue)
            for result in self._results:
                self._callback_attempts.labels(queue=queue, result=result)
            for outcome in _OFFERED_OUTCOMES:
                self._wait.labels(queue=queue, outcome=outcome.value)
            self._talk.labels(queue=queue)
            self._callback_delay.labels(queue=queue)
            self._waiting.labels(queue=queue).set(0)
            self._oldest.labels(queue=queue).set(0)
            self._pending.labels(queue=queue).set(0)
            self._expected.labels(queue=queue).set(math.nan)
            for state in AgentState:
                self._queue_agents.labels(queue=queue, state=state.value).set(0)
        for state in AgentState:
            self._agents.labels(state=state.value).set(0)
        for status in self._statuses:
            self._tickets.labels(status=status).set(0)
