"""Real services for integration tests (the registry helpers live in watcher.testing)."""

from __future__ import annotations

import re
import uuid

from watcher.testing.registry_server import (
    RegistryProcess,
    RegistryUnavailable,
    deep_merge,
    find_registry_binary,
    free_port,
    registry_config,
    running_registry,
    start_registry,
)

__all__ = [
    "RegistryProcess",
    "RegistryUnavailable",
    "deep_merge",
    "find_registry_binary",
    "free_port",
    "registry_config",
    "running_registry",
    "start_registry",
    "unique_repository",
]

_INVALID = re.compile(r"[^a-z0-9]+")


def unique_repository(hint: str = "test", namespace: str = "it") -> str:
    """A repository name no other test (or earlier run on the same registry) uses."""
    slug = _INVALID.sub("-", hint.lower()).strip("-")[:40].strip("-") or "test"
    return f"{namespace}/{slug}-{uuid.uuid4().hex[:10]}"


