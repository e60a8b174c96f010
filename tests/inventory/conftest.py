"""A registry of its own per test (so catalog listings and request counts are exact), a
config over it, the private Sigstore to sign with, and, where a test needs webhooks, a
running daemon the registry notifies. Nothing here is mocked: real docker-registry, real
verifier, real store."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.services import RegistryProcess, RegistryUnavailable, free_port, start_registry
from watcher import cli
from watcher.config import load_config
from watcher.daemon.app import Daemon
from watcher.metrics import Metrics
from watcher.registry.client import RegistryClient
from watcher.testing import oci
from watcher.testing.registry_server import notifications
from watcher.testing.sigstore_kit import SigstoreKit

GH = "https://token.actions.githubusercontent.com"
ALICE = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
BOB = "https://github.com/acme/app/.github/workflows/nightly.yml@refs/heads/main"
MALLORY = "https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main"
PROVENANCE = "https://slsa.dev/provenance/v1"
SIGN = "https://sigstore.dev/cosign/sign/v1"
TOKEN_ENV = "INVENTORY_TEST_API_TOKEN"
# Fulcio v2 claims as GitHub Actions certificates carry them (build signer, source repo, run).
CLAIMS = {
    "1.3.6.1.4.1.57264.1.9": ALICE,
    "1.3.6.1.4.1.57264.1.12": "https://github.com/acme/app",
    "1.3.6.1.4.1.57264.1.21": "https://github.com/acme/app/actions/runs/42/attempts/1",
}


def _skip_or_fail(exc: Exception) -> None:
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"REAL REGISTRY TESTS NOT RUN: {exc} (CI=true)", pytrace=False)
    pytest.skip(f"REAL REGISTRY TESTS NOT RUN: {exc}")


@dataclass
class World:
    """A registry, a pusher client, the signing kit, a release key and the config file."""

    registry: RegistryProcess
    client: RegistryClient
    kit: SigstoreKit
    tmp: Path
    config_path: Path
    release_key: ec.EllipticCurvePrivateKey
    suffix: str

    @property
    def host(self) -> str:
        return self.client.host

    @property
    def db(self) -> Path:
        return self.tmp / "watcher.db"

    def repo(self, kind: str) -> str:
        """``inv/<kind>-<suffix>``: kind picks the policy (app, prod, late, free)."""
        return f"inv/{kind}-{self.suffix}"

    async def push(self, repo: str, tag: str) -> oci.ImageInfo:
        return await oci.push_image(self.client, repo, tag)

    async def retag(self, repo: str, image: oci.ImageInfo, tag: str) -> None:
        """Point another tag at an existing manifest (a tag move when the tag exists)."""
        manifest = await self.client.get_manifest(repo, image.digest)
        await self.client.put_manifest(repo, tag, manifest.raw, manifest.media_type)

    async def sign_legacy(
        self, repo: str, image: oci.ImageInfo, who: str = ALICE, **kw: Any
    ) -> None:
        layer = self.kit.sign_legacy(f"{self.host}/{repo}", image.digest, who, GH, **kw)
        await oci.attach_legacy(self.client, repo, image.digest, [layer], "sig")

    async def sign_bundle(self, repo: str, image: oci.ImageInfo, who: str = ALICE) -> None:
        raw = self.kit.sign_bundle(image.digest, who, GH)
        await oci.attach_referrer(self.client, repo, image, raw, SIGN)

    async def sign_key(self, repo: str, image: oci.ImageInfo) -> None:
        layer = self.kit.sign_legacy_with_key(self.release_key, f"{self.host}/{repo}", image.digest)
        await oci.attach_legacy(self.client, repo, image.digest, [layer], "sig")

    async def attest(self, repo: str, image: oci.ImageInfo, who: str = ALICE) -> None:
        raw = self.kit.attest_bundle(f"{self.host}/{repo}", image.digest, PROVENANCE, {}, who, GH)
        await oci.attach_referrer(self.client, repo, image, raw, PROVENANCE)

    async def all_tags(self, *repos: str) -> int:
        """How many tags the registry lists in these repositories (signature tags included)."""
        return sum([len(await self.client.list_tags(r)) for r in repos])

    async def scan(
        self,
        capsys: pytest.CaptureFixture[str],
        *globs: str,
        metrics: Metrics | None = None,
        **kw: Any,
    ) -> tuple[int, dict[str, Any], str]:
        """The CLI's scan path in-process: (exit code, JSON document, stderr)."""
        config = load_config(self.config_path)
        code = await cli.scan_command(
            config, list(globs), output="json", metrics=metrics, **{"tty": False, **kw}
        )
        captured = capsys.readouterr()
        return code, json.loads(captured.out), captured.err

    async def trace(
        self, capsys: pytest.CaptureFixture[str], target: str, output: str = "json"
    ) -> tuple[int, Any, str]:
        config = load_config(self.config_path)
        code = await cli.trace_command(config, target, output)
        captured = capsys.readouterr()
        out: Any = captured.out
        if output == "json" and code == 0:
            out = json.loads(captured.out)
        return code, out, captured.err

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the store directly (read-only), as an auditor would."""
        conn = sqlite3.connect(self.db.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            return [tuple(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()


def requests_by_method(metrics: Metrics) -> Counter[str]:
    """watcher_registry_requests_total summed per HTTP method."""
    counts: Counter[str] = Counter()
    for metric in metrics.registry_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["method"]] += int(sample.value)
    return counts


def write_config(
    world_tmp: Path,
    registry_url: str,
    host: str,
    trusted_root: Path,
    release_pub: bytes,
    *,
    listen_port: int | None = None,
    webhook_secret: Path | None = None,
) -> Path:
    """Policies by repository kind: app and drift (release), prod (release + provenance),
    late (release with a 2 s grace period); free matches no policy."""
    (world_tmp / "keys").mkdir(exist_ok=True)
    server: dict[str, Any] = {"listen": f"127.0.0.1:{listen_port or free_port()}"}
    if webhook_secret is not None:
        server["api_token_env"] = TOKEN_ENV
    (world_tmp / "keys" / "release.pub").write_bytes(release_pub)
    acme = {"issuer": GH, "subjectRegExp": r"^https://github\.com/acme/"}
    release_authorities = [
        {"name": "github-actions", "keyless": {"identities": [acme]}},
        {"name": "release-key", "key": {"path": "keys/release.pub"}},
    ]
    registry: dict[str, Any] = {"name": "local", "url": registry_url, "repositories": ["inv/**"]}
    if webhook_secret is not None:
        registry["webhook"] = {"kind": "distribution", "secret_file": str(webhook_secret)}
    doc: dict[str, Any] = {
        "server": server,
        "store": {"url": f"sqlite:///{world_tmp}/watcher.db"},
        "trust": {"trusted_root": str(trusted_root)},
        "registries": [registry],
        "policies": [
            {
                "name": "release",
                "images": [
                    {"glob": f"{host}/inv/app-*"},
                    {"glob": f"{host}/inv/prod-*"},
                    {"glob": f"{host}/inv/drift-*"},
                ],
                "authorities": release_authorities,
            },
            {
                "name": "provenance",
                "images": [{"glob": f"{host}/inv/prod-*"}],
                "authorities": [
                    {
                        "name": "gha-provenance",
                        "keyless": {"identities": [acme]},
                        "attestations": [{"name": "slsa", "predicateType": PROVENANCE}],
                    }
                ],
            },
            {
                "name": "late",
                "images": [{"glob": f"{host}/inv/late-*"}],
                "grace_period": "2s",
                "authorities": release_authorities,
            },
        ],
        "alerts": [{"name": "am", "alertmanager": {"url": "http://127.0.0.1:9"}}],
    }
    path = world_tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _world(
    tmp_path: Path, kit: SigstoreKit, trusted_root: Path, notify_port: int | None
) -> World:
    secret = tmp_path / "webhook.secret"
    secret.write_text("inv-" + secrets.token_hex(8))
    extra = None
    if notify_port is not None:
        extra = notifications(f"http://127.0.0.1:{notify_port}/webhooks/local", secret.read_text())
    try:
        registry = start_registry(tmp_path / "registry", extra)
    except RegistryUnavailable as exc:
        _skip_or_fail(exc)
        raise
    client = RegistryClient("pusher", registry.url)
    await client.__aenter__()
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = write_config(
        tmp_path,
        registry.url,
        client.host,
        trusted_root,
        pub,
        listen_port=notify_port,
        webhook_secret=secret if notify_port is not None else None,
    )
    return World(registry, client, kit, tmp_path, config, key, secrets.token_hex(3))


@pytest.fixture
async def world(tmp_path: Path, kit: SigstoreKit, trusted_root_path: Path) -> AsyncIterator[World]:
    """A registry of its own (no notifications) and a config over it."""
    w = await _world(tmp_path, kit, trusted_root_path, None)
    try:
        yield w
    finally:
        await w.client.close()
        w.registry.stop()


@dataclass
class Watched:
    """A world whose registry notifies a running daemon."""

    world: World
    daemon: Daemon
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    async def until(self, check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
        """Poll an async condition until it returns something truthy, with a deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)  # poll interval inside the deadline loop
        raise AssertionError(f"condition not met within {timeout}s")

    async def final(self, repo: str, digest: str, want: str, timeout: float = 20.0) -> None:
        """Wait for the digest's newest final verdict to be ``want``."""
        store = self.daemon.store
        assert store is not None

        async def reached() -> bool:
            doc = await store.latest_verdict("local", repo, digest)  # type: ignore[arg-type]
            return doc is not None and doc.get("final") is True and doc["verdict"] == want

        await self.until(reached, timeout)


@pytest.fixture
async def watched(
    tmp_path: Path,
    kit: SigstoreKit,
    trusted_root_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Watched]:
    """A daemon with webhooks from its own registry, an API token, and a failing alert sink
    (so alert delivery state is visible)."""
    token = "inv-token-" + secrets.token_hex(8)
    monkeypatch.setenv(TOKEN_ENV, token)
    port = free_port()
    w = await _world(tmp_path, kit, trusted_root_path, port)
    daemon = Daemon(
        w.config_path,
        load_config(w.config_path),
        workers=2,
        backoff_base=0.2,
        settle=timedelta(seconds=0.3),
        error_attempts=2,
    )
    await daemon.start()
    try:
        yield Watched(w, daemon, token)
    finally:
        await daemon.stop(drain_timeout=5)
        await w.client.close()
        w.registry.stop()
