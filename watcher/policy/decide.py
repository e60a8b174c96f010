"""The verdict one policy gives one image, from what verification found: a pure function.

The rules are the contract's table. Authorities are OR-ed inside a policy; an authority that
lists attestations is satisfied by those attestations signed by its identities (as in
policy-controller), one without by a signature of an accepted signer. When nothing satisfies
the policy, the material decides how it failed: none at all is `unsigned`; a valid signature
by somebody else is `unexpected_signer`; only broken material is `invalid_signature`; an
attestation policy that saw material but not the attestation it wants is `missing_attestation`.
Inside a grace period any unsatisfied outcome is `pending`, because the right signature may
still be on its way.
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.policy.model import Authority, Policy
from watcher.verdicts import PolicyResult, Signer, Verdict
from watcher.verify.material import Finding, Kind


def _accepted(authority: Authority, finding: Finding) -> bool:
    if not finding.valid or finding.signer is None or not authority.accepts(finding.signer):
        return False
    return not (authority.key is not None and authority.key.require_tlog and finding.tlog is None)


def _missing_tlog(policy: Policy, finding: Finding) -> bool:
    return finding.tlog is None and any(
        a.key is not None
        and a.key.require_tlog
        and finding.signer is not None
        and a.accepts(finding.signer)
        for a in policy.authorities
    )


def accepting_authority(policy: Policy, finding: Finding) -> Authority | None:
    """The first authority of ``policy`` that accepts the finding's signer, if any."""
    for authority in policy.authorities:
        wanted = {a.predicate_type for a in authority.attestations}
        if finding.kind is Kind.SIGNATURE and wanted:
            continue
        if finding.kind is Kind.ATTESTATION and finding.predicate_type not in wanted:
            continue
        if _accepted(authority, finding):
            return authority
    return None


def _authority_satisfied(authority: Authority, findings: Sequence[Finding]) -> bool:
    if not authority.attestations:
        return any(f.kind is Kind.SIGNATURE and _accepted(authority, f) for f in findings)
    return all(
        any(
            f.kind is Kind.ATTESTATION
            and f.predicate_type == required.predicate_type
            and _accepted(authority, f)
            for f in findings
        )
        for required in authority.attestations
    )


def _extra_signers(policy: Policy, findings: Sequence[Finding]) -> tuple[Signer, ...]:
    """Valid signers of material this policy looks at whom none of its authorities accept."""
    wants_signatures = any(not a.attestations for a in policy.authorities)
    wanted_predicates = {r.predicate_type for a in policy.authorities for r in a.attestations}
    extra: list[Signer] = []
    for f in findings:
        relevant = (f.kind is Kind.SIGNATURE and wants_signatures) or (
            f.kind is Kind.ATTESTATION and f.predicate_type in wanted_predicates
        )
        if not relevant or not f.valid or f.signer is None:
            continue
        if not any(a.accepts(f.signer) for a in policy.authorities) and f.signer not in extra:
            extra.append(f.signer)
    return tuple(extra)


def _wanted(policy: Policy) -> str:
    parts = []
    for a in policy.authorities:
        what = a.describe()
        if a.attestations:
            types = ", ".join(r.predicate_type for r in a.attestations)
            what += f" attesting {types}"
        parts.append(what)
    return " or ".join(parts) if parts else "nothing (no authorities)"


def _unsatisfied(policy: Policy, findings: Sequence[Finding]) -> tuple[Verdict, list[str]]:
    wanted = _wanted(policy)
    if not findings:
        return Verdict.UNSIGNED, [f"no signature or attestation found; policy wants {wanted}"]
    attestation_only = all(a.attestations for a in policy.authorities)
    if attestation_only:
        return Verdict.MISSING_ATTESTATION, [
            "signature material found, but not the required attestations signed by an allowed "
            f"authority; policy wants {wanted}",
            *_finding_notes(policy, findings),
        ]
    signatures = [f for f in findings if f.kind is Kind.SIGNATURE]
    if not signatures:
        has_attestation_authority = any(a.attestations for a in policy.authorities)
        verdict = Verdict.MISSING_ATTESTATION if has_attestation_authority else Verdict.UNSIGNED
        return verdict, [
            f"no image signature found (only attestations); policy wants {wanted}",
            *_finding_notes(policy, findings),
        ]
    # A signature by an allowed key that lacks the transparency-log entry its authority
    # requires (`ctlog:`) is not a stranger's: it is signature material that fails a check.
    valid = [
        f for f in signatures if f.valid and f.signer is not None and not _missing_tlog(policy, f)
    ]
    if valid:
        signers = ", ".join(sorted({f.signer.describe() for f in valid if f.signer}))
        return Verdict.UNEXPECTED_SIGNER, [
            f"valid signature(s) by {signers}, none by an allowed authority; policy wants {wanted}",
            *_finding_notes(policy, findings),
        ]
    return Verdict.INVALID_SIGNATURE, [
        f"signature material found but none verifies; policy wants {wanted}",
        *_finding_notes(policy, findings),
    ]


def _finding_notes(policy: Policy, findings: Sequence[Finding]) -> list[str]:
    notes = [f"{f.source}: {f.error}" for f in findings if not f.valid and f.error]
    notes += [
        f"{f.source}: signed by an allowed key but without the transparency-log entry "
        "the authority requires"
        for f in findings
        if f.valid and _missing_tlog(policy, f)
    ]
    return notes


def decide(policy: Policy, findings: Sequence[Finding], *, in_grace: bool = False) -> PolicyResult:
    """The verdict of ``policy`` for an image given every finding about it."""
    satisfied_by = [a for a in policy.authorities if _authority_satisfied(a, findings)]
    if satisfied_by:
        extra = _extra_signers(policy, findings)
        reasons = [f"satisfied by authority {a.name!r}" for a in satisfied_by[:1]]
        if extra:
            reasons.append(
                "also validly signed by identities outside the policy: "
                + ", ".join(s.describe() for s in extra)
            )
        return PolicyResult(
            name=policy.name,
            verdict=Verdict.VERIFIED,
            mode=policy.mode,
            reasons=tuple(reasons),
            extra_signers=extra,
            policy_hash=policy.spec_hash,
        )
    verdict, reasons = _unsatisfied(policy, findings)
    if in_grace:
        reasons = [f"within grace period {policy.grace_period}; so far: {verdict}", *reasons]
        verdict = Verdict.PENDING
    return PolicyResult(
        name=policy.name,
        verdict=verdict,
        mode=policy.mode,
        reasons=tuple(reasons),
        policy_hash=policy.spec_hash,
    )


def error_result(policy: Policy, reason: str) -> PolicyResult:
    """Could not decide (registry down, throttled, auth): never reported as unsigned."""
    return PolicyResult(
        name=policy.name,
        verdict=Verdict.ERROR,
        mode=policy.mode,
        reasons=(reason,),
        policy_hash=policy.spec_hash,
    )
