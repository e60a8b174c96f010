"""The store's schema, as numbered migrations applied in order and recorded.

Written in the SQL both SQLite and PostgreSQL accept (text timestamps in RFC 3339 UTC so they
sort lexically, integer booleans), so a PostgreSQL backend can apply the same migrations.
A migration is never edited once released: a change is a new, higher-numbered one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "events, digests, tags, tag history, work queue, verdicts, outbox",
        """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT,
    tag TEXT,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT,
    occurred_at TEXT,
    received_at TEXT NOT NULL,
    actor TEXT,
    source_addr TEXT,
    media_type TEXT
);
CREATE UNIQUE INDEX events_event_id ON events (registry, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_digest ON events (digest);

CREATE TABLE digests (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    first_source TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'unknown',
    media_type TEXT,
    parent_digest TEXT,
    first_signature_at TEXT,
    final_verdict TEXT,
    final_at TEXT,
    deleted_at TEXT,
    PRIMARY KEY (registry, repository, digest)
);
CREATE INDEX digests_digest ON digests (digest);

CREATE TABLE tags (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (registry, repository, tag)
);
CREATE INDEX tags_digest ON tags (registry, repository, digest);

CREATE TABLE tag_history (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT,
    previous_digest TEXT,
    at TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX tag_history_digest ON tag_history (digest);

CREATE TABLE work (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    ref TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (registry, repository, ref)
);
CREATE INDEX work_due ON work (state, due_at);

CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    verdict TEXT NOT NULL,
    final INTEGER NOT NULL,
    source TEXT NOT NULL,
    policy_hashes TEXT NOT NULL,
    trust_fingerprint TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX verdicts_digest ON verdicts (registry, repository, digest, id);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    sink TEXT NOT NULL,
    alertname TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    policy TEXT NOT NULL,
    verdict TEXT NOT NULL,
    severity TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    sent_at TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
""",
    ),
    (
        2,
        "signers per repository, drift findings, re-checks asked for while work is claimed",
        """
ALTER TABLE work ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;

CREATE TABLE signers (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    issuer TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    key_id TEXT NOT NULL DEFAULT '',
    first_seen_at TEXT NOT NULL,
    first_digest TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (registry, repository, issuer, subject, key_id)
);

CREATE TABLE findings (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    issuer TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    key_id TEXT NOT NULL DEFAULT '',
    found_at TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX findings_once ON findings (registry, repository, kind, issuer, subject, key_id);
CREATE INDEX findings_digest ON findings (digest);
""",
    ),
    (
        3,
        "error retries counted apart from grace re-checks; indexes for per-digest lookups",
        """
ALTER TABLE work ADD COLUMN errors INTEGER NOT NULL DEFAULT 0;
CREATE INDEX verdicts_by_digest ON verdicts (digest, id);
CREATE INDEX outbox_digest ON outbox (digest);
CREATE INDEX tag_history_previous ON tag_history (previous_digest);
""",
    ),
)
