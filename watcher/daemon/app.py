"""The daemon's lifecycle: start-up, the worker loop, pollers, reload, and a clean drain.

Everything long-lived is owned here and started and stopped in one place: the store, the
trust root, the engine (registry clients), the HTTP server, N worker tasks that claim work
from the store, one poller per registry with a ``poll_interval``, and a gauge refresher.
SIGTERM/SIGINT stop intake, let in-flight work finish (bounded), and exit 0; SIGHUP loads
the config again and swaps it in only if it is valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from watcher.config import Config, load_config
from watcher.daemon.intake import UNTAGGED_SETTLE, plan
from watcher.daemon.processor import Processor
from watcher.engine import Engine
from watcher.events import PushEvent
from watcher.metrics import Metrics
from watcher.sinks import Sink, build_sinks, deliver_forever
from watcher.sources.poller import poll_forever
from watcher.store import open_store
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import Verdict, utcnow
from watcher.verify.trust import Trust, load_trust

log = structlog.get_logger("watcher.daemon")


class Daemon:
    """One watcher process: HTTP intake, durable queue, workers, pollers."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        workers: int = 4,
        lease_seconds: float = 120.0,
        settle: timedelta = UNTAGGED_SETTLE,
        backoff_base: float = 5.0,
        error_attempts: int = 5,
        metrics: Metrics | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.metrics = metrics or Metrics()
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.settle = settle
        self.backoff_base = backoff_base
        self.error_attempts = error_attempts
        self.owner = f"{socket.gethostname()}-{os.getpid()}"
        self.ready = False
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._alerts_wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self.sinks: dict[str, Sink] = {}
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock = asyncio.Lock()
        self._touched: set[str] = set()
        self._gauges_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pollers: list[asyncio.Task[None]] = []
        self._poll_stop = asyncio.Event()
        self._retired: list[Engine] = []
        self._runner: web.AppRunner | None = None
        self.store: SqliteStore | None = None
        self.trust: Trust | None = None
        self.engine: Engine | None = None
        self.processor: Processor | None = None
        self.port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything and start serving; raises if the store or trust root is unusable."""
        from watcher.daemon.http import build_app  # the HTTP layer depends on the daemon

        self.store = await open_store(self.config.store.url)
        self._http = aiohttp.ClientSession()
        self.trust = await asyncio.to_thread(
            load_trust, self.config.trust.trusted_root, self.config.state_dir
        )
        self._install(self.config, self.trust)
        app = build_app(self)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await self._runner.setup()
        host, port = self.config.server.listen_host, self.config.server.listen_port
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        for n in range(self.workers):
            self._spawn(self._worker(n))
        self._spawn(self._refresh_gauges())
        self._spawn(self._deliver_alerts())
        self._start_pollers()
        self.ready = True
        self._wake.set()
        log.info(
            "daemon_started",
            listen=f"{host}:{self.port}",
            workers=self.workers,
            registries=[r.name for r in self.config.registries],
        )

    def _install(self, config: Config, trust: Trust) -> None:
        assert self.store is not None
        self.config = config
        self.engine = Engine(config, trust, self.metrics)
        self.processor = Processor(
            config,
            self.engine,
            self.store,
            self.metrics,
            error_attempts=self.error_attempts,
            backoff_base=self.backoff_base,
            on_alerts=self._verdict_recorded,
        )
        if self._http is not None:
            self.sinks = build_sinks(config.alerts, self._http)

    def _verdict_recorded(self, digest: str) -> None:
        """A final verdict was written: its alerts may need resolving, the gauges a refresh."""
        self._touched.add(digest)
        self._alerts_wake.set()
        self._gauges_dirty.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    def _start_pollers(self) -> None:
        assert self.engine is not None and self.store is not None
        self._poll_stop = asyncio.Event()
        engine, store, stop = self.engine, self.store, self._poll_stop
        for registry in self.config.registries:
            if registry.poll_interval is None:
                continue

            async def run(registry: Any = registry) -> None:
                client = await engine.client_named(registry)
                while not stop.is_set():
                    try:
                        await poll_forever(registry, client, store, self.record, self.metrics, stop)
                    except Exception:
                        # Never let one bug end polling of a registry for good.
                        log.exception("poller_failed", registry=registry.name)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=5.0)

            self._pollers.append(asyncio.create_task(run()))

    async def _stop_pollers(self) -> None:
        self._poll_stop.set()
        if self._pollers:
            await asyncio.gather(*self._pollers, return_exceptions=True)
        self._pollers = []

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop intake, let in-flight work finish (bounded), close everything."""
        self.ready = False
        self._stopping.set()
        self._wake.set()
        self._gauges_dirty.set()
        await self._stop_pollers()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        for engine in [*self._retired, self.engine]:
            if engine is not None:
                await engine.aclose()
        if self.store is not None:
            await self.store.close()
        log.info("daemon_stopped")

    async def reload(self) -> bool:
        """Load the config again; keep the running one if the new one is invalid."""
        async with self._reload_lock:  # two quick SIGHUPs must not leave a stray poller
            return await self._reload()

    async def _reload(self) -> bool:
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            trust = await asyncio.to_thread(load_trust, config.trust.trusted_root, config.state_dir)
        except Exception as exc:  # ConfigError, TrustError, an unreadable file
            log.error("config_reload_rejected", path=str(self.config_path), error=str(exc))
            return False
        await self._stop_pollers()
        if self.engine is not None:
            self._retired.append(self.engine)
        self.trust = trust
        self._install(config, trust)
        self._start_pollers()
        log.info(
            "config_reloaded",
            path=str(self.config_path),
            policies=[p.name for p in config.policies],
        )
        return True

    def reload_soon(self) -> None:
        """SIGHUP handler: reload in a task the daemon keeps a reference to."""
        task = asyncio.create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    # -- intake ---------------------------------------------------------------------------

    async def record(self, event: PushEvent) -> bool:
        """Store an event and the work it causes; True if new (False for a redelivery)."""
        assert self.store is not None
        now = utcnow()
        new = await self.store.record_event(event, now, plan(event, now, self.settle))
        if new:
            self.metrics.push_events.labels(
                registry=event.registry, repository=event.repository, source=str(event.source)
            ).inc()
            self._wake.set()
            log.info(
                "push_recorded",
                registry=event.registry,
                repository=event.repository,
                digest=event.digest,
                tag=event.tag,
                action=str(event.action),
                source=str(event.source),
            )
        return new

    # -- the work loop --------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        owner = f"{self.owner}-{n}"
        while not self._stopping.is_set():
            assert self.store is not None and self.processor is not None
            try:
                item = await self.store.claim(owner, utcnow(), self.lease_seconds)
            except Exception:
                # The store hiccupped (locked, disk full): keep the worker alive and retry.
                log.exception("claim_failed", worker=owner)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
                continue
            if item is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                continue
            try:
                await self.processor.process(item)
            except Exception:
                # A bug, not hostile input (that becomes a verdict): log it and let the lease
                # expire so the item is tried again rather than lost.
                log.exception(
                    "work_failed", registry=item.registry, repository=item.repository, ref=item.ref
                )

    async def _deliver_alerts(self) -> None:
        assert self.store is not None
        # A getter, so a reload's new sinks are used from the next round on.
        await deliver_forever(
            self.store,
            lambda: self.sinks,
            self.metrics,
            self._stopping,
            self._alerts_wake,
            touched=self._touched,
        )

    async def _refresh_gauges(self) -> None:
        """Coverage and pending gauges come from the store, so they are right after restart."""
        while not self._stopping.is_set():
            self._gauges_dirty.clear()
            try:
                await self.refresh_gauges()
            except Exception:
                log.exception("gauge_refresh_failed")
            # At most every 5 s (the coverage query reads every tag), at least every 30 s,
            # and soon after a verdict changed something.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gauges_dirty.wait(), timeout=25.0)

    async def refresh_gauges(self) -> None:
        """Recompute coverage, images-by-verdict and pending gauges from the store."""
        assert self.store is not None
        rows = await self.store.coverage()
        pending = await self.store.pending_counts()
        totals: dict[tuple[str, str], int] = {}
        verified: dict[tuple[str, str], int] = {}
        self.metrics.images_by_verdict.clear()
        for row in rows:
            key = (row.registry, row.repository)
            totals[key] = totals.get(key, 0) + row.tags
            if row.verdict == Verdict.VERIFIED:
                verified[key] = verified.get(key, 0) + row.tags
            self.metrics.images_by_verdict.labels(
                registry=row.registry, repository=row.repository, verdict=row.verdict
            ).set(row.tags)
        self.metrics.signing_coverage.clear()
        for key, total in totals.items():
            self.metrics.signing_coverage.labels(registry=key[0], repository=key[1]).set(
                verified.get(key, 0) / total if total else 0.0
            )
        for configured in self.config.registries:
            self.metrics.pending_digests.labels(registry=configured.name).set(
                pending.get(configured.name, 0)
            )

    async def wait_idle(self, timeout: float) -> bool:
        """Test/demo helper: wait until no work is queued or due (pending may remain)."""
        assert self.store is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.store.queue_depth() == 0:
                return True
            await asyncio.sleep(0.05)
        return False


async def run_daemon(config_path: Path, config: Config) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code."""
    daemon = Daemon(config_path, config)
    try:
        await daemon.start()
    except Exception as exc:
        log.error("daemon_start_failed", error=str(exc))
        await daemon.stop(drain_timeout=1.0)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_soon)
    await stop.wait()
    log.info("daemon_stopping")
    await daemon.stop()
    return 0
