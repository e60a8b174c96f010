"""Which alerts a final verdict causes, with the contract's labels and readable annotations.

Pure: a verdict in, outbox rows out. One alert per (sink, digest, policy, alertname), so a
re-check that reaches the same verdict, or a restart, never alerts twice; delivery (with
retries from the outbox) is the job of the sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.store.base import OutboxAlert
from watcher.verdicts import ImageVerdict, PolicyResult, Severity, Verdict

ALERTNAMES: dict[Verdict, str] = {
    Verdict.UNSIGNED: "ImageUnsigned",
    Verdict.UNEXPECTED_SIGNER: "ImageUnexpectedSigner",
    Verdict.INVALID_SIGNATURE: "ImageInvalidSignature",
    Verdict.MISSING_ATTESTATION: "ImageMissingAttestation",
    Verdict.ERROR: "ImageVerificationError",
}
EXTRA_SIGNER = "ImageExtraSigner"
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
