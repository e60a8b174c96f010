"""Fixtures for the private Sigstore instance the suite builds (no network, real verifier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.testing.sigstore_kit import SigstoreKit
from watcher.verify.trust import Trust, load_trust


@pytest.fixture(scope="session")
def kit() -> SigstoreKit:
    """One private Sigstore (Fulcio-like CA, CT log, transparency log) for the session."""
    return SigstoreKit.create()


@pytest.fixture(scope="session")
def trusted_root_path(kit: SigstoreKit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit's trusted_root.json on disk, as a user would name it in the config."""
    return kit.write_trusted_root(tmp_path_factory.mktemp("trust") / "trusted_root.json")


@pytest.fixture(scope="session")
def trust(trusted_root_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Trust:
    """The watcher's Trust loaded from the kit's trusted_root.json."""
    return load_trust(trusted_root_path, tmp_path_factory.mktemp("state"))
