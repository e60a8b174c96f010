"""What every benchmark shares: figures and tables, machine facts, and the lab it runs in.

The lab is real: a CNCF distribution registry (Debian's docker-registry) on loopback, the
project's private Sigstore kit for signing, and the watcher daemon as its own process
(`python -m watcher run`), exactly as users run it. Nothing here waits a fixed time: every wait
polls a condition against a deadline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

from watcher import __version__ as WATCHER_VERSION
from watcher.metrics import Metrics
from watcher.testing.registry_server import (
    RegistryProcess,
    RegistryUnavailable,
    find_registry_binary,
    free_port,
    start_registry,
)
from watcher.testing.registry_server import notifications as registry_notifications
from watcher.testing.sigstore_kit import SigstoreKit

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

GH = "https://token.actions.githubusercontent.com"
ACME = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SIGN = "https://sigstore.dev/cosign/sign/v1"
PROVENANCE = "https://slsa.dev/provenance/v1"


class BenchUnavailable(RuntimeError):
    """A service a benchmark needs is missing (e.g. no docker-registry binary)."""


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    """Median of the finite values; NaN when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either side is missing or b is zero."""
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b


@dataclass
class Figure:
    """One measured quantity: every run's value and their median."""

    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return median(self.runs)

    def to_json(self) -> dict[str, Any]:
        finite = [v for v in self.runs if math.isfinite(v)]
        doc: dict[str, Any] = {
            "unit": self.unit,
            "median": _num(self.median),
            "runs": [_num(v) for v in self.runs],
            "min": _num(min(finite)) if finite else None,
            "max": _num(max(finite)) if finite else None,
        }
        if self.note:
            doc["note"] = self.note
        return doc


def _num(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


@dataclass
class Section:
    """What one benchmark reports: figures (JSON), tables (stdout), notes (both)."""

    name: str
    title: str
    params: dict[str, Any]
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # wrong answers, not slowness
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def figure(self, key: str, unit: str, note: str = "") -> Figure:
        """The figure named ``key``, created on first use."""
        if key not in self.figures:
            self.figures[key] = Figure(unit, note=note)
        return self.figures[key]

    def add(self, key: str, unit: str, value: float, note: str = "") -> None:
        """Append one run's value to a figure."""
        self.figure(key, unit, note).runs.append(float(value))

    def med(self, key: str) -> float:
        """A figure's median (NaN when absent)."""
        fig = self.figures.get(key)
        return fig.median if fig is not None else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "params": self.params,
            "seconds": round(self.seconds, 3),
            "figures": {k: f.to_json() for k, f in self.figures.items()},
            "ratios": {k: _num(v) for k, v in self.ratios.items()},
            "notes": self.notes,
            "problems": self.problems,
            "details": self.details,
        }

    def render(self) -> str:
        lines = [f"== {self.name}: {self.title} ==", ""]
        for t in self.tables:
            lines.extend([t, ""])
        if self.ratios:
            width = max(len(k) for k in self.ratios)
            lines.append("ratios:")
            lines.extend(f"  {k:<{width}}  {fmt(v, 2)}" for k, v in self.ratios.items())
            lines.append("")
        for n in self.notes:
            lines.append(f"note: {n}")
        for p in self.problems:
            lines.append(f"PROBLEM: {p}")
        lines.append(f"({self.seconds:.1f} s)")
        return "\n".join(lines)


def fmt(value: float | int | None, digits: int = 1) -> str:
    """A number for a table: '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table; the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


# -- machine facts and the results file -------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _mem_total_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _fs_type(path: Path) -> str | None:
    """The filesystem type under ``path`` (SQLite's fsync cost depends on it)."""
    best, kind = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def machine_facts(workdir: Path) -> dict[str, Any]:
    """What a reader needs to compare these figures with another machine's."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    binary = find_registry_binary()
    git = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain"])
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": _cpu_model(),
        "memory_mib": _mem_total_mib(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "workdir_filesystem": _fs_type(workdir),
        "registry": _first_line([binary, "--version"]) if binary else None,
        "watcher": WATCHER_VERSION,
        "sigstore": pkg("sigstore"),
        "aiohttp": pkg("aiohttp"),
        "cryptography": pkg("cryptography"),
        "git_commit": git,
        "git_dirty": bool(dirty),
        # Other work on the machine shows in every figure; these make it visible.
        "load_average_at_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def default_results_path(now: datetime | None = None) -> Path:
    """bench/results/<UTC date and time>.json (one file per run; *.json is gitignored)."""
    moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H-%M-%SZ")
    return RESULTS_DIR / f"{moment}.json"


def write_results(
    path: Path,
    sections: Sequence[Section],
    machine: dict[str, Any],
    argv: Sequence[str],
    started: datetime,
) -> None:
    """The results document: machine facts plus every benchmark's figures."""
    doc = {
        "schema": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "argv": list(argv),
        "machine": {**machine, "load_average_at_end": _loadavg()},
        "benchmarks": {s.name: s.to_json() for s in sections},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


# -- waiting without fixed sleeps -------------------------------------------------------------


def poll_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def metrics_text(metrics: Metrics) -> str:
    """The Prometheus exposition of an in-process metrics registry."""
    return generate_latest(metrics.registry).decode()


def prometheus_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# -- processes --------------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), None where there is no /proc."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    return None


class DaemonProcess:
    """`python -m watcher run -c CONFIG` in its own process, as users run it."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.started = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self.log_path.open("ab") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "watcher", "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=ROOT,
            )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start until /readyz answered 200."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"watcher exited with {self.process.returncode} before it was ready; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            return http_get(self.base + "/readyz", timeout=1.0)[0] == 200

        poll_until(ready, timeout, "the watcher's /readyz", interval=0.005)
        return time.perf_counter() - self.started

    def metrics(self) -> str:
        status, body = http_get(self.base + "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()

    def rss_mib(self) -> float:
        kib = proc_status_kib(self.pid, "VmRSS")
        return kib / 1024 if kib is not None else math.nan

    def peak_rss_mib(self) -> float:
        kib = proc_status_kib(self.pid, "VmHWM")
        return kib / 1024 if kib is not None else math.nan

    def cpu_seconds(self) -> float:
        value = proc_cpu_seconds(self.pid)
        return value if value is not None else math.nan

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the clean drain; SIGKILL if it does not come."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


# -- configuration ----------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    registry_url: str,
    host: str,
    namespace: str,
    store: Path,
    trusted_root: Path,
    listen_port: int | None = None,
    webhook_secret_file: Path | None = None,
    poll_interval: str | None = None,
    max_concurrency: int | None = None,
) -> Path:
    """A watcher config for one benchmark: one registry, one keyless policy on ``namespace``."""
    registry: dict[str, Any] = {
        "name": "bench",
        "url": registry_url,
        "repositories": [f"{namespace}/**"],
    }
    if webhook_secret_file is not None:
        registry["webhook"] = {"kind": "distribution", "secret_file": str(webhook_secret_file)}
    if poll_interval is not None:
        registry["poll_interval"] = poll_interval
    if max_concurrency is not None:
        registry["max_concurrency"] = max_concurrency
    doc: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{listen_port or free_port()}"},
        "store": {"url": f"sqlite:///{store}"},
        "trust": {"trusted_root": str(trusted_root)},
        "registries": [registry],
        "policies": [
            {
                "name": "bench-release",
                "images": [{"glob": f"{host}/{namespace}/**"}],
                "authorities": [
                    {
                        "name": "acme-release",
                        "keyless": {
                            "identities": [
                                {"issuer": GH, "subjectRegExp": r"^https://github\.com/acme/"}
                            ]
                        },
                    }
                ],
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def notifications(daemon_port: int, secret: str) -> dict[str, Any]:
    """The registry notifications config that points at a daemon (as tests/daemon does)."""
    return registry_notifications(f"http://127.0.0.1:{daemon_port}/webhooks/bench", secret)


# -- the lab ----------------------------------------------------------------------------------


class Lab:
    """A working directory, one private Sigstore, registries and daemons, all cleaned up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._kit: SigstoreKit | None = None
        self._trusted_root: Path | None = None
        self._registry: RegistryProcess | None = None
        self._extra: list[RegistryProcess] = []
        self._daemons: list[DaemonProcess] = []

    @property
    def kit(self) -> SigstoreKit:
        if self._kit is None:
            self._kit = SigstoreKit.create()
        return self._kit

    @property
    def trusted_root(self) -> Path:
        if self._trusted_root is None:
            self._trusted_root = self.kit.write_trusted_root(self.workdir / "trusted_root.json")
        return self._trusted_root

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def registry(self) -> RegistryProcess:
        """The plain registry (no notifications) every benchmark pushes its population to."""
        if self._registry is None:
            try:
                self._registry = start_registry(self.dir("registry"))
            except RegistryUnavailable as exc:
                raise BenchUnavailable(str(exc)) from None
        return self._registry

    def notifying_registry(self, daemon_port: int, secret: str) -> RegistryProcess:
        """A second registry process on the plain one's storage, notifying a daemon.

        Material pushed through the plain registry is visible here at once (same files) but
        causes no webhook, so a benchmark can upload blobs and signatures beforehand and then
        make, at a measured rate, only the pushes it means the daemon to see.
        """
        plain = self.registry()
        storage = {"storage": {"filesystem": {"rootdirectory": str(plain.root / "data")}}}
        extra = {**notifications(daemon_port, secret), **storage}
        try:
            reg = start_registry(self.dir(f"notifying-{daemon_port}"), extra)
        except RegistryUnavailable as exc:
            raise BenchUnavailable(str(exc)) from None
        self._extra.append(reg)
        return reg

    def daemon(self, config_path: Path, port: int, name: str) -> DaemonProcess:
        """Start a watcher daemon process (stopped by close() if the caller does not)."""
        daemon = DaemonProcess(config_path, port, self.dir("logs") / f"{name}.log")
        daemon.start()
        self._daemons.append(daemon)
        return daemon

    def webhook_secret(self) -> tuple[str, Path]:
        secret = "bench-" + secrets.token_hex(12)
        path = self.workdir / f"webhook-{secrets.token_hex(4)}.secret"
        path.write_text(secret)
        return secret, path

    def close(self) -> None:
        for daemon in self._daemons:
            with contextlib.suppress(Exception):
                daemon.stop()
        for reg in self._extra:
            with contextlib.suppress(Exception):
                reg.stop()
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.stop()

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_id() -> str:
    """A short id that keeps repository names of one run apart from another's."""
    return secrets.token_hex(3)
