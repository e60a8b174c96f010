"""What the daemon keeps, as typed records, and the interface a store backend implements.

The store is the watcher's memory and its queue: a push is acknowledged only once it is
here, work is claimed from here with a lease (so a crash mid-verification means another
claim after the lease expires), and a verdict is written together with the alerts it causes
in one transaction (so an alert is never lost, and queued once per sink, digest, policy and
alert name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from watcher.events import PushEvent
from watcher.refs import Digest
from watcher.verdicts import ImageVerdict

TAG_REF_PREFIX = "tag:"


def ts(moment: datetime) -> str:
    """Timestamps are stored as RFC 3339 UTC with microseconds, so they sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str | None) -> datetime | None:
    """The inverse of ts()."""
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Enqueue:
    """Ask for a digest (or a tag still to be resolved: ref ``tag:<name>``) to be looked at."""

    ref: str
    due_at: datetime
    reason: str
    recheck: bool = False  # re-open work that already reached a final verdict


@dataclass(frozen=True)
class WorkItem:
    """A claimed unit of work: verify (or resolve) one ref in one repository."""

    registry: str
    repository: str
    ref: str
    attempts: int
    reason: str
    owner: str
    errors: int = 0  # consecutive failed attempts (registry errors), apart from grace re-checks

    @property
    def tag(self) -> str | None:
        """The tag to resolve, when this item names a tag rather than a digest."""
        return self.ref[len(TAG_REF_PREFIX) :] if self.ref.startswith(TAG_REF_PREFIX) else None

    @property
    def digest(self) -> Digest:
        """The digest this item is about (only for digest items)."""
        return Digest(self.ref)


@dataclass(frozen=True)
class DigestRecord:
    """What the watcher knows about one digest in one repository."""

    registry: str
    repository: str
    digest: Digest
    first_seen_at: datetime
    first_source: str
    kind: str  # unknown | image | index | platform | attachment
    media_type: str | None
    parent_digest: Digest | None
    first_signature_at: datetime | None
    final_verdict: str | None
    final_at: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class OutboxAlert:
    """An alert to deliver, written in the same transaction as the verdict that caused it."""

    dedupe_key: str  # sink + digest + policy + verdict: one alert each, ever
    sink: str
    alertname: str
    registry: str
    repository: str
    digest: str
    policy: str
    verdict: str
    severity: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    """What finishing a work item did; falsy when the lease had been lost meanwhile."""

    recorded: bool
    duplicate_alerts: tuple[OutboxAlert, ...] = ()
    new_alerts: int = 0
    findings: tuple[Sighting, ...] = ()  # sightings that were signer drift

    def __bool__(self) -> bool:
        return self.recorded


@dataclass(frozen=True, order=True)
class SignerKey:
    """Who signed, as the signer history keys it: a keyless identity or a key id.

    Empty strings rather than None, so the store's uniqueness constraint (NULLs never collide
    in SQL) really gives one row per identity.
    """

    issuer: str = ""
    subject: str = ""
    key_id: str = ""

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> SignerKey | None:
        """The signer of a verdict JSON signature/attestation entry, if it was valid."""
        if not entry.get("valid"):
            return None
        key = cls(entry.get("issuer") or "", entry.get("subject") or "", entry.get("key_id") or "")
        return key if (key.subject or key.key_id) else None

    def describe(self) -> str:
        """``subject (issuer X)`` or ``key sha256:<id>``."""
        if self.subject:
            return f"{self.subject} (issuer {self.issuer or '?'})"
        return f"key sha256:{self.key_id}"

    def to_json(self) -> dict[str, str | None]:
        """issuer/subject/key_id with None for the parts a signer does not have."""
        return {
            "issuer": self.issuer or None,
            "subject": self.subject or None,
            "key_id": self.key_id or None,
        }


def signers_of(doc: dict[str, Any]) -> list[SignerKey]:
    """Every distinct valid signer (of signatures and attestations) in a verdict document."""
    found = {
        key
        for entry in [*doc.get("signatures", []), *doc.get("attestations", [])]
        if (key := SignerKey.from_json(entry)) is not None
    }
    return sorted(found)


@dataclass(frozen=True)
class Sighting:
    """A valid signature by ``signer`` on a digest of a repository.

    The first sighting of a signer in a repository is recorded in its signer history. When the
    repository already had a history, it is also a drift finding, and ``alerts`` (built by
    ``watcher.alerts.new_signer_alerts``) are written to the outbox in the same transaction.
    """

    registry: str
    repository: str
    digest: Digest
    signer: SignerKey
    alerts: tuple[OutboxAlert, ...] = ()


NEW_SIGNER = "new_signer"


@dataclass(frozen=True)
class StoredVerdict:
    """A verdict row: the document plus what it depended on (policy hashes, trust root)."""

    id: int
    registry: str
    repository: str
    digest: Digest
    checked_at: datetime
    verdict: str
    final: bool
    source: str
    policy_hashes: dict[str, str]
    trust_fingerprint: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class InventoryEntry:
    """One digest that current tags of a repository point at, with its newest verdict."""

    registry: str
    repository: str
    digest: Digest
    tags: tuple[str, ...]
    kind: str
    first_seen_at: datetime
    latest: StoredVerdict | None


@dataclass(frozen=True)
class CoverageRow:
    """Current tags of one repository whose digest has one verdict."""

    registry: str
    repository: str
    verdict: str
    tags: int


class Store(Protocol):
    """The operations the daemon needs; SQLite implements it, PostgreSQL will."""

    async def close(self) -> None:
        """Release the connection."""

    async def record_event(
        self, event: PushEvent, received_at: datetime, enqueue: Sequence[Enqueue]
    ) -> bool:
        """Store an event durably with its effects; False if it was a redelivery."""

    async def set_tag(
        self, registry: str, repository: str, tag: str, digest: Digest, at: datetime, source: str
    ) -> Digest | None:
        """Point a tag at a digest, keeping history; returns the previous digest."""

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

    async def enqueue(self, registry: str, repository: str, request: Enqueue) -> None:
        """Queue (or bring forward) work for a ref."""

    async def claim(self, owner: str, now: datetime, lease_seconds: float) -> WorkItem | None:
        """Take the next due work item under a lease, or None."""

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
        """Record the outcome of a claimed item; falsy if the lease was lost meanwhile."""

    async def digest(self, registry: str, repository: str, digest: Digest) -> DigestRecord | None:
        """One digest's record."""

    async def tags_for(self, registry: str, repository: str, digest: Digest) -> list[str]:
        """Current tags pointing at a digest."""

    async def current_tags(self, registry: str, repository: str) -> dict[str, Digest]:
        """Every current tag of a repository and its digest."""

    async def latest_verdict(
        self, registry: str, repository: str, digest: Digest
    ) -> dict[str, Any] | None:
        """The newest verdict document for a digest in a repository."""

    async def results_for_digest(
        self, digest: Digest, repository: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest verdict document per repository where the digest was seen."""

    async def coverage(self) -> list[CoverageRow]:
        """Current tags by their digest's latest verdict (pending when none yet)."""

    async def pending_counts(self) -> dict[str, int]:
        """Digests inside their grace period, per registry."""

    async def due_alerts(self, now: datetime, limit: int) -> list[tuple[int, OutboxAlert, int]]:
        """Undelivered alerts whose next attempt is due: (id, alert, attempts)."""

    async def alert_sent(self, alert_id: int, now: datetime) -> None:
        """Mark an alert delivered."""

    async def alert_failed(
        self, alert_id: int, now: datetime, retry_at: datetime, error: str
    ) -> None:
        """Record a failed delivery and when to try again."""

    async def history(self, digest: Digest) -> dict[str, list[dict[str, Any]]]:
        """Everything recorded about a digest: events, tag moves, verdicts, alerts."""
