"""Start-up: process start to ``/readyz`` answering 200.

``python -m watcher run -c FILE`` is started on a fresh state directory (so the store is
created and migrated, as on a first start) and /readyz is polled every 5 ms. Restarting on a
store that already holds 10k/100k digests is measured by the memory benchmark.

Baselines, measured in the same run: the interpreter alone (``python -c pass``) and the import
floor — a process that imports the daemon's third-party dependencies (sigstore, aiohttp,
cryptography, pydantic, prometheus_client, structlog, PyYAML) and exits. The watcher cannot
start faster than that floor without dropping or deferring those imports.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import ROOT, Lab, Section, fmt, ratio, table, write_config
from watcher.testing.registry_server import free_port

IMPORTS = (
    "import aiohttp.web, sigstore.verify, sigstore.models, cryptography.x509, pydantic, "
    "prometheus_client, structlog, yaml"
)


def _time_process(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - started


async def run(lab: Lab, *, repeat: int) -> Section:
    section = Section(
        "startup",
        "process start to /readyz",
        {"repeat": repeat, "store": "fresh (created and migrated)"},
    )
    for r in range(repeat):
        workdir = lab.dir(f"startup-{r}")
        port = free_port()
        config = write_config(
            workdir / "config.yaml",
            registry_url="http://127.0.0.1:5000",
            host="127.0.0.1:5000",
            namespace="startup",
            store=workdir / "watcher.db",
            trusted_root=lab.trusted_root,
            listen_port=port,
        )
        daemon = lab.daemon(config, port, f"startup-{r}")
        section.add("watcher_to_ready_s", "s", daemon.wait_ready())
        section.add("watcher_rss_at_ready_mib", "MiB", daemon.rss_mib())
        stopping = time.perf_counter()
        code = daemon.stop()
        section.add("watcher_sigterm_to_exit_s", "s", time.perf_counter() - stopping)
        if code != 0:
            section.problems.append(f"run {r}: the daemon exited with {code} on SIGTERM (want 0)")
        section.add("interpreter_s", "s", _time_process("pass"))
        section.add("import_floor_s", "s", _time_process(IMPORTS))
    rows = [
        ["watcher: start → /readyz 200", fmt(section.med("watcher_to_ready_s"), 3)],
        ["watcher: SIGTERM → exit 0 (idle)", fmt(section.med("watcher_sigterm_to_exit_s"), 3)],
        ["floor: import the dependencies and exit", fmt(section.med("import_floor_s"), 3)],
        ["floor: python -c pass", fmt(section.med("interpreter_s"), 3)],
    ]
    section.tables.append(table([f"median of {repeat}", "seconds"], rows))
    section.ratios = {
        "watcher start-up / import floor": ratio(
            section.med("watcher_to_ready_s"), section.med("import_floor_s")
        ),
    }
    return section
