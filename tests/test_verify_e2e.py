"""`registry-watcher verify` end to end: a real docker-registry, the private Sigstore, the CLI.

Every image here is pushed to a real CNCF distribution registry and signed the way cosign
signs (legacy tags, bundles through the referrers fallback, keys, attestations); the verdict,
its reasons and the exit code come from the same code path a user runs.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from watcher import cli
from watcher.config import load_config
from watcher.refs import Digest, signature_tag
from watcher.registry.client import RegistryClient
from watcher.testing import oci
from watcher.testing import sigstore_kit as sk
from watcher.testing.sigstore_kit import SigstoreKit

GH = "https://token.actions.githubusercontent.com"
ALICE = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
MALLORY = "https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main"
PROVENANCE = "https://slsa.dev/provenance/v1"


@dataclass
class World:
    """A registry, a config pointing at it, and the private Sigstore that signs for it."""

    kit: SigstoreKit
    client: RegistryClient
    host: str
    config_path: Path
    release_key: ec.EllipticCurvePrivateKey

    def repo(self, name: str) -> str:
        return f"e2e/{name}-{secrets.token_hex(3)}"

    async def verify(self, image: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
        """Run the CLI's verify path in-process; returns (exit code, verdict JSON)."""
        config = load_config(self.config_path)
        code = await cli.verify_image(config, image, "json")
        out = capsys.readouterr().out
        return code, json.loads(out)


def write_config(tmp: Path, registry_url: str, host: str, trusted_root: Path, pub: bytes) -> Path:
    (tmp / "keys").mkdir()
    (tmp / "keys" / "release.pub").write_bytes(pub)
    acme = {"issuer": GH, "subjectRegExp": r"^https://github\.com/acme/"}
    doc = {
        "store": {"url": f"sqlite:///{tmp}/watcher.db"},
        "trust": {"trusted_root": str(trusted_root)},
        "registries": [{"name": "local", "url": registry_url, "repositories": ["e2e/**"]}],
        "policies": [
            {
                "name": "release",
                "images": [{"glob": f"{host}/e2e/**"}],
                "authorities": [
                    {"name": "github-actions", "keyless": {"identities": [acme]}},
                    {"name": "release-key", "key": {"path": "keys/release.pub"}},
                ],
            },
            {
                "name": "provenance",
                "mode": "warn",
                "images": [{"glob": f"{host}/e2e/prod-*"}],
                "authorities": [
                    {
                        "name": "gha-provenance",
                        "keyless": {"identities": [acme]},
                        "attestations": [{"name": "slsa", "predicateType": PROVENANCE}],
                    }
                ],
            },
        ],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
async def world(
    kit: SigstoreKit, registry_url: str, trusted_root_path: Path, tmp_path: Path
) -> AsyncIterator[World]:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with RegistryClient("local", registry_url) as client:
        cfg = write_config(tmp_path, registry_url, client.host, trusted_root_path, pub)
        yield World(kit, client, client.host, cfg, key)


Signer = Callable[[World, str, oci.ImageInfo], Awaitable[None]]


async def push(w: World, repo: str, tag: str = "v1") -> oci.ImageInfo:
    return await oci.push_image(w.client, repo, tag)


async def legacy_sig(
    w: World, repo: str, image: oci.ImageInfo, identity: str = ALICE, **kw: Any
) -> None:
    layer = w.kit.sign_legacy(f"{w.host}/{repo}", image.digest, identity, GH, **kw)
    await oci.attach_legacy(w.client, repo, image.digest, [layer], "sig")


async def bundle_sig(
    w: World, repo: str, image: oci.ImageInfo, identity: str = ALICE, **kw: Any
) -> None:
    raw = w.kit.sign_bundle(image.digest, identity, GH, **kw)
    await oci.attach_referrer(w.client, repo, image, raw, "https://sigstore.dev/cosign/sign/v1")


# -- the happy paths, in each format ------------------------------------------------------


@pytest.mark.parametrize("sign", [legacy_sig, bundle_sig], ids=["legacy", "bundle"])
async def test_expected_identity_is_verified(world: World, capsys, sign: Signer) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("app")
    image = await push(world, repo)
    await sign(world, repo, image)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"], doc["digest"]) == (0, "verified", image.digest)
    assert doc["policies"] == [{"name": "release", "verdict": "verified", "mode": "enforce"}]
    [sig] = doc["signatures"]
    assert sig["valid"] and sig["authority"] == "github-actions" and sig["subject"] == ALICE
    assert sig["tlog"]["log_index"] >= 0 and sig["tlog"]["integrated_time"] > 0
    assert doc["tags"] == ["v1"] and doc["extra_signers"] == [] and doc["severity"] == "none"
    assert doc["image"] == f"{world.host}/{repo}@{image.digest}"


async def test_verify_by_digest(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("bydigest")
    image = await push(world, repo)
    await legacy_sig(world, repo, image)
    code, doc = await world.verify(f"{world.host}/{repo}@{image.digest}", capsys)
    assert (code, doc["verdict"], doc["tags"]) == (0, "verified", [])


async def test_extra_signer_is_listed(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("extra")
    image = await push(world, repo)
    await legacy_sig(world, repo, image, ALICE)
    await legacy_sig(world, repo, image, MALLORY)  # appended to the same .sig manifest
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"], doc["severity"]) == (0, "verified", "warning")
    assert [s["subject"] for s in doc["extra_signers"]] == [MALLORY]
    assert len(doc["signatures"]) == 2


async def test_only_unexpected_identity(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("stranger")
    image = await push(world, repo)
    await bundle_sig(world, repo, image, MALLORY)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"], doc["severity"]) == (1, "unexpected_signer", "critical")
    assert any(MALLORY in r for r in doc["reasons"])
    assert doc["signatures"][0]["valid"] and doc["signatures"][0]["authority"] is None


async def test_unsigned(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("bare")
    await push(world, repo)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "unsigned")
    assert doc["signatures"] == [] and any("no signature" in r for r in doc["reasons"])


async def test_key_signed_right_and_wrong_key(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("keyed")
    good = await push(world, repo, "good")
    layer = world.kit.sign_legacy_with_key(world.release_key, f"{world.host}/{repo}", good.digest)
    await oci.attach_legacy(world.client, repo, good.digest, [layer], "sig")
    code, doc = await world.verify(f"{world.host}/{repo}:good", capsys)
    assert (code, doc["verdict"]) == (0, "verified")
    assert doc["signatures"][0]["authority"] == "release-key"
    assert doc["signatures"][0]["format"] == "key"

    other_key = ec.generate_private_key(ec.SECP256R1())
    logged = await push(world, repo, "logged")
    layer = world.kit.sign_legacy_with_key(other_key, f"{world.host}/{repo}", logged.digest)
    await oci.attach_legacy(world.client, repo, logged.digest, [layer], "sig")
    code, doc = await world.verify(f"{world.host}/{repo}:logged", capsys)
    assert (code, doc["verdict"]) == (1, "unexpected_signer")

    unlogged = await push(world, repo, "unlogged")
    layer = world.kit.sign_legacy_with_key(
        other_key, f"{world.host}/{repo}", unlogged.digest, tlog=False
    )
    await oci.attach_legacy(world.client, repo, unlogged.digest, [layer], "sig")
    code, doc = await world.verify(f"{world.host}/{repo}:unlogged", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")


# -- attestations and several policies ---------------------------------------------------


async def test_required_attestation_present_in_both_formats(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("prod-app")
    bundled = await push(world, repo, "bundled")
    await bundle_sig(world, repo, bundled)
    att = world.kit.attest_bundle(f"{world.host}/{repo}", bundled.digest, PROVENANCE, {}, ALICE, GH)
    await oci.attach_referrer(world.client, repo, bundled, att, PROVENANCE)
    code, doc = await world.verify(f"{world.host}/{repo}:bundled", capsys)
    assert (code, doc["verdict"]) == (0, "verified")
    assert {p["name"]: p["verdict"] for p in doc["policies"]} == {
        "release": "verified",
        "provenance": "verified",
    }
    assert doc["attestations"][0]["predicate_type"] == PROVENANCE

    legacy = await push(world, repo, "legacy")
    await legacy_sig(world, repo, legacy)
    layer = world.kit.attest_legacy(
        f"{world.host}/{repo}", legacy.digest, PROVENANCE, {}, ALICE, GH
    )
    await oci.attach_legacy(world.client, repo, legacy.digest, [layer], "att")
    code, doc = await world.verify(f"{world.host}/{repo}:legacy", capsys)
    assert (code, doc["verdict"]) == (0, "verified"), doc["reasons"]


async def test_required_attestation_absent_or_by_wrong_identity(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("prod-svc")
    absent = await push(world, repo, "absent")
    await legacy_sig(world, repo, absent)
    code, doc = await world.verify(f"{world.host}/{repo}:absent", capsys)
    assert (code, doc["verdict"], doc["policy"]) == (1, "missing_attestation", "provenance")
    assert doc["severity"] == "warning"  # the provenance policy is in warn mode

    wrong = await push(world, repo, "wrong")
    await legacy_sig(world, repo, wrong)
    att = world.kit.attest_bundle(f"{world.host}/{repo}", wrong.digest, PROVENANCE, {}, MALLORY, GH)
    await oci.attach_referrer(world.client, repo, wrong, att, PROVENANCE)
    code, doc = await world.verify(f"{world.host}/{repo}:wrong", capsys)
    assert (code, doc["verdict"]) == (1, "missing_attestation")
    assert doc["attestations"][0]["valid"] and doc["attestations"][0]["authority"] is None


async def test_unsigned_under_attestation_policy(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("prod-bare")
    await push(world, repo)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert code == 1
    assert {p["name"]: p["verdict"] for p in doc["policies"]} == {
        "release": "unsigned",
        "provenance": "unsigned",
    }


async def test_multi_arch_index(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("multi")
    index = await oci.push_index(world.client, repo, "v1", platforms=3)
    await bundle_sig(world, repo, index)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"], doc["digest"]) == (0, "verified", index.digest)
    assert any("multi-arch index" in r and "3 platform" in r for r in doc["reasons"])


# -- hostile material ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sign", "kwargs", "needle"),
    [
        (legacy_sig, {"ca": "untrusted"}, "chain"),
        (legacy_sig, {"sct": "bad"}, "SCT"),
        (legacy_sig, {"bad_set": True}, "SET"),
        (bundle_sig, {"bad_inclusion_proof": True}, "log entry"),
        (bundle_sig, {"ca": "untrusted"}, "chain"),
    ],
    ids=["other-ca", "bad-sct", "bad-set", "bad-inclusion-proof", "bundle-other-ca"],
)
async def test_hostile_material_is_invalid(  # type: ignore[no-untyped-def]
    world: World, capsys, sign: Signer, kwargs: dict[str, Any], needle: str
) -> None:
    repo = world.repo("hostile")
    image = await push(world, repo)
    await sign(world, repo, image, ALICE, **kwargs)  # type: ignore[call-arg]
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")
    assert any(needle in r for r in doc["reasons"]), doc["reasons"]


async def test_signature_for_another_digest(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("replay")
    image = await push(world, repo, "v1")
    other = await push(world, repo, "v2")
    layer = world.kit.sign_legacy(f"{world.host}/{repo}", other.digest, ALICE, GH)
    await oci.attach_legacy(world.client, repo, image.digest, [layer], "sig")  # copied across
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")
    assert any("another image" in r for r in doc["reasons"])


async def _put_sig_manifest(
    w: World, repo: str, digest: Digest, layers: list[dict[str, Any]], blob: bytes
) -> None:
    await w.client.put_blob(repo, blob)
    config, raw = oci.signature_manifest(layers)
    await w.client.put_blob(repo, config)
    await w.client.put_manifest(repo, signature_tag(digest), raw, oci.OCI_MANIFEST_MEDIA_TYPE)


async def test_sig_manifest_with_thousands_of_layers(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("layers")
    image = await push(world, repo)
    layer = world.kit.sign_legacy(f"{world.host}/{repo}", image.digest, ALICE, GH)
    desc = oci.descriptor(layer.media_type, layer.blob)  # no annotations: stay under 4 MiB
    await _put_sig_manifest(world, repo, Digest(image.digest), [desc] * 3000, layer.blob)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")
    assert any("3000 layers" in r for r in doc["reasons"]), doc["reasons"]


async def test_blob_larger_than_its_cap(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("bigblob")
    image = await push(world, repo)
    big = b"{" + b" " * (2 << 20) + b"}"
    desc = oci.descriptor(
        sk.SIMPLESIGNING_MEDIA_TYPE, big, annotations={sk.ANNOTATION_SIGNATURE: "AAAA"}
    )
    await _put_sig_manifest(world, repo, Digest(image.digest), [desc], big)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")
    assert any("cap" in r for r in doc["reasons"]), doc["reasons"]


async def test_expired_certificate_without_trusted_time(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    repo = world.repo("expired")
    image = await push(world, repo)
    layer = world.kit.sign_legacy(
        f"{world.host}/{repo}",
        image.digest,
        ALICE,
        GH,
        not_before=datetime.now(UTC) - timedelta(days=1),
    )
    stripped = sk.LegacyLayer(
        media_type=layer.media_type,
        blob=layer.blob,
        annotations={k: v for k, v in layer.annotations.items() if k != sk.ANNOTATION_BUNDLE},
    )
    await oci.attach_legacy(world.client, repo, image.digest, [stripped], "sig")
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (1, "invalid_signature")
    assert any("trusted time" in r for r in doc["reasons"]), doc["reasons"]


async def test_one_good_signature_beside_garbage_is_verified(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("mixed")
    image = await push(world, repo)
    await legacy_sig(world, repo, image, ALICE, bad_set=True)
    await bundle_sig(world, repo, image, ALICE)
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"]) == (0, "verified")
    assert sorted(s["valid"] for s in doc["signatures"]) == [False, True]


# -- outside the policies, and a registry that is down ------------------------------------


async def test_no_policy(world: World, capsys, registry_url: str) -> None:  # type: ignore[no-untyped-def]
    repo = f"elsewhere/app-{secrets.token_hex(3)}"
    image = await oci.push_image(world.client, repo, "v1")
    code, doc = await world.verify(f"{world.host}/{repo}:v1", capsys)
    assert (code, doc["verdict"], doc["digest"], doc["policies"]) == (
        0,
        "no_policy",
        image.digest,
        [],
    )


async def test_registry_down_is_error_not_unsigned(world: World, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.services import free_port

    port = free_port()
    doc = yaml.safe_load(world.config_path.read_text())
    doc["registries"][0]["url"] = f"http://127.0.0.1:{port}"
    doc["registries"][0]["timeout"] = "2s"
    doc["policies"][0]["images"] = [{"glob": f"127.0.0.1:{port}/e2e/**"}]
    world.config_path.write_text(yaml.safe_dump(doc))
    code, out = await world.verify(f"127.0.0.1:{port}/e2e/app:v1", capsys)
    assert (code, out["verdict"]) == (3, "error")
    assert out["policies"][0]["verdict"] == "error"
    assert any("127.0.0.1" in r for r in out["reasons"]), out["reasons"]


# -- the public-good instance: real data, verified offline ------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "real-sigstore"


async def test_real_public_good_attestation(world: World, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = world.repo("real")
    config = (FIXTURES / "ggcr-empty-image.config.json").read_bytes()
    manifest = (FIXTURES / "ggcr-empty-image.manifest.json").read_bytes()
    await world.client.put_blob(repo, config)
    media_type = json.loads(manifest)["mediaType"]
    digest = await world.client.put_manifest(repo, "latest", manifest, media_type)
    assert digest == "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
    subject = oci.ImageInfo(digest, media_type, len(manifest))
    bundle = (FIXTURES / "cosign-oci-attestation.sigstore.json").read_bytes()
    await oci.attach_referrer(
        world.client, repo, subject, bundle, "https://cosign.sigstore.dev/attestation/v1"
    )
    doc = yaml.safe_load(world.config_path.read_text())
    doc["trust"] = {"trusted_root": None}
    doc["policies"] = [
        {
            "name": "cody",
            "images": [{"glob": f"{world.host}/e2e/**"}],
            "authorities": [
                {
                    "name": "cody",
                    "keyless": {
                        "identities": [
                            {
                                "issuer": "https://github.com/login/oauth",
                                "subject": "cody@soyland.com",
                            }
                        ]
                    },
                    "attestations": [
                        {
                            "name": "custom",
                            "predicateType": "https://cosign.sigstore.dev/attestation/v1",
                        }
                    ],
                }
            ],
        }
    ]
    world.config_path.write_text(yaml.safe_dump(doc))
    code, out = await world.verify(f"{world.host}/{repo}:latest", capsys)
    assert (code, out["verdict"]) == (0, "verified"), out["reasons"]
    att = out["attestations"][0]
    assert (att["subject"], att["valid"], att["tlog"]["log_index"]) == (
        "cody@soyland.com",
        True,
        175508996,
    )


# -- the console script itself -------------------------------------------------------------


async def run_process(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real console program without blocking the event loop."""
    import asyncio

    return await asyncio.to_thread(subprocess.run, args, **kw)


async def test_console_script_exit_codes_and_json(world: World) -> None:
    repo = world.repo("script")
    image = await push(world, repo)
    await legacy_sig(world, repo, image)
    base = [sys.executable, "-m", "watcher", "verify", "-c", str(world.config_path)]
    ok = await run_process(
        [*base, f"{world.host}/{repo}:v1", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "verified"
    missing = await run_process(
        [*base, f"{world.host}/{repo}:nope"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 3, missing.stdout + missing.stderr
    usage = await run_process(
        [*base, "not a reference!"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    check = await run_process(
        [sys.executable, "-m", "watcher", "check-config", "-c", str(world.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    world.config_path.write_text("registries: 7\n")
    bad = await run_process(
        [sys.executable, "-m", "watcher", "check-config", "-c", str(world.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "registries" in bad.stderr
