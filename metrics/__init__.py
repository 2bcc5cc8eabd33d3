"""Prometheus figures: observes the engine, never decides anything."""

from metrics.exporter import MetricsExporter
from metrics.health import HealthMetrics

__all__ = ["HealthMetrics", "MetricsExporter"]
