"""Chat and JSON webhook sinks, delivered from the outbox to a local HTTP receiver.

Slack has no local server, so the receiver is a small aiohttp app (the only fake here); it
records what it was sent and can be told to fail, to prove retries lose nothing and secrets
(a webhook URL is a bearer credential) appear in no error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from watcher.alerts import alerts_for
from watcher.metrics import Metrics
from watcher.refs import Digest
from watcher.sinks import JsonSink, SlackSink, deliver_due, slack_text
from watcher.store.base import Enqueue
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import (
    Format,
    ImageVerdict,
    Mode,
    PolicyResult,
    SignatureEvidence,
    Signer,
    Verdict,
    utcnow,
)

D = Digest("sha256:" + "e" * 64)
SECRET_PATH = "/services/T000/B000/very-secret-token"


class Receiver:
    def __init__(self) -> None:
        self.received: list[Any] = []
        self.fail = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post(SECRET_PATH, r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield r, f"http://127.0.0.1:{port}{SECRET_PATH}"
    await runner.cleanup()


def verdict(v: Verdict = Verdict.UNEXPECTED_SIGNER) -> ImageVerdict:
    mallory = Signer(
        issuer="https://token.actions.githubusercontent.com",
        subject="https://github.com/mallory/x/.github/workflows/a.yml@refs/heads/main",
    )
    return ImageVerdict(
        "local",
        "r.test:5000",
        "acme/app",
        D,
        ("v1", "latest"),
        (
            PolicyResult(
                "acme-release",
                v,
                Mode.ENFORCE,
                reasons=("valid signature(s) by mallory, none by an allowed authority",),
            ),
        ),
        signatures=(SignatureEvidence(Format.BUNDLE, True, mallory),),
    )


def test_slack_text_is_readable() -> None:
    [alert] = alerts_for(verdict(), ["chat"])
    text = slack_text(alert)
    assert "ImageUnexpectedSigner" in text and "acme-release" in text
    assert "r.test:5000/acme/app@sha256:eee" in text and "v1, latest" in text
    assert "mallory" in text and "none by an allowed authority" in text


async def _claim_and_finish(store: SqliteStore, v: ImageVerdict, sinks: list[str]) -> None:
    now = utcnow()
    await store.note_digest("local", "acme/app", D, now, "webhook")
    await store.enqueue("local", "acme/app", Enqueue(D, now, "t"))
    item = await store.claim("w", now, 10)
    assert item is not None
    await store.finish(
        item,
        now,
        verdict=v,
        final=True,
        next_due=None,
        source="webhook",
        alerts=alerts_for(v, sinks),
    )


@pytest.mark.parametrize("fmt", ["slack", "json"])
async def test_delivery_retries_until_accepted_and_never_leaks_the_url(
    tmp_path: Path, receiver: tuple[Receiver, str], fmt: str
) -> None:
    r, url = receiver
    store = await SqliteStore.open(tmp_path / "w.db")
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        sink = (SlackSink if fmt == "slack" else JsonSink)("chat", url, session, attempts=1)
        assert "very-secret" not in repr(sink)
        await _claim_and_finish(store, verdict(), ["chat"])
        r.fail = 2
        assert await deliver_due(store, {"chat": sink}, metrics) == 0
        [(_alert_id, _, attempts)] = await store.due_alerts(utcnow() + timedelta(seconds=60), 10)
        assert attempts == 1
        history = await store.history(D)
        assert "very-secret" not in str(history["alerts"][0]["last_error"])
        # Later attempts (the outbox's schedule, fast-forwarded) until the sink takes it.
        for _ in range(5):
            if r.received:
                break
            for row_id, _, _ in await store.due_alerts(utcnow() + timedelta(minutes=10), 10):
                await store.alert_failed(row_id, utcnow(), utcnow(), "fast-forward")
            await deliver_due(store, {"chat": sink}, metrics)
        assert len(r.received) == 1
        assert await deliver_due(store, {"chat": sink}, metrics) == 0  # never twice
    body = r.received[0]
    if fmt == "slack":
        assert "ImageUnexpectedSigner" in body["text"]
    else:
        assert body["labels"]["alertname"] == "ImageUnexpectedSigner"
        assert body["verdict"]["digest"] == D and body["verdict"]["verdict"] == "unexpected_signer"
    exposed = generate_latest(metrics.registry).decode()
    assert "very-secret" not in exposed and 'outcome="failed"' in exposed
    await store.close()


def test_extra_signer_alert_is_a_warning() -> None:
    v = verdict(Verdict.VERIFIED)
    v = ImageVerdict(
        v.registry,
        v.registry_host,
        v.repository,
        v.digest,
        v.tags,
        (
            PolicyResult(
                "acme-release",
                Verdict.VERIFIED,
                Mode.ENFORCE,
                extra_signers=(Signer(key_id="ab" * 32),),
            ),
        ),
    )
    [alert] = alerts_for(v, ["am"])
    assert (alert.alertname, alert.severity) == ("ImageExtraSigner", "warning")
    assert alert.payload["labels"]["digest"] == D


def test_warn_mode_alerts_as_warning() -> None:
    v = verdict()
    v = ImageVerdict(
        v.registry,
        v.registry_host,
        v.repository,
        v.digest,
        v.tags,
        (PolicyResult("p", Verdict.UNSIGNED, Mode.WARN),),
    )
    [alert] = alerts_for(v, ["am"])
    assert (alert.alertname, alert.severity) == ("ImageUnsigned", "warning")
    assert set(alert.payload["labels"]) == {
        "alertname",
        "severity",
        "registry",
        "repository",
        "policy",
        "digest",
    }
    assert set(alert.payload["annotations"]) == {"summary", "description", "runbook_url"}
