"""Registry credentials: what they are and where they come from (config secrets, Docker config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    """A username and secret for Basic auth or for a Bearer token request; never logged."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"
