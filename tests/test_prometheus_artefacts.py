"""The Prometheus and Grafana artefacts in metrics/prometheus and metrics/grafana are valid
and refer only to figures the daemon exports.

`promtool` (Debian's ``prometheus`` package, installed by scripts/install-deps) checks the
scrape config and the rules and runs the rules' unit tests. Without promtool these tests
are skipped on a developer machine and fail under FIRSTLINE_REQUIRE_LIVE=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from metrics.desk import WAIT_BUCKETS, DeskMetrics
from metrics.health import HealthMetrics

REPO = Path(__file__).resolve().parent.parent
PROM_DIR = REPO / "metrics" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = (PROM_DIR / "firstline.rules.yml", PROM_DIR / "firstline.alerts.yml")
RULES_TEST = PROM_DIR / "firstline.rules.test.yml"
GRAFANA_DIR = REPO / "metrics" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "firstline-desk.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "firstline.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "firstline.yml"

# Series Prometheus itself adds to every scrape target.
_SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("FIRSTLINE_REQUIRE_LIVE") == "1":
            pytest.fail("promtool missing: run scripts/install-deps (Debian package prometheus)")
        pytest.skip("promtool missing: install Debian's prometheus package")
    return path


def _run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _exported_series() -> frozenset[str]:
    """Every series name the daemon can export, from the real metric definitions."""
    registry = CollectorRegistry()
    DeskMetrics(registry, queues=["first-level"])
    HealthMetrics(registry)
    return frozenset(
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
    )


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in _yaml(path)["groups"] for rule in group["rules"]
    ]


def _recorded() -> frozenset[str]:
    return frozenset(rule["record"] for rule in _rules() if "record" in rule)


def _series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a reader's approximation, not a parser).

    Strings, label matchers, ranges and grouping label lists are removed first; what is
    left and is not a function, aggregation or keyword is a metric name.
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\s*(\()?", expr):
        if match.group(2) is None and match.group(1) not in _KEYWORDS:
            names.add(match.group(1))
    return names


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


# --- promtool ---------------------------------------------------------------------------


def test_promtool_check_config_accepts_the_scrape_config_and_its_rule_files() -> None:
    done = _run_promtool("check", "config", CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    done = _run_promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = _run_promtool("test", "rules", RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests compare values: a changed expected service level must fail them.
    for rules in RULE_FILES:
        shutil.copy(rules, tmp_path / rules.name)
    text = RULES_TEST.read_text()
    assert "value: 0.5\n" in text
    broken = tmp_path / RULES_TEST.name
    broken.write_text(text.replace("value: 0.5\n", "value: 0.6\n", 1))
    done = _run_promtool("test", "rules", broken)
    assert done.returncode != 0
    assert "acd_service_level_60s" in done.stdout + done.stderr


# --- names ------------------------------------------------------------------------------


def test_the_name_reader_finds_series_and_skips_functions_and_labels() -> None:
    expr = (
        'sum by (queue) (rate(acd_wait_seconds_bucket{outcome="answered", le=~"60"}[1h]))'
        " / on (queue) queue:x:rate1h and bogus_metric > 0"
    )
    assert _series_names(expr) == {"acd_wait_seconds_bucket", "queue:x:rate1h", "bogus_metric"}


def test_the_issue_names_the_recording_rules_that_exist() -> None:
    assert {
        "queue:acd_service_level_20s:ratio_rate1h",
        "queue:acd_service_level_60s:ratio_rate1h",
        "queue:acd_service_level_120s:ratio_rate1h",
        "queue:acd_answer_rate:ratio_rate1h",
        "queue:acd_abandon_rate:ratio_rate1h",
        "queue:acd_asa_seconds:rate1h",
    } <= _recorded()
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert {
        "AcdServiceLevelLow",
        "AcdCallersWaitingNoAgents",
        "AcdAmiDisconnected",
        "AcdCallbacksOverdue",
    } <= alerts


def test_every_rule_uses_only_exported_series_and_earlier_rules() -> None:
    exported = _exported_series() | _SCRAPE_SERIES
    recorded: set[str] = set()
    for rule in _rules():
        names = _series_names(rule["expr"])
        assert names, rule
        assert names <= exported | recorded, (rule.get("record") or rule["alert"], names)
        if "record" in rule:
            recorded.add(rule["record"])


def test_service_level_thresholds_are_wait_buckets() -> None:
    # A histogram can only say "answered within T" for a T that is one of its buckets.
    thresholds = {
        float(m.group(1))
        for rule in _rules()
        if (m := re.search(r"acd_service_level_(\d+)s", rule.get("record", "")))
    }
    assert thresholds
    assert thresholds <= set(WAIT_BUCKETS)
    for rule in _rules():
        if m := re.search(r"acd_service_level_(\d+)s", rule.get("record", "")):
            assert f'le=~"{m.group(1)}(\\\\.0)?"' in rule["expr"], rule


# --- Grafana ----------------------------------------------------------------------------


def test_dashboard_has_a_queue_selector_used_by_the_queue_panels() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    queue = variables["queue"]
    assert queue["type"] == "query"
    assert queue["multi"]
    assert queue["includeAll"]
    assert queue["definition"] == "label_values(acd_callers_waiting, queue)"
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        if "queue" in expr or any(n.startswith("queue:") for n in _series_names(expr)):
            assert 'queue=~"$queue"' in expr, expr


def test_every_dashboard_expression_uses_only_existing_series() -> None:
    known = _exported_series() | _SCRAPE_SERIES | _recorded()
    used: set[str] = set()
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            names = _series_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, (panel["title"], names - known)
            used |= names
    # The dashboard shows the recording rules, not only raw series.
    assert {n for n in used if n.startswith("queue:")} >= {
        "queue:acd_service_level_60s:ratio_rate1h",
        "queue:acd_answer_rate:ratio_rate1h",
        "queue:acd_abandon_rate:ratio_rate1h",
        "queue:acd_asa_seconds:rate1h",
    }


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    datasources = _yaml(DATASOURCES)
    assert datasources["apiVersion"] == 1
    uids = {d["uid"] for d in datasources["datasources"] if d["type"] == "prometheus"}
    dashboard = _dashboard()
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    assert dashboard["templating"]["list"][0]["datasource"]["uid"] in uids


def test_dashboard_provisioning_is_a_file_provider() -> None:
    providers = _yaml(DASHBOARD_PROVIDERS)
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    # Provisioning format: the dashboard model itself, no "dashboard" wrapper, fixed uid.
    dashboard = _dashboard()
    assert "dashboard" not in dashboard
    assert dashboard["uid"] == "firstline-desk"
