"""The embedded store: SQLite in WAL mode, one connection, one thread.

SQLite serialises writers anyway, so one connection driven by a single-thread executor keeps
the event loop free without lock contention; every public method is one transaction. WAL
lets readers (the API, `trace`) run beside the daemon's writes, and `synchronous=FULL` makes a
2xx to a webhook mean the event survives a power cut.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from watcher.events import Action, PushEvent
from watcher.refs import Digest
from watcher.store.base import (
    CoverageRow,
    DigestRecord,
    Enqueue,
    Finished,
    OutboxAlert,
    Sighting,
    WorkItem,
    parse_ts,
    ts,
)
from watcher.store.inventory import (
    InventoryQueries,
    connect_readonly,
    insert_outbox,
    record_sightings,
    register_functions,
)
from watcher.store.schema import MIGRATIONS
from watcher.verdicts import ImageVerdict

T = TypeVar("T")

_ACTIVE = ("queued", "pending")


class SqliteStore(InventoryQueries):
    """The Store interface on SQLite (inventory, signer and API queries in the mixin)."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path | str, *, readonly: bool = False) -> SqliteStore:
        """Open (creating and migrating) the database at ``path``.

        ``readonly`` opens an existing database without creating, migrating or writing
        anything, as ``trace`` and what-if runs do: SQLite itself then refuses writes, which
        is what makes "looking changes nothing" hold. Raises StoreMissing when there is no
        database there yet.
        """
        store = cls(path, readonly=readonly)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    def _connect(self) -> None:
        if self.readonly:
            self._conn = connect_readonly(self.path)
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        register_functions(conn)
        self._conn = conn
        self._migrate(conn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, description, sql in MIGRATIONS:
            if version in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, datetime('now'))",
                    (version, description),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction on the store's thread."""

        def work() -> T:
            conn = self._conn
            assert conn is not None, "store is closed"
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(work)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            assert self._conn is not None, "store is closed"
            return fn(self._conn)

        return await self._run(work)

    async def close(self) -> None:
        """Close the connection and the store's thread."""

        def work() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(work)
        self._executor.shutdown(wait=True)

    async def schema_version(self) -> int:
        """The highest applied migration."""
        return await self._read(
            lambda c: int(c.execute("SELECT max(version) FROM schema_migrations").fetchone()[0])
        )

    # -- events, digests, tags ------------------------------------------------------------

    async def record_event(
        self, event: PushEvent, received_at: datetime, enqueue: Sequence[Enqueue]
    ) -> bool:
        """Store an event durably with its effects; False if it was a redelivery."""
        return await self._tx(lambda c: _record_event(c, event, received_at, enqueue))

    async def record_events(self, events: Sequence[PushEvent], received_at: datetime) -> int:
        """Several events that cause no work (a scan's view of one repository) in one
        transaction, so a first scan of a large registry is not one fsync per tag; returns
        how many were new."""
        return await self._tx(lambda c: sum(_record_event(c, e, received_at, ()) for e in events))

    async def set_tag(
        self, registry: str, repository: str, tag: str, digest: Digest, at: datetime, source: str
    ) -> Digest | None:
        """Point a tag at a digest, keeping history; returns the previous digest."""
        return await self._tx(lambda c: _set_tag(c, registry, repository, tag, digest, at, source))

    async def delete_tag(
        self, registry: str, repository: str, tag: str, at: datetime, source: str
    ) -> None:
        """A tag that disappeared (seen by polling): history keeps where it pointed."""
        await self._tx(lambda c: _delete_tag(c, registry, repository, tag, at, source))

    async def note_digest(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        at: datetime,
        source: str,
        *,
        kind: str | None = None,
        media_type: str | None = None,
        parent: Digest | None = None,
    ) -> DigestRecord:
        """Insert or update what is known about a digest."""

        def fn(c: sqlite3.Connection) -> DigestRecord:
            _note_digest(
                c,
                registry,
                repository,
                digest,
                at,
                source,
                kind=kind,
                media_type=media_type,
                parent=parent,
            )
            record = _digest(c, registry, repository, digest)
            assert record is not None
            return record

        return await self._tx(fn)

    async def mark_first_signature(
        self, registry: str, repository: str, digest: Digest, at: datetime
    ) -> bool:
        """Remember when a valid signature was first seen; True only the first time."""

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE digests SET first_signature_at=? WHERE registry=? AND repository=?"
                " AND digest=? AND first_signature_at IS NULL",
                (ts(at), registry, repository, digest),
            )
            return cur.rowcount > 0

        return await self._tx(fn)

    async def digest(self, registry: str, repository: str, digest: Digest) -> DigestRecord | None:
        """One digest's record."""
        return await self._read(lambda c: _digest(c, registry, repository, digest))

    async def children(self, registry: str, repository: str, parent: Digest) -> list[Digest]:
        """Platform manifests recorded as reached through an index."""
        return await self._read(
            lambda c: [
                Digest(r[0])
                for r in c.execute(
                    "SELECT digest FROM digests WHERE registry=? AND repository=?"
                    " AND parent_digest=?",
                    (registry, repository, parent),
                )
            ]
        )

    async def tags_for(self, registry: str, repository: str, digest: Digest) -> list[str]:
        """Current tags pointing at a digest."""
        return await self._read(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT tag FROM tags WHERE registry=? AND repository=? AND digest=?"
                    " ORDER BY tag",
                    (registry, repository, digest),
                )
            ]
        )

    async def current_tags(self, registry: str, repository: str) -> dict[str, Digest]:
        """Every current tag of a repository and its digest."""
        return await self._read(
            lambda c: {
                r[0]: Digest(r[1])
                for r in c.execute(
                    "SELECT tag, digest FROM tags WHERE registry=? AND repository=?",
                    (registry, repository),
                )
            }
        )

    # -- the work queue -----------------------------------------------------------------

    async def enqueue(self, registry: str, repository: str, request: Enqueue) -> None:
        """Queue (or bring forward) work for a ref."""
        await self._tx(lambda c: _enqueue(c, registry, repository, request, request.due_at))

    async def claim(self, owner: str, now: datetime, lease_seconds: float) -> WorkItem | None:
        """Take the next due work item under a lease, or None.

        An item whose lease expired (its worker crashed or hung) is due again: that is what
        makes a crash mid-verification harmless.
        """

        def fn(c: sqlite3.Connection) -> WorkItem | None:
            now_s = ts(now)
            row = c.execute(
                "SELECT registry, repository, ref, attempts, reason, errors FROM work"
                " WHERE state IN ('queued','pending') AND due_at <= ?"
                " AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY due_at LIMIT 1",
                (now_s, now_s),
            ).fetchone()
            if row is None:
                return None
            until = ts(now + timedelta(seconds=lease_seconds))
            c.execute(
                "UPDATE work SET lease_owner=?, lease_until=?, attempts=attempts+1, updated_at=?"
                " WHERE registry=? AND repository=? AND ref=?",
                (owner, until, now_s, row[0], row[1], row[2]),
            )
            return WorkItem(row[0], row[1], row[2], int(row[3]) + 1, row[4], owner, int(row[5]))

        return await self._tx(fn)

    async def finish(
        self,
        item: WorkItem,
        now: datetime,
        *,
        verdict: ImageVerdict | None,
        final: bool,
        next_due: datetime | None,
        source: str,
        alerts: Sequence[OutboxAlert] = (),
        trust_fingerprint: str = "",
        sightings: Sequence[Sighting] = (),
        failed: bool = False,
    ) -> Finished:
        """Record a claimed item's outcome (verdict, alerts, signers seen, next check) in one
        transaction: a signer is new in a repository, and its drift alert written, exactly
        once even when two workers finish digests of one repository at the same moment."""

        def fn(c: sqlite3.Connection) -> Finished:
            held = c.execute(
                "SELECT lease_owner, rerun FROM work WHERE registry=? AND repository=? AND ref=?",
                (item.registry, item.repository, item.ref),
            ).fetchone()
            if held is None or held[0] != item.owner:
                return Finished(False)
            duplicates: list[OutboxAlert] = []
            findings = record_sightings(c, sightings, now, source, drift=True)
            if verdict is not None:
                _insert_verdict(
                    c, verdict, final=final, source=source, trust_fingerprint=trust_fingerprint
                )
                if final:
                    c.execute(
                        "UPDATE digests SET final_verdict=?, final_at=? WHERE registry=?"
                        " AND repository=? AND digest=?",
                        (
                            str(verdict.verdict),
                            ts(now),
                            item.registry,
                            item.repository,
                            verdict.digest,
                        ),
                    )
            for alert in alerts:
                if not insert_outbox(c, alert, now):
                    duplicates.append(alert)
            if next_due is None:
                c.execute(
                    "UPDATE work SET state='done', lease_owner=NULL, lease_until=NULL,"
                    " updated_at=? WHERE registry=? AND repository=? AND ref=?",
                    (ts(now), item.registry, item.repository, item.ref),
                )
            else:
                c.execute(
                    "UPDATE work SET state='pending', due_at=?, lease_owner=NULL,"
                    " lease_until=NULL, updated_at=? WHERE registry=? AND repository=? AND ref=?",
                    (ts(next_due), ts(now), item.registry, item.repository, item.ref),
                )
            # Registry failures in a row: the error budget, kept apart from grace re-checks.
            c.execute(
                "UPDATE work SET errors=? WHERE registry=? AND repository=? AND ref=?",
                (item.errors + 1 if failed else 0, item.registry, item.repository, item.ref),
            )
            if held[1]:
                # A re-check was asked for while this item was in flight (a signature pushed
                # during its verification): look again now instead of losing the request.
                c.execute(
                    "UPDATE work SET state='queued', due_at=?, rerun=0, attempts=0"
                    " WHERE registry=? AND repository=? AND ref=?",
                    (ts(now), item.registry, item.repository, item.ref),
                )
            return Finished(True, tuple(duplicates), len(alerts) - len(duplicates), tuple(findings))

        return await self._tx(fn)

    async def queue_depth(self) -> int:
        """Work items not yet done (queued or pending)."""
        return await self._read(
            lambda c: int(
                c.execute(
                    "SELECT count(*) FROM work WHERE state IN ('queued','pending')"
                ).fetchone()[0]
            )
        )

    # -- verdicts and queries -------------------------------------------------------------

    async def latest_verdict(
        self, registry: str, repository: str, digest: Digest
    ) -> dict[str, Any] | None:
        """The newest verdict document for a digest in a repository."""

        def fn(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute(
                "SELECT doc FROM verdicts WHERE registry=? AND repository=? AND digest=?"
                " ORDER BY id DESC LIMIT 1",
                (registry, repository, digest),
            ).fetchone()
            return json.loads(row[0]) if row else None

        return await self._read(fn)

    async def results_for_digest(
        self, digest: Digest, repository: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest verdict document per repository where the digest was seen."""

        def fn(c: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = (
                "SELECT v.doc FROM verdicts v JOIN (SELECT registry, repository, max(id) AS id"
                " FROM verdicts WHERE digest=? GROUP BY registry, repository) l ON v.id = l.id"
            )
            params: tuple[str, ...] = (digest,)
            if repository is not None:
                sql += " WHERE v.repository=?"
                params += (repository,)
            return [json.loads(r[0]) for r in c.execute(sql + " ORDER BY v.id", params)]

        return await self._read(fn)

    async def seen(self, digest: Digest) -> list[tuple[str, str]]:
        """(registry, repository) pairs where a digest was seen."""
        return await self._read(
            lambda c: [
                (r[0], r[1])
                for r in c.execute(
                    "SELECT registry, repository FROM digests WHERE digest=?", (digest,)
                )
            ]
        )

    async def coverage(self) -> list[CoverageRow]:
        """Current image tags by their digest's latest verdict (pending when none yet)."""

        def fn(c: sqlite3.Connection) -> list[CoverageRow]:
            rows = c.execute(
                "SELECT t.registry, t.repository,"
                " coalesce((SELECT v.verdict FROM verdicts v WHERE v.registry=t.registry"
                "  AND v.repository=t.repository AND v.digest=t.digest ORDER BY v.id DESC"
                "  LIMIT 1), 'pending') AS verdict, count(*)"
                " FROM tags t LEFT JOIN digests d ON d.registry=t.registry"
                "  AND d.repository=t.repository AND d.digest=t.digest"
                " WHERE NOT is_attachment_tag(t.tag) AND coalesce(d.kind,'') != 'attachment'"
                " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall()
            return [CoverageRow(r[0], r[1], r[2], int(r[3])) for r in rows]

        return await self._read(fn)

    async def pending_counts(self) -> dict[str, int]:
        """Digests inside their grace period (verdict work still pending), per registry."""
        return await self._read(
            lambda c: {
                r[0]: int(r[1])
                for r in c.execute(
                    "SELECT registry, count(*) FROM work WHERE state='pending'"
                    " AND ref NOT LIKE 'tag:%' GROUP BY registry"
                )
            }
        )

    # -- alerts outbox --------------------------------------------------------------------

    async def due_alerts(self, now: datetime, limit: int) -> list[tuple[int, OutboxAlert, int]]:
        """Undelivered alerts whose next attempt is due: (id, alert, attempts so far)."""
        rows = await self._read(
            lambda c: _alerts(c, "o.state='due' AND o.next_attempt_at <= ?", (ts(now),), limit)
        )
        return [(alert_id, alert, attempts) for alert_id, alert, attempts, _ in rows]

    async def due_alerts_with_status(
        self, now: datetime, limit: int
    ) -> list[tuple[int, OutboxAlert, int, bool]]:
        """Due alerts with whether their condition still holds (a stale one is not sent)."""
        return await self._read(
            lambda c: _alerts(c, "o.state='due' AND o.next_attempt_at <= ?", (ts(now),), limit)
        )

    async def alert_sent(self, alert_id: int, now: datetime) -> None:
        """Mark an alert delivered."""
        await self._tx(
            lambda c: c.execute(
                "UPDATE outbox SET state='sent', sent_at=?, attempts=attempts+1 WHERE id=?",
                (ts(now), alert_id),
            )
        )

    async def alert_failed(
        self, alert_id: int, now: datetime, retry_at: datetime, error: str
    ) -> None:
        """Record a failed delivery and when to try again."""
        await self._tx(
            lambda c: c.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
                (ts(retry_at), error[:500], alert_id),
            )
        )

    async def sent_alerts(
        self, digests: Collection[str] | None = None
    ) -> list[tuple[int, OutboxAlert, bool]]:
        """Delivered, unresolved alerts (of some digests, or all) and whether each holds.

        After a verdict only that digest's alerts need a look; the full pass is for the
        periodic refresh, so a large outbox is not re-read on every verdict.
        """
        if digests is None:
            rows = await self._read(lambda c: _alerts(c, "o.state='sent'", (), -1))
        else:
            wanted = sorted(set(digests))[:500]
            if not wanted:
                return []
            marks = ",".join("?" * len(wanted))
            rows = await self._read(
                lambda c: _alerts(c, f"o.state='sent' AND o.digest IN ({marks})", tuple(wanted), -1)
            )
        return [(alert_id, alert, holds) for alert_id, alert, _, holds in rows]

    async def alert_resolved(self, alert_id: int, now: datetime) -> None:
        """The condition behind a delivered alert ended and the sink was told."""
        await self._tx(
            lambda c: c.execute(
                "UPDATE outbox SET state='resolved', last_error=NULL, next_attempt_at=? WHERE id=?",
                (ts(now), alert_id),
            )
        )

    async def history(self, digest: Digest) -> dict[str, list[dict[str, Any]]]:
        """Everything recorded about a digest: events, tag moves, verdicts, alerts."""

        def rows(c: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in c.execute(sql, (digest,) * sql.count("?"))]

        def fn(c: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
            verdicts = rows(
                c,
                "SELECT id, registry, repository, checked_at, verdict, final, source, doc"
                " FROM verdicts WHERE digest=? ORDER BY id",
            )
            for v in verdicts:
                v["doc"] = json.loads(v["doc"])
            return {
                "digests": rows(c, "SELECT * FROM digests WHERE digest=?"),
                "events": rows(c, "SELECT * FROM events WHERE digest=? ORDER BY id"),
                "tags": rows(
                    c, "SELECT * FROM tag_history WHERE digest=? OR previous_digest=? ORDER BY id"
                ),
                "verdicts": verdicts,
                "alerts": rows(c, "SELECT * FROM outbox WHERE digest=? ORDER BY id"),
                "signers": rows(
                    c, "SELECT * FROM signers WHERE first_digest=? ORDER BY first_seen_at"
                ),
                "findings": rows(c, "SELECT * FROM findings WHERE digest=? ORDER BY id"),
            }

        return await self._read(fn)


# -- helpers that run inside a transaction, on the store's thread ---------------------------


def _alerts(
    c: sqlite3.Connection, where: str, params: tuple[str, ...], limit: int
) -> list[tuple[int, OutboxAlert, int, bool]]:
    """Outbox rows with whether each alert's condition still holds.

    An alert holds while the digest exists and its latest verdict under the policy is still
    the one alerted on (or, for ImageExtraSigner, still lists extra signers).
    """
    rows = c.execute(
        "SELECT o.id, o.dedupe_key, o.sink, o.alertname, o.registry, o.repository, o.digest,"
        " o.policy, o.verdict, o.severity, o.payload, o.attempts, d.deleted_at,"
        " (SELECT v.doc FROM verdicts v WHERE v.registry=o.registry"
        "  AND v.repository=o.repository AND v.digest=o.digest ORDER BY v.id DESC LIMIT 1)"
        " FROM outbox o LEFT JOIN digests d ON d.registry=o.registry"
        " AND d.repository=o.repository AND d.digest=o.digest"
        f" WHERE {where} ORDER BY o.id LIMIT ?",
        (*params, limit),
    ).fetchall()
    out: list[tuple[int, OutboxAlert, int, bool]] = []
    for r in rows:
        doc = json.loads(r[13]) if r[13] else {}
        if r[3] == "ImageNewSigner":
            # A finding, not a state: it holds (is delivered) and then simply expires.
            holds = True
        elif r[3] == "ImageExtraSigner":
            holds = bool(doc.get("extra_signers"))
        else:
            holds = any(
                p.get("name") == r[7] and p.get("verdict") == r[8] for p in doc.get("policies", [])
            )
        alert = OutboxAlert(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], json.loads(r[10]))
        out.append((int(r[0]), alert, int(r[11]), holds and r[12] is None))
    return out


def _record_event(
    c: sqlite3.Connection, event: PushEvent, received_at: datetime, enqueue: Sequence[Enqueue]
) -> bool:
    """An event and its effects (digest, tag moves, work), inside a transaction."""
    cur = c.execute(
        "INSERT INTO events (registry, repository, digest, tag, action, source, event_id,"
        " occurred_at, received_at, actor, source_addr, media_type)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (
            event.registry,
            event.repository,
            event.digest,
            event.tag,
            str(event.action),
            str(event.source),
            event.event_id,
            ts(event.occurred_at) if event.occurred_at else None,
            ts(received_at),
            event.actor,
            event.source_addr,
            event.media_type,
        ),
    )
    if cur.rowcount == 0:
        return False
    if event.action is Action.PUSH and event.digest is not None:
        _note_digest(
            c,
            event.registry,
            event.repository,
            event.digest,
            received_at,
            str(event.source),
            media_type=event.media_type,
        )
        if event.tag is not None:
            _set_tag(
                c,
                event.registry,
                event.repository,
                event.tag,
                event.digest,
                received_at,
                str(event.source),
            )
    elif event.action is Action.DELETE:
        if event.digest is not None:
            c.execute(
                "UPDATE digests SET deleted_at=? WHERE registry=? AND repository=?"
                " AND digest=? AND deleted_at IS NULL",
                (ts(received_at), event.registry, event.repository, event.digest),
            )
            for (tag,) in c.execute(
                "SELECT tag FROM tags WHERE registry=? AND repository=? AND digest=?",
                (event.registry, event.repository, event.digest),
            ).fetchall():
                _delete_tag(
                    c, event.registry, event.repository, tag, received_at, str(event.source)
                )
        if event.tag is not None:
            _delete_tag(
                c,
                event.registry,
                event.repository,
                event.tag,
                received_at,
                str(event.source),
            )
    for request in enqueue:
        _enqueue(c, event.registry, event.repository, request, received_at)
    return True


def _note_digest(
    c: sqlite3.Connection,
    registry: str,
    repository: str,
    digest: Digest,
    at: datetime,
    source: str,
    *,
    kind: str | None = None,
    media_type: str | None = None,
    parent: Digest | None = None,
) -> None:
    c.execute(
        "INSERT INTO digests (registry, repository, digest, first_seen_at, first_source, kind,"
        " media_type, parent_digest) VALUES (?,?,?,?,?,coalesce(?, 'unknown'),?,?)"
        " ON CONFLICT (registry, repository, digest) DO UPDATE SET"
        " kind=coalesce(?, kind), media_type=coalesce(media_type, ?),"
        " parent_digest=coalesce(parent_digest, ?), deleted_at=NULL",
        (
            registry,
            repository,
            digest,
            ts(at),
            source,
            kind,
            media_type,
            parent,
            kind,
            media_type,
            parent,
        ),
    )


def _set_tag(
    c: sqlite3.Connection,
    registry: str,
    repository: str,
    tag: str,
    digest: Digest,
    at: datetime,
    source: str,
) -> Digest | None:
    row = c.execute(
        "SELECT digest FROM tags WHERE registry=? AND repository=? AND tag=?",
        (registry, repository, tag),
    ).fetchone()
    previous = Digest(row[0]) if row else None
    if previous == digest:
        return previous
    c.execute(
        "INSERT INTO tags (registry, repository, tag, digest, updated_at) VALUES (?,?,?,?,?)"
        " ON CONFLICT (registry, repository, tag) DO UPDATE SET digest=excluded.digest,"
        " updated_at=excluded.updated_at",
        (registry, repository, tag, digest, ts(at)),
    )
    c.execute(
        "INSERT INTO tag_history (registry, repository, tag, digest, previous_digest, at, source)"
        " VALUES (?,?,?,?,?,?,?)",
        (registry, repository, tag, digest, previous, ts(at), source),
    )
    return previous


def _delete_tag(
    c: sqlite3.Connection, registry: str, repository: str, tag: str, at: datetime, source: str
) -> None:
    row = c.execute(
        "SELECT digest FROM tags WHERE registry=? AND repository=? AND tag=?",
        (registry, repository, tag),
    ).fetchone()
    if row is None:
        return
    c.execute(
        "DELETE FROM tags WHERE registry=? AND repository=? AND tag=?", (registry, repository, tag)
    )
    c.execute(
        "INSERT INTO tag_history (registry, repository, tag, digest, previous_digest, at, source)"
        " VALUES (?,?,?,NULL,?,?,?)",
        (registry, repository, tag, row[0], ts(at), source),
    )


def _enqueue(
    c: sqlite3.Connection, registry: str, repository: str, request: Enqueue, now: datetime
) -> None:
    row = c.execute(
        "SELECT state, due_at, lease_owner FROM work WHERE registry=? AND repository=? AND ref=?",
        (registry, repository, request.ref),
    ).fetchone()
    due = ts(request.due_at)
    if row is not None and row[2] is not None and request.recheck:
        # Claimed right now: the running check may have looked before this news arrived,
        # so finish() queues it once more.
        c.execute(
            "UPDATE work SET rerun=1, due_at=min(due_at, ?), updated_at=? WHERE registry=?"
            " AND repository=? AND ref=?",
            (due, ts(now), registry, repository, request.ref),
        )
        return
    if row is None:
        c.execute(
            "INSERT INTO work (registry, repository, ref, state, due_at, reason, updated_at)"
            " VALUES (?,?,?,'queued',?,?,?)",
            (registry, repository, request.ref, due, request.reason, ts(now)),
        )
    elif row[0] in _ACTIVE:
        if due < row[1]:
            c.execute(
                "UPDATE work SET due_at=?, reason=?, updated_at=? WHERE registry=?"
                " AND repository=? AND ref=?",
                (due, request.reason, ts(now), registry, repository, request.ref),
            )
    elif request.recheck:
        c.execute(
            "UPDATE work SET state='queued', due_at=?, reason=?, attempts=0, updated_at=?"
            " WHERE registry=? AND repository=? AND ref=?",
            (due, request.reason, ts(now), registry, repository, request.ref),
        )


def _digest(
    c: sqlite3.Connection, registry: str, repository: str, digest: str
) -> DigestRecord | None:
    r = c.execute(
        "SELECT * FROM digests WHERE registry=? AND repository=? AND digest=?",
        (registry, repository, digest),
    ).fetchone()
    if r is None:
        return None
    first_seen = parse_ts(r["first_seen_at"])
    assert first_seen is not None
    return DigestRecord(
        registry=r["registry"],
        repository=r["repository"],
        digest=Digest(r["digest"]),
        first_seen_at=first_seen,
        first_source=r["first_source"],
        kind=r["kind"],
        media_type=r["media_type"],
        parent_digest=Digest(r["parent_digest"]) if r["parent_digest"] else None,
        first_signature_at=parse_ts(r["first_signature_at"]),
        final_verdict=r["final_verdict"],
        final_at=parse_ts(r["final_at"]),
        deleted_at=parse_ts(r["deleted_at"]),
    )


def _insert_verdict(
    c: sqlite3.Connection,
    verdict: ImageVerdict,
    *,
    final: bool,
    source: str,
    trust_fingerprint: str,
) -> None:
    doc = verdict.to_json()
    doc["final"] = final
    hashes = {p.name: p.policy_hash for p in verdict.policies}
    doc["policy_hashes"] = hashes
    c.execute(
        "INSERT INTO verdicts (registry, repository, digest, checked_at, verdict, final, source,"
        " policy_hashes, trust_fingerprint, doc) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            verdict.registry,
            verdict.repository,
            verdict.digest,
            ts(verdict.checked_at),
            str(verdict.verdict),
            int(final),
            source,
            json.dumps(hashes, sort_keys=True),
            trust_fingerprint,
            json.dumps(doc),
        ),
    )
