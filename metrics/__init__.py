"""Prometheus figures: observes the engine, never decides anything."""

from metrics.desk import DeskMetrics
from metrics.exporter import MetricsExporter
from metrics.health import HealthMetrics

__all__ = ["DeskMetrics", "HealthMetrics", "MetricsExporter"]
