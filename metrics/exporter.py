"""A minimal asyncio HTTP endpoint that serves a Prometheus registry at ``/metrics``.

It runs inside the daemon's event loop (no threads), answers GET only, bounds the request
head it reads, and binds to loopback unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["MetricsExporter"]

_MAX_REQUEST_HEAD = 8192
_READ_TIMEOUT = 5.0


class MetricsExporter:
    """Serves ``registry`` over HTTP until ``close()``."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_MAX_REQUEST_HEAD
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].split()
            if len(request_line) < 2 or request_line[0] != b"GET":
                status, content_type, body = b"405 Method Not Allowed", b"text/plain", b""
            elif request_line[1].split(b"?", 1)[0] != b"/metrics":
                status, content_type, body = b"404 Not Found", b"text/plain", b"not found\n"
            else:
                status = b"200 OK"
                content_type = CONTENT_TYPE_LATEST.encode()
                body = generate_latest(self._registry)
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + content_type
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
