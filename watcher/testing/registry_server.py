"""A throwaway CNCF distribution (docker-registry) for tests and the demo.

Tests talk to the real thing wherever it exists, because fakes encode our assumptions and
the registry's quirks (Accept-dependent 404s, relative Link headers, no referrers API) are
exactly what the client must survive. Each registry gets its own port, storage directory and
config, so tests can start extra ones (with notifications or htpasswd auth) beside the
shared session instance.

Startup waits by polling ``GET /v2/`` against a deadline; nothing here sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEBIAN_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0


class RegistryUnavailable(RuntimeError):
    """The registry binary is missing; fixtures turn this into skip (or fail under CI)."""


@dataclass
class RegistryProcess:
    """A running registry: its URL, files, and the process to stop."""

    url: str
    port: int
    root: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as image references name it."""
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the registry's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the registry (SIGTERM, then SIGKILL if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def find_registry_binary() -> str | None:
    """The distribution binary: Debian's ``docker-registry``, or ``registry`` on PATH."""
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    return shutil.which("docker-registry") or shutil.which("registry")


def free_port() -> int:
    """A port that was free a moment ago (start_registry retries if someone takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``, merging nested mappings (used for config overrides)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def registry_config(root: Path, port: int, extra_config: dict[str, Any] | None) -> dict[str, Any]:
    """An anonymous, filesystem-backed config with deletes enabled, plus ``extra_config``."""
    base: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry-test"}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            # A fixed secret silences the "generating a random secret" warning.
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    return deep_merge(base, extra_config or {})


def start_registry(
    tmp_path: Path,
    extra_config: dict[str, Any] | None = None,
    *,
    timeout: float = START_TIMEOUT,
    attempts: int = 3,
    port: int | None = None,
) -> RegistryProcess:
    """Start ``docker-registry serve`` in ``tmp_path`` and wait until ``/v2/`` answers.

    ``extra_config`` is deep-merged into the config (e.g. ``{"auth": {"htpasswd": ...}}`` or
    ``{"notifications": ...}``); a registry that requires auth counts as up on a 401.
    Raises RegistryUnavailable when no binary is installed, RuntimeError if it will not start.
    """
    binary = find_registry_binary()
    if binary is None:
        raise RegistryUnavailable(
            "no distribution registry binary (install the Debian package docker-registry, "
            "or put `registry` on PATH)"
        )
    last_error = ""
    fixed = port
    for _ in range(attempts if fixed is None else 1):
        port = fixed or free_port()
        root = tmp_path / f"registry-{port}"
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "config.yml"
        config_path.write_text(yaml.safe_dump(registry_config(root, port, extra_config)))
        log_path = root / "registry.log"
        # REGISTRY_* variables override the config file; keep the caller's out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [binary, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        registry = RegistryProcess(
            f"http://127.0.0.1:{port}", port, root, config_path, log_path, process
        )
        try:
            _wait_until_up(registry, timeout)
            return registry
        except RuntimeError as exc:
            registry.stop()
            last_error = str(exc)
            if "address already in use" not in registry.log_tail().lower():
                break
    raise RuntimeError(last_error)


def wait_until_ready(
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    what: str,
    *,
    ready: tuple[int, ...] = (200,),
    log_tail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``url`` until it answers one of ``ready`` (a deadline, no fixed waits).

    Raises RuntimeError with the service's log tail if the process exits or the deadline
    passes; shared by the registry, Prometheus and Alertmanager the tests start.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} during startup:\n{log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status in ready:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ready:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout}s:\n{log_tail()}")
        # Polling back-off against the deadline above, not a fixed wait.
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _wait_until_up(registry: RegistryProcess, timeout: float) -> None:
    # A registry that requires auth is up when it answers 401.
    wait_until_ready(
        registry.process,
        registry.url + "/v2/",
        timeout,
        "registry",
        ready=(200, 401),
        log_tail=registry.log_tail,
    )


@contextlib.contextmanager
def running_registry(
    tmp_path: Path, extra_config: dict[str, Any] | None = None
) -> Iterator[RegistryProcess]:
    """``with running_registry(tmp) as reg:`` for a test that needs its own registry."""
    registry = start_registry(tmp_path, extra_config)
    try:
        yield registry
    finally:
        registry.stop()


def notifications(url: str, token: str, *, name: str = "watcher") -> dict[str, Any]:
    """distribution's ``notifications`` config block pointing at a watcher's webhook.

    Short timeout and backoff so tests and the demo see redeliveries quickly; blob pushes
    and pulls are filtered at the source, as a production config would.
    """
    return {
        "notifications": {
            "events": {"includereferences": True},
            "endpoints": [
                {
                    "name": name,
                    "url": url,
                    "headers": {"Authorization": [f"Bearer {token}"]},
                    "timeout": "2s",
                    "threshold": 3,
                    "backoff": "1s",
                    "ignore": {"mediatypes": ["application/octet-stream"], "actions": ["pull"]},
                }
            ],
        }
    }
