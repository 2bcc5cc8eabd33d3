"""The daemon's health figures: is the AMI link up, how often it reconnected, how the
FastAGI scripts fare. Metric names and labels are part of the product (dashboards and
alerts depend on them). Observes only: nothing here decides anything.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["HealthMetrics"]

# FastAGI steps are expected to answer well within a second; the tail shows a slow store.
_AGI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HealthMetrics:
    """Health gauges and counters, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._ami_connected = Gauge(
            "acd_ami_connected",
            "1 while the daemon is logged in to the Asterisk Manager Interface, else 0.",
            registry=registry,
        )
        self._ami_reconnects = Counter(
            "acd_ami_reconnects_total",
            "AMI logins after the first one (each one follows a lost connection).",
            registry=registry,
        )
        self._agi_requests = Counter(
            "acd_agi_requests_total",
            "FastAGI requests by script and result.",
            ["script", "result"],
            registry=registry,
        )
        self._agi_duration = Histogram(
            "acd_agi_duration_seconds",
            "Time a FastAGI request took, from header to close.",
            ["script"],
            buckets=_AGI_BUCKETS,
            registry=registry,
        )
        self._mqtt_connected = Gauge(
            "acd_mqtt_connected",
            "1 while the daemon is connected to its MQTT broker, else 0 (absent: no MQTT).",
            registry=registry,
        )
        self._mqtt_events = Gauge(
            "acd_mqtt_events",
            "Events handed to the MQTT link, by fate: published (acknowledged by the "
            "broker), queued (waiting for it), dropped (lost while it was away too long).",
            ["fate"],
            registry=registry,
        )
        self._logins = 0

    def ami_logged_in(self) -> None:
        self._logins += 1
        if self._logins > 1:
            self._ami_reconnects.inc()
        self._ami_connected.set(1)

    def ami_lost(self) -> None:
        self._ami_connected.set(0)

    def agi_request_done(self, script: str, result: str, seconds: float) -> None:
        self._agi_requests.labels(script=script, result=result).inc()
        self._agi_duration.labels(script=script).observe(seconds)

    def mqtt_link(self, *, connected: bool, published: int, queued: int, dropped: int) -> None:
        """The MQTT link's own counts (it keeps them; this only shows them)."""
        self._mqtt_connected.set(1 if connected else 0)
        self._mqtt_events.labels(fate="published").set(published)
        self._mqtt_events.labels(fate="queued").set(queued)
        self._mqtt_events.labels(fate="dropped").set(dropped)
