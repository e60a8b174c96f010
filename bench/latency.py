"""Latency: a registry's webhook received to the final verdict, at steady push rates.

A real docker-registry notifies a real daemon (`python -m watcher run`, its default 4 workers)
and the policy has no grace period. For each rate, ``rate x duration`` fresh signed images are
pushed at an even pace (open loop: a push is started on schedule whether or not earlier ones
finished, so a slow daemon cannot slow the load down and hide its own latency).

Each image's blobs and signatures are uploaded beforehand through a second registry process
that shares the notifying registry's storage but sends no notifications; in the window only
the manifest PUT with the tag — the push event — reaches the notifying registry. So the
signature is there when the push is seen, and the first verdict is the final one. Every window
gets a fresh daemon on a fresh store (so one uploaded set serves every window: to that daemon
each digest is new) and a few warm-up pushes before the clock starts.

Per digest, from the daemon's own store: ``first_seen_at`` (when the webhook was received) and
the first final verdict's ``checked_at`` (taken when the verdict is made, just before it is
written). From the pushing side: when the PUT returned, for push-to-verdict, which includes
the registry's notification queue. Daemon CPU and registry requests come from /proc and
/metrics around each window.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    Lab,
    Section,
    fmt,
    percentile,
    prometheus_sum,
    ratio,
    run_id,
    table,
    write_config,
)
from bench.population import MIX, Fmt, Image, push_many, tag_image, writer
from watcher.config import load_config
from watcher.engine import Engine, Target
from watcher.refs import Digest, ImageReference
from watcher.testing.oci import RegistryWriter
from watcher.testing.registry_server import free_port
from watcher.verify.trust import load_trust

ISOLATED = 12
WARM_UP = 8


def _parse_ts(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def read_outcomes(
    db: Path, repositories: list[str]
) -> dict[str, tuple[float, float | None, str | None]]:
    """digest -> (webhook received, first final verdict made, final verdict), from the store."""
    marks = ",".join("?" for _ in repositories)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT d.digest, d.first_seen_at, d.final_verdict,"
            " (SELECT min(v.checked_at) FROM verdicts v WHERE v.registry=d.registry"
            "  AND v.repository=d.repository AND v.digest=d.digest AND v.final=1)"
            f" FROM digests d WHERE d.registry='bench' AND d.repository IN ({marks})",
            repositories,
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, tuple[float, float | None, str | None]] = {}
    for digest, seen, final, checked in rows:
        seen_at = _parse_ts(seen)
        if seen_at is not None:
            out[digest] = (seen_at, _parse_ts(checked), final)
    return out


async def wait_final(
    db: Path, repositories: list[str], digests: set[str], timeout: float
) -> dict[str, tuple[float, float | None, str | None]]:
    """Poll the store until every digest has a final verdict, or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcomes = await asyncio.to_thread(read_outcomes, db, repositories)
        done = {d for d, (_s, checked, _f) in outcomes.items() if checked is not None}
        if digests <= done or loop.time() > deadline:
            return outcomes
        await asyncio.sleep(0.1)


async def push_window(
    client: RegistryWriter, images: list[Image], rate: float
) -> tuple[dict[str, float], float]:
    """Tag ``images`` at ``rate`` per second, open loop; (digest -> PUT returned, achieved rate)."""
    done: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def push(image: Image) -> None:
        await tag_image(client, image, str(image.tag))
        done[image.digest] = time.time()

    start = loop.time()
    first = time.time()
    tasks: list[asyncio.Task[None]] = []
    for i, image in enumerate(images):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(push(image)))
    await asyncio.gather(*tasks)
    span = max(done.values()) - first if done else 0.0
    achieved = (len(images) - 1) / span if len(images) > 1 and span > 0 else math.nan
    return done, achieved


async def run(lab: Lab, *, rates: list[float], duration: float, repeat: int) -> Section:
    plain = lab.registry()
    daemon_port = free_port()
    secret, secret_file = lab.webhook_secret()
    notifying = lab.notifying_registry(daemon_port, secret)
    namespace = f"lat{run_id()}"
    workdir = lab.dir(namespace)
    section = Section(
        "latency",
        "webhook received to final verdict, steady push rates, no grace period",
        {
            "rates": rates,
            "duration_s": duration,
            "repeat": repeat,
            "daemon_workers": 4,
            "warm_up_images": WARM_UP,
        },
    )

    def config_for(store: Path) -> Path:
        return write_config(
            store.with_suffix(".yaml"),
            registry_url=notifying.url,
            host=notifying.host,
            namespace=namespace,
            store=store,
            trusted_root=lab.trusted_root,
            listen_port=daemon_port,
            webhook_secret_file=secret_file,
        )

    # Uploaded and signed once, beforehand, without notifications. Every window runs a fresh
    # daemon on a fresh store, so it can push the same images again as never-seen digests.
    largest = max(max(2, round(rate * duration)) for rate in rates)
    repos = [f"{namespace}/app-{k}" for k in range(4)]
    specs: list[tuple[str, str | None, Fmt]] = [
        (repos[i % 4], None, MIX[i % len(MIX)]) for i in range(largest)
    ]
    specs += [(f"{namespace}/warm-up", None, MIX[i % len(MIX)]) for i in range(WARM_UP)]
    specs += [(f"{namespace}/isolated", None, MIX[i % len(MIX)]) for i in range(ISOLATED)]
    async with writer(plain.url) as pusher:
        prepared = await push_many(pusher, lab.kit, notifying.host, specs)
    tagged = [
        Image(i.repository, f"v{n}", i.digest, i.fmt, i.seed, i.manifest)
        for n, i in enumerate(prepared)
    ]
    images, warm_up, isolated = (
        tagged[:largest],
        tagged[largest : largest + WARM_UP],
        tagged[largest + WARM_UP :],
    )

    # The floor: one image verified alone (no webhook, queue or store), in this process.
    config = load_config(config_for(workdir / "isolated.db"))
    trust = load_trust(config.trust.trusted_root, config.state_dir)
    reg = config.registries[0]
    async with Engine(config, trust) as engine:
        client = await engine.client_named(reg)
        for _ in range(repeat):
            alone: list[float] = []
            for image in isolated:
                digest = Digest(image.digest)
                started = time.perf_counter()
                await engine.verify_digest(
                    Target(reg.name, reg.host, image.repository),
                    client,
                    digest,
                    (),
                    config.policies_for(ImageReference(reg.host, image.repository, None, digest)),
                )
                alone.append((time.perf_counter() - started) * 1000)
            section.add("isolated_verification_ms", "ms", percentile(alone, 50))

    verdicts: Counter[str] = Counter()
    async with writer(notifying.url) as pusher:
        for r in range(repeat):
            for rate in rates:
                key = f"at_{rate:g}"
                window = images[: max(2, round(rate * duration))]
                store = workdir / f"run{r}-at{rate:g}.db"
                daemon = lab.daemon(config_for(store), daemon_port, store.stem)
                daemon.wait_ready()
                # Warm-up (not measured): first-use imports and caches in the fresh daemon.
                await push_window(pusher, warm_up, 50.0)
                await wait_final(store, [f"{namespace}/warm-up"], {i.digest for i in warm_up}, 60)
                before = daemon.metrics()
                cpu_before = daemon.cpu_seconds()
                put_done, achieved = await push_window(pusher, window, rate)
                wanted = {i.digest for i in window}
                outcomes = await wait_final(store, repos, wanted, timeout=120 + 10 * duration)
                after = daemon.metrics()
                cpu = daemon.cpu_seconds() - cpu_before
                daemon.stop()
                latencies, push_to_verdict, notify = [], [], []
                for wanted_digest in wanted:
                    seen, checked, final = outcomes.get(wanted_digest, (math.nan, None, None))
                    verdicts[str(final)] += 1
                    if checked is None:
                        continue
                    latencies.append((checked - seen) * 1000)
                    push_to_verdict.append((checked - put_done[wanted_digest]) * 1000)
                    notify.append((seen - put_done[wanted_digest]) * 1000)
                requests = prometheus_sum(
                    after, "watcher_registry_requests_total"
                ) - prometheus_sum(before, "watcher_registry_requests_total")
                section.add(f"{key}_achieved_rate", "pushes/s", achieved)
                section.add(f"{key}_p50_ms", "ms", percentile(latencies, 50))
                section.add(f"{key}_p95_ms", "ms", percentile(latencies, 95))
                section.add(f"{key}_p99_ms", "ms", percentile(latencies, 99))
                section.add(f"{key}_push_to_verdict_p50_ms", "ms", percentile(push_to_verdict, 50))
                section.add(f"{key}_push_to_verdict_p99_ms", "ms", percentile(push_to_verdict, 99))
                section.add(f"{key}_notification_delay_p50_ms", "ms", percentile(notify, 50))
                section.add(f"{key}_unfinished", "images", len(wanted) - len(latencies))
                section.add(f"{key}_daemon_cpu_ms_per_image", "ms", cpu * 1000 / len(wanted))
                section.add(f"{key}_daemon_requests_per_image", "requests", requests / len(wanted))
    rows = []
    for rate in rates:
        key = f"at_{rate:g}"
        count = max(2, round(rate * duration))
        rows.append(
            [
                f"{rate:g}",
                fmt(section.med(f"{key}_achieved_rate")),
                count,
                fmt(section.med(f"{key}_p50_ms"), 0),
                fmt(section.med(f"{key}_p95_ms"), 0),
                fmt(section.med(f"{key}_p99_ms"), 0),
                fmt(section.med(f"{key}_push_to_verdict_p50_ms"), 0),
                fmt(section.med(f"{key}_push_to_verdict_p99_ms"), 0),
                fmt(section.med(f"{key}_daemon_cpu_ms_per_image"), 1),
                fmt(section.med(f"{key}_daemon_requests_per_image"), 1),
                fmt(section.med(f"{key}_unfinished"), 0),
            ]
        )
        section.ratios[f"p50 at {rate:g}/s ÷ isolated verification"] = ratio(
            section.med(f"{key}_p50_ms"), section.med("isolated_verification_ms")
        )
    section.tables.append(
        table(
            [
                "pushes/s",
                "achieved",
                "images",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "push→verdict p50",
                "p99",
                "daemon CPU ms/img",
                "req/img",
                "unfinished",
            ],
            rows,
        )
    )
    section.tables.append(
        table(
            ["floor (median of the sample)", "ms"],
            [
                [
                    f"one image verified alone (Engine, no queue or store; p50 of {ISOLATED})",
                    fmt(section.med("isolated_verification_ms"), 1),
                ]
            ],
        )
    )
    section.details["verdicts"] = dict(verdicts)
    if set(verdicts) != {"verified"}:
        section.problems.append(f"not every image ended verified: {dict(verdicts)}")
    section.notes.append(
        f"medians over {repeat} run(s) of each rate's p50/p95/p99; p-values are over webhook "
        "received → verdict made (the store's own timestamps); push→verdict adds the "
        "registry's notification queue"
    )
    return section
