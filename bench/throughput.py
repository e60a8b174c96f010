"""Throughput: N signed images verified scan-style, beside the naive loop and the floor.

The population (mixed formats, see bench.population.MIX) sits in a local docker-registry
before anything is timed. Each timed pass enumerates the watched repositories (catalog, tag
lists, one HEAD per tag) and verifies every digest:

- watcher: the scan path, or, until `watcher.scan` exists, the Engine driven the way the scan
  is specified to drive it: one Engine, the registry's one client (its request bound is the
  registry's ``max_concurrency``, 8 by default) and that many digests in flight;
- floor: bench.floor — the same requests at the same concurrency, a bare aiohttp session,
  one sigstore-python verification per signature;
- naive (CLI): a shell loop over ``registry-watcher verify IMAGE`` — a new process, trust
  root load and HTTP connection per image, one image at a time — timed on a sample;
- naive (in-process): the same per-image path without interpreter start-up (``verify_image``
  called in a loop: a fresh trust root load and HTTP session per image), over all N.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import resource
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    Lab,
    Section,
    fmt,
    metrics_text,
    proc_cpu_seconds,
    prometheus_sum,
    ratio,
    run_id,
    table,
    write_config,
)
from bench.floor import FloorVerifier, floor_pass
from bench.population import MIX, Image, push_many, writer
from watcher.config import DEFAULT_MAX_CONCURRENCY, Config, load_config
from watcher.engine import Engine, Target
from watcher.metrics import Metrics
from watcher.refs import Digest, ImageReference, is_attachment_tag
from watcher.sources.poller import watched_repositories
from watcher.verify.trust import Trust, load_trust


@dataclass
class Pass:
    """One timed pass of one approach."""

    seconds: float
    images: int
    requests: int | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    client_cpu: float = math.nan  # CPU seconds of the verifying side (and its child processes)
    registry_cpu: float = math.nan  # CPU seconds the registry process used meanwhile

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def scan_available() -> bool:
    """True once `watcher.scan` exists: then the scan, not only the Engine loop, is timed."""
    try:
        from watcher.scan import Scanner  # noqa: F401
    except ImportError:
        return False
    return True


async def scan_pass(config: Config, trust: Trust, workdir: Path) -> Pass:
    """`registry-watcher scan --recheck` on a fresh store: everything verified and recorded."""
    from watcher.scan import Scanner
    from watcher.store import open_store

    store = await open_store(f"sqlite:///{workdir / f'scan-{secrets.token_hex(4)}.db'}")
    metrics = Metrics()
    try:
        async with Engine(config, trust, metrics) as engine:
            scanner = Scanner(config, engine, store, recheck=True)
            started = time.perf_counter()
            report = await scanner.run()
            seconds = time.perf_counter() - started
    finally:
        await store.close()
    outcomes = Counter(str(i["verdict"]) for i in report.images)
    for error in report.errors:
        outcomes[f"error: {error[:80]}"] += 1
    requests = int(prometheus_sum(metrics_text(metrics), "watcher_registry_requests_total"))
    return Pass(seconds, len(report.images), requests, outcomes)


async def engine_pass(config: Config, trust: Trust, concurrency: int) -> Pass:
    """The Engine alone, driven as the scan is specified, without the store.

    Enumerate like the poller (image tags only), then verify each distinct digest once with
    ``concurrency`` digests in flight through the registry's one client.
    """
    metrics = Metrics()
    started = time.perf_counter()
    async with Engine(config, trust, metrics) as engine:
        registry = config.registries[0]
        client = await engine.client_named(registry)
        repos = await watched_repositories(registry, client)
        tag_lists = await asyncio.gather(*(client.list_tags(r) for r in repos))
        pairs = [
            (r, t)
            for r, tags in zip(repos, tag_lists, strict=True)
            for t in tags
            if not is_attachment_tag(t)  # .sig/.att/fallback tags are material, not images
        ]
        heads = await asyncio.gather(*(client.head_manifest(r, t) for r, t in pairs))
        digests: dict[tuple[str, Digest], list[str]] = {}
        for (repo, tag), head in zip(pairs, heads, strict=True):
            if head is not None:
                digests.setdefault((repo, head.digest), []).append(tag)
        gate = asyncio.Semaphore(concurrency)

        async def one(repo: str, digest: Digest, tags: list[str]) -> str:
            async with gate:
                ref = ImageReference(registry.host, repo, None, digest)
                verdict = await engine.verify_digest(
                    Target(registry.name, registry.host, repo),
                    client,
                    digest,
                    tuple(tags),
                    config.policies_for(ref, tags),
                )
                return str(verdict.verdict)

        verdicts = await asyncio.gather(*(one(r, d, t) for (r, d), t in digests.items()))
    seconds = time.perf_counter() - started
    requests = int(prometheus_sum(metrics_text(metrics), "watcher_registry_requests_total"))
    return Pass(seconds, len(verdicts), requests, Counter(verdicts))


async def naive_inprocess_pass(config: Config, references: list[str]) -> Pass:
    """`verify_image` per image, one after the other (fresh trust load and session each)."""
    from watcher.cli import verify_image

    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for reference in references:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = await verify_image(config, reference, "json")
        outcomes[_verdict_of(buf.getvalue(), code)] += 1
    return Pass(time.perf_counter() - started, len(references), None, outcomes)


def naive_cli_pass(config_path: Path, references: list[str]) -> Pass:
    """A shell loop: `registry-watcher verify -c FILE IMAGE --output json` per image."""
    script = Path(sys.executable).with_name("registry-watcher")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "watcher"]
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for reference in references:
        proc = subprocess.run(
            [*command, "verify", "-c", str(config_path), reference, "--output", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        outcomes[_verdict_of(proc.stdout, proc.returncode)] += 1
    return Pass(time.perf_counter() - started, len(references), None, outcomes)


def _verdict_of(stdout: str, code: int) -> str:
    try:
        return str(json.loads(stdout)["verdict"])
    except (ValueError, KeyError, TypeError):
        return f"exit {code}"


def _sample(images: list[Image], size: int) -> list[Image]:
    """Evenly spread over the population, so every format is in the sample."""
    if size >= len(images):
        return list(images)
    step = len(images) / size
    return [images[int(i * step)] for i in range(size)]


async def run(
    lab: Lab, *, n: int, repeat: int, naive_sample: int, concurrency: int | None = None
) -> Section:
    """Push the population, then time each approach ``repeat`` times, interleaved."""
    concurrency = concurrency or DEFAULT_MAX_CONCURRENCY
    registry = lab.registry()
    namespace = f"tp{run_id()}"
    repos = max(1, min(10, n // 10))
    specs = [(f"{namespace}/app{i % repos:02d}", f"v{i}", MIX[i % len(MIX)]) for i in range(n)]
    async with writer(registry.url) as pusher:
        host = pusher.host
        images = await push_many(pusher, lab.kit, host, specs)
    workdir = lab.dir(namespace)
    config_path = write_config(
        workdir / "config.yaml",
        registry_url=registry.url,
        host=host,
        namespace=namespace,
        store=workdir / "watcher.db",
        trusted_root=lab.trusted_root,
        max_concurrency=concurrency,
    )
    config = load_config(config_path)
    trust = load_trust(config.trust.trusted_root, config.state_dir)
    floor_verifier = FloorVerifier(lab.trusted_root)
    references = [img.reference(host) for img in images]
    sample = [img.reference(host) for img in _sample(images, naive_sample)]
    materials = sum(img.fmt.materials for img in images)
    scan = scan_available()
    section = Section(
        "throughput",
        f"{n} signed images (mixed formats), verify all",
        {
            "n": n,
            "repeat": repeat,
            "concurrency": concurrency,
            "repositories": repos,
            "formats": {str(f): sum(1 for i in images if i.fmt is f) for f in MIX},
            "signatures_and_attestations": materials,
            "naive_cli_sample": len(sample),
            "watcher_path": "watcher.scan.Scanner (recheck, fresh store)"
            if scan
            else "Engine, scan-style",
        },
    )

    async def watcher() -> Pass:
        if scan:
            return await scan_pass(config, trust, workdir)
        return await engine_pass(config, trust, concurrency)

    # Warm-up, untimed: imports and first-use caches, the registry's page cache.
    await watcher()
    passes: dict[str, list[Pass]] = {
        "watcher": [],
        "engine": [],
        "floor": [],
        "naive_inproc": [],
        "naive_cli": [],
    }

    def cpu_marks() -> tuple[float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = time.process_time() + children.ru_utime + children.ru_stime
        return client, proc_cpu_seconds(registry.process.pid) or math.nan

    async def measured(key: str, make: Callable[[], Awaitable[Pass]]) -> None:
        client, reg = cpu_marks()
        result = await make()
        client_after, reg_after = cpu_marks()
        result.client_cpu, result.registry_cpu = client_after - client, reg_after - reg
        passes[key].append(result)

    async def floor() -> Pass:
        fp = await floor_pass(
            registry.url, namespace, floor_verifier, concurrency, head_attachment_tags=scan
        )
        if fp.errors:
            section.problems.append(f"floor: {fp.failed} signature(s) failed, e.g. {fp.errors[0]}")
        outcomes = Counter({"verified": fp.verified, "failed": fp.failed})
        return Pass(fp.seconds, fp.images, fp.requests, +outcomes)

    for _ in range(repeat):
        await measured("watcher", watcher)
        if scan:
            await measured("engine", lambda: engine_pass(config, trust, concurrency))
        await measured("floor", floor)
        await measured("naive_inproc", lambda: naive_inprocess_pass(config, references))
        if sample:
            await measured(
                "naive_cli", lambda: asyncio.to_thread(naive_cli_pass, config_path, sample)
            )
    labels = {
        "watcher": f"watcher: scan, {concurrency} in flight"
        if scan
        else f"watcher: Engine loop, {concurrency} in flight",
        "engine": f"watcher: Engine only, no store, {concurrency} in flight",
        "floor": f"floor: bare aiohttp + sigstore-python, {concurrency} in flight",
        "naive_inproc": "naive: CLI verify path per image, in-process",
        "naive_cli": f"naive: `registry-watcher verify` per image ({len(sample)} sampled)",
    }
    for key, runs in passes.items():
        for p in runs:
            section.add(f"{key}_images_per_s", "images/s", p.rate)
            section.add(f"{key}_seconds_per_pass", "s", p.seconds)
            if p.requests is not None:
                section.add(f"{key}_requests_per_pass", "requests", p.requests)
            per_image = 1000 / p.images if p.images else math.nan
            section.add(f"{key}_client_cpu_ms_per_image", "ms", p.client_cpu * per_image)
            section.add(f"{key}_registry_cpu_ms_per_image", "ms", p.registry_cpu * per_image)
        expected = {"floor": materials, "naive_cli": len(sample)}.get(key, len(references))
        bad = [p.outcomes for p in runs if p.outcomes != Counter({"verified": expected})]
        if bad:
            section.problems.append(f"{key}: expected {expected} verified, got {dict(bad[0])}")
        if runs:
            section.details[f"{key}_outcomes"] = [dict(p.outcomes) for p in runs]
    watcher_rate = section.med("watcher_images_per_s")
    section.ratios = {
        "watcher/naive (CLI loop), images/s": ratio(
            watcher_rate, section.med("naive_cli_images_per_s")
        ),
        "watcher/naive (in-process loop), images/s": ratio(
            watcher_rate, section.med("naive_inproc_images_per_s")
        ),
        "watcher/floor, images/s": ratio(watcher_rate, section.med("floor_images_per_s")),
        # Where the registry bounds images/s, this is the watcher's own overhead.
        "watcher/floor, CPU per image": ratio(
            section.med("watcher_client_cpu_ms_per_image"),
            section.med("floor_client_cpu_ms_per_image"),
        ),
    }
    rows = []
    for key, label in labels.items():
        if not passes[key]:
            continue
        rows.append(
            [
                label,
                fmt(section.med(f"{key}_images_per_s")),
                fmt(section.med(f"{key}_seconds_per_pass"), 2),
                fmt(section.med(f"{key}_requests_per_pass"), 0)
                if f"{key}_requests_per_pass" in section.figures
                else "-",
                fmt(section.med(f"{key}_client_cpu_ms_per_image"), 1),
                fmt(section.med(f"{key}_registry_cpu_ms_per_image"), 1),
                fmt(ratio(watcher_rate, section.med(f"{key}_images_per_s")), 2),
            ]
        )
    section.tables.append(
        table(
            [
                f"median of {repeat} runs",
                "images/s",
                "s/pass",
                "requests/pass",
                "CPU ms/img",
                "registry CPU ms/img",
                "watcher ÷ it",
            ],
            rows,
        )
    )
    if scan:
        section.notes.append(
            "watcher = `Scanner(recheck=True)` on a fresh store each run (a first scan: every "
            "tag recorded, every digest verified and its verdict written); the scan HEADs "
            "signature tags too, and so does the floor, to make the same requests"
        )
    else:
        section.notes.append(
            "`watcher.scan` does not exist yet: the watcher row is the Engine driven as the "
            f"scan is specified (one client per registry, {concurrency} requests and "
            f"{concurrency} digests in flight)"
        )
    section.notes.append(
        f"naive CLI images/s comes from a {len(sample)}-image sample (a sequential loop's rate "
        "does not depend on N); the in-process naive loop runs over all N"
    )
    return section
