"""`make demo`: the whole product on one machine, in about half a minute.

Starts a local docker-registry whose notifications point at the watcher, starts the watcher
(`registry-watcher run -c config/demo.yaml`, the real daemon in its own process), pushes a
small population signed with the project's private Sigstore (expected identity in both
formats, someone else, nobody, and a signature that lands late inside the grace period),
prints each image's verdict and where to look, and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from watcher.registry.client import RegistryClient
from watcher.testing import oci
from watcher.testing.registry_server import RegistryProcess, notifications, start_registry
from watcher.testing.sigstore_kit import SigstoreKit

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "demo.yaml"
GH = "https://token.actions.githubusercontent.com"
ACME = "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main"
STRANGER = "https://github.com/someone-else/fork/.github/workflows/ci.yml@refs/heads/main"
SIGN = "https://sigstore.dev/cosign/sign/v1"


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


async def _until(check: Any, timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what}")


def _config() -> dict[str, Any]:
    return dict(yaml.safe_load(CONFIG.read_text()))


async def _population(
    client: RegistryClient, kit: SigstoreKit, host: str
) -> list[tuple[str, str, str]]:
    """Push the demo images; returns (what, repository, digest)."""
    out: list[tuple[str, str, str]] = []

    async def image(repo: str, tag: str) -> oci.ImageInfo:
        return await oci.push_image(client, repo, tag)

    legacy = await image("acme/shop-api", "v1")
    layer = kit.sign_legacy(f"{host}/acme/shop-api", legacy.digest, ACME, GH)
    await oci.attach_legacy(client, "acme/shop-api", legacy.digest, [layer], "sig")
    out.append(("signed by acme's release workflow (legacy .sig)", "acme/shop-api", legacy.digest))

    bundled = await image("acme/shop-web", "v1")
    await oci.attach_referrer(
        client, "acme/shop-web", bundled, kit.sign_bundle(bundled.digest, ACME, GH), SIGN
    )
    out.append(("signed by acme's release workflow (bundle)", "acme/shop-web", bundled.digest))

    stranger = await image("acme/shop-worker", "v1")
    await oci.attach_referrer(
        client, "acme/shop-worker", stranger, kit.sign_bundle(stranger.digest, STRANGER, GH), SIGN
    )
    out.append(("signed by someone else", "acme/shop-worker", stranger.digest))

    bare = await image("acme/shop-cron", "v1")
    out.append(("not signed at all", "acme/shop-cron", bare.digest))

    late = await image("acme/shop-batch", "v1")
    out.append(("signed 3 s after the push (grace period 10s)", "acme/shop-batch", late.digest))
    await asyncio.sleep(3)  # the point of this image: its signature lands after the push
    await oci.attach_referrer(
        client, "acme/shop-batch", late, kit.sign_bundle(late.digest, ACME, GH), SIGN
    )
    return out


async def main_async(keep: bool) -> int:
    config = _config()
    workdir = (CONFIG.parent / config["store"]["url"].removeprefix("sqlite:")).resolve().parent
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    kit = SigstoreKit.create()
    kit.write_trusted_root(workdir / "trusted_root.json")
    watcher_listen = config["server"]["listen"]
    registry_url = config["registries"][0]["url"]
    secret = "demo-webhook-token"
    os.environ["DEMO_WEBHOOK_SECRET"] = secret
    registry: RegistryProcess | None = None
    daemon: subprocess.Popen[bytes] | None = None
    try:
        port = int(registry_url.rsplit(":", 1)[1])
        registry = start_registry(
            workdir,
            notifications(
                f"http://{watcher_listen}/webhooks/{config['registries'][0]['name']}",
                secret,
                name="registry-watcher",
            ),
            port=port,
        )
        log = (workdir / "watcher.log").open("wb")
        daemon = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waited on below
            [sys.executable, "-m", "watcher", "run", "-c", str(CONFIG)], stdout=log, stderr=log
        )
        base = f"http://{watcher_listen}"
        await _until(lambda: _ready(base), 30, "the watcher to be ready")
        print(f"registry  {registry.url}   watcher  {base}   workdir  {workdir}")
        async with RegistryClient("demo", registry.url) as client:
            population = await _population(client, kit, client.host)

        def final(digest: str) -> Any:
            doc = _get_json(f"{base}/api/v1/images/{digest}")
            results = (doc or {}).get("results") or []
            return results if results and all(r.get("final") for r in results) else None

        print(f"\n{'image':<32} {'verdict':<18} {'signed by':<40} what")
        for what, repo, digest in population:
            results = await _until(lambda d=digest: final(d), 60, f"a verdict for {repo}")
            doc = results[-1]
            signers = (
                ", ".join(sorted({s["subject"] or "?" for s in doc["signatures"] if s["valid"]}))
                or "-"
            )
            print(f"{repo + ':v1':<32} {doc['verdict']:<18} {signers[:40]:<40} {what}")
        print(
            f"\nmetrics:  {base}/metrics   (watcher_signing_coverage_ratio, "
            "watcher_verdicts_total, ...)"
        )
        print(f"API:      {base}/api/v1/images/<digest>")
        print(f"logs:     {workdir / 'watcher.log'}")
        if keep:
            print("\n--keep: everything keeps running; press Ctrl-C to stop")
            await asyncio.Event().wait()
        return 0
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if registry is not None:
            registry.stop()


def main() -> int:
    """Entry point of `python -m watcher.testing.demo`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave it running until Ctrl-C")
    args = parser.parse_args()
    try:
        return asyncio.run(main_async(args.keep))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
