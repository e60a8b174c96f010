"""Registry credentials: what they are and where they come from (config secrets, Docker config)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Credentials:
    """A username and secret for Basic auth or for a Bearer token request; never logged."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"


# Docker keeps Docker Hub credentials under the v1 index URL whatever name the user pulls by.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def docker_config_credentials(path: Path, host: str) -> Credentials | None:
    """Credentials for ``host`` from a Docker ``config.json`` ``auths`` entry, if any.

    Reuses what ``docker login`` already stored so operators need not copy secrets into the
    watcher's config. Entries match the way the docker CLI matches them: an exact key first,
    then any key whose hostname (scheme and path stripped) is ``host``; Docker Hub's names all
    map to ``https://index.docker.io/v1/``. An entry gives ``auth`` (base64 of
    ``user:password``) or legacy ``username``/``password``.

    Returns None when the file or the entry is missing, or when the entry has only an
    ``identitytoken`` (an OAuth refresh token, which this client does not exchange).
    Credential helpers (``credsStore``/``credHelpers``) are not run: executing programs named
    in a file is a decision for the operator's config, not a side effect of reading it.
    Raises ValueError for a malformed file, naming the path but never its contents.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is not a JSON object")
    auths = data.get("auths")
    if auths is None:
        return None
    if not isinstance(auths, dict):
        raise ValueError(f"{path}: 'auths' is not an object")
    entry = _find_entry(auths, host)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: auths entry for {host!r} is not an object")
    return _entry_credentials(entry, path, host)


def _find_entry(auths: dict[str, Any], host: str) -> Any:
    host = host.lower()
    if host in _DOCKER_HUB_HOSTS:
        if DOCKER_HUB_CONFIG_KEY in auths:
            return auths[DOCKER_HUB_CONFIG_KEY]
        wanted = _DOCKER_HUB_HOSTS
    else:
        if host in auths:
            return auths[host]
        wanted = {host}
    for key, entry in auths.items():
        if isinstance(key, str) and _hostname(key) in wanted:
            return entry
    return None


def _hostname(key: str) -> str:
    """docker/cli ConvertToHostname: drop the scheme and everything after the first slash."""
    for prefix in ("http://", "https://"):
        if key.lower().startswith(prefix):
            key = key[len(prefix) :]
            break
    return key.split("/", 1)[0].lower()


def _entry_credentials(entry: dict[str, Any], path: Path, host: str) -> Credentials | None:
    encoded = entry.get("auth")
    bad = f"{path}: 'auth' for {host!r} is not base64 of user:password"
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(bad) from None
        user, sep, secret = decoded.partition(":")
        if not sep or not user:
            raise ValueError(bad)
        return Credentials(username=user, password=secret)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username=username, password=password)
    return None
