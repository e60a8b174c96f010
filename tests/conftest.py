"""Shared fixtures: a real docker-registry for the session, and clients for it.

The registry is started once per session (about half a second) and every test works in its
own uniquely named repositories, so tests neither see each other's data nor need cleanup.
When the binary is missing, registry tests skip loudly; under ``CI=true`` they fail instead,
because a CI run that silently skipped the integration tests would prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.kit_fixtures import kit, trust, trusted_root_path  # noqa: F401
from tests.services import RegistryUnavailable, start_registry, unique_repository
from watcher.registry.client import RegistryClient


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag every test that uses the real registry, so ``-m 'not registry'`` works."""
    for item in items:
        if "registry_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.registry)


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an anonymous docker-registry 2.8 running for the session."""
    try:
        registry = start_registry(tmp_path_factory.mktemp("registry"))
    except RegistryUnavailable as exc:
        message = f"REAL REGISTRY TESTS NOT RUN: {exc}"
        if _in_ci():
            pytest.fail(message + " (CI=true: missing services are failures)", pytrace=False)
        pytest.skip(message)
    try:
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture
async def registry_client(registry_url: str) -> AsyncIterator[RegistryClient]:
    """A fresh ``RegistryClient("local", registry_url)`` per test, closed afterwards."""
    async with RegistryClient("local", registry_url) as client:
        yield client


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of repository names unique to this test: ``unique_repo("app")``."""
    test_name = request.node.name

    def make(hint: str = "") -> str:
        return unique_repository(f"{test_name}-{hint}" if hint else test_name)

    return make




@pytest.fixture(autouse=True, scope="session")
def _logs_to_stderr() -> None:
    """Configure logging as the CLI's edge does, so stdout carries only command output."""
    from watcher.logs import configure_logging

    configure_logging("json", "warning")
