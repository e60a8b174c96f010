"""Discovery against a real registry: what it fetches, and what it refuses to fetch."""

from __future__ import annotations

from collections.abc import Callable

from watcher.discovery import Limits, discover
from watcher.metrics import Metrics
from watcher.refs import Digest, signature_tag
from watcher.registry.client import RegistryClient
from watcher.testing import oci
from watcher.testing import sigstore_kit as sk
from watcher.verify.material import LegacyLayer, UnreadableMaterial


def _gets(metrics: Metrics) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "watcher_registry_requests_total" and s.labels["method"] == "GET"
    )


async def test_a_blob_listed_a_thousand_times_is_fetched_once(
    registry_url: str, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("dupes")
    metrics = Metrics()
    async with RegistryClient("m", registry_url, metrics=metrics) as client:
        image = await oci.push_image(client, repo, "v1")
        blob = b'{"payload":"' + b"A" * (512 << 10) + b'"}'
        desc = oci.descriptor(sk.DSSE_LAYER_MEDIA_TYPE, blob)
        await client.put_blob(repo, blob)
        config, raw = oci.signature_manifest([desc] * 1000)
        await client.put_blob(repo, config)
        await client.put_manifest(
            repo, signature_tag(Digest(image.digest), "att"), raw, oci.OCI_MANIFEST_MEDIA_TYPE
        )
        before = _gets(metrics)
        found = await discover(client, repo, Digest(image.digest))
        gets = _gets(metrics) - before
    assert len(found.materials) == 1000
    assert all(isinstance(m, LegacyLayer) for m in found.materials)
    # referrers API + fallback tag + .sig + .att manifests + one blob, not a thousand.
    assert gets <= 6, gets


async def test_distinct_blobs_beyond_the_budget_are_refused(
    registry_url: str, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("budget")
    async with RegistryClient("m", registry_url) as client:
        image = await oci.push_image(client, repo, "v1")
        descs = []
        for i in range(8):
            blob = bytes([i]) * (300 << 10)
            await client.put_blob(repo, blob)
            descs.append(oci.descriptor(sk.DSSE_LAYER_MEDIA_TYPE, blob))
        config, raw = oci.signature_manifest(descs)
        await client.put_blob(repo, config)
        await client.put_manifest(
            repo, signature_tag(Digest(image.digest), "att"), raw, oci.OCI_MANIFEST_MEDIA_TYPE
        )
        found = await discover(client, repo, Digest(image.digest), Limits(max_total_bytes=1 << 20))
    read = [m for m in found.materials if isinstance(m, LegacyLayer)]
    refused = [m for m in found.materials if isinstance(m, UnreadableMaterial)]
    assert len(read) == 3 and len(refused) == 5
    assert all("budget" in m.error for m in refused)
