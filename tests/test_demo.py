"""`make demo` keeps working: the real daemon, a real registry, the expected verdicts."""

from __future__ import annotations

import subprocess
import sys

from watcher.testing.registry_server import find_registry_binary


def test_demo_prints_the_expected_verdicts() -> None:
    import os

    import pytest

    if find_registry_binary() is None:
        message = "REAL REGISTRY TESTS NOT RUN: docker-registry is not installed"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + " (CI=true)", pytrace=False)
        pytest.skip(message)
    proc = subprocess.run(
        [sys.executable, "-m", "watcher.testing.demo"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdicts = {
        line.split()[0]: line.split()[1]
        for line in proc.stdout.splitlines()
        if line.startswith("acme/")
    }
    assert verdicts == {
        "acme/shop-api:v1": "verified",
        "acme/shop-web:v1": "verified",
        "acme/shop-worker:v1": "unexpected_signer",
        "acme/shop-cron:v1": "unsigned",
        "acme/shop-batch:v1": "verified",
    }
