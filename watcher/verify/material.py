"""What discovery hands to verification, and what verification hands to the policy decision.

Material is raw bytes plus where it was found; a Finding is the cryptographic outcome for one
signature or attestation, before any policy has said whether its signer is welcome. Keeping
the two apart is what lets the decision tell "valid but unexpected signer" from "invalid".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from watcher.verdicts import Format, Signer, TlogEvidence


class Kind(StrEnum):
    """A signature says "this image"; an attestation says something about it."""

    SIGNATURE = "signature"
    ATTESTATION = "attestation"


@dataclass(frozen=True)
class LegacyLayer:
    """One layer of a cosign ``sha256-<hex>.sig`` or ``.att`` manifest."""

    kind: Kind
    media_type: str
    blob: bytes
    annotations: Mapping[str, str]
    source: str


@dataclass(frozen=True)
class BundleArtifact:
    """A Sigstore bundle found as an OCI referrer (or through the referrers fallback tag)."""

    bundle: bytes
    predicate_type_hint: str | None
    source: str


@dataclass(frozen=True)
class UnreadableMaterial:
    """Material discovery found but could not read (too large, corrupt, lying registry)."""

    kind: Kind
    format: Format
    error: str
    source: str


Material = LegacyLayer | BundleArtifact | UnreadableMaterial


@dataclass(frozen=True)
class TrustedKey:
    """A public key some policy authority trusts; key-based material is checked against these."""

    key_id: str
    public_key: PublicKeyTypes = field(compare=False)


@dataclass(frozen=True)
class Finding:
    """The cryptographic outcome for one piece of material."""

    kind: Kind
    format: Format
    valid: bool
    source: str
    signer: Signer | None = None
    predicate_type: str | None = None
    tlog: TlogEvidence | None = None
    error: str | None = None

    @classmethod
    def invalid(cls, kind: Kind, fmt: Format, source: str, error: str, **kw: object) -> Finding:
        """A finding that did not verify, with the reason a human can act on."""
        return cls(kind=kind, format=fmt, valid=False, source=source, error=error, **kw)  # type: ignore[arg-type]
