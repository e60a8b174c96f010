"""The SQLite store: migrations, redelivery, tag history, leases, verdict+alert atomicity."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from watcher.events import Action, PushEvent, Source
from watcher.refs import Digest
from watcher.store.base import Enqueue, OutboxAlert
from watcher.store.schema import MIGRATIONS
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import ImageVerdict, Mode, PolicyResult, Verdict, utcnow

D1 = Digest("sha256:" + "1" * 64)
D2 = Digest("sha256:" + "2" * 64)


def event(
    digest: Digest | None = D1,
    tag: str | None = "v1",
    event_id: str | None = "e1",
    action: Action = Action.PUSH,
) -> PushEvent:
    return PushEvent("local", "acme/app", digest, tag, action, Source.WEBHOOK, event_id)


async def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    assert await store.schema_version() == MIGRATIONS[-1][0]
    await store.close()
    again = await SqliteStore.open(tmp_path / "w.db")  # re-opening applies nothing twice
    assert await again.schema_version() == MIGRATIONS[-1][0]
    await again.close()
    conn = sqlite3.connect(tmp_path / "w.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


async def test_redelivery_is_deduplicated_by_event_id(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    assert await store.record_event(event(), now, [Enqueue(D1, now, "push")])
    assert not await store.record_event(event(), now, [Enqueue(D1, now, "push")])
    assert await store.queue_depth() == 1
    # Without an id, a second push of the same digest is stored but queues nothing new.
    assert await store.record_event(event(event_id=None), now, [Enqueue(D1, now, "push")])
    assert await store.queue_depth() == 1
    await store.close()


async def test_tag_history_and_delete(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.record_event(event(D1, "latest", "a"), now, [])
    await store.record_event(event(D2, "latest", "b"), now + timedelta(seconds=1), [])
    assert await store.current_tags("local", "acme/app") == {"latest": D2}
    history = await store.history(D2)
    assert [(t["tag"], t["previous_digest"]) for t in history["tags"]] == [("latest", D1)]
    await store.record_event(event(D2, None, "c", Action.DELETE), now + timedelta(seconds=2), [])
    assert await store.current_tags("local", "acme/app") == {}
    record = await store.digest("local", "acme/app", D2)
    assert record is not None and record.deleted_at is not None
    assert [t["digest"] for t in (await store.history(D2))["tags"]] == [D2, None]
    await store.close()


async def test_lease_expiry_and_lost_lease(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.enqueue("local", "acme/app", Enqueue(D1, now, "push"))
    a = await store.claim("a", now, lease_seconds=10)
    assert a is not None and a.attempts == 1
    assert await store.claim("b", now + timedelta(seconds=5), 10) is None  # still leased
    b = await store.claim("b", now + timedelta(seconds=11), 10)  # a died; the lease expired
    assert b is not None and b.attempts == 2
    assert not await store.finish(a, now, verdict=None, final=False, next_due=None, source="t")
    assert await store.finish(b, now, verdict=None, final=False, next_due=None, source="t")
    assert await store.queue_depth() == 0
    await store.close()


async def test_verdict_and_alerts_in_one_transaction_and_never_twice(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.record_event(event(), now, [Enqueue(D1, now, "push")])
    verdict = ImageVerdict(
        "local",
        "r.test",
        "acme/app",
        D1,
        ("v1",),
        (PolicyResult("p", Verdict.UNSIGNED, Mode.ENFORCE),),
    )
    alert = OutboxAlert(
        "am|x",
        "am",
        "ImageUnsigned",
        "local",
        "acme/app",
        D1,
        "p",
        "unsigned",
        "critical",
        {"labels": {}},
    )
    for _ in range(2):  # the same final verdict reached twice (e.g. after a restart)
        await store.enqueue("local", "acme/app", Enqueue(D1, now, "again", recheck=True))
        item = await store.claim("w", now, 10)
        assert item is not None
        assert await store.finish(
            item, now, verdict=verdict, final=True, next_due=None, source="webhook", alerts=[alert]
        )
    due = await store.due_alerts(now, 10)
    assert len(due) == 1 and due[0][1].alertname == "ImageUnsigned"
    record = await store.digest("local", "acme/app", D1)
    assert record is not None and record.final_verdict == "unsigned"
    await store.alert_failed(due[0][0], now, now + timedelta(seconds=30), "down")
    assert await store.due_alerts(now, 10) == []
    assert len(await store.due_alerts(now + timedelta(seconds=31), 10)) == 1
    await store.close()


async def test_error_budget_is_counted_apart_from_grace_rechecks(tmp_path: Path) -> None:
    """Many pending re-checks must not use up the retries a registry failure gets."""
    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    await store.enqueue("local", "acme/app", Enqueue(D1, now, "push"))
    for _ in range(10):  # grace re-checks
        item = await store.claim("w", now, 10)
        assert item is not None
        await store.finish(item, now, verdict=None, final=False, next_due=now, source="t")
    item = await store.claim("w", now, 10)
    assert item is not None and item.attempts == 11 and item.errors == 0
    await store.finish(item, now, verdict=None, final=False, next_due=now, source="t", failed=True)
    item = await store.claim("w", now, 10)
    assert item is not None and item.errors == 1
    await store.finish(item, now, verdict=None, final=False, next_due=now, source="t")
    item = await store.claim("w", now, 10)
    assert item is not None and item.errors == 0  # a success resets the count
    await store.close()


async def test_the_same_tag_pushed_again_is_resolved_again(tmp_path: Path) -> None:
    """Docker Hub and Quay name only a tag: each push of it must be looked at."""
    from watcher.daemon.intake import plan

    store = await SqliteStore.open(tmp_path / "w.db")
    now = utcnow()
    for n in range(2):
        ev = PushEvent("hub", "library/app", None, "latest", Action.PUSH, Source.WEBHOOK, None)
        assert await store.record_event(ev, now + timedelta(seconds=n), plan(ev, now))
        item = await store.claim("w", now + timedelta(seconds=n), 10)
        assert item is not None and item.tag == "latest", n
        await store.finish(item, now, verdict=None, final=False, next_due=None, source="t")
    await store.close()
