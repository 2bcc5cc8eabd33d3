"""The metrics endpoint serves the registry over real HTTP on loopback."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from metrics import HealthMetrics, MetricsExporter


async def _get(port: int, path: str, method: str = "GET") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    reply = (await reader.read()).decode()
    writer.close()
    head, _, body = reply.partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_health_figures_are_served() -> None:
    registry = CollectorRegistry()
    health = HealthMetrics(registry)
    exporter = MetricsExporter(registry, host="127.0.0.1", port=0)
    await exporter.start()
    try:
        health.ami_logged_in()
        health.ami_lost()
        health.ami_logged_in()
        health.agi_request_done("route", "ok", 0.02)
        status, body = await _get(exporter.port, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert "acd_ami_connected 1.0" in body
        assert "acd_ami_reconnects_total 1.0" in body
        assert 'acd_agi_requests_total{result="ok",script="route"} 1.0' in body
        assert 'acd_agi_duration_seconds_count{script="route"} 1.0' in body

        assert (await _get(exporter.port, "/other"))[0] == "HTTP/1.1 404 Not Found"
        assert (await _get(exporter.port, "/metrics", "POST"))[0].startswith("HTTP/1.1 405")
    finally:
        await exporter.close()
