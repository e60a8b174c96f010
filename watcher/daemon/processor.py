"""One unit of work: take a claimed ref to its next state, and record why.

A tag-only ref is resolved with HEAD. A digest is classified once (image, index, platform
manifest reached through an index, or a signature artifact), then verified. Inside the
grace period an unsatisfied digest stays `pending` and is re-checked on a backoff schedule
and whenever a signature artifact for it arrives; at the end of the grace period (or as soon
as it is satisfied) its verdict is final, recorded with the alerts it causes and the signers
it shows (a stranger to a repository with a signing history is drift: ``ImageNewSigner``) in
one transaction. Registry failures are retried and only after the retries are exhausted become
a final `error`, never `unsigned`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from watcher.alerts import alerts_for, sightings_for
from watcher.config import Config, RegistryConfig
from watcher.daemon.intake import attachment_subject
from watcher.discovery import is_index
from watcher.engine import Engine, Target
from watcher.metrics import Metrics
from watcher.refs import Digest, ImageReference, parse_digest
from watcher.registry.errors import NotFoundError, RegistryError
from watcher.store.base import Enqueue, WorkItem
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import ImageVerdict, Mode, PolicyResult, Verdict, utcnow

log = structlog.get_logger("watcher.worker")

MAX_ERROR_ATTEMPTS = 5


def backoff(attempt: int, base: float = 5.0, cap: float = 300.0) -> timedelta:
    """Seconds until the next check: 5, 10, 20 … capped, so a long grace costs few requests."""
    return timedelta(seconds=min(cap, base * (2 ** max(0, attempt - 1))))


class Processor:
    """Does the work the queue hands out; one instance shared by all worker tasks."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        store: SqliteStore,
        metrics: Metrics,
        *,
        error_attempts: int = MAX_ERROR_ATTEMPTS,
        backoff_base: float = 5.0,
        on_alerts: Callable[[str], None] = lambda digest: None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.metrics = metrics
        self.error_attempts = error_attempts
        self.backoff_base = backoff_base
        self.on_alerts = on_alerts

    async def process(self, item: WorkItem) -> None:
        """Advance one claimed item; an unexpected failure is retried, then becomes `error`."""
        try:
            await self._process(item)
        except Exception as exc:
            # A bug or input nobody foresaw: never retry forever, never call it unsigned.
            log.exception(
                "work_failed",
                registry=item.registry,
                repository=item.repository,
                ref=item.ref,
                attempt=item.attempts,
            )
            registry = self.config.registry_named(item.registry)
            if registry is None or item.tag is not None:
                await self._retry_or_drop(item, utcnow(), f"internal error: {exc!r}")
                return
            tags = await self.store.tags_for(registry.name, item.repository, item.digest)
            await self._decide_error(
                item,
                registry,
                utcnow(),
                tags,
                f"internal error while verifying: {type(exc).__name__}",
            )

    async def _done(self, item: WorkItem, now: datetime) -> None:
        """Nothing (more) to decide for this item."""
        await self.store.finish(
            item, now, verdict=None, final=False, next_due=None, source="webhook"
        )

    async def _later(self, item: WorkItem, now: datetime) -> None:
        """Look again after the backoff for this attempt, recording nothing now."""
        await self.store.finish(
            item,
            now,
            verdict=None,
            final=False,
            next_due=now + backoff(item.attempts, self.backoff_base),
            source="webhook",
        )

    async def _retry_after_error(self, item: WorkItem, now: datetime) -> None:
        """Try again after a registry failure; the error budget counts failures in a row."""
        await self.store.finish(
            item,
            now,
            verdict=None,
            final=False,
            next_due=now + backoff(item.errors + 1, self.backoff_base),
            source="webhook",
            failed=True,
        )

    async def _process(self, item: WorkItem) -> None:
        registry = self.config.registry_named(item.registry)
        now = utcnow()
        if registry is None:  # removed from the config by a reload
            await self._done(item, now)
            return
        if item.tag is not None:
            await self._resolve_tag(item, registry, now)
            return
        await self._verify(item, registry, now)

    async def _resolve_tag(self, item: WorkItem, registry: RegistryConfig, now: datetime) -> None:
        assert item.tag is not None
        client = await self.engine.client_named(registry)
        try:
            head = await client.head_manifest(item.repository, item.tag)
        except RegistryError as exc:
            await self._retry_or_drop(item, now, f"cannot resolve tag {item.tag}: {exc}")
            return
        if head is not None:
            digest = head.digest
            await self.store.note_digest(
                registry.name, item.repository, digest, now, "webhook", media_type=head.media_type
            )
            await self.store.set_tag(
                registry.name, item.repository, item.tag, digest, now, "webhook"
            )
            await self.store.enqueue(
                registry.name,
                item.repository,
                Enqueue(digest, now, f"tag {item.tag} resolved to {digest}"),
            )
        else:
            # Just pushed yet not found: replication lag as often as a quick delete.
            await self._retry_or_drop(item, now, f"tag {item.tag} not found")
            return
        await self._done(item, now)

    async def _retry_or_drop(self, item: WorkItem, now: datetime, reason: str) -> None:
        if item.errors + 1 < self.error_attempts:
            await self._retry_after_error(item, now)
        else:
            log.error(
                "work_abandoned",
                registry=item.registry,
                repository=item.repository,
                ref=item.ref,
                reason=reason,
            )
            await self._done(item, now)

    async def _classify(self, item: WorkItem, registry: RegistryConfig, now: datetime) -> str:
        """Fetch the manifest once to learn what the digest is (raises RegistryError)."""
        record = await self.store.digest(registry.name, item.repository, item.digest)
        if record is not None and record.kind != "unknown":
            return record.kind
        client = await self.engine.client_named(registry)
        manifest = await client.get_manifest(item.repository, item.digest)
        subject = manifest.json.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
            try:
                subject_digest = parse_digest(subject["digest"])
            except ValueError:
                subject_digest = None
            await self.store.note_digest(
                registry.name,
                item.repository,
                item.digest,
                now,
                "webhook",
                kind="attachment",
                media_type=manifest.media_type,
            )
            if subject_digest is not None:
                await self.store.enqueue(
                    registry.name,
                    item.repository,
                    Enqueue(subject_digest, now, f"referrer {item.digest} pushed", recheck=True),
                )
            return "attachment"
        kind = "index" if is_index(manifest) else "image"
        if kind == "image" and record is not None and record.parent_digest is not None:
            kind = "platform"
        await self.store.note_digest(
            registry.name,
            item.repository,
            item.digest,
            now,
            "webhook",
            kind=kind,
            media_type=manifest.media_type,
        )
        if kind == "index":
            for child in manifest.json.get("manifests") or []:
                if isinstance(child, dict) and isinstance(child.get("digest"), str):
                    try:
                        child_digest = parse_digest(child["digest"])
                    except ValueError:
                        continue
                    await self.store.note_digest(
                        registry.name,
                        item.repository,
                        child_digest,
                        now,
                        "webhook",
                        kind="platform",
                        parent=item.digest,
                    )
        return kind

    async def _verify(self, item: WorkItem, registry: RegistryConfig, now: datetime) -> None:
        all_tags = await self.store.tags_for(registry.name, item.repository, item.digest)
        # A digest is an image as soon as it has one ordinary tag, whatever else it carries:
        # a look-alike `sha256-<hex>.sig` tag or a `subject` field must not hide an image.
        tags = [t for t in all_tags if attachment_subject(t) is None]
        if all_tags and not tags:
            await self._done(item, now)
            return
        try:
            kind = await self._classify(item, registry, now)
        except NotFoundError as exc:
            # Just pushed yet not found: replication lag or a flaky proxy as often as a delete.
            await self._decide_error(item, registry, now, tags, f"manifest not found: {exc}")
            return
        except RegistryError as exc:
            await self._decide_error(item, registry, now, tags, f"registry failed: {exc}")
            return
        if kind == "attachment" and not tags:
            await self._done(item, now)
            return
        record = await self.store.digest(registry.name, item.repository, item.digest)
        assert record is not None
        if kind == "platform" and record.parent_digest is not None and not tags:
            await self._inherit(item, registry, now, tags, record.parent_digest)
            return
        ref = ImageReference(registry.host, item.repository, None, item.digest)
        policies = self.config.policies_for(ref, tags)
        grace = max((p.grace_period for p in policies), default=timedelta(0))
        deadline = record.first_seen_at + grace
        in_grace = now < deadline
        client = await self.engine.client_named(registry)
        target = Target(registry.name, registry.host, item.repository)
        verdict = await self.engine.verify_digest(
            target, client, item.digest, tuple(tags), policies, in_grace=in_grace
        )
        await self._note_first_signature(registry, item, verdict, record.first_seen_at, now)
        if verdict.error:
            await self._decide_error(item, registry, now, tags, None, verdict)
            return
        if verdict.verdict is Verdict.PENDING:
            next_due = min(deadline, now + backoff(item.attempts, self.backoff_base))
            previous = await self.store.latest_verdict(registry.name, item.repository, item.digest)
            changed = previous is None or previous.get("verdict") != str(verdict.verdict)
            await self.store.finish(
                item,
                now,
                verdict=verdict if changed else None,
                final=False,
                next_due=next_due,
                source="webhook",
            )
            return
        await self._final(
            item, registry, now, verdict, record.first_seen_at, record.final_verdict is None
        )

    async def _note_first_signature(
        self,
        registry: RegistryConfig,
        item: WorkItem,
        verdict: ImageVerdict,
        first_seen: datetime,
        now: datetime,
    ) -> None:
        if any(s.valid for s in verdict.signatures) and await self.store.mark_first_signature(
            registry.name, item.repository, item.digest, now
        ):
            self.metrics.push_to_signature.labels(registry=registry.name).observe(
                max(0.0, (now - first_seen).total_seconds())
            )

    async def _final(
        self,
        item: WorkItem,
        registry: RegistryConfig,
        now: datetime,
        verdict: ImageVerdict,
        first_seen: datetime,
        first_final: bool,
        *,
        alert: bool = True,
    ) -> None:
        sinks = [a.name for a in self.config.alerts]
        alerts = alerts_for(verdict, sinks) if alert else []
        # Every valid signer goes into the repository's signer history in the same
        # transaction as the verdict; a stranger to a repository with a history is drift.
        sightings = [] if verdict.error else sightings_for(verdict.to_json(), sinks)
        # Stamp the record with when the verdict was reached (after verification), not when
        # the work began, so a trace shows the alert after the check that caused it.
        recorded = await self.store.finish(
            item,
            max(now, verdict.checked_at),
            verdict=verdict,
            final=True,
            next_due=None,
            source="webhook",
            alerts=alerts,
            trust_fingerprint=self.engine.trust.fingerprint,
            sightings=sightings,
        )
        if not recorded:
            log.warning(
                "lease_lost", registry=registry.name, repository=item.repository, digest=item.digest
            )
            return
        for finding in recorded.findings:
            log.warning(
                "signer_drift",
                registry=registry.name,
                repository=item.repository,
                digest=item.digest,
                signer=finding.signer.describe(),
            )
        for duplicate in recorded.duplicate_alerts:
            self.metrics.alerts.labels(
                sink=duplicate.sink, verdict=duplicate.verdict, outcome="deduplicated"
            ).inc()
        # New alerts to deliver, or a verdict that may have ended an alert's condition.
        self.on_alerts(item.digest)
        record = await self.store.digest(registry.name, item.repository, item.digest)
        if record is not None and record.kind == "index":
            # Platform manifests take the index's verdict: when it changes, so do theirs.
            for child in await self.store.children(registry.name, item.repository, item.digest):
                await self.store.enqueue(
                    registry.name,
                    item.repository,
                    Enqueue(child, now, f"index {item.digest} has a new verdict", recheck=True),
                )
        for result in verdict.policies:
            self.metrics.verdicts.labels(
                registry=registry.name,
                repository=item.repository,
                policy=result.name,
                verdict=str(result.verdict),
            ).inc()
        if not verdict.policies:
            self.metrics.verdicts.labels(
                registry=registry.name,
                repository=item.repository,
                policy="",
                verdict=str(Verdict.NO_POLICY),
            ).inc()
        if first_final:
            # Measured when the verdict is recorded, so verification time is included.
            self.metrics.push_to_verdict.labels(registry=registry.name).observe(
                max(0.0, (utcnow() - first_seen).total_seconds())
            )
        log.info(
            "verdict_final",
            registry=registry.name,
            repository=item.repository,
            digest=item.digest,
            verdict=str(verdict.verdict),
            alerts=len(alerts),
        )

    async def _decide_error(
        self,
        item: WorkItem,
        registry: RegistryConfig,
        now: datetime,
        tags: list[str],
        reason: str | None,
        verdict: ImageVerdict | None = None,
    ) -> None:
        if item.errors + 1 < self.error_attempts:
            log.warning(
                "verification_retry",
                registry=registry.name,
                repository=item.repository,
                digest=item.digest,
                failures=item.errors + 1,
                reason=reason,
            )
            await self._retry_after_error(item, now)
            return
        if verdict is None:
            ref = ImageReference(registry.host, item.repository, None, item.digest)
            policies = self.config.policies_for(ref, tags)
            target = Target(registry.name, registry.host, item.repository)
            verdict = self.engine.errored(
                target, item.digest, tuple(tags), policies, reason or "registry failed"
            )
        record = await self.store.digest(registry.name, item.repository, item.digest)
        first_seen = record.first_seen_at if record else now
        await self._final(
            item, registry, now, verdict, first_seen, record is None or record.final_verdict is None
        )

    async def _inherit(
        self,
        item: WorkItem,
        registry: RegistryConfig,
        now: datetime,
        tags: list[str],
        parent: Digest,
    ) -> None:
        """A platform manifest takes its index's verdict, and says so."""
        doc = await self.store.latest_verdict(registry.name, item.repository, parent)
        parent_record = await self.store.digest(registry.name, item.repository, parent)
        if doc is None or parent_record is None or parent_record.final_verdict is None:
            await self.store.enqueue(
                registry.name,
                item.repository,
                Enqueue(parent, now, f"platform manifest {item.digest}"),
            )
            await self._later(item, now)
            return
        results = tuple(
            PolicyResult(
                name=p["name"],
                verdict=Verdict(p["verdict"]),
                mode=Mode(p["mode"]),
                reasons=(f"platform manifest of index {parent}: takes the index's verdict",),
                policy_hash=doc.get("policy_hashes", {}).get(p["name"], ""),
            )
            for p in doc.get("policies", [])
        )
        target = Target(registry.name, registry.host, item.repository)
        verdict = target.verdict(
            item.digest,
            tuple(tags),
            results,
            reasons=(f"reached through multi-arch index {parent}",),
        )
        # The index's own alert already speaks for its platforms: one page per push, not N+1.
        await self._final(item, registry, now, verdict, now, False, alert=False)
