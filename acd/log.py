"""Structured JSON logging for the daemon and CLI.

Every log line is one JSON object on stdout. Per-call context (the channel's unique id,
the queue) is bound with structlog's contextvars, so it follows the call's task and every
line written while handling that call carries it. Secrets must never be passed in here.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging"]


def _json_fallback(value: Any) -> Any:
    # What structlog's JSONRenderer does with a value JSON cannot hold.
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class _UtcTimestamp:
    """Adds ``timestamp`` as ``structlog.processors.TimeStamper(fmt="iso", utc=True)`` does
    (``2026-11-23T17:38:05.123456Z``, no fraction on a whole second), formatting the date
    and time once per second instead of once per line."""

    def __init__(self) -> None:
        # (second, its date and time): one tuple, replaced whole, so that a thread logging
        # at the same time never pairs one second with another's text.
        self._last_second: tuple[int, str] = (-1, "")

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        # datetime.now() floors the same clock to microseconds, as this does.
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        last_second = self._last_second
        if last_second[0] != second:
            utc = datetime.datetime.fromtimestamp(second, datetime.UTC)
            last_second = (second, utc.strftime("%Y-%m-%dT%H:%M:%S"))
            self._last_second = last_second
        date_and_time = last_second[1]
        microseconds = nanoseconds // 1000
        event_dict["timestamp"] = (
            f"{date_and_time}.{microseconds:06d}Z" if microseconds else f"{date_and_time}Z"
        )
        return event_dict


class _JsonLine:
    """The last processor: the event as one JSON object, as ``structlog.processors.
    JSONRenderer(ensure_ascii=False)`` renders it, with one encoder made up front instead
    of one per line (json.dumps with arguments builds a new one per call)."""

    def __init__(self) -> None:
        self._encode = json.JSONEncoder(ensure_ascii=False, default=_json_fallback).encode

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        return self._encode(event_dict)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stdout by default)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _UtcTimestamp(),
            structlog.processors.format_exc_info,
            _JsonLine(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        # Each logger is resolved once, at its first use, instead of at every bind: the
        # configuration is set once, at start-up, before any logger is used.
        cache_logger_on_first_use=True,
    )
