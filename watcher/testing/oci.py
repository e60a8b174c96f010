"""OCI artifacts for tests and the demo: images, indexes, and cosign attachments.

Pure builders produce manifests byte-for-byte as go-containerregistry (and so cosign)
serializes them; the async helpers push them through anything shaped like the project's
registry client (`RegistryWriter`), performing the same read-modify-write cycles cosign
and ggcr do: appending layers to the `sha256-<hex>.sig`/`.att` tag, and maintaining the
`sha256-<hex>` referrers fallback index for registries without the referrers API.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from watcher.testing.sigstore_kit import (
    ANNOTATION_SIGNATURE,
    BUNDLE_V03_MEDIA_TYPE,
    LegacyLayer,
    go_json,
    sha256_digest,
    verify_data,
)

OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

ANNOTATION_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANNOTATION_BUNDLE_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
ANNOTATION_CREATED = "org.opencontainers.image.created"

# Go's zero time.Time, which ggcr writes for every unset `created`.
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_PLATFORMS: tuple[tuple[str, str, str | None], ...] = (
    ("linux", "amd64", None),
    ("linux", "arm64", None),
    ("linux", "arm", "v7"),
    ("linux", "386", None),
    ("linux", "ppc64le", None),
    ("linux", "s390x", None),
)


class ManifestLike(Protocol):
    """The part of `watcher.registry.client.Manifest` these helpers read."""

    @property
    def raw(self) -> bytes:
        """The manifest bytes exactly as the registry stores them."""
        ...

    @property
    def media_type(self) -> str:
        """The manifest's Content-Type."""
        ...


class RegistryWriter(Protocol):
    """The three registry-client methods the push helpers need (positional-only)."""

    async def put_blob(self, repository: str, data: bytes, /) -> str:
        """Upload a blob; return its digest."""
        ...

    async def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str, /
    ) -> str:
        """PUT a manifest by tag or digest; return its digest."""
        ...

    async def get_manifest_optional(
        self, repository: str, reference: str, /
    ) -> ManifestLike | None:
        """GET a manifest, or None when the registry says it does not exist."""
        ...


if TYPE_CHECKING:
    from watcher.registry.client import RegistryClient

    def _client_is_a_registry_writer(client: RegistryClient) -> RegistryWriter:
        # mypy fails here, not in a test run, if the real client drifts from the protocol.
        return client


@dataclass(frozen=True)
class ImageInfo:
    """What a pushed manifest is known by; `manifests` lists an index's children."""

    digest: str
    media_type: str
    size: int
    manifests: tuple[ImageInfo, ...] = ()

    def descriptor(self) -> dict[str, Any]:
        """An OCI descriptor in ggcr's field order (mediaType, size, digest)."""
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


# --- Pure builders ----------------------------------------------------------------------


def descriptor(
    media_type: str,
    data: bytes,
    *,
    annotations: Mapping[str, str] | None = None,
    platform: Mapping[str, str] | None = None,
    artifact_type: str | None = None,
) -> dict[str, Any]:
    """A descriptor of `data` in ggcr's `v1.Descriptor` field order, omitempty fields left out."""
    result: dict[str, Any] = {
        "mediaType": media_type,
        "size": len(data),
        "digest": sha256_digest(data),
    }
    if annotations:
        result["annotations"] = dict(sorted(annotations.items()))
    if platform:
        result["platform"] = dict(platform)
    if artifact_type:
        result["artifactType"] = artifact_type
    return result


def _go_descriptor(raw: Mapping[str, Any]) -> dict[str, Any]:
    # Re-marshal a parsed descriptor the way ggcr does after decoding it into v1.Descriptor:
    # known fields in struct order, map keys sorted, unknown fields dropped.
    result: dict[str, Any] = {
        "mediaType": raw.get("mediaType", ""),
        "size": raw.get("size", 0),
        "digest": raw.get("digest", ""),
    }
    for key in ("data", "urls"):
        if raw.get(key):
            result[key] = raw[key]
    if raw.get("annotations"):
        result["annotations"] = dict(sorted(raw["annotations"].items()))
    if raw.get("platform"):
        result["platform"] = raw["platform"]
    if raw.get("artifactType"):
        result["artifactType"] = raw["artifactType"]
    return result


def image_manifest(config: bytes, layers: Sequence[bytes]) -> bytes:
    """An OCI image manifest for an ordinary image with uncompressed tar layers."""
    return go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": descriptor(OCI_CONFIG_MEDIA_TYPE, config),
            "layers": [descriptor(OCI_LAYER_MEDIA_TYPE, layer) for layer in layers],
        }
    )


def random_image(
    seed: int, *, os: str = "linux", architecture: str = "amd64", variant: str | None = None
) -> tuple[bytes, bytes, bytes]:
    """A small deterministic image: (config, layer, manifest); distinct seeds never collide."""
    layer = random.Random(seed).randbytes(512)
    config: dict[str, Any] = {
        "architecture": architecture,
        "created": "2024-01-01T00:00:00Z",
        "os": os,
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        "config": {"Labels": {"dev.registry-watcher.seed": str(seed)}},
    }
    if variant:
        config["variant"] = variant
    config_bytes = go_json(config)
    return config_bytes, layer, image_manifest(config_bytes, [layer])


def image_index(manifests: Sequence[tuple[bytes, Mapping[str, str]]]) -> bytes:
    """An OCI index over (manifest bytes, platform) pairs."""
    return go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX_MEDIA_TYPE,
            "manifests": [
                descriptor(OCI_MANIFEST_MEDIA_TYPE, raw, platform=platform)
                for raw, platform in manifests
            ],
        }
    )


def attachment_tag(digest: str, suffix: str | None) -> str:
    """cosign's `normalize()`: `sha256-<hex>.<suffix>`, or the bare referrers fallback tag."""
    algorithm, _, hex_ = digest.partition(":")
    tag = f"{algorithm}-{hex_}"
    return f"{tag}.{suffix}" if suffix else tag


def signature_config(layer_digests: Sequence[str]) -> bytes:
    """The config ggcr computes when appending layers to `empty.Image` (cosign's base).

    Layers are uncompressed static layers, so each diff ID equals the layer digest, and each
    append adds an empty history entry (whose zero `created` Go still writes).
    """
    return go_json(
        {
            "architecture": "",
            "created": _GO_ZERO_TIME,
            "history": [{"created": _GO_ZERO_TIME} for _ in layer_digests],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
            "config": {},
        }
    )


def signature_manifest(layer_descriptors: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    """(config, manifest) of a `.sig`/`.att` image holding these layer descriptors."""
    layers = [_go_descriptor(d) for d in layer_descriptors]
    config = signature_config([d["digest"] for d in layers])
    manifest = go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": descriptor(OCI_CONFIG_MEDIA_TYPE, config),
            "layers": layers,
        }
    )
    return config, manifest


def legacy_layer_descriptor(layer: LegacyLayer) -> dict[str, Any]:
    """The manifest descriptor of one cosign signature/attestation layer."""
    return descriptor(layer.media_type, layer.blob, annotations=layer.annotations)


def referrer_manifest(
    subject: ImageInfo, bundle: bytes, predicate_type: str, *, created: datetime | None = None
) -> bytes:
    """The manifest cosign's `WriteAttestationNewBundleFormat` pushes for one bundle."""
    moment = (created or datetime.now(UTC)).astimezone(UTC)
    return go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": descriptor(
                OCI_EMPTY_MEDIA_TYPE, EMPTY_CONFIG, artifact_type=BUNDLE_V03_MEDIA_TYPE
            ),
            "layers": [descriptor(BUNDLE_V03_MEDIA_TYPE, bundle)],
            "annotations": {
                ANNOTATION_BUNDLE_CONTENT: "dsse-envelope",
                ANNOTATION_BUNDLE_PREDICATE_TYPE: predicate_type,
                ANNOTATION_CREATED: moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "subject": subject.descriptor(),
            "artifactType": BUNDLE_V03_MEDIA_TYPE,
        }
    )


def referrers_index(descriptors: Sequence[Mapping[str, Any]]) -> bytes:
    """The fallback-tag index as ggcr writes it: descriptors sorted by digest."""
    ordered = sorted((_go_descriptor(d) for d in descriptors), key=lambda d: str(d["digest"]))
    return go_json({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": ordered})


def _is_duplicate(existing: Mapping[str, Any], new: LegacyLayer) -> bool:
    # cosign's DupeDetector: same digest and media type, every new annotation except the
    # signature present with the same value, and the stored signature verifies under the
    # new signer's key. An empty stored signature (attestations) never counts as a dupe.
    if existing.get("digest") != new.digest or existing.get("mediaType") != new.media_type:
        return False
    stored = existing.get("annotations") or {}
    for key, value in new.annotations.items():
        if key != ANNOTATION_SIGNATURE and stored.get(key) != value:
            return False
    stored_signature = stored.get(ANNOTATION_SIGNATURE, "")
    if not stored_signature:
        return False
    if new.public_key is None:
        return bool(stored_signature == new.annotations.get(ANNOTATION_SIGNATURE))
    try:
        signature = base64.b64decode(stored_signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    return verify_data(new.public_key, signature, new.blob)


def _info(raw: bytes, media_type: str) -> ImageInfo:
    return ImageInfo(digest=sha256_digest(raw), media_type=media_type, size=len(raw))


# --- Push helpers -----------------------------------------------------------------------


async def push_image(
    client: RegistryWriter,
    repository: str,
    tag: str | None,
    *,
    seed: int | None = None,
    platform: tuple[str, str, str | None] = ("linux", "amd64", None),
) -> ImageInfo:
    """Push a fresh random image (by `tag`, or by digest when tag is None)."""
    if seed is None:
        seed = random.SystemRandom().getrandbits(62)
    os_, arch, variant = platform
    config, layer, manifest = random_image(seed, os=os_, architecture=arch, variant=variant)
    await client.put_blob(repository, config)
    await client.put_blob(repository, layer)
    info = _info(manifest, OCI_MANIFEST_MEDIA_TYPE)
    await client.put_manifest(repository, tag or info.digest, manifest, OCI_MANIFEST_MEDIA_TYPE)
    return info


async def push_index(
    client: RegistryWriter,
    repository: str,
    tag: str | None,
    platforms: int = 2,
    *,
    seed: int | None = None,
) -> ImageInfo:
    """Push a multi-arch OCI index whose per-platform manifests are pushed by digest only."""
    if not 1 <= platforms <= len(_PLATFORMS):
        raise ValueError(f"platforms must be 1..{len(_PLATFORMS)}")
    if seed is None:
        seed = random.SystemRandom().getrandbits(62)
    children: list[tuple[bytes, Mapping[str, str]]] = []
    infos: list[ImageInfo] = []
    for n, (os_, arch, variant) in enumerate(_PLATFORMS[:platforms]):
        config, layer, manifest = random_image(
            seed * 16 + n, os=os_, architecture=arch, variant=variant
        )
        await client.put_blob(repository, config)
        await client.put_blob(repository, layer)
        info = _info(manifest, OCI_MANIFEST_MEDIA_TYPE)
        await client.put_manifest(repository, info.digest, manifest, OCI_MANIFEST_MEDIA_TYPE)
        platform = {"architecture": arch, "os": os_}
        if variant:
            platform["variant"] = variant
        children.append((manifest, platform))
        infos.append(info)
    index = image_index(children)
    index_info = ImageInfo(
        digest=sha256_digest(index),
        media_type=OCI_INDEX_MEDIA_TYPE,
        size=len(index),
        manifests=tuple(infos),
    )
    await client.put_manifest(repository, tag or index_info.digest, index, OCI_INDEX_MEDIA_TYPE)
    return index_info


async def attach_legacy(
    client: RegistryWriter,
    repository: str,
    digest: str,
    layers: Sequence[LegacyLayer],
    suffix: str = "sig",
) -> ImageInfo:
    """Append layers to the `sha256-<hex>.<suffix>` image as `cosign sign`/`attest` does.

    Read-modify-write, racy exactly like cosign's: concurrent callers can lose layers.
    """
    tag = attachment_tag(digest, suffix)
    existing = await client.get_manifest_optional(repository, tag)
    descriptors: list[dict[str, Any]] = []
    if existing is not None:
        parsed = json.loads(existing.raw)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("layers"), list):
            raise ValueError(f"{repository}:{tag} is not an image manifest")
        descriptors = [_go_descriptor(d) for d in parsed["layers"]]
    for layer in layers:
        if any(_is_duplicate(d, layer) for d in descriptors):
            continue
        await client.put_blob(repository, layer.blob)
        descriptors.append(legacy_layer_descriptor(layer))
    config, manifest = signature_manifest(descriptors)
    await client.put_blob(repository, config)
    await client.put_manifest(repository, tag, manifest, OCI_MANIFEST_MEDIA_TYPE)
    return _info(manifest, OCI_MANIFEST_MEDIA_TYPE)


async def attach_referrer(
    client: RegistryWriter,
    repository: str,
    subject: ImageInfo,
    bundle: bytes,
    predicate_type: str,
    *,
    created: datetime | None = None,
    fallback_tag: bool = True,
) -> ImageInfo:
    """Push a bundle as a referrer of `subject`, then update the referrers fallback tag.

    The fallback step is what ggcr does after a 404 from the referrers API (every
    distribution 2.x/3.x registry): it copies only mediaType/size/digest/artifactType into
    the index, never the manifest's annotations.
    """
    await client.put_blob(repository, EMPTY_CONFIG)
    await client.put_blob(repository, bundle)
    manifest = referrer_manifest(subject, bundle, predicate_type, created=created)
    info = _info(manifest, OCI_MANIFEST_MEDIA_TYPE)
    await client.put_manifest(repository, info.digest, manifest, OCI_MANIFEST_MEDIA_TYPE)
    if not fallback_tag:
        return info

    tag = attachment_tag(subject.digest, None)
    entry = {**info.descriptor(), "artifactType": BUNDLE_V03_MEDIA_TYPE}
    existing = await client.get_manifest_optional(repository, tag)
    descriptors: list[Mapping[str, Any]] = [entry]
    if existing is not None:
        parsed = json.loads(existing.raw)
        if parsed.get("schemaVersion") != 2 or parsed.get("mediaType") != OCI_INDEX_MEDIA_TYPE:
            raise ValueError(f"{repository}:{tag} is not an OCI image index")
        current = list(parsed.get("manifests") or [])
        if any(d.get("digest") == info.digest for d in current):
            return info
        descriptors = [*current, entry]
    await client.put_manifest(repository, tag, referrers_index(descriptors), OCI_INDEX_MEDIA_TYPE)
    return info
