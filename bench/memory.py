"""Memory: the daemon's RSS with 10k and 100k digests tracked, and its growth over a soak.

Stores are pre-filled by direct SQL inserts into the daemon's own schema (created by the
store's migrations): per digest one push event, one digest row, one tag and its history, and
one final verdict document in the contract's shape; 100 digests per repository, one signer
per repository. Then ``python -m watcher run`` starts on that store, and RSS (VmRSS) and peak
RSS (VmHWM) are read from /proc once it is ready and its first gauge refresh — which reads
coverage over every tag — has been published. An empty store is the baseline.

The soak then runs a daemon (on a copy of the smallest pre-filled store) fed by a real
registry's notifications at a steady push rate of freshly signed images, sampling RSS every
second: growth, and its slope over the second half (after warm-up allocations settle).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from bench.common import (
    ACME,
    GH,
    BenchUnavailable,
    DaemonProcess,
    Lab,
    Section,
    fmt,
    http_get,
    poll_until,
    ratio,
    run_id,
    table,
    write_config,
)
from bench.latency import wait_final
from bench.population import MIX, Image, push_one, tag_image, writer
from watcher.store import open_store
from watcher.store.base import ts
from watcher.testing.registry_server import free_port

PER_REPOSITORY = 100


def _digest(n: int) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(f"bench-memory-{n}".encode()).hexdigest()


async def build_store(path: Path, size: int, host: str) -> None:
    """A store holding ``size`` digests with their events, tags and final verdicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = await open_store(f"sqlite:///{path}")  # creates and migrates the schema
    await store.close()
    if size == 0:
        return
    base = datetime.now(UTC) - timedelta(days=30)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        events, digests, tags, history, verdicts = [], [], [], [], []
        for n in range(size):
            repo = f"mem/r{n // PER_REPOSITORY:05d}"
            digest = _digest(n)
            at = ts(base + timedelta(seconds=n))
            tag = f"v{n % PER_REPOSITORY}"
            doc = {
                "image": f"{host}/{repo}@{digest}",
                "registry": "bench",
                "repository": repo,
                "digest": digest,
                "tags": [tag],
                "policy": "bench-release",
                "verdict": "verified",
                "severity": "none",
                "checked_at": at[:19] + "Z",
                "policies": [{"name": "bench-release", "verdict": "verified", "mode": "enforce"}],
                "signatures": [
                    {
                        "format": "bundle",
                        "valid": True,
                        "authority": "acme-release",
                        "issuer": GH,
                        "subject": ACME,
                        "key_id": None,
                        "tlog": {"log_index": n, "integrated_time": 1_700_000_000 + n},
                        "error": None,
                    }
                ],
                "attestations": [],
                "extra_signers": [],
                "reasons": ["registry has no referrers API; read fallback tag"],
                "final": True,
                "policy_hashes": {"bench-release": "0" * 64},
            }
            events.append(("bench", repo, digest, tag, "push", "webhook", f"ev-{n}", at, at))
            digests.append(("bench", repo, digest, at, "webhook", "image", at, "verified", at))
            tags.append(("bench", repo, tag, digest, at))
            history.append(("bench", repo, tag, digest, at, "webhook"))
            verdicts.append(
                ("bench", repo, digest, at, "verified", 1, "webhook", "{}", "", json.dumps(doc))
            )
        conn.executemany(
            "INSERT INTO events (registry, repository, digest, tag, action, source, event_id,"
            " occurred_at, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
            events,
        )
        conn.executemany(
            "INSERT INTO digests (registry, repository, digest, first_seen_at, first_source,"
            " kind, first_signature_at, final_verdict, final_at) VALUES (?,?,?,?,?,?,?,?,?)",
            digests,
        )
        conn.executemany(
            "INSERT INTO tags (registry, repository, tag, digest, updated_at) VALUES (?,?,?,?,?)",
            tags,
        )
        conn.executemany(
            "INSERT INTO tag_history (registry, repository, tag, digest, at, source)"
            " VALUES (?,?,?,?,?,?)",
            history,
        )
        conn.executemany(
            "INSERT INTO verdicts (registry, repository, digest, checked_at, verdict, final,"
            " source, policy_hashes, trust_fingerprint, doc) VALUES (?,?,?,?,?,?,?,?,?,?)",
            verdicts,
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "signers" in tables:  # signer history, where the schema has it
            conn.executemany(
                "INSERT INTO signers (registry, repository, issuer, subject, first_seen_at,"
                " first_digest, source) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        "bench",
                        f"mem/r{r:05d}",
                        GH,
                        ACME,
                        ts(base),
                        _digest(r * PER_REPOSITORY),
                        "scan",
                    )
                    for r in range(math.ceil(size / PER_REPOSITORY))
                ],
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _gauges_published(daemon: DaemonProcess) -> bool:
    status, body = http_get(daemon.base + "/metrics")
    return status == 200 and b"watcher_pending_digests{" in body


async def soak(lab: Lab, section: Section, store: Path, minutes: float, rate: float) -> None:
    """Feed a daemon at ``rate`` pushes/s for ``minutes``, sampling its RSS every second."""
    plain = lab.registry()
    port = free_port()
    secret, secret_file = lab.webhook_secret()
    notifying = lab.notifying_registry(port, secret)
    namespace = f"soak{run_id()}"
    config = write_config(
        store.with_suffix(".yaml"),
        registry_url=notifying.url,
        host=notifying.host,
        namespace=namespace,
        store=store,
        trusted_root=lab.trusted_root,
        listen_port=port,
        webhook_secret_file=secret_file,
    )
    daemon = lab.daemon(config, port, namespace)
    daemon.wait_ready()
    pushed: list[Image] = []
    counter = 0

    async with writer(plain.url) as up, writer(notifying.url) as notify:

        async def one(repo: str) -> None:
            nonlocal counter
            counter += 1
            fmt_ = MIX[counter % len(MIX)]
            image = await push_one(up, lab.kit, notifying.host, repo, None, fmt_)
            tag = f"v{counter}"
            await tag_image(notify, image, tag)
            pushed.append(image)

        # Warm-up: first-use allocations happen before the first sample.
        warm = f"{namespace}/warm-up"
        await asyncio.gather(*(one(warm) for _ in range(8)))
        await wait_final(store, [warm], {i.digest for i in pushed}, 60)
        rss_start = daemon.rss_mib()
        cpu_start = daemon.cpu_seconds()
        samples: list[tuple[float, float]] = [(0.0, rss_start)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        seconds = minutes * 60
        repos = [f"{namespace}/app-{k}" for k in range(4)]
        tasks: list[asyncio.Task[None]] = []
        next_sample = 1.0
        i = 0
        while True:
            now = loop.time() - start
            if now >= seconds:
                break
            if i / rate <= now:
                tasks.append(asyncio.create_task(one(repos[i % 4])))
                i += 1
                continue
            if now >= next_sample:
                samples.append((now, daemon.rss_mib()))
                next_sample += 1.0
            await asyncio.sleep(max(0.0, min(i / rate, next_sample) - now))
        await asyncio.gather(*tasks)
        soaked = {img.digest for img in pushed if not img.repository.endswith("warm-up")}
        outcomes = await wait_final(store, repos, soaked, timeout=120 + seconds)
        samples.append((loop.time() - start, daemon.rss_mib()))
    finished = sum(1 for d in soaked if outcomes.get(d, (0, None, None))[1] is not None)
    cpu = daemon.cpu_seconds() - cpu_start
    peak = daemon.peak_rss_mib()
    daemon.stop()
    rss_end = samples[-1][1]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] or samples
    slope = _slope(half) * 60
    section.add("soak_rss_start_mib", "MiB", rss_start)
    section.add("soak_rss_end_mib", "MiB", rss_end)
    section.add("soak_rss_peak_mib", "MiB", peak)
    section.add("soak_growth_mib", "MiB", rss_end - rss_start)
    section.add("soak_growth_mib_per_1000_pushes", "MiB", (rss_end - rss_start) * 1000 / max(1, i))
    section.add("soak_slope_second_half_mib_per_min", "MiB/min", slope)
    section.add("soak_pushes", "pushes", i)
    section.add("soak_verified", "images", finished)
    section.add("soak_daemon_cpu_ms_per_image", "ms", cpu * 1000 / max(1, i))
    section.details["soak_samples"] = [(round(t, 1), round(r, 2)) for t, r in samples]
    section.tables.append(
        table(
            [f"soak: {minutes:g} min at {rate:g} pushes/s", "MiB"],
            [
                ["RSS at start (after warm-up)", fmt(rss_start)],
                ["RSS at end", fmt(rss_end)],
                ["peak RSS", fmt(peak)],
                ["growth", fmt(rss_end - rss_start)],
                ["growth per 1000 pushes", fmt((rss_end - rss_start) * 1000 / max(1, i), 2)],
                ["slope over the second half, MiB/min", fmt(slope, 2)],
                [f"pushes / verified ({finished} of {len(soaked)} final)", f"{i} / {finished}"],
            ],
        )
    )


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second) of (t, value) points."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else math.nan


async def run(
    lab: Lab, *, sizes: list[int], repeat: int, soak_minutes: float, soak_rate: float
) -> Section:
    section = Section(
        "memory",
        "daemon RSS by digests tracked, and over a soak",
        {
            "sizes": sizes,
            "repeat": repeat,
            "digests_per_repository": PER_REPOSITORY,
            "soak_minutes": soak_minutes,
            "soak_rate": soak_rate,
        },
    )
    host = "127.0.0.1:5000"
    stores: dict[int, Path] = {}
    rows = []
    for size in [0, *sizes]:
        path = lab.dir("memory") / f"store-{size}.db"
        started = time.perf_counter()
        await build_store(path, size, host)
        stores[size] = path
        section.details[f"fill_seconds_{size}"] = round(time.perf_counter() - started, 2)
        config = write_config(
            path.with_suffix(".yaml"),
            registry_url=f"http://{host}",
            host=host,
            namespace="mem",
            store=path,
            trusted_root=lab.trusted_root,
        )
        for _ in range(repeat):
            port = _port(config)
            daemon = lab.daemon(config, port, f"memory-{size}")
            ready = daemon.wait_ready()
            rss_ready = daemon.rss_mib()
            poll_until(partial(_gauges_published, daemon), 300, "the first gauge refresh")
            gauges = time.perf_counter() - daemon.started
            section.add(f"rss_mib_{size}", "MiB", daemon.rss_mib())
            section.add(f"rss_at_ready_mib_{size}", "MiB", rss_ready)
            section.add(f"peak_rss_mib_{size}", "MiB", daemon.peak_rss_mib())
            section.add(f"startup_to_ready_s_{size}", "s", ready)
            section.add(f"first_gauges_s_{size}", "s", gauges)
            daemon.stop()
        rows.append(
            [
                f"{size:,}",
                fmt(section.med(f"rss_at_ready_mib_{size}")),
                fmt(section.med(f"rss_mib_{size}")),
                fmt(section.med(f"peak_rss_mib_{size}")),
                fmt(section.med(f"rss_mib_{size}") - section.med("rss_mib_0")),
                fmt(section.med(f"startup_to_ready_s_{size}"), 2),
                fmt(section.med(f"first_gauges_s_{size}"), 2),
                fmt(path.stat().st_size / 2**20),
            ]
        )
    section.tables.append(
        table(
            [
                f"digests (median of {repeat})",
                "RSS at ready",
                "RSS after gauges",
                "peak",
                "vs empty",
                "start→ready s",
                "start→gauges s",
                "store MiB",
            ],
            rows,
        )
    )
    for size in sizes:
        section.ratios[f"RSS {size:,} digests / empty store"] = ratio(
            section.med(f"rss_mib_{size}"), section.med("rss_mib_0")
        )
    if soak_minutes > 0:
        source = stores[min(sizes)] if sizes else stores[0]
        soak_store = lab.dir("soak") / "watcher.db"
        shutil.copy(source, soak_store)
        try:
            await soak(lab, section, soak_store, soak_minutes, soak_rate)
        except BenchUnavailable as exc:
            section.problems.append(f"soak skipped: {exc}")
        section.notes.append(
            f"the soak is one run ({soak_minutes:g} min; --soak MINUTES), on a copy of the "
            f"{min(sizes) if sizes else 0:,}-digest store; its figures come from its per-second "
            "samples, not from repeats"
        )
    section.notes.append("RSS is VmRSS from /proc; MiB = 2^20 bytes")
    return section


def _port(config: Path) -> int:
    import yaml

    listen = yaml.safe_load(config.read_text())["server"]["listen"]
    return int(str(listen).rsplit(":", 1)[1])
