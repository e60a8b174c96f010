"""Verifying Sigstore bundles (cosign v3's default) with sigstore-python.

sigstore-python does the cryptography: certificate chain at the log's time, SCT, inclusion
proof and signed checkpoint, SET, DSSE signature, entry-body consistency. It does not check
what was signed, so the watcher does: the payload must be an in-toto statement whose subject is
this digest; its predicate type tells an image signature (``sigstore.dev/cosign/sign/v1``) from
an attestation. Identity is *not* passed to sigstore-python as a policy: the watcher records who
signed and lets the policy decision say whether that signer is welcome, so a valid signature by
a stranger is reported as such rather than as a broken one.

Key-based bundles (``cosign sign --key --new-bundle-format``) carry a public-key hint instead
of a certificate, which sigstore-python cannot verify; they are checked here against the keys
the policies trust, with the tlog promise and body checked as for legacy material.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle

from watcher.refs import Digest
from watcher.verdicts import Format, Signer, TlogEvidence
from watcher.verify.certs import signer_from_certificate
from watcher.verify.intoto import (
    INTOTO_PAYLOAD_TYPE,
    Envelope,
    MaterialError,
    Statement,
    b64decode_strict,
)
from watcher.verify.keys import signature_valid
from watcher.verify.material import BundleArtifact, Finding, Kind, TrustedKey
from watcher.verify.tlog import LogPromise, TlogError, check_body
from watcher.verify.trust import Trust

BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"


class _AcceptAnyIdentity:
    """A verification policy that lets every identity through; identity is decided later."""

    def verify(self, cert: x509.Certificate) -> None:
        """Accept; the watcher's policy decision matches the identity itself."""


def _kind_for(predicate_type: str | None) -> Kind:
    if predicate_type == "https://sigstore.dev/cosign/sign/v1":
        return Kind.SIGNATURE
    return Kind.ATTESTATION if predicate_type else Kind.SIGNATURE


def verify_bundle(
    artifact: BundleArtifact, digest: Digest, trust: Trust, keys: Sequence[TrustedKey]
) -> Finding:
    """Verify one referrer bundle for ``digest``; never raises on hostile input."""
    hint = artifact.predicate_type_hint
    try:
        doc = json.loads(artifact.bundle)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Finding.invalid(
            _kind_for(hint),
            Format.BUNDLE,
            artifact.source,
            f"bundle is not valid JSON: {exc}",
            predicate_type=hint,
        )
    if not isinstance(doc, dict):
        return Finding.invalid(
            _kind_for(hint),
            Format.BUNDLE,
            artifact.source,
            "bundle is not a JSON object",
            predicate_type=hint,
        )
    material = doc.get("verificationMaterial")
    if isinstance(material, dict) and "publicKey" in material:
        return _verify_key_bundle(doc, artifact, digest, trust, keys)
    try:
        bundle = Bundle.from_json(artifact.bundle)
        if bundle._dsse_envelope is None:
            raise MaterialError(
                "bundle holds a message signature, not a DSSE statement: it cannot name an "
                "image digest (cosign signs images with DSSE)"
            )
        payload_type, payload = trust.verifier.verify_dsse(bundle, _AcceptAnyIdentity())
        statement = _check_statement(payload_type, payload, digest)
        signer = signer_from_certificate(bundle.signing_certificate)
    except (SigstoreError, MaterialError, ValueError) as exc:
        return Finding.invalid(
            _kind_for(hint),
            Format.BUNDLE,
            artifact.source,
            f"bundle does not verify: {exc}",
            predicate_type=hint,
        )
    return Finding(
        kind=_kind_for(statement.predicate_type),
        format=Format.BUNDLE,
        valid=True,
        source=artifact.source,
        signer=signer,
        predicate_type=statement.predicate_type,
        tlog=_tlog_evidence(doc),
    )


def _check_statement(payload_type: str, payload: bytes, digest: Digest) -> Statement:
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise MaterialError(f"DSSE payloadType is {payload_type!r}, want {INTOTO_PAYLOAD_TYPE}")
    statement = Statement.parse(payload)
    if not statement.covers(digest):
        raise MaterialError(
            f"statement subject is another image ({', '.join(statement.subject_digests)}), "
            f"not {digest}"
        )
    return statement


def _tlog_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    material = doc.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        return entries[0]
    return None


def _tlog_evidence(doc: dict[str, Any]) -> TlogEvidence | None:
    entry = _tlog_entry(doc)
    if entry is None:
        return None
    try:
        index = int(entry.get("logIndex", 0))
        itime = entry.get("integratedTime")
        log_id = entry.get("logId", {}).get("keyId")
        log_hex = b64decode_strict(log_id, "logId").hex() if log_id else None
        return TlogEvidence(index, int(itime) if itime is not None else None, log_hex)
    except (ValueError, TypeError, AttributeError, MaterialError):
        return None


def _verify_key_bundle(
    doc: dict[str, Any],
    artifact: BundleArtifact,
    digest: Digest,
    trust: Trust,
    keys: Sequence[TrustedKey],
) -> Finding:
    """A bundle signed with a key: DSSE signature under a trusted key, tlog promise if present."""
    hint = artifact.predicate_type_hint
    try:
        raw_envelope = doc.get("dsseEnvelope")
        if not isinstance(raw_envelope, dict):
            raise MaterialError("key-based bundle has no DSSE envelope")
        envelope = Envelope.parse(json.dumps(raw_envelope).encode())
        if len(envelope.signatures) != 1:
            raise MaterialError("DSSE envelope must carry exactly one signature")
        statement = _check_statement(envelope.payload_type, envelope.payload, digest)
        signature = envelope.signatures[0]
        signed = envelope.pae()
        key = next((k for k in keys if signature_valid(k.public_key, signature, signed)), None)
        if key is None:
            raise MaterialError("DSSE signature does not verify with any key the policies trust")
        entry = _tlog_entry(doc)
        tlog = None
        if entry is not None:
            promise = _promise_from_entry(entry)
            promise.verify(trust.rekor)
            check_body(
                promise.body(),
                signature=signature,
                payload=envelope.payload,
                public_key=key.public_key,
            )
            tlog = promise.evidence()
    except (MaterialError, TlogError) as exc:
        return Finding.invalid(
            _kind_for(hint),
            Format.KEY,
            artifact.source,
            f"bundle does not verify: {exc}",
            predicate_type=hint,
        )
    return Finding(
        kind=_kind_for(statement.predicate_type),
        format=Format.KEY,
        valid=True,
        source=artifact.source,
        signer=Signer(key_id=key.key_id),
        predicate_type=statement.predicate_type,
        tlog=tlog,
    )


def _promise_from_entry(entry: dict[str, Any]) -> LogPromise:
    """A bundle tlog entry's inclusion promise in the same shape as cosign's annotation."""
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict):
        raise TlogError("tlog entry has no inclusion promise (SET)")
    log_id = entry.get("logId", {})
    key_id = b64decode_strict(log_id.get("keyId") if isinstance(log_id, dict) else None, "logId")
    body = entry.get("canonicalizedBody")
    if not isinstance(body, str):
        raise MaterialError("tlog entry has no canonicalizedBody")
    try:
        return LogPromise(
            body_b64=body,
            integrated_time=int(entry["integratedTime"]),
            log_index=int(entry["logIndex"]),
            log_id_hex=key_id.hex(),
            signed_entry_timestamp=b64decode_strict(
                promise.get("signedEntryTimestamp"), "signedEntryTimestamp"
            ),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise MaterialError(f"tlog entry malformed: {exc}") from None
