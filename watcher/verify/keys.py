"""Raw signature checks for every key type cosign signs with.

cosign signs with ECDSA (P-256 with SHA-256; P-384/P-521 with SHA-384/512 in newer releases,
SHA-256 in older ones), RSA PKCS#1 v1.5 with SHA-256, and Ed25519 over the message itself.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

_CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def signature_valid(key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies under ``key``; never raises."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            natural = _CURVE_HASH.get(key.curve.name, hashes.SHA256)
            candidates: list[type[hashes.HashAlgorithm]] = [natural]
            if natural is not hashes.SHA256:
                candidates.append(hashes.SHA256)
            for algorithm in candidates:
                try:
                    key.verify(signature, data, ec.ECDSA(algorithm()))
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
                return True
            except InvalidSignature:
                key.verify(
                    signature,
                    data,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                    hashes.SHA256(),
                )
                return True
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
