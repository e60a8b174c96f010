"""Cryptographic verification of signature material: who signed, and does it hold."""

from __future__ import annotations

from collections.abc import Sequence

from watcher.refs import Digest
from watcher.verify.bundle import verify_bundle
from watcher.verify.legacy import verify_legacy
from watcher.verify.material import (
    BundleArtifact,
    Finding,
    LegacyLayer,
    Material,
    TrustedKey,
    UnreadableMaterial,
)
from watcher.verify.trust import Trust


def verify_material(
    material: Material, digest: Digest, trust: Trust, keys: Sequence[TrustedKey]
) -> Finding:
    """Verify one piece of material found for ``digest``; hostile input becomes a Finding."""
    if isinstance(material, LegacyLayer):
        return verify_legacy(material, digest, trust, keys)
    if isinstance(material, BundleArtifact):
        return verify_bundle(material, digest, trust, keys)
    assert isinstance(material, UnreadableMaterial)
    return Finding.invalid(material.kind, material.format, material.source, material.error)
