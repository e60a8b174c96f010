"""Verifying cosign's tag-based material (``.sig`` and ``.att`` layers) offline, as cosign does.

Keyless: the SET establishes a trusted time, the Fulcio chain must hold at that time, the SCT
must verify, the signature must verify over the payload (or DSSE PAE), the log entry must
describe this very signature, and the payload must name this digest. Key-based: the signature
must verify under a trusted key; a tlog entry, when attached, must hold too. A key-signed layer
that no trusted key verifies is still proven valid when its tlog entry names the key, which lets
the policy say "signed, but by a key we do not know" instead of "broken".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from watcher._sigstore import VerificationError, verify_chain_at, verify_sct
from watcher.refs import Digest
from watcher.verdicts import Format, Signer, rfc3339
from watcher.verify.certs import load_pem_certificates, signer_from_certificate, signer_from_key
from watcher.verify.intoto import (
    INTOTO_PAYLOAD_TYPE,
    Envelope,
    MaterialError,
    Statement,
    b64decode_strict,
    simple_signing_digest,
)
from watcher.verify.keys import signature_valid
from watcher.verify.material import Finding, Kind, LegacyLayer, TrustedKey
from watcher.verify.tlog import LogPromise, TlogError, body_public_key, check_body
from watcher.verify.trust import Trust

ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANN_CHAIN = "dev.sigstore.cosign/chain"
ANN_BUNDLE = "dev.sigstore.cosign/bundle"
ANN_PREDICATE_TYPE = "predicateType"
SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


class _Rejected(Exception):
    """Internal: the material fails a check; carries the reason shown to users."""


def verify_legacy(
    layer: LegacyLayer, digest: Digest, trust: Trust, keys: Sequence[TrustedKey]
) -> Finding:
    """Verify one `.sig`/`.att` layer for ``digest``; never raises on hostile input."""
    fmt = Format.LEGACY if ANN_CERTIFICATE in layer.annotations else Format.KEY
    predicate_type = (
        layer.annotations.get(ANN_PREDICATE_TYPE) if layer.kind is Kind.ATTESTATION else None
    )
    try:
        signed, signature, payload, payload_type = _signed_bytes(layer)
        if layer.kind is Kind.ATTESTATION:
            predicate_type = _check_attestation_payload(payload_type, payload, digest)
        promise = (
            LogPromise.from_annotation(layer.annotations[ANN_BUNDLE])
            if ANN_BUNDLE in layer.annotations
            else None
        )
        if fmt is Format.LEGACY:
            signer = _verify_keyless(layer, trust, signed, signature, payload, promise)
        else:
            signer = _verify_keyed(trust, keys, signed, signature, payload, promise)
        if layer.kind is Kind.SIGNATURE:
            claimed = simple_signing_digest(payload)
            if claimed.lower() != digest:
                raise _Rejected(
                    f"signature is for another image: payload names {claimed}, not {digest}"
                )
    except (_Rejected, MaterialError, TlogError) as exc:
        return Finding.invalid(
            layer.kind,
            fmt,
            layer.source,
            str(exc),
            predicate_type=predicate_type,
        )
    return Finding(
        kind=layer.kind,
        format=fmt,
        valid=True,
        source=layer.source,
        signer=signer,
        predicate_type=predicate_type,
        tlog=promise.evidence() if promise else None,
    )


def _signed_bytes(layer: LegacyLayer) -> tuple[bytes, bytes, bytes, str]:
    """(bytes signed, signature, payload, payload type) for a `.sig` or `.att` layer."""
    if layer.kind is Kind.SIGNATURE:
        if ANN_SIGNATURE not in layer.annotations:
            raise MaterialError(f"layer has no {ANN_SIGNATURE} annotation")
        signature = b64decode_strict(layer.annotations[ANN_SIGNATURE], ANN_SIGNATURE)
        return layer.blob, signature, layer.blob, SIMPLESIGNING_MEDIA_TYPE
    envelope = Envelope.parse(layer.blob)
    if len(envelope.signatures) != 1:
        raise MaterialError(f"DSSE envelope has {len(envelope.signatures)} signatures; want 1")
    return envelope.pae(), envelope.signatures[0], envelope.payload, envelope.payload_type


def _check_attestation_payload(envelope_type: str, payload: bytes, digest: Digest) -> str:
    """An attestation must be an in-toto statement about this digest; returns its predicate."""
    if envelope_type != INTOTO_PAYLOAD_TYPE:
        raise _Rejected(f"DSSE payloadType is {envelope_type!r}, want {INTOTO_PAYLOAD_TYPE}")
    statement = Statement.parse(payload)
    if not statement.covers(digest):
        raise _Rejected(
            f"attestation subject is another image ({', '.join(statement.subject_digests)}), "
            f"not {digest}"
        )
    return statement.predicate_type


def _verify_keyless(
    layer: LegacyLayer,
    trust: Trust,
    signed: bytes,
    signature: bytes,
    payload: bytes,
    promise: LogPromise | None,
) -> Signer:
    cert = load_pem_certificates(layer.annotations[ANN_CERTIFICATE], ANN_CERTIFICATE)[0]
    if promise is None:
        raise _Rejected(
            "keyless signature has no transparency-log bundle annotation, so there is no trusted "
            "time to check its short-lived certificate against (cosign would search Rekor online)"
        )
    promise.verify(trust.rekor)
    when = datetime.fromtimestamp(promise.integrated_time, UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise _Rejected(
            "certificate was not valid when the log recorded the signature "
            f"({rfc3339(when)}; valid {rfc3339(cert.not_valid_before_utc)} to "
            f"{rfc3339(cert.not_valid_after_utc)}): expired certificate without a trusted time"
        )
    try:
        chain = verify_chain_at(trust.verifier, cert, when)
    except VerificationError as exc:
        raise _Rejected(f"certificate does not chain to the trusted Fulcio CA: {exc}") from None
    try:
        verify_sct(cert, chain, trust.ct)
    except (VerificationError, ValueError) as exc:
        raise _Rejected(f"certificate's embedded SCT does not verify: {exc}") from None
    _check_code_signing(cert)
    if not signature_valid(cert.public_key(), signature, signed):
        raise _Rejected("signature does not verify with the certificate's key (altered payload?)")
    check_body(promise.body(), signature=signature, payload=payload, public_key=cert.public_key())
    return signer_from_certificate(cert)


def _check_code_signing(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise _Rejected(f"certificate lacks a required extension: {exc}") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise _Rejected("certificate is not for code signing (KeyUsage/EKU)")


def _verify_keyed(
    trust: Trust,
    keys: Sequence[TrustedKey],
    signed: bytes,
    signature: bytes,
    payload: bytes,
    promise: LogPromise | None,
) -> Signer:
    for key in keys:
        if signature_valid(key.public_key, signature, signed):
            if promise is not None:
                promise.verify(trust.rekor)
                check_body(
                    promise.body(), signature=signature, payload=payload, public_key=key.public_key
                )
            return Signer(key_id=key.key_id)
    if promise is None:
        raise _Rejected(
            "signature does not verify with any key the policies trust, and has no "
            "transparency-log entry naming its key"
        )
    # Not one of ours: the log entry names the key, so the signature can still be proven
    # valid, and the decision can report an unexpected (not a broken) signer.
    promise.verify(trust.rekor)
    body = promise.body()
    pem = body_public_key(body)
    try:
        if b"CERTIFICATE" in pem:
            raise _Rejected("tlog entry names a certificate but the layer carries none")
        key_from_log = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise _Rejected(f"tlog entry public key is not PEM: {exc}") from None
    if not signature_valid(key_from_log, signature, signed):
        raise _Rejected("signature does not verify with any trusted key nor with the logged key")
    check_body(body, signature=signature, payload=payload, public_key=key_from_log)
    return signer_from_key(key_from_log)
