"""The daemon end to end: a real registry notifies it, it verifies, it remembers.

Pushes go to a real docker-registry whose notifications endpoint is the daemon's webhook
receiver; signatures come from the suite's private Sigstore; outcomes are read back from
the store and /metrics with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.daemon.conftest import ALICE, GH, MALLORY, SECRET, Running, start_running, stop_running
from watcher.refs import Digest
from watcher.testing import oci
from watcher.testing.sigstore_kit import SigstoreKit

SIGN = "https://sigstore.dev/cosign/sign/v1"


async def sign_legacy(r: Running, repo: str, image: oci.ImageInfo, who: str = ALICE) -> None:
    layer = r.kit.sign_legacy(f"{r.host}/{repo}", image.digest, who, GH)
    await oci.attach_legacy(r.client, repo, image.digest, [layer], "sig")


async def sign_bundle(r: Running, repo: str, image: oci.ImageInfo, who: str = ALICE) -> None:
    await oci.attach_referrer(r.client, repo, image, r.kit.sign_bundle(image.digest, who, GH), SIGN)


async def test_signed_and_unsigned_pushes_get_final_verdicts(running: Running) -> None:
    repo = running.repo("app")
    image = await oci.push_image(running.client, repo, "v1")
    await sign_legacy(running, repo, image)
    # No grace period: the push may be judged before its signature lands; the signature's
    # own push re-checks it, and the final verdict becomes verified.
    record = await running.final(repo, image.digest, want="verified")
    assert record.kind == "image" and record.first_source == "webhook"

    bare = await oci.push_image(running.client, repo, "v2")
    record = await running.final(repo, bare.digest)
    assert record.final_verdict == "unsigned"

    store = running.daemon.store
    assert store is not None
    doc = await store.latest_verdict("local", repo, Digest(bare.digest))
    assert doc is not None and doc["tags"] == ["v2"] and doc["verdict"] == "unsigned"
    history = await store.history(Digest(bare.digest))
    assert [a["alertname"] for a in history["alerts"]] == ["ImageUnsigned"]
    assert history["alerts"][0]["severity"] == "critical"
    # The signature artifact never got a verdict (or an alert) of its own.
    sig_tag_digest = (await store.current_tags("local", repo))[
        f"sha256-{image.digest.split(':')[1]}.sig"
    ]
    assert await store.latest_verdict("local", repo, sig_tag_digest) is None


async def test_late_signature_inside_grace_period(running: Running) -> None:
    repo = running.repo("late")
    image = await oci.push_image(running.client, repo, "v1")

    async def pending() -> bool:
        assert running.daemon.store is not None
        doc = await running.daemon.store.latest_verdict("local", repo, Digest(image.digest))
        return doc is not None and doc["verdict"] == "pending"

    await running.until(pending)
    await sign_bundle(running, repo, image)  # a referrer push re-checks its subject now
    record = await running.final(repo, image.digest, timeout=10)
    assert record.final_verdict == "verified"
    assert record.first_signature_at is not None
    body = await _metrics(running)
    assert 'watcher_push_to_signature_seconds_count{registry="local"} 1.0' in body
    assert 'watcher_push_to_verdict_seconds_count{registry="local"}' in body


async def test_grace_period_ends_unsigned(running: Running) -> None:
    repo = running.repo("late-never")
    image = await oci.push_image(running.client, repo, "v1")
    record = await running.final(repo, image.digest, timeout=15)
    assert record.final_verdict == "unsigned"
    assert record.final_at is not None
    assert (record.final_at - record.first_seen_at).total_seconds() >= 4


async def test_unexpected_signer_and_tag_move(running: Running) -> None:
    repo = running.repo("app-move")
    good = await oci.push_image(running.client, repo, "latest")
    await sign_bundle(running, repo, good)
    await running.final(repo, good.digest, want="verified")
    evil = await oci.push_image(running.client, repo, "latest")  # the tag moves
    await sign_bundle(running, repo, evil, MALLORY)
    await running.final(repo, evil.digest, want="unexpected_signer")
    store = running.daemon.store
    assert store is not None

    async def moved() -> bool:
        return (await store.current_tags("local", repo)).get("latest") == evil.digest

    await running.until(moved)
    history = await store.history(Digest(evil.digest))
    assert any(
        t["tag"] == "latest" and t["previous_digest"] == good.digest for t in history["tags"]
    )


async def test_multi_arch_children_take_the_index_verdict(running: Running) -> None:
    repo = running.repo("multi")
    index = await oci.push_index(running.client, repo, "v1", platforms=2)
    await sign_bundle(running, repo, index)
    await running.final(repo, index.digest, want="verified")
    for child in index.manifests:
        record = await running.final(repo, child.digest, want="verified")
        assert record.kind == "platform" and record.parent_digest == index.digest
        assert record.final_verdict == "verified"
        store = running.daemon.store
        assert store is not None
        doc = await store.latest_verdict("local", repo, Digest(child.digest))
        assert doc is not None and any("multi-arch index" in r for r in doc["reasons"])


async def test_delete_is_recorded(running: Running) -> None:
    repo = running.repo("app-del")
    image = await oci.push_image(running.client, repo, "v1")
    await running.final(repo, image.digest)
    await running.client.delete_manifest(repo, Digest(image.digest))

    async def deleted() -> bool:
        record = await running.record(repo, image.digest)
        return record is not None and record.deleted_at is not None

    await running.until(deleted)
    store = running.daemon.store
    assert store is not None
    assert "v1" not in await store.current_tags("local", repo)
    actions = [e["action"] for e in (await store.history(Digest(image.digest)))["events"]]
    assert "delete" in actions and "push" in actions


async def _post(
    r: Running, body: bytes, headers: dict[str, str], name: str = "local"
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{r.base}/webhooks/{name}", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


async def test_webhook_refusals_and_redelivery(running: Running) -> None:
    auth = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    event = {
        "events": [
            {
                "id": "evt-1",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + "a" * 64,
                    "repository": "d/app-hook",
                    "tag": "v1",
                },
            }
        ]
    }
    body = json.dumps(event).encode()
    assert (await _post(running, body, {}))[0] == 401
    assert (await _post(running, body, {"Authorization": "Bearer nope"}))[0] == 401
    assert (await _post(running, b"{not json", auth))[0] == 400
    assert (await _post(running, b"x" * (1 << 20 + 1) + b"x" * (1 << 20), auth))[0] == 413
    assert (await _post(running, body, auth, name="nowhere"))[0] == 404
    status, text = await _post(running, body, auth)
    assert status == 202 and json.loads(text)["accepted"] == 1
    status, text = await _post(running, body, auth)  # redelivered by the registry
    assert status == 202 and json.loads(text) == {"accepted": 0, "duplicates": 1, "ignored": 0}
    metrics = await _metrics(running)
    assert 'watcher_webhook_requests_total{code="401",registry="local"} 2.0' in metrics
    assert 'watcher_webhook_requests_total{code="413",registry="local"} 1.0' in metrics
    assert SECRET not in metrics
    outside = json.dumps(
        {
            "events": [
                dict(
                    event["events"][0],
                    id="evt-2",
                    target=dict(event["events"][0]["target"], repository="other/app"),
                )
            ]
        }
    ).encode()
    status, text = await _post(running, outside, auth)
    assert status == 202 and json.loads(text) == {"accepted": 0, "duplicates": 0, "ignored": 1}
    assert 'watcher_webhook_events_ignored_total{registry="local"} 1.0' in await _metrics(running)


async def test_api_image(running: Running) -> None:
    repo = running.repo("app-api")
    image = await oci.push_image(running.client, repo, "v1")
    await sign_legacy(running, repo, image)
    await running.final(repo, image.digest, want="verified")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{running.base}/api/v1/images/{image.digest}") as resp:
            assert resp.status == 200
            doc = await resp.json()
        async with s.get(f"{running.base}/api/v1/images/sha256:{'0' * 64}") as resp:
            assert resp.status == 404
        async with s.get(f"{running.base}/api/v1/images/nonsense") as resp:
            assert resp.status == 400
        async with s.get(f"{running.base}/readyz") as resp:
            assert resp.status == 200
    [result] = doc["results"]
    assert result["verdict"] == "verified" and result["repository"] == repo
    assert result["signatures"][0]["subject"] == ALICE


async def _metrics(r: Running) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{r.base}/metrics") as resp:
        return await resp.text()


async def test_coverage_gauges_from_the_store(running: Running) -> None:
    repo = running.repo("app-cov")
    signed = await oci.push_image(running.client, repo, "signed")
    await sign_legacy(running, repo, signed)
    bare = await oci.push_image(running.client, repo, "bare")
    await running.final(repo, signed.digest, want="verified")
    await running.final(repo, bare.digest)
    await running.daemon.refresh_gauges()
    body = await _metrics(running)
    assert f'watcher_signing_coverage_ratio{{registry="local",repository="{repo}"}} 0.5' in body
    assert (
        f'watcher_images_by_verdict{{registry="local",repository="{repo}",verdict="unsigned"}} 1.0'
        in body
    )
    assert "sha256" not in "".join(
        line for line in body.splitlines() if not line.startswith("#")
    )  # no digest or tag ever becomes a label


async def test_polling_finds_pushes_and_costs_nothing_when_unchanged(
    tmp_path: Path, kit: SigstoreKit, trusted_root_path: Path
) -> None:
    r = await start_running(tmp_path, kit, trusted_root_path, notify=False, poll_interval="1s")
    try:
        repo = r.repo("app-poll")
        image = await oci.push_image(r.client, repo, "v1")
        await sign_legacy(r, repo, image)
        record = await r.final(repo, image.digest, want="verified")
        assert record.first_source == "poll"
        store = r.daemon.store
        assert store is not None
        events = len((await store.history(Digest(image.digest)))["events"])
        depth_before = await store.queue_depth()
        seen = r.daemon.metrics.last_poll_success.labels(registry="local")._value.get()

        async def two_more_cycles() -> bool:
            now = r.daemon.metrics.last_poll_success.labels(registry="local")._value.get()
            return bool(now >= seen + 1.5)

        await r.until(two_more_cycles, timeout=15)
        assert len((await store.history(Digest(image.digest)))["events"]) == events
        assert await store.queue_depth() == depth_before == 0
    finally:
        await stop_running(r)


async def test_work_survives_a_crash(
    tmp_path: Path, kit: SigstoreKit, trusted_root_path: Path
) -> None:
    """An item claimed by a worker that died is claimed again once its lease expires."""
    from watcher.config import load_config
    from watcher.daemon.app import Daemon
    from watcher.verdicts import utcnow

    r = await start_running(tmp_path, kit, trusted_root_path)
    repo = r.repo("app-crash")
    try:
        store = r.daemon.store
        assert store is not None
        r.daemon._stopping.set()  # the workers stop, as if the process were wedged
        image = await oci.push_image(r.client, repo, "v1")

        async def queued() -> bool:
            return await store.queue_depth() > 0

        await r.until(queued)
        claimed = await r.until(lambda: store.claim("dead-worker", utcnow(), lease_seconds=1.0))
        assert claimed.ref == image.digest
        await r.daemon.stop(drain_timeout=5)  # the claim is never finished
        again = Daemon(r.config_path, load_config(r.config_path), workers=1, backoff_base=0.2)
        await again.start()
        r.daemon = again
        record = await r.final(repo, image.digest)
        assert record.final_verdict == "unsigned"
    finally:
        await stop_running(r)


async def test_images_disguised_as_artifacts_are_still_judged(running: Running) -> None:
    """A `subject` field or a look-alike `sha256-….sig` tag must not hide an ordinary tag."""
    import json as _json

    repo = running.repo("app-disguise")
    target = await oci.push_image(running.client, repo, "base")
    config, layer, manifest = oci.random_image(7)
    await running.client.put_blob(repo, config)
    await running.client.put_blob(repo, layer)
    doc = _json.loads(manifest)
    doc["subject"] = {"mediaType": target.media_type, "digest": target.digest, "size": target.size}
    raw = _json.dumps(doc).encode()
    digest = await running.client.put_manifest(repo, "latest", raw, doc["mediaType"])
    await running.final(repo, digest, want="unsigned")

    other = oci.random_image(8)
    await running.client.put_blob(repo, other[0])
    await running.client.put_blob(repo, other[1])
    look_alike = "sha256-" + "f" * 64 + ".sig"
    hidden = await running.client.put_manifest(repo, look_alike, other[2], doc["mediaType"])
    await running.client.put_manifest(repo, "prod", other[2], doc["mediaType"])
    await running.final(repo, hidden, want="unsigned")


async def test_platform_verdicts_follow_their_index(running: Running) -> None:
    """Judged unsigned first (no grace period), then signed: the children follow the index."""
    repo = running.repo("multi-late")
    index = await oci.push_index(running.client, repo, "v1", platforms=2)
    await running.final(repo, index.digest, want="unsigned")
    for child in index.manifests:
        await running.final(repo, child.digest, want="unsigned")
    await sign_bundle(running, repo, index)
    await running.final(repo, index.digest, want="verified")
    for child in index.manifests:
        await running.final(repo, child.digest, want="verified")
