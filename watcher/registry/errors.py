"""What can go wrong talking to a registry, as exceptions a caller can act on.

Every failure is a ``RegistryError``. Callers turn any of them into the verdict ``error``,
never ``unsigned``: "the registry did not answer" must not read as "there is no signature".
That is why a 5xx or a timeout is ``RegistryUnavailableError`` and never ``NotFoundError``,
and why ``NotFoundError`` is only raised for an answer that really says "not found".

Messages name the registry (its configured name) and the request's method and URL *path*.
The query string is left out because upload URLs carry opaque state, and no message ever
includes a credential, a token or an ``Authorization`` header.
"""

from __future__ import annotations

from yarl import URL


class RegistryError(Exception):
    """A registry request failed; the message says which registry, which request and why."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        method: str | None = None,
        url: URL | str | None = None,
        status: int | None = None,
        codes: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry
        self.method = method
        # Only the path: query strings can hold upload state and are never useful to a human.
        self.path = _path_of(url)
        self.status = status
        self.codes = codes
        self.reason = message
        where = ""
        if self.path is not None:
            where = f" ({method} {self.path})" if method else f" ({self.path})"
        super().__init__(f"registry {registry!r}: {message}{where}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class NotFoundError(RegistryError):
    """The registry said the thing does not exist (404)."""


class AuthError(RegistryError):
    """Authentication or authorization failed: missing or rejected credentials, or 403."""


class ThrottledError(RegistryError):
    """The registry rate-limited us (429); ``retry_after`` is its hint in seconds, if any."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        retry_after: float | None = None,
        method: str | None = None,
        url: URL | str | None = None,
        status: int | None = 429,
        codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(registry, message, method=method, url=url, status=status, codes=codes)
        self.retry_after = retry_after


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest it was asked for or announced with."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        expected: str,
        actual: str,
        method: str | None = None,
        url: URL | str | None = None,
    ) -> None:
        super().__init__(
            registry, f"{message}: expected {expected}, got {actual}", method=method, url=url
        )
        self.expected = expected
        self.actual = actual


class TooLargeError(RegistryError):
    """A response body went past its size cap; reading stopped there."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        limit: int,
        method: str | None = None,
        url: URL | str | None = None,
    ) -> None:
        super().__init__(registry, f"{message} (limit {limit} bytes)", method=method, url=url)
        self.limit = limit


class RegistryUnavailableError(RegistryError):
    """No usable answer: connection failure, timeout or 5xx, after the bounded retries."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        retry_after: float | None = None,
        method: str | None = None,
        url: URL | str | None = None,
        status: int | None = None,
        codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(registry, message, method=method, url=url, status=status, codes=codes)
        self.retry_after = retry_after


class ProtocolError(RegistryError):
    """The registry answered, but not in the shape the distribution API defines."""


def _path_of(url: URL | str | None) -> str | None:
    if url is None:
        return None
    parsed = url if isinstance(url, URL) else URL(url)
    # Keep the host for requests that leave the registry (token realms), never userinfo.
    if parsed.is_absolute() and parsed.host:
        return f"{parsed.scheme}://{parsed.raw_host}{_port(parsed)}{parsed.raw_path}"
    return parsed.raw_path


def _port(url: URL) -> str:
    port = url.explicit_port
    return f":{port}" if port is not None else ""
