"""The store's inventory side: what scan, trace, what-if and the query API read and write.

Kept apart from the daemon's queue and outbox code in ``sqlite.py`` (``SqliteStore`` inherits
this mixin), because these queries answer questions about the whole recorded inventory rather
than move one work item along. The signer history lives here too: the first valid signature
by an identity or key in a repository is recorded once, and when that repository already had
a signing history it is a drift finding whose alerts are written in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from watcher.refs import Digest, is_attachment_tag
from watcher.store.base import (
    NEW_SIGNER,
    InventoryEntry,
    OutboxAlert,
    Sighting,
    SignerKey,
    StoredVerdict,
    parse_ts,
    ts,
)
from watcher.store.schema import MIGRATIONS
from watcher.verdicts import ImageVerdict

T = TypeVar("T")
# A verdict to record, with what the digest is (image or index) and its media type.
Checked = tuple[ImageVerdict, str | None, str | None]

_LATEST = (
    "SELECT v.* FROM verdicts v JOIN (SELECT max(id) AS id FROM verdicts"
    " {where} GROUP BY registry, repository, digest) l ON v.id = l.id"
)


class StoreMissing(Exception):
    """A read-only open found no database: the watcher has recorded nothing there yet."""


class StoreOutdated(Exception):
    """A read-only open found a database an older watcher wrote; it cannot migrate it."""


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions the queries share with Python, so both define things the same way."""
    conn.create_function("is_attachment_tag", 1, is_attachment_tag, deterministic=True)


def connect_readonly(path: str) -> sqlite3.Connection:
    """A connection SQLite refuses to write through (``mode=ro``); nothing is created.

    A reader cannot migrate, so a database behind this code's schema is refused with a
    message saying how to bring it forward, rather than failing on a missing table later.
    """
    if path == ":memory:" or not Path(path).is_file():
        raise StoreMissing(f"no store at {path}: nothing has been recorded there yet")
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    register_functions(conn)
    try:
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    except sqlite3.DatabaseError:
        version = None
    if version is None or int(version) < MIGRATIONS[-1][0]:
        conn.close()
        raise StoreOutdated(
            f"the store at {path} is at schema version {version}, this watcher needs"
            f" {MIGRATIONS[-1][0]}: start the daemon or run a scan once to migrate it"
        )
    return conn


def stored_verdict(row: sqlite3.Row) -> StoredVerdict:
    """A verdicts row as a typed value."""
    checked = parse_ts(row["checked_at"])
    assert checked is not None
    return StoredVerdict(
        id=int(row["id"]),
        registry=row["registry"],
        repository=row["repository"],
        digest=Digest(row["digest"]),
        checked_at=checked,
        verdict=row["verdict"],
        final=bool(row["final"]),
        source=row["source"],
        policy_hashes=json.loads(row["policy_hashes"]),
        trust_fingerprint=row["trust_fingerprint"],
        doc=json.loads(row["doc"]),
    )


def insert_outbox(c: sqlite3.Connection, alert: OutboxAlert, now: datetime) -> bool:
    """Queue an alert for delivery; False when its dedupe key was already there."""
    cur = c.execute(
        "INSERT INTO outbox (dedupe_key, sink, alertname, registry, repository,"
        " digest, policy, verdict, severity, payload, created_at, state,"
        " next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,'due',?)"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (
            alert.dedupe_key,
            alert.sink,
            alert.alertname,
            alert.registry,
            alert.repository,
            alert.digest,
            alert.policy,
            alert.verdict,
            alert.severity,
            json.dumps(alert.payload),
            ts(now),
            ts(now),
        ),
    )
    return cur.rowcount > 0


def record_sightings(
    c: sqlite3.Connection,
    sightings: Sequence[Sighting],
    at: datetime,
    source: str,
    *,
    drift: bool,
) -> list[Sighting]:
    """Record first sightings of signers; returns those that are drift findings.

    Whether a repository "has a signing history" is read once per repository before any of
    this call's sightings are inserted, so the signers of the first signed image of a
    repository are its baseline, not findings. ``drift=False`` records without findings (a
    scan's first look at a repository). Runs inside the caller's transaction.
    """
    had_history: dict[tuple[str, str], list[str]] = {}
    findings: list[Sighting] = []
    for s in sightings:
        repo = (s.registry, s.repository)
        if repo not in had_history:
            known = c.execute(
                "SELECT issuer, subject, key_id FROM signers WHERE registry=? AND repository=?"
                " ORDER BY first_seen_at LIMIT 20",
                repo,
            ).fetchall()
            had_history[repo] = [SignerKey(r[0], r[1], r[2]).describe() for r in known]
        cur = c.execute(
            "INSERT INTO signers (registry, repository, issuer, subject, key_id, first_seen_at,"
            " first_digest, source) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                s.registry,
                s.repository,
                s.signer.issuer,
                s.signer.subject,
                s.signer.key_id,
                ts(at),
                s.digest,
                source,
            ),
        )
        if cur.rowcount == 0 or not drift or not had_history[repo]:
            continue
        detail = {"signer": s.signer.describe(), "known_signers": had_history[repo]}
        cur = c.execute(
            "INSERT INTO findings (registry, repository, digest, kind, issuer, subject, key_id,"
            " found_at, source, detail) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                s.registry,
                s.repository,
                s.digest,
                NEW_SIGNER,
                s.signer.issuer,
                s.signer.subject,
                s.signer.key_id,
                ts(at),
                source,
                json.dumps(detail),
            ),
        )
        if cur.rowcount == 0:
            continue
        for alert in s.alerts:
            insert_outbox(c, alert, at)
        findings.append(s)
    return findings


class InventoryQueries:
    """Inventory reads and scan writes; mixed into ``SqliteStore``, which runs them."""

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def record_checked(
        self,
        checked: Sequence[Checked],
        sightings: Sequence[Sighting],
        now: datetime,
        *,
        source: str,
        trust_fingerprint: str,
        drift: bool,
    ) -> list[Sighting]:
        """Record verdicts reached outside the work queue (a scan of one repository) as final,
        with the signers they show, in one transaction; returns the drift findings."""
        from watcher.store.sqlite import _insert_verdict, _note_digest

        def fn(c: sqlite3.Connection) -> list[Sighting]:
            for verdict, kind, media_type in checked:
                key = (verdict.registry, verdict.repository, verdict.digest)
                _note_digest(c, *key, now, source, kind=kind, media_type=media_type)
                _insert_verdict(
                    c, verdict, final=True, source=source, trust_fingerprint=trust_fingerprint
                )
                c.execute(
                    "UPDATE digests SET final_verdict=?, final_at=? WHERE registry=?"
                    " AND repository=? AND digest=?",
                    (str(verdict.verdict), ts(now), *key),
                )
                if any(s.valid for s in verdict.signatures):
                    c.execute(
                        "UPDATE digests SET first_signature_at=? WHERE registry=?"
                        " AND repository=? AND digest=? AND first_signature_at IS NULL",
                        (ts(now), *key),
                    )
            return record_sightings(c, sightings, now, source, drift=drift)

        return await self._tx(fn)

    async def repositories_with_signers(self, registry: str) -> set[str]:
        """Repositories of a registry that have a signing history."""
        return await self._read(
            lambda c: {
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT repository FROM signers WHERE registry=?", (registry,)
                )
            }
        )

    async def signers(self, registry: str, repository: str) -> list[dict[str, Any]]:
        """A repository's signer history, oldest first."""
        return await self._read(
            lambda c: [
                dict(r)
                for r in c.execute(
                    "SELECT * FROM signers WHERE registry=? AND repository=?"
                    " ORDER BY first_seen_at, issuer, subject, key_id",
                    (registry, repository),
                )
            ]
        )

    async def attachment_events(self, digest: Digest) -> list[dict[str, Any]]:
        """Pushes of a digest's signature artifact tags (``sha256-<hex>[.sig|.att|...]``).

        They carry another digest, but they are part of this one's story: a late signature
        is pushed as one of these.
        """
        tag = "sha256-" + digest.split(":", 1)[1]
        return await self._read(
            lambda c: [
                dict(r)
                for r in c.execute(
                    "SELECT * FROM events WHERE tag=? OR tag LIKE ? ORDER BY id",
                    (tag, tag + ".%"),
                )
            ]
        )

    async def latest_verdicts(self, registry: str, repository: str) -> dict[Digest, StoredVerdict]:
        """The newest verdict row of every digest of a repository (one query, for a scan)."""

        def fn(c: sqlite3.Connection) -> dict[Digest, StoredVerdict]:
            sql = _LATEST.format(where="WHERE registry=? AND repository=?")
            return {
                Digest(r["digest"]): stored_verdict(r)
                for r in c.execute(sql, (registry, repository))
            }

        return await self._read(fn)

    async def inventory(self) -> list[InventoryEntry]:
        """Every digest current image tags point at, with its newest verdict (if any).

        Signature artifact tags and referrers are never images, so they are left out.
        """

        def fn(c: sqlite3.Connection) -> list[InventoryEntry]:
            latest = {
                (r["registry"], r["repository"], r["digest"]): stored_verdict(r)
                for r in c.execute(_LATEST.format(where=""))
            }
            grouped: dict[tuple[str, str, str], list[str]] = {}
            meta: dict[tuple[str, str, str], tuple[str, str]] = {}
            for r in c.execute(
                "SELECT t.registry, t.repository, t.digest, t.tag, t.updated_at,"
                " coalesce(d.kind, 'unknown'), d.first_seen_at FROM tags t"
                " LEFT JOIN digests d ON d.registry=t.registry AND d.repository=t.repository"
                " AND d.digest=t.digest ORDER BY t.registry, t.repository, t.digest, t.tag"
            ):
                if is_attachment_tag(r[3]) or r[5] == "attachment":
                    continue
                key = (r[0], r[1], r[2])
                grouped.setdefault(key, []).append(r[3])
                meta.setdefault(key, (r[5], r[6] or r[4]))
            out: list[InventoryEntry] = []
            for key, tags in grouped.items():
                kind, first_seen = meta[key]
                seen = parse_ts(first_seen)
                assert seen is not None
                out.append(
                    InventoryEntry(
                        key[0], key[1], Digest(key[2]), tuple(tags), kind, seen, latest.get(key)
                    )
                )
            return out

        return await self._read(fn)

    async def list_images(
        self,
        *,
        repository: str | None = None,
        verdict: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest verdict per image (with its current tags), newest first, filtered; and the
        id to continue before.

        Keyset pagination on the verdict row id: a page never repeats or skips an image
        because of rows written while a client pages through.
        """

        def fn(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            where = ["d.deleted_at IS NULL"]
            params: list[Any] = []
            if repository is not None:
                where.append("v.repository=?")
                params.append(repository)
            if verdict is not None:
                where.append("v.verdict=?")
                params.append(verdict)
            if since is not None:
                where.append("v.checked_at >= ?")
                params.append(ts(since))
            if before_id is not None:
                where.append("v.id < ?")
                params.append(before_id)
            sql = (
                _LATEST.format(where="")
                + " JOIN digests d ON d.registry=v.registry AND d.repository=v.repository"
                " AND d.digest=v.digest WHERE "
                + " AND ".join(where)
                + " ORDER BY v.id DESC LIMIT ?"
            )
            rows = c.execute(sql, (*params, limit + 1)).fetchall()
            docs = []
            for r in rows[:limit]:
                doc = json.loads(r["doc"])
                doc.pop("final", None)
                doc.pop("policy_hashes", None)
                # The tags now, not those at check time: a digest tagged again after its
                # verdict is not verified again, but it is listed under every tag it has.
                doc["tags"] = [
                    t[0]
                    for t in c.execute(
                        "SELECT tag FROM tags WHERE registry=? AND repository=? AND digest=?"
                        " ORDER BY tag",
                        (r["registry"], r["repository"], r["digest"]),
                    )
                ]
                docs.append(doc)
            more = len(rows) > limit
            return docs, int(rows[limit - 1]["id"]) if more and limit > 0 else None

        return await self._read(fn)
