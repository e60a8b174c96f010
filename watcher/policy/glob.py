"""Image globs with sigstore policy-controller's semantics, and repository globs.

A ClusterImagePolicy's ``spec.images[].glob`` must select the same images here as in the
cluster, or a policy copied from policy-controller would silently cover less (or more) than
its author intended. policy-controller (``pkg/apis/glob``) turns a glob into an anchored
regular expression: ``*`` is any run of characters other than ``/``, ``**`` is any run of
characters at all, everything else is literal. The expression is matched against the
fully-qualified reference as go-containerregistry names it: the registry (Docker Hub as
``index.docker.io``), the repository (``library/`` for official images), and then ``:tag``
or ``@digest``. So ``ghcr.io/acme/*`` matches ``ghcr.io/acme/app@sha256:...`` (the ``*``
covers ``app@sha256:...``), while ``ghcr.io/*/*`` does not match ``ghcr.io/app``.

Where a watcher differs from an admission controller we say so:

* policy-controller rewrites the bare globs ``*`` and ``*/*`` to Docker Hub ones, and falls
  back (deprecated) to matching the reference exactly as the user typed it, which is how
  ``foo`` or ``myuser/*`` select Docker Hub images. The watcher never sees what a user typed,
  so for Docker Hub images it tries the short forms a user would type (``foo``,
  ``library/foo``, ``myuser/app``) — a glob without a registry therefore means Docker Hub.
* ``docker.io/`` and ``registry-1.docker.io/`` at the start of a glob mean
  ``index.docker.io/`` (go-containerregistry rewrites ``docker.io`` the same way when it
  parses an image, so both spellings select Docker Hub there too).
* The bare repository name (``ghcr.io/acme/app``, no tag or digest) is also a candidate.
  policy-controller matches it only through its fallback for untagged references; after its
  tag-to-digest resolution an exact-name glob would never match, and for a watcher, which only
  ever evaluates digests, such a policy would be dead without any error. Matching the name
  makes it cover every digest of that repository, which is what its author meant.
* A tag glob (``ghcr.io/acme/app:v1.*``) matches when the reference carries that tag; pass
  every tag a digest is known under (see ``Policy.matches``) so that it applies consistently.
"""

from __future__ import annotations

import functools
import re

from watcher.refs import DOCKER_HUB, ImageReference

# go-containerregistry's name for Docker Hub, which is what policy-controller globs see.
GGCR_DOCKER_HUB = "index.docker.io"
_DOCKER_HUB_GLOB_PREFIXES = ("docker.io/", "registry-1.docker.io/")
_LIBRARY = "library/"

# policy-controller's validGlob: anything else is rejected rather than half-understood.
_IMAGE_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_\-:/*.@]+$")
# Repository names are lowercase path components (distribution spec); a glob with other
# characters could never match, which is better said at load time.
_REPOSITORY_GLOB_CHARS = re.compile(r"^[a-z0-9_\-./*]+$")


class GlobError(ValueError):
    """A glob that cannot be used; the message quotes it and says why."""


def validate_glob(glob: str) -> None:
    """Raise GlobError unless ``glob`` is an image glob policy-controller would accept."""
    if not isinstance(glob, str) or not glob:
        raise GlobError("empty glob")
    if not _IMAGE_GLOB_CHARS.match(glob):
        raise GlobError(
            f"invalid glob {glob!r}: only letters, digits and - _ : / * . @ are allowed "
            "(* matches within a path segment, ** across segments)"
        )


def _translate(glob: str) -> str:
    """Glob to regular expression: ``**`` -> ``.*``, ``*`` -> ``[^/]*``, the rest literal."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def _normalise(glob: str) -> str:
    """policy-controller's rewrites of bare Docker Hub globs, plus Docker Hub's aliases."""
    if glob == "*":
        return f"{GGCR_DOCKER_HUB}/{_LIBRARY}*"
    if glob == "*/*":
        return f"{GGCR_DOCKER_HUB}/*/*"
    for prefix in _DOCKER_HUB_GLOB_PREFIXES:
        if glob.startswith(prefix):
            return f"{GGCR_DOCKER_HUB}/{glob[len(prefix) :]}"
    return glob


@functools.lru_cache(maxsize=4096)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The regular expression (use ``fullmatch``) an image glob stands for."""
    validate_glob(glob)
    return re.compile(_translate(_normalise(glob)))


def candidate_names(ref: ImageReference) -> tuple[str, ...]:
    """Every spelling of ``ref`` a glob is tried against (see the module docstring)."""
    if ref.registry == DOCKER_HUB:
        names = [f"{GGCR_DOCKER_HUB}/{ref.repository}", ref.repository]
        if ref.repository.startswith(_LIBRARY):
            names.append(ref.repository[len(_LIBRARY) :])
    else:
        names = [f"{ref.registry}/{ref.repository}"]
    suffixes = [""]
    if ref.digest is not None:
        suffixes.append(f"@{ref.digest}")
    if ref.tag is not None:
        suffixes.append(f":{ref.tag}")
    if ref.digest is None and ref.tag is None:
        suffixes.append(":latest")  # go-containerregistry's default tag
    return tuple(name + suffix for name in names for suffix in suffixes)


def glob_matches(glob: str, ref: ImageReference) -> bool:
    """True if the image glob selects ``ref``; raises GlobError for an invalid glob."""
    pattern = compile_glob(glob)
    return any(pattern.fullmatch(name) for name in candidate_names(ref))


def validate_repository_glob(glob: str) -> None:
    """Raise GlobError unless ``glob`` can match repository names (``acme/*``, ``**``)."""
    if not isinstance(glob, str) or not glob:
        raise GlobError("empty repository glob")
    if not _REPOSITORY_GLOB_CHARS.match(glob):
        raise GlobError(
            f"invalid repository glob {glob!r}: repository names are lowercase letters, "
            "digits and . _ - / (* matches within a path segment, ** across segments)"
        )
    if glob.startswith("/") or glob.endswith("/") or "//" in glob:
        raise GlobError(f"invalid repository glob {glob!r}: empty path segment")


@functools.lru_cache(maxsize=1024)
def compile_repository_glob(glob: str, *, docker_hub: bool = False) -> re.Pattern[str]:
    """The expression (use ``fullmatch``) for a repository glob of a registry's config.

    On Docker Hub a single-segment name is an official image, so ``nginx`` (or ``*``) means
    ``library/nginx`` (``library/*``) there, as it does when pulling; ``**`` is left alone.
    """
    validate_repository_glob(glob)
    if docker_hub and "/" not in glob and "**" not in glob:
        glob = _LIBRARY + glob
    return re.compile(_translate(glob))


def repository_glob_matches(glob: str, repository: str, *, docker_hub: bool = False) -> bool:
    """True if the repository glob selects ``repository`` (a path like ``acme/app``)."""
    return compile_repository_glob(glob, docker_hub=docker_hub).fullmatch(repository) is not None
