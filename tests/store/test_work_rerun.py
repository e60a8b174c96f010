"""A re-check asked for while its digest is being verified is not lost.

A signature pushed while a worker verifies the image used to arrive as a re-check of an item
that was claimed (still 'queued'), and finishing the item marked it done: the re-check was
lost and the image stayed unsigned until something else happened to it.
"""

from __future__ import annotations

from pathlib import Path

from watcher.refs import Digest
from watcher.store.base import Enqueue
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import utcnow

D = Digest("sha256:" + "3" * 64)


async def test_recheck_during_verification_runs_again(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.enqueue("local", "acme/app", Enqueue(D, now, "pushed as v1"))
    item = await store.claim("w1", now, 60)
    assert item is not None and item.ref == D
    await store.enqueue("local", "acme/app", Enqueue(D, now, "signature pushed", recheck=True))
    assert await store.claim("w2", now, 60) is None  # in flight: not handed out twice
    assert await store.finish(item, now, verdict=None, final=True, next_due=None, source="t")
    again = await store.claim("w2", utcnow(), 60)
    assert again is not None and again.ref == D and again.attempts == 1
    assert await store.finish(again, utcnow(), verdict=None, final=True, next_due=None, source="t")
    assert await store.claim("w3", utcnow(), 60) is None  # once, not forever
    await store.close()


async def test_plain_push_during_verification_does_not_rerun(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.enqueue("local", "acme/app", Enqueue(D, now, "pushed as v1"))
    item = await store.claim("w1", now, 60)
    assert item is not None
    await store.enqueue("local", "acme/app", Enqueue(D, now, "pushed as v2"))
    assert await store.finish(item, now, verdict=None, final=True, next_due=None, source="t")
    assert await store.claim("w2", utcnow(), 60) is None
    await store.close()
