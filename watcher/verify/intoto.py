"""DSSE envelopes and in-toto statements, parsed the way cosign writes them.

sigstore-python's own Statement model rejects in-toto Statement v0.1 and subjects without a
``name``, both of which cosign produces, so the watcher parses statements itself: tolerant of
what the specs allow, strict about what the verdict depends on (payload type, subject digest).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from watcher.refs import Digest

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = frozenset(
    {"https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"}
)
# cosign v3 writes image signatures as DSSE statements with this predicate type.
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


class MaterialError(ValueError):
    """Signature material is malformed; the message says what and where."""


def b64decode_strict(value: object, what: str) -> bytes:
    """Decode standard base64 (padding optional), or raise MaterialError naming ``what``."""
    if not isinstance(value, str):
        raise MaterialError(f"{what}: expected a base64 string, got {type(value).__name__}")
    text = value.strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MaterialError(f"{what}: invalid base64 ({exc})") from None


def load_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse JSON that must be an object; malformed input becomes a MaterialError."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MaterialError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise MaterialError(f"{what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise MaterialError(f"{what}: expected a JSON object")
    return value


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a DSSE signature actually signs."""
    ptype = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: payload, its type, and the (raw) signatures over its PAE."""

    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    @classmethod
    def parse(cls, raw: bytes) -> Envelope:
        """Parse envelope JSON as cosign stores it in a `.att` layer."""
        obj = load_json_object(raw, "DSSE envelope")
        ptype = obj.get("payloadType")
        if not isinstance(ptype, str):
            raise MaterialError("DSSE envelope: payloadType missing")
        payload = b64decode_strict(obj.get("payload"), "DSSE envelope payload")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise MaterialError("DSSE envelope: no signatures")
        decoded = []
        for i, sig in enumerate(sigs):
            if not isinstance(sig, dict):
                raise MaterialError(f"DSSE envelope: signatures[{i}] is not an object")
            decoded.append(b64decode_strict(sig.get("sig"), f"DSSE signatures[{i}].sig"))
        return cls(payload_type=ptype, payload=payload, signatures=tuple(decoded))

    def pae(self) -> bytes:
        """The bytes each signature is over."""
        return pae(self.payload_type, self.payload)


@dataclass(frozen=True)
class Statement:
    """The parts of an in-toto statement that a verdict depends on."""

    statement_type: str
    predicate_type: str
    subject_digests: tuple[str, ...]  # "sha256:<hex>" for every subject with a sha256
    subject_names: tuple[str, ...]

    @classmethod
    def parse(cls, payload: bytes) -> Statement:
        """Parse a Statement v0.1 or v1 payload; names are optional (cosign v3 omits them)."""
        obj = load_json_object(payload, "in-toto statement")
        stype = obj.get("_type")
        if stype not in STATEMENT_TYPES:
            raise MaterialError(f"in-toto statement: unsupported _type {stype!r}")
        ptype = obj.get("predicateType")
        if not isinstance(ptype, str) or not ptype:
            raise MaterialError("in-toto statement: predicateType missing")
        subjects = obj.get("subject")
        if not isinstance(subjects, list) or not subjects:
            raise MaterialError("in-toto statement: no subject")
        digests: list[str] = []
        names: list[str] = []
        for subject in subjects:
            if not isinstance(subject, dict):
                raise MaterialError("in-toto statement: subject is not an object")
            name = subject.get("name")
            if isinstance(name, str):
                names.append(name)
            digest = subject.get("digest")
            if isinstance(digest, dict) and isinstance(digest.get("sha256"), str):
                digests.append("sha256:" + digest["sha256"].lower())
        return cls(str(stype), ptype, tuple(digests), tuple(names))

    def covers(self, digest: Digest) -> bool:
        """True when some subject's sha256 is ``digest`` (the name is ignored, as cosign does)."""
        return digest in self.subject_digests

    @property
    def is_image_signature(self) -> bool:
        """cosign v3 signs images as statements with the sign/v1 predicate type."""
        return self.predicate_type == COSIGN_SIGN_PREDICATE


def simple_signing_digest(payload: bytes) -> str:
    """The ``critical.image.docker-manifest-digest`` of a cosign simplesigning payload.

    Go's json.Unmarshal matches keys case-insensitively and cosign's spec example writes
    ``Docker-manifest-digest``, so keys are compared case-insensitively here too.
    """
    obj = load_json_object(payload, "simplesigning payload")

    def field(parent: dict[str, Any], key: str) -> Any:
        for k, v in parent.items():
            if k.lower() == key:
                return v
        return None

    critical = field(obj, "critical")
    if not isinstance(critical, dict):
        raise MaterialError("simplesigning payload: `critical` missing")
    ctype = field(critical, "type")
    if ctype != "cosign container image signature":
        raise MaterialError(f"simplesigning payload: unexpected critical.type {ctype!r}")
    image = field(critical, "image")
    digest = field(image, "docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise MaterialError("simplesigning payload: critical.image.docker-manifest-digest missing")
    return digest
