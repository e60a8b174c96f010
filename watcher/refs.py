"""Names for the things the watcher talks about, defined once.

A *digest* is always ``sha256:<64 lowercase hex>``; an *image* is
``registry/repository@digest``; a *reference* is what a user types (a tag or a digest, with
Docker Hub's short forms). This module parses and normalises them and knows the tag names
cosign and the OCI referrers fallback use for signature material, so that nothing else in the
code builds those strings by hand.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NewType

Digest = NewType("Digest", str)

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REPO_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
# cosign attachments (.sig/.att/.sbom) and the OCI referrers fallback tag (no suffix).
ATTACHMENT_TAG_RE = re.compile(r"^sha256-[0-9a-f]{64}(?:\.[A-Za-z0-9_-]+)?$")


class ReferenceError(ValueError):
    """A string is not a valid image reference or digest."""


def parse_digest(value: str) -> Digest:
    """Return ``value`` as a Digest, or raise ReferenceError naming what is wrong."""
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ReferenceError(f"not a sha256 digest (want sha256:<64 lowercase hex>): {value!r}")
    return Digest(value)


def sha256_digest(data: bytes) -> Digest:
    """The digest of some bytes, as registries compute it."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def digest_hex(digest: Digest) -> str:
    """The hex part of a digest."""
    return digest.split(":", 1)[1]


def signature_tag(digest: Digest, suffix: str = "sig") -> str:
    """cosign's legacy tag for a digest's attachments: ``sha256-<hex>.sig`` (or .att/.sbom)."""
    return f"{referrers_fallback_tag(digest)}.{suffix}"


def referrers_fallback_tag(digest: Digest) -> str:
    """The OCI distribution-spec referrers tag schema: ``<alg>-<hex>``, truncated and cleaned."""
    alg, _, hexpart = digest.partition(":")
    tag = f"{alg[:32]}-{hexpart[:64]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", tag)


def is_attachment_tag(tag: str) -> bool:
    """True for tags that hold signature material rather than an image."""
    return bool(ATTACHMENT_TAG_RE.match(tag))


def normalize_registry(host: str) -> str:
    """Docker Hub has several names; policies and configs see one (``docker.io``)."""
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


@dataclass(frozen=True)
class ImageReference:
    """A parsed, normalised image reference: registry host, repository, and tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, value: str) -> ImageReference:
        """Parse ``[registry/]repository[:tag][@digest]`` with Docker Hub normalisation."""
        if not value or value != value.strip():
            raise ReferenceError(f"empty or padded image reference: {value!r}")
        rest = value
        digest: Digest | None = None
        if "@" in rest:
            rest, _, raw_digest = rest.partition("@")
            digest = parse_digest(raw_digest)
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise ReferenceError(f"invalid tag {tag!r} in {value!r}")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repository = normalize_registry(first), remainder
        else:
            registry, repository = DOCKER_HUB, rest
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        for component in repository.split("/"):
            if not _REPO_COMPONENT_RE.match(component):
                raise ReferenceError(f"invalid repository name {repository!r} in {value!r}")
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository``, the name cosign writes as docker-reference."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: Digest) -> ImageReference:
        """The same repository pinned to ``digest`` (the tag is kept for display)."""
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def image(self) -> str:
        """``registry/repository@digest``; the one canonical name of an image."""
        if self.digest is None:
            raise ReferenceError(f"{self} has no digest")
        return f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
