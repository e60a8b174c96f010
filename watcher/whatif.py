"""What-if: the recorded inventory judged under proposed policies, changing nothing.

``scan --policy-file NEW.yaml --what-if`` loads ClusterImagePolicy documents (the format of
``policy_files``) and overlays them on the configured policies by name: a policy of the same
name is replaced, a new name is added, every other configured policy stays. That is the change
a team makes when it edits one policy file, so it is the change previewed.

Every image current tags point at is decided twice from the same evidence, once under the
configured policies and once under the overlaid ones, so only the policy change shows (not
whatever happened since the image was last checked). The evidence is the stored verdict's:
each signature's and attestation's validity, format, signer (issuer, subject or key id),
predicate type and tlog entry, which is all ``decide`` reads; identity, attestation, mode and
glob changes need nothing else. The registry is asked again only where that is not enough:

- no stored verdict, or an ``error`` one (nothing was examined);
- the stored verdict matched no policy (discovery was skipped) but a policy matches now;
- it was reached under another trust root (validity itself may differ);
- the proposed policies trust a key the configured ones did not, and the evidence holds key
  material that no trusted key verified (it may verify under the new key);
- a valid entry names no signer (older records).

The store is opened read-only: SQLite refuses writes, so a what-if run cannot change it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from watcher.config import Config
from watcher.engine import Engine, trusted_keys
from watcher.policy.cip import load_policy_documents
from watcher.policy.decide import decide
from watcher.policy.model import Policy
from watcher.refs import ImageReference
from watcher.registry.errors import RegistryError
from watcher.scan import selects
from watcher.store.base import InventoryEntry
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import Format, Signer, TlogEvidence, Verdict, most_serious, utcnow
from watcher.verify.material import Finding, Kind

log = structlog.get_logger("watcher.whatif")


def load_proposed(paths: Sequence[Path]) -> list[Policy]:
    """The policies of the proposed files (ConfigError with file and line when invalid)."""
    policies: list[Policy] = []
    for path in paths:
        policies.extend(load_policy_documents(path, file=str(path)))
    return policies


def overlay(configured: Sequence[Policy], proposed: Sequence[Policy]) -> list[Policy]:
    """Configured policies with same-named ones replaced and new ones appended."""
    by_name = {p.name: p for p in proposed}
    out = [by_name.get(p.name, p) for p in configured]
    names = {p.name for p in configured}
    out.extend(p for p in proposed if p.name not in names)
    return out


def _signer(entry: dict[str, Any]) -> Signer | None:
    issuer, subject, key_id = entry.get("issuer"), entry.get("subject"), entry.get("key_id")
    if issuer is None and subject is None and key_id is None:
        return None
    claims = tuple(sorted((entry.get("extensions") or {}).items()))
    return Signer(issuer=issuer, subject=subject, key_id=key_id, extensions=claims)


def _tlog(entry: dict[str, Any]) -> TlogEvidence | None:
    tlog = entry.get("tlog")
    if not isinstance(tlog, dict) or tlog.get("log_index") is None:
        return None
    return TlogEvidence(int(tlog["log_index"]), tlog.get("integrated_time"))


def findings_from(doc: dict[str, Any]) -> list[Finding]:
    """The findings a stored verdict document records, as verification produced them."""
    out: list[Finding] = []
    for kind, entries in (
        (Kind.SIGNATURE, doc.get("signatures", [])),
        (Kind.ATTESTATION, doc.get("attestations", [])),
    ):
        for e in entries:
            out.append(
                Finding(
                    kind=kind,
                    format=Format(e["format"]),
                    valid=bool(e["valid"]),
                    source=str(e.get("source") or ""),
                    signer=_signer(e),
                    predicate_type=e.get("predicate_type") if kind is Kind.ATTESTATION else None,
                    tlog=_tlog(e),
                    error=e.get("error"),
                )
            )
    return out


def _keys(policies: Sequence[Policy]) -> set[str]:
    return {a.key.key_id for p in policies for a in p.authorities if a.key is not None}


def why_refetch(
    entry: InventoryEntry,
    before: Sequence[Policy],
    after: Sequence[Policy],
    fingerprint: str,
) -> str | None:
    """Why the stored evidence cannot answer for this image, or None when it can."""
    latest = entry.latest
    if latest is None:
        return "never verified"
    if latest.verdict == Verdict.ERROR:
        return "last check was an error"
    if not latest.doc.get("policies") and (before or after):
        return "no policy matched when it was checked, so nothing was examined"
    if latest.trust_fingerprint != fingerprint:
        return "checked under another trust root"
    entries = [*latest.doc.get("signatures", []), *latest.doc.get("attestations", [])]
    if any(e.get("valid") and not (e.get("subject") or e.get("key_id")) for e in entries):
        return "a valid signature's signer is not recorded"
    in_effect = _keys(before) if latest.policy_hashes == _hashes(before) else set()
    new_keys = _keys(after) - in_effect
    if new_keys and any(e.get("format") == Format.KEY and not e.get("valid") for e in entries):
        return "a newly trusted key may verify key material no trusted key verified"
    return None


def _hashes(policies: Sequence[Policy]) -> dict[str, str]:
    return {p.name: p.spec_hash for p in policies}


def _in_grace(policies: Sequence[Policy], first_seen: datetime, now: datetime) -> bool:
    grace = max((p.grace_period for p in policies), default=timedelta(0))
    return now < first_seen + grace


def _judge(
    policies: Sequence[Policy], findings: Sequence[Finding], in_grace: bool
) -> tuple[Verdict, dict[str, str]]:
    results = [decide(p, findings, in_grace=in_grace) for p in policies]
    return most_serious([r.verdict for r in results]), {r.name: str(r.verdict) for r in results}


@dataclass
class WhatIfReport:
    """Which images would change verdict under the proposed policies."""

    policy_files: list[str]
    proposed: list[str]  # names of the proposed policies
    evaluated: int = 0
    refetched: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def transitions(self) -> Counter[tuple[str, str]]:
        """How many images go from one verdict to another."""
        return Counter((c["from"], c["to"]) for c in self.changes)

    @property
    def exit_code(self) -> int:
        """0 nothing would change, 1 some verdicts would change, 3 some could not be judged."""
        if self.errors:
            return 3
        return 1 if self.changes else 0

    def to_json(self) -> dict[str, Any]:
        """The one JSON document of a what-if run."""
        return {
            "policy_files": self.policy_files,
            "proposed_policies": self.proposed,
            "evaluated": self.evaluated,
            "refetched": self.refetched,
            "unchanged": self.evaluated - len(self.changes) - len(self.errors),
            "changes": self.changes,
            "transitions": [
                {"from": a, "to": b, "images": n} for (a, b), n in sorted(self.transitions.items())
            ],
            "errors": self.errors,
        }

    def render_text(self) -> str:
        """Changes, one a line, then the totals."""
        lines = [
            f"what-if: {self.evaluated} recorded images under {', '.join(self.policy_files)}"
            f" (policies {', '.join(self.proposed) or 'none'}); {self.refetched} re-fetched"
        ]
        for c in self.changes:
            tags = ",".join(c["tags"]) or "(untagged)"
            detail = "; ".join(
                f"{name}: {c['policies_before'].get(name, '-')} -> {verdict}"
                for name, verdict in c["policies_after"].items()
                if c["policies_before"].get(name) != verdict
            )
            lines.append(
                f"  {c['from']:>19} -> {c['to']:<19} {c['image']}  tags: {tags}  ({detail})"
            )
        for (a, b), n in sorted(self.transitions.items()):
            lines.append(f"  total {a} -> {b}: {n}")
        unchanged = self.evaluated - len(self.changes) - len(self.errors)
        lines.append(f"{len(self.changes)} would change, {unchanged} unchanged")
        lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines) + "\n"


async def what_if(
    config: Config,
    engine: Engine,
    store: SqliteStore,
    policy_files: Sequence[Path],
    proposed: Sequence[Policy],
    globs: Sequence[str] = (),
) -> WhatIfReport:
    """Judge the recorded inventory under the configured and the overlaid policies."""
    policies = overlay(config.policies, proposed)
    report = WhatIfReport([str(p) for p in policy_files], [p.name for p in proposed])
    now = utcnow()
    entries = []
    for entry in await store.inventory():
        registry = config.registry_named(entry.registry)
        if registry is None or not selects(globs, registry, entry.repository):
            continue
        entries.append(entry)
    report.evaluated = len(entries)
    gate = asyncio.Semaphore(8)

    async def one(entry: InventoryEntry) -> None:
        registry = config.registry_named(entry.registry)
        assert registry is not None
        ref = ImageReference(registry.host, entry.repository, None, entry.digest)
        before = config.policies_for(ref, entry.tags)
        after = [p for p in policies if p.matches(ref, entry.tags)]
        reason = why_refetch(entry, before, after, engine.trust.fingerprint)
        if reason is None:
            assert entry.latest is not None
            findings = findings_from(entry.latest.doc)
        else:
            log.info("whatif_refetch", repository=entry.repository, digest=entry.digest, why=reason)
            try:
                async with gate:
                    client = await engine.client_named(registry)
                    findings, _ = await engine.examine(
                        client, entry.repository, entry.digest, trusted_keys([*before, *after])
                    )
            except RegistryError as exc:
                report.errors.append(f"{registry.host}/{entry.repository}@{entry.digest}: {exc}")
                return
            report.refetched += 1
        was, was_policies = _judge(before, findings, _in_grace(before, entry.first_seen_at, now))
        will, will_policies = _judge(after, findings, _in_grace(after, entry.first_seen_at, now))
        if was != will:
            report.changes.append(
                {
                    "image": f"{registry.host}/{entry.repository}@{entry.digest}",
                    "registry": entry.registry,
                    "repository": entry.repository,
                    "digest": entry.digest,
                    "tags": list(entry.tags),
                    "from": str(was),
                    "to": str(will),
                    "policies_before": was_policies,
                    "policies_after": will_policies,
                    "refetched": reason is not None,
                }
            )

    await asyncio.gather(*(one(e) for e in entries))
    report.changes.sort(key=lambda c: (c["registry"], c["repository"], c["tags"], c["digest"]))
    return report
