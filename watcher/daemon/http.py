"""The daemon's HTTP surface: probes, metrics, webhook receivers and the query API.

A webhook is answered 2xx only once its events are durably stored, and never after
verification: registries retry slow endpoints (distribution forever), so the receiver
stays fast and idempotent. Bodies over 1 MiB get 413 without being read in full.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watcher.refs import ReferenceError, parse_digest
from watcher.sources.webhooks import MAX_BODY, WebhookError, authenticate, parse_webhook

if TYPE_CHECKING:
    from watcher.daemon.app import Daemon

log = structlog.get_logger("watcher.http")
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: store and config loaded, not draining."""
    daemon = request.app[DAEMON]
    if daemon.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the daemon's registry."""
    body = generate_latest(request.app[DAEMON].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _answer(daemon: Daemon, registry: str, status: int, doc: dict[str, Any]) -> web.Response:
    daemon.metrics.webhook_requests.labels(registry=registry, code=str(status)).inc()
    return web.json_response(doc, status=status)


async def webhook(request: web.Request) -> web.Response:
    """Receive one registry webhook delivery."""
    daemon = request.app[DAEMON]
    name = request.match_info["registry"]
    registry = daemon.config.registry_named(name)
    if registry is None or registry.webhook is None:
        return _answer(daemon, "unknown", 404, {"error": "no webhook for this registry name"})
    try:
        body = await _read_limited(request, MAX_BODY)
    except _TooLarge:
        return _answer(daemon, name, 413, {"error": f"body over {MAX_BODY} bytes"})
    headers = {k: v for k, v in request.headers.items()}
    token = request.query.get("token")
    if token and "Authorization" not in request.headers:
        # Docker Hub and Quay cannot send headers: a secret in the webhook URL stands in for
        # a bearer token (access logs are off, so it is not written anywhere).
        headers["Authorization"] = f"Bearer {token}"
    try:
        authenticate(registry, headers, body)
        parsed = parse_webhook(registry, headers, body, remote=request.remote)
    except WebhookError as exc:
        log.warning("webhook_rejected", registry=name, status=exc.status, reason=str(exc))
        return _answer(daemon, name, exc.status, {"error": str(exc)})
    new = 0
    for event in parsed.events:
        new += await daemon.record(event)
    for reason in parsed.ignored:
        log.info("webhook_entry_ignored", registry=name, reason=reason)
    return _answer(
        daemon,
        name,
        202,
        {
            "accepted": new,
            "duplicates": len(parsed.events) - new,
            "ignored": len(parsed.ignored),
        },
    )


def _authorized(request: web.Request) -> bool:
    token = request.app[DAEMON].config.server.api_token
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token.get()}".encode())


async def image(request: web.Request) -> web.Response:
    """GET /api/v1/images/{digest}: newest verdict per repository where it was seen."""
    if not _authorized(request):
        return web.json_response({"error": "unauthorized"}, status=401)
    try:
        digest = parse_digest(request.match_info["digest"])
    except ReferenceError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    store = request.app[DAEMON].store
    assert store is not None
    results = await store.results_for_digest(digest, request.query.get("repository"))
    if not results:
        seen = await store.seen(digest)
        if not seen:
            return web.json_response({"error": f"{digest} was never seen"}, status=404)
    return web.json_response(
        {"digest": digest, "results": results}, dumps=lambda d: json.dumps(d, indent=None)
    )


def build_app(daemon: Daemon) -> web.Application:
    """The aiohttp application for a daemon."""
    app = web.Application(client_max_size=MAX_BODY + 1)
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/webhooks/{registry}", webhook)
    app.router.add_get("/api/v1/images/{digest}", image)
    return app
