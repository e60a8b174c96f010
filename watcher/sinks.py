"""Delivering alerts from the outbox: Alertmanager API v2, Slack-compatible and JSON webhooks.

Delivery is at least once: an alert stays in the outbox until a sink accepts it, each
attempt is bounded (a few quick tenacity retries with a timeout), and between attempts the
outbox schedules the next try with a growing, capped delay, forever. Alertmanager
deduplicates by label set, so for it a repeat (after a crash between the POST and marking the
alert sent, or the periodic refresh that keeps ``endsAt`` ahead) is not a second alert; a chat
or JSON webhook could see such a repeat, once, after a crash in that narrow window.
Webhook URLs are credentials: they never appear in logs, errors or metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from watcher.alerts import NEW_SIGNER
from watcher.config import AlertConfig
from watcher.metrics import Metrics
from watcher.store.base import OutboxAlert
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import rfc3339, utcnow

log = structlog.get_logger("watcher.alerts")

# How long Alertmanager should consider an alert firing without hearing from us again.
ALERT_TTL = timedelta(hours=1)
MAX_RETRY_DELAY = 300.0


class DeliveryError(Exception):
    """A sink refused or could not be reached; the message names no secret."""


class Sink(Protocol):
    """Something that accepts alerts."""

    name: str

    async def send(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Deliver alerts or raise DeliveryError."""

    async def resolve(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Say that these alerts' conditions ended (e.g. a late signature verified)."""


def _alertmanager_body(
    alerts: Sequence[OutboxAlert], now: datetime, *, resolved: bool = False
) -> list[dict[str, Any]]:
    return [
        {
            "labels": a.payload["labels"],
            "annotations": a.payload["annotations"],
            "startsAt": rfc3339(now - ALERT_TTL) if resolved else rfc3339(now),
            "endsAt": rfc3339(now) if resolved else rfc3339(now + ALERT_TTL),
        }
        for a in alerts
    ]


def slack_text(alert: OutboxAlert) -> str:
    """A chat message a human can act on: what, where, who signed, what was wanted."""
    verdict = alert.payload.get("verdict", {})
    labels = alert.payload["labels"]
    emoji = ":rotating_light:" if labels["severity"] == "critical" else ":warning:"
    lines = [
        f"{emoji} *{labels['alertname']}* ({labels['severity']}) — policy `{labels['policy']}`",
        f"*Image:* `{verdict.get('image', labels['digest'])}`",
        f"*Tags:* {', '.join(verdict.get('tags') or []) or '(untagged)'}",
        f"*Verdict:* {alert.verdict}",
    ]
    description = alert.payload["annotations"].get("description", "")
    lines.extend(f"> {line}" for line in description.splitlines()[1:])
    return "\n".join(lines)


class _HttpSink:
    """Common POST-with-bounded-retries for every HTTP sink."""

    def __init__(
        self,
        name: str,
        url: str,
        session: aiohttp.ClientSession,
        attempts: int = 3,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._url = url
        self._session = session
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url=<redacted>)"

    async def _post(self, body: Any) -> None:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(DeliveryError),
            reraise=True,
        ):
            with attempt:
                try:
                    async with self._session.post(
                        self._url, json=body, timeout=self._timeout
                    ) as resp:
                        if resp.status >= 300:
                            raise DeliveryError(f"sink {self.name} answered HTTP {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise DeliveryError(
                        f"sink {self.name} unreachable: {type(exc).__name__}"
                    ) from None


class AlertmanagerSink(_HttpSink):
    """Alertmanager API v2: POST /api/v2/alerts."""

    async def send(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Post the alerts with startsAt now and endsAt an hour ahead."""
        await self._post(_alertmanager_body(alerts, now))

    async def resolve(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Post the same label sets with endsAt now: Alertmanager resolves them."""
        await self._post(_alertmanager_body(alerts, now, resolved=True))


class SlackSink(_HttpSink):
    """A Slack-compatible incoming webhook (one message per alert)."""

    async def send(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Post a readable message per alert."""
        for alert in alerts:
            await self._post({"text": slack_text(alert)})

    async def resolve(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Say in the channel that the condition ended."""
        for alert in alerts:
            labels = alert.payload["labels"]
            await self._post(
                {
                    "text": f":white_check_mark: *resolved* {labels['alertname']} for "
                    f"`{alert.payload.get('verdict', {}).get('image', labels['digest'])}` "
                    f"(policy `{labels['policy']}`): no longer {alert.verdict}"
                }
            )


class JsonSink(_HttpSink):
    """A generic webhook receiving labels, annotations and the verdict JSON."""

    async def send(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Post each alert's payload."""
        for alert in alerts:
            await self._post({"status": "firing", **alert.payload})

    async def resolve(self, alerts: Sequence[OutboxAlert], now: datetime) -> None:
        """Post each alert's payload marked resolved."""
        for alert in alerts:
            await self._post({"status": "resolved", **alert.payload})


def build_sinks(configs: Sequence[AlertConfig], session: aiohttp.ClientSession) -> dict[str, Sink]:
    """One sink object per configured alert destination."""
    sinks: dict[str, Sink] = {}
    for cfg in configs:
        if cfg.alertmanager is not None:
            url = cfg.alertmanager.url.rstrip("/") + "/api/v2/alerts"
            sinks[cfg.name] = AlertmanagerSink(cfg.name, url, session)
        elif cfg.webhook is not None:
            cls = SlackSink if cfg.webhook.format == "slack" else JsonSink
            sinks[cfg.name] = cls(cfg.name, cfg.webhook.url.get(), session)
    return sinks


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4 … seconds between outbox attempts, capped at five minutes, forever."""
    return timedelta(seconds=min(MAX_RETRY_DELAY, 2.0 ** max(0, attempts)))


async def deliver_due(
    store: SqliteStore, sinks: Mapping[str, Sink], metrics: Metrics, limit: int = 100
) -> int:
    """Try every due outbox alert once; returns how many were delivered."""
    now = utcnow()
    delivered = 0
    for alert_id, alert, attempts, holds in await store.due_alerts_with_status(now, limit):
        if not holds:
            # A re-check ended the condition before delivery (a late signature): nothing
            # to tell anyone.
            await store.alert_resolved(alert_id, now)
            log.info("alert_superseded", sink=alert.sink, alertname=alert.alertname)
            continue
        sink = sinks.get(alert.sink)
        if sink is None:
            # The sink was removed from the config: keep the alert, try again later.
            await store.alert_failed(
                alert_id,
                now,
                now + timedelta(seconds=MAX_RETRY_DELAY),
                f"no sink named {alert.sink} in the config",
            )
            continue
        try:
            await sink.send([alert], now)
        except DeliveryError as exc:
            await store.alert_failed(alert_id, now, now + retry_delay(attempts), str(exc))
            metrics.alerts.labels(sink=alert.sink, verdict=alert.verdict, outcome="failed").inc()
            log.warning(
                "alert_delivery_failed",
                sink=alert.sink,
                alertname=alert.alertname,
                attempt=attempts + 1,
                error=str(exc),
            )
            continue
        await store.alert_sent(alert_id, now)
        metrics.alerts.labels(sink=alert.sink, verdict=alert.verdict, outcome="sent").inc()
        log.info(
            "alert_sent",
            sink=alert.sink,
            alertname=alert.alertname,
            registry=alert.registry,
            repository=alert.repository,
        )
        delivered += 1
    return delivered


async def refresh_and_resolve(
    store: SqliteStore,
    sinks: Mapping[str, Sink],
    *,
    refresh: bool,
    digests: Collection[str] | None = None,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Resolve delivered alerts whose condition ended; optionally refresh those that hold.

    Refreshing re-posts Alertmanager alerts so ``endsAt`` stays ahead while a verdict still
    fails; resolving tells every sink when a re-check (a late signature, a deletion) ended it.
    Returns (refreshed, resolved).
    """
    now = now or utcnow()
    refreshed = resolved = 0
    firing: dict[str, list[OutboxAlert]] = {}
    for alert_id, alert, holds in await store.sent_alerts(None if refresh else digests):
        sink = sinks.get(alert.sink)
        if sink is None:
            continue
        if holds:
            # Drift findings are events: Alertmanager lets them expire rather than refresh.
            if refresh and isinstance(sink, AlertmanagerSink) and alert.alertname != NEW_SIGNER:
                firing.setdefault(alert.sink, []).append(alert)
            continue
        try:
            await sink.resolve([alert], now)
        except DeliveryError as exc:
            log.warning("alert_resolve_failed", sink=alert.sink, error=str(exc))
            continue
        await store.alert_resolved(alert_id, now)
        resolved += 1
        log.info(
            "alert_resolved",
            sink=alert.sink,
            alertname=alert.alertname,
            registry=alert.registry,
            repository=alert.repository,
        )
    for name, batch in firing.items():
        try:
            await sinks[name].send(batch, now)
            refreshed += len(batch)
        except DeliveryError as exc:
            log.warning("alert_refresh_failed", sink=name, error=str(exc))
    return refreshed, resolved


async def deliver_forever(
    store: SqliteStore,
    sinks: Callable[[], Mapping[str, Sink]],
    metrics: Metrics,
    stopping: asyncio.Event,
    wake: asyncio.Event,
    interval: float = 1.0,
    refresh_every: timedelta = timedelta(minutes=15),
    touched: set[str] | None = None,
) -> None:
    """The outbox loop: deliver due alerts; resolve or refresh delivered ones.

    ``touched`` collects the digests that got a final verdict since the last round (the
    daemon adds to it); only their delivered alerts are re-examined between full refreshes.
    """
    touched = touched if touched is not None else set()
    last_refresh = utcnow()
    while not stopping.is_set():
        wake.clear()
        digests = set(touched)
        touched.difference_update(digests)
        try:
            await deliver_due(store, sinks(), metrics)
            refresh = utcnow() - last_refresh >= refresh_every
            if digests or refresh:  # a final verdict may have ended an alert's condition
                await refresh_and_resolve(store, sinks(), refresh=refresh, digests=digests)
            if refresh:
                last_refresh = utcnow()
        except Exception:
            log.exception("outbox_loop_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval)
