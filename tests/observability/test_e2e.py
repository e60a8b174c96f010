"""Observability end to end: a real registry, the watcher, a real Prometheus loading the
shipped rules, and a real Alertmanager receiving the watcher's own alerts.

Pushes an unsigned and a signed image and asserts what an SRE would look at: the alert in
Alertmanager with the contract's labels, the shipped Prometheus rule firing for the unsigned
push only, the coverage series, every shipped PromQL expression evaluating, alerts surviving
an Alertmanager outage exactly once, and no secret anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import ALICE, GH, SECRET, Running, start_running, stop_running
from tests.deploy.promql import (
    RULES,
    PrometheusProcess,
    PrometheusUnavailable,
    all_expressions,
    start_prometheus,
    unavailable,
)
from tests.observability.alertmanager import (
    AlertmanagerProcess,
    AlertmanagerUnavailable,
    start_alertmanager,
)
from tests.services import free_port
from watcher.config import load_config
from watcher.daemon.app import Daemon
from watcher.refs import Digest
from watcher.testing import oci
from watcher.testing.sigstore_kit import SigstoreKit


@dataclass
class Stack:
    running: Running
    prometheus: PrometheusProcess
    alertmanager: AlertmanagerProcess
    tmp: Path


async def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll a (sync or async) condition with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)  # poll interval inside the deadline loop
    raise AssertionError(f"timed out waiting for {what}: last={last!r}")


@pytest.fixture
async def stack(
    tmp_path: Path, kit: SigstoreKit, trusted_root_path: Path
) -> AsyncIterator[Stack]:
    am_port = free_port()
    try:
        am = start_alertmanager(tmp_path / "am", am_port)
    except AlertmanagerUnavailable as exc:
        unavailable(str(exc))
        raise
    running = await start_running(
        tmp_path, kit, trusted_root_path, alert_url=f"http://127.0.0.1:{am_port}"
    )
    try:
        prom = start_prometheus(
            tmp_path / "prom", [f"127.0.0.1:{running.daemon.port}"], rule_files=[RULES]
        )
    except PrometheusUnavailable as exc:
        await stop_running(running)
        am.stop()
        unavailable(str(exc))
        raise
    stack = Stack(running, prom, am, tmp_path)
    try:
        yield stack
    finally:
        prom.stop()
        await stop_running(running)
        am.stop()
        stack.alertmanager.stop()  # the outage test starts a second one


async def push_population(r: Running) -> tuple[str, oci.ImageInfo, str, oci.ImageInfo]:
    # Both under the policy with a grace period, so the signed image is signed before it is
    # judged (without one, a push can be judged before its signature lands: see below).
    signed_repo, bare_repo = r.repo("late-signed"), r.repo("late-bare")
    signed = await oci.push_image(r.client, signed_repo, "v1")
    layer = r.kit.sign_legacy(f"{r.host}/{signed_repo}", signed.digest, ALICE, GH)
    await oci.attach_legacy(r.client, signed_repo, signed.digest, [layer], "sig")
    bare = await oci.push_image(r.client, bare_repo, "v1")
    await r.final(signed_repo, signed.digest, want="verified")
    await r.final(bare_repo, bare.digest, want="unsigned", timeout=30)
    await r.daemon.refresh_gauges()
    return signed_repo, signed, bare_repo, bare


def _for(alerts: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("digest") == digest]


async def test_alerts_rules_and_coverage(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    r = stack.running
    signed_repo, signed, bare_repo, bare = await push_population(r)

    # The watcher's own alert reaches Alertmanager with the contract's labels.
    alerts = await until(lambda: _for(stack.alertmanager.alerts(), bare.digest), what="alert")
    [alert] = alerts
    assert alert["labels"] == {
        "alertname": "ImageUnsigned",
        "severity": "critical",
        "registry": "local",
        "repository": bare_repo,
        "policy": "late",
        "digest": bare.digest,
    }
    assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
    assert "v1" in alert["annotations"]["description"]
    assert _for(stack.alertmanager.alerts(), signed.digest) == []

    # Prometheus scraped the watcher: the coverage series are right.
    def coverage(repo: str) -> float | None:
        result = stack.prometheus.query(
            f'watcher_signing_coverage_ratio{{repository="{repo}"}}'
        )["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    await until(lambda: coverage(bare_repo) is not None and coverage(signed_repo) is not None,
                what="coverage series")
    assert (coverage(signed_repo), coverage(bare_repo)) == (1.0, 0.0)

    # The shipped rule fires (pending or firing) for the unsigned push, not the signed one.
    def rule_alerts(repo: str) -> list[Any]:
        q = f'ALERTS{{alertname="RegistryWatcherUnsignedImages",repository="{repo}"}}'
        return list(stack.prometheus.query(q)["data"]["result"])

    await until(lambda: rule_alerts(bare_repo), what="RegistryWatcherUnsignedImages")
    assert rule_alerts(signed_repo) == []

    # Every expression the project ships evaluates against this Prometheus, and shows data
    # once a few scrapes have happened (rate() and increase() need two samples). Panels about
    # failures this healthy run never had (throttling, failed deliveries, webhook errors,
    # polling, which this registry does not use) may stay empty.
    allowed = ("throttl", "fail", "error", "429", "5xx", "poll")

    def unexplained_empty() -> list[str]:
        empty = []
        for source, expr in all_expressions():
            result = stack.prometheus.query(expr)
            assert result["status"] == "success", (source, expr, result)
            if source.startswith("dashboard") and not result["data"]["result"]:
                empty.append(source)
        return [s for s in empty if not any(word in s.lower() for word in allowed)]

    last: list[str] = []

    def all_show_data() -> bool:
        nonlocal last
        last = unexplained_empty()
        return not last

    try:
        await until(all_show_data, timeout=30, what="dashboard data")
    except AssertionError:
        raise AssertionError(f"dashboard expressions without data: {last}") from None

    # Nothing secret in /metrics, the logs, or the alert text.
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{r.base}/metrics") as resp:
        metrics_text = await resp.text()
    logs = capfd.readouterr().err
    assert SECRET not in metrics_text and SECRET not in logs
    assert SECRET not in str(stack.alertmanager.alerts())


async def test_alertmanager_outage_delivers_exactly_once(stack: Stack) -> None:
    r = stack.running
    stack.alertmanager.stop()
    repo = r.repo("app-outage")
    image = await oci.push_image(r.client, repo, "v1")
    await r.final(repo, image.digest, want="unsigned")
    failed = 'watcher_alerts_total{outcome="failed",sink="am",verdict="unsigned"}'

    def failures() -> float:
        from prometheus_client import generate_latest

        for line in generate_latest(r.daemon.metrics.registry).decode().splitlines():
            if line.startswith(failed):
                return float(line.split()[-1])
        return 0.0

    await until(lambda: failures() >= 1, what="a failed delivery")
    stack.alertmanager = start_alertmanager(stack.tmp / "am", stack.alertmanager.port)
    await until(lambda: _for(stack.alertmanager.alerts(), image.digest), timeout=40,
                what="delivery after the outage")
    store = r.daemon.store
    assert store is not None
    rows = (await store.history(Digest(image.digest)))["alerts"]
    assert len(rows) == 1 and rows[0]["state"] == "sent" and rows[0]["attempts"] >= 2

    # A restarted watcher on the same store sends nothing again.
    await r.daemon.stop(drain_timeout=5)
    again = Daemon(r.config_path, load_config(r.config_path), workers=1)
    await again.start()
    r.daemon = again
    from watcher.sinks import deliver_due

    assert await deliver_due(again.store, again.sinks, again.metrics) == 0  # type: ignore[arg-type]
    rows = (await again.store.history(Digest(image.digest)))["alerts"]  # type: ignore[union-attr]
    assert len(rows) == 1
    assert len(_for(stack.alertmanager.alerts(), image.digest)) == 1


async def test_alert_resolves_when_a_late_signature_verifies(stack: Stack) -> None:
    """No grace period: judged unsigned and alerted, then the signature lands; the alert ends."""
    r = stack.running
    repo = r.repo("app-resolve")
    image = await oci.push_image(r.client, repo, "v1")
    await r.final(repo, image.digest, want="unsigned")
    await until(lambda: _for(stack.alertmanager.alerts(), image.digest), what="the alert")
    layer = r.kit.sign_legacy(f"{r.host}/{repo}", image.digest, ALICE, GH)
    await oci.attach_legacy(r.client, repo, image.digest, [layer], "sig")
    await r.final(repo, image.digest, want="verified")

    def still_firing() -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [
            a
            for a in _for(stack.alertmanager.alerts(), image.digest)
            if datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00")) > now
        ]

    await until(lambda: not still_firing(), what="the alert to resolve")
    store = r.daemon.store
    assert store is not None
    [row] = (await store.history(Digest(image.digest)))["alerts"]
    assert row["state"] == "resolved"
