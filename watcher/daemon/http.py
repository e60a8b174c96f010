"""The daemon's HTTP surface: probes, metrics, webhook receivers and the query API.

A webhook is answered 2xx only once its events are durably stored, and never after
verification: registries retry slow endpoints (distribution forever), so the receiver
stays fast and idempotent. Bodies over 1 MiB get 413 without being read in full.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import importlib.resources
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watcher.inventory import coverage_of
from watcher.refs import ReferenceError, parse_digest
from watcher.sources.webhooks import MAX_BODY, WebhookError, authenticate, parse_webhook
from watcher.trace import build_trace
from watcher.verdicts import Verdict

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
    if parsed.ignored:
        daemon.metrics.webhook_events_ignored.labels(registry=name).inc(len(parsed.ignored))
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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def image_history(request: web.Request) -> web.Response:
    """GET /api/v1/images/{digest}/history: the trace document of a digest."""
    if not _authorized(request):
        return _error(401, "unauthorized")
    try:
        digest = parse_digest(request.match_info["digest"])
    except ReferenceError as exc:
        return _error(400, str(exc))
    daemon = request.app[DAEMON]
    assert daemon.store is not None
    public_good = daemon.trust is not None and daemon.trust.is_public_good
    doc = await build_trace(daemon.store, daemon.config, digest, public_good=public_good)
    if doc is None:
        return _error(404, f"{digest} was never seen")
    return web.json_response(doc)


async def coverage(request: web.Request) -> web.Response:
    """GET /api/v1/coverage: per repository, current tags' digests by verdict, and totals."""
    if not _authorized(request):
        return _error(401, "unauthorized")
    store = request.app[DAEMON].store
    assert store is not None
    rows, totals = coverage_of(
        (e.registry, e.repository, e.latest.verdict if e.latest else Verdict.PENDING, len(e.tags))
        for e in await store.inventory()
    )
    return web.json_response(
        {"repositories": [r.to_json() for r in rows], "totals": totals.to_json()}
    )


MAX_PAGE = 1000


def _cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{value}".encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> int:
    """Cursors are opaque to clients (so the paging key can change); a bad one is a 400."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, _, value = raw.partition(":")
        if version != "v1":
            raise ValueError(version)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {text!r}") from None


async def images(request: web.Request) -> web.Response:
    """GET /api/v1/images: newest verdict per image, filtered, newest first, paginated."""
    if not _authorized(request):
        return _error(401, "unauthorized")
    query = request.query
    try:
        verdict = query.get("verdict")
        if verdict is not None and verdict not in {str(v) for v in Verdict}:
            raise ValueError(f"unknown verdict {verdict!r}")
        since = None
        if "since" in query:
            since = datetime.fromisoformat(query["since"])
            if since.tzinfo is None:
                raise ValueError("since needs a time zone (RFC 3339, e.g. ...Z)")
        limit = int(query.get("limit", "100"))
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        before = _parse_cursor(query["cursor"]) if "cursor" in query else None
    except ValueError as exc:
        return _error(400, str(exc))
    store = request.app[DAEMON].store
    assert store is not None
    docs, next_id = await store.list_images(
        repository=query.get("repository"),
        verdict=verdict,
        since=since,
        limit=limit,
        before_id=before,
    )
    return web.json_response(
        {"images": docs, "next_cursor": _cursor(next_id) if next_id is not None else None}
    )


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 description, shipped beside the code it describes."""
    text = importlib.resources.files("watcher").joinpath("openapi.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: served without the token, it describes but reveals nothing."""
    return web.json_response(openapi_document())


def build_app(daemon: Daemon) -> web.Application:
    """The aiohttp application for a daemon."""
    app = web.Application(client_max_size=MAX_BODY + 1)
    app[DAEMON] = daemon
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/webhooks/{registry}", webhook)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/coverage", coverage)
    app.router.add_get("/api/v1/images", images)
    app.router.add_get("/api/v1/images/{digest}", image)
    app.router.add_get("/api/v1/images/{digest}/history", image_history)
    return app
