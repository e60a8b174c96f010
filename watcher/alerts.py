"""Which alerts a final verdict causes, with the contract's labels and readable annotations.

Pure: a verdict in, outbox rows out. One alert per (sink, digest, policy, alertname), so a
re-check that reaches the same verdict, or a restart, never alerts twice; delivery (with
retries from the outbox) is the job of the sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.refs import Digest
from watcher.store.base import OutboxAlert, Sighting, SignerKey, signers_of
from watcher.verdicts import ImageVerdict, PolicyResult, Severity, Verdict

ALERTNAMES: dict[Verdict, str] = {
    Verdict.UNSIGNED: "ImageUnsigned",
    Verdict.UNEXPECTED_SIGNER: "ImageUnexpectedSigner",
    Verdict.INVALID_SIGNATURE: "ImageInvalidSignature",
    Verdict.MISSING_ATTESTATION: "ImageMissingAttestation",
    Verdict.ERROR: "ImageVerificationError",
}
EXTRA_SIGNER = "ImageExtraSigner"
NEW_SIGNER = "ImageNewSigner"
RUNBOOK = "https://github.com/registry-watcher/registry-watcher/blob/main/deploy/README.md#"


def _describe(verdict: ImageVerdict, result: PolicyResult) -> str:
    doc = verdict.to_json()
    tags = ", ".join(doc["tags"]) or "(untagged)"
    signers = sorted(
        {
            f"{s['subject'] or ('key ' + str(s['key_id'])[:16])}"
            + ("" if s["valid"] else " (invalid)")
            for s in doc["signatures"]
        }
    )
    lines = [
        f"Image {verdict.image} (tags: {tags}) is {result.verdict} under policy {result.name}.",
        f"Signers seen: {', '.join(signers) if signers else 'none'}.",
        *result.reasons,
    ]
    return "\n".join(lines)


def alerts_for(verdict: ImageVerdict, sinks: Sequence[str]) -> list[OutboxAlert]:
    """The alerts a final verdict should send to each sink (none for verified/no_policy)."""
    out: list[OutboxAlert] = []
    for result in verdict.policies:
        wanted: list[tuple[str, str]] = []
        if result.verdict in ALERTNAMES:
            wanted.append((ALERTNAMES[result.verdict], str(result.severity)))
        if result.verdict is Verdict.VERIFIED and result.extra_signers:
            wanted.append((EXTRA_SIGNER, str(Severity.WARNING)))
        for alertname, severity in wanted:
            labels = {
                "alertname": alertname,
                "severity": severity,
                "registry": verdict.registry,
                "repository": verdict.repository,
                "policy": result.name,
                "digest": verdict.digest,
            }
            annotations = {
                "summary": f"{alertname}: {verdict.registry_host}/{verdict.repository}"
                f"@{verdict.digest[:19]}… ({result.verdict})",
                "description": _describe(verdict, result),
                "runbook_url": RUNBOOK + alertname.lower(),
            }
            payload: dict[str, Any] = {
                "labels": labels,
                "annotations": annotations,
                "verdict": verdict.to_json(),
            }
            for sink in sinks:
                out.append(
                    OutboxAlert(
                        dedupe_key=f"{sink}|{verdict.registry}|{verdict.repository}|"
                        f"{verdict.digest}|{result.name}|{alertname}",
                        sink=sink,
                        alertname=alertname,
                        registry=verdict.registry,
                        repository=verdict.repository,
                        digest=verdict.digest,
                        policy=result.name,
                        verdict=str(result.verdict),
                        severity=severity,
                        payload=payload,
                    )
                )
    return out


def _claims_of(doc: dict[str, Any], signer: SignerKey) -> dict[str, str]:
    for entry in [*doc.get("signatures", []), *doc.get("attestations", [])]:
        if SignerKey.from_json(entry) == signer and entry.get("extensions"):
            return dict(entry["extensions"])
    return {}


def new_signer_alerts(
    doc: dict[str, Any], signer: SignerKey, sinks: Sequence[str]
) -> list[OutboxAlert]:
    """``ImageNewSigner`` (warning) for each sink: ``signer`` never signed in this repository.

    Raised whatever the policy says of the signer: a compromised workflow and a new pipeline
    both look like a stranger with valid credentials, and both deserve a look. The dedupe key
    names the repository and the signer, not the digest, so it is sent once per identity.
    The alert's policy and verdict are the image's worst policy result, so it stays firing
    while that verdict holds.
    """
    worst = next((p for p in doc.get("policies", []) if p.get("name") == doc.get("policy")), None)
    policy = str(doc.get("policy") or "")
    verdict = str(worst["verdict"]) if worst else str(doc.get("verdict", Verdict.NO_POLICY))
    registry, repository = str(doc["registry"]), str(doc["repository"])
    digest = str(doc["digest"])
    claims = _claims_of(doc, signer)
    tags = ", ".join(doc.get("tags") or []) or "(untagged)"
    lines = [
        f"{signer.describe()} signed {doc.get('image', digest)} (tags: {tags}), the first "
        f"signature by this identity in {repository}, which has a signing history.",
        f"The image's verdict is {doc.get('verdict')}"
        + (f" under policy {policy}." if policy else "."),
        *(f"{name}: {value}" for name, value in sorted(claims.items())),
        "A new CI pipeline explains this; so does a compromised workflow or key.",
    ]
    identity = f"{signer.issuer}|{signer.subject}|{signer.key_id}"
    labels = {
        "alertname": NEW_SIGNER,
        "severity": str(Severity.WARNING),
        "registry": registry,
        "repository": repository,
        "policy": policy,
        "digest": digest,
    }
    annotations = {
        "summary": f"{NEW_SIGNER}: {repository} has a new signer, {signer.describe()}",
        "description": "\n".join(lines),
        "runbook_url": RUNBOOK + NEW_SIGNER.lower(),
    }
    payload: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "verdict": doc,
        "signer": signer.to_json(),
    }
    return [
        OutboxAlert(
            dedupe_key=f"{sink}|{registry}|{repository}|signer:{identity}|{NEW_SIGNER}",
            sink=sink,
            alertname=NEW_SIGNER,
            registry=registry,
            repository=repository,
            digest=digest,
            policy=policy,
            verdict=verdict,
            severity=str(Severity.WARNING),
            payload=payload,
        )
        for sink in sinks
    ]


def sightings_for(doc: dict[str, Any], sinks: Sequence[str]) -> list[Sighting]:
    """Every valid signer of a verdict document, each with the alerts drift would send."""
    clean = {k: v for k, v in doc.items() if k not in ("final", "policy_hashes")}
    return [
        Sighting(
            str(doc["registry"]),
            str(doc["repository"]),
            Digest(str(doc["digest"])),
            signer,
            tuple(new_signer_alerts(clean, signer, sinks)),
        )
        for signer in signers_of(doc)
    ]
