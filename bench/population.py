"""Signed images in every format cosign writes, pushed to a real registry for the benchmarks.

Formats (one image may carry several):
- ``bundle``: a Sigstore bundle v0.3 as an OCI referrer, found through the ``sha256-<hex>``
  referrers fallback tag (distribution 2.x has no referrers API) — cosign v3's default;
- ``legacy``: a keyless ``sha256-<hex>.sig`` layer (cosign v2's default);
- ``+att``: the same format also carrying a SLSA provenance attestation (bundle or ``.att``).

Every signature is by the identity the benchmark policy allows, so every verdict should be
``verified``; the benchmarks check that, because a fast wrong answer measures nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from yarl import URL

from bench.common import ACME, GH, PROVENANCE, SIGN
from watcher.refs import sha256_digest
from watcher.registry.client import MANIFEST_ACCEPT, RegistryClient
from watcher.testing import oci
from watcher.testing.sigstore_kit import SigstoreKit

PREDICATE = {"buildDefinition": {"buildType": "https://example.com/bench"}, "runDetails": {}}


class Fmt(StrEnum):
    """What signature material an image carries."""

    UNSIGNED = "unsigned"
    BUNDLE = "bundle"
    LEGACY = "legacy"
    BUNDLE_ATT = "bundle+att"
    LEGACY_ATT = "legacy+att"
    ALL = "bundle+legacy+atts"

    @property
    def bundle_sig(self) -> bool:
        return self in (Fmt.BUNDLE, Fmt.BUNDLE_ATT, Fmt.ALL)

    @property
    def bundle_att(self) -> bool:
        return self in (Fmt.BUNDLE_ATT, Fmt.ALL)

    @property
    def legacy_sig(self) -> bool:
        return self in (Fmt.LEGACY, Fmt.LEGACY_ATT, Fmt.ALL)

    @property
    def legacy_att(self) -> bool:
        return self in (Fmt.LEGACY_ATT, Fmt.ALL)

    @property
    def materials(self) -> int:
        """Signatures plus attestations: one sigstore verification each."""
        return sum((self.bundle_sig, self.bundle_att, self.legacy_sig, self.legacy_att))


# The throughput mix: both formats, with and without attestations, in equal parts.
MIX: tuple[Fmt, ...] = (Fmt.BUNDLE, Fmt.LEGACY, Fmt.BUNDLE_ATT, Fmt.LEGACY_ATT)


@dataclass(frozen=True)
class Image:
    """One pushed image: where it is, its digest, and what signs it."""

    repository: str
    tag: str | None
    digest: str
    fmt: Fmt
    seed: int
    manifest: bytes

    def reference(self, host: str) -> str:
        return f"{host}/{self.repository}:{self.tag}" if self.tag else f"{host}/{self.repository}"


class FastWriter:
    """The push side of a registry client, for populating a benchmark quickly.

    A bare aiohttp session: blobs go up as POST + PUT without the HEAD that checks for them
    first, a blob already sent to a repository is not sent again, and there is no digest
    checking or retry machinery. Populating thousands of images is the slow part of the
    latency benchmark, and none of it is what is being measured.
    """

    def __init__(self, client: RegistryClient, session: aiohttp.ClientSession) -> None:
        self.client = client
        self.session = session
        self.host = client.host
        self._sent: set[tuple[str, str]] = set()
        self._uploading: dict[tuple[str, str], asyncio.Task[str]] = {}

    async def put_blob(self, repository: str, data: bytes, /) -> str:
        """Upload once per repository and digest, even when many pushes share a blob.

        distribution 2.8 can answer a manifest PUT with 400 (blob unknown) while a second,
        concurrent upload of the same blob is being committed; one upload per blob at a time
        (the shared empty config above all) avoids that race in the harness.
        """
        digest = sha256_digest(data)
        key = (repository, digest)
        if key in self._sent:
            return digest
        task = self._uploading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._upload(repository, data, digest))
            self._uploading[key] = task
        try:
            return await task
        finally:
            if task.done():
                self._uploading.pop(key, None)

    async def _upload(self, repository: str, data: bytes, digest: str) -> str:
        base = self.client.base_url
        for attempt in range(5):
            async with self.session.post(f"{base}/v2/{repository}/blobs/uploads/") as start:
                location = start.headers.get("Location", "")
                status = start.status
            if status == 202 and location:
                upload = URL(location) if location.startswith("http") else URL(base + location)
                upload = upload.update_query(digest=digest)
                headers = {"Content-Type": "application/octet-stream"}
                async with self.session.put(upload, data=data, headers=headers) as done:
                    status = done.status
                if status == 201:
                    self._sent.add((repository, digest))
                    return digest
            if status < 500 or attempt == 4:
                raise RuntimeError(f"blob upload to {repository}: HTTP {status}")
        raise AssertionError("unreachable")

    async def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str, /
    ) -> str:
        url = f"{self.client.base_url}/v2/{repository}/manifests/{reference}"
        for attempt in range(5):
            async with self.session.put(url, data=raw, headers={"Content-Type": media_type}) as r:
                if r.status == 201:
                    return sha256_digest(raw)
                if r.status < 500 or attempt == 4:
                    detail = (await r.text())[:200]
                    raise RuntimeError(
                        f"manifest {repository}:{reference}: HTTP {r.status} {detail}"
                    )
        raise AssertionError("unreachable")

    async def get_manifest_optional(self, repository: str, reference: str, /) -> Any:
        url = f"{self.client.base_url}/v2/{repository}/manifests/{reference}"
        async with self.session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise RuntimeError(f"manifest {repository}:{reference}: HTTP {resp.status}")
            raw = await resp.read()
            return _Fetched(raw, json.loads(raw).get("mediaType", ""))


@dataclass(frozen=True)
class _Fetched:
    raw: bytes
    media_type: str


@contextlib.asynccontextmanager
async def writer(base_url: str) -> AsyncIterator[FastWriter]:
    """A FastWriter for the registry at ``base_url``."""
    async with (
        RegistryClient("pusher", base_url, max_concurrency=64) as client,
        aiohttp.ClientSession() as session,
    ):
        yield FastWriter(client, session)


async def attach(
    client: oci.RegistryWriter,
    kit: SigstoreKit,
    name: str,
    repository: str,
    info: oci.ImageInfo,
    fmt: Fmt,
) -> None:
    """Sign ``info`` in ``fmt`` with the private Sigstore and push the material as cosign does."""
    if fmt.bundle_sig:
        bundle = kit.sign_bundle(info.digest, ACME, GH)
        await oci.attach_referrer(client, repository, info, bundle, SIGN)
    if fmt.bundle_att:
        bundle = kit.attest_bundle(name, info.digest, PROVENANCE, PREDICATE, ACME, GH)
        await oci.attach_referrer(client, repository, info, bundle, PROVENANCE)
    if fmt.legacy_sig:
        layer = kit.sign_legacy(name, info.digest, ACME, GH)
        await oci.attach_legacy(client, repository, info.digest, [layer], "sig")
    if fmt.legacy_att:
        layer = kit.attest_legacy(name, info.digest, PROVENANCE, PREDICATE, ACME, GH)
        await oci.attach_legacy(client, repository, info.digest, [layer], "att")


async def push_one(
    client: oci.RegistryWriter,
    kit: SigstoreKit,
    host: str,
    repository: str,
    tag: str | None,
    fmt: Fmt,
    seed: int | None = None,
) -> Image:
    """Push a fresh image (by ``tag``, or by digest only when tag is None) and sign it."""
    seed = seed if seed is not None else random.SystemRandom().getrandbits(62)
    _config, _layer, manifest = oci.random_image(seed)
    info = await oci.push_image(client, repository, tag, seed=seed)
    await attach(client, kit, f"{host}/{repository}", repository, info, fmt)
    return Image(repository, tag, info.digest, fmt, seed, manifest)


async def push_many(
    client: oci.RegistryWriter,
    kit: SigstoreKit,
    host: str,
    specs: Sequence[tuple[str, str | None, Fmt]],
    concurrency: int = 24,
) -> list[Image]:
    """Push (repository, tag, format) images, ``concurrency`` at a time, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(repository: str, tag: str | None, fmt: Fmt) -> Image:
        async with gate:
            return await push_one(client, kit, host, repository, tag, fmt)

    return list(await asyncio.gather(*(one(r, t, f) for r, t, f in specs)))


async def tag_image(client: oci.RegistryWriter, image: Image, tag: str) -> None:
    """PUT an already uploaded manifest under a tag: the push event a registry notifies."""
    await client.put_manifest(image.repository, tag, image.manifest, oci.OCI_MANIFEST_MEDIA_TYPE)
