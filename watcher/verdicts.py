"""Verdicts and the evidence behind them: the contract's vocabulary as typed values.

Everything downstream (CLI JSON, store, metrics, alerts) speaks in these types, so the
strings of the contract live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from watcher.refs import Digest


class Verdict(StrEnum):
    """One verdict per (image digest, policy); stable strings from the contract."""

    VERIFIED = "verified"
    PENDING = "pending"
    UNSIGNED = "unsigned"
    UNEXPECTED_SIGNER = "unexpected_signer"
    INVALID_SIGNATURE = "invalid_signature"
    MISSING_ATTESTATION = "missing_attestation"
    NO_POLICY = "no_policy"
    ERROR = "error"

    @property
    def failing(self) -> bool:
        """True for verdicts that alert and make `verify` exit 1."""
        return self in _FAILING

    @property
    def seriousness(self) -> int:
        """Larger is more serious; the image's verdict is its policies' most serious."""
        return _SERIOUSNESS[self]


# The contract's order, most serious first.
_ORDER = [
    Verdict.ERROR,
    Verdict.INVALID_SIGNATURE,
    Verdict.UNEXPECTED_SIGNER,
    Verdict.UNSIGNED,
    Verdict.MISSING_ATTESTATION,
    Verdict.PENDING,
    Verdict.VERIFIED,
    Verdict.NO_POLICY,
]
_SERIOUSNESS = {v: len(_ORDER) - i for i, v in enumerate(_ORDER)}
_FAILING = frozenset(
    {
        Verdict.UNSIGNED,
        Verdict.UNEXPECTED_SIGNER,
        Verdict.INVALID_SIGNATURE,
        Verdict.MISSING_ATTESTATION,
    }
)


def most_serious(verdicts: list[Verdict]) -> Verdict:
    """The image-level verdict for a list of per-policy verdicts."""
    if not verdicts:
        return Verdict.NO_POLICY
    return max(verdicts, key=lambda v: v.seriousness)


class Mode(StrEnum):
    """A policy in `warn` mode alerts as warning; `enforce` as critical."""

    ENFORCE = "enforce"
    WARN = "warn"


class Severity(StrEnum):
    """Alert severity carried in verdict JSON and alert labels."""

    NONE = "none"
    WARNING = "warning"
    CRITICAL = "critical"


class Format(StrEnum):
    """How signature material was stored and signed."""

    BUNDLE = "bundle"  # Sigstore bundle (v0.3) found as an OCI referrer
    LEGACY = "legacy"  # cosign .sig/.att tag, keyless certificate
    KEY = "key"  # cosign .sig/.att tag signed with a public key


@dataclass(frozen=True)
class TlogEvidence:
    """Where the transparency log recorded a signature."""

    log_index: int
    integrated_time: int | None
    log_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Contract shape: log_index and integrated_time."""
        return {"log_index": self.log_index, "integrated_time": self.integrated_time}


@dataclass(frozen=True)
class Signer:
    """Who produced a cryptographically valid signature: a keyless identity or a key."""

    issuer: str | None = None
    subject: str | None = None
    key_id: str | None = None  # sha256 of the DER public key, hex, for key-based signers
    extensions: tuple[tuple[str, str], ...] = ()  # Fulcio claims (name, value), e.g. workflow

    def describe(self) -> str:
        """A short human-readable name for alerts and reasons."""
        if self.subject is not None:
            return f"{self.subject} (issuer {self.issuer})"
        return f"key sha256:{self.key_id}"

    def claims(self) -> dict[str, str]:
        """The certificate's CI claims by name (workflow, repository, run), for the record."""
        return dict(self.extensions)


@dataclass(frozen=True)
class SignatureEvidence:
    """One piece of signature material and what became of it."""

    format: Format
    valid: bool
    signer: Signer | None = None
    authority: str | None = None
    tlog: TlogEvidence | None = None
    error: str | None = None
    source: str = ""  # where it was found: tag or referrer digest, for the evidence trail

    def to_json(self) -> dict[str, Any]:
        """Contract shape of an entry in `signatures`."""
        return {
            "format": str(self.format),
            "valid": self.valid,
            "authority": self.authority,
            "issuer": self.signer.issuer if self.signer else None,
            "subject": self.signer.subject if self.signer else None,
            "key_id": self.signer.key_id if self.signer else None,
            "extensions": self.signer.claims() if self.signer else {},
            "tlog": self.tlog.to_json() if self.tlog else None,
            "error": self.error,
            "source": self.source,
        }


@dataclass(frozen=True)
class AttestationEvidence:
    """One attestation and whether it verified (and for whom)."""

    predicate_type: str | None
    valid: bool
    format: Format
    signer: Signer | None = None
    authority: str | None = None
    tlog: TlogEvidence | None = None
    error: str | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """Contract shape of an entry in `attestations`."""
        return {
            "predicate_type": self.predicate_type,
            "valid": self.valid,
            "format": str(self.format),
            "authority": self.authority,
            "issuer": self.signer.issuer if self.signer else None,
            "subject": self.signer.subject if self.signer else None,
            "key_id": self.signer.key_id if self.signer else None,
            "extensions": self.signer.claims() if self.signer else {},
            "tlog": self.tlog.to_json() if self.tlog else None,
            "error": self.error,
            "source": self.source,
        }


@dataclass(frozen=True)
class PolicyResult:
    """The verdict one policy gives one image, with its reasons."""

    name: str
    verdict: Verdict
    mode: Mode
    reasons: tuple[str, ...] = ()
    extra_signers: tuple[Signer, ...] = ()
    policy_hash: str = ""

    @property
    def severity(self) -> Severity:
        """Severity an alert for this result would carry."""
        if not self.verdict.failing and self.verdict is not Verdict.ERROR:
            return Severity.WARNING if self.extra_signers else Severity.NONE
        return Severity.CRITICAL if self.mode is Mode.ENFORCE else Severity.WARNING

    def to_json(self) -> dict[str, Any]:
        """Contract shape of an entry in `policies`."""
        return {"name": self.name, "verdict": str(self.verdict), "mode": str(self.mode)}


def utcnow() -> datetime:
    """Aware UTC now; one place so tests and code agree on the clock."""
    return datetime.now(UTC)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 with a Z suffix, second precision."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ImageVerdict:
    """Everything the watcher decided about one image digest in one repository."""

    registry: str
    registry_host: str
    repository: str
    digest: Digest
    tags: tuple[str, ...]
    policies: tuple[PolicyResult, ...]
    signatures: tuple[SignatureEvidence, ...] = ()
    attestations: tuple[AttestationEvidence, ...] = ()
    reasons: tuple[str, ...] = ()
    checked_at: datetime = field(default_factory=utcnow)
    error: bool = False

    @property
    def verdict(self) -> Verdict:
        """The most serious of the policies' verdicts."""
        return most_serious([p.verdict for p in self.policies])

    @property
    def worst(self) -> PolicyResult | None:
        """The policy result that decides the image verdict."""
        if not self.policies:
            return None
        return max(self.policies, key=lambda p: (p.verdict.seriousness, p.severity == "critical"))

    @property
    def severity(self) -> Severity:
        """The highest severity among the policy results."""
        order = [Severity.NONE, Severity.WARNING, Severity.CRITICAL]
        return max((p.severity for p in self.policies), key=order.index, default=Severity.NONE)

    @property
    def image(self) -> str:
        """``registry/repository@digest`` with the registry's host as users type it."""
        return f"{self.registry_host}/{self.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        """The contract's image verdict JSON."""
        worst = self.worst
        extra: list[dict[str, Any]] = []
        seen: set[Signer] = set()
        for p in self.policies:
            for s in p.extra_signers:
                if s not in seen:
                    seen.add(s)
                    extra.append({"issuer": s.issuer, "subject": s.subject, "key_id": s.key_id})
        reasons = list(self.reasons)
        for p in self.policies:
            reasons.extend(f"{p.name}: {r}" for r in p.reasons)
        return {
            "image": self.image,
            "registry": self.registry,
            "repository": self.repository,
            "digest": self.digest,
            "tags": list(self.tags),
            "policy": worst.name if worst else None,
            "verdict": str(self.verdict),
            "severity": str(self.severity),
            "checked_at": rfc3339(self.checked_at),
            "policies": [p.to_json() for p in self.policies],
            "signatures": [s.to_json() for s in self.signatures],
            "attestations": [a.to_json() for a in self.attestations],
            "extra_signers": extra,
            "reasons": reasons,
        }
