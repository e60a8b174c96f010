"""Prometheus alert rules and the Alertmanager example, checked by the real tools.

- ``promtool check rules`` and ``promtool test rules`` (rules_test.yaml proves each alert
  fires on the series it is about and stays quiet on its neighbours); mutated copies of the
  rules must fail those unit tests, so the tests are known to discriminate.
- Every metric, label and label value the rules use is one ``watcher.metrics.Metrics``
  exposes and the contract names.
- ``amtool check-config``, ``amtool config routes test`` for the routing, and a real
  Alertmanager (receivers stripped: nothing leaves the machine) for the inhibition.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    REPO,
    RULES,
    SYNTHETIC_SERIES,
    TARGET_LABELS,
    exposed_metrics,
    free_port,
    load_rules,
    require,
    rule_expressions,
    selectors,
)
from watcher.verdicts import Verdict

RULES_TEST = RULES.parent / "rules_test.yaml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
DEPLOY_README = REPO / "deploy" / "README.md"

# The contract's closed label vocabularies (docs/CONTRACT.md, Metrics).
LABEL_VALUES = {
    "verdict": {v.value for v in Verdict},
    "outcome": {"sent", "failed", "deduplicated"},
    "source": {"webhook", "poll", "scan"},
}


def _alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules() for r in g["rules"] if "alert" in r]


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- promtool -------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = require("promtool")
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require("promtool")
    result = _run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


MUTATIONS = [
    pytest.param('verdict="unsigned"', 'verdict="verified"', id="unsigned-rule-watches-verified"),
    pytest.param("< 0.9", "< 0.4", id="coverage-threshold-lowered"),
    pytest.param(
        'unless watcher_verdicts_total{verdict="unexpected_signer"} offset 10m',
        'unless watcher_verdicts_total{verdict="unexpected_signer"}',
        id="new-series-clause-broken",
    ),
    pytest.param("for: 1h", "for: 1m", id="pending-stuck-too-eager"),
    pytest.param('{code=~"5..|error"}', '{code=~"5.."}', id="registry-errors-ignore-no-answer"),
    pytest.param("> 900", "> 9000", id="poll-stale-threshold"),
    pytest.param('absent(up{job="registry-watcher"})', 'absent(up{job="other"})', id="absent"),
]


@pytest.mark.parametrize(("old", "new"), MUTATIONS)
def test_unit_tests_catch_broken_rules(tmp_path: Path, old: str, new: str) -> None:
    """A rule changed for the worse fails rules_test.yaml: the tests can tell."""
    promtool = require("promtool")
    text = RULES.read_text(encoding="utf-8")
    assert old in text, f"mutation target {old!r} is gone from rules.yaml: update this test"
    (tmp_path / "rules.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = _run([promtool, "test", "rules", RULES_TEST.name], cwd=tmp_path)
    assert result.returncode != 0, f"rules_test.yaml still passes with {old!r} -> {new!r}"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yaml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in _alerts()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    assert (fires | quiet) - names == set(), "tests of alerts that do not exist"


# --- what the rules say ---------------------------------------------------------------------


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_rules_are_well_formed() -> None:
    groups = load_rules()
    assert [g["name"] for g in groups] == ["registry-watcher"]
    alerts = _alerts()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    readme = DEPLOY_README.read_text(encoding="utf-8")
    anchors = {
        _github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", readme, re.MULTILINE)
    }
    for rule in alerts:
        name = rule["alert"]
        assert re.fullmatch(r"RegistryWatcher[A-Z]\w+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("/deploy/README.md"), f"{name}: runbook {url} is not deploy/README"
        assert anchor in anchors, f"{name}: deploy/README.md has no heading for #{anchor}"
        assert anchor == name.lower(), f"{name}: runbook anchor should be #{name.lower()}"


def test_rules_use_only_exposed_metrics_and_labels() -> None:
    """Every selected series, matcher and grouping label exists in Metrics()."""
    exposed = exposed_metrics()
    known = {**exposed, **SYNTHETIC_SERIES}
    for source, expr in rule_expressions():
        scan = selectors(expr)
        assert scan.selectors, f"{source}: selects nothing"
        labels: set[str] = set(TARGET_LABELS)
        for sel in scan.selectors:
            assert sel.name in known, f"{source}: {sel.name} is not exposed by Metrics()"
            labels |= known[sel.name]
            for label, _op, _value in sel.matchers:
                assert label in known[sel.name] | TARGET_LABELS, (
                    f"{source}: {sel.name} has no label {label}"
                )
        assert scan.grouping_labels <= labels, f"{source}: groups by unknown labels"


def _values_of(op: str, value: str) -> set[str]:
    """The literal values a matcher stands for (a plain alternation for =~)."""
    if op in ("=", "!="):
        return {value}
    if re.fullmatch(r"[\w|]+", value):
        return set(value.split("|"))
    return set()


def test_rules_use_contract_label_values() -> None:
    for source, expr in rule_expressions():
        for sel in selectors(expr).selectors:
            for label, op, value in sel.matchers:
                if label in LABEL_VALUES:
                    unknown = _values_of(op, value) - LABEL_VALUES[label]
                    assert not unknown, f"{source}: {label} has no values {unknown}"


def test_every_failing_verdict_and_error_has_a_rule() -> None:
    alerted = set()
    for _source, expr in rule_expressions():
        for sel in selectors(expr).selectors:
            if sel.name == "watcher_verdicts_total":
                alerted |= {v for label, op, v in sel.matchers if label == "verdict" and op == "="}
    failing = {v.value for v in Verdict if v.failing} | {Verdict.ERROR.value}
    assert alerted == failing


def test_the_watcher_job_name_is_the_service_name() -> None:
    """Rules select job="registry-watcher": the Service (ServiceMonitor's job) has that name."""
    service = yaml.safe_load((REPO / "deploy/kubernetes/service.yaml").read_text())
    jobs = set()
    for _source, expr in rule_expressions():
        for sel in selectors(expr).selectors:
            jobs |= {v for label, op, v in sel.matchers if label == "job" and op == "="}
    assert jobs == {service["metadata"]["name"]}


# --- Alertmanager ---------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    amtool = require("amtool")
    result = _run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        pytest.param(
            {"alertname": "ImageUnsigned", "severity": "critical", "digest": "sha256:aa"},
            "pager,chat",
            id="critical-pages-and-chats",
        ),
        pytest.param(
            {"alertname": "RegistryWatcherDown", "severity": "critical"},
            "pager,chat",
            id="watcher-down-pages",
        ),
        pytest.param(
            {"alertname": "ImageUnsigned", "severity": "warning", "digest": "sha256:aa"},
            "chat",
            id="warning-chats",
        ),
        pytest.param(
            {"alertname": "RegistryWatcherSigningCoverageLow", "severity": "warning"},
            "chat",
            id="coverage-chats",
        ),
    ],
)
def test_alertmanager_routes_by_severity(labels: dict[str, str], receivers: str) -> None:
    amtool = require("amtool")
    args = [f"{k}={v}" for k, v in labels.items()]
    result = _run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_groups_and_inhibits_as_documented() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    assert config["route"]["group_by"] == ["alertname", "registry", "repository"]
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity = "critical"', 'digest =~ ".+"']
    assert inhibit["target_matchers"] == ['severity = "warning"']
    assert "digest" in inhibit["equal"]
    # Every severity the rules use has a route.
    routed = {m for r in config["route"]["routes"] for m in r["matchers"]}
    for severity in {r["labels"]["severity"] for r in _alerts()}:
        assert any(severity in m for m in routed), severity


def _post_json(url: str, body: Any) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_alertmanager_inhibits_warning_for_the_same_digest(tmp_path: Path) -> None:
    """A real Alertmanager with this config: a critical alert for a digest mutes a warning for
    the same digest, not for another digest, and a digest-less critical mutes nothing."""
    binary = require("prometheus-alertmanager")
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    # Receivers without integrations: the routing and inhibition are the file's, and no
    # notification can leave this machine.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    config["route"]["group_wait"] = "0s"
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "alertmanager.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                _get_json(f"{url}/api/v2/status")
                break
            except OSError:
                assert time.monotonic() < deadline, "alertmanager did not start"
                time.sleep(0.1)  # poll interval; the deadline above bounds the wait
        common = {"registry": "local", "repository": "acme/app", "policy": "acme-release"}
        alerts = [
            {"alertname": "ImageUnsigned", "severity": "critical", "digest": "sha256:aa"},
            {"alertname": "ImageExtraSigner", "severity": "warning", "digest": "sha256:aa"},
            {"alertname": "ImageExtraSigner", "severity": "warning", "digest": "sha256:bb"},
            {"alertname": "RegistryWatcherDown", "severity": "critical", "job": "x"},
            {"alertname": "RegistryWatcherSigningCoverageLow", "severity": "warning"},
        ]
        _post_json(f"{url}/api/v2/alerts", [{"labels": {**common, **a}} for a in alerts])
        expected = {
            ("ImageUnsigned", "sha256:aa"): "active",
            ("ImageExtraSigner", "sha256:aa"): "suppressed",
            ("ImageExtraSigner", "sha256:bb"): "active",
            ("RegistryWatcherDown", None): "active",
            ("RegistryWatcherSigningCoverageLow", None): "active",
        }
        deadline = time.monotonic() + 10
        while True:
            got = {
                (a["labels"]["alertname"], a["labels"].get("digest")): a["status"]["state"]
                for a in _get_json(f"{url}/api/v2/alerts")
            }
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # poll interval; the deadline above bounds the wait
        assert got == expected
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
