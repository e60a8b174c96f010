"""cosign's offline transparency-log check: the Signed Entry Timestamp and the entry body.

Legacy cosign material carries a Rekor SET but no inclusion proof, which sigstore-python will
not verify. cosign's own offline rule is: the SET must be a signature by a trusted log key over
the RFC 8785 canonical form of ``{body, integratedTime, logIndex, logID}``, and the entry body
must describe exactly this signature, this signer and this payload. A valid SET is also what
makes ``integratedTime`` a trusted time for checking a short-lived Fulcio certificate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)

from watcher._sigstore import RekorKeyring, VerificationError, verify_log_signature
from watcher.verdicts import TlogEvidence
from watcher.verify.intoto import MaterialError, b64decode_strict, load_json_object


class TlogError(Exception):
    """The transparency-log evidence does not hold; the message says which part."""


@dataclass(frozen=True)
class LogPromise:
    """A parsed ``dev.sigstore.cosign/bundle`` annotation (or a bundle's inclusion promise)."""

    body_b64: str
    integrated_time: int
    log_index: int
    log_id_hex: str
    signed_entry_timestamp: bytes

    @classmethod
    def from_annotation(cls, raw: str) -> LogPromise:
        """Parse cosign's bundle annotation JSON."""
        obj = load_json_object(raw.encode(), "dev.sigstore.cosign/bundle annotation")
        payload = obj.get("Payload")
        if not isinstance(payload, dict):
            raise MaterialError("dev.sigstore.cosign/bundle: Payload missing")
        body = payload.get("body")
        itime = payload.get("integratedTime")
        index = payload.get("logIndex")
        log_id = payload.get("logID")
        if not isinstance(body, str) or not isinstance(log_id, str):
            raise MaterialError("dev.sigstore.cosign/bundle: body or logID missing")
        if not isinstance(itime, int | str) or not isinstance(index, int | str):
            raise MaterialError("dev.sigstore.cosign/bundle: integratedTime/logIndex missing")
        if not _is_int(itime) or not _is_int(index):
            raise MaterialError("dev.sigstore.cosign/bundle: integratedTime/logIndex not integers")
        set_bytes = b64decode_strict(obj.get("SignedEntryTimestamp"), "SignedEntryTimestamp")
        return cls(body, int(itime), int(index), log_id.lower(), set_bytes)

    def canonical_payload(self) -> bytes:
        """The bytes the log signed: RFC 8785 JSON, exactly as Rekor and cosign compute it."""
        return rfc8785.dumps(
            {
                "body": self.body_b64,
                "integratedTime": self.integrated_time,
                "logID": self.log_id_hex,
                "logIndex": self.log_index,
            }
        )

    def verify(self, keyring: RekorKeyring) -> None:
        """Check the SET against the trust root's transparency-log keys."""
        try:
            log_id = bytes.fromhex(self.log_id_hex)
        except ValueError:
            raise TlogError(f"transparency-log logID is not hex: {self.log_id_hex!r}") from None
        try:
            verify_log_signature(
                keyring, log_id, self.signed_entry_timestamp, self.canonical_payload()
            )
        except VerificationError as exc:
            raise TlogError(
                f"signed entry timestamp (SET) does not verify with any trusted transparency-log "
                f"key (logID {self.log_id_hex[:16]}…): {exc}"
            ) from None

    def body(self) -> dict[str, Any]:
        """The decoded Rekor entry body."""
        return load_json_object(b64decode_strict(self.body_b64, "tlog entry body"), "tlog body")

    def evidence(self) -> TlogEvidence:
        """What the evidence trail records about the entry."""
        return TlogEvidence(self.log_index, self.integrated_time, self.log_id_hex)


def _is_int(value: object) -> bool:
    """A JSON integer, or a string of at most 20 ASCII digits (int() accepts far more)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit()


def _public_key_der(pem_b64: object, what: str) -> bytes:
    """The SPKI DER of the key or certificate a tlog body names (base64 of PEM)."""
    pem = b64decode_strict(pem_b64, what)
    try:
        if b"CERTIFICATE" in pem:
            return _spki(x509.load_pem_x509_certificate(pem).public_key())
        return _spki(serialization.load_pem_public_key(pem))
    except ValueError as exc:
        raise TlogError(f"{what}: not a PEM certificate or public key ({exc})") from None


def _spki(key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def body_public_key(body: dict[str, Any]) -> bytes:
    """The PEM key or certificate a hashedrekord/rekord body names (for unknown-key signers)."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise TlogError("tlog entry body has no spec")
    sig = spec.get("signature")
    key = sig.get("publicKey") if isinstance(sig, dict) else None
    content = key.get("content") if isinstance(key, dict) else None
    if content is None:
        raise TlogError("tlog entry body names no public key")
    return b64decode_strict(content, "tlog entry public key")


def check_body(
    body: dict[str, Any],
    *,
    signature: bytes,
    payload: bytes,
    public_key: PublicKeyTypes,
) -> None:
    """The entry must be about this signature, this key/certificate and these payload bytes.

    Without this a valid SET for some other signature could be replayed next to a forged one
    (the CVE-2022-36056 family). Keys and certificates are compared as public keys, not as
    base64 strings, so re-encoded PEM does not cause false alarms.
    """
    kind = body.get("kind")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise TlogError("tlog entry body has no spec")
    want_hash = hashlib.sha256(payload).hexdigest()
    want_key = _spki(public_key)
    if kind in ("hashedrekord", "rekord"):
        sig = spec.get("signature")
        data = spec.get("data")
        if not isinstance(sig, dict) or not isinstance(data, dict):
            raise TlogError(f"{kind} tlog entry: signature or data missing")
        if b64decode_strict(sig.get("content"), "tlog signature") != signature:
            raise TlogError("tlog entry records a different signature than the one attached")
        key = sig.get("publicKey")
        if not isinstance(key, dict) or _public_key_der(key.get("content"), "tlog key") != want_key:
            raise TlogError("tlog entry records a different signing key or certificate")
        hash_ = data.get("hash")
        if isinstance(hash_, dict):
            if hash_.get("algorithm") != "sha256" or hash_.get("value") != want_hash:
                raise TlogError("tlog entry records a different payload hash")
        elif "content" in data:
            content = b64decode_strict(data.get("content"), "tlog data content")
            if content != payload:
                raise TlogError("tlog entry records a different payload")
        else:
            raise TlogError(f"{kind} tlog entry: no payload hash")
        return
    if kind == "dsse":
        payload_hash = spec.get("payloadHash")
        if not isinstance(payload_hash, dict) or payload_hash.get("value") != want_hash:
            raise TlogError("dsse tlog entry records a different payload hash")
        entries = spec.get("signatures")
        if not isinstance(entries, list):
            raise TlogError("dsse tlog entry: signatures missing")
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if (
                b64decode_strict(entry.get("signature"), "tlog dsse signature") == signature
                and _public_key_der(entry.get("verifier"), "tlog dsse verifier") == want_key
            ):
                return
        raise TlogError("dsse tlog entry does not record this signature and signer")
    if kind == "intoto":
        intoto = spec.get("content")
        if not isinstance(intoto, dict):
            raise TlogError("intoto tlog entry: content missing")
        payload_hash = intoto.get("payloadHash")
        if not isinstance(payload_hash, dict) or payload_hash.get("value") != want_hash:
            raise TlogError("intoto tlog entry records a different payload hash")
        keys: list[object] = []
        if "publicKey" in spec:
            keys.append(spec.get("publicKey"))
        envelope = intoto.get("envelope")
        if isinstance(envelope, dict):
            for s in envelope.get("signatures") or []:
                if isinstance(s, dict):
                    keys.append(s.get("publicKey"))
        if not any(_public_key_der(k, "intoto key") == want_key for k in keys if k):
            raise TlogError("intoto tlog entry records a different signing key or certificate")
        return
    raise TlogError(f"unsupported transparency-log entry kind {kind!r}")
