"""An async client for the OCI distribution API, written for a registry we do not trust.

The watcher's verdicts are only as good as the bytes it reads, so this client:

* hashes every manifest and blob body and refuses content that does not match the digest it
  asked for, or the ``Docker-Content-Digest`` the registry announced (``DigestMismatchError``);
* streams bodies in chunks and stops at a size cap, whatever ``Content-Length`` claims, so a
  hostile or broken registry cannot exhaust memory (``TooLargeError``);
* never lets "could not ask" look like "not there": connection errors, timeouts, 5xx and 429
  are retried a bounded number of times and then raise ``RegistryUnavailableError`` or
  ``ThrottledError``; ``None``/``NotFoundError`` come only from a real 404;
* keeps credentials and tokens out of logs, exceptions and reprs.

One ``aiohttp.ClientSession`` per client, and a semaphore bounding in-flight requests so one
busy repository cannot monopolise a registry (or trip its rate limits) on its own.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)
from yarl import URL

from watcher import __version__, refs
from watcher.metrics import Metrics
from watcher.refs import Digest, sha256_digest
from watcher.registry.auth import Authenticator, TokenRequest
from watcher.registry.credentials import Credentials
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

log = structlog.get_logger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
# distribution 2.8 answers 404 MANIFEST_UNKNOWN when the stored type is not acceptable.
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

MiB = 1024 * 1024
DEFAULT_MAX_MANIFEST_BYTES = 4 * MiB  # distribution's own manifest limit
DEFAULT_MAX_LIST_BYTES = 32 * MiB  # 2.8 returns every tag in one page
DEFAULT_MAX_PAGES = 1000
_ERROR_BODY_CAP = 64 * 1024  # error bodies are read only to learn the error code
REFERRERS_RECHECK_SECONDS = 600.0  # how long "no referrers API" is believed
_TOKEN_BODY_CAP = 1 * MiB
_CHUNK = 64 * 1024

_GENUINE_NOT_FOUND = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN"})
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)$")
_LOWER_HEX = re.compile(r"^[0-9a-f]+$")
_ERROR_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_LINK_RE = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor, as found in an index or a referrers response."""

    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        """Validate one descriptor object from an index; ValueError says what is wrong.

        Registry JSON is untrusted: every field is type-checked here so nothing downstream
        meets a digest that is not ``sha256:<hex>`` or a size that is not an integer.
        """
        if not isinstance(data, dict):
            raise ValueError("descriptor is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        artifact_type = data.get("artifactType")
        annotations = data.get("annotations") or {}
        if not isinstance(media_type, str):
            raise ValueError("descriptor mediaType is missing or not a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("descriptor size is missing or not a non-negative integer")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ValueError("descriptor artifactType is not a string")
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ValueError("descriptor annotations are not a string-to-string object")
        if not isinstance(digest, str):
            raise ValueError("descriptor digest is missing or not a string")
        try:
            parsed = refs.parse_digest(digest)
        except refs.ReferenceError:
            raise ValueError(f"descriptor digest is not sha256:<hex>: {digest[:80]!r}") from None
        return cls(media_type, parsed, size, artifact_type or None, dict(annotations))


@dataclass(frozen=True)
class Manifest:
    """A manifest whose bytes are verified against ``digest`` (always their sha256)."""

    digest: Digest
    media_type: str
    raw: bytes = field(repr=False)
    json: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def size(self) -> int:
        """Length of the raw bytes, as a descriptor's ``size`` would state it."""
        return len(self.raw)

    @property
    def artifact_type(self) -> str | None:
        """``artifactType``, falling back to the config media type as the referrers API does."""
        value = self.json.get("artifactType")
        if isinstance(value, str):
            return value
        config = self.json.get("config")
        if isinstance(config, dict) and isinstance(config.get("mediaType"), str):
            return str(config["mediaType"])
        return None

    def descriptor(self) -> Descriptor:
        """A descriptor pointing at this manifest (for building indexes and referrers)."""
        return Descriptor(self.media_type, self.digest, self.size, self.artifact_type)


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD tells about a manifest without downloading it."""

    digest: Digest
    media_type: str
    size: int


@dataclass(frozen=True)
class _Response:
    method: str
    url: URL
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class RegistryClient:
    """One registry, spoken to over the distribution API; use as ``async with``.

    ``name`` is the configured registry name (metrics label, error messages); ``base_url``
    is where its ``/v2/`` lives. ``sleep``, ``clock`` and the retry delays are injectable so
    tests can check backoff and token expiry without waiting.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        max_concurrency: int = 8,
        timeout: float = 30.0,
        retry_attempts: int = 4,
        metrics: Metrics | None = None,
        max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
        session: aiohttp.ClientSession | None = None,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
        max_pages: int = DEFAULT_MAX_PAGES,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        retry_after_cap: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        root = URL(base_url)
        if root.user is not None or root.password is not None:
            # Said without echoing the URL: it holds a secret.
            raise ValueError(f"registry {name!r}: put credentials in credentials=, not base_url")
        if root.scheme not in ("http", "https") or not root.host:
            raise ValueError(f"registry {name!r}: base_url must be http(s)://host[:port]")
        if retry_attempts < 1 or max_concurrency < 1:
            raise ValueError("retry_attempts and max_concurrency must be at least 1")
        self.name = name
        self._root = root.with_query(None).with_fragment(None)
        self._prefix = str(self._root).rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry_attempts = retry_attempts
        self._metrics = metrics
        self._max_manifest_bytes = max_manifest_bytes
        self._max_list_bytes = max_list_bytes
        self._max_pages = max_pages
        self._retry_base = retry_base_delay
        self._retry_max = retry_max_delay
        self._retry_after_cap = retry_after_cap
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._session = session
        self._owns_session = session is None
        self._auth = Authenticator(name, credentials, self._fetch_token, clock=clock)
        self._clock = clock
        # Whether this registry has the OCI 1.1 referrers API: None until it answers.
        self._referrers_api: bool | None = None
        self._referrers_recheck_at = 0.0

    def __repr__(self) -> str:
        return f"RegistryClient(name={self.name!r}, base_url={self._prefix!r})"

    @property
    def host(self) -> str:
        """The registry as users write it in image names, e.g. ``127.0.0.1:5000``."""
        host = self._root.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = self._root.explicit_port
        return refs.normalize_registry(f"{host}:{port}" if port is not None else host)

    @property
    def base_url(self) -> str:
        """Where this registry's ``/v2/`` API lives (no trailing slash)."""
        return self._prefix

    @property
    def token_fetches(self) -> int:
        """How many token requests were made so far (tokens are cached; useful in tests)."""
        return self._auth.token_fetches

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------- pull side

    async def ping(self) -> None:
        """``GET /v2/``: check the registry speaks the API and our auth works."""
        resp = await self._request("GET", self._url("/v2/"), scope=None, max_bytes=_ERROR_BODY_CAP)
        if resp.status != 200:
            raise self._status_error(resp, "API version check failed")

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch and verify a manifest by tag or digest.

        By digest, the body must hash to it; by tag, to ``Docker-Content-Digest`` if sent.
        """
        expected = self._check_reference(reference)
        url = self._url(f"/v2/{self._check_repo(repository)}/manifests/{reference}")
        resp = await self._request(
            "GET",
            url,
            scope=_pull(repository),
            headers={"Accept": MANIFEST_ACCEPT},
            max_bytes=self._max_manifest_bytes,
        )
        if resp.status != 200:
            raise self._status_error(resp, f"manifest {repository}:{reference}")
        header = resp.headers.get("Docker-Content-Digest")
        if expected is not None:
            self._verify(resp, resp.body, expected, "manifest body does not match its digest")
        elif header:
            self._verify(
                resp, resp.body, header, "manifest body does not match Docker-Content-Digest"
            )
        return self._parse_manifest(resp)

    async def get_manifest_optional(self, repository: str, reference: str) -> Manifest | None:
        """Like ``get_manifest``, but None when the registry says it does not exist.

        Only a 404 carrying MANIFEST_UNKNOWN or NAME_UNKNOWN counts; any other failure
        (including a bare 404 from something that is not the registry) still raises.
        """
        try:
            return await self.get_manifest(repository, reference)
        except NotFoundError as exc:
            if _GENUINE_NOT_FOUND.intersection(exc.codes):
                return None
            raise

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """``HEAD`` a manifest: cheap change detection (does not count as a Hub pull).

        None on 404 (a HEAD has no body, so the error code cannot be checked). Falls back
        to a GET when the registry sends no ``Docker-Content-Digest`` for a tag.
        """
        expected = self._check_reference(reference)
        url = self._url(f"/v2/{self._check_repo(repository)}/manifests/{reference}")
        resp = await self._request(
            "HEAD", url, scope=_pull(repository), headers={"Accept": MANIFEST_ACCEPT}, max_bytes=0
        )
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._status_error(resp, f"manifest {repository}:{reference}")
        header = resp.headers.get("Docker-Content-Digest") or expected
        size = _content_length(resp.headers)
        if header is None or size is None:
            # The header is only a SHOULD; without it (or a size) the body must be read.
            full = await self.get_manifest(repository, reference)
            return ManifestHead(full.digest, full.media_type, full.size)
        digest = self._parse_header_digest(resp, header)
        if expected is not None and digest != expected:
            raise DigestMismatchError(
                self.name,
                "HEAD answered for a different digest",
                expected=expected,
                actual=digest,
                method="HEAD",
                url=resp.url,
            )
        if not digest.startswith("sha256:"):
            # Our digests are sha256; a registry announcing another algorithm needs a GET.
            full = await self.get_manifest(repository, reference)
            return ManifestHead(full.digest, full.media_type, full.size)
        media_type = _media_type(resp.headers.get("Content-Type"))
        return ManifestHead(Digest(digest), media_type, size)

    async def get_blob(self, repository: str, digest: Digest | str, *, max_bytes: int) -> bytes:
        """Download a blob (redirects followed) and verify it hashes to ``digest``."""
        expected = self._check_reference(digest)
        if expected is None:
            raise refs.ReferenceError(f"blobs are fetched by digest, not {digest!r}")
        url = self._url(f"/v2/{self._check_repo(repository)}/blobs/{expected}")
        resp = await self._request("GET", url, scope=_pull(repository), max_bytes=max_bytes)
        if resp.status != 200:
            raise self._status_error(resp, f"blob {expected} in {repository}")
        self._verify(resp, resp.body, expected, "blob does not match its digest")
        return resp.body

    async def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, following ``Link: rel="next"`` pages.

        ``page_size`` sends ``n=`` (distribution 2.8 ignores it and returns everything).
        A 404 NAME_UNKNOWN gives ``[]``: 2.8 answers that for a repository whose manifests
        were all pushed by digest, so "no tags" is the only honest reading. Any other 404
        raises ``NotFoundError``.
        """
        url = self._url(f"/v2/{self._check_repo(repository)}/tags/list")
        try:
            return await self._paginated(url, "tags", _pull(repository), page_size, repository)
        except NotFoundError as exc:
            if "NAME_UNKNOWN" in exc.codes:
                return []
            raise

    async def catalog(self, *, page_size: int | None = None) -> list[str]:
        """Every repository the registry lists in ``/v2/_catalog`` (Link is relative in 2.8)."""
        url = self._url("/v2/_catalog")
        return await self._paginated(url, "repositories", "registry:catalog:*", page_size, None)

    async def referrers(
        self, repository: str, digest: Digest, *, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """Manifests whose ``subject`` is ``digest``, via the OCI 1.1 referrers API.

        None means the registry has no referrers API (404, 400, 406, or a 200 that is not an
        OCI index, as go-containerregistry treats them): the caller must then read the
        ``sha256-<hex>`` fallback tag. Any other failure raises, so "cannot ask" never reads
        as "no signatures".
        """
        expected = self._check_reference(digest)
        if expected is None:
            raise refs.ReferenceError(f"referrers are listed for a digest, not {digest!r}")
        now = self._clock()
        if self._referrers_api is False and now < self._referrers_recheck_at:
            # Known not to have the API: go straight to the fallback tag (one request less
            # per digest); ask again now and then in case the registry was upgraded.
            return None
        url = self._url(f"/v2/{self._check_repo(repository)}/referrers/{expected}")
        if artifact_type is not None:
            url = url.update_query(artifactType=artifact_type)
        out: list[Descriptor] = []
        filtered = True
        seen: set[str] = set()
        for page in range(self._max_pages):
            resp = await self._request(
                "GET",
                url,
                scope=_pull(repository),
                headers={"Accept": OCI_INDEX},
                max_bytes=self._max_manifest_bytes,
            )
            if page == 0 and resp.status in (400, 404, 406):
                if self._referrers_api:
                    # This registry answered the API before: a 404 now is a proxy or a
                    # failover, and reading the fallback tag would report "no signatures".
                    raise RegistryUnavailableError(
                        self.name,
                        f"referrers API answered {resp.status} but worked before",
                        method="GET",
                        url=resp.url,
                        status=resp.status,
                    )
                self._referrers_api = False
                self._referrers_recheck_at = now + REFERRERS_RECHECK_SECONDS
                return None
            if resp.status != 200:
                raise self._status_error(resp, f"referrers of {expected} in {repository}")
            data = _loads_or_none(resp.body)
            is_index = _media_type(resp.headers.get("Content-Type")) == OCI_INDEX or (
                isinstance(data, dict) and data.get("mediaType") == OCI_INDEX
            )
            if not is_index:
                if page == 0:
                    return None
                raise self._protocol(resp, "referrers page is not an OCI image index")
            if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
                raise self._protocol(resp, "referrers response has no 'manifests' list")
            self._referrers_api = True
            out.extend(self._descriptors(resp, data["manifests"]))
            applied = resp.headers.get("OCI-Filters-Applied", "")
            filtered = filtered and "artifactType" in [p.strip() for p in applied.split(",")]
            next_url = self._next_link(resp, seen)
            if next_url is None:
                break
            url = next_url
        else:
            raise ProtocolError(self.name, f"more than {self._max_pages} pages", url=url)
        if artifact_type is not None and not filtered:
            out = [d for d in out if d.artifact_type == artifact_type]
        return out

    # ----------------------------------------------------------------- push side

    async def put_blob(self, repository: str, data: bytes) -> Digest:
        """Upload a blob monolithically (POST then PUT ``?digest=``); skip it if present.

        For tests and the demo, not the watcher. Each request is retried on its own, so a
        PUT retried after a 5xx may meet an upload session the registry already closed and
        fail with 404 BLOB_UPLOAD_UNKNOWN; calling put_blob again is safe.
        """
        repo = self._check_repo(repository)
        digest = sha256_digest(data)
        scope = _push(repository)
        head = await self._request(
            "HEAD", self._url(f"/v2/{repo}/blobs/{digest}"), scope=scope, max_bytes=0
        )
        if head.status == 200:
            return digest
        if head.status != 404:
            raise self._status_error(head, f"blob {digest} in {repository}")
        start = await self._request(
            "POST",
            self._url(f"/v2/{repo}/blobs/uploads/"),
            scope=scope,
            data=b"",
            max_bytes=_ERROR_BODY_CAP,
        )
        if start.status != 202:
            raise self._status_error(start, f"starting a blob upload to {repository}")
        location = start.headers.get("Location")
        if not location:
            raise self._protocol(start, "upload started without a Location header")
        upload = self._same_origin(start, start.url.join(URL(location, encoded=True)))
        sep = "&" if upload.raw_query_string else "?"
        put_url = URL(f"{upload}{sep}digest={digest}", encoded=True)
        done = await self._request(
            "PUT",
            put_url,
            scope=scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            max_bytes=_ERROR_BODY_CAP,
        )
        if done.status != 201:
            raise self._status_error(done, f"finishing the upload of {digest} to {repository}")
        self._check_announced(done, digest, "blob")
        return digest

    async def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str
    ) -> Digest:
        """Push manifest bytes under a tag or their own digest; returns their digest."""
        expected = self._check_reference(reference)
        digest = sha256_digest(raw)
        if expected is not None and expected != digest:
            raise ValueError(f"manifest bytes hash to {digest}, not to the reference {reference}")
        url = self._url(f"/v2/{self._check_repo(repository)}/manifests/{reference}")
        resp = await self._request(
            "PUT",
            url,
            scope=_push(repository),
            data=raw,
            headers={"Content-Type": media_type},
            max_bytes=_ERROR_BODY_CAP,
        )
        if resp.status != 201:
            raise self._status_error(resp, f"pushing manifest {repository}:{reference}")
        self._check_announced(resp, digest, "manifest")
        return digest

    def _check_announced(self, resp: _Response, digest: Digest, what: str) -> None:
        """A push answered with another digest means the registry stored something else."""
        announced = resp.headers.get("Docker-Content-Digest")
        if announced and announced != digest:
            raise DigestMismatchError(
                self.name,
                f"registry stored the {what} under another digest",
                expected=digest,
                actual=announced,
                method="PUT",
                url=resp.url,
            )

    async def delete_manifest(self, repository: str, digest: Digest) -> None:
        """Delete a manifest by digest (2.8 refuses deletes by tag with 400)."""
        expected = self._check_reference(digest)
        if expected is None:
            raise refs.ReferenceError(f"manifests are deleted by digest, not {digest!r}")
        url = self._url(f"/v2/{self._check_repo(repository)}/manifests/{expected}")
        resp = await self._request(
            "DELETE", url, scope=f"repository:{repository}:delete", max_bytes=_ERROR_BODY_CAP
        )
        if resp.status not in (200, 202, 204):
            raise self._status_error(resp, f"deleting manifest {expected} from {repository}")

    # ----------------------------------------------------------------- plumbing

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError(f"registry {self.name!r}: the session given was closed")
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": f"registry-watcher/{__version__}"},
            )
        return self._session

    def _url(self, path: str) -> URL:
        return URL(self._prefix + path, encoded=True)

    def _check_repo(self, repository: str) -> str:
        if len(repository) > 255 or not _REPO_RE.match(repository):
            raise refs.ReferenceError(f"invalid repository name {repository!r}")
        return repository

    def _check_reference(self, reference: str) -> str | None:
        """Validate a tag or digest; return the digest if it is one (None for a tag)."""
        match = _DIGEST_RE.match(reference)
        if match:
            alg, hexpart = match["alg"], match["hex"]
            if alg not in _HASHES:
                raise refs.ReferenceError(f"cannot verify {alg} digests: {reference!r}")
            if len(hexpart) != _HEX_LENGTH[alg] or not _LOWER_HEX.match(hexpart):
                raise refs.ReferenceError(f"malformed {alg} digest {reference!r}")
            return reference
        if not _TAG_RE.match(reference):
            raise refs.ReferenceError(f"invalid tag or digest {reference!r}")
        return None

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        scope: str | None,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> _Response:
        """One logical request: auth (one re-authentication at most), then retries.

        401 and 403 never come back from here: they raise ``AuthError``. Other statuses are
        returned for the caller to interpret; 429 and 5xx have already been retried.
        """
        for round_ in range(2):
            authorization = await self._auth.authorization(scope)
            send_headers = dict(headers or {})
            if authorization is not None:
                send_headers["Authorization"] = authorization
            resp = await self._send(
                method,
                url,
                headers=send_headers,
                data=data,
                max_bytes=max_bytes,
            )
            if resp.status == 403:
                raise self._status_error(resp, "access denied")
            if resp.status != 401:
                return resp
            if round_ == 1:
                raise AuthError(
                    self.name,
                    "still unauthorized after authenticating; check the credentials' rights",
                    method=method,
                    url=url,
                    status=401,
                    codes=_error_codes(resp.body),
                )
            scope = self._auth.on_unauthorized(
                resp.headers.getall("WWW-Authenticate", []), scope, authorization, url=url
            )
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str],
        data: bytes | None,
        max_bytes: int,
        params: tuple[tuple[str, str], ...] = (),
    ) -> _Response:
        """Send with bounded retries on connection errors, timeouts, 429 and 5xx.

        The first attempt runs without tenacity: building a retry controller for every
        request was a tenth of the watcher's CPU in a profile, and nearly every request
        succeeds first time. Only a failure pays for the retry machinery.
        """
        try:
            return await self._attempt(
                method, url, headers=headers, data=data, max_bytes=max_bytes, params=params
            )
        except (RegistryUnavailableError, ThrottledError) as exc:
            if self._retry_attempts == 1:
                raise
            first = exc
        await self._sleep(self._delay(first, 1))
        log.warning("registry_retry", registry=self.name, attempt=1, error=str(first))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry_attempts - 1),
            wait=lambda state: self._wait(state, offset=1),
            retry=retry_if_exception_type((RegistryUnavailableError, ThrottledError)),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda state: self._log_retry(state, offset=1),
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    max_bytes=max_bytes,
                    params=params,
                )
        raise AssertionError("unreachable")  # reraise=True: tenacity raises the last error

    async def _attempt(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str],
        data: bytes | None,
        max_bytes: int,
        params: tuple[tuple[str, str], ...],
    ) -> _Response:
        session = self._ensure_session()
        code = "error"
        async with self._semaphore:
            started = time.perf_counter()
            try:
                async with session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    params=params or None,
                    # Blob GETs are often redirected to storage; aiohttp drops Authorization
                    # when a redirect leaves the origin, so following them is safe.
                    allow_redirects=method in ("GET", "HEAD"),
                ) as raw:
                    code = str(raw.status)
                    ok = 200 <= raw.status < 300
                    body = b""
                    if method != "HEAD":
                        body = await self._read_capped(
                            raw, method, max_bytes if ok else _ERROR_BODY_CAP, truncate=not ok
                        )
                    resp = _Response(method, raw.url, raw.status, raw.headers, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                code = "error"
                raise RegistryUnavailableError(
                    self.name,
                    f"no answer: {_describe(exc)}",
                    method=method,
                    url=url,
                ) from None
            finally:
                if self._metrics is not None:
                    self._metrics.registry_request(
                        self.name, method, code, time.perf_counter() - started
                    )
        if resp.status == 429:
            raise ThrottledError(
                self.name,
                "rate limited (429)" + self._error_detail(resp),
                retry_after=_retry_after(resp.headers.get("Retry-After")),
                method=method,
                url=url,
                codes=_error_codes(resp.body),
            )
        if resp.status >= 500:
            raise RegistryUnavailableError(
                self.name,
                f"server error {resp.status}" + self._error_detail(resp),
                retry_after=_retry_after(resp.headers.get("Retry-After")),
                method=method,
                url=url,
                status=resp.status,
                codes=_error_codes(resp.body),
            )
        return resp

    async def _read_capped(
        self, raw: aiohttp.ClientResponse, method: str, cap: int, *, truncate: bool
    ) -> bytes:
        """Read at most ``cap`` bytes; past it, truncate (error bodies) or raise."""
        declared = raw.content_length
        if not truncate and declared is not None and declared > cap:
            raw.close()
            raise TooLargeError(
                self.name,
                f"response declares {declared} bytes",
                limit=cap,
                method=method,
                url=raw.url,
            )
        buf = bytearray()
        async for chunk in raw.content.iter_chunked(_CHUNK):
            if len(buf) + len(chunk) > cap:
                if truncate:
                    buf += chunk[: cap - len(buf)]
                    raw.close()  # do not reuse a connection with an unread body
                    break
                raw.close()  # drop the connection rather than drain a hostile stream
                raise TooLargeError(
                    self.name,
                    "response body exceeded its size cap",
                    limit=cap,
                    method=method,
                    url=raw.url,
                )
            buf += chunk
        return bytes(buf)

    def _delay(self, exc: BaseException | None, attempt_number: int) -> float:
        """How long to wait after failed attempt number ``attempt_number`` (1-based)."""
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, float):
            return min(hint, self._retry_after_cap)
        delay = min(self._retry_max, self._retry_base * 2.0 ** (attempt_number - 1))
        return delay * (0.5 + random.random() / 2)  # jitter: do not retry in lockstep

    def _wait(self, state: RetryCallState, offset: int = 0) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self._delay(exc, state.attempt_number + offset)

    def _log_retry(self, state: RetryCallState, offset: int = 0) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else None
        log.warning(
            "registry_retry",
            registry=self.name,
            attempt=state.attempt_number + offset,
            wait_seconds=wait,
            error=str(exc),
        )

    async def _fetch_token(self, request: TokenRequest) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if request.authorization is not None:
            headers["Authorization"] = request.authorization
        resp = await self._send(
            "GET",
            request.realm,
            headers=headers,
            data=None,
            max_bytes=_TOKEN_BODY_CAP,
            params=request.params,
        )
        return resp.status, resp.body

    async def _paginated(
        self, url: URL, key: str, scope: str, page_size: int | None, repository: str | None
    ) -> list[str]:
        if page_size is not None:
            url = url.update_query(n=str(page_size))
        out: list[str] = []
        seen: set[str] = set()
        what = f"tags of {repository}" if repository else "catalog"
        for _ in range(self._max_pages):
            resp = await self._request("GET", url, scope=scope, max_bytes=self._max_list_bytes)
            if resp.status != 200:
                raise self._status_error(resp, what)
            data = _loads_or_none(resp.body)
            if not isinstance(data, dict):
                raise self._protocol(resp, f"{what}: response is not a JSON object")
            items = data.get(key)
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise self._protocol(resp, f"{what}: {key!r} is not a list of strings")
            out.extend(items)
            next_url = self._next_link(resp, seen)
            if next_url is None:
                return list(dict.fromkeys(out))
            url = next_url
        raise ProtocolError(self.name, f"{what}: more than {self._max_pages} pages", url=url)

    def _next_link(self, resp: _Response, seen: set[str]) -> URL | None:
        """The ``rel="next"`` target, resolved against the request URL; same origin only."""
        seen.add(str(resp.url))
        for value in resp.headers.getall("Link", []):
            for match in _LINK_RE.finditer(value):
                params = match.group(2)
                rel = re.search(r';\s*rel\s*=\s*"?([^";]*)"?', params)
                if rel is None or "next" not in rel.group(1).split():
                    continue
                target = self._same_origin(resp, resp.url.join(URL(match.group(1), encoded=True)))
                if str(target) in seen:
                    raise self._protocol(resp, "pagination Link points back to a seen page")
                return target
        return None

    def _same_origin(self, resp: _Response, target: URL) -> URL:
        """Refuse to follow the registry to another origin: our token would go with us."""
        if (target.scheme, target.host, target.port) != (
            self._root.scheme,
            self._root.host,
            self._root.port,
        ):
            raise self._protocol(
                resp, f"refusing to follow a URL to another origin ({target.host})"
            )
        return target

    def _descriptors(self, resp: _Response, items: list[Any]) -> list[Descriptor]:
        out: list[Descriptor] = []
        for item in items:
            digest = item.get("digest") if isinstance(item, dict) else None
            match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
            if match is not None and match["alg"] != "sha256":
                continue  # valid per spec, but nothing downstream can address it
            try:
                out.append(Descriptor.from_json(item))
            except ValueError as exc:
                raise self._protocol(resp, f"bad descriptor in index: {exc}") from None
        return out

    def _parse_manifest(self, resp: _Response) -> Manifest:
        data = _loads_or_none(resp.body)
        if not isinstance(data, dict):
            raise self._protocol(resp, "manifest is not a JSON object")
        declared = data.get("mediaType")
        if declared is not None and not isinstance(declared, str):
            raise self._protocol(resp, "manifest mediaType is not a string")
        # The body's own mediaType is part of the hashed content; the header is not.
        media_type = declared or _media_type(resp.headers.get("Content-Type"))
        return Manifest(sha256_digest(resp.body), media_type, resp.body, data)

    def _verify(self, resp: _Response, body: bytes, expected: str, message: str) -> None:
        digest = self._parse_header_digest(resp, expected)
        alg, _, _ = digest.partition(":")
        actual = f"{alg}:{_HASHES[alg](body).hexdigest()}"
        if actual != digest:
            raise DigestMismatchError(
                self.name, message, expected=digest, actual=actual, method=resp.method, url=resp.url
            )

    def _parse_header_digest(self, resp: _Response, value: str) -> str:
        match = _DIGEST_RE.match(value.strip())
        if (
            match is None
            or match["alg"] not in _HASHES
            or len(match["hex"]) != _HEX_LENGTH[match["alg"]]
            or not _LOWER_HEX.match(match["hex"])
        ):
            raise self._protocol(resp, f"unusable digest {value[:80]!r}")
        return value.strip()

    def _protocol(self, resp: _Response, message: str) -> ProtocolError:
        return ProtocolError(
            self.name, message, method=resp.method, url=resp.url, status=resp.status
        )

    def _error_detail(self, resp: _Response) -> str:
        """The registry's own error codes and first message, scrubbed of our secrets."""
        data = _loads_or_none(resp.body)
        if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
            return ""
        parts: list[str] = []
        for err in data["errors"][:3]:
            if not isinstance(err, dict):
                continue
            code = err.get("code")
            message = err.get("message")
            text = code if isinstance(code, str) and _ERROR_CODE_RE.match(code) else "?"
            if isinstance(message, str) and message:
                clean = "".join(c if c.isprintable() else " " for c in message[:200])
                text += f": {self._auth.redact(clean)}"
            parts.append(text)
        return f" [{'; '.join(parts)}]" if parts else ""

    def _status_error(self, resp: _Response, what: str) -> RegistryError:
        detail = self._error_detail(resp)
        codes = _error_codes(resp.body)
        kwargs: dict[str, Any] = {
            "method": resp.method,
            "url": resp.url,
            "status": resp.status,
            "codes": codes,
        }
        if resp.status == 404:
            return NotFoundError(self.name, f"{what}: not found (404){detail}", **kwargs)
        if resp.status in (401, 403):
            return AuthError(
                self.name,
                f"{what}: {resp.status}{detail}; check credentials and their rights",
                **kwargs,
            )
        if resp.status == 429:
            return ThrottledError(self.name, f"{what}: rate limited{detail}", **kwargs)
        if resp.status >= 500:
            return RegistryUnavailableError(self.name, f"{what}: {resp.status}{detail}", **kwargs)
        return RegistryError(
            self.name, f"{what}: unexpected status {resp.status}{detail}", **kwargs
        )


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _content_length(headers: CIMultiDictProxy[str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a hostile registry nesting arrays a few thousand deep.
        return None


def _error_codes(body: bytes) -> tuple[str, ...]:
    data = _loads_or_none(body)
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return ()
    return tuple(
        err["code"]
        for err in data["errors"]
        if isinstance(err, dict)
        and isinstance(err.get("code"), str)
        and _ERROR_CODE_RE.match(err["code"])
    )


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(exc: BaseException) -> str:
    """A short reason for a transport failure; aiohttp's texts name only host and port."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"
