"""A private Sigstore instance (Fulcio, CT log, Rekor) built in-process, and a cosign imitation.

Tests and the demo need signature material that is byte-for-byte what cosign puts in a
registry, and that the real sigstore-python verifier accepts, without network access and
without the public-good instance's keys. `SigstoreKit` owns a Fulcio-like CA (root +
intermediate, plus a second CA that no trust root lists), a CT log key that signs embedded
precertificate SCTs, and an RFC 6962 Merkle log keyed like Rekor. Its `sign_*`/`attest_*`
methods produce the three storage formats cosign writes (`.sig` simplesigning layers, `.att`
DSSE layers, Sigstore bundle v0.3) and take knobs for the hostile material that can only be
minted at signing time (bad SCT, untrusted CA, expired certificate, bad SET, bad proof).

Nothing here is production code: keys live in memory, and the private keys are exposed on
purpose so tests can forge variants.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

# --- Names cosign and Sigstore give to things (copied from the cosign/sigstore sources). ---

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_LAYER_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_V03_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
SIMPLESIGNING_TYPE = "cosign container image signature"

ANNOTATION_SIGNATURE = "dev.cosignproject.cosign/signature"
ANNOTATION_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANNOTATION_CHAIN = "dev.sigstore.cosign/chain"
ANNOTATION_BUNDLE = "dev.sigstore.cosign/bundle"
ANNOTATION_PREDICATE_TYPE = "predicateType"

OID_FULCIO_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
OID_FULCIO_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
OID_SOURCE_REPOSITORY_URI = "1.3.6.1.4.1.57264.1.12"
OID_SCT_LIST = "1.3.6.1.4.1.11129.2.4.2"

SctMode = Literal["valid", "bad", "none"]
CaMode = Literal["trusted", "untrusted"]
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_SCT_HASH_SHA256 = 4
_SCT_SIG_ECDSA = 3
_SCT_ENTRY_PRECERT = 1
_ONE_YEAR = timedelta(days=365)


# --- Small encoders ---------------------------------------------------------------------


def b64(data: bytes) -> str:
    """Standard base64 with padding, the encoding Go's encoding/json uses for []byte."""
    return base64.b64encode(data).decode("ascii")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256, the form Rekor bodies and in-toto subjects use."""
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> str:
    """An OCI digest string `sha256:<hex>` for `data`."""
    return "sha256:" + sha256_hex(data)


def go_json(value: Any) -> bytes:
    """Serialize like Go's `json.Marshal`: compact, UTF-8, with Go's HTML-safe escapes.

    Key order is the caller's: build dicts in Go struct-field order, and sort the ones that
    stand for Go maps (which Go sorts). Byte-exactness matters because cosign signs and
    digests these bytes, and tests compare them with what cosign would have produced.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode("utf-8")


def protojson(value: Any) -> bytes:
    """Serialize like Go's `protojson.Marshal` (compact, UTF-8, no HTML escaping).

    protojson may insert a random space after commas in some builds; we never do, which is
    one of the legal outputs.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def der_utf8_string(value: str) -> bytes:
    """DER UTF8String, the encoding of Fulcio's v2 (1.3.6.1.4.1.57264.1.8+) claims."""
    data = value.encode("utf-8")
    return b"\x0c" + _der_length(len(data)) + data


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _split_digest(digest: str) -> str:
    algorithm, sep, hex_ = digest.partition(":")
    if algorithm != "sha256" or not sep or len(hex_) != 64:
        raise ValueError(f"expected a sha256:<hex> digest, got {digest!r}")
    return hex_


def key_id(public_key: VerifyingKey) -> bytes:
    """RFC 6962 key ID: SHA-256 of the DER SubjectPublicKeyInfo (Rekor log IDs, CT log IDs)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def public_key_pem(public_key: VerifyingKey) -> bytes:
    """PEM `PUBLIC KEY`, the form cosign writes `cosign.pub` and Rekor stores keys in."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    # cosign's LoadDefaultSignerVerifier picks the hash from the curve size.
    if isinstance(curve, ec.SECP384R1):
        return hashes.SHA384()
    if isinstance(curve, ec.SECP521R1):
        return hashes.SHA512()
    return hashes.SHA256()


def sign_data(private_key: SigningKey, data: bytes) -> bytes:
    """Sign `data` the way cosign signs with a key of this type."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(_ecdsa_hash(private_key.curve)))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(data)


def verify_data(public_key: VerifyingKey, signature: bytes, data: bytes) -> bool:
    """Check a signature made by `sign_data`; False instead of an exception."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_ecdsa_hash(public_key.curve)))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, the bytes a DSSE signature covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


# --- Payloads cosign signs --------------------------------------------------------------


def simplesigning_payload(
    docker_reference: str, digest: str, annotations: Mapping[str, Any] | None = None
) -> bytes:
    """The `.sig` payload: sigstore/sigstore `payload.Cosign` through Go's json.Marshal."""
    _split_digest(digest)
    optional = None if not annotations else dict(sorted(annotations.items()))
    return go_json(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIMPLESIGNING_TYPE,
            },
            "optional": optional,
        }
    )


def intoto_statement_v01(
    subject_name: str,
    digest: str,
    predicate_type: str,
    predicate: Mapping[str, Any],
    *,
    protojson_order: bool = False,
) -> bytes:
    """The in-toto Statement v0.1 `cosign attest` signs.

    cosign up to v2 marshalled in-toto-golang structs (`_type, predicateType, subject,
    predicate`); cosign v3 uses protojson, which orders by field number (`_type, subject,
    predicateType, predicate`). The predicate keeps the caller's key order.
    """
    subject = [{"name": subject_name, "digest": {"sha256": _split_digest(digest)}}]
    if protojson_order:
        statement: dict[str, Any] = {
            "_type": STATEMENT_V01,
            "subject": subject,
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
        return protojson(statement)
    statement = {
        "_type": STATEMENT_V01,
        "predicateType": predicate_type,
        "subject": subject,
        "predicate": dict(predicate),
    }
    return go_json(statement)


def cosign_sign_statement(digest: str, annotations: Mapping[str, Any] | None = None) -> bytes:
    """The Statement v1 `cosign sign` (bundle format) signs: protojson, subject without name.

    `signDigestBundle` always sets `annotations` (an empty structpb.Struct when `-a` is not
    given), and protojson writes an empty message as `{}`.
    """
    subject = {
        "digest": {"sha256": _split_digest(digest)},
        "annotations": dict(sorted((annotations or {}).items())),
    }
    return protojson(
        {
            "_type": STATEMENT_V1,
            "subject": [subject],
            "predicateType": COSIGN_SIGN_PREDICATE_TYPE,
            "predicate": {},
        }
    )


def hashedrekord_body(payload: bytes, signature: bytes, verifier_pem: bytes) -> bytes:
    """Canonical Rekor `hashedrekord` 0.0.1 body as Rekor stores it (RFC 8785 JSON).

    The hash is always SHA-256 of the payload: cosign hardcodes it (see `rekorEntry`),
    whatever the signing key's own digest is.
    """
    return rfc8785.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": sha256_hex(payload)}},
                "signature": {
                    "content": b64(signature),
                    "publicKey": {"content": b64(verifier_pem)},
                },
            },
        }
    )


def dsse_body(envelope: bytes, payload: bytes, signature: bytes, verifier_pem: bytes) -> bytes:
    """Canonical Rekor `dsse` 0.0.1 body: hashes of the submitted envelope and the payload,
    and the signature with its verifier (base64 of a PEM certificate or public key)."""
    return rfc8785.dumps(
        {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": sha256_hex(envelope)},
                "payloadHash": {"algorithm": "sha256", "value": sha256_hex(payload)},
                "signatures": [{"signature": b64(signature), "verifier": b64(verifier_pem)}],
            },
        }
    )


# --- The transparency log ---------------------------------------------------------------


def merkle_leaf_hash(body: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || body)."""
    return hashlib.sha256(b"\x00" + body).digest()


def merkle_node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split_point(n: int) -> int:
    # The largest power of two strictly less than n (RFC 6962 section 2.1).
    return 1 << ((n - 1).bit_length() - 1)


@dataclass(frozen=True)
class LogEntry:
    """One Rekor v1 entry as a client sees it, with its Signed Entry Timestamp."""

    log_index: int
    log_id: str
    integrated_time: int
    body: bytes
    signed_entry_timestamp: bytes

    @property
    def kind_version(self) -> tuple[str, str]:
        """(kind, apiVersion) read from the body, as the bundle's `kindVersion` needs."""
        parsed = json.loads(self.body)
        return str(parsed["kind"]), str(parsed["apiVersion"])

    @property
    def uuid(self) -> str:
        """Rekor's entry UUID: the hex Merkle leaf hash."""
        return merkle_leaf_hash(self.body).hex()

    def set_payload(self) -> bytes:
        """What the SET signs: RFC 8785 JSON of body/integratedTime/logID/logIndex."""
        return set_payload(self.body, self.integrated_time, self.log_index, self.log_id)

    def cosign_bundle_annotation(self) -> str:
        """The `dev.sigstore.cosign/bundle` annotation (cosign `bundle.RekorBundle`, Go order)."""
        return go_json(
            {
                "SignedEntryTimestamp": b64(self.signed_entry_timestamp),
                "Payload": {
                    "body": b64(self.body),
                    "integratedTime": self.integrated_time,
                    "logIndex": self.log_index,
                    "logID": self.log_id,
                },
            }
        ).decode("utf-8")


def set_payload(body: bytes, integrated_time: int, log_index: int, log_id: str) -> bytes:
    """The canonical JSON a Rekor SET covers (cosign `VerifySET`, sigstore-python
    `TransparencyLogEntry._encode_canonical`)."""
    return rfc8785.dumps(
        {
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": log_id,
            "logIndex": log_index,
        }
    )


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 6962 audit path with the signed checkpoint that commits to its root."""

    log_index: int
    tree_size: int
    root_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str

    def bundle_json(self) -> dict[str, Any]:
        """The bundle's `inclusionProof` message (protojson: int64 as strings, bytes b64)."""
        return {
            "logIndex": str(self.log_index),
            "rootHash": b64(self.root_hash),
            "treeSize": str(self.tree_size),
            "hashes": [b64(h) for h in self.hashes],
            "checkpoint": {"envelope": self.checkpoint},
        }


class TransparencyLog:
    """An append-only RFC 6962 Merkle log signed like Rekor v1 (SETs and checkpoints).

    Perfect subtrees never change once full, so their hashes are cached: roots and proofs
    cost O(log n) hashes, which keeps a demo with thousands of entries cheap.
    """

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, *, hostname: str, tree_id: int = 4242
    ) -> None:
        """Create an empty log signed by `key`, named after `hostname` in checkpoints."""
        self.key = key
        self.hostname = hostname
        self.tree_id = tree_id
        self.origin = f"{hostname} - {tree_id}"
        self.log_id_bytes = key_id(key.public_key())
        self.log_id = self.log_id_bytes.hex()
        self.entries: list[LogEntry] = []
        self._leaves: list[bytes] = []
        self._perfect: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        """Number of entries in the log."""
        return len(self._leaves)

    def sign_entry_timestamp(self, body: bytes, integrated_time: int, log_index: int) -> bytes:
        """Sign a SET for arbitrary values, so tests can mint SETs over the wrong data."""
        return self.key.sign(
            set_payload(body, integrated_time, log_index, self.log_id), ec.ECDSA(hashes.SHA256())
        )

    def append(self, body: bytes, integrated_time: int | None = None) -> LogEntry:
        """Add `body` (a canonicalized Rekor entry) and return it with its SET."""
        if integrated_time is None:
            integrated_time = int(datetime.now(UTC).timestamp())
        log_index = len(self._leaves)
        self._leaves.append(merkle_leaf_hash(body))
        entry = LogEntry(
            log_index=log_index,
            log_id=self.log_id,
            integrated_time=integrated_time,
            body=body,
            signed_entry_timestamp=self.sign_entry_timestamp(body, integrated_time, log_index),
        )
        self.entries.append(entry)
        return entry

    def _subtree_hash(self, start: int, n: int) -> bytes:
        if n == 1:
            return self._leaves[start]
        perfect = n & (n - 1) == 0
        if perfect and (start, n) in self._perfect:
            return self._perfect[(start, n)]
        k = _split_point(n)
        result = merkle_node_hash(
            self._subtree_hash(start, k), self._subtree_hash(start + k, n - k)
        )
        if perfect:
            self._perfect[(start, n)] = result
        return result

    def _audit_path(self, index: int, start: int, n: int) -> list[bytes]:
        # RFC 6962 PATH(m, D[n]); siblings come out bottom-up, the order verifiers expect.
        if n == 1:
            return []
        k = _split_point(n)
        if index < k:
            return [*self._audit_path(index, start, k), self._subtree_hash(start + k, n - k)]
        return [*self._audit_path(index - k, start + k, n - k), self._subtree_hash(start, k)]

    def _check_size(self, tree_size: int | None) -> int:
        size = self.size if tree_size is None else tree_size
        if not 1 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 1..{self.size}")
        return size

    def root_hash(self, tree_size: int | None = None) -> bytes:
        """Merkle tree head of the first `tree_size` entries (default: all)."""
        return self._subtree_hash(0, self._check_size(tree_size))

    def checkpoint(self, tree_size: int | None = None, *, root_hash: bytes | None = None) -> str:
        """A signed note as Rekor v1 serves it; `root_hash` overrides to forge one."""
        size = self._check_size(tree_size)
        root = self.root_hash(size) if root_hash is None else root_hash
        note = f"{self.origin}\n{size}\n{b64(root)}\n"
        signature = self.key.sign(note.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
        # The key hint is the first 4 bytes of the log ID (sigstore-python matches it
        # against `logId.keyId[:4]`).
        return f"{note}\n\u2014 {self.hostname} {b64(self.log_id_bytes[:4] + signature)}\n"

    def inclusion_proof(self, log_index: int, tree_size: int | None = None) -> InclusionProof:
        """Audit path for `log_index` in the tree of `tree_size` entries, with checkpoint."""
        size = self._check_size(tree_size)
        if not 0 <= log_index < size:
            raise ValueError(f"log index {log_index} outside tree of size {size}")
        return InclusionProof(
            log_index=log_index,
            tree_size=size,
            root_hash=self.root_hash(size),
            hashes=tuple(self._audit_path(log_index, 0, size)),
            checkpoint=self.checkpoint(size),
        )

    def rekor_api_entry(self, log_index: int) -> dict[str, Any]:
        """`GET /api/v1/log/entries?logIndex=N` response, for a fake Rekor server.

        This is what a verifier fetches to turn SET-only legacy material into a bundle.
        """
        entry = self.entries[log_index]
        proof = self.inclusion_proof(log_index)
        return {
            f"{self.tree_id:016x}{entry.uuid}": {
                "body": b64(entry.body),
                "integratedTime": entry.integrated_time,
                "logID": entry.log_id,
                "logIndex": entry.log_index,
                "verification": {
                    "inclusionProof": {
                        "checkpoint": proof.checkpoint,
                        "hashes": [h.hex() for h in proof.hashes],
                        "logIndex": proof.log_index,
                        "rootHash": proof.root_hash.hex(),
                        "treeSize": proof.tree_size,
                    },
                    "signedEntryTimestamp": b64(entry.signed_entry_timestamp),
                },
            }
        }


# --- The certificate authority ----------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    """A Fulcio-like root and intermediate; leaves are issued by the intermediate."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(intermediate, root): the order of cosign's chain annotation and trust roots."""
        return (self.intermediate, self.root)

    @classmethod
    def create(cls, organization: str, not_before: datetime) -> CertificateAuthority:
        """Generate keys and self-consistent CA certificates valid for ten years."""
        not_after = not_before + 10 * _ONE_YEAR
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, organization),
            ]
        )
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(root_key, hashes.SHA256())
        )
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        intermediate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization}-intermediate"),
                    ]
                )
            )
            .issuer_name(root_name)
            .public_key(intermediate_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            # Fulcio's intermediate carries codeSigning too; sigstore-python allows it.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        return cls(root_key, root, intermediate_key, intermediate)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class IssuedCert:
    """A Fulcio-style leaf: its private key, the certificate, and [intermediate, root]."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def cert_pem(self) -> str:
        """PEM of the leaf, as in `dev.sigstore.cosign/certificate`."""
        return _pem(self.certificate)

    @property
    def chain_pem(self) -> str:
        """Concatenated PEM of the chain, as in `dev.sigstore.cosign/chain`."""
        return "".join(_pem(c) for c in self.chain)


def sct_signed_data(timestamp_ms: int, issuer_key_hash: bytes, tbs_precertificate: bytes) -> bytes:
    """RFC 6962 `digitally-signed` input of a precertificate SCT (v1, no extensions)."""
    return (
        struct.pack("!BBQH", 0, 0, timestamp_ms, _SCT_ENTRY_PRECERT)
        + issuer_key_hash
        + len(tbs_precertificate).to_bytes(3, "big")
        + tbs_precertificate
        + struct.pack("!H", 0)
    )


def sct_list_extension(log_id: bytes, timestamp_ms: int, signature: bytes) -> bytes:
    """The SCT-list extension value: a DER OCTET STRING around a TLS-encoded SCT list."""
    sct = (
        struct.pack("!B", 0)
        + log_id
        + struct.pack("!QH", timestamp_ms, 0)
        + struct.pack("!BBH", _SCT_HASH_SHA256, _SCT_SIG_ECDSA, len(signature))
        + signature
    )
    sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
    return _der_octet_string(sct_list)


class CertOptions(TypedDict, total=False):
    """Knobs of `SigstoreKit.issue_certificate`, accepted by every signing call."""

    not_before: datetime | None
    lifetime: timedelta
    sct: SctMode
    ca: CaMode
    extensions: Mapping[str, str] | None


# --- What signing returns ---------------------------------------------------------------


@dataclass(frozen=True)
class LegacyLayer:
    """One layer of a `.sig`/`.att` manifest: blob bytes plus descriptor annotations.

    `public_key`, `cert` and `entry` are not part of the stored format; they let the OCI
    helpers detect duplicates as cosign does and let tests reach the material behind it.
    """

    media_type: str
    blob: bytes
    annotations: dict[str, str]
    public_key: VerifyingKey | None = field(default=None, compare=False, repr=False)
    cert: IssuedCert | None = field(default=None, compare=False, repr=False)
    entry: LogEntry | None = field(default=None, compare=False, repr=False)

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the blob, the layer digest in the manifest."""
        return sha256_digest(self.blob)


# --- The kit ----------------------------------------------------------------------------


class SigstoreKit:
    """A complete private Sigstore instance plus a cosign imitation that signs against it."""

    def __init__(
        self,
        *,
        fulcio: CertificateAuthority,
        untrusted_fulcio: CertificateAuthority,
        ct_key: ec.EllipticCurvePrivateKey,
        rekor_key: ec.EllipticCurvePrivateKey,
        valid_from: datetime,
        hostname: str = "sigstore-kit.test",
    ) -> None:
        """Assemble a kit from existing keys; most callers want `SigstoreKit.create()`."""
        self.fulcio = fulcio
        self.untrusted_fulcio = untrusted_fulcio
        self.ct_key = ct_key
        self.ct_log_id = key_id(ct_key.public_key())
        self.rekor_key = rekor_key
        self.valid_from = valid_from
        self.hostname = hostname
        self.log = TransparencyLog(rekor_key, hostname=f"rekor.{hostname}")

    @classmethod
    def create(cls, *, hostname: str = "sigstore-kit.test") -> SigstoreKit:
        """Fresh keys for everything; CAs and keys are valid from a year ago on.

        Starting a year back lets tests mint certificates (and log entries) in the past,
        e.g. an expired certificate whose log entry was integrated while it was valid.
        """
        valid_from = datetime.now(UTC).replace(microsecond=0) - _ONE_YEAR
        return cls(
            fulcio=CertificateAuthority.create("sigstore-kit", valid_from),
            untrusted_fulcio=CertificateAuthority.create("rogue-ca", valid_from),
            ct_key=ec.generate_private_key(ec.SECP256R1()),
            rekor_key=ec.generate_private_key(ec.SECP256R1()),
            valid_from=valid_from,
            hostname=hostname,
        )

    # -- trust root --

    def _tlog_instance(self, public_key: ec.EllipticCurvePublicKey, url: str) -> dict[str, Any]:
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(der),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": _rfc3339(self.valid_from)},
            },
            "logId": {"keyId": b64(key_id(public_key))},
        }

    def trusted_root_json(self) -> dict[str, Any]:
        """The Sigstore trusted root (protojson) listing the trusted CA, Rekor and CT keys."""
        return {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [
                self._tlog_instance(self.rekor_key.public_key(), f"https://{self.log.hostname}")
            ],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "sigstore-kit", "commonName": "sigstore-kit"},
                    "uri": f"https://fulcio.{self.hostname}",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
                            for c in self.fulcio.chain
                        ]
                    },
                    "validFor": {"start": _rfc3339(self.valid_from)},
                }
            ],
            "ctlogs": [
                self._tlog_instance(self.ct_key.public_key(), f"https://ctfe.{self.hostname}")
            ],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: str | Path) -> Path:
        """Write `trusted_root_json()` to `path` (what `TrustedRoot.from_file` reads)."""
        target = Path(path)
        target.write_text(json.dumps(self.trusted_root_json(), indent=2) + "\n", encoding="utf-8")
        return target

    # -- Fulcio --

    def issue_certificate(
        self,
        identity: str,
        issuer: str,
        *,
        not_before: datetime | None = None,
        lifetime: timedelta = timedelta(minutes=10),
        sct: SctMode = "valid",
        ca: CaMode = "trusted",
        extensions: Mapping[str, str] | None = None,
    ) -> IssuedCert:
        """Issue a leaf the way Fulcio does, with an embedded precertificate SCT.

        `extensions` maps OIDs to string claims encoded as DER UTF8String (Fulcio v2), and
        overrides the default issuer claims when it names 1.3.6.1.4.1.57264.1.1 (raw bytes,
        v1) or 1.3.6.1.4.1.57264.1.8.
        """
        authority = self.fulcio if ca == "trusted" else self.untrusted_fulcio
        start = (not_before or datetime.now(UTC)).replace(microsecond=0)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        if "@" in identity and "://" not in identity:
            san: x509.GeneralName = x509.RFC822Name(identity)
        else:
            san = x509.UniformResourceIdentifier(identity)

        claims: dict[str, bytes] = {
            OID_FULCIO_ISSUER_V1: issuer.encode("utf-8"),
            OID_FULCIO_ISSUER_V2: der_utf8_string(issuer),
        }
        for oid, value in (extensions or {}).items():
            claims[oid] = (
                value.encode("utf-8") if oid == OID_FULCIO_ISSUER_V1 else der_utf8_string(value)
            )

        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(authority.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    authority.intermediate_key.public_key()
                ),
                critical=False,
            )
            # An empty subject makes the SAN critical (RFC 5280 4.2.1.6), as Fulcio does.
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        )
        for oid, encoded in claims.items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ObjectIdentifier(oid), encoded), critical=False
            )
        precert = builder.sign(authority.intermediate_key, hashes.SHA256())
        if sct == "none":
            return IssuedCert(key, precert, authority.chain)

        # The SCT signs the TBS without the SCT extension, so sign the first build's TBS and
        # append the extension last; `tbs_precertificate_bytes` strips it back out.
        # Whole-second timestamps survive sigstore-python's float round trip exactly.
        timestamp_ms = int(start.timestamp()) * 1000
        issuer_key_hash = key_id(authority.intermediate_key.public_key())
        tbs = precert.tbs_certificate_bytes
        signed = sct_signed_data(timestamp_ms, issuer_key_hash, tbs)
        if sct == "bad":
            signed = sct_signed_data(timestamp_ms, issuer_key_hash, tbs + b"\x00")
        sct_signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        certificate = builder.add_extension(
            x509.UnrecognizedExtension(
                ObjectIdentifier(OID_SCT_LIST),
                sct_list_extension(self.ct_log_id, timestamp_ms, sct_signature),
            ),
            critical=False,
        ).sign(authority.intermediate_key, hashes.SHA256())
        if certificate.tbs_precertificate_bytes != tbs:
            raise RuntimeError(
                "rebuilt certificate's precertificate TBS differs from the signed one"
            )
        return IssuedCert(key, certificate, authority.chain)

    # -- Rekor --

    def _log(self, body: bytes, *, integrated_time: int | None, bad_set: bool) -> LogEntry:
        entry = self.log.append(body, integrated_time)
        if bad_set:
            # A genuine signature by the Rekor key, over a different log index.
            forged = self.log.sign_entry_timestamp(
                entry.body, entry.integrated_time, entry.log_index + 1
            )
            entry = dataclasses.replace(entry, signed_entry_timestamp=forged)
        return entry

    # -- cosign sign / attest, legacy tag formats --

    def sign_legacy(
        self,
        docker_reference: str,
        digest: str,
        identity: str,
        issuer: str,
        *,
        annotations: Mapping[str, Any] | None = None,
        bad_set: bool = False,
        integrated_time: int | None = None,
        **cert_options: Unpack[CertOptions],
    ) -> LegacyLayer:
        """Keyless `cosign sign` in the `.sig` format: simplesigning + hashedrekord entry."""
        cert = self.issue_certificate(identity, issuer, **cert_options)
        payload = simplesigning_payload(docker_reference, digest, annotations)
        signature = sign_data(cert.private_key, payload)
        entry = self._log(
            hashedrekord_body(payload, signature, cert.cert_pem.encode("ascii")),
            integrated_time=integrated_time,
            bad_set=bad_set,
        )
        return LegacyLayer(
            media_type=SIMPLESIGNING_MEDIA_TYPE,
            blob=payload,
            annotations={
                ANNOTATION_SIGNATURE: b64(signature),
                ANNOTATION_CERTIFICATE: cert.cert_pem,
                ANNOTATION_CHAIN: cert.chain_pem,
                ANNOTATION_BUNDLE: entry.cosign_bundle_annotation(),
            },
            public_key=cert.private_key.public_key(),
            cert=cert,
            entry=entry,
        )

    def sign_legacy_with_key(
        self,
        private_key: SigningKey,
        docker_reference: str,
        digest: str,
        *,
        tlog: bool = True,
        annotations: Mapping[str, Any] | None = None,
        bad_set: bool = False,
        integrated_time: int | None = None,
    ) -> LegacyLayer:
        """`cosign sign --key` in the `.sig` format; the tlog entry carries the PEM public key."""
        payload = simplesigning_payload(docker_reference, digest, annotations)
        signature = sign_data(private_key, payload)
        layer_annotations = {ANNOTATION_SIGNATURE: b64(signature)}
        entry = None
        if tlog:
            entry = self._log(
                hashedrekord_body(payload, signature, public_key_pem(private_key.public_key())),
                integrated_time=integrated_time,
                bad_set=bad_set,
            )
            layer_annotations[ANNOTATION_BUNDLE] = entry.cosign_bundle_annotation()
        return LegacyLayer(
            media_type=SIMPLESIGNING_MEDIA_TYPE,
            blob=payload,
            annotations=layer_annotations,
            public_key=private_key.public_key(),
            entry=entry,
        )

    def attest_legacy(
        self,
        subject_name: str,
        digest: str,
        predicate_type: str,
        predicate: Mapping[str, Any],
        identity: str | None = None,
        issuer: str | None = None,
        *,
        key: SigningKey | None = None,
        tlog: bool = True,
        keyid_field: bool = True,
        protojson_order: bool = False,
        bad_set: bool = False,
        integrated_time: int | None = None,
        **cert_options: Unpack[CertOptions],
    ) -> LegacyLayer:
        """`cosign attest` in the `.att` format: DSSE envelope layer + dsse/0.0.1 entry.

        `keyid_field` writes `"keyid":""` before `sig` as cosign up to v2 did (through
        go-securesystemslib); cosign v3 omits it. Keyless unless `key` is given.
        """
        statement = intoto_statement_v01(
            subject_name, digest, predicate_type, predicate, protojson_order=protojson_order
        )
        cert: IssuedCert | None = None
        if key is None:
            if identity is None or issuer is None:
                raise ValueError("keyless attestation needs identity and issuer (or pass key=)")
            cert = self.issue_certificate(identity, issuer, **cert_options)
            signer: SigningKey = cert.private_key
            verifier_pem = cert.cert_pem.encode("ascii")
        else:
            signer = key
            verifier_pem = public_key_pem(key.public_key())
        signature = sign_data(signer, dsse_pae(INTOTO_PAYLOAD_TYPE, statement))
        sig_entry = {"keyid": "", "sig": b64(signature)} if keyid_field else {"sig": b64(signature)}
        envelope = go_json(
            {
                "payload": b64(statement),
                "payloadType": INTOTO_PAYLOAD_TYPE,
                "signatures": [sig_entry],
            }
        )
        layer_annotations = {ANNOTATION_PREDICATE_TYPE: predicate_type, ANNOTATION_SIGNATURE: ""}
        if cert is not None:
            layer_annotations[ANNOTATION_CERTIFICATE] = cert.cert_pem
            layer_annotations[ANNOTATION_CHAIN] = cert.chain_pem
        entry = None
        if tlog or cert is not None:
            entry = self._log(
                dsse_body(envelope, statement, signature, verifier_pem),
                integrated_time=integrated_time,
                bad_set=bad_set,
            )
            layer_annotations[ANNOTATION_BUNDLE] = entry.cosign_bundle_annotation()
        return LegacyLayer(
            media_type=DSSE_LAYER_MEDIA_TYPE,
            blob=envelope,
            annotations=layer_annotations,
            public_key=signer.public_key(),
            cert=cert,
            entry=entry,
        )

    # -- cosign v3 bundle format --

    def sign_bundle(
        self,
        digest: str,
        identity: str,
        issuer: str,
        *,
        annotations: Mapping[str, Any] | None = None,
        bad_set: bool = False,
        bad_inclusion_proof: bool = False,
        integrated_time: int | None = None,
        **cert_options: Unpack[CertOptions],
    ) -> bytes:
        """`cosign sign` (v3 default): a bundle v0.3 over the cosign/sign/v1 statement."""
        return self._dsse_bundle(
            cosign_sign_statement(digest, annotations),
            identity,
            issuer,
            bad_set=bad_set,
            bad_inclusion_proof=bad_inclusion_proof,
            integrated_time=integrated_time,
            cert_options=cert_options,
        )

    def attest_bundle(
        self,
        subject_name: str,
        digest: str,
        predicate_type: str,
        predicate: Mapping[str, Any],
        identity: str,
        issuer: str,
        *,
        protojson_order: bool = False,
        bad_set: bool = False,
        bad_inclusion_proof: bool = False,
        integrated_time: int | None = None,
        **cert_options: Unpack[CertOptions],
    ) -> bytes:
        """`cosign attest --new-bundle-format`: a bundle v0.3 over a Statement v0.1."""
        statement = intoto_statement_v01(
            subject_name, digest, predicate_type, predicate, protojson_order=protojson_order
        )
        return self._dsse_bundle(
            statement,
            identity,
            issuer,
            bad_set=bad_set,
            bad_inclusion_proof=bad_inclusion_proof,
            integrated_time=integrated_time,
            cert_options=cert_options,
        )

    def _dsse_bundle(
        self,
        statement: bytes,
        identity: str,
        issuer: str,
        *,
        bad_set: bool,
        bad_inclusion_proof: bool,
        integrated_time: int | None,
        cert_options: CertOptions,
    ) -> bytes:
        cert = self.issue_certificate(identity, issuer, **cert_options)
        signature = sign_data(cert.private_key, dsse_pae(INTOTO_PAYLOAD_TYPE, statement))
        envelope = {
            "payload": b64(statement),
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64(signature)}],
        }
        entry = self._log(
            dsse_body(protojson(envelope), statement, signature, cert.cert_pem.encode("ascii")),
            integrated_time=integrated_time,
            bad_set=bad_set,
        )
        proof = self.log.inclusion_proof(entry.log_index)
        if bad_inclusion_proof:
            proof = self._break_proof(proof)
        kind, version = entry.kind_version
        bundle = {
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {
                    "rawBytes": b64(cert.certificate.public_bytes(serialization.Encoding.DER))
                },
                "tlogEntries": [
                    {
                        "logIndex": str(entry.log_index),
                        "logId": {"keyId": b64(bytes.fromhex(entry.log_id))},
                        "kindVersion": {"kind": kind, "version": version},
                        "integratedTime": str(entry.integrated_time),
                        "inclusionPromise": {
                            "signedEntryTimestamp": b64(entry.signed_entry_timestamp)
                        },
                        "inclusionProof": proof.bundle_json(),
                        "canonicalizedBody": b64(entry.body),
                    }
                ],
            },
            "dsseEnvelope": envelope,
        }
        return protojson(bundle)

    def _break_proof(self, proof: InclusionProof) -> InclusionProof:
        # Tamper with the audit path but keep a correctly signed checkpoint, so the failure
        # is the Merkle check itself and not the checkpoint signature.
        if proof.hashes:
            first = bytes([proof.hashes[0][0] ^ 0xFF]) + proof.hashes[0][1:]
            return dataclasses.replace(proof, hashes=(first, *proof.hashes[1:]))
        bogus_root = hashlib.sha256(b"not the root").digest()
        return dataclasses.replace(
            proof,
            root_hash=bogus_root,
            checkpoint=self.log.checkpoint(proof.tree_size, root_hash=bogus_root),
        )


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
