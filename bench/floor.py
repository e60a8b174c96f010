"""The floor: the same registry requests, a bare aiohttp session, sigstore-python, nothing else.

This is the limit a verifier written in Python against these libraries cannot beat: it makes
exactly the requests the watcher makes (same order, same concurrency bound), does no digest
checking, no retries, no size caps, no policy decision, no logging, no store, and hands each
signature to sigstore-python once:

- a Sigstore bundle goes to ``Verifier.verify_dsse`` (chain, SCT, inclusion proof and
  checkpoint, SET, DSSE signature, entry body), with an ``Identity`` policy;
- a legacy ``.sig``/``.att`` layer carries a SET but no inclusion proof, which
  ``Verifier.verify_*`` refuses by design, so it gets the same steps through the same
  sigstore-python functions those methods call (SET over the RFC 8785 entry, chain at the
  integrated time, SCT, code-signing usage, the signature, the entry body), minus the Merkle
  proof the format does not carry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity

from bench.common import ACME, GH
from watcher.registry.client import MANIFEST_ACCEPT, OCI_INDEX

BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
ATTACHMENT_TAG = re.compile(r"^sha256-[0-9a-f]{64}(?:\.[A-Za-z0-9_-]+)?$")
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"


class FloorVerifier:
    """sigstore-python's verifier and keyrings, built once from a trusted_root.json."""

    def __init__(self, trusted_root: Path) -> None:
        root = TrustedRoot.from_file(str(trusted_root))
        self.verifier = Verifier(trusted_root=root)
        self.rekor = root.rekor_keyring(KeyringPurpose.VERIFY)
        self.ct = root.ct_keyring(KeyringPurpose.VERIFY)
        self.policy = Identity(identity=ACME, issuer=GH)

    def bundle(self, blob: bytes) -> None:
        """One `Verifier.verify_dsse`; raises on failure."""
        self.verifier.verify_dsse(Bundle.from_json(blob), self.policy)

    def legacy(self, blob: bytes, annotations: dict[str, str], attestation: bool) -> None:
        """The same checks through sigstore-python's functions; raises on failure."""
        cert = x509.load_pem_x509_certificate(
            annotations["dev.sigstore.cosign/certificate"].encode()
        )
        promise = json.loads(annotations["dev.sigstore.cosign/bundle"])
        payload = promise["Payload"]
        canonical = rfc8785.dumps(
            {
                "body": payload["body"],
                "integratedTime": payload["integratedTime"],
                "logID": payload["logID"],
                "logIndex": payload["logIndex"],
            }
        )
        self.rekor.verify(
            key_id=bytes.fromhex(payload["logID"]),  # type: ignore[arg-type]
            signature=base64.b64decode(promise["SignedEntryTimestamp"]),
            data=canonical,
        )
        when = datetime.fromtimestamp(int(payload["integratedTime"]), UTC)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise ValueError("certificate not valid at integrated time")
        result = TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=when)
        chain = self.verifier._verify_chain_at_time(cert, result)
        verify_sct(cert, chain, self.ct)
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            raise ValueError("not a code-signing certificate")
        self.policy.verify(cert)
        if attestation:
            envelope = json.loads(blob)
            body_payload = base64.b64decode(envelope["payload"])
            ptype = envelope["payloadType"].encode()
            signed = b"DSSEv1 %d %b %d %b" % (len(ptype), ptype, len(body_payload), body_payload)
            signature = base64.b64decode(envelope["signatures"][0]["sig"])
        else:
            body_payload = signed = blob
            signature = base64.b64decode(annotations["dev.cosignproject.cosign/signature"])
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        body = json.loads(base64.b64decode(payload["body"]))
        spec = body["spec"]
        pem = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
        if attestation:
            entry_sig = spec["signatures"][0]
            ok = (
                entry_sig["signature"] == base64.b64encode(signature).decode()
                and entry_sig["verifier"] == pem
                and spec["payloadHash"]["value"] == hashlib.sha256(body_payload).hexdigest()
            )
        else:
            ok = (
                spec["signature"]["content"] == base64.b64encode(signature).decode()
                and spec["signature"]["publicKey"]["content"] == pem
                and spec["data"]["hash"]["value"] == hashlib.sha256(body_payload).hexdigest()
            )
        if not ok:
            raise ValueError("log entry body does not match the signature")


@dataclass
class FloorPass:
    """What one floor pass did."""

    seconds: float = 0.0
    images: int = 0
    requests: int = 0
    verified: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class BareHttp:
    """A bare session: one GET/HEAD, a concurrency bound, a request counter."""

    def __init__(self, base: str, session: aiohttp.ClientSession, concurrency: int) -> None:
        self.base = base
        self.session = session
        self.gate = asyncio.Semaphore(concurrency)
        self.requests = 0

    async def get(self, path: str, accept: str | None = None) -> tuple[int, bytes, Any]:
        headers = {"Accept": accept} if accept else {}
        async with self.gate:
            self.requests += 1
            async with self.session.get(self.base + path, headers=headers) as resp:
                return resp.status, await resp.read(), resp.headers

    async def head(self, path: str, accept: str) -> tuple[int, Any]:
        async with self.gate:
            self.requests += 1
            async with self.session.head(self.base + path, headers={"Accept": accept}) as resp:
                return resp.status, resp.headers


async def _digest(
    http: BareHttp, fv: FloorVerifier, repo: str, digest: str, out: FloorPass
) -> None:
    """Discovery as the watcher does it (referrers, fallback tag, .sig, .att), then verify."""
    hexpart = digest.split(":", 1)[1]

    def check(fn: Callable[[], None]) -> None:
        try:
            fn()
            out.verified += 1
        except Exception as exc:
            out.failed += 1
            out.errors.append(f"{repo}@{digest[:19]}: {exc}")

    async def referrers() -> None:
        status, body, _ = await http.get(f"/v2/{repo}/referrers/{digest}", OCI_INDEX)
        if status != 200:
            status, body, _ = await http.get(
                f"/v2/{repo}/manifests/sha256-{hexpart}", MANIFEST_ACCEPT
            )
            if status != 200:
                return
        entries = json.loads(body).get("manifests") or []

        async def one(entry: dict[str, Any]) -> None:
            if not str(entry.get("artifactType", BUNDLE_PREFIX)).startswith(BUNDLE_PREFIX):
                return
            _s, raw, _ = await http.get(f"/v2/{repo}/manifests/{entry['digest']}", MANIFEST_ACCEPT)
            layer = json.loads(raw)["layers"][0]
            _s, blob, _ = await http.get(f"/v2/{repo}/blobs/{layer['digest']}")
            check(lambda: fv.bundle(blob))

        await asyncio.gather(*(one(e) for e in entries))

    async def legacy(suffix: str) -> None:
        status, raw, _ = await http.get(
            f"/v2/{repo}/manifests/sha256-{hexpart}.{suffix}", MANIFEST_ACCEPT
        )
        if status != 200:
            return
        layers = json.loads(raw).get("layers") or []

        async def one(layer: dict[str, Any]) -> None:
            _s, blob, _ = await http.get(f"/v2/{repo}/blobs/{layer['digest']}")
            annotations = layer.get("annotations") or {}
            check(lambda: fv.legacy(blob, annotations, attestation=suffix == "att"))

        await asyncio.gather(*(one(la) for la in layers))

    await asyncio.gather(referrers(), legacy("sig"), legacy("att"))


async def floor_pass(
    base_url: str,
    namespace: str,
    fv: FloorVerifier,
    concurrency: int,
    *,
    head_attachment_tags: bool = False,
) -> FloorPass:
    """Enumerate and verify everything under ``namespace/`` as the watcher's pass does.

    ``head_attachment_tags``: also HEAD the ``sha256-<hex>[.sig|.att]`` tags (the scan does, to
    notice late signatures), so the floor makes exactly the watcher's requests.
    """
    out = FloorPass()
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        http = BareHttp(base_url, session, concurrency)
        _s, body, _ = await http.get("/v2/_catalog")
        repos = sorted(r for r in json.loads(body)["repositories"] if r.startswith(namespace + "/"))

        async def tags(repo: str) -> list[tuple[str, str]]:
            _s, raw, _ = await http.get(f"/v2/{repo}/tags/list")
            names = json.loads(raw).get("tags") or []
            return [(repo, t) for t in names]

        pairs = [p for group in await asyncio.gather(*(tags(r) for r in repos)) for p in group]

        async def head(repo: str, tag: str) -> tuple[str, str]:
            _status, headers = await http.head(f"/v2/{repo}/manifests/{tag}", MANIFEST_ACCEPT)
            return repo, str(headers["Docker-Content-Digest"])

        wanted = [p for p in pairs if head_attachment_tags or not ATTACHMENT_TAG.match(p[1])]
        answers = await asyncio.gather(*(head(r, t) for r, t in wanted))
        digests = sorted(
            {a for a, (_r, t) in zip(answers, wanted, strict=True) if not ATTACHMENT_TAG.match(t)}
        )
        gate = asyncio.Semaphore(concurrency)

        async def verify(repo: str, digest: str) -> None:
            async with gate:
                await _digest(http, fv, repo, digest, out)

        await asyncio.gather(*(verify(r, d) for r, d in digests))
        out.images = len(digests)
        out.requests = http.requests
    out.seconds = time.perf_counter() - started
    return out
