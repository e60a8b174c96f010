"""Learning about pushes by polling the OCI distribution API, for registries without webhooks.

One cycle lists the watched repositories (``_catalog`` filtered by the registry's globs, or
the literal repository names when the catalog is not allowed), lists each repository's tags,
and sends one HEAD per tag to see its digest. Only what changed since the store last saw it
becomes a push event, so a cycle over an unchanged registry costs one HEAD per tag plus the
listings, and nothing is verified again. ``scan`` enumerates through the same two functions
(``watched_repositories``, ``sync_repository``), so what it covers is what polling watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from watcher.config import RegistryConfig
from watcher.events import Action, PushEvent, Source
from watcher.metrics import Metrics
from watcher.registry.client import ManifestHead, RegistryClient
from watcher.registry.errors import AuthError, NotFoundError, RegistryError
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import utcnow

log = structlog.get_logger("watcher.poller")

Record = Callable[[PushEvent], Awaitable[bool]]
_GLOB_CHARS = re.compile(r"[*?\[\]{}]")


async def watched_repositories(registry: RegistryConfig, client: RegistryClient) -> list[str]:
    """Repositories to poll: the catalog filtered by globs, or the globs that name one repo."""
    literal = [g for g in registry.repositories if not _GLOB_CHARS.search(g)]
    try:
        names = await client.catalog()
    except (AuthError, NotFoundError) as exc:
        log.info("catalog_unavailable", registry=registry.name, reason=str(exc))
        return sorted(set(literal))
    return sorted({n for n in names if registry.watches(n)} | set(literal))


async def poll_once(
    registry: RegistryConfig,
    client: RegistryClient,
    store: SqliteStore,
    record: Record,
    metrics: Metrics,
) -> int:
    """One poll cycle; returns how many push events it produced. Raises RegistryError."""
    repositories = await watched_repositories(registry, client)
    states = await asyncio.gather(
        *(sync_repository(registry, client, store, record, r, Source.POLL) for r in repositories)
    )
    metrics.last_poll_success.labels(registry=registry.name).set(utcnow().timestamp())
    total = sum(state.events for state in states)
    log.info("poll_done", registry=registry.name, repositories=len(repositories), changes=total)
    return total


@dataclass(frozen=True)
class RepositoryState:
    """One repository as an enumeration saw it."""

    repository: str
    heads: dict[str, ManifestHead]  # every tag that answered its HEAD, and what it points at
    changed: tuple[str, ...]  # tags new or moved since the store last saw them
    events: int  # push events newly recorded for them


async def sync_repository(
    registry: RegistryConfig,
    client: RegistryClient,
    store: SqliteStore,
    record: Record,
    repository: str,
    source: Source,
) -> RepositoryState:
    """List a repository's tags, HEAD each once, and record what changed as push events.

    Tags the store knows but the registry no longer lists are forgotten (their history
    stays). Costs one listing plus one HEAD per tag; raises RegistryError.
    """
    tags = await client.list_tags(repository)
    known = await store.current_tags(registry.name, repository)
    answers = await asyncio.gather(*(client.head_manifest(repository, t) for t in tags))
    heads = {t: h for t, h in zip(tags, answers, strict=True) if h is not None}
    changed = tuple(t for t, h in heads.items() if known.get(t) != h.digest)
    events = 0
    for tag in changed:
        head = heads[tag]
        events += await record(
            PushEvent(
                registry=registry.name,
                repository=repository,
                digest=head.digest,
                tag=tag,
                action=Action.PUSH,
                source=source,
                media_type=head.media_type,
            )
        )
    now = utcnow()
    for tag in set(known) - set(tags):
        await store.delete_tag(registry.name, repository, tag, now, str(source))
    return RepositoryState(repository, heads, changed, events)


async def poll_forever(
    registry: RegistryConfig,
    client: RegistryClient,
    store: SqliteStore,
    record: Record,
    metrics: Metrics,
    stopping: asyncio.Event,
) -> None:
    """Poll every ``poll_interval`` until ``stopping`` is set; a failed cycle is logged."""
    assert registry.poll_interval is not None
    interval = registry.poll_interval.total_seconds()
    while not stopping.is_set():
        try:
            await poll_once(registry, client, store, record, metrics)
        except RegistryError as exc:
            log.warning("poll_failed", registry=registry.name, reason=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval)
