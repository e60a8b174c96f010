"""`registry-watcher trace` and `GET /api/v1/images/{digest}/history`: one digest's story.

Where did this image come from and who vouched for it: every push event (source, time, tag,
actor and source address where the webhook carried them), every tag that moved to or away
from it, every verification (verdict, policy and the hash of the policy spec it was judged
under, each signature's format, signer, CI claims and transparency-log entry, attestation
predicate types), the alerts it caused and whether they were delivered, and signer-drift
findings, in one timeline, oldest first. Built from the store only, so it answers in
milliseconds and shows what the watcher knew at each moment, not what the registry holds now.

A log entry links to the public transparency-log search only when the trust root is the
public-good instance: a private Rekor's indices mean nothing to search.sigstore.dev.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from watcher.config import Config
from watcher.refs import Digest
from watcher.store.sqlite import SqliteStore

SEARCH = "https://search.sigstore.dev/?logIndex={}"
# Timeline order for entries recorded at the same instant: cause before effect.
_ORDER = {"push": 0, "delete": 0, "tag": 1, "verification": 2, "finding": 3, "alert": 4}


def _tlog(tlog: dict[str, Any] | None, public_good: bool) -> dict[str, Any] | None:
    if not tlog:
        return None
    out: dict[str, Any] = {
        "log_index": tlog.get("log_index"),
        "integrated_time": tlog.get("integrated_time"),
        "integrated_at": None,
        "url": None,
    }
    if isinstance(tlog.get("integrated_time"), int):
        moment = datetime.fromtimestamp(tlog["integrated_time"], UTC)
        out["integrated_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if public_good and tlog.get("log_index") is not None:
        out["url"] = SEARCH.format(tlog["log_index"])
    return out


def _evidence(entry: dict[str, Any], public_good: bool, *, attestation: bool) -> dict[str, Any]:
    out = {
        "format": entry.get("format"),
        "valid": bool(entry.get("valid")),
        "authority": entry.get("authority"),
        "issuer": entry.get("issuer"),
        "subject": entry.get("subject"),
        "key_id": entry.get("key_id"),
        "extensions": dict(entry.get("extensions") or {}),
        "tlog": _tlog(entry.get("tlog"), public_good),
        "error": entry.get("error"),
        "source": entry.get("source"),
    }
    if attestation:
        out = {"predicate_type": entry.get("predicate_type"), **out}
    return out


def _tag_change(row: dict[str, Any], digest: str) -> str:
    if row["digest"] == digest:
        return "moved_here" if row["previous_digest"] else "tagged"
    return "removed" if row["digest"] is None else "moved_away"


async def build_trace(
    store: SqliteStore, config: Config, digest: Digest, *, public_good: bool
) -> dict[str, Any] | None:
    """The trace document of ``digest``, or None when the watcher never saw it."""
    h = await store.history(digest)
    if not (h["digests"] or h["events"] or h["verdicts"] or h["tags"]):
        return None

    def host(registry: str) -> str:
        cfg = config.registry_named(registry)
        return cfg.host if cfg is not None else registry

    repositories = []
    for d in h["digests"]:
        repositories.append(
            {
                "registry": d["registry"],
                "repository": d["repository"],
                "image": f"{host(d['registry'])}/{d['repository']}@{digest}",
                "kind": d["kind"],
                "media_type": d["media_type"],
                "parent_digest": d["parent_digest"],
                "first_seen_at": d["first_seen_at"],
                "first_source": d["first_source"],
                "first_signature_at": d["first_signature_at"],
                "final_verdict": d["final_verdict"],
                "final_at": d["final_at"],
                "deleted_at": d["deleted_at"],
                "tags": await store.tags_for(d["registry"], d["repository"], digest),
            }
        )
    timeline: list[dict[str, Any]] = []
    artifacts = await store.attachment_events(digest)
    for e in [*h["events"], *artifacts]:
        timeline.append(
            {
                "at": e["received_at"],
                "type": "push" if e["action"] == "push" else "delete",
                "registry": e["registry"],
                "repository": e["repository"],
                "tag": e["tag"],
                "signature_artifact": e["digest"] != digest,
                "source": e["source"],
                "occurred_at": e["occurred_at"],
                "actor": e["actor"],
                "source_addr": e["source_addr"],
                "event_id": e["event_id"],
                "media_type": e["media_type"],
            }
        )
    for t in h["tags"]:
        timeline.append(
            {
                "at": t["at"],
                "type": "tag",
                "registry": t["registry"],
                "repository": t["repository"],
                "tag": t["tag"],
                "change": _tag_change(t, digest),
                "from_digest": t["previous_digest"],
                "to_digest": t["digest"],
                "source": t["source"],
            }
        )
    signers: dict[tuple[str, str, str], dict[str, Any]] = {}
    for v in h["verdicts"]:
        doc = v["doc"]
        hashes = doc.get("policy_hashes") or {}
        signatures = [_evidence(s, public_good, attestation=False) for s in doc["signatures"]]
        attestations = [_evidence(a, public_good, attestation=True) for a in doc["attestations"]]
        timeline.append(
            {
                "at": v["checked_at"],
                "type": "verification",
                "registry": v["registry"],
                "repository": v["repository"],
                "source": v["source"],
                "final": bool(v["final"]),
                "verdict": v["verdict"],
                "severity": doc.get("severity"),
                "tags": doc.get("tags", []),
                "policies": [{**p, "hash": hashes.get(p["name"])} for p in doc["policies"]],
                "signatures": signatures,
                "attestations": attestations,
                "extra_signers": doc.get("extra_signers", []),
                "reasons": doc.get("reasons", []),
            }
        )
        for s in [*signatures, *attestations]:
            if not s["valid"] or not (s["subject"] or s["key_id"]):
                continue
            key = (s["issuer"] or "", s["subject"] or "", s["key_id"] or "")
            signers.setdefault(
                key,
                {
                    "issuer": s["issuer"],
                    "subject": s["subject"],
                    "key_id": s["key_id"],
                    "extensions": s["extensions"],
                    "first_seen_at": v["checked_at"],
                    "first_in_repository": False,
                },
            )
    for row in h["signers"]:
        key = (row["issuer"], row["subject"], row["key_id"])
        if key in signers:
            signers[key]["first_in_repository"] = True
    findings = []
    for f in h["findings"]:
        finding = {
            "at": f["found_at"],
            "type": "finding",
            "kind": f["kind"],
            "registry": f["registry"],
            "repository": f["repository"],
            "issuer": f["issuer"] or None,
            "subject": f["subject"] or None,
            "key_id": f["key_id"] or None,
            "source": f["source"],
            "known_signers": json.loads(f["detail"]).get("known_signers", []),
        }
        findings.append(finding)
        timeline.append(finding)
    for a in h["alerts"]:
        timeline.append(
            {
                "at": a["created_at"],
                "type": "alert",
                "registry": a["registry"],
                "repository": a["repository"],
                "alertname": a["alertname"],
                "severity": a["severity"],
                "policy": a["policy"],
                "verdict": a["verdict"],
                "sink": a["sink"],
                "delivery": {
                    "state": a["state"],
                    "attempts": a["attempts"],
                    "sent_at": a["sent_at"],
                    "next_attempt_at": a["next_attempt_at"] if a["state"] == "due" else None,
                    "last_error": a["last_error"],
                },
            }
        )
    timeline.sort(key=lambda e: (e["at"], _ORDER[e["type"]]))
    return {
        "digest": digest,
        "repositories": repositories,
        "timeline": timeline,
        "signers": list(signers.values()),
        "findings": findings,
    }


def _who(entry: dict[str, Any]) -> str:
    if entry.get("subject"):
        return f"{entry['subject']} (issuer {entry.get('issuer')})"
    if entry.get("key_id"):
        return f"key sha256:{str(entry['key_id'])[:16]}…"
    return "unknown signer"


def _tlog_text(tlog: dict[str, Any] | None) -> str:
    if not tlog:
        return ""
    text = f"; tlog #{tlog['log_index']}"
    if tlog.get("integrated_at"):
        text += f" at {tlog['integrated_at']}"
    if tlog.get("url"):
        text += f" {tlog['url']}"
    return text


def render_text(trace: dict[str, Any]) -> str:
    """The trace for a human: where the digest lives, then the timeline, oldest first."""
    lines = [f"{trace['digest']}: seen in {len(trace['repositories'])} repository(ies)"]
    for r in trace["repositories"]:
        tags = ", ".join(r["tags"]) or "(none)"
        lines.append(
            f"  {r['image']}  kind {r['kind']}, first seen {r['first_seen_at']} via"
            f" {r['first_source']}, current tags: {tags}, final verdict {r['final_verdict']}"
            + (f", deleted {r['deleted_at']}" if r["deleted_at"] else "")
        )
    lines.append("timeline, oldest first:")
    for e in trace["timeline"]:
        at, kind, where = e["at"], e["type"], f"{e['registry']}/{e['repository']}"
        if kind in ("push", "delete"):
            extra = "".join(
                f" {label} {e[key]}"
                for label, key in (("by", "actor"), ("from", "source_addr"))
                if e.get(key)
            )
            tag = f":{e['tag']}" if e.get("tag") else ""
            what = "signature" if e["signature_artifact"] else kind
            lines.append(f"  {at}  {what:<12} {where}{tag} via {e['source']}{extra}")
        elif kind == "tag":
            other = e["from_digest"] if e["change"] == "moved_here" else e["to_digest"]
            what = {
                "tagged": "now points here",
                "moved_here": f"moved here from {other}",
                "moved_away": f"moved away to {other}",
                "removed": "removed",
            }[e["change"]]
            lines.append(f"  {at}  {'tag':<12} {where}:{e['tag']} {what} (seen by {e['source']})")
        elif kind == "verification":
            state = "final" if e["final"] else "provisional"
            lines.append(f"  {at}  {e['verdict']:<12} {where} ({e['source']}, {state})")
            for p in e["policies"]:
                digest = (p.get("hash") or "")[:12]
                lines.append(
                    f"      policy {p['name']} [{p['mode']}] hash {digest}…: {p['verdict']}"
                )
            for s in e["signatures"]:
                state = "valid" if s["valid"] else f"INVALID ({s['error']})"
                by = f", authority {s['authority']}" if s["authority"] else ""
                lines.append(
                    f"      signature [{s['format']}] {_who(s)}: {state}{by}{_tlog_text(s['tlog'])}"
                )
                for name, value in sorted(s["extensions"].items()):
                    lines.append(f"          {name}: {value}")
            for a in e["attestations"]:
                state = "valid" if a["valid"] else f"INVALID ({a['error']})"
                lines.append(
                    f"      attestation {a['predicate_type']} [{a['format']}] by {_who(a)}:"
                    f" {state}{_tlog_text(a['tlog'])}"
                )
        elif kind == "finding":
            known = ", ".join(e["known_signers"]) or "none"
            lines.append(
                f"  {at}  {'NEW SIGNER':<12} {where}: {_who(e)} never signed here before"
                f" (known signers: {known})"
            )
        elif kind == "alert":
            d = e["delivery"]
            when = f" at {d['sent_at']}" if d["sent_at"] else ""
            error = f", last error: {d['last_error']}" if d["last_error"] else ""
            lines.append(
                f"  {at}  {'alert':<12} {e['alertname']} ({e['severity']}) policy"
                f" {e['policy'] or '-'} to {e['sink']}: {d['state']}{when},"
                f" {d['attempts']} attempt(s){error}"
            )
    return "\n".join(lines) + "\n"
