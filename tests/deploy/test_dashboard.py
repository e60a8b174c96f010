"""The Grafana dashboard: valid, self-consistent, and speaking the watcher's metrics.

Static checks read the JSON: unique panel ids, a layout without overlaps, the datasource as
a variable everywhere, the registry/repository variables, and every expression's metrics,
labels and label values against ``watcher.metrics.Metrics``. The live check starts a real
Prometheus that scrapes a real ``Metrics`` registry (filled with a sample of every series)
and evaluates every expression of the dashboard and the rules (``promql.all_expressions``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import (
    DASHBOARD,
    SYNTHETIC_SERIES,
    TARGET_LABELS,
    PrometheusUnavailable,
    all_expressions,
    dashboard_expressions,
    dashboard_variables,
    exposed_metrics,
    iter_panels,
    load_dashboard,
    selectors,
    start_prometheus,
    unavailable,
)
from watcher.metrics import Metrics
from watcher.verdicts import Verdict

DS_REF = "${datasource}"
LABEL_VALUES = {
    "verdict": {v.value for v in Verdict},
    "outcome": {"sent", "failed", "deduplicated"},
    "source": {"webhook", "poll", "scan"},
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(iter_panels(dashboard["panels"]))


def test_dashboard_is_valid_json_with_identity() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["uid"] == "registry-watcher"
    assert doc["title"] == "registry-watcher"
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["id"] is None  # importable into any Grafana


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    titles = [p["title"] for p in _panels(dashboard) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "duplicate panel titles"


def test_layout_fits_the_grid_without_overlaps(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos["x"], pos["y"], pos["w"], pos["h"]))
    for i, (t1, x1, y1, w1, h1) in enumerate(boxes):
        for t2, x2, y2, w2, h2 in boxes[i + 1 :]:
            overlap = x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1
            assert not overlap, f"{t1!r} overlaps {t2!r}"


def test_datasource_is_a_variable_everywhere(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard_variables(dashboard)}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_REF}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DS_REF}, panel["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": DS_REF}, var["name"]
    assert "__inputs" not in dashboard, "use the datasource variable, not import inputs"


def test_registry_and_repository_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard_variables(dashboard)}
    for name in ("registry", "repository"):
        var = variables[name]
        assert var["type"] == "query"
        query = var["query"]["query"]
        assert re.fullmatch(rf"label_values\(\w+(\{{.*\}})?, {name}\)", query), query
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*"
    assert "$registry" in variables["repository"]["query"]["query"], "repository follows registry"
    # Every panel over registry-labelled metrics filters by the variables.
    for source, expr in _raw_expressions(dashboard):
        for sel in selectors(expr).selectors:
            labels = exposed_metrics().get(sel.name, frozenset())
            matchers = {(label, value) for label, _op, value in sel.matchers}
            if "registry" in labels and source.startswith("panel"):
                assert ("registry", "$registry") in matchers, f"{source}: no $registry filter"


def _raw_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['title']}/{target['refId']}", target["expr"]


def test_expressions_use_only_exposed_metrics_labels_and_values() -> None:
    exposed = exposed_metrics()
    known = {**exposed, **SYNTHETIC_SERIES}
    used: set[str] = set()
    for source, expr in dashboard_expressions():
        assert "$" not in expr, f"{source}: unsubstituted variable in {expr!r}"
        scan = selectors(expr)
        assert scan.selectors, f"{source}: selects nothing"
        labels: set[str] = set(TARGET_LABELS)
        for sel in scan.selectors:
            assert sel.name in known, f"{source}: {sel.name} is not exposed by Metrics()"
            used.add(sel.name)
            labels |= known[sel.name]
            for label, op, value in sel.matchers:
                assert label in known[sel.name] | TARGET_LABELS, f"{source}: no label {label}"
                if label in LABEL_VALUES and re.fullmatch(r"[\w|]+", value):
                    values = {value} if op in ("=", "!=") else set(value.split("|"))
                    assert values <= LABEL_VALUES[label], f"{source}: {label}={value}"
        assert scan.grouping_labels <= labels, f"{source}: groups by unknown labels"
    # Every metric of the contract is on the dashboard.
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    for family in Metrics().registry.collect():
        assert family.name in families, f"{family.name} is on no panel"


def test_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = [expr for _source, expr in _raw_expressions(dashboard)]
    text = "\n".join(exprs)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    verdicts = r"watcher_verdicts_total\{.*\}\[\$__rate_interval\]"
    assert has(rf"sum by \(verdict\) \(increase\({verdicts}\)\)")
    for metric in ("watcher_push_to_verdict_seconds", "watcher_push_to_signature_seconds"):
        for q in ("0.5", "0.95"):
            assert has(rf"histogram_quantile\({q}, .*{metric}_bucket"), (metric, q)
    assert has(r"histogram_quantile\(0.95, .*watcher_registry_request_duration_seconds_bucket")
    assert has(r'watcher_registry_requests_total\{[^}]*code="429"')
    assert has(r"sum by \([^)]*outcome[^)]*\) \(increase\(watcher_alerts_total")
    assert has(r"sum by \([^)]*code[^)]*\) \(rate\(watcher_webhook_requests_total")
    assert has(r"time\(\) - .*watcher_last_poll_success_timestamp_seconds")
    assert "watcher_build_info" in text and "watcher_images_by_verdict" in text
    assert "watcher_pending_digests" in text
    kinds = {
        (p["type"], p["targets"][0]["expr"].split("{")[0])
        for p in _panels(dashboard)
        if p["type"] != "row"
    }
    assert ("table", "watcher_signing_coverage_ratio") in kinds
    assert ("timeseries", "watcher_signing_coverage_ratio") in kinds


def test_all_expressions_helper_lists_rules_and_dashboard() -> None:
    exprs = all_expressions()
    sources = [s for s, _ in exprs]
    assert len(sources) == len(set(sources)), "sources must be unique"
    assert any(s.startswith("rules.yaml:") for s in sources)
    assert any(s.startswith("dashboard:") for s in sources)
    for source, expr in exprs:
        assert "$" not in expr, f"{source}: {expr}"
        assert "[1m]" in expr or "__rate_interval" not in expr


# --- live: a real Prometheus evaluates every expression -------------------------------------


def _sample_metrics() -> Metrics:
    """A Metrics registry with at least one sample of every series the expressions read."""
    m = Metrics()
    for registry in ("local", "hub"):
        for repo in ("acme/app", "acme/prod-api"):
            for source in ("webhook", "poll"):
                m.push_events.labels(registry, repo, source).inc()
            for verdict in Verdict:
                m.verdicts.labels(registry, repo, "acme-release", verdict.value).inc()
                m.images_by_verdict.labels(registry, repo, verdict.value).set(1)
            m.signing_coverage.labels(registry, repo).set(0.5)
        m.push_to_verdict.labels(registry).observe(42)
        m.push_to_signature.labels(registry).observe(7)
        m.pending_digests.labels(registry).set(1)
        m.last_poll_success.labels(registry).set(time.time())
        for code in ("200", "429", "503", "error"):
            m.registry_request(registry, "GET", code, 0.05)
        for code in ("202", "401"):
            m.webhook_requests.labels(registry, code).inc()
        m.webhook_events_ignored.labels(registry).inc()
    for outcome in ("sent", "failed", "deduplicated"):
        m.alerts.labels("am", "unsigned", outcome).inc()
    return m


def test_every_expression_evaluates_in_prometheus(tmp_path: Path) -> None:
    """Prometheus scrapes a Metrics registry over HTTP; every rule and panel expression is
    valid PromQL, and every panel and variable query returns series."""
    from prometheus_client import start_http_server

    metrics = _sample_metrics()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        target = f"127.0.0.1:{server.server_port}"
        try:
            prometheus = start_prometheus(tmp_path / "prometheus", [target])
        except PrometheusUnavailable as exc:
            unavailable(str(exc))
            return
        try:
            # Three scrapes: enough samples for rate() and increase() over 1m.
            deadline = time.monotonic() + 30
            while True:
                result = prometheus.query("count_over_time(watcher_build_info[1m])")
                values = result.get("data", {}).get("result", [])
                if values and float(values[0]["value"][1]) >= 3:
                    break
                assert time.monotonic() < deadline, prometheus.log_tail()
                time.sleep(0.5)  # poll interval; the deadline above bounds the wait
            for _ in range(3):  # a little traffic between scrapes: nonzero rates
                metrics.verdicts.labels("local", "acme/app", "acme-release", "unsigned").inc()
                metrics.registry_request("local", "GET", "429", 0.1)
                time.sleep(1)  # spread increments over scrapes (1s): the behaviour wanted
            failures = []
            for source, expr in all_expressions():
                answer = prometheus.query(expr)
                if answer.get("status") != "success":
                    failures.append(f"{source}: {answer.get('error')}\n  {expr}")
                elif source.startswith("dashboard:") and not answer["data"]["result"]:
                    failures.append(f"{source}: no series\n  {expr}")
            assert not failures, "\n".join(failures)
        finally:
            prometheus.stop()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
