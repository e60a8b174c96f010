"""Durable state: events, digests, tags and their history, the work queue, verdicts, alerts."""

from __future__ import annotations

from urllib.parse import urlsplit

from watcher.store.base import Store
from watcher.store.sqlite import SqliteStore


class StoreUnavailable(Exception):
    """The configured store cannot be opened."""


async def open_store(url: str) -> SqliteStore:
    """Open the store a config's ``store.url`` names."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return await SqliteStore.open(parts.path)
    raise StoreUnavailable(
        f"store {parts.scheme}:// is not available in this build yet; use sqlite:///path.db"
    )


__all__ = ["SqliteStore", "Store", "StoreUnavailable", "open_store"]
