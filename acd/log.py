"""Structured JSON logging for the daemon and CLI.

Every log line is one JSON object on stdout. Per-call context (the channel's unique id,
the queue) is bound with structlog's contextvars, so it follows the call's task and every
line written while handling that call carries it. Secrets must never be passed in here.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stdout by default)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
