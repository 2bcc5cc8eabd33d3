"""Prometheus figures and the live wallboard: they observe the engine, never decide anything."""

from metrics.desk import DeskMetrics
from metrics.exporter import MetricsExporter
from metrics.health import HealthMetrics
from metrics.wallboard import DayFigures, WallboardServer, board

__all__ = [
    "DayFigures",
    "DeskMetrics",
    "HealthMetrics",
    "MetricsExporter",
    "WallboardServer",
    "board",
]
