"""A real Alertmanager (Debian prometheus-alertmanager) on loopback, for end-to-end tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from watcher.testing.registry_server import wait_until_ready

START_TIMEOUT = 20.0


class AlertmanagerUnavailable(RuntimeError):
    """The binary is not installed."""


def find_alertmanager() -> str | None:
    """Debian names it prometheus-alertmanager; upstream alertmanager."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@dataclass
class AlertmanagerProcess:
    """A running Alertmanager and its API."""

    url: str
    port: int
    root: Path
    process: subprocess.Popen[bytes]

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            data: list[dict[str, Any]] = json.loads(resp.read())
            return data

    def stop(self) -> None:
        """Terminate it (its state directory stays, as after a real restart)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_alertmanager(root: Path, port: int) -> AlertmanagerProcess:
    """Start Alertmanager on ``port`` with a do-nothing receiver; wait until /-/ready."""
    binary = find_alertmanager()
    if binary is None:
        raise AlertmanagerUnavailable(
            "prometheus-alertmanager not found (Debian package prometheus-alertmanager)"
        )
    root.mkdir(parents=True, exist_ok=True)
    config = root / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s"},
                "receivers": [{"name": "null"}],
            }
        )
    )
    log = (root / f"alertmanager-{time.monotonic_ns()}.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    am = AlertmanagerProcess(f"http://127.0.0.1:{port}", port, root, process)
    try:
        wait_until_ready(process, f"{am.url}/-/ready", START_TIMEOUT, "alertmanager")
    except RuntimeError:
        am.stop()
        raise
    return am
