"""Live: a real Prometheus scrapes the daemon during calls and answers a query on the
recording rules of metrics/prometheus/firstline.rules.yml.

Prometheus is Debian's ``prometheus`` binary, started on a temporary config (scrape and
rule evaluation every second, storage in the test's tmp_path, web on a free loopback
port) and stopped at the end. It never runs as a service.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acd.ami import AmiClient
from tests.live.harness import (
    REPO,
    DaemonProcess,
    collect,
    dial_feature_code,
    logout_everyone,
    place_call,
    wait_members,
)

pytestmark = pytest.mark.live

RULE_FILES = (
    REPO / "metrics" / "prometheus" / "firstline.rules.yml",
    REPO / "metrics" / "prometheus" / "firstline.alerts.yml",
)
METRICS_TARGET = "127.0.0.1:9648"  # tests/live/desk-live.yaml
QUEUE = 'queue="first-level"'

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: firstline
    static_configs:
      - targets: ["{target}"]
"""


class _Prometheus:
    """A Prometheus process and its HTTP query API."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self._log_path = log_path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now (raises on an API error)."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(address, timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_value(
        self, expr: str, predicate: Callable[[float], bool], within: float = 30
    ) -> float:
        """Poll `expr` until it has exactly one sample whose value satisfies `predicate`."""
        deadline = time.monotonic() + within
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = await asyncio.to_thread(self.query, expr)
            if len(seen) == 1:
                value = float(seen[0]["value"][1])
                if predicate(value):
                    return value
            await asyncio.sleep(0.5)
        log = self._log_path.read_text(errors="replace")[-2000:]
        raise AssertionError(f"{expr} never matched within {within} s: {seen}\n{log}")


def _finished(uid: str) -> Callable[[dict[str, Any]], bool]:
    def match(line: dict[str, Any]) -> bool:
        return line.get("event") == "call.finished" and line.get("uniqueid") == uid

    return match


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[_Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail("prometheus missing: run scripts/install-deps (Debian package)")
        pytest.skip("prometheus missing: install Debian's prometheus package")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        _CONFIG.format(
            rules=", ".join(json.dumps(str(path)) for path in RULE_FILES),
            target=METRICS_TARGET,
        )
    )
    port = _free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield _Prometheus(url, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def test_prometheus_scrapes_live_calls_and_evaluates_the_recording_rules(
    ami: AmiClient, daemon: DaemonProcess, prometheus: _Prometheus
) -> None:
    # A scrape from before the calls: the rates need the counters' starting zero.
    await prometheus.wait_value(f"acd_calls_offered_total{{{QUEUE}}}", lambda v: v == 0)
    await prometheus.wait_value("acd_ami_connected", lambda v: v == 1)
    # An idle queue has no ratio yet (0/0), rather than a misleading 0 or 100 %.
    await prometheus.wait_value(f"queue:acd_answer_rate:ratio_rate1h{{{QUEUE}}}", math.isnan)

    await logout_everyone(ami)
    await dial_feature_code(ami, "*21", "201")  # alice answers, talks 2 s each
    await wait_members(ami, "first-level", lambda m: "Local/alice@test-agents" in m)
    first = await place_call(ami, "4930555051")
    await asyncio.sleep(0.3)
    second = await place_call(ami, "4930555052")
    await asyncio.gather(
        collect(ami, first, until="AgentComplete", within=20),
        collect(ami, second, until="AgentComplete", within=20),
    )
    for uid in (first, second):
        daemon.wait_for(_finished(uid))

    # Both calls are in Prometheus; the rules are evaluated every second after that.
    await prometheus.wait_value(f"acd_calls_answered_total{{{QUEUE}}}", lambda v: v == 2)
    answer_rate = await prometheus.wait_value(
        f"queue:acd_answer_rate:ratio_rate1h{{{QUEUE}}}", lambda v: not math.isnan(v)
    )
    assert answer_rate == pytest.approx(1.0)
    # The second caller waited about one talk time (2 s): both within 20 s.
    service_level = await prometheus.wait_value(
        f"queue:acd_service_level_20s:ratio_rate1h{{{QUEUE}}}", lambda v: not math.isnan(v)
    )
    assert service_level == pytest.approx(1.0)
    abandon_rate = await prometheus.wait_value(
        f"queue:acd_abandon_rate:ratio_rate1h{{{QUEUE}}}", lambda v: not math.isnan(v)
    )
    assert abandon_rate == 0
    asa = await prometheus.wait_value(
        f"queue:acd_asa_seconds:rate1h{{{QUEUE}}}", lambda v: not math.isnan(v)
    )
    assert 0 <= asa < 20
    # Nothing is wrong on this desk: no alert fires.
    firing = await asyncio.to_thread(prometheus.query, 'ALERTS{alertstate="firing"}')
    assert firing == []
