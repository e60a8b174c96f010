"""Sigstore bundles (cosign v3's default), verified with the real sigstore-python verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watcher.refs import Digest
from watcher.testing.sigstore_kit import SigstoreKit
from watcher.verdicts import Format
from watcher.verify import verify_material
from watcher.verify.material import BundleArtifact, Kind
from watcher.verify.trust import load_trust

DIGEST = Digest("sha256:" + "ab" * 32)
OTHER = Digest("sha256:" + "cd" * 32)
ID = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
GH = "https://token.actions.githubusercontent.com"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "real-sigstore"


def artifact(raw: bytes, hint: str | None = None) -> BundleArtifact:
    return BundleArtifact(raw, hint, "referrer test")


def test_signature_bundle_verifies(kit: SigstoreKit, trust) -> None:  # type: ignore[no-untyped-def]
    f = verify_material(artifact(kit.sign_bundle(DIGEST, ID, GH)), DIGEST, trust, [])
    assert f.valid, f.error
    assert f.kind is Kind.SIGNATURE and f.format is Format.BUNDLE
    assert f.signer is not None and (f.signer.subject, f.signer.issuer) == (ID, GH)
    assert f.tlog is not None and f.tlog.integrated_time is not None


def test_attestation_bundle_is_an_attestation(kit: SigstoreKit, trust) -> None:  # type: ignore[no-untyped-def]
    raw = kit.attest_bundle("r/acme/app", DIGEST, "https://slsa.dev/provenance/v1", {}, ID, GH)
    f = verify_material(artifact(raw), DIGEST, trust, [])
    assert f.valid and f.kind is Kind.ATTESTATION
    assert f.predicate_type == "https://slsa.dev/provenance/v1"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"bad_inclusion_proof": True}, "invalid log entry"),
        ({"bad_set": True}, "SET"),
        ({"ca": "untrusted"}, "chain"),
        ({"sct": "bad"}, "SCT"),
    ],
)
def test_hostile_bundles_are_invalid(kit: SigstoreKit, trust, kwargs, needle) -> None:  # type: ignore[no-untyped-def]
    f = verify_material(artifact(kit.sign_bundle(DIGEST, ID, GH, **kwargs)), DIGEST, trust, [])
    assert not f.valid and f.error is not None and needle in f.error, f.error


def test_bundle_for_another_digest(kit: SigstoreKit, trust) -> None:  # type: ignore[no-untyped-def]
    f = verify_material(artifact(kit.sign_bundle(OTHER, ID, GH)), DIGEST, trust, [])
    assert not f.valid and f.error is not None and "another image" in f.error


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"mediaType": "x"}', b"\x00" * 10])
def test_malformed_bundles_are_invalid(trust, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    f = verify_material(artifact(raw, "https://sigstore.dev/cosign/sign/v1"), DIGEST, trust, [])
    assert not f.valid and f.error


def test_altered_dsse_payload(kit: SigstoreKit, trust) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(kit.sign_bundle(DIGEST, ID, GH))
    payload = doc["dsseEnvelope"]["payload"]
    doc["dsseEnvelope"]["payload"] = payload[:-8] + (
        "A" * 8 if payload[-8:] != "A" * 8 else "B" * 8
    )
    f = verify_material(artifact(json.dumps(doc).encode()), DIGEST, trust, [])
    assert not f.valid


def test_real_public_good_attestation_verifies_offline(tmp_path: Path) -> None:
    """A bundle the public Sigstore made, against sigstore-python's offline public-good root."""
    trust = load_trust(None, tmp_path)
    manifest = (FIXTURES / "ggcr-empty-image.manifest.json").read_bytes()
    from watcher.refs import sha256_digest

    digest = sha256_digest(manifest)
    raw = (FIXTURES / "cosign-oci-attestation.sigstore.json").read_bytes()
    f = verify_material(artifact(raw), digest, trust, [])
    assert f.valid, f.error
    assert f.signer is not None
    assert (f.signer.subject, f.signer.issuer) == (
        "cody@soyland.com",
        "https://github.com/login/oauth",
    )
    assert f.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    assert (tmp_path / "sigstore").is_dir()  # the TUF cache lives under the state dir
    assert not verify_material(artifact(raw), OTHER, trust, []).valid


def key_bundle(kit: SigstoreKit, private, digest: Digest, *, tlog: bool = True) -> bytes:  # type: ignore[no-untyped-def]
    """`cosign sign --key --new-bundle-format`: a public-key hint, DSSE, a dsse tlog entry."""
    from watcher.testing import sigstore_kit as sk

    statement = sk.cosign_sign_statement(digest)
    signature = sk.sign_data(private, sk.dsse_pae(sk.INTOTO_PAYLOAD_TYPE, statement))
    envelope = {
        "payload": sk.b64(statement),
        "payloadType": sk.INTOTO_PAYLOAD_TYPE,
        "signatures": [{"sig": sk.b64(signature)}],
    }
    material: dict[str, object] = {"publicKey": {"hint": "release-key"}}
    if tlog:
        body = sk.dsse_body(
            json.dumps(envelope).encode(),
            statement,
            signature,
            sk.public_key_pem(private.public_key()),
        )
        entry = kit.log.append(body)
        material["tlogEntries"] = [
            {
                "logIndex": str(entry.log_index),
                "logId": {"keyId": sk.b64(bytes.fromhex(entry.log_id))},
                "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                "integratedTime": str(entry.integrated_time),
                "inclusionPromise": {"signedEntryTimestamp": sk.b64(entry.signed_entry_timestamp)},
                "canonicalizedBody": sk.b64(entry.body),
            }
        ]
    return json.dumps(
        {
            "mediaType": sk.BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": envelope,
        }
    ).encode()


def test_key_signed_bundle(kit: SigstoreKit, trust) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    from watcher.verify.certs import key_id
    from watcher.verify.material import TrustedKey

    ours, theirs = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    trusted = [TrustedKey(key_id(ours.public_key()), ours.public_key())]
    f = verify_material(artifact(key_bundle(kit, ours, DIGEST)), DIGEST, trust, trusted)
    assert f.valid, f.error
    assert f.format is Format.KEY and f.signer is not None and f.signer.key_id == trusted[0].key_id
    assert f.tlog is not None and f.kind is Kind.SIGNATURE
    no_log = verify_material(
        artifact(key_bundle(kit, ours, DIGEST, tlog=False)), DIGEST, trust, trusted
    )
    assert no_log.valid and no_log.tlog is None
    wrong = verify_material(artifact(key_bundle(kit, theirs, DIGEST)), DIGEST, trust, trusted)
    assert not wrong.valid and wrong.error is not None and "any key" in wrong.error
    other = verify_material(artifact(key_bundle(kit, ours, OTHER)), DIGEST, trust, trusted)
    assert not other.valid and other.error is not None and "another image" in other.error
    # A SET from another entry pasted in: the body no longer describes this signature.
    doc = json.loads(key_bundle(kit, ours, DIGEST))
    doc["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"] = json.loads(
        key_bundle(kit, ours, DIGEST)
    )["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"]
    swapped = verify_material(artifact(json.dumps(doc).encode()), DIGEST, trust, trusted)
    assert not swapped.valid
