"""Durable state: events, digests, tags and their history, the work queue, verdicts, alerts."""

from __future__ import annotations

from urllib.parse import urlsplit

from watcher.store.base import Store
from watcher.store.inventory import StoreMissing, StoreOutdated
from watcher.store.sqlite import SqliteStore


class StoreUnavailable(Exception):
    """The configured store cannot be opened."""


async def open_store(url: str, *, readonly: bool = False) -> SqliteStore:
    """Open the store a config's ``store.url`` names (``readonly``: never write to it)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return await SqliteStore.open(parts.path, readonly=readonly)
    raise StoreUnavailable(
        f"store {parts.scheme}:// is not available in this build yet; use sqlite:///path.db"
    )


__all__ = [
    "SqliteStore",
    "Store",
    "StoreMissing",
    "StoreOutdated",
    "StoreUnavailable",
    "open_store",
]
