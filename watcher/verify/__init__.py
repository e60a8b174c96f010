"""Cryptographic verification of signature material: who signed, and does it hold."""

from __future__ import annotations

from collections.abc import Sequence

from watcher.refs import Digest
from watcher.verdicts import Format
from watcher.verify.bundle import verify_bundle
from watcher.verify.legacy import verify_legacy
from watcher.verify.material import (
    BundleArtifact,
    Finding,
    Kind,
    LegacyLayer,
    Material,
    TrustedKey,
    UnreadableMaterial,
)
from watcher.verify.trust import Trust


def verify_material(
    material: Material, digest: Digest, trust: Trust, keys: Sequence[TrustedKey]
) -> Finding:
    """Verify one piece of material found for ``digest``; hostile input becomes a Finding.

    The format verifiers turn every failure they know of into an invalid finding; anything
    else (input nobody foresaw tripping a library) is caught here too, so one hostile layer
    can never stop the other material of the image from being judged.
    """
    try:
        if isinstance(material, LegacyLayer):
            return verify_legacy(material, digest, trust, keys)
        if isinstance(material, BundleArtifact):
            return verify_bundle(material, digest, trust, keys)
    except Exception as exc:
        fmt = Format.BUNDLE if isinstance(material, BundleArtifact) else Format.LEGACY
        kind = material.kind if isinstance(material, LegacyLayer) else Kind.SIGNATURE
        return Finding.invalid(
            kind, fmt, material.source, f"material could not be processed: {type(exc).__name__}"
        )
    assert isinstance(material, UnreadableMaterial)
    return Finding.invalid(material.kind, material.format, material.source, material.error)
