"""Finding every piece of Sigstore/cosign material a registry holds for one digest.

Three places, looked at concurrently: OCI 1.1 referrers (or, where the registry has no
referrers API, the ``sha256-<hex>`` fallback tag holding an index), and cosign's legacy
``sha256-<hex>.sig`` and ``.att`` tags. Every manifest and blob is digest-checked by the
registry client; this module adds the caps that keep a hostile registry from making the watcher
fetch without bound (layer counts, referrer counts, blob sizes). Material that cannot be read
is reported as such (it becomes an invalid finding), whereas the registry failing to answer is
an exception: the caller turns that into verdict `error`, never `unsigned`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.refs import Digest, parse_digest, referrers_fallback_tag, signature_tag
from watcher.registry.client import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    Descriptor,
    Manifest,
    RegistryClient,
)
from watcher.registry.errors import DigestMismatchError, TooLargeError
from watcher.verdicts import Format
from watcher.verify.legacy import DSSE_MEDIA_TYPE, SIMPLESIGNING_MEDIA_TYPE
from watcher.verify.material import BundleArtifact, Kind, LegacyLayer, Material, UnreadableMaterial

BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
COSIGN_OCI11_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"


@dataclass(frozen=True)
class Limits:
    """Caps on what one digest's discovery may fetch (cosign itself refuses >1000 layers)."""

    max_layers: int = 1000
    max_referrers: int = 256
    max_signature_bytes: int = 1 << 20  # simplesigning payloads are a few hundred bytes
    max_attestation_bytes: int = 16 << 20  # provenance can be large, but not unbounded
    max_bundle_bytes: int = 4 << 20
    max_total_bytes: int = 64 << 20  # all distinct blobs of one digest's material together
    fetch_concurrency: int = 8


@dataclass(frozen=True)
class Discovered:
    """All material found for a digest, plus notes on where the watcher looked."""

    materials: tuple[Material, ...]
    notes: tuple[str, ...]


def is_index(manifest: Manifest) -> bool:
    """An OCI index or Docker manifest list (a multi-arch image or a referrers fallback)."""
    return manifest.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST) or (
        manifest.media_type == "" and isinstance(manifest.json.get("manifests"), list)
    )


async def discover(
    client: RegistryClient, repository: str, digest: Digest, limits: Limits | None = None
) -> Discovered:
    """Everything the registry holds that may sign or attest ``digest``."""
    limits = limits or Limits()
    fetch = _Fetch(client, repository, limits)
    referrers, sigs, atts = await asyncio.gather(
        _referrers(client, repository, digest, limits, fetch),
        _legacy(client, repository, digest, Kind.SIGNATURE, limits, fetch),
        _legacy(client, repository, digest, Kind.ATTESTATION, limits, fetch),
    )
    materials = (*referrers[0], *sigs, *atts)
    return Discovered(materials=materials, notes=referrers[1])


class _Fetch:
    """One discovery's fetch state: bounded concurrency, one fetch per blob, a byte budget.

    A hostile `.att` manifest can list the same 16 MiB blob a thousand times; fetching it
    once and charging every distinct blob against a per-image budget keeps one digest's
    discovery to tens of megabytes whatever the manifests say.
    """

    def __init__(self, client: RegistryClient, repository: str, limits: Limits) -> None:
        self.client = client
        self.repository = repository
        self.gate = asyncio.Semaphore(limits.fetch_concurrency)
        self.budget = limits.max_total_bytes
        self._blobs: dict[Digest, asyncio.Task[bytes | str]] = {}

    async def blob(self, descriptor: Mapping[str, Any], cap: int) -> bytes | str:
        """A layer's bytes, or a human-readable reason it could not be read."""
        try:
            digest = parse_digest(str(descriptor.get("digest")))
        except ValueError as exc:
            return f"layer digest invalid: {exc}"
        size = descriptor.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size > cap:
            return f"layer {digest} declares {size} bytes, over the {cap}-byte cap"
        task = self._blobs.get(digest)
        if task is None:
            limit = size if isinstance(size, int) and not isinstance(size, bool) else cap
            if limit > self.budget:
                return (
                    f"layer {digest} would exceed the per-image budget for signature material "
                    "(too many or too large layers)"
                )
            self.budget -= limit
            task = asyncio.ensure_future(self._get(digest, limit))
            self._blobs[digest] = task
        return await task

    async def _get(self, digest: Digest, limit: int) -> bytes | str:
        try:
            async with self.gate:
                return await self.client.get_blob(self.repository, digest, max_bytes=limit)
        except TooLargeError:
            return f"layer {digest} is larger than its declared size or the {limit}-byte cap"
        except DigestMismatchError:
            return f"registry returned content for layer {digest} that does not match its digest"


async def _legacy(
    client: RegistryClient,
    repository: str,
    digest: Digest,
    kind: Kind,
    limits: Limits,
    fetch: _Fetch,
) -> list[Material]:
    suffix = "sig" if kind is Kind.SIGNATURE else "att"
    tag = signature_tag(digest, suffix)
    try:
        manifest = await client.get_manifest_optional(repository, tag)
    except (TooLargeError, DigestMismatchError) as exc:
        return [UnreadableMaterial(kind, Format.LEGACY, f"{tag} unreadable: {exc}", tag)]
    if manifest is None:
        return []
    layers = manifest.json.get("layers")
    if not isinstance(layers, list):
        return [UnreadableMaterial(kind, Format.LEGACY, f"{tag} manifest has no layers list", tag)]
    if len(layers) > limits.max_layers:
        return [
            UnreadableMaterial(
                kind,
                Format.LEGACY,
                f"{tag} has {len(layers)} layers; more than {limits.max_layers} is refused "
                "(as cosign does) so a hostile registry cannot make the watcher fetch unbounded",
                tag,
            )
        ]
    want = SIMPLESIGNING_MEDIA_TYPE if kind is Kind.SIGNATURE else DSSE_MEDIA_TYPE
    cap = limits.max_signature_bytes if kind is Kind.SIGNATURE else limits.max_attestation_bytes

    async def one(i: int, layer: object) -> Material | None:
        source = f"{tag}[{i}]"
        if not isinstance(layer, dict):
            return UnreadableMaterial(kind, Format.LEGACY, "layer is not an object", source)
        if layer.get("mediaType") != want:
            return None  # e.g. an SBOM attached with another media type
        raw_annotations = layer.get("annotations") or {}
        if not isinstance(raw_annotations, dict):
            return UnreadableMaterial(kind, Format.LEGACY, "annotations not an object", source)
        annotations = {str(k): str(v) for k, v in raw_annotations.items() if isinstance(v, str)}
        blob = await fetch.blob(layer, cap)
        if isinstance(blob, str):
            return UnreadableMaterial(kind, Format.LEGACY, blob, source)
        return LegacyLayer(kind, want, blob, annotations, source)

    found = await asyncio.gather(*(one(i, layer) for i, layer in enumerate(layers)))
    return [m for m in found if m is not None]


async def _referrers(
    client: RegistryClient,
    repository: str,
    digest: Digest,
    limits: Limits,
    fetch: _Fetch,
) -> tuple[list[Material], tuple[str, ...]]:
    notes: list[str] = []
    descriptors: list[Descriptor] | None = await client.referrers(repository, digest)
    if descriptors is None:
        tag = referrers_fallback_tag(digest)
        notes.append(f"registry has no referrers API; read fallback tag {tag}")
        try:
            index = await client.get_manifest_optional(repository, tag)
        except (TooLargeError, DigestMismatchError) as exc:
            return [UnreadableMaterial(Kind.SIGNATURE, Format.BUNDLE, str(exc), tag)], tuple(notes)
        descriptors = []
        if index is not None and is_index(index):
            for entry in index.json.get("manifests") or []:
                try:
                    descriptors.append(Descriptor.from_json(entry))
                except ValueError as exc:
                    notes.append(f"{tag}: skipped a malformed descriptor ({exc})")
    if len(descriptors) > limits.max_referrers:
        notes.append(f"{len(descriptors)} referrers; only the first {limits.max_referrers} read")
        descriptors = descriptors[: limits.max_referrers]

    async def one(desc: Descriptor) -> Material | None:
        artifact_type = desc.artifact_type or ""
        # The fallback index written by go-containerregistry carries artifactType but no
        # annotations; an absent artifactType means we must look at the manifest itself.
        if artifact_type and not (
            artifact_type.startswith(BUNDLE_PREFIX) or artifact_type == COSIGN_OCI11_SIG
        ):
            return None
        source = f"referrer {desc.digest}"
        try:
            async with fetch.gate:
                manifest = await client.get_manifest(repository, desc.digest)
        except (TooLargeError, DigestMismatchError) as exc:
            return UnreadableMaterial(Kind.SIGNATURE, Format.BUNDLE, str(exc), source)
        subject = manifest.json.get("subject")
        if not isinstance(subject, dict) or subject.get("digest") != digest:
            # A fallback index is just a tag anyone with push rights can write: only trust
            # referrers whose manifest really names this digest as its subject.
            return None
        layers = manifest.json.get("layers")
        if not isinstance(layers, list):
            return None
        annotations = manifest.json.get("annotations")
        hint = annotations.get(PREDICATE_ANNOTATION) if isinstance(annotations, dict) else None
        bundles = [
            la
            for la in layers
            if isinstance(la, dict) and str(la.get("mediaType", "")).startswith(BUNDLE_PREFIX)
        ]
        if len(bundles) == 1:
            blob = await fetch.blob(bundles[0], limits.max_bundle_bytes)
            if isinstance(blob, str):
                return UnreadableMaterial(Kind.SIGNATURE, Format.BUNDLE, blob, source)
            return BundleArtifact(blob, hint if isinstance(hint, str) else None, source)
        sigs = [
            la
            for la in layers
            if isinstance(la, dict) and la.get("mediaType") == SIMPLESIGNING_MEDIA_TYPE
        ]
        if len(sigs) == 1:  # cosign --registry-referrers-mode=oci-1-1
            blob = await fetch.blob(sigs[0], limits.max_signature_bytes)
            if isinstance(blob, str):
                return UnreadableMaterial(Kind.SIGNATURE, Format.LEGACY, blob, source)
            raw = sigs[0].get("annotations")
            ann = (
                {str(k): v for k, v in raw.items() if isinstance(v, str)}
                if isinstance(raw, dict)
                else {}
            )
            return LegacyLayer(Kind.SIGNATURE, SIMPLESIGNING_MEDIA_TYPE, blob, ann, source)
        return None

    found = await asyncio.gather(*(one(d) for d in descriptors))
    return [m for m in found if m is not None], tuple(notes)
