"""`registry-watcher scan`: every existing tag of the watched repositories, judged now.

The enumeration is the poller's own (``watched_repositories`` then ``sync_repository``: the
catalog filtered by the configured globs, a tag listing and one HEAD per tag), so a scan covers
exactly what polling watches, and a tag that moved is recorded as a push event with source
``scan``. Signature artifact tags are never images; they are HEADed anyway, because a new or
changed ``sha256-<hex>.sig``/``.att``/referrers fallback tag is how a late signature shows, and
it makes the cached verdict of its subject stale.

Each distinct digest is verified once per repository, concurrently and bounded per registry
(``max_concurrency`` verifications in flight, each of whose requests the registry client
bounds again). A digest whose newest stored verdict is final, was reached under the same
policy hashes for the policies matching it now, against the same trust root, and whose
signature tags did not change, is not verified again (unless ``--recheck``): a re-scan that
finds nothing new costs the listings and one HEAD per tag.

A scan writes verdicts and signer history, never verdict alerts: it measures coverage, and
the first scan of a registry would otherwise page someone for every old unsigned image. Signer
drift is the exception (see ``record_sightings``): in a repository that already had a signing
history, a never-seen signer is a finding and an ``ImageNewSigner`` alert, whoever found it.
An ``error`` verdict (registry failure) is reported and makes the exit code 3, but is not
recorded: it is not a result, and must not hide the last real one.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from watcher.alerts import sightings_for
from watcher.config import Config, RegistryConfig
from watcher.daemon.intake import attachment_subject
from watcher.engine import Engine, Target
from watcher.events import PushEvent, Source
from watcher.inventory import Coverage, contract_doc, coverage_of
from watcher.policy.glob import (
    glob_matches,
    repository_glob_matches,
    validate_glob,
    validate_repository_glob,
)
from watcher.refs import DOCKER_HUB, Digest, ImageReference, is_attachment_tag
from watcher.registry.client import DOCKER_MANIFEST_LIST, OCI_INDEX, ManifestHead, RegistryClient
from watcher.registry.errors import RegistryError
from watcher.sources.poller import sync_repository, watched_repositories
from watcher.store.base import Sighting, StoredVerdict
from watcher.store.inventory import Checked
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import Verdict, utcnow

log = structlog.get_logger("watcher.scan")
SOURCE = Source.SCAN


class Progress(Protocol):
    """What the scan tells a progress display (rich's on a terminal; nothing otherwise)."""

    def found(self, images: int) -> None:
        """``images`` more digests are known to need a verdict."""

    def done(self, images: int = 1) -> None:
        """``images`` digests have their verdict."""


class _Quiet:
    def found(self, images: int) -> None:
        pass

    def done(self, images: int = 1) -> None:
        pass


def _is_image_glob(glob: str) -> bool:
    first, slash, _ = glob.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def check_globs(globs: Sequence[str]) -> None:
    """Raise GlobError for a GLOB argument that is neither an image nor a repository glob."""
    for glob in globs:
        if _is_image_glob(glob):
            validate_glob(glob)
        else:
            validate_repository_glob(glob)


def selects(globs: Sequence[str], registry: RegistryConfig, repository: str) -> bool:
    """True if no GLOB was given, or one selects the repository.

    A GLOB naming a registry host (``127.0.0.1:5000/acme/**``) is an image glob, matched as
    policies match; anything else (``acme/*``) is a repository glob, as in the config.
    """
    if not globs:
        return True
    for glob in globs:
        if _is_image_glob(glob):
            if glob_matches(glob, ImageReference(registry.host, repository)):
                return True
        elif repository_glob_matches(glob, repository, docker_hub=registry.host == DOCKER_HUB):
            return True
    return False


def reusable(prior: StoredVerdict | None, hashes: dict[str, str], fingerprint: str) -> bool:
    """May a stored verdict stand in for verifying again?"""
    return (
        prior is not None
        and prior.final
        and prior.verdict not in (Verdict.ERROR, Verdict.PENDING)
        and prior.trust_fingerprint == fingerprint
        and prior.policy_hashes == hashes
    )


@dataclass
class ScanReport:
    """What a scan found: verdicts, coverage, and what it cost."""

    images: list[dict[str, Any]] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    totals: Coverage = field(default_factory=lambda: Coverage(None, None))
    checked: int = 0  # digests whose material was fetched and verified in this run
    reused: int = 0  # digests whose stored verdict was still valid
    tags: int = 0  # tags HEADed, signature artifact tags included
    repositories: int = 0
    events: int = 0  # push events recorded (new or moved tags)
    findings: list[Sighting] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what could not be enumerated
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 all verified (or no policy), 1 some fail, 3 something could not be decided."""
        if self.errors or any(i["verdict"] == Verdict.ERROR for i in self.images):
            return 3
        return 1 if any(Verdict(i["verdict"]).failing for i in self.images) else 0

    def to_json(self) -> dict[str, Any]:
        """The one JSON document of ``scan --output json``."""
        return {
            "images": self.images,
            "coverage": [row.to_json() for row in self.coverage],
            "totals": self.totals.to_json(),
            "findings": [
                {
                    "registry": f.registry,
                    "repository": f.repository,
                    "digest": f.digest,
                    "kind": "new_signer",
                    **f.signer.to_json(),
                }
                for f in self.findings
            ],
            "scan": {
                "repositories": self.repositories,
                "tags": self.tags,
                "checked": self.checked,
                "reused": self.reused,
                "events": self.events,
                "seconds": round(self.seconds, 3),
                "errors": self.errors,
            },
        }


class Scanner:
    """One scan run over the configured registries."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        store: SqliteStore,
        *,
        recheck: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.recheck = recheck
        self.progress: Progress = progress or _Quiet()
        self.report = ScanReport()
        self.sinks = [a.name for a in config.alerts]

    async def run(self, globs: Sequence[str] = ()) -> ScanReport:
        """Enumerate, verify what needs it, record, and count."""
        started = time.perf_counter()
        await asyncio.gather(*(self._registry(r, globs) for r in self.config.registries))
        report = self.report
        report.images.sort(key=lambda i: (i["registry"], i["repository"], i["tags"], i["digest"]))
        report.coverage, report.totals = coverage_of(
            (i["registry"], i["repository"], i["verdict"], len(i["tags"])) for i in report.images
        )
        report.seconds = time.perf_counter() - started
        log.info(
            "scan_done",
            repositories=report.repositories,
            tags=report.tags,
            checked=report.checked,
            reused=report.reused,
            seconds=round(report.seconds, 3),
        )
        return report

    async def _registry(self, registry: RegistryConfig, globs: Sequence[str]) -> None:
        client = await self.engine.client_named(registry)
        try:
            names = await watched_repositories(registry, client)
        except RegistryError as exc:
            self.report.errors.append(f"{registry.name}: cannot list repositories: {exc}")
            return
        repositories = [r for r in names if selects(globs, registry, r)]
        with_history = await self.store.repositories_with_signers(registry.name)
        gate = asyncio.Semaphore(registry.max_concurrency)
        await asyncio.gather(
            *(self._repository(registry, client, r, r in with_history, gate) for r in repositories)
        )

    async def _record(self, events: list[PushEvent]) -> None:
        """One transaction per repository: a first scan is not one fsync per tag."""
        if not events:
            return
        new = await self.store.record_events(events, utcnow())
        self.report.events += new
        self.engine.metrics.push_events.labels(
            registry=events[0].registry, repository=events[0].repository, source=str(SOURCE)
        ).inc(new)

    async def _repository(
        self,
        registry: RegistryConfig,
        client: RegistryClient,
        repository: str,
        has_history: bool,
        gate: asyncio.Semaphore,
    ) -> None:
        events: list[PushEvent] = []

        async def collect(event: PushEvent) -> bool:
            events.append(event)
            return True

        try:
            state = await sync_repository(registry, client, self.store, collect, repository, SOURCE)
        except RegistryError as exc:
            self.report.errors.append(f"{registry.name}/{repository}: {exc}")
            return
        await self._record(events)
        self.report.repositories += 1
        self.report.tags += len(state.heads)
        images: dict[Digest, list[str]] = {}
        heads: dict[Digest, ManifestHead] = {}
        stale: set[Digest] = set()
        for tag, head in state.heads.items():
            if is_attachment_tag(tag):
                subject = attachment_subject(tag)
                if subject is not None and tag in state.changed:
                    stale.add(subject)
                continue
            images.setdefault(head.digest, []).append(tag)
            heads[head.digest] = head
        self.progress.found(len(images))
        prior = await self.store.latest_verdicts(registry.name, repository)
        results = await asyncio.gather(
            *(
                self._digest(
                    registry,
                    client,
                    repository,
                    digest,
                    sorted(tags),
                    heads[digest],
                    None if digest in stale else prior.get(digest),
                    gate,
                )
                for digest, tags in images.items()
            )
        )
        docs = [doc for doc, _ in results]
        self.report.images.extend(docs)
        checked = [c for _, c in results if c is not None]
        sightings = [s for doc in docs for s in sightings_for(doc, self.sinks)]
        if checked or sightings:
            found = await self.store.record_checked(
                checked,
                sightings,
                utcnow(),
                source=str(SOURCE),
                trust_fingerprint=self.engine.trust.fingerprint,
                drift=has_history,
            )
            self.report.findings.extend(found)

    async def _digest(
        self,
        registry: RegistryConfig,
        client: RegistryClient,
        repository: str,
        digest: Digest,
        tags: list[str],
        head: ManifestHead,
        prior: StoredVerdict | None,
        gate: asyncio.Semaphore,
    ) -> tuple[dict[str, Any], Checked | None]:
        """The digest's verdict document, and the verdict to record if it was verified now."""
        ref = ImageReference(registry.host, repository, None, digest)
        policies = self.config.policies_for(ref, tags)
        hashes = {p.name: p.spec_hash for p in policies}
        if not self.recheck and reusable(prior, hashes, self.engine.trust.fingerprint):
            assert prior is not None
            self.report.reused += 1
            self.progress.done()
            return {**contract_doc(prior.doc), "tags": tags}, None
        index = head.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)
        notes = ("multi-arch index: its signature covers its platform manifests",) if index else ()
        target = Target(registry.name, registry.host, repository)
        async with gate:
            verdict = await self.engine.verify_digest(
                target, client, digest, tuple(tags), policies, notes
            )
        self.report.checked += 1
        for result in verdict.policies or ():
            self.engine.metrics.verdicts.labels(
                registry=registry.name,
                repository=repository,
                policy=result.name,
                verdict=str(result.verdict),
            ).inc()
        self.progress.done()
        if verdict.error:
            return verdict.to_json(), None
        return verdict.to_json(), (verdict, "index" if index else "image", head.media_type)


class RichProgress:
    """A rich progress bar on stderr with images/s and ETA; only used on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar
        from rich.progress import Task as RichTask
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task: RichTask) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.1f} images/s" if speed else "- images/s")

        self._bar = RichBar(
            SpinnerColumn(),
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            Speed(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._task = self._bar.add_task("scan", total=0)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def found(self, images: int) -> None:
        """The total grows as repositories are listed."""
        task = self._bar.tasks[0]
        self._bar.update(self._task, total=(task.total or 0) + images)

    def done(self, images: int = 1) -> None:
        """Advance the bar."""
        self._bar.advance(self._task, images)


def render_text(report: ScanReport, *, width: int | None = None) -> str:
    """The human-readable scan: images that are not verified, then the coverage table."""
    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(width=width or 160, file=out, force_terminal=False, color_system=None)
    for image in report.images:
        if image["verdict"] in (Verdict.VERIFIED, Verdict.NO_POLICY):
            continue
        tags = ",".join(image["tags"]) or "(untagged)"
        console.print(f"{image['verdict']:<20} {image['image']}  tags: {tags}", markup=False)
    for finding in report.findings:
        console.print(
            f"{'new signer':<20} {finding.registry}/{finding.repository}@{finding.digest}:"
            f" {finding.signer.describe()}",
            markup=False,
        )
    table = Table(title="Signing coverage (verdict columns count digests; ratio = verified tags)")
    columns = (
        ("registry", "registry"),
        ("repository", "repository"),
        ("tags", "tags"),
        ("digests", "digests"),
        ("verified", "verified"),
        ("pending", "pending"),
        ("unsigned", "unsigned"),
        ("unexpected", "unexpected_signer"),
        ("invalid", "invalid_signature"),
        ("missing att.", "missing_attestation"),
        ("error", "error"),
        ("no policy", "no_policy"),
        ("ratio", "ratio"),
    )
    for title, _ in columns:
        table.add_column(title, justify="left" if title in ("registry", "repository") else "right")
    for row in [*report.coverage, report.totals]:
        doc = row.to_json()
        cells = []
        for _, key in columns:
            value = doc[key]
            if key == "ratio":
                cells.append("-" if value is None else f"{value:.1%}")
            elif value is None:
                cells.append("total" if key == "registry" else "")
            else:
                cells.append(str(value))
        table.add_row(*cells, end_section=row is report.coverage[-1] if report.coverage else False)
    console.print(table)
    rate = report.checked / report.seconds if report.seconds else 0.0
    console.print(
        f"{report.repositories} repositories, {report.tags} tags, {report.totals.digests} images:"
        f" {report.checked} checked now, {report.reused} unchanged since the last check,"
        f" in {report.seconds:.1f}s ({rate:.1f} images/s)",
        markup=False,
    )
    for error in report.errors:
        console.print(f"error: {error}", markup=False)
    return out.getvalue()


__all__ = ["RichProgress", "ScanReport", "Scanner", "check_globs", "render_text"]
