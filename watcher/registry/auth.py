"""Registry authentication: anonymous, Basic, and the distribution Bearer-token dance.

A registry tells us how to authenticate only by refusing: a 401 with ``WWW-Authenticate``.
``Authenticator`` learns the scheme (and for Bearer the realm and service) from the first
challenge, and from then on attaches credentials up front, so a watcher polling thousands of
manifests pays one 401 and one token request per scope, not one per request.

Tokens are cached per (realm, service, scope) and refreshed a little before they expire:
a token that dies between our check and the registry's is one wasted round-trip and a
retry, but refreshing early avoids that for the common case.

Secrets (passwords, tokens, ``Authorization`` values) never enter a log line, an exception
message or a repr; ``redact`` scrubs them from text we did not write ourselves (registry
error messages), because a hostile registry can echo what we sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from yarl import URL

from watcher.registry.credentials import Credentials
from watcher.registry.errors import AuthError, ProtocolError

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds; the token spec's default when expires_in is omitted
_MAX_REFRESH_MARGIN = 30.0

_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = " \t"


@dataclass(frozen=True)
class Challenge:
    """One challenge from ``WWW-Authenticate``: lower-cased scheme and parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)


def parse_www_authenticate(values: Iterable[str]) -> list[Challenge]:
    """Parse RFC 7235 challenges from one or more ``WWW-Authenticate`` header values.

    Quoted values may contain commas (``scope="repository:a/b:pull,push"``), so this is a
    small tokenizer rather than a split on commas. Malformed input yields what parsed before
    the malformation instead of raising: the caller then reports "cannot authenticate".
    """
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_one(value))
    return challenges


def _parse_one(header: str) -> list[Challenge]:
    out: list[Challenge] = []
    scheme: str | None = None
    params: dict[str, str] = {}
    i, n = 0, len(header)
    while i < n:
        while i < n and (header[i] in _SPACE or header[i] == ","):
            i += 1
        if i >= n:
            break
        m = _TOKEN_CHARS.match(header, i)
        if m is None:
            break
        token, j = m.group(), m.end()
        k = j
        while k < n and header[k] in _SPACE:
            k += 1
        if scheme is not None and k < n and header[k] == "=":
            # auth-param: name = token / quoted-string
            k += 1
            while k < n and header[k] in _SPACE:
                k += 1
            if k < n and header[k] == '"':
                k += 1
                chars: list[str] = []
                while k < n and header[k] != '"':
                    if header[k] == "\\" and k + 1 < n:
                        k += 1
                    chars.append(header[k])
                    k += 1
                value = "".join(chars)
                k += 1  # closing quote (or end of input)
            else:
                start = k
                while k < n and header[k] not in _SPACE and header[k] != ",":
                    k += 1
                value = header[start:k]
            params[token.lower()] = value
            i = k
            continue
        # A new challenge begins with a bare token (the scheme).
        if scheme is not None:
            out.append(Challenge(scheme, params))
        scheme, params = token.lower(), {}
        i = j
    if scheme is not None:
        out.append(Challenge(scheme, params))
    return out


@dataclass
class _Token:
    value: str
    usable_until: float


@dataclass(frozen=True)
class TokenRequest:
    """What the token endpoint must be asked; the client performs the HTTP request."""

    realm: URL
    params: tuple[tuple[str, str], ...]
    authorization: str | None = field(default=None, repr=False)


# Performs the token GET (with the client's retries and metrics); returns (status, body).
TokenFetcher = Callable[[TokenRequest], Awaitable[tuple[int, bytes]]]


class Authenticator:
    """Chooses the ``Authorization`` header for each request and learns from 401s.

    One instance per ``RegistryClient``; not shared between registries, so a token for one
    registry is never offered to another.
    """

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        fetch: TokenFetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._credentials = credentials
        self._fetch = fetch
        self._clock = clock
        self._mode: str | None = None  # None (anonymous so far), "basic" or "bearer"
        self._realm: URL | None = None
        self._service: str | None = None
        self._tokens: dict[tuple[str, str | None, str | None], _Token] = {}
        self._locks: dict[tuple[str, str | None, str | None], asyncio.Lock] = {}
        self._secrets: set[str] = set()
        if credentials is not None:
            self._remember_secret(credentials.password)
            self._remember_secret(_basic_value(credentials))
        self.token_fetches = 0  # for tests and debugging: how many token requests were made

    def __repr__(self) -> str:
        return f"Authenticator(registry={self._registry!r}, mode={self._mode!r})"

    async def authorization(self, scope: str | None) -> str | None:
        """The ``Authorization`` header value to send for a request needing ``scope``."""
        if self._mode == "bearer" and self._realm is not None:
            return "Bearer " + await self._token(self._realm, self._service, scope)
        if self._mode == "basic" and self._credentials is not None:
            return _basic_value(self._credentials)
        return None

    def on_unauthorized(
        self, www_authenticate: Iterable[str], scope: str | None, sent: str | None, *, url: URL
    ) -> str | None:
        """Learn from a 401; return the scope to retry with, or raise ``AuthError``.

        ``sent`` is the ``Authorization`` value that was refused, so a stale cached token is
        dropped (and only that token: a concurrent request may already have replaced it).
        """
        challenges = parse_www_authenticate(www_authenticate)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            realm_text = bearer.params.get("realm", "")
            realm = URL(realm_text)
            if realm.scheme not in ("http", "https") or not realm.host:
                raise ProtocolError(
                    self._registry,
                    "Bearer challenge has no usable http(s) realm",
                    method="GET",
                    url=url,
                    status=401,
                )
            self._mode, self._realm = "bearer", realm
            self._service = bearer.params.get("service") or None
            effective = _merge_scopes(scope, bearer.params.get("scope"))
            if sent is not None and sent.startswith("Bearer "):
                key = (str(realm), self._service, effective)
                cached = self._tokens.get(key)
                if cached is not None and cached.value == sent[len("Bearer ") :]:
                    del self._tokens[key]
            return effective
        if basic is not None:
            if self._credentials is None:
                raise AuthError(
                    self._registry,
                    "registry requires Basic authentication; configure credentials for it",
                    url=url,
                    status=401,
                )
            if sent is not None and sent.startswith("Basic "):
                raise AuthError(
                    self._registry,
                    f"credentials for user {self._credentials.username!r} were rejected",
                    url=url,
                    status=401,
                )
            self._mode = "basic"
            return scope
        raise AuthError(
            self._registry,
            "401 without a usable Bearer or Basic challenge in WWW-Authenticate",
            url=url,
            status=401,
        )

    def redact(self, text: str) -> str:
        """Replace every secret this authenticator knows of in ``text``."""
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "<redacted>")
        return text

    async def _token(self, realm: URL, service: str | None, scope: str | None) -> str:
        key = (str(realm), service, scope)
        token = self._tokens.get(key)
        if token is not None and self._clock() < token.usable_until:
            return token.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Another request may have fetched it while we waited: one fetch for many.
            token = self._tokens.get(key)
            if token is not None and self._clock() < token.usable_until:
                return token.value
            token = await self._fetch_token(realm, service, scope)
            self._tokens[key] = token
            return token.value

    async def _fetch_token(self, realm: URL, service: str | None, scope: str | None) -> _Token:
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        for one in (scope or "").split():
            params.append(("scope", one))
        auth = _basic_value(self._credentials) if self._credentials is not None else None
        self.token_fetches += 1
        started = self._clock()
        status, body = await self._fetch(TokenRequest(realm, tuple(params), auth))
        if status in (401, 403):
            who = (
                f"credentials for user {self._credentials.username!r}"
                if self._credentials is not None
                else "anonymous access"
            )
            raise AuthError(
                self._registry,
                f"token endpoint refused {who} for scope {scope or '(none)'!r}",
                method="GET",
                url=realm,
                status=status,
            )
        if status != 200:
            raise AuthError(
                self._registry,
                f"token endpoint answered {status} for scope {scope or '(none)'!r}",
                method="GET",
                url=realm,
                status=status,
            )
        value, lifetime = _parse_token_response(body, self._registry, realm)
        self._remember_secret(value)
        # Local clock from before the request: immune to skew in the server's issued_at.
        margin = min(_MAX_REFRESH_MARGIN, lifetime / 4)
        return _Token(value, started + lifetime - margin)

    def _remember_secret(self, secret: str) -> None:
        if secret:
            self._secrets.add(secret)
            if secret.startswith("Basic "):
                self._secrets.add(secret[len("Basic ") :])


def _basic_value(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _merge_scopes(ours: str | None, theirs: str | None) -> str | None:
    """Our scope plus any the registry asked for that we did not (insufficient_scope)."""
    parts: list[str] = []
    for group in (ours, theirs):
        for one in (group or "").split():
            if one not in parts:
                parts.append(one)
    return " ".join(parts) or None


def _parse_token_response(body: bytes, registry: str, realm: URL) -> tuple[str, float]:
    def bad(why: str) -> ProtocolError:
        return ProtocolError(registry, f"token endpoint response {why}", method="GET", url=realm)

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad("is not JSON") from None
    if not isinstance(data, dict):
        raise bad("is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise bad("has neither 'token' nor 'access_token'")
    expires = data.get("expires_in")
    lifetime = DEFAULT_TOKEN_LIFETIME
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
        lifetime = float(expires)
    return value, lifetime
