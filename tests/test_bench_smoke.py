"""The benchmarks keep working: each runs end to end with tiny sizes, prints its figures and
writes a valid results file. Benchmarks never pass or fail on speed; only on working."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from watcher.testing.registry_server import find_registry_binary

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("throughput", "latency", "requests", "poll", "memory", "startup")
# The figures each benchmark exists to report; they must be real numbers even in a smoke run.
HEADLINES = {
    "throughput": (
        "watcher_images_per_s",
        "floor_images_per_s",
        "naive_cli_images_per_s",
        "naive_inproc_images_per_s",
    ),
    "latency": ("at_5_p50_ms", "at_5_p95_ms", "at_5_p99_ms", "isolated_verification_ms"),
    "requests": ("bundle_requests_per_digest", "legacy_requests_per_digest"),
    "poll": ("unchanged_requests", "changed_requests", "floor_seconds", "minimum_requests"),
    "memory": ("rss_mib_0", "rss_mib_200", "soak_rss_start_mib", "soak_rss_end_mib"),
    "startup": ("watcher_to_ready_s", "import_floor_s", "interpreter_s"),
}


def _need_registry() -> None:
    if find_registry_binary() is None:
        message = "REAL REGISTRY TESTS NOT RUN: docker-registry is not installed"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + " (CI=true)", pytrace=False)
        pytest.skip(message)


def _bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "results.json"
    work = tmp_path / "work"
    command = [sys.executable, "-m", "bench", *args, "--smoke"]
    proc = subprocess.run(
        [*command, "--out", str(out), "--workdir", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_benchmark_prints_figures_and_writes_valid_json(tmp_path: Path) -> None:
    _need_registry()
    proc, doc = _bench(tmp_path)
    machine = doc["machine"]
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
    assert machine["python"].count(".") == 2 and machine["platform"]
    assert set(doc["benchmarks"]) == set(NAMES)
    for name in NAMES:
        assert f"== {name}:" in proc.stdout, f"{name} printed no table"
        bench = doc["benchmarks"][name]
        assert bench["figures"], f"{name} reported no figures"
        for key, figure in bench["figures"].items():
            assert figure["unit"], (name, key)
            assert figure["runs"], (name, key)
            assert figure["median"] is None or _is_number(figure["median"]), (name, key)
        for key in HEADLINES[name]:
            figure = bench["figures"][key]
            assert _is_number(figure["median"]), (name, key, figure)
        for key, value in bench["ratios"].items():
            assert value is None or _is_number(value), (name, key)
        assert bench["problems"] == [], (name, bench["problems"])
    ratios = doc["benchmarks"]["throughput"]["ratios"]
    assert _is_number(ratios["watcher/naive (CLI loop), images/s"])
    assert _is_number(ratios["watcher/floor, images/s"])


def test_one_benchmark_runs_alone(tmp_path: Path) -> None:
    _need_registry()
    proc, doc = _bench(tmp_path, "requests")
    assert list(doc["benchmarks"]) == ["requests"]
    assert "== requests:" in proc.stdout and "== throughput:" not in proc.stdout
