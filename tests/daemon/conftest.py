"""A running daemon wired to a real docker-registry whose notifications point at it."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import RegistryProcess, RegistryUnavailable, free_port, start_registry
from watcher.config import load_config
from watcher.daemon.app import Daemon
from watcher.refs import Digest
from watcher.registry.client import RegistryClient
from watcher.store.base import DigestRecord
from watcher.testing.registry_server import notifications as registry_notifications
from watcher.testing.sigstore_kit import SigstoreKit

GH = "https://token.actions.githubusercontent.com"
ALICE = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
MALLORY = "https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main"
SECRET = "webhook-s3cret-" + secrets.token_hex(8)


def daemon_config(
    tmp: Path,
    registry_url: str,
    host: str,
    port: int,
    trusted_root: Path,
    alert_url: str = "http://127.0.0.1:9",
    **registry: Any,
) -> Path:
    """A config for the daemon under test: one registry, a strict and a graceful policy."""
    (tmp / "webhook.secret").write_text(SECRET)
    acme = {"issuer": GH, "subjectRegExp": r"^https://github\.com/acme/"}
    reg: dict[str, Any] = {
        "name": "local",
        "url": registry_url,
        "repositories": ["d/**"],
        "webhook": {"kind": "distribution", "secret_file": str(tmp / "webhook.secret")},
    }
    reg.update(registry)
    doc = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "store": {"url": f"sqlite:///{tmp}/watcher.db"},
        "trust": {"trusted_root": str(trusted_root)},
        "registries": [reg],
        "policies": [
            {
                "name": "release",
                "images": [{"glob": f"{host}/d/app*"}, {"glob": f"{host}/d/multi*"}],
                "authorities": [{"name": "gha", "keyless": {"identities": [acme]}}],
            },
            {
                "name": "late",
                "images": [{"glob": f"{host}/d/late*"}],
                "grace_period": "4s",
                "authorities": [{"name": "gha", "keyless": {"identities": [acme]}}],
            },
        ],
        "alerts": [{"name": "am", "alertmanager": {"url": alert_url}}],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Running:
    """The daemon, the registry notifying it, a client to push with, and the signing kit."""

    daemon: Daemon
    registry: RegistryProcess
    client: RegistryClient
    kit: SigstoreKit
    config_path: Path

    @property
    def host(self) -> str:
        return self.client.host

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    def repo(self, name: str) -> str:
        return f"d/{name}-{secrets.token_hex(3)}"

    async def record(self, repo: str, digest: str) -> DigestRecord | None:
        assert self.daemon.store is not None
        return await self.daemon.store.digest("local", repo, Digest(digest))

    async def final(
        self, repo: str, digest: str, timeout: float = 20.0, want: str | None = None
    ) -> DigestRecord:
        """Poll the store (with a deadline) until the digest has a (given) final verdict."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        record = None
        while loop.time() < deadline:
            record = await self.record(repo, digest)
            if (
                record is not None
                and record.final_verdict is not None
                and (want is None or record.final_verdict == want)
            ):
                return record
            await asyncio.sleep(0.05)  # poll interval inside the deadline loop
        raise AssertionError(f"no final verdict {want or ''} for {repo}@{digest}: {record}")

    async def until(self, check: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll an async condition until it returns something truthy, with a deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)  # poll interval inside the deadline loop
        raise AssertionError(f"condition not met within {timeout}s")


def notifications(port: int) -> dict[str, Any]:
    """The test registry's notifications, pointed at the daemon under test."""
    return registry_notifications(f"http://127.0.0.1:{port}/webhooks/local", SECRET)


async def start_running(
    tmp_path: Path,
    kit: SigstoreKit,
    trusted_root: Path,
    *,
    notify: bool = True,
    alert_url: str = "http://127.0.0.1:9",
    **registry: Any,
) -> Running:
    port = free_port()
    try:
        reg = start_registry(tmp_path / "registry", notifications(port) if notify else None)
    except RegistryUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"REAL REGISTRY TESTS NOT RUN: {exc} (CI=true)", pytrace=False)
        pytest.skip(f"REAL REGISTRY TESTS NOT RUN: {exc}")
    client = RegistryClient("pusher", reg.url)
    await client.__aenter__()
    cfg_path = daemon_config(
        tmp_path, reg.url, client.host, port, trusted_root, alert_url, **registry
    )
    daemon = Daemon(
        cfg_path,
        load_config(cfg_path),
        workers=2,
        backoff_base=0.2,
        settle=timedelta(seconds=0.3),
        error_attempts=2,
    )
    await daemon.start()
    return Running(daemon, reg, client, kit, cfg_path)


async def stop_running(running: Running) -> None:
    await running.daemon.stop(drain_timeout=5)
    await running.client.close()
    running.registry.stop()


@pytest.fixture
async def running(
    tmp_path: Path, kit: SigstoreKit, trusted_root_path: Path
) -> AsyncIterator[Running]:
    r = await start_running(tmp_path, kit, trusted_root_path)
    try:
        yield r
    finally:
        await stop_running(r)
