"""cosign's tag-based material (.sig/.att), keyless and keyed, verified offline.

Material is minted by the suite's private Sigstore exactly as cosign writes it; each hostile
variant must fail for the reason a human would need to fix it, and nothing may raise.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from watcher.refs import Digest
from watcher.testing import sigstore_kit as sk
from watcher.testing.sigstore_kit import SigstoreKit
from watcher.verdicts import Format
from watcher.verify import verify_material
from watcher.verify.certs import key_id
from watcher.verify.material import Finding, Kind, LegacyLayer, TrustedKey
from watcher.verify.trust import Trust

DIGEST = Digest("sha256:" + "ab" * 32)
OTHER = Digest("sha256:" + "cd" * 32)
REF = "registry.test/acme/app"
ID = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
GH = "https://token.actions.githubusercontent.com"


def as_material(layer: sk.LegacyLayer, kind: Kind = Kind.SIGNATURE) -> LegacyLayer:
    return LegacyLayer(kind, layer.media_type, layer.blob, dict(layer.annotations), "test")


def check(
    trust: Trust,
    layer: sk.LegacyLayer,
    *,
    kind: Kind = Kind.SIGNATURE,
    digest: Digest = DIGEST,
    keys: list[TrustedKey] | None = None,
) -> Finding:
    return verify_material(as_material(layer, kind), digest, trust, keys or [])


def mutate(layer: sk.LegacyLayer, **changes: Any) -> sk.LegacyLayer:
    annotations = dict(layer.annotations)
    for k, v in changes.pop("annotations", {}).items():
        if v is None:
            annotations.pop(k, None)
        else:
            annotations[k] = v
    return sk.LegacyLayer(
        media_type=layer.media_type,
        blob=changes.get("blob", layer.blob),
        annotations=annotations,
    )


def test_keyless_signature_verifies_and_names_signer(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.sign_legacy(REF, DIGEST, ID, GH)
    f = check(trust, layer)
    assert f.valid, f.error
    assert f.format is Format.LEGACY and f.kind is Kind.SIGNATURE
    assert f.signer is not None and (f.signer.subject, f.signer.issuer) == (ID, GH)
    assert f.tlog is not None and layer.entry is not None
    assert f.tlog.log_index == layer.entry.log_index
    assert f.tlog.integrated_time == layer.entry.integrated_time


def test_email_identity_and_go_case_insensitive_digest_key(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.sign_legacy(REF, DIGEST, "dev@acme.test", "https://accounts.google.com")
    f = check(trust, layer)
    assert f.valid and f.signer is not None and f.signer.subject == "dev@acme.test"


def test_signature_for_another_digest_is_invalid(kit: SigstoreKit, trust: Trust) -> None:
    f = check(trust, kit.sign_legacy(REF, OTHER, ID, GH))
    assert not f.valid
    assert f.error is not None and "another image" in f.error and OTHER in f.error


def test_altered_payload_is_invalid(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.sign_legacy(REF, DIGEST, ID, GH)
    altered = layer.blob.replace(b"acme/app", b"acme/evil")
    f = check(trust, mutate(layer, blob=altered))
    assert not f.valid and f.error is not None and "does not verify" in f.error


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"ca": "untrusted"}, "chain"),
        ({"sct": "bad"}, "SCT"),
        ({"sct": "none"}, "SCT"),
    ],
)
def test_certificate_problems_are_invalid(
    kit: SigstoreKit, trust: Trust, options: dict[str, Any], needle: str
) -> None:
    f = check(trust, kit.sign_legacy(REF, DIGEST, ID, GH, **options))
    assert not f.valid and f.error is not None and needle in f.error, f.error


def test_bad_set_is_invalid(kit: SigstoreKit, trust: Trust) -> None:
    f = check(trust, kit.sign_legacy(REF, DIGEST, ID, GH, bad_set=True))
    assert not f.valid and f.error is not None and "SET" in f.error


def test_set_from_another_entry_is_rejected_by_body_check(kit: SigstoreKit, trust: Trust) -> None:
    """A genuine SET for some other signature, pasted next to this one (CVE-2022-36056)."""
    mine = kit.sign_legacy(REF, DIGEST, ID, GH)
    theirs = kit.sign_legacy(REF, DIGEST, ID, GH)
    forged = mutate(
        mine, annotations={sk.ANNOTATION_BUNDLE: theirs.annotations[sk.ANNOTATION_BUNDLE]}
    )
    f = check(trust, forged)
    assert not f.valid and f.error is not None and "tlog entry records" in f.error


def test_expired_certificate_without_trusted_time(kit: SigstoreKit, trust: Trust) -> None:
    """No bundle annotation: only 'now' is left, when the 10-minute certificate is long dead."""
    old = datetime.now(UTC) - timedelta(days=2)
    layer = kit.sign_legacy(REF, DIGEST, ID, GH, not_before=old)
    f = check(trust, mutate(layer, annotations={sk.ANNOTATION_BUNDLE: None}))
    assert not f.valid and f.error is not None and "trusted time" in f.error


def test_integrated_time_outside_certificate_validity(kit: SigstoreKit, trust: Trust) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    layer = kit.sign_legacy(REF, DIGEST, ID, GH, not_before=old)  # logged now, cert long expired
    f = check(trust, layer)
    assert not f.valid and f.error is not None and "not valid when the log recorded" in f.error


@pytest.mark.parametrize(
    ("annotations", "blob", "needle"),
    [
        ({sk.ANNOTATION_SIGNATURE: "%%%not-base64"}, None, "base64"),
        (
            {
                sk.ANNOTATION_CERTIFICATE: (
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                )
            },
            None,
            "PEM",
        ),
        ({sk.ANNOTATION_BUNDLE: "{not json"}, None, "JSON"),
        ({sk.ANNOTATION_SIGNATURE: None}, None, "annotation"),
        ({}, b"\xff\xfe not json", "does not verify"),
    ],
)
def test_malformed_material_is_invalid_not_a_crash(
    kit: SigstoreKit, trust: Trust, annotations: dict[str, Any], blob: bytes | None, needle: str
) -> None:
    layer = kit.sign_legacy(REF, DIGEST, ID, GH)
    changed = mutate(layer, annotations=annotations, **({"blob": blob} if blob else {}))
    f = check(trust, changed)
    assert not f.valid and f.error is not None and needle in f.error, f.error


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xff\xfe not json", "JSON"),
        (b'{"critical": 7}', "critical"),
        (b'{"critical": {"type": "cosign container image signature", "image": {}}}', "digest"),
        (b"[]", "object"),
    ],
)
def test_validly_signed_garbage_payload_is_invalid(
    trust: Trust, payload: bytes, needle: str
) -> None:
    """A trusted key signed nonsense: the signature holds, the payload names no image."""
    private = ec.generate_private_key(ec.SECP256R1())
    layer = sk.LegacyLayer(
        media_type=sk.SIMPLESIGNING_MEDIA_TYPE,
        blob=payload,
        annotations={sk.ANNOTATION_SIGNATURE: sk.b64(sk.sign_data(private, payload))},
    )
    trusted = TrustedKey(key_id(private.public_key()), private.public_key())
    f = check(trust, layer, keys=[trusted])
    assert not f.valid and f.error is not None and needle in f.error, f.error


def test_go_style_case_insensitive_keys_are_read(trust: Trust) -> None:
    """cosign's spec example writes Docker-manifest-digest; Go unmarshals it case-insensitively."""
    private = ec.generate_private_key(ec.SECP256R1())
    payload = (
        b'{"critical":{"identity":{"docker-reference":"r/a"},"image":{"Docker-manifest-digest":"'
        + DIGEST.encode()
        + b'"},"type":"cosign container image signature"},"optional":null}'
    )
    layer = sk.LegacyLayer(
        media_type=sk.SIMPLESIGNING_MEDIA_TYPE,
        blob=payload,
        annotations={sk.ANNOTATION_SIGNATURE: sk.b64(sk.sign_data(private, payload))},
    )
    trusted = TrustedKey(key_id(private.public_key()), private.public_key())
    assert check(trust, layer, keys=[trusted]).valid


KeyFactory = Callable[[], Any]
KEYS: dict[str, KeyFactory] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_key_signed_with_right_key(kit: SigstoreKit, trust: Trust, kind: str) -> None:
    private = KEYS[kind]()
    trusted = TrustedKey(key_id(private.public_key()), private.public_key())
    f = check(trust, kit.sign_legacy_with_key(private, REF, DIGEST), keys=[trusted])
    assert f.valid, f.error
    assert f.format is Format.KEY and f.signer is not None and f.signer.key_id == trusted.key_id
    assert f.tlog is not None


def test_key_signed_without_tlog_verifies_with_key(kit: SigstoreKit, trust: Trust) -> None:
    private = KEYS["p256"]()
    trusted = TrustedKey(key_id(private.public_key()), private.public_key())
    f = check(trust, kit.sign_legacy_with_key(private, REF, DIGEST, tlog=False), keys=[trusted])
    assert f.valid and f.tlog is None


def test_wrong_key_with_tlog_is_a_valid_stranger(kit: SigstoreKit, trust: Trust) -> None:
    """The log names the key, so the signature is provably valid, just not by a trusted key."""
    ours, theirs = KEYS["p256"](), KEYS["p256"]()
    trusted = TrustedKey(key_id(ours.public_key()), ours.public_key())
    f = check(trust, kit.sign_legacy_with_key(theirs, REF, DIGEST), keys=[trusted])
    assert f.valid and f.signer is not None
    assert f.signer.key_id == key_id(theirs.public_key()) != trusted.key_id


def test_wrong_key_without_tlog_is_invalid(kit: SigstoreKit, trust: Trust) -> None:
    ours, theirs = KEYS["p256"](), KEYS["p256"]()
    trusted = TrustedKey(key_id(ours.public_key()), ours.public_key())
    f = check(trust, kit.sign_legacy_with_key(theirs, REF, DIGEST, tlog=False), keys=[trusted])
    assert not f.valid and f.error is not None and "any key the policies trust" in f.error


def test_key_signed_with_bad_set_is_invalid(kit: SigstoreKit, trust: Trust) -> None:
    private = KEYS["p256"]()
    trusted = TrustedKey(key_id(private.public_key()), private.public_key())
    f = check(trust, kit.sign_legacy_with_key(private, REF, DIGEST, bad_set=True), keys=[trusted])
    assert not f.valid and f.error is not None and "SET" in f.error


PROVENANCE = "https://slsa.dev/provenance/v1"


def test_keyless_attestation_verifies(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.attest_legacy(REF, DIGEST, PROVENANCE, {"buildDefinition": {}}, ID, GH)
    f = check(trust, layer, kind=Kind.ATTESTATION)
    assert f.valid, f.error
    assert f.kind is Kind.ATTESTATION and f.predicate_type == PROVENANCE
    assert f.signer is not None and f.signer.subject == ID


def test_cosign_v3_attestation_shape_verifies(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.attest_legacy(
        REF, DIGEST, PROVENANCE, {}, ID, GH, keyid_field=False, protojson_order=True
    )
    assert check(trust, layer, kind=Kind.ATTESTATION).valid


def test_attestation_for_another_digest(kit: SigstoreKit, trust: Trust) -> None:
    f = check(trust, kit.attest_legacy(REF, OTHER, PROVENANCE, {}, ID, GH), kind=Kind.ATTESTATION)
    assert not f.valid and f.error is not None and "another image" in f.error


def test_attestation_with_wrong_payload_type(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.attest_legacy(REF, DIGEST, PROVENANCE, {}, ID, GH)
    env = json.loads(layer.blob)
    env["payloadType"] = "text/plain"
    f = check(trust, mutate(layer, blob=json.dumps(env).encode()), kind=Kind.ATTESTATION)
    assert not f.valid  # the signature covers the payload type, so this also breaks it


def test_attestation_with_altered_statement(kit: SigstoreKit, trust: Trust) -> None:
    layer = kit.attest_legacy(REF, DIGEST, PROVENANCE, {"ok": True}, ID, GH)
    env = json.loads(layer.blob)
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"] = {"ok": False}
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    f = check(trust, mutate(layer, blob=json.dumps(env).encode()), kind=Kind.ATTESTATION)
    assert not f.valid and f.error is not None and "does not verify" in f.error


@pytest.mark.parametrize(
    "bundle",
    [
        "[" * 5000 + "]" * 5000,
        '{"SignedEntryTimestamp":"AAAA","Payload":{"body":"e30=","integratedTime":"²",'
        '"logIndex":1,"logID":"00"}}',
        '{"SignedEntryTimestamp":"AAAA","Payload":{"body":"e30=","integratedTime":"'
        + "9" * 5000
        + '","logIndex":1,"logID":"00"}}',
    ],
    ids=["deeply-nested", "unicode-digit", "huge-integer"],
)
def test_hostile_bundle_annotation_is_invalid_not_a_crash(
    kit: SigstoreKit, trust: Trust, bundle: str
) -> None:
    layer = kit.sign_legacy(REF, DIGEST, ID, GH)
    f = check(trust, mutate(layer, annotations={sk.ANNOTATION_BUNDLE: bundle}))
    assert not f.valid and f.error


def test_deeply_nested_attestation_is_invalid_not_a_crash(trust: Trust) -> None:
    layer = sk.LegacyLayer(media_type=sk.DSSE_LAYER_MEDIA_TYPE, blob=b"[" * 100_000, annotations={})
    f = check(trust, layer, kind=Kind.ATTESTATION)
    assert not f.valid and f.error is not None and "nested" in f.error
