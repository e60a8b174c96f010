"""RegistryClient against a real docker-registry 2.8 first, then against small fakes.

The first half pushes and pulls through the real CNCF distribution server, which is where
the protocol quirks live. The second half uses tiny aiohttp servers, *only* for behaviour no
local registry offers: token auth, Basic auth, throttling, 5xx, lying or hostile responses,
a referrers API, and paginated listings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.services import free_port
from watcher.metrics import Metrics
from watcher.refs import Digest, referrers_fallback_tag, sha256_digest
from watcher.registry.auth import parse_www_authenticate
from watcher.registry.client import (
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
)
from watcher.registry.credentials import Credentials, docker_config_credentials
from watcher.registry.errors import (
    AuthError,
    DigestMismatchError,
    NotFoundError,
    ProtocolError,
    RegistryError,
    RegistryUnavailableError,
    ThrottledError,
    TooLargeError,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
SIG_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


async def push_image(
    client: RegistryClient, repo: str, tag: str | None, payload: bytes = b"layer"
) -> tuple[Digest, bytes]:
    """Push config + layer + OCI manifest; by tag, or by digest when tag is None."""
    config = canonical({"architecture": "amd64", "os": "linux", "x": payload.decode()})
    config_digest = await client.put_blob(repo, config)
    layer_digest = await client.put_blob(repo, payload)
    raw = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(payload)}],
        }
    )
    reference = tag if tag is not None else sha256_digest(raw)
    digest = await client.put_manifest(repo, reference, raw, OCI_MANIFEST)
    return digest, raw


def requests_made(metrics: Metrics, registry: str, method: str, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "watcher_registry_requests_total", {"registry": registry, "method": method, "code": code}
    )
    return value or 0.0


# --------------------------------------------------------------------- real docker-registry


async def test_ping_and_host(registry_client: RegistryClient, registry_url: str) -> None:
    await registry_client.ping()
    assert registry_client.host == registry_url.removeprefix("http://")


async def test_push_and_pull_manifest_by_tag_and_digest(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("img")
    digest, raw = await push_image(registry_client, repo, "v1")
    assert digest == sha256_digest(raw)

    by_tag = await registry_client.get_manifest(repo, "v1")
    by_digest = await registry_client.get_manifest(repo, digest)
    for manifest in (by_tag, by_digest):
        assert manifest.digest == digest
        assert manifest.raw == raw
        assert manifest.media_type == OCI_MANIFEST
        assert manifest.size == len(raw)
        assert manifest.json["layers"][0]["mediaType"] == OCI_LAYER

    for reference in ("v1", digest):
        head = await registry_client.head_manifest(repo, reference)
        assert head is not None
        assert (head.digest, head.media_type, head.size) == (digest, OCI_MANIFEST, len(raw))

    layer_digest = by_tag.json["layers"][0]["digest"]
    assert await registry_client.get_blob(repo, layer_digest, max_bytes=1024) == b"layer"
    with pytest.raises(TooLargeError):
        await registry_client.get_blob(repo, layer_digest, max_bytes=3)


async def test_put_blob_skips_blobs_already_present(
    registry_url: str, unique_repo: Callable[[str], str]
) -> None:
    metrics = Metrics()
    async with RegistryClient("local", registry_url, metrics=metrics) as client:
        repo = unique_repo("blob")
        first = await client.put_blob(repo, b"same bytes")
        second = await client.put_blob(repo, b"same bytes")
    assert first == second == sha256_digest(b"same bytes")
    assert requests_made(metrics, "local", "POST", "202") == 1
    assert requests_made(metrics, "local", "HEAD", "200") == 1
    assert requests_made(metrics, "local", "PUT", "201") == 1


async def test_index_pushed_by_digest_then_tagged(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("index")
    child, child_raw = await push_image(registry_client, repo, None, b"arm64")
    index_raw = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child,
                    "size": len(child_raw),
                    "platform": {"architecture": "arm64", "os": "linux"},
                }
            ],
        }
    )
    index_digest = await registry_client.put_manifest(
        repo, sha256_digest(index_raw), index_raw, OCI_INDEX
    )
    index = await registry_client.get_manifest(repo, index_digest)
    assert (index.media_type, index.raw) == (OCI_INDEX, index_raw)
    # 2.8 says NAME_UNKNOWN for a repository without tags; that is an empty list.
    assert await registry_client.list_tags(repo) == []

    assert await registry_client.put_manifest(repo, "latest", index_raw, OCI_INDEX) == index_digest
    head = await registry_client.head_manifest(repo, "latest")
    assert head is not None and (head.digest, head.media_type) == (index_digest, OCI_INDEX)
    assert (await registry_client.get_manifest(repo, child)).raw == child_raw


async def test_tags_and_catalog(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("tags")
    other = unique_repo("other")
    digest, _ = await push_image(registry_client, repo, "v1")
    for tag in ("v2", "latest", referrers_fallback_tag(digest) + ".sig"):
        await push_image(registry_client, repo, tag)
    await push_image(registry_client, other, "x")

    tags = await registry_client.list_tags(repo)
    assert sorted(tags) == sorted(["v1", "v2", "latest", referrers_fallback_tag(digest) + ".sig"])
    # 2.8 ignores n= for tags and sends everything in one response.
    assert sorted(await registry_client.list_tags(repo, page_size=1)) == sorted(tags)

    everything = await registry_client.catalog()
    assert {repo, other} <= set(everything)
    # n=1 makes 2.8 paginate the catalog with relative Link headers; we follow them all.
    assert await registry_client.catalog(page_size=1) == everything


async def test_referrers_unsupported_so_fallback_tag_is_used(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("referrers")
    subject, subject_raw = await push_image(registry_client, repo, "v1")
    assert await registry_client.referrers(repo, subject) is None

    # A cosign-style bundle referrer: pushed by digest, with subject and artifactType.
    empty = await registry_client.put_blob(repo, b"{}")
    bundle = await registry_client.put_blob(repo, b'{"bundle":true}')
    referrer_raw = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE,
            "config": {"mediaType": EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": BUNDLE, "digest": bundle, "size": 15}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_raw)},
        }
    )
    referrer = await registry_client.put_manifest(
        repo, sha256_digest(referrer_raw), referrer_raw, OCI_MANIFEST
    )
    fallback_raw = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": referrer,
                    "size": len(referrer_raw),
                    "artifactType": BUNDLE,
                }
            ],
        }
    )
    tag = referrers_fallback_tag(subject)
    await registry_client.put_manifest(repo, tag, fallback_raw, OCI_INDEX)

    assert await registry_client.referrers(repo, subject) is None  # still no API in 2.8
    index = await registry_client.get_manifest_optional(repo, tag)
    assert index is not None and index.media_type == OCI_INDEX
    [descriptor] = [Descriptor.from_json(m) for m in index.json["manifests"]]
    assert (descriptor.digest, descriptor.artifact_type) == (referrer, BUNDLE)
    fetched = await registry_client.get_manifest(repo, descriptor.digest)
    assert fetched.json["subject"]["digest"] == subject
    assert fetched.artifact_type == BUNDLE


async def test_missing_things_are_none_or_not_found(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("missing")
    await push_image(registry_client, repo, "v1")
    absent = sha256_digest(b"never pushed")
    assert await registry_client.get_manifest_optional(repo, "nope") is None
    assert await registry_client.get_manifest_optional(repo, absent) is None
    assert await registry_client.get_manifest_optional(unique_repo("ghost"), "v1") is None
    assert await registry_client.head_manifest(repo, "nope") is None
    with pytest.raises(NotFoundError) as info:
        await registry_client.get_manifest(repo, "nope")
    assert "MANIFEST_UNKNOWN" in info.value.codes
    assert repo in str(info.value) and "local" in str(info.value)
    with pytest.raises(NotFoundError):
        await registry_client.get_blob(repo, absent, max_bytes=10)
    assert await registry_client.list_tags(unique_repo("ghost")) == []


async def test_delete_manifest(
    registry_client: RegistryClient, unique_repo: Callable[[str], str]
) -> None:
    repo = unique_repo("delete")
    digest, _ = await push_image(registry_client, repo, "v1")
    await registry_client.delete_manifest(repo, digest)
    assert await registry_client.get_manifest_optional(repo, digest) is None
    assert await registry_client.head_manifest(repo, "v1") is None
    assert "v1" not in await registry_client.list_tags(repo)
    with pytest.raises(NotFoundError):
        await registry_client.delete_manifest(repo, digest)


# --------------------------------------------------------------------- fakes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A throwaway HTTP server on 127.0.0.1 whose every request goes to ``handler``."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class Sleeps:
    """An injected ``sleep`` that records the delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fake_client(url: str, **kwargs: Any) -> RegistryClient:
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("retry_base_delay", 0.001)
    return RegistryClient("fake", url, **kwargs)


def manifest_body(n: int = 0) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "n": n, "layers": []})


def error_body(code: str, message: str = "") -> bytes:
    return canonical({"errors": [{"code": code, "message": message or code.lower()}]})


def json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=body, status=status, headers={"Content-Type": "application/json", **headers}
    )


def test_parse_www_authenticate() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push",error="insufficient_scope"'
    )
    [bearer] = parse_www_authenticate([header])
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:samalba/my-app:pull,push",
        "error": "insufficient_scope",
    }
    two = parse_www_authenticate(['Basic realm="a \\"quoted\\", realm", Bearer realm=x, service=y'])
    assert [(c.scheme, dict(c.params)) for c in two] == [
        ("basic", {"realm": 'a "quoted", realm'}),
        ("bearer", {"realm": "x", "service": "y"}),
    ]
    assert parse_www_authenticate(["", "=garbage"]) == []


class TokenRegistry:
    """Fake registry plus token server: Bearer challenge, realm/service/scope, expiry."""

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.token_requests: list[dict[str, Any]] = []
        self.valid: set[str] = set()
        self.unauthorized = 0
        self.served = 0
        self.credentials = credentials

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        origin = f"http://{request.host}"
        if request.path == "/token":
            self.token_requests.append(
                {
                    "service": request.query.get("service"),
                    "scope": request.query.getall("scope", []),
                    "authorization": request.headers.get("Authorization"),
                }
            )
            if self.credentials is not None:
                user, password = self.credentials
                want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if request.headers.get("Authorization") != want:
                    return json_response(error_body("UNAUTHORIZED"), 401)
            token = f"tok-{len(self.token_requests)}-SECRET"
            self.valid.add(token)
            # access_token only (no "token"), as some OAuth2-flavoured servers answer.
            return json_response(canonical({"access_token": token, "expires_in": 300}))
        name = request.path.removeprefix("/v2/").split("/manifests/")[0]
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
            self.unauthorized += 1
            challenge = (
                f'Bearer realm="{origin}/token",service="fake-registry",'
                f'scope="repository:{name}:pull"'
            )
            return json_response(error_body("UNAUTHORIZED"), 401, **{"WWW-Authenticate": challenge})
        self.served += 1
        body = manifest_body()
        return json_response(
            body, **{"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(body)}
        )


async def test_bearer_token_dance_fetches_one_token_for_many_requests() -> None:
    fake = TokenRegistry()
    async with serve(fake) as url, fake_client(url) as client:
        results = await asyncio.gather(*(client.get_manifest("acme/app", "v1") for _ in range(20)))
        assert {m.digest for m in results} == {sha256_digest(manifest_body())}
        await client.get_manifest("acme/app", "v2")  # cached token sent up front: no 401
    assert fake.token_requests == [
        {"service": "fake-registry", "scope": ["repository:acme/app:pull"], "authorization": None}
    ]
    assert fake.served == 21
    assert fake.unauthorized <= 20
    assert client.token_fetches == 1


async def test_bearer_token_is_refreshed_before_expiry_and_after_revocation() -> None:
    fake = TokenRegistry()
    now = [1000.0]
    async with serve(fake) as url, fake_client(url, clock=lambda: now[0]) as client:
        await client.get_manifest("acme/app", "v1")
        now[0] += 200  # expires_in=300: still comfortably valid
        await client.get_manifest("acme/app", "v1")
        assert len(fake.token_requests) == 1
        now[0] += 80  # inside the refresh margin before expiry: fetch a new one first
        unauthorized = fake.unauthorized
        await client.get_manifest("acme/app", "v1")
        assert len(fake.token_requests) == 2
        assert fake.unauthorized == unauthorized  # refreshed proactively, not after a 401
        fake.valid.clear()  # the server revokes: one 401, one new token, one retry
        await client.get_manifest("acme/app", "v1")
        assert len(fake.token_requests) == 3
        # A different repository is a different scope, hence a different token.
        await client.get_manifest("acme/other", "v1")
        assert fake.token_requests[-1]["scope"] == ["repository:acme/other:pull"]


async def test_bearer_with_credentials_and_rejections_never_leak_secrets() -> None:
    fake = TokenRegistry(credentials=("alice", "hunter2-pass"))
    creds = Credentials("alice", "hunter2-pass")
    async with serve(fake) as url:
        async with fake_client(url, credentials=creds) as client:
            await client.get_manifest("acme/app", "v1")
        basic = fake.token_requests[0]["authorization"]
        assert basic == "Basic " + base64.b64encode(b"alice:hunter2-pass").decode()

        async with fake_client(url, credentials=Credentials("alice", "wrong-pass")) as client:
            with pytest.raises(AuthError) as info:
                await client.get_manifest("acme/app", "v1")
        text = str(info.value) + repr(info.value) + repr(client)
        assert "alice" in text and "wrong-pass" not in text

        async with fake_client(url) as client:  # anonymous token refused by the token server
            with pytest.raises(AuthError):
                await client.get_manifest("acme/app", "v1")
    assert "hunter2" not in repr(creds)


async def test_401_after_fresh_token_is_auth_error_without_token_in_message() -> None:
    tokens: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            tokens.append("SECRET-TOKEN-42")
            return json_response(canonical({"token": tokens[-1]}))
        challenge = f'Bearer realm="http://{request.host}/token",service="svc"'
        echo = error_body("UNAUTHORIZED", f"bad {request.headers.get('Authorization')}")
        return json_response(echo, 401, **{"WWW-Authenticate": challenge})

    async with serve(handler) as url, fake_client(url) as client:
        with pytest.raises(AuthError) as info:
            await client.get_manifest("acme/app", "v1")
    assert len(tokens) == 1
    assert "SECRET-TOKEN" not in str(info.value) + repr(info.value)
    assert "fake" in str(info.value) and "/v2/acme/app/manifests/v1" in str(info.value)


async def test_basic_auth() -> None:
    seen: list[str | None] = []
    good = "Basic " + base64.b64encode(b"bob:s3cr3t-basic").decode()

    async def handler(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        seen.append(auth)
        if auth is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        if auth != good:
            # A hostile registry echoing what we sent (raw and decoded) in a 403 message.
            decoded = base64.b64decode(auth.removeprefix("Basic ")).decode()
            return json_response(error_body("DENIED", f"no {auth} = {decoded}"), 403)
        return json_response(canonical({"name": "acme/app", "tags": ["v1"]}))

    async with serve(handler) as url:
        async with fake_client(url, credentials=Credentials("bob", "s3cr3t-basic")) as client:
            assert await client.list_tags("acme/app") == ["v1"]
            assert await client.list_tags("acme/app") == ["v1"]
        assert seen == [None, good, good]  # Basic sent up front once learned

        async with fake_client(url) as client:
            with pytest.raises(AuthError, match="requires Basic"):
                await client.ping()

        async with fake_client(url, credentials=Credentials("bob", "s3cr3t-other")) as client:
            with pytest.raises(AuthError) as info:
                await client.ping()
        text = str(info.value) + repr(info.value)
        assert "DENIED" in text
        assert "s3cr3t" not in text
        assert base64.b64encode(b"bob:s3cr3t-other").decode() not in text


async def test_429_retry_after_is_honoured_then_succeeds() -> None:
    calls = 0
    future = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answers = ["7", future, "100000"]

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls <= len(answers):
            return json_response(
                error_body("TOOMANYREQUESTS"), 429, **{"Retry-After": answers[calls - 1]}
            )
        return json_response(canonical({"name": "a/b", "tags": ["v1"]}))

    sleeps = Sleeps()
    metrics = Metrics()
    async with (
        serve(handler) as url,
        fake_client(
            url, sleep=sleeps, metrics=metrics, retry_attempts=4, retry_after_cap=60
        ) as client,
    ):
        assert await client.list_tags("a/b") == ["v1"]
    assert sleeps.delays[0] == 7
    assert 25 <= sleeps.delays[1] <= 31  # HTTP-date form
    assert sleeps.delays[2] == 60  # capped
    assert requests_made(metrics, "fake", "GET", "429") == 3
    assert requests_made(metrics, "fake", "GET", "200") == 1


async def test_429_forever_is_throttled_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return json_response(error_body("TOOMANYREQUESTS", "You have reached your pull rate"), 429)

    async with serve(handler) as url, fake_client(url, retry_attempts=2) as client:
        with pytest.raises(ThrottledError, match="pull rate"):
            await client.get_manifest("a/b", "v1")


async def test_503_is_retried_then_unavailable_never_not_found() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return json_response(error_body("UNAVAILABLE"), 503)

    sleeps = Sleeps()
    metrics = Metrics()
    async with (
        serve(handler) as url,
        fake_client(url, sleep=sleeps, metrics=metrics, retry_attempts=3) as client,
    ):
        with pytest.raises(RegistryUnavailableError) as info:
            await client.get_manifest_optional("a/b", "v1")
        with pytest.raises(RegistryUnavailableError):
            await client.referrers("a/b", sha256_digest(b"x"))
    assert calls == 6
    assert len(sleeps.delays) == 4  # two waits between three attempts, twice
    assert info.value.status == 503 and "UNAVAILABLE" in str(info.value)
    assert requests_made(metrics, "fake", "GET", "503") == 6


async def test_transient_503_then_success() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.Response(status=503)
        return json_response(canonical({}))

    async with serve(handler) as url, fake_client(url) as client:
        await client.ping()
    assert calls == 3


async def test_connection_refused_and_timeout_are_unavailable() -> None:
    metrics = Metrics()
    port = free_port()
    async with fake_client(f"http://127.0.0.1:{port}", metrics=metrics, retry_attempts=2) as c:
        with pytest.raises(RegistryUnavailableError, match="no answer"):
            await c.ping()
    assert requests_made(metrics, "fake", "GET", "error") == 2

    never = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    started = time.monotonic()
    async with serve(stall) as url, fake_client(url, timeout=0.2, retry_attempts=2) as client:
        with pytest.raises(RegistryUnavailableError, match="timed out"):
            await client.list_tags("a/b")
    assert time.monotonic() - started < 3


async def test_digest_mismatch_when_registry_lies() -> None:
    body = manifest_body(1)
    other = sha256_digest(b"something else")

    async def handler(request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            return web.Response(body=b"not the blob")
        headers = {"Content-Type": OCI_MANIFEST}
        if request.path.endswith("/liar"):
            headers["Docker-Content-Digest"] = other
        if request.method == "HEAD":
            headers["Docker-Content-Digest"] = other
            headers["Content-Length"] = str(len(body))
            return web.Response(status=200, headers=headers)
        return web.Response(body=body, headers=headers)

    async with serve(handler) as url, fake_client(url) as client:
        with pytest.raises(DigestMismatchError) as info:
            await client.get_manifest("a/b", "liar")
        assert info.value.expected == other and info.value.actual == sha256_digest(body)
        # By tag without the header, the body is accepted (nothing to check it against).
        assert (await client.get_manifest("a/b", "honest")).digest == sha256_digest(body)
        wanted = sha256_digest(b"what we asked for")
        with pytest.raises(DigestMismatchError):
            await client.get_manifest("a/b", wanted)
        with pytest.raises(DigestMismatchError):
            await client.get_manifest_optional("a/b", wanted)
        with pytest.raises(DigestMismatchError):
            await client.head_manifest("a/b", wanted)
        with pytest.raises(DigestMismatchError):
            await client.get_blob("a/b", wanted, max_bytes=100)


async def test_oversized_manifest_is_cut_off_while_streaming() -> None:
    written = {"chunked": 0, "finished": False}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/declared"):
            big = b" " * (2 * 1024 * 1024)
            return web.Response(body=big, headers={"Content-Type": OCI_MANIFEST})
        resp = web.StreamResponse(headers={"Content-Type": OCI_MANIFEST})
        resp.enable_chunked_encoding()  # no Content-Length: only streaming can catch it
        await resp.prepare(request)
        chunk = b"[" * 65536
        try:
            for _ in range(1024):  # 64 MiB, unless the client hangs up first
                await resp.write(chunk)
                written["chunked"] += len(chunk)
            written["finished"] = True
        except (ConnectionError, RuntimeError):
            pass
        return resp

    cap = 256 * 1024
    async with serve(handler) as url, fake_client(url, max_manifest_bytes=cap) as client:
        with pytest.raises(TooLargeError, match="exceeded"):
            await client.get_manifest("a/b", "chunked")
        with pytest.raises(TooLargeError, match="declares"):
            await client.get_manifest("a/b", "declared")
        with pytest.raises(TooLargeError):
            await client.get_blob("a/b", sha256_digest(b"x"), max_bytes=1000)
    assert not written["finished"]


def index_body(*descriptors: dict[str, Any]) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)})


def descriptor(n: int, artifact_type: str) -> dict[str, Any]:
    return {
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(f"referrer {n}".encode()),
        "size": 1234,
        "artifactType": artifact_type,
        "annotations": {"org.opencontainers.image.created": "2022-01-01T14:42:55Z"},
    }


async def test_referrers_api_with_pagination() -> None:
    subject = sha256_digest(b"image")
    path = f"/v2/acme/app/referrers/{subject}"
    seen_accept: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen_accept.append(request.headers.get("Accept", ""))
        page = request.query.get("page", "1")
        headers = {"Content-Type": OCI_INDEX}
        if page == "1":
            headers["Link"] = f'<{path}?page=2>; rel="next"'  # relative
            return web.Response(body=index_body(descriptor(1, BUNDLE)), headers=headers)
        if page == "2":
            headers["Link"] = f'<http://{request.host}{path}?page=3>; rel="next"'  # absolute
            body = index_body(descriptor(2, "application/x-sbom"))
            return web.Response(body=body, headers=headers)
        return web.Response(body=index_body(descriptor(3, BUNDLE)), headers=headers)

    async with serve(handler) as url, fake_client(url) as client:
        found = await client.referrers("acme/app", subject)
        assert found is not None
        assert [d.digest for d in found] == [
            sha256_digest(f"referrer {n}".encode()) for n in (1, 2, 3)
        ]
        assert found[0] == Descriptor(
            OCI_MANIFEST,
            sha256_digest(b"referrer 1"),
            1234,
            BUNDLE,
            {"org.opencontainers.image.created": "2022-01-01T14:42:55Z"},
        )
        # The server did not say it filtered, so the client does.
        only = await client.referrers("acme/app", subject, artifact_type=BUNDLE)
        assert only is not None and [d.artifact_type for d in only] == [BUNDLE, BUNDLE]
    assert seen_accept[0] == OCI_INDEX


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (404, "text/plain", b"404 page not found\n"),
        (400, "application/json", error_body("UNSUPPORTED")),
        (406, "text/plain", b"not acceptable"),
        (200, "text/html", b"<html>a registry UI</html>"),
        (200, "application/json", canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST})),
    ],
)
async def test_referrers_unsupported_is_none(status: int, content_type: str, body: bytes) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    async with serve(handler) as url, fake_client(url) as client:
        assert await client.referrers("a/b", sha256_digest(b"x")) is None


async def test_referrers_absence_is_remembered_and_rechecked() -> None:
    """No API once means no probe for every digest (one request less each), for a while."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(status=404, text="404 page not found")

    now = [1000.0]
    async with serve(handler) as url, fake_client(url, clock=lambda: now[0]) as client:
        for i in range(3):
            assert await client.referrers("a/b", sha256_digest(bytes([i]))) is None
        assert len(hits) == 1
        now[0] += 601  # long enough: the registry may have been upgraded
        assert await client.referrers("a/b", sha256_digest(b"z")) is None
        assert len(hits) == 2


async def test_referrers_404_after_the_api_worked_is_an_error_not_no_signatures() -> None:
    """A proxy or failover answering 404 must not make a bundle-signed image look unsigned."""
    answers = [200, 404]

    async def handler(request: web.Request) -> web.StreamResponse:
        if answers.pop(0) == 200:
            body = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            return web.Response(body=body, headers={"Content-Type": OCI_INDEX})
        return web.Response(status=404, text="404 page not found")

    async with serve(handler) as url, fake_client(url) as client:
        assert await client.referrers("a/b", sha256_digest(b"x")) == []
        with pytest.raises(RegistryUnavailableError):
            await client.referrers("a/b", sha256_digest(b"y"))


async def test_referrers_malformed_index_is_protocol_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        bad = canonical({"mediaType": OCI_INDEX, "manifests": [{"digest": "sha256:zz"}]})
        return web.Response(body=bad, headers={"Content-Type": OCI_INDEX})

    async with serve(handler) as url, fake_client(url) as client:
        with pytest.raises(ProtocolError):
            await client.referrers("a/b", sha256_digest(b"x"))


async def test_link_pagination_for_tags_and_catalog() -> None:
    pages = {
        "/v2/a/b/tags/list": (["t1", "t2"], '</v2/a/b/tags/list?last=t2&n=2>; rel="next"'),
        "/v2/a/b/tags/list?last=t2&n=2": (["t3"], "ABS /v2/a/b/tags/list?last=t3&n=2"),
        "/v2/a/b/tags/list?last=t3&n=2": (["t4"], None),
        "/v2/_catalog": (["a/b"], '</v2/_catalog?last=a%2Fb&n=1>; rel="next"'),
        "/v2/_catalog?last=a%2Fb&n=1": (["c/d"], None),
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.raw_path.replace("?n=2", "")
        items, link = pages[key]
        headers = {}
        if link is not None:
            if link.startswith("ABS "):
                link = f'<http://{request.host}{link[4:]}>; rel="next"'
            headers["Link"] = link
        field = "repositories" if "_catalog" in key else "tags"
        return json_response(canonical({field: items}), **headers)

    async with serve(handler) as url, fake_client(url) as client:
        assert await client.list_tags("a/b", page_size=2) == ["t1", "t2", "t3", "t4"]
        assert await client.catalog() == ["a/b", "c/d"]


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ('<http://evil.example/v2/a/b/tags/list?x=1>; rel="next"', "another origin"),
        ('</v2/a/b/tags/list>; rel="next"', "seen page"),
        ("</v2/a/b/tags/list?p={n}>; rel=next", "more than 3 pages"),
    ],
)
async def test_bad_pagination_is_protocol_error(link: str, message: str) -> None:
    count = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        return json_response(canonical({"tags": ["x"]}), Link=link.replace("{n}", str(count)))

    async with serve(handler) as url, fake_client(url, max_pages=3) as client:
        with pytest.raises(ProtocolError, match=message):
            await client.list_tags("a/b")


@pytest.mark.parametrize(
    ("status", "body", "content_type", "outcome"),
    [
        (404, error_body("MANIFEST_UNKNOWN"), "application/json", None),
        (404, error_body("NAME_UNKNOWN"), "application/json", None),
        (404, b"404 page not found\n", "text/plain", NotFoundError),
        (500, b"oops", "text/plain", RegistryUnavailableError),
        (400, error_body("MANIFEST_INVALID"), "application/json", RegistryError),
        (200, b"not json", OCI_MANIFEST, ProtocolError),
        (200, b"[1, 2]", OCI_MANIFEST, ProtocolError),
    ],
)
async def test_get_manifest_optional_is_none_only_for_a_genuine_404(
    status: int, body: bytes, content_type: str, outcome: type[Exception] | None
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept"] == MANIFEST_ACCEPT
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    async with serve(handler) as url, fake_client(url, retry_attempts=1) as client:
        if outcome is None:
            assert await client.get_manifest_optional("a/b", "v1") is None
        else:
            with pytest.raises(outcome):
                await client.get_manifest_optional("a/b", "v1")


async def test_tags_with_wrong_types_is_protocol_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return json_response(canonical({"tags": [1, 2]}))

    async with serve(handler) as url, fake_client(url) as client:
        with pytest.raises(ProtocolError, match="not a list of strings"):
            await client.list_tags("a/b")


async def test_docker_manifest_media_type_from_body() -> None:
    body = canonical({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "layers": []})

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    async with serve(handler) as url, fake_client(url) as client:
        manifest = await client.get_manifest("a/b", "v1")
    assert manifest.media_type == DOCKER_MANIFEST


def test_client_construction_guards_secrets() -> None:
    with pytest.raises(ValueError) as info:
        RegistryClient("r", "https://user:pa55word@registry.example")
    assert "pa55word" not in str(info.value)
    creds = Credentials("u", "pw1")
    client = RegistryClient("r", "https://registry-1.docker.io", credentials=creds)
    assert client.host == "docker.io"
    assert "pw1" not in repr(client)
    assert RegistryClient("r", "http://127.0.0.1:5000/").host == "127.0.0.1:5000"
    with pytest.raises(ValueError):
        RegistryClient("r", "ftp://x")


def test_docker_config_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    encoded = base64.b64encode(b"hubuser:hub:pass").decode()
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": encoded},
                    "ghcr.io": {"auth": base64.b64encode(b"gh:pat").decode()},
                    "https://registry.example:5000/v2/": {"username": "u", "password": "p"},
                    "token.example": {"identitytoken": "refresh"},
                },
                "credsStore": "secretservice",
            }
        )
    )
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert docker_config_credentials(config, host) == Credentials("hubuser", "hub:pass")
    assert docker_config_credentials(config, "ghcr.io") == Credentials("gh", "pat")
    assert docker_config_credentials(config, "registry.example:5000") == Credentials("u", "p")
    assert docker_config_credentials(config, "token.example") is None
    assert docker_config_credentials(config, "quay.io") is None
    assert docker_config_credentials(tmp_path / "absent.json", "ghcr.io") is None

    config.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "%%%not-base64-s3cret"}}}))
    with pytest.raises(ValueError) as info:
        docker_config_credentials(config, "ghcr.io")
    assert "s3cret" not in str(info.value)


def test_sha256_digest_matches_hashlib() -> None:
    assert sha256_digest(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
