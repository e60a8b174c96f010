"""ClusterImagePolicy documents and the policy model they load into."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from watcher.policy.cip import ConfigError, load_policy_documents
from watcher.policy.model import (
    AttestationRequirement,
    Authority,
    Identity,
    KeyAuthority,
    KeylessAuthority,
    Policy,
    PolicyError,
    compile_go_regexp,
    load_public_key,
)
from watcher.refs import ImageReference
from watcher.verdicts import Mode, Signer

GH_ISSUER = "https://token.actions.githubusercontent.com"
DIGEST = "sha256:" + "ab" * 32

# A public key from policy-controller's own test data (test/testdata/.../cip-key.yaml).
PC_KEY = """\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZxAfzrQG1EbWyCI8LiSB7YgSFXoI
FNGTyQGKHFc6/H8TQumT9VLS78pUwtv3w7EfKoyFZoP32KrO7nzUy2q6Cw==
-----END PUBLIC KEY-----
"""
ANY_SIGNER = "[{keyless: {identities: [{issuer: i, subject: s}]}}]"  # a minimal authorities list
PC_KEY_FLOW = '"' + PC_KEY.replace("\n", "\\n") + '"'  # the same, as a YAML flow scalar


def public_pem(kind: str = "p256") -> bytes:
    """A fresh public key of the given kind, PEM-encoded."""
    key: object
    if kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif kind == "p521":
        key = ec.generate_private_key(ec.SECP521R1())
    elif kind == "secp256k1":
        key = ec.generate_private_key(ec.SECP256K1())
    elif kind == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "rsa1024":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise AssertionError(kind)
    public = key.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces)


# Real policy-controller documents (shapes from its e2e test data), one of each version.
MULTI_DOC = f"""\
# a comment before the first document
---
apiVersion: policy.sigstore.dev/v1alpha1
kind: ClusterImagePolicy
metadata:
  name: image-policy-key-and-keyless
spec:
  images:
  - glob: "**demo**"
  authorities:
  - key:
      data: |
{indent(PC_KEY, 8)}    ctlog:
      url: http://rekor.rekor-system.svc
  - keyless:
      url: http://fulcio.sigstore.dev
      identities:
      - issuerRegExp: .*kubernetes.default.*
        subjectRegExp: .*kubernetes.io/namespaces/default/serviceaccounts/default
---
apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata:
  name: image-policy-keyless-with-attestations
  labels: {{team: platform}}
  uid: 6f1e6c2a-0000-0000-0000-000000000000
spec:
  mode: warn
  images:
  - glob: ghcr.io/acme/**
  - glob: registry.local:5000/cosigned/demo*
  authorities:
  - name: attestation
    keyless:
      url: http://fulcio.fulcio-system.svc
      insecureIgnoreSCT: true
      identities:
      - issuer: {GH_ISSUER}
        subjectRegExp: ^https://github\\.com/acme/.*$
    signatureFormat: bundle
    attestations:
    - name: custom-match-predicate
      predicateType: custom
    - name: provenance
      predicateType: https://slsa.dev/provenance/v1
---
"""


def test_loads_v1alpha1_and_v1beta1_multi_document(tmp_path: Path) -> None:
    policies = load_policy_documents(write(tmp_path, "cips.yaml", MULTI_DOC))
    assert [p.name for p in policies] == [
        "image-policy-key-and-keyless",
        "image-policy-keyless-with-attestations",
    ]
    first, second = policies
    assert first.mode is Mode.ENFORCE  # policy-controller's default
    assert first.grace_period == timedelta(0)
    assert first.images == ("**demo**",)
    assert first.source.endswith("cips.yaml:6")
    key_authority, keyless_authority = first.authorities
    # Unnamed authorities are authority-<index>, as policy-controller defaults them.
    assert (key_authority.name, keyless_authority.name) == ("authority-0", "authority-1")
    assert key_authority.key is not None and key_authority.key.require_tlog  # ctlog present
    assert key_authority.key.pem.decode() == PC_KEY
    assert keyless_authority.keyless is not None
    (identity,) = keyless_authority.keyless.identities
    assert identity.issuer_regexp == ".*kubernetes.default.*"

    assert second.mode is Mode.WARN
    assert second.images == ("ghcr.io/acme/**", "registry.local:5000/cosigned/demo*")
    (authority,) = second.authorities
    assert authority.name == "attestation"
    assert authority.signature_format == "bundle"
    assert authority.keyless is not None and authority.keyless.insecure_ignore_sct
    # cosign's short predicate types are expanded the way cosign does.
    assert authority.attestations == (
        AttestationRequirement(
            "custom-match-predicate", "https://cosign.sigstore.dev/attestation/v1"
        ),
        AttestationRequirement("provenance", "https://slsa.dev/provenance/v1"),
    )


def test_key_without_ctlog_does_not_require_tlog(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        f"""\
        apiVersion: policy.sigstore.dev/v1beta1
        kind: ClusterImagePolicy
        metadata: {{name: image-policy-key}}
        spec:
          images: [{{glob: "**demo**"}}]
          authorities:
          - key:
              hashAlgorithm: sha256
              data: "{PC_KEY.replace(chr(10), chr(92) + "n")}"
        """,
    )
    (policy,) = load_policy_documents(path)
    key = policy.authorities[0].key
    assert key is not None and not key.require_tlog


def test_kubectl_list_and_grace_annotation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "list.yaml",
        f"""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: policy.sigstore.dev/v1beta1
          kind: ClusterImagePolicy
          metadata:
            name: a
            annotations: {{registry-watcher.dev/grace-period: 1h30m}}
          spec:
            images: [{{glob: "ghcr.io/a/**"}}]
            authorities:
            - keyless:
                identities: [{{issuer: {GH_ISSUER}, subject: x}}]
          status: {{conditions: []}}
        """,
    )
    (policy,) = load_policy_documents(path)
    assert policy.grace_period == timedelta(hours=1, minutes=30)


def test_key_path_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    pem = public_pem("ed25519")
    (tmp_path / "policies" / "keys").mkdir(parents=True)
    (tmp_path / "policies" / "keys" / "cosign.pub").write_bytes(pem)
    path = write(
        tmp_path,
        "policies/p.yaml",
        """\
        apiVersion: policy.sigstore.dev/v1beta1
        kind: ClusterImagePolicy
        metadata: {name: p}
        spec:
          images: [{glob: "**"}]
          authorities: [{name: k, key: {path: keys/cosign.pub}}]
        """,
    )
    (policy,) = load_policy_documents(path)
    assert policy.authorities[0].key == KeyAuthority.from_pem(pem)


def _error(tmp_path: Path, spec_body: str) -> ConfigError:
    text = (
        "apiVersion: policy.sigstore.dev/v1beta1\n"
        "kind: ClusterImagePolicy\n"
        "metadata: {name: p}\n"
        "spec:\n" + textwrap.indent(textwrap.dedent(spec_body), "  ")
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_policy_documents(path)
    return info.value


UNSUPPORTED = [
    ("  - key: {secretRef: {name: s}}\n", 7, "authorities[0].key.secretRef", "key.secretRef"),
    ("  - key: {kms: 'awskms:///1234'}\n", 7, "authorities[0].key.kms", "key.kms"),
    ("  - static: {action: pass}\n", 7, "authorities[0].static", "static authorities"),
    (
        "  - keyless: {identities: [{issuer: i, subject: s}]}\n    source: [{oci: ghcr.io/x}]\n",
        8,
        "authorities[0].source",
        "source",
    ),
    (
        "  - keyless:\n      identities: [{issuer: i, subject: s}]\n      ca-cert: {data: x}\n",
        9,
        "authorities[0].keyless.ca-cert",
        "ca-cert",
    ),
    (
        "  - keyless:\n      identities: [{issuer: i, subject: s}]\n      trustRootRef: my-root\n",
        9,
        "authorities[0].keyless.trustRootRef",
        "trust.trusted_root",
    ),
    (
        "  - keyless: {identities: [{issuer: i, subject: s}]}\n    ctlog: {trustRootRef: r}\n",
        8,
        "authorities[0].ctlog.trustRootRef",
        "trustRootRef",
    ),
    (
        "  - keyless: {identities: [{issuer: i, subject: s}]}\n"
        "    rfc3161timestamp: {trustRootRef: r}\n",
        8,
        "authorities[0].rfc3161timestamp",
        "rfc3161timestamp",
    ),
    (
        "  - keyless: {identities: [{issuer: i, subject: s}]}\n"
        "    attestations:\n"
        "    - name: a\n"
        "      predicateType: https://slsa.dev/provenance/v1\n"
        "      policy: {type: cue, data: 'predicateType: x'}\n",
        11,
        "authorities[0].attestations[0].policy",
        "unsupported: attestation policy evaluation (cue/rego)",
    ),
]


@pytest.mark.parametrize(("authorities", "line", "field", "words"), UNSUPPORTED)
def test_unsupported_policy_controller_fields_are_errors(
    tmp_path: Path, authorities: str, line: int, field: str, words: str
) -> None:
    error = _error(tmp_path, "images: [{glob: '**'}]\nauthorities:\n" + authorities)
    (issue,) = error.issues
    assert (issue.line, issue.field) == (line, f"spec.{field}")
    assert "unsupported" in issue.message and words in issue.message


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("policy: {type: rego, data: x}\n", "spec.policy", "policy evaluation (cue/rego)"),
        ("match: [{resource: pods, version: v1}]\n", "spec.match", "Kubernetes resources"),
    ],
)
def test_unsupported_spec_fields(tmp_path: Path, extra: str, field: str, words: str) -> None:
    spec = f"images: [{{glob: '**'}}]\nauthorities: {ANY_SIGNER}\n"
    (issue,) = _error(tmp_path, spec + extra).issues
    assert issue.field == field and issue.line == 7 and words in issue.message


def test_invalid_documents_name_line_and_field(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        """\
        images:
        - glob: "[a-z]*"
        authorities:
        - keyless:
            identities:
            - issuerRegExp: "****"
              subjet: typo
        - key: {data: not a key}
        - keyless: {identities: []}
        mode: audit
        """,
    )
    got = {(i.line, i.field) for i in error.issues}
    assert got == {
        (6, "spec.images[0].glob"),
        (10, "spec.authorities[0].keyless.identities[0].issuerRegExp"),
        (11, "spec.authorities[0].keyless.identities[0].subjet"),
        (12, "spec.authorities[1].key.data"),
        (13, "spec.authorities[2].keyless.identities"),
        (14, "spec.mode"),
    }
    messages = "\n".join(str(i) for i in error.issues)
    assert "did you mean 'subject'" in messages
    assert "not a PEM public key" in messages
    assert str(error).splitlines()[0].startswith(f"{tmp_path / 'bad.yaml'}:6: spec.images[0].glob:")


@pytest.mark.parametrize(
    ("spec", "line", "words"),
    [
        (
            "images: []\nauthorities: [{keyless: {identities: [{issuer: i, subject: s}]}}]\n",
            5,
            "image",
        ),
        ("images: [{glob: '**'}]\nauthorities: []\n", 6, "at least one authority"),
        ("images: [{glob: '**'}]\n", 4, "required"),
        (
            "images: [{glob: '**'}]\nauthorities:\n- keyless: {identities: [{subject: s}]}\n",
            7,
            "issuer or issuerRegExp is required",
        ),
        (
            "images: [{glob: '**'}]\nauthorities:\n"
            "- keyless: {identities: [{issuer: i, subject: s, subjectRegExp: s}]}\n",
            7,
            "not both",
        ),
        (
            "images: [{glob: '**'}]\nauthorities:\n"
            "- keyless: {identities: [{issuer: i, subject: s}]}\n"
            f"  key: {{data: {PC_KEY_FLOW}}}\n",
            7,
            "not both",
        ),
        ("images: [{glob: '**'}]\nauthorities:\n- ctlog: {}\n", 7, "needs key or keyless"),
        (
            "images: [{glob: '**'}]\nauthorities:\n"
            "- {name: a, keyless: {identities: [{issuer: i, subject: s}]}}\n"
            "- {name: a, keyless: {identities: [{issuer: i, subject: t}]}}\n",
            6,
            "duplicate authority name 'a'",
        ),
        (
            "images: [{glob: '**'}]\nauthorities:\n"
            "- keyless: {identities: [{issuer: i, subject: s}]}\n"
            "  signatureFormat: notary\n",
            8,
            "'legacy' or 'bundle'",
        ),
    ],
)
def test_spec_validation(tmp_path: Path, spec: str, line: int, words: str) -> None:
    (issue,) = _error(tmp_path, spec).issues
    assert issue.line == line and words in issue.message, issue


def test_wrong_kind_version_and_duplicate_names(tmp_path: Path) -> None:
    def cip(version: str, name: str, glob: str) -> str:
        return (
            f"apiVersion: policy.sigstore.dev/{version}\nkind: ClusterImagePolicy\n"
            f"metadata: {{name: {name}}}\n"
            f"spec: {{images: [{{glob: '{glob}'}}], authorities: {ANY_SIGNER}}}\n"
        )

    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
    text = "---\n".join(
        [deployment, cip("v1", "p", "**"), cip("v1beta1", "q", "**"), cip("v1alpha1", "q", "x")]
    )
    path = write(tmp_path, "mixed.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_policy_documents(path)
    issues = info.value.issues
    assert [(i.line, i.field) for i in issues] == [
        (2, "kind"),
        (5, "apiVersion"),
        (17, "metadata.name"),
    ]
    assert "expected kind ClusterImagePolicy" in issues[0].message
    assert "duplicate policy name 'q'" in issues[2].message and "mixed.yaml:12" in issues[2].message


def test_yaml_syntax_errors_and_duplicate_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_documents(write(tmp_path, "a.yaml", "spec:\n  images: [\n"))
    assert str(info.value).startswith(f"{tmp_path / 'a.yaml'}:3: invalid YAML")
    dup = "kind: ClusterImagePolicy\nmetadata: {name: a}\nkind: ClusterImagePolicy\n"
    with pytest.raises(ConfigError) as info:
        load_policy_documents(write(tmp_path, "b.yaml", dup))
    assert str(info.value) == f"{tmp_path / 'b.yaml'}:3: kind: duplicate key"


# --- spec hash ------------------------------------------------------------


def _doc(version: str, authorities: str, images: str = "[{glob: 'a/**'}, {glob: 'b/**'}]") -> str:
    return (
        f"apiVersion: policy.sigstore.dev/{version}\nkind: ClusterImagePolicy\n"
        f"metadata: {{name: p}}\nspec:\n  images: {images}\n  authorities:\n{authorities}"
    )


def _hash(tmp_path: Path, text: str) -> str:
    path = tmp_path / "h.yaml"
    path.write_text(text)
    (policy,) = load_policy_documents(path)
    return policy.spec_hash


def test_spec_hash_is_the_same_for_equivalent_policies(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(PC_KEY)
    keyless = (
        "  - name: a\n    keyless:\n      url: https://fulcio.sigstore.dev\n      identities:\n"
        "      - {issuer: i, subject: s}\n      - {issuer: j, subjectRegExp: '^t$'}\n"
    )
    keyless_reordered = (
        "  - name: a\n    keyless:\n      identities:\n"
        "      - {subjectRegExp: '^t$', issuer: j}\n      - {issuer: i, subject: s}\n"
    )
    base = _hash(tmp_path, _doc("v1beta1", keyless))
    assert len(base) == 64
    assert _hash(tmp_path, _doc("v1alpha1", keyless)) == base
    assert _hash(tmp_path, _doc("v1beta1", keyless_reordered)) == base
    assert _hash(tmp_path, _doc("v1beta1", keyless, "[{glob: 'b/**'}, {glob: 'a/**'}]")) == base
    by_path = _hash(tmp_path, _doc("v1beta1", "  - {name: k, key: {path: k.pub}}\n"))
    inline = f"  - name: k\n    key:\n      data: |\n{indent(PC_KEY, 8)}"
    assert _hash(tmp_path, _doc("v1beta1", inline)) == by_path


def test_spec_hash_changes_with_meaning(tmp_path: Path) -> None:
    def keyless(subject: str = "s", extra: str = "") -> str:
        return (
            f"  - name: a\n    keyless:\n      identities: [{{issuer: i, subject: {subject}}}]\n"
            + extra
        )

    hashes = {
        _hash(tmp_path, _doc("v1beta1", keyless())),
        _hash(tmp_path, _doc("v1beta1", keyless("t"))),
        _hash(tmp_path, _doc("v1beta1", keyless(), "[{glob: 'a/**'}]")),
        _hash(tmp_path, _doc("v1beta1", keyless(extra="    signatureFormat: bundle\n"))),
        _hash(
            tmp_path,
            _doc(
                "v1beta1",
                keyless(extra="    attestations: [{name: p, predicateType: 'https://x.dev/p'}]\n"),
            ),
        ),
        _hash(tmp_path, _doc("v1beta1", keyless().replace("name: a", "name: b"))),
        _hash(tmp_path, _doc("v1beta1", f"  - key: {{data: {PC_KEY_FLOW}}}\n")),
        _hash(tmp_path, _doc("v1beta1", f"  - key: {{data: {PC_KEY_FLOW}}}\n    ctlog: {{}}\n")),
    }
    assert len(hashes) == 8
    policy = Policy("p", ("a/**",), authorities=(_keyless_authority(),))
    assert (
        policy.spec_hash
        != Policy("p", ("a/**",), Mode.WARN, authorities=policy.authorities).spec_hash
    )
    assert (
        policy.spec_hash
        != Policy(
            "p", ("a/**",), grace_period=timedelta(minutes=1), authorities=policy.authorities
        ).spec_hash
    )
    assert (
        policy.spec_hash == Policy("renamed", ("a/**",), authorities=policy.authorities).spec_hash
    )


# --- the model ------------------------------------------------------------


def _keyless_authority() -> Authority:
    return Authority(
        "gha",
        keyless=KeylessAuthority(
            (Identity(issuer=GH_ISSUER, subject_regexp=r"^https://github\.com/acme/.*$"),)
        ),
    )


IDENTITY_CASES = [
    # (identity, signer issuer, signer subject, want)
    (Identity(issuer="i", subject="s"), "i", "s", True),
    (Identity(issuer="i", subject="s"), "i", "s2", False),
    (Identity(issuer="i", subject="s"), "i2", "s", False),
    (Identity(issuer="i", subject="s"), None, "s", False),
    # Go's MatchString is unanchored: a bare regexp matches anywhere in the value...
    (Identity(issuer="i", subject_regexp="acme"), "i", "https://github.com/acme/x", True),
    (Identity(issuer_regexp="github", subject="s"), GH_ISSUER, "s", True),
    # ...so anchors are what pins it.
    (Identity(issuer="i", subject_regexp="^acme$"), "i", "https://github.com/acme/x", False),
    (
        Identity(issuer="i", subject_regexp=r"^https://github\.com/acme/.*$"),
        "i",
        "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1",
        True,
    ),
    (
        Identity(issuer="i", subject_regexp=r"^https://github\.com/acme/.*$"),
        "i",
        "https://github.com/acme-evil/app",
        False,
    ),
    # Go's $ is the end of the text; Python's would also accept a trailing newline.
    (
        Identity(issuer="i", subject_regexp=r"^https://github\.com/acme/.*$"),
        "i",
        "https://github.com/acme/app\n",
        False,
    ),
    # \d is ASCII-only in Go.
    (Identity(issuer="i", subject_regexp=r"^v\d+$"), "i", "v\u0661", False),
    (Identity(issuer="i", subject_regexp=r"^v[[:digit:]]+$"), "i", "v12", True),
    (Identity(issuer="i", subject_regexp=r"^v[[:digit:]]+$"), "i", "v:", False),
]


@pytest.mark.parametrize(("identity", "issuer", "subject", "want"), IDENTITY_CASES)
def test_identity_matching(
    identity: Identity, issuer: str | None, subject: str, want: bool
) -> None:
    assert identity.matches(Signer(issuer=issuer, subject=subject)) is want


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=x)",
        "(?!x)",
        "(?<=x)a",
        "(?<!x)a",
        "(?>a)",
        r"(a)\1",
        "a*+",
        "a{2}+",
        "(?(1)a|b)",
        "[[:nope:]]",
        r"\Z",
        "****",
        "(?U)a",
    ],
)
def test_regexps_go_would_reject_are_rejected(pattern: str) -> None:
    with pytest.raises(PolicyError):
        compile_go_regexp(pattern)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(?P<n>a)b\z", "ab"),
        ("(?<n>a)b", "ab"),
        ("(?i)ACME", "acme"),
        ("a{2}b", "aab"),
        ("[]a]", "]"),
        ("a}+", "a}}"),
        ("a{2}?", "aa"),
        ("(?m)^b$", "a\nb"),
    ],
)
def test_go_regexps_that_python_spells_differently(pattern: str, text: str) -> None:
    assert compile_go_regexp(pattern).search(text)


def test_authority_accepts_and_describes() -> None:
    keyless = _keyless_authority()
    good = Signer(
        issuer=GH_ISSUER, subject="https://github.com/acme/app/.github/workflows/x.yml@main"
    )
    assert keyless.accepts(good)
    assert not keyless.accepts(Signer(issuer=GH_ISSUER, subject="https://github.com/evil/x"))
    assert not keyless.accepts(Signer(key_id="00"))
    key = Authority("release", key=KeyAuthority.from_pem(PC_KEY))
    assert key.key is not None
    assert key.accepts(Signer(key_id=key.key.key_id))
    assert not key.accepts(Signer(key_id="0" * 64))
    assert not key.accepts(good)
    assert key.describe() == f"release (key sha256:{key.key.key_id})"
    assert keyless.describe() == (
        f"gha (keyless: issuer {GH_ISSUER}, subject ~^https://github\\.com/acme/.*$)"
    )


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "rsa2048", "ed25519"])
def test_supported_keys(kind: str) -> None:
    pem = public_pem(kind)
    authority = KeyAuthority.from_pem(pem, require_tlog=True)
    assert len(authority.key_id) == 64 and authority.require_tlog
    assert (
        authority.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pem
    )
    assert "BEGIN" not in repr(authority)


@pytest.mark.parametrize(
    ("pem", "words"),
    [
        (b"garbage", "not a PEM public key"),
        (b"-----BEGIN EC PRIVATE KEY-----\nxx\n-----END EC PRIVATE KEY-----\n", "private key"),
    ],
)
def test_bad_key_material(pem: bytes, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        load_public_key(pem)


@pytest.mark.parametrize(("kind", "words"), [("secp256k1", "curve"), ("rsa1024", "too small")])
def test_unsupported_keys(kind: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        load_public_key(public_pem(kind))


def test_model_invariants() -> None:
    with pytest.raises(PolicyError, match="exactly one"):
        Authority("a")
    with pytest.raises(PolicyError, match="exactly one"):
        Authority("a", keyless=_keyless_authority().keyless, key=KeyAuthority.from_pem(PC_KEY))
    with pytest.raises(PolicyError, match="identity"):
        KeylessAuthority(())
    with pytest.raises(PolicyError, match="does not match"):
        KeyAuthority(PC_KEY.encode(), key_id="0" * 64)
    with pytest.raises(PolicyError, match="image"):
        Policy("p", ())
    with pytest.raises(PolicyError, match="invalid glob"):
        Policy("p", ("[x]",))
    with pytest.raises(PolicyError, match="duplicate authority"):
        Policy("p", ("**",), authorities=(_keyless_authority(), _keyless_authority()))


def test_policy_matches_with_the_tags_a_digest_is_known_under() -> None:
    policy = Policy("p", ("ghcr.io/acme/app:v*",), authorities=(_keyless_authority(),))
    ref = ImageReference.parse(f"ghcr.io/acme/app@{DIGEST}")
    assert not policy.matches(ref)
    assert policy.matches(ref, tags=["latest", "v1.2.3"])
    assert policy.matches(ImageReference.parse(f"ghcr.io/acme/app:v2@{DIGEST}"))
