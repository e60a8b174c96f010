"""The kit's material must satisfy the real sigstore-python verifier, and its OCI shapes must
match what cosign/go-containerregistry write byte for byte; otherwise every other test that
builds on the kit would prove nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from sigstore import dsse
from sigstore._internal import merkle
from sigstore._internal.rekor.checkpoint import SignedCheckpoint
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import KeyringPurpose
from sigstore._utils import KeyID
from sigstore.errors import VerificationError
from sigstore.models import Bundle, TransparencyLogEntry, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import AllOf, Identity, OIDCSourceRepositoryURI

from watcher.testing import oci
from watcher.testing.sigstore_kit import (
    ANNOTATION_BUNDLE,
    ANNOTATION_CERTIFICATE,
    ANNOTATION_CHAIN,
    ANNOTATION_PREDICATE_TYPE,
    ANNOTATION_SIGNATURE,
    BUNDLE_V03_MEDIA_TYPE,
    DSSE_LAYER_MEDIA_TYPE,
    OID_SOURCE_REPOSITORY_URI,
    SIMPLESIGNING_MEDIA_TYPE,
    LegacyLayer,
    SigstoreKit,
    TransparencyLog,
    dsse_pae,
    merkle_leaf_hash,
    merkle_node_hash,
    simplesigning_payload,
)

EMAIL = "alice@example.com"
EMAIL_ISSUER = "https://accounts.example.com"
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
GITHUB = "https://token.actions.githubusercontent.com"
DIGEST = "sha256:" + "ab" * 32
HEX = "ab" * 32
SLSA = "https://slsa.dev/provenance/v1"


@pytest.fixture(scope="module")
def kit() -> SigstoreKit:
    return SigstoreKit.create()


@pytest.fixture(scope="module")
def trusted_root(kit: SigstoreKit, tmp_path_factory: pytest.TempPathFactory) -> TrustedRoot:
    path = kit.write_trusted_root(tmp_path_factory.mktemp("trust") / "trusted_root.json")
    return TrustedRoot.from_file(str(path))


@pytest.fixture(scope="module")
def verifier(trusted_root: TrustedRoot) -> Verifier:
    return Verifier(trusted_root=trusted_root)


def _ec_verify(key: Any, signature: bytes, data: bytes, algorithm: Any) -> None:
    key.verify(signature, data, ec.ECDSA(algorithm))


# --- trust root --------------------------------------------------------------------------


def test_trusted_root_lists_kit_keys_and_chain(kit: SigstoreKit, trusted_root: TrustedRoot) -> None:
    doc = kit.trusted_root_json()
    assert doc["mediaType"] == "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    rekor_der = base64.b64decode(doc["tlogs"][0]["publicKey"]["rawBytes"])
    assert (
        doc["tlogs"][0]["logId"]["keyId"]
        == base64.b64encode(hashlib.sha256(rekor_der).digest()).decode()
    )
    assert hashlib.sha256(rekor_der).hexdigest() == kit.log.log_id
    assert trusted_root.get_fulcio_certs() == list(kit.fulcio.chain)
    # Both keyrings load (sigstore-python silently drops keys it cannot parse).
    assert len(trusted_root.rekor_keyring(KeyringPurpose.VERIFY)._keyring) == 1
    assert len(trusted_root.ct_keyring(KeyringPurpose.VERIFY)._keyring) == 1


def test_leaf_certificate_profile(kit: SigstoreKit) -> None:
    issued = kit.issue_certificate(
        WORKFLOW, GITHUB, extensions={OID_SOURCE_REPOSITORY_URI: "https://github.com/acme/app"}
    )
    cert = issued.certificate
    assert cert.subject == x509.Name([])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=10)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WORKFLOW]
    raw = {e.oid.dotted_string: e.value for e in cert.extensions}
    assert raw["1.3.6.1.4.1.57264.1.1"].value == GITHUB.encode()
    assert raw["1.3.6.1.4.1.57264.1.8"].value == b"\x0c" + bytes([len(GITHUB)]) + GITHUB.encode()
    assert raw[OID_SOURCE_REPOSITORY_URI].value[2:] == b"https://github.com/acme/app"
    assert list(raw)[-1] == "1.3.6.1.4.1.11129.2.4.2"  # SCT list appended last
    email = kit.issue_certificate(EMAIL, EMAIL_ISSUER).certificate
    email_san = email.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert email_san.get_values_for_type(x509.RFC822Name) == [EMAIL]
    assert issued.chain == kit.fulcio.chain
    assert issued.chain_pem.count("BEGIN CERTIFICATE") == 2


# --- bundle v0.3 through the real verifier ----------------------------------------------


def test_sign_bundle_verifies(kit: SigstoreKit, verifier: Verifier) -> None:
    raw = kit.sign_bundle(DIGEST, EMAIL, EMAIL_ISSUER)
    doc = json.loads(raw)
    assert list(doc) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert doc["mediaType"] == BUNDLE_V03_MEDIA_TYPE
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    assert list(entry) == [
        "logIndex",
        "logId",
        "kindVersion",
        "integratedTime",
        "inclusionPromise",
        "inclusionProof",
        "canonicalizedBody",
    ]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert doc["dsseEnvelope"]["signatures"] == [
        {"sig": doc["dsseEnvelope"]["signatures"][0]["sig"]}
    ]

    payload_type, payload = verifier.verify_dsse(
        Bundle.from_json(raw), Identity(identity=EMAIL, issuer=EMAIL_ISSUER)
    )
    assert payload_type == "application/vnd.in-toto+json"
    assert payload == (
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"'
        + HEX.encode()
        + b'"},"annotations":{}}],"predicateType":"https://sigstore.dev/cosign/sign/v1",'
        b'"predicate":{}}'
    )


def test_attest_bundle_verifies(kit: SigstoreKit, verifier: Verifier) -> None:
    raw = kit.attest_bundle(
        "registry.test/acme/app", DIGEST, SLSA, {"buildType": "x", "n": 1}, WORKFLOW, GITHUB
    )
    payload_type, payload = verifier.verify_dsse(
        Bundle.from_json(raw), Identity(identity=WORKFLOW, issuer=GITHUB)
    )
    assert payload_type == "application/vnd.in-toto+json"
    assert payload == (
        b'{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"' + SLSA.encode() + b'",'
        b'"subject":[{"name":"registry.test/acme/app","digest":{"sha256":"'
        + HEX.encode()
        + b'"}}],'
        b'"predicate":{"buildType":"x","n":1}}'
    )
    v3 = kit.attest_bundle("r/a", DIGEST, SLSA, {}, WORKFLOW, GITHUB, protojson_order=True)
    _, payload = verifier.verify_dsse(
        Bundle.from_json(v3), Identity(identity=WORKFLOW, issuer=GITHUB)
    )
    assert list(json.loads(payload)) == ["_type", "subject", "predicateType", "predicate"]


def test_fulcio_v2_claims_satisfy_policies(kit: SigstoreKit, verifier: Verifier) -> None:
    raw = kit.sign_bundle(
        DIGEST,
        WORKFLOW,
        GITHUB,
        extensions={OID_SOURCE_REPOSITORY_URI: "https://github.com/acme/app"},
    )
    policy = AllOf(
        [
            Identity(identity=WORKFLOW, issuer=GITHUB),
            OIDCSourceRepositoryURI("https://github.com/acme/app"),
        ]
    )
    verifier.verify_dsse(Bundle.from_json(raw), policy)


def test_expired_certificate_verifies_when_logged_inside_its_validity(
    kit: SigstoreKit, verifier: Verifier
) -> None:
    # The point of the log's integrated time: the certificate expired long ago, but the log
    # proves the signature was made while it was valid.
    issued_at = datetime.now(UTC) - timedelta(days=3)
    raw = kit.sign_bundle(
        DIGEST,
        EMAIL,
        EMAIL_ISSUER,
        not_before=issued_at,
        integrated_time=int(issued_at.timestamp()) + 30,
    )
    verifier.verify_dsse(Bundle.from_json(raw), Identity(identity=EMAIL, issuer=EMAIL_ISSUER))


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("bad-sct", {"sct": "bad"}, "SCT verify failed: keyring: invalid signature"),
    ("no-sct", {"sct": "none"}, "does not contain a signed certificate timestamp"),
    ("untrusted-ca", {"ca": "untrusted"}, "failed to build timestamp certificate chain"),
    ("bad-proof", {"bad_inclusion_proof": True}, "inclusion proof contains invalid root hash"),
    ("bad-set", {"bad_set": True}, "SET: invalid inclusion promise"),
    (
        "expired-at-integration",
        {"not_before": datetime.now(UTC) - timedelta(hours=1)},
        "not valid at validation time",
    ),
    (
        "integrated-before-issuance",
        {"integrated_time": _now() - 3600},
        "not valid at validation time",
    ),
]


@pytest.mark.parametrize(("knobs", "cause"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_bundles_are_rejected(
    kit: SigstoreKit, verifier: Verifier, knobs: dict[str, Any], cause: str
) -> None:
    for raw in (
        kit.sign_bundle(DIGEST, EMAIL, EMAIL_ISSUER, **knobs),
        kit.attest_bundle("r/a", DIGEST, SLSA, {}, EMAIL, EMAIL_ISSUER, **knobs),
    ):
        with pytest.raises(VerificationError, match=cause):
            verifier.verify_dsse(
                Bundle.from_json(raw), Identity(identity=EMAIL, issuer=EMAIL_ISSUER)
            )


def test_bad_proof_without_audit_path_is_rejected(tmp_path: Path) -> None:
    # In a one-entry log the audit path is empty, so the kit forges the root instead.
    fresh = SigstoreKit.create()
    verifier = Verifier(
        trusted_root=TrustedRoot.from_file(str(fresh.write_trusted_root(tmp_path / "t.json")))
    )
    raw = fresh.sign_bundle(DIGEST, EMAIL, EMAIL_ISSUER, bad_inclusion_proof=True)
    assert (
        json.loads(raw)["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"] == []
    )
    with pytest.raises(VerificationError, match="inclusion proof contains invalid root hash"):
        verifier.verify_dsse(Bundle.from_json(raw), Identity(identity=EMAIL, issuer=EMAIL_ISSUER))


def test_mutated_bundles_are_rejected(kit: SigstoreKit, verifier: Verifier) -> None:
    policy = Identity(identity=EMAIL, issuer=EMAIL_ISSUER)
    doc = json.loads(kit.sign_bundle(DIGEST, EMAIL, EMAIL_ISSUER))
    other = json.loads(kit.sign_bundle("sha256:" + "cd" * 32, EMAIL, EMAIL_ISSUER))

    swapped = json.loads(json.dumps(doc))
    swapped["dsseEnvelope"]["payload"] = other["dsseEnvelope"]["payload"]
    with pytest.raises(VerificationError, match="DSSE: invalid signature"):
        verifier.verify_dsse(Bundle.from_json(json.dumps(swapped)), policy)

    both = json.loads(json.dumps(doc))
    both["dsseEnvelope"] = other["dsseEnvelope"]  # validly signed, but by another certificate
    with pytest.raises(VerificationError, match="DSSE: invalid signature"):
        verifier.verify_dsse(Bundle.from_json(json.dumps(both)), policy)

    with pytest.raises(VerificationError, match="SANs do not match"):
        verifier.verify_dsse(
            Bundle.from_json(json.dumps(doc)),
            Identity(identity="eve@example.com", issuer=EMAIL_ISSUER),
        )
    with pytest.raises(VerificationError, match="OIDCIssuer does not match"):
        verifier.verify_dsse(
            Bundle.from_json(json.dumps(doc)), Identity(identity=EMAIL, issuer=GITHUB)
        )


# --- legacy .sig / .att -----------------------------------------------------------------


def _verify_cosign_set(trusted_root: TrustedRoot, annotation: str) -> dict[str, Any]:
    """cosign's VerifySET: the Rekor key chosen by logID signs RFC 8785 of `Payload`."""
    bundle = json.loads(annotation)
    keyring = trusted_root.rekor_keyring(KeyringPurpose.VERIFY)
    keyring.verify(
        key_id=KeyID(bytes.fromhex(bundle["Payload"]["logID"])),
        signature=base64.b64decode(bundle["SignedEntryTimestamp"]),
        data=rfc8785.dumps(bundle["Payload"]),
    )
    return dict(bundle["Payload"])


def test_simplesigning_payload_bytes() -> None:
    assert simplesigning_payload("registry.test/acme/app", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"registry.test/acme/app"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    annotated = simplesigning_payload("r/a", DIGEST, {"z": "1", "a": "<b&c>"})
    assert annotated.endswith(b'"optional":{"a":"\\u003cb\\u0026c\\u003e","z":"1"}}')


def test_sign_legacy_matches_cosign(kit: SigstoreKit, trusted_root: TrustedRoot) -> None:
    layer = kit.sign_legacy("registry.test/acme/app", DIGEST, EMAIL, EMAIL_ISSUER)
    assert layer.media_type == SIMPLESIGNING_MEDIA_TYPE
    assert layer.blob == simplesigning_payload("registry.test/acme/app", DIGEST)
    ann = layer.annotations
    assert set(ann) == {
        ANNOTATION_SIGNATURE,
        ANNOTATION_CERTIFICATE,
        ANNOTATION_CHAIN,
        ANNOTATION_BUNDLE,
    }
    assert ann[ANNOTATION_BUNDLE].startswith('{"SignedEntryTimestamp":"')

    payload = _verify_cosign_set(trusted_root, ann[ANNOTATION_BUNDLE])
    assert list(payload) == ["body", "integratedTime", "logIndex", "logID"]
    body = json.loads(base64.b64decode(payload["body"]))
    assert body["kind"] == "hashedrekord" and body["apiVersion"] == "0.0.1"
    spec = body["spec"]
    assert spec["data"]["hash"] == {
        "algorithm": "sha256",
        "value": hashlib.sha256(layer.blob).hexdigest(),
    }
    assert spec["signature"]["content"] == ann[ANNOTATION_SIGNATURE]
    assert (
        base64.b64decode(spec["signature"]["publicKey"]["content"]).decode()
        == ann[ANNOTATION_CERTIFICATE]
    )

    cert = x509.load_pem_x509_certificate(ann[ANNOTATION_CERTIFICATE].encode())
    chain = x509.load_pem_x509_certificates(ann[ANNOTATION_CHAIN].encode())
    _ec_verify(
        cert.public_key(), base64.b64decode(ann[ANNOTATION_SIGNATURE]), layer.blob, hashes.SHA256()
    )
    verify_sct(cert, chain, trusted_root.ct_keyring(KeyringPurpose.VERIFY))


def test_legacy_hostile_variants(kit: SigstoreKit, trusted_root: TrustedRoot) -> None:
    bad_sct = kit.sign_legacy("r/a", DIGEST, EMAIL, EMAIL_ISSUER, sct="bad").annotations
    cert = x509.load_pem_x509_certificate(bad_sct[ANNOTATION_CERTIFICATE].encode())
    chain = x509.load_pem_x509_certificates(bad_sct[ANNOTATION_CHAIN].encode())
    with pytest.raises(VerificationError, match="SCT verify failed"):
        verify_sct(cert, chain, trusted_root.ct_keyring(KeyringPurpose.VERIFY))

    bad_set = kit.sign_legacy("r/a", DIGEST, EMAIL, EMAIL_ISSUER, bad_set=True).annotations
    with pytest.raises(VerificationError, match="invalid signature"):
        _verify_cosign_set(trusted_root, bad_set[ANNOTATION_BUNDLE])

    rogue = kit.sign_legacy("r/a", DIGEST, EMAIL, EMAIL_ISSUER, ca="untrusted").annotations
    rogue_chain = x509.load_pem_x509_certificates(rogue[ANNOTATION_CHAIN].encode())
    assert rogue_chain[-1] == kit.untrusted_fulcio.root
    assert rogue_chain[-1] not in trusted_root.get_fulcio_certs()


def test_legacy_material_becomes_a_verifiable_bundle(kit: SigstoreKit, verifier: Verifier) -> None:
    # The documented workaround for SET-only legacy material: fetch the inclusion proof
    # from Rekor by logIndex and rebuild a bundle. The kit's fake Rekor response must work.
    layer = kit.sign_legacy("r/a", DIGEST, EMAIL, EMAIL_ISSUER)
    assert layer.entry is not None and layer.cert is not None
    entry = TransparencyLogEntry._from_v1_response(kit.log.rekor_api_entry(layer.entry.log_index))
    bundle = Bundle.from_parts(
        layer.cert.certificate, base64.b64decode(layer.annotations[ANNOTATION_SIGNATURE]), entry
    )
    verifier.verify_artifact(layer.blob, bundle, Identity(identity=EMAIL, issuer=EMAIL_ISSUER))
    with pytest.raises(VerificationError):
        verifier.verify_artifact(
            layer.blob + b" ", bundle, Identity(identity=EMAIL, issuer=EMAIL_ISSUER)
        )


@pytest.mark.parametrize("keyid_field", [True, False])
def test_attest_legacy_matches_cosign(
    kit: SigstoreKit, verifier: Verifier, trusted_root: TrustedRoot, keyid_field: bool
) -> None:
    layer = kit.attest_legacy(
        "registry.test/acme/app",
        DIGEST,
        SLSA,
        {"k": "v"},
        WORKFLOW,
        GITHUB,
        keyid_field=keyid_field,
    )
    assert layer.media_type == DSSE_LAYER_MEDIA_TYPE
    assert layer.annotations[ANNOTATION_PREDICATE_TYPE] == SLSA
    assert layer.annotations[ANNOTATION_SIGNATURE] == ""
    envelope = json.loads(layer.blob)
    assert list(envelope) == ["payload", "payloadType", "signatures"]
    expected_sig_keys = ["keyid", "sig"] if keyid_field else ["sig"]
    assert list(envelope["signatures"][0]) == expected_sig_keys
    statement = base64.b64decode(envelope["payload"])
    assert json.loads(statement)["subject"] == [
        {"name": "registry.test/acme/app", "digest": {"sha256": HEX}}
    ]
    cert = x509.load_pem_x509_certificate(layer.annotations[ANNOTATION_CERTIFICATE].encode())
    _ec_verify(
        cert.public_key(),
        base64.b64decode(envelope["signatures"][0]["sig"]),
        dsse_pae("application/vnd.in-toto+json", statement),
        hashes.SHA256(),
    )
    payload = _verify_cosign_set(trusted_root, layer.annotations[ANNOTATION_BUNDLE])
    body = json.loads(base64.b64decode(payload["body"]))
    assert body["kind"] == "dsse"
    assert body["spec"]["payloadHash"]["value"] == hashlib.sha256(statement).hexdigest()
    assert body["spec"]["envelopeHash"]["value"] == hashlib.sha256(layer.blob).hexdigest()

    # sigstore-python's own dsse/0.0.1 consistency check accepts the entry as well.
    assert layer.entry is not None and layer.cert is not None
    entry = TransparencyLogEntry._from_v1_response(kit.log.rekor_api_entry(layer.entry.log_index))
    bundle = Bundle._from_parts(layer.cert.certificate, dsse.Envelope._from_json(layer.blob), entry)
    assert verifier.verify_dsse(bundle, Identity(identity=WORKFLOW, issuer=GITHUB))[1] == statement


def _keys() -> dict[str, Any]:
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


KEYS = _keys()


@pytest.mark.parametrize("kind", list(KEYS))
def test_sign_legacy_with_key(kind: str, kit: SigstoreKit, trusted_root: TrustedRoot) -> None:
    key = KEYS[kind]
    layer = kit.sign_legacy_with_key(key, "r/a", DIGEST)
    signature = base64.b64decode(layer.annotations[ANNOTATION_SIGNATURE])
    public = key.public_key()
    # Independent of the kit's dispatch: what cosign's default verifiers use.
    if kind == "p256":
        public.verify(signature, layer.blob, ec.ECDSA(hashes.SHA256()))
    elif kind == "p384":
        public.verify(signature, layer.blob, ec.ECDSA(hashes.SHA384()))
    elif kind == "rsa":
        public.verify(signature, layer.blob, padding.PKCS1v15(), hashes.SHA256())
    else:
        public.verify(signature, layer.blob)
    assert set(layer.annotations) == {ANNOTATION_SIGNATURE, ANNOTATION_BUNDLE}
    payload = _verify_cosign_set(trusted_root, layer.annotations[ANNOTATION_BUNDLE])
    spec = json.loads(base64.b64decode(payload["body"]))["spec"]
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(spec["signature"]["publicKey"]["content"]) == pem
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")

    offline = kit.sign_legacy_with_key(key, "r/a", DIGEST, tlog=False)
    assert set(offline.annotations) == {ANNOTATION_SIGNATURE}
    assert offline.entry is None


def test_attest_legacy_with_key(kit: SigstoreKit, trusted_root: TrustedRoot) -> None:
    key = KEYS["p256"]
    layer = kit.attest_legacy("r/a", DIGEST, SLSA, {}, key=key)
    assert ANNOTATION_CERTIFICATE not in layer.annotations
    payload = _verify_cosign_set(trusted_root, layer.annotations[ANNOTATION_BUNDLE])
    verifier_pem = json.loads(base64.b64decode(payload["body"]))["spec"]["signatures"][0][
        "verifier"
    ]
    assert base64.b64decode(verifier_pem).startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ValueError, match="identity and issuer"):
        kit.attest_legacy("r/a", DIGEST, SLSA, {})


# --- the transparency log ---------------------------------------------------------------


def _naive_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle_node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _sigstore_accepts(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    inner, border = merkle._decomp_inclusion_proof(index, size)
    if len(path) != inner + border:
        return False
    calc = merkle._chain_inner(leaf, path[:inner], index)
    return merkle._chain_border_right(calc, path[inner:]) == root


def test_merkle_proofs_for_many_tree_sizes() -> None:
    log = TransparencyLog(ec.generate_private_key(ec.SECP256R1()), hostname="rekor.test")
    bodies = [b"entry-%d" % i for i in range(130)]
    for body in bodies:
        log.append(body, integrated_time=1)
    leaves = [merkle_leaf_hash(b) for b in bodies]
    for size in [*range(1, 66), 100, 127, 128, 129, 130]:
        root = log.root_hash(size)
        assert root == _naive_root(leaves[:size])
        for index in range(size) if size <= 65 else (0, size // 3, size - 2, size - 1):
            proof = list(log.inclusion_proof(index, size).hashes)
            assert _sigstore_accepts(leaves[index], index, size, proof, root)
            if proof:
                tampered = [bytes(32), *proof[1:]]
                assert not _sigstore_accepts(leaves[index], index, size, tampered, root)


def test_checkpoint_is_a_signed_note_sigstore_accepts(
    kit: SigstoreKit, trusted_root: TrustedRoot
) -> None:
    kit.log.append(b"something", integrated_time=1)
    proof = kit.log.inclusion_proof(kit.log.size - 1)
    signed = SignedCheckpoint.from_text(proof.checkpoint)
    assert signed.checkpoint.log_size == kit.log.size
    assert signed.checkpoint.log_hash == proof.root_hash.hex()
    assert signed.signed_note.signatures[0].sig_hash == bytes.fromhex(kit.log.log_id)[:4]
    signed.signed_note.verify(
        trusted_root.rekor_keyring(KeyringPurpose.VERIFY), KeyID(bytes.fromhex(kit.log.log_id))
    )
    forged = kit.log.checkpoint(root_hash=bytes(32))
    assert SignedCheckpoint.from_text(forged).checkpoint.log_hash == "00" * 32


def test_set_signs_the_canonical_entry(kit: SigstoreKit) -> None:
    entry = kit.log.append(b"{}", integrated_time=1_700_000_000)
    assert entry.set_payload() == (
        b'{"body":"e30=","integratedTime":1700000000,"logID":"'
        + kit.log.log_id.encode()
        + b'","logIndex":'
        + str(entry.log_index).encode()
        + b"}"
    )
    kit.rekor_key.public_key().verify(
        entry.signed_entry_timestamp, entry.set_payload(), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(InvalidSignature):
        kit.rekor_key.public_key().verify(
            entry.signed_entry_timestamp, entry.set_payload() + b" ", ec.ECDSA(hashes.SHA256())
        )


# --- OCI builders ------------------------------------------------------------------------


def test_empty_config_digest() -> None:
    assert "sha256:" + hashlib.sha256(b"{}").hexdigest() == oci.EMPTY_CONFIG_DIGEST


def test_referrer_manifest_bytes() -> None:
    subject = oci.ImageInfo(digest=DIGEST, media_type=oci.OCI_MANIFEST_MEDIA_TYPE, size=123)
    bundle = b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'
    raw = oci.referrer_manifest(
        subject,
        bundle,
        "https://sigstore.dev/cosign/sign/v1",
        created=datetime(2025, 2, 28, 19, 18, 11, tzinfo=UTC),
    )
    bundle_digest = "sha256:" + hashlib.sha256(bundle).hexdigest()
    assert (
        raw
        == (
            '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            '"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,'
            '"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",'
            '"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"},'
            '"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",'
            f'"size":{len(bundle)},"digest":"{bundle_digest}"}}],'
            '"annotations":{"dev.sigstore.bundle.content":"dsse-envelope",'
            '"dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1",'
            '"org.opencontainers.image.created":"2025-02-28T19:18:11Z"},'
            '"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":123,'
            f'"digest":"{DIGEST}"}},'
            '"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'
        ).encode()
    )


def test_signature_manifest_bytes() -> None:
    layer = LegacyLayer(SIMPLESIGNING_MEDIA_TYPE, b"payload", {"z": "2", "a": "1"})
    config, manifest = oci.signature_manifest([oci.legacy_layer_descriptor(layer)])
    digest = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    assert (
        config
        == (
            '{"architecture":"","created":"0001-01-01T00:00:00Z",'
            '"history":[{"created":"0001-01-01T00:00:00Z"}],"os":"",'
            f'"rootfs":{{"type":"layers","diff_ids":["{digest}"]}},"config":{{}}}}'
        ).encode()
    )
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert (
        manifest
        == (
            '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{len(config)},'
            f'"digest":"{config_digest}"}},'
            '"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":7,'
            f'"digest":"{digest}","annotations":{{"a":"1","z":"2"}}}}]}}'
        ).encode()
    )


def test_random_image_is_deterministic_and_distinct() -> None:
    a, b, c = oci.random_image(1), oci.random_image(1), oci.random_image(2)
    assert a == b and a[2] != c[2]
    manifest = json.loads(a[2])
    assert manifest["config"]["digest"] == "sha256:" + hashlib.sha256(a[0]).hexdigest()
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(a[1]).hexdigest()
    assert oci.attachment_tag(DIGEST, "sig") == f"sha256-{HEX}.sig"
    assert oci.attachment_tag(DIGEST, None) == f"sha256-{HEX}"


# --- OCI push helpers against an in-memory registry -------------------------------------


@dataclass(frozen=True)
class StoredManifest:
    raw: bytes
    media_type: str
    digest: str

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class MemoryRegistry:
    """Just enough of a registry: rejects manifests whose blobs or children are missing."""

    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], StoredManifest] = field(default_factory=dict)
    puts: list[tuple[str, str]] = field(default_factory=list)

    async def put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[(repository, digest)] = data
        return digest

    async def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str
    ) -> str:
        doc = json.loads(raw)
        assert doc["mediaType"] == media_type
        for ref in [doc.get("config"), *doc.get("layers", [])]:
            if ref is not None:
                assert (repository, ref["digest"]) in self.blobs, f"missing blob {ref['digest']}"
        for child in doc.get("manifests", []):
            assert (repository, child["digest"]) in self.manifests, f"missing {child['digest']}"
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:"):
            assert reference == digest
        stored = StoredManifest(raw, media_type, digest)
        self.manifests[(repository, digest)] = stored
        self.manifests[(repository, reference)] = stored
        self.puts.append((repository, reference))
        return digest

    async def get_manifest_optional(self, repository: str, reference: str) -> StoredManifest | None:
        return self.manifests.get((repository, reference))


async def test_push_image_and_index() -> None:
    registry = MemoryRegistry()
    image = await oci.push_image(registry, "acme/app", "v1", seed=7)
    stored = await registry.get_manifest_optional("acme/app", "v1")
    assert stored is not None and stored.digest == image.digest and len(stored.raw) == image.size

    index = await oci.push_index(registry, "acme/app", "multi", platforms=3, seed=7)
    stored = await registry.get_manifest_optional("acme/app", "multi")
    assert stored is not None and stored.media_type == oci.OCI_INDEX_MEDIA_TYPE
    children = stored.json["manifests"]
    assert [c["digest"] for c in children] == [m.digest for m in index.manifests]
    assert [c["platform"]["architecture"] for c in children] == ["amd64", "arm64", "arm"]
    assert children[2]["platform"]["variant"] == "v7"
    # Children are reachable by digest only, as `docker buildx --push` leaves them.
    tags = {ref for repo, ref in registry.puts if not ref.startswith("sha256:")}
    assert tags == {"v1", "multi"}


async def test_attach_legacy_read_modify_write(kit: SigstoreKit) -> None:
    registry = MemoryRegistry()
    image = await oci.push_image(registry, "acme/app", "v1")
    first = kit.sign_legacy("acme/app", image.digest, EMAIL, EMAIL_ISSUER)
    second = kit.sign_legacy("acme/app", image.digest, WORKFLOW, GITHUB)
    await oci.attach_legacy(registry, "acme/app", image.digest, [first])
    sig = await oci.attach_legacy(registry, "acme/app", image.digest, [second, first])
    stored = await registry.get_manifest_optional("acme/app", f"sha256-{image.digest[7:]}.sig")
    assert stored is not None and stored.digest == sig.digest
    layers = stored.json["layers"]
    assert [layer["annotations"] for layer in layers] == [first.annotations, second.annotations]
    assert stored.json["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = registry.blobs[("acme/app", stored.json["config"]["digest"])]
    assert json.loads(config)["rootfs"]["diff_ids"] == [first.digest, second.digest]

    # cosign's DupeDetector: same key, same payload, no tlog -> a fresh ECDSA signature
    # still counts as a duplicate because the stored one verifies under the new key.
    key = KEYS["p256"]
    keyed = [kit.sign_legacy_with_key(key, "acme/app", image.digest, tlog=False) for _ in range(2)]
    assert keyed[0].annotations != keyed[1].annotations
    await oci.attach_legacy(registry, "acme/app", image.digest, keyed)
    stored = await registry.get_manifest_optional("acme/app", f"sha256-{image.digest[7:]}.sig")
    assert stored is not None and len(stored.json["layers"]) == 3

    # Attestations carry an empty signature annotation, so cosign never dedupes them.
    att = kit.attest_legacy("acme/app", image.digest, SLSA, {}, EMAIL, EMAIL_ISSUER)
    await oci.attach_legacy(registry, "acme/app", image.digest, [att], suffix="att")
    await oci.attach_legacy(registry, "acme/app", image.digest, [att], suffix="att")
    stored = await registry.get_manifest_optional("acme/app", f"sha256-{image.digest[7:]}.att")
    assert stored is not None and len(stored.json["layers"]) == 2
    assert stored.json["layers"][0]["mediaType"] == DSSE_LAYER_MEDIA_TYPE


async def test_attach_referrer_and_fallback_index(kit: SigstoreKit, verifier: Verifier) -> None:
    registry = MemoryRegistry()
    image = await oci.push_image(registry, "acme/app", "v1")
    sig_bundle = kit.sign_bundle(image.digest, EMAIL, EMAIL_ISSUER)
    att_bundle = kit.attest_bundle("acme/app", image.digest, SLSA, {}, EMAIL, EMAIL_ISSUER)
    refs = [
        await oci.attach_referrer(
            registry, "acme/app", image, sig_bundle, "https://sigstore.dev/cosign/sign/v1"
        ),
        await oci.attach_referrer(registry, "acme/app", image, att_bundle, SLSA),
    ]
    await oci.attach_referrer(registry, "acme/app", image, att_bundle, SLSA)  # same digest: no-op
    index = await registry.get_manifest_optional("acme/app", f"sha256-{image.digest[7:]}")
    assert index is not None and index.media_type == oci.OCI_INDEX_MEDIA_TYPE
    manifests = index.json["manifests"]
    assert [d["digest"] for d in manifests] == sorted(r.digest for r in refs)
    for d in manifests:
        assert list(d) == ["mediaType", "size", "digest", "artifactType"]
        assert d["artifactType"] == BUNDLE_V03_MEDIA_TYPE

    # Discover and verify exactly as the watcher will: index -> referrer -> bundle layer.
    predicate_types = []
    for d in manifests:
        referrer = await registry.get_manifest_optional("acme/app", d["digest"])
        assert referrer is not None
        assert referrer.json["subject"] == image.descriptor()
        predicate_types.append(referrer.json["annotations"]["dev.sigstore.bundle.predicateType"])
        bundle = registry.blobs[("acme/app", referrer.json["layers"][0]["digest"])]
        _, payload = verifier.verify_dsse(
            Bundle.from_json(bundle), Identity(identity=EMAIL, issuer=EMAIL_ISSUER)
        )
        assert json.loads(payload)["subject"][0]["digest"]["sha256"] == image.digest[7:]
    assert sorted(predicate_types) == sorted(["https://sigstore.dev/cosign/sign/v1", SLSA])


async def test_real_registry_accepts_cosign_shapes(
    kit: SigstoreKit, verifier: Verifier, registry_client: Any, unique_repo: Any
) -> None:
    # docker-registry 2.8 must store every manifest the kit builds, unchanged.
    repo = unique_repo("kit")
    image = await oci.push_image(registry_client, repo, "v1")
    index = await oci.push_index(registry_client, repo, "multi", platforms=2)
    layer = kit.sign_legacy(repo, image.digest, EMAIL, EMAIL_ISSUER)
    sig = await oci.attach_legacy(registry_client, repo, image.digest, [layer])
    att = kit.attest_legacy(repo, index.digest, SLSA, {}, EMAIL, EMAIL_ISSUER)
    await oci.attach_legacy(registry_client, repo, index.digest, [att], suffix="att")
    bundle = kit.sign_bundle(image.digest, EMAIL, EMAIL_ISSUER)
    ref = await oci.attach_referrer(
        registry_client, repo, image, bundle, "https://sigstore.dev/cosign/sign/v1"
    )

    stored = await registry_client.get_manifest(repo, f"sha256-{image.digest[7:]}.sig")
    assert stored.digest == sig.digest
    assert stored.json["layers"][0]["annotations"] == layer.annotations
    fallback = await registry_client.get_manifest(repo, f"sha256-{image.digest[7:]}")
    assert [d["digest"] for d in fallback.json["manifests"]] == [ref.digest]
    referrer = await registry_client.get_manifest(repo, ref.digest)
    assert referrer.json["subject"] == image.descriptor()
    assert referrer.json["artifactType"] == BUNDLE_V03_MEDIA_TYPE
    blob = await registry_client.get_blob(
        repo, referrer.json["layers"][0]["digest"], max_bytes=1 << 20
    )
    verifier.verify_dsse(Bundle.from_json(blob), Identity(identity=EMAIL, issuer=EMAIL_ISSUER))
    assert await registry_client.referrers(repo, image.digest) is None  # 2.8: no API
