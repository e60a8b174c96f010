"""The one place that touches sigstore-python beyond its public API.

cosign's offline check of legacy (`.sig`/`.att`) material needs the trust root's Rekor and CT
keyrings and the SCT check, which sigstore-python implements but does not export. Reusing them
keeps one implementation of those checks; keeping the imports here means a sigstore upgrade
breaks one small module (pinned to ``sigstore>=4.5.1,<5``), and its tests say so.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.x509 import Certificate
from sigstore._internal.sct import verify_sct as _verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import CTKeyring, KeyringPurpose, RekorKeyring
from sigstore.errors import VerificationError
from sigstore.models import TrustedRoot
from sigstore.verify import Verifier

__all__ = [
    "CTKeyring",
    "RekorKeyring",
    "VerificationError",
    "ct_keyring",
    "rekor_keyring",
    "verify_chain_at",
    "verify_log_signature",
    "verify_sct",
]


def rekor_keyring(root: TrustedRoot) -> RekorKeyring:
    """Transparency-log keys usable for verification (expired ones included, as for Fulcio)."""
    return root.rekor_keyring(KeyringPurpose.VERIFY)


def ct_keyring(root: TrustedRoot) -> CTKeyring:
    """CT log keys usable for verifying embedded SCTs."""
    return root.ct_keyring(KeyringPurpose.VERIFY)


def verify_log_signature(
    keyring: RekorKeyring, log_id: bytes, signature: bytes, data: bytes
) -> None:
    """Check a transparency-log signature (a SET) by the key named by ``log_id``.

    The keyring falls back to trying every trusted key when the id is unknown; every key in it
    is trusted, so that is no weaker, only slower.
    """
    keyring.verify(key_id=log_id, signature=signature, data=data)  # type: ignore[arg-type]


def verify_sct(cert: Certificate, chain: list[Certificate], keyring: CTKeyring) -> None:
    """Check the certificate's embedded SCT against the trust root's CT keys."""
    _verify_sct(cert, chain, keyring)


def verify_chain_at(verifier: Verifier, cert: Certificate, when: datetime) -> list[Certificate]:
    """Check that ``cert`` chains to the trust root's Fulcio CAs at ``when``; return the chain.

    This is the same path-building sigstore-python applies to bundles (web-PKI defaults with
    the code-signing EKU allowed), so legacy and bundle material are held to one standard.
    """
    result = TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=when)
    return verifier._verify_chain_at_time(cert, result)
