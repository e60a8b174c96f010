"""The Sigstore trust root the watcher verifies against, loaded once and shared.

Either a private ``trusted_root.json`` named in the config, or the public-good instance from
sigstore-python's offline TUF copy. sigstore-python keeps that copy under the user's cache
directory; the watcher points it at its own state directory instead, so a daemon running as a
service account with a read-only home still works and nothing leaks into ``~``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509 import Certificate
from sigstore.models import ClientTrustConfig, TrustedRoot
from sigstore.verify import Verifier

from watcher._sigstore import CTKeyring, RekorKeyring, ct_keyring, rekor_keyring

PUBLIC_GOOD = "public-good"
_ENV_LOCK = threading.Lock()


class TrustError(Exception):
    """The trust root cannot be loaded; nothing can be verified without it."""


@contextmanager
def _sigstore_dirs(state_dir: Path) -> Iterator[None]:
    """Point platformdirs (used by sigstore-python's TUF client) at the watcher's state dir."""
    base = state_dir / "sigstore"
    names = ("XDG_CACHE_HOME", "XDG_DATA_HOME")
    with _ENV_LOCK:
        saved = {n: os.environ.get(n) for n in names}
        try:
            os.environ["XDG_CACHE_HOME"] = str(base / "cache")
            os.environ["XDG_DATA_HOME"] = str(base / "data")
            yield
        finally:
            for n, v in saved.items():
                if v is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = v


@dataclass(frozen=True)
class Trust:
    """A trust root plus the sigstore-python objects built from it, reused for every check."""

    name: str  # "public-good" or the trusted_root.json path
    fingerprint: str  # sha256 of the trust root document: part of what a cached verdict depends on
    trusted_root: TrustedRoot
    verifier: Verifier
    fulcio_certs: tuple[Certificate, ...]
    rekor: RekorKeyring
    ct: CTKeyring

    @property
    def is_public_good(self) -> bool:
        """Links to the public transparency-log search only make sense for the public log."""
        return self.name == PUBLIC_GOOD

    @classmethod
    def from_trusted_root(cls, name: str, root: TrustedRoot, raw: bytes) -> Trust:
        """Build the verifier and keyrings for ``root`` once."""
        return cls(
            name=name,
            fingerprint=hashlib.sha256(raw).hexdigest(),
            trusted_root=root,
            verifier=Verifier(trusted_root=root),
            fulcio_certs=tuple(root.get_fulcio_certs()),
            rekor=rekor_keyring(root),
            ct=ct_keyring(root),
        )


def load_trust(trusted_root: Path | None, state_dir: Path) -> Trust:
    """Load a private trust root from a file, or the public-good one offline."""
    try:
        if trusted_root is not None:
            raw = trusted_root.read_bytes()
            root = TrustedRoot.from_file(str(trusted_root))
            return Trust.from_trusted_root(str(trusted_root), root, raw)
        with _sigstore_dirs(state_dir):
            config = ClientTrustConfig.production(offline=True)
        root = config.trusted_root
        raw = root._inner.to_json().encode()
        return Trust.from_trusted_root(PUBLIC_GOOD, root, raw)
    except TrustError:
        raise
    except Exception as exc:  # sigstore raises a variety of errors for a bad root
        where = trusted_root if trusted_root is not None else "public-good offline copy"
        raise TrustError(f"cannot load Sigstore trust root from {where}: {exc}") from exc
