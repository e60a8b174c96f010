"""Poll cost: one poll cycle over R repositories x T tags, with nothing changed and with 1% changed.

The cycle is the daemon's own (``watcher.sources.poller.poll_once`` through the registry's
client, recording into a real SQLite store what the daemon records). The store is primed by a
first, untimed cycle. "Changed" moves that share of tags to freshly pushed images just before
the timed cycle, so each one is a push event the cycle must find and record (and enqueue for
verification, which is not part of the cycle).

Baselines: the minimum requests, 1 catalog + R tag lists + R x T HEADs (the distribution API
has no way to learn a tag's digest without asking for that tag), and the floor: those same
requests through a bare aiohttp session at the same concurrency, with no store.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from bench.common import (
    Lab,
    Section,
    fmt,
    metrics_text,
    prometheus_sum,
    ratio,
    run_id,
    table,
    write_config,
)
from bench.floor import BareHttp
from bench.population import Fmt, Image, push_many, tag_image, writer
from watcher.config import DEFAULT_MAX_CONCURRENCY, load_config
from watcher.daemon.intake import plan
from watcher.engine import Engine
from watcher.events import PushEvent
from watcher.metrics import Metrics
from watcher.registry.client import MANIFEST_ACCEPT
from watcher.sources.poller import poll_once
from watcher.store import open_store
from watcher.verdicts import utcnow
from watcher.verify.trust import load_trust


async def floor_cycle(base_url: str, namespace: str, concurrency: int) -> tuple[float, int]:
    """Catalog, tag lists and one HEAD per tag through a bare session; (seconds, requests)."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        http = BareHttp(base_url, session, concurrency)
        _s, body, _h = await http.get("/v2/_catalog")
        repos = [r for r in json.loads(body)["repositories"] if r.startswith(namespace + "/")]

        async def repository(repo: str) -> None:
            _s, raw, _h = await http.get(f"/v2/{repo}/tags/list")
            tags = json.loads(raw).get("tags") or []
            await asyncio.gather(
                *(http.head(f"/v2/{repo}/manifests/{t}", MANIFEST_ACCEPT) for t in tags)
            )

        await asyncio.gather(*(repository(r) for r in repos))
        return time.perf_counter() - started, http.requests


async def run(lab: Lab, *, repos: int, tags: int, changed_percent: float, repeat: int) -> Section:
    registry = lab.registry()
    namespace = f"poll{run_id()}"
    total_tags = repos * tags
    per_cycle = max(1, round(total_tags * changed_percent / 100))
    async with writer(registry.url) as pusher:
        host = pusher.host
        bases = await push_many(
            pusher,
            lab.kit,
            host,
            [(f"{namespace}/r{i:03d}", None, Fmt.UNSIGNED) for i in range(repos)],
        )
        for base in bases:
            await asyncio.gather(*(tag_image(pusher, base, f"t{j:03d}") for j in range(tags)))
        # Fresh images for every changed cycle, pushed by digest now, tagged just before it.
        spares = await push_many(
            pusher,
            lab.kit,
            host,
            [
                (f"{namespace}/r{(k * 7) % repos:03d}", None, Fmt.UNSIGNED)
                for k in range(per_cycle * repeat)
            ],
        )
    workdir = lab.dir(namespace)
    config = load_config(
        write_config(
            workdir / "config.yaml",
            registry_url=registry.url,
            host=host,
            namespace=namespace,
            store=workdir / "watcher.db",
            trusted_root=lab.trusted_root,
            poll_interval="60s",
        )
    )
    reg = config.registries[0]
    trust = load_trust(config.trust.trusted_root, config.state_dir)
    store = await open_store(config.store.url)
    metrics = Metrics()
    section = Section(
        "poll",
        f"one poll cycle over {repos} repositories x {tags} tags",
        {
            "repositories": repos,
            "tags_per_repository": tags,
            "changed_percent": changed_percent,
            "changed_tags_per_cycle": per_cycle,
            "repeat": repeat,
            "concurrency": reg.max_concurrency,
        },
    )
    minimum = 1 + repos + total_tags

    async def record(event: PushEvent) -> bool:
        now = utcnow()
        return await store.record_event(event, now, plan(event, now))

    try:
        async with Engine(config, trust, metrics) as engine:
            client = await engine.client_named(reg)

            async def cycle() -> tuple[float, float, int]:
                before = prometheus_sum(metrics_text(metrics), "watcher_registry_requests_total")
                started = time.perf_counter()
                events = await poll_once(reg, client, store, record, metrics)
                seconds = time.perf_counter() - started
                after = prometheus_sum(metrics_text(metrics), "watcher_registry_requests_total")
                return seconds, after - before, events

            _s, _r, primed = await cycle()  # untimed: the store learns every tag
            section.details["priming_cycle_events"] = primed
            async with writer(registry.url) as pusher:
                for r in range(repeat):
                    seconds, requests, events = await cycle()
                    section.add("unchanged_seconds", "s", seconds)
                    section.add("unchanged_requests", "requests", requests)
                    section.add("unchanged_events", "events", events)
                    moved = spares[r * per_cycle : (r + 1) * per_cycle]
                    for k, spare in enumerate(moved):
                        tag = f"t{(r * per_cycle + k) % tags:03d}"
                        await tag_image(pusher, Image(**{**spare.__dict__, "tag": tag}), tag)
                    seconds, requests, events = await cycle()
                    section.add("changed_seconds", "s", seconds)
                    section.add("changed_requests", "requests", requests)
                    section.add("changed_events", "events", events)
                    fs, freq = await floor_cycle(
                        registry.url, namespace, reg.max_concurrency or DEFAULT_MAX_CONCURRENCY
                    )
                    section.add("floor_seconds", "s", fs)
                    section.add("floor_requests", "requests", freq)
    finally:
        await store.close()
    section.add("minimum_requests", "requests", minimum)
    rows: list[list[object]] = [
        [
            "watcher, nothing changed",
            fmt(section.med("unchanged_seconds") * 1000, 0),
            fmt(section.med("unchanged_requests"), 0),
            fmt(section.med("unchanged_events"), 0),
        ],
        [
            f"watcher, {changed_percent:g}% changed ({per_cycle} tags)",
            fmt(section.med("changed_seconds") * 1000, 0),
            fmt(section.med("changed_requests"), 0),
            fmt(section.med("changed_events"), 0),
        ],
        [
            "floor: same requests, bare aiohttp, no store",
            fmt(section.med("floor_seconds") * 1000, 0),
            fmt(section.med("floor_requests"), 0),
            "-",
        ],
        ["minimum requests (1 + R + R x T)", "-", minimum, "-"],
    ]
    section.tables.append(
        table([f"cycle (median of {repeat})", "ms", "requests", "push events"], rows)
    )
    section.ratios = {
        "unchanged: watcher/floor, seconds": ratio(
            section.med("unchanged_seconds"), section.med("floor_seconds")
        ),
        "changed: watcher/floor, seconds": ratio(
            section.med("changed_seconds"), section.med("floor_seconds")
        ),
        "unchanged: requests/minimum": ratio(section.med("unchanged_requests"), minimum),
        "changed: requests/minimum": ratio(section.med("changed_requests"), minimum),
    }
    if section.med("changed_events") != per_cycle:
        section.problems.append(
            f"a changed cycle recorded {section.med('changed_events'):g} events, "
            f"expected {per_cycle}"
        )
    if section.med("unchanged_events") != 0:
        section.problems.append("an unchanged cycle recorded push events")
    return section
