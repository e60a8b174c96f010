"""The verdict decision as a pure function: the contract's table, case by case."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from watcher.policy.decide import decide
from watcher.policy.model import (
    AttestationRequirement,
    Authority,
    Identity,
    KeyAuthority,
    KeylessAuthority,
    Policy,
)
from watcher.verdicts import Format, Mode, Severity, Signer, TlogEvidence, Verdict
from watcher.verify.material import Finding, Kind

GH = "https://token.actions.githubusercontent.com"
ACME = Signer(issuer=GH, subject="https://github.com/acme/app/.github/workflows/r.yml@main")
EVIL = Signer(issuer=GH, subject="https://github.com/evil/app/.github/workflows/r.yml@main")
PROV = "https://slsa.dev/provenance/v1"
TLOG = TlogEvidence(1, 1700000000)

_key = ec.generate_private_key(ec.SECP256R1())
PEM = _key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
KEY = KeyAuthority(PEM, require_tlog=True)
KEY_SIGNER = Signer(key_id=KEY.key_id)

ACME_ID = KeylessAuthority((Identity(issuer=GH, subject_regexp=r"^https://github\.com/acme/"),))


def policy(*authorities: Authority, mode: Mode = Mode.ENFORCE) -> Policy:
    return Policy("p", ("**",), mode, timedelta(0), tuple(authorities))


SIGN = policy(Authority("gha", keyless=ACME_ID), Authority("key", key=KEY))
ATTEST = policy(
    Authority("prov", keyless=ACME_ID, attestations=(AttestationRequirement("slsa", PROV),))
)


def sig(signer: Signer | None, valid: bool = True, tlog: TlogEvidence | None = TLOG) -> Finding:
    fmt = Format.KEY if signer is not None and signer.key_id else Format.BUNDLE
    return Finding(
        Kind.SIGNATURE, fmt, valid, "s", signer=signer, tlog=tlog, error=None if valid else "broken"
    )


def att(signer: Signer, predicate: str = PROV, valid: bool = True) -> Finding:
    return Finding(
        Kind.ATTESTATION,
        Format.BUNDLE,
        valid,
        "a",
        signer=signer,
        predicate_type=predicate,
        tlog=TLOG,
        error=None if valid else "broken",
    )


@pytest.mark.parametrize(
    ("pol", "findings", "want"),
    [
        (SIGN, [], Verdict.UNSIGNED),
        (SIGN, [sig(ACME)], Verdict.VERIFIED),
        (SIGN, [sig(KEY_SIGNER)], Verdict.VERIFIED),
        (SIGN, [sig(EVIL)], Verdict.UNEXPECTED_SIGNER),
        (SIGN, [sig(None, valid=False)], Verdict.INVALID_SIGNATURE),
        (SIGN, [sig(EVIL), sig(None, valid=False)], Verdict.UNEXPECTED_SIGNER),
        (SIGN, [sig(None, valid=False), sig(ACME)], Verdict.VERIFIED),
        # ctlog: required and absent: a failing check, not a stranger.
        (SIGN, [sig(KEY_SIGNER, tlog=None)], Verdict.INVALID_SIGNATURE),
        (SIGN, [att(ACME)], Verdict.UNSIGNED),  # only an attestation: no image signature
        (ATTEST, [], Verdict.UNSIGNED),
        (ATTEST, [att(ACME)], Verdict.VERIFIED),
        (ATTEST, [sig(ACME)], Verdict.MISSING_ATTESTATION),
        (ATTEST, [sig(ACME), att(EVIL)], Verdict.MISSING_ATTESTATION),
        (ATTEST, [sig(ACME), att(ACME, valid=False)], Verdict.MISSING_ATTESTATION),
        (ATTEST, [sig(ACME), att(ACME, "https://other/v1")], Verdict.MISSING_ATTESTATION),
    ],
)
def test_contract_table(pol: Policy, findings: list[Finding], want: Verdict) -> None:
    assert decide(pol, findings).verdict is want


def test_extra_signers_are_listed_and_warned() -> None:
    result = decide(SIGN, [sig(ACME), sig(EVIL)])
    assert result.verdict is Verdict.VERIFIED and result.extra_signers == (EVIL,)
    assert result.severity is Severity.WARNING


def test_grace_period_turns_any_failure_into_pending() -> None:
    for findings in ([], [sig(EVIL)], [sig(None, valid=False)]):
        result = decide(SIGN, findings, in_grace=True)
        assert result.verdict is Verdict.PENDING and result.severity is Severity.NONE
    assert decide(SIGN, [sig(ACME)], in_grace=True).verdict is Verdict.VERIFIED


def test_mode_sets_severity() -> None:
    assert decide(SIGN, []).severity is Severity.CRITICAL
    warn = policy(Authority("gha", keyless=ACME_ID), mode=Mode.WARN)
    assert decide(warn, []).severity is Severity.WARNING


def test_reasons_say_what_the_policy_wanted() -> None:
    result = decide(SIGN, [sig(EVIL)])
    assert any("evil" in r and "policy wants" in r for r in result.reasons)
