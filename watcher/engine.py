"""Verifying one image end to end: resolve, discover, verify, decide.

This is the path every source (the `verify` command now; webhooks, polls and scans later)
takes for a digest. Registry failures become verdict `error` with the reason, so a registry
that is down, throttling or refusing credentials is never reported as `unsigned`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from watcher.config import Config, RegistryConfig
from watcher.discovery import Limits, discover, is_index
from watcher.metrics import Metrics
from watcher.policy.decide import accepting_authority, decide, error_result
from watcher.policy.model import Policy
from watcher.refs import Digest, ImageReference
from watcher.registry.client import RegistryClient
from watcher.registry.errors import RegistryError
from watcher.verdicts import (
    AttestationEvidence,
    ImageVerdict,
    PolicyResult,
    SignatureEvidence,
    most_serious,
)
from watcher.verify import verify_material
from watcher.verify.material import Finding, Kind, TrustedKey
from watcher.verify.trust import Trust

log = structlog.get_logger("watcher.engine")

_LOOPBACK = ("127.", "localhost", "[::1]")


@dataclass(frozen=True)
class Target:
    """Where an image lives, as the engine needs it."""

    registry: str  # configured registry name (or the host, for an unconfigured registry)
    host: str
    repository: str

    def verdict(
        self, digest: Digest, tags: tuple[str, ...], results: tuple[PolicyResult, ...], **kw: Any
    ) -> ImageVerdict:
        """An ImageVerdict for ``digest`` in this repository."""
        return ImageVerdict(
            registry=self.registry,
            registry_host=self.host,
            repository=self.repository,
            digest=digest,
            tags=tags,
            policies=results,
            **kw,
        )


def trusted_keys(policies: Sequence[Policy]) -> list[TrustedKey]:
    """Every public key an authority of these policies trusts, once each."""
    keys: dict[str, TrustedKey] = {}
    for policy in policies:
        for authority in policy.authorities:
            if authority.key is not None:
                keys.setdefault(
                    authority.key.key_id,
                    TrustedKey(authority.key.key_id, authority.key.public_key()),
                )
    return list(keys.values())


class Engine:
    """Owns the registry clients and the trust root; verifies images on request."""

    def __init__(self, config: Config, trust: Trust, metrics: Metrics | None = None) -> None:
        self.config = config
        self.trust = trust
        self.metrics = metrics or Metrics()
        self.limits = Limits()
        self._clients: dict[str, RegistryClient] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every registry client's connections."""
        await self._stack.aclose()
        self._clients.clear()

    async def client_for(self, ref: ImageReference) -> tuple[Target, RegistryClient]:
        """The client for a reference's registry; an unconfigured one is used anonymously."""
        cfg: RegistryConfig | None = self.config.registry_for(ref)
        if cfg is not None:
            return Target(cfg.name, cfg.host, ref.repository), await self.client_named(cfg)
        key = host = ref.registry
        if key not in self._clients:
            scheme = "http" if host.startswith(_LOOPBACK) else "https"
            url = f"{scheme}://{'registry-1.docker.io' if host == 'docker.io' else host}"
            self._clients[key] = await self._stack.enter_async_context(
                RegistryClient(key, url, metrics=self.metrics)
            )
        return Target(key, host, ref.repository), self._clients[key]

    async def client_named(self, cfg: RegistryConfig) -> RegistryClient:
        """The one client of a configured registry (its concurrency limit is per registry)."""
        if cfg.name not in self._clients:
            self._clients[cfg.name] = await self._stack.enter_async_context(
                RegistryClient(
                    cfg.name,
                    cfg.url,
                    credentials=cfg.auth.resolve(cfg.host) if cfg.auth else None,
                    max_concurrency=cfg.max_concurrency,
                    timeout=cfg.timeout_seconds,
                    metrics=self.metrics,
                )
            )
        return self._clients[cfg.name]

    async def verify_reference(self, ref: ImageReference) -> ImageVerdict:
        """Resolve a tag or digest reference and verify it now (no grace period)."""
        target, client = await self.client_for(ref)
        policies = self.config.policies_for(ref)
        tags = (ref.tag,) if ref.tag else ()
        try:
            if ref.digest is not None:
                manifest = await client.get_manifest(ref.repository, ref.digest)
            else:
                assert ref.tag is not None
                manifest = await client.get_manifest(ref.repository, ref.tag)
        except RegistryError as exc:
            digest = ref.digest or Digest("sha256:" + "0" * 64)
            return self.errored(target, digest, tags, policies, f"cannot resolve {ref}: {exc}")
        notes: list[str] = []
        if is_index(manifest):
            children = [
                m.get("digest") for m in manifest.json.get("manifests") or [] if isinstance(m, dict)
            ]
            notes.append(
                f"multi-arch index: its signature covers {len(children)} platform manifest(s)"
            )
        return await self.verify_digest(target, client, manifest.digest, tags, policies, notes)

    async def verify_digest(
        self,
        target: Target,
        client: RegistryClient,
        digest: Digest,
        tags: tuple[str, ...],
        policies: Sequence[Policy],
        notes: Sequence[str] = (),
        *,
        in_grace: bool = False,
    ) -> ImageVerdict:
        """Discover and verify the material for ``digest`` and apply each policy."""
        if not policies:
            return target.verdict(
                digest, tags, (), reasons=("no policy matches this image", *notes)
            )
        try:
            findings, found_notes = await self.examine(
                client, target.repository, digest, trusted_keys(policies)
            )
        except RegistryError as exc:
            return self.errored(
                target, digest, tags, policies, f"registry failed during discovery: {exc}"
            )
        results = tuple(decide(p, findings, in_grace=in_grace) for p in policies)
        log.info(
            "image_verified",
            registry=target.registry,
            repository=target.repository,
            digest=digest,
            verdict=str(most_serious([r.verdict for r in results])),
            materials=len(findings),
        )
        return self.verdict_from(
            target, digest, tags, policies, results, findings, (*notes, *found_notes)
        )

    async def examine(
        self,
        client: RegistryClient,
        repository: str,
        digest: Digest,
        keys: Sequence[TrustedKey],
    ) -> tuple[list[Finding], tuple[str, ...]]:
        """Fetch every piece of material for ``digest`` and verify it, before any policy.

        What-if runs call this directly when stored evidence is not enough, so they can
        decide under policies other than the configured ones. Raises RegistryError.
        """
        found = await discover(client, repository, digest, self.limits)
        findings = await asyncio.to_thread(
            lambda: [verify_material(m, digest, self.trust, keys) for m in found.materials]
        )
        return findings, found.notes

    def verdict_from(
        self,
        target: Target,
        digest: Digest,
        tags: tuple[str, ...],
        policies: Sequence[Policy],
        results: tuple[PolicyResult, ...],
        findings: Sequence[Finding],
        notes: Sequence[str],
    ) -> ImageVerdict:
        """The ImageVerdict for policy results and the findings behind them."""
        signatures: list[SignatureEvidence] = []
        attestations: list[AttestationEvidence] = []
        for f in findings:
            authority = next(
                (a.name for p in policies if (a := accepting_authority(p, f)) is not None), None
            )
            if f.kind is Kind.SIGNATURE:
                signatures.append(
                    SignatureEvidence(
                        f.format, f.valid, f.signer, authority, f.tlog, f.error, f.source
                    )
                )
            else:
                attestations.append(
                    AttestationEvidence(
                        f.predicate_type,
                        f.valid,
                        f.format,
                        f.signer,
                        authority,
                        f.tlog,
                        f.error,
                        f.source,
                    )
                )
        return target.verdict(
            digest,
            tags,
            results,
            signatures=tuple(signatures),
            attestations=tuple(attestations),
            reasons=tuple(notes),
        )

    def errored(
        self,
        target: Target,
        digest: Digest,
        tags: tuple[str, ...],
        policies: Sequence[Policy],
        reason: str,
    ) -> ImageVerdict:
        """Every policy says `error` with the reason: could not decide, never unsigned."""
        log.warning(
            "image_error", registry=target.registry, repository=target.repository, reason=reason
        )
        results = tuple(error_result(p, reason) for p in policies)
        return target.verdict(
            digest, tags, results, reasons=() if policies else (reason,), error=True
        )
