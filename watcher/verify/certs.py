"""Who a Fulcio certificate says signed: subject, issuer and the CI claims beside them.

Policies match on these values and incident responders read them in `trace`, so they are
extracted once, here, the way Fulcio encodes them (SAN for the subject; the v2 issuer
extension preferred over the deprecated v1 one).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ObjectIdentifier

from watcher.verdicts import Signer
from watcher.verify.intoto import MaterialError

_FULCIO = "1.3.6.1.4.1.57264.1."
_ISSUER_V1 = ObjectIdentifier(_FULCIO + "1")
_ISSUER_V2 = ObjectIdentifier(_FULCIO + "8")
_OTHERNAME = ObjectIdentifier(_FULCIO + "7")
# Claims worth showing next to a signer (name, OID, encoding: raw v1 bytes or DER UTF8String).
_CLAIMS: tuple[tuple[str, str, bool], ...] = (
    ("github_workflow_trigger", _FULCIO + "2", False),
    ("github_workflow_sha", _FULCIO + "3", False),
    ("github_workflow_name", _FULCIO + "4", False),
    ("github_workflow_repository", _FULCIO + "5", False),
    ("github_workflow_ref", _FULCIO + "6", False),
    ("build_signer_uri", _FULCIO + "9", True),
    ("build_signer_digest", _FULCIO + "10", True),
    ("runner_environment", _FULCIO + "11", True),
    ("source_repository_uri", _FULCIO + "12", True),
    ("source_repository_digest", _FULCIO + "13", True),
    ("source_repository_ref", _FULCIO + "14", True),
    ("build_config_uri", _FULCIO + "18", True),
    ("build_trigger", _FULCIO + "20", True),
    ("run_invocation_uri", _FULCIO + "21", True),
)


def load_pem_certificates(pem: bytes | str, what: str) -> list[x509.Certificate]:
    """Parse one or more PEM certificates, or raise MaterialError naming ``what``."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise MaterialError(f"{what}: not a PEM certificate ({exc})") from None
    if not certs:
        raise MaterialError(f"{what}: no certificate found")
    return certs


def _der_utf8(value: bytes) -> str | None:
    """Decode a DER UTF8String (tag 0x0c) with a short-form or long-form length."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length = value[1]
    offset = 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(value[2 : 2 + n], "big")
        offset = 2 + n
    body = value[offset : offset + length]
    return body.decode("utf-8", "replace") if len(body) == length else None


def _extension(cert: x509.Certificate, oid: ObjectIdentifier, der: bool) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    if der:
        return _der_utf8(value.value)
    return value.value.decode("utf-8", "replace")


def certificate_subject(cert: x509.Certificate) -> str | None:
    """The SAN Fulcio put the OIDC identity in: email, URI, or Sigstore's otherName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san:
        if isinstance(name, x509.RFC822Name | x509.UniformResourceIdentifier):
            return str(name.value)
        if isinstance(name, x509.OtherName) and name.type_id == _OTHERNAME:
            return _der_utf8(name.value)
    return None


def signer_from_certificate(cert: x509.Certificate) -> Signer:
    """The identity a keyless certificate vouches for."""
    issuer = _extension(cert, _ISSUER_V2, der=True) or _extension(cert, _ISSUER_V1, der=False)
    claims = []
    for name, oid, der in _CLAIMS:
        value = _extension(cert, ObjectIdentifier(oid), der)
        if value is not None:
            claims.append((name, value))
    return Signer(issuer=issuer, subject=certificate_subject(cert), extensions=tuple(claims))


def key_id(key: PublicKeyTypes) -> str:
    """Hex sha256 of the DER SubjectPublicKeyInfo: how keys are named in evidence and policy."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def signer_from_key(key: PublicKeyTypes) -> Signer:
    """A key-based signer, named by its key id."""
    return Signer(key_id=key_id(key))
