"""A running daemon notified by its registry: trace, signer drift and the query API.

Pushes reach the daemon as real distribution webhooks, so events carry the registry's own
source address; the alert sink points at a closed port, so alert delivery state shows up as
failed attempts. Every API response is checked against the served OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.inventory.conftest import ALICE, BOB, CLAIMS, Watched
from tests.inventory.openapi import DOC, validate, validate_response
from watcher.refs import Digest
from watcher.trace import build_trace


async def api(
    w: Watched, path: str, *, token: bool = True, route: str | None = None, **params: Any
) -> tuple[int, Any]:
    """GET an API path; the body is validated against the document for its route."""
    headers = {"Authorization": f"Bearer {w.token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{w.base}{path}", headers=headers, params=params) as resp,
    ):
        body = await resp.json()
        validate_response(route or path, resp.status, body)
        return resp.status, body


async def test_trace_shows_push_tag_move_late_signature_and_alert(watched: Watched, capsys) -> None:  # type: ignore[no-untyped-def]
    w = watched.world
    repo = w.repo("late")
    image = await w.push(repo, "v1")
    other = await w.push(repo, "latest")
    await w.retag(repo, image, "latest")  # latest moves from `other` to `image`
    await watched.final(repo, image.digest, "unsigned")  # the 2 s grace period ran out
    store = watched.daemon.store
    assert store is not None

    async def alerted() -> bool:
        history = await store.history(Digest(image.digest))
        return any(a["attempts"] > 0 for a in history["alerts"])

    await watched.until(alerted)
    await w.sign_legacy(repo, image, ALICE, extensions=CLAIMS)  # the late signature
    await watched.final(repo, image.digest, "verified")

    code, trace, _ = await w.trace(capsys, image.digest)
    assert code == 0
    validate(trace, "Trace")
    label = {"alert": "alertname", "verification": "verdict", "finding": "subject"}
    kinds = [(e["type"], e.get(label.get(e["type"], "tag"))) for e in trace["timeline"]]
    pushes = [e for e in trace["timeline"] if e["type"] == "push"]
    assert pushes[0]["tag"] == "v1" and pushes[0]["source"] == "webhook"
    assert pushes[0]["source_addr"]  # the registry's notification carried the client address
    [moved] = [e for e in trace["timeline"] if e["type"] == "tag" and e["change"] == "moved_here"]
    assert (moved["tag"], moved["from_digest"]) == ("latest", other.digest)
    unsigned = kinds.index(("verification", "unsigned"))
    alert = kinds.index(("alert", "ImageUnsigned"))
    signature_push = next(
        i
        for i, e in enumerate(trace["timeline"])
        if e["type"] == "push" and e["signature_artifact"]
    )
    verified = kinds.index(("verification", "verified"))
    first_push = kinds.index(("push", "v1"))
    assert (
        first_push < trace["timeline"].index(moved) < unsigned < alert < signature_push < verified
    ), "\n".join(f"{e['at']} {k}" for e, k in zip(trace["timeline"], kinds, strict=True))
    assert trace["timeline"] == sorted(trace["timeline"], key=lambda e: e["at"])
    delivery = trace["timeline"][alert]["delivery"]
    assert delivery["attempts"] >= 1 and delivery["sent_at"] is None and delivery["last_error"]
    final = trace["timeline"][verified]
    [policy] = final["policies"]
    assert policy["name"] == "late" and len(policy["hash"]) == 64
    [signature] = final["signatures"]
    assert signature["subject"] == ALICE and signature["format"] == "legacy"
    assert signature["extensions"]["build_signer_uri"] == ALICE
    assert signature["extensions"]["run_invocation_uri"].endswith("/runs/42/attempts/1")
    assert signature["tlog"]["log_index"] >= 0 and signature["tlog"]["integrated_at"]
    assert signature["tlog"]["url"] is None  # a private log: no public search link
    public = await build_trace(store, watched.daemon.config, Digest(image.digest), public_good=True)
    assert public is not None
    [linked] = next(
        e for e in public["timeline"] if e["type"] == "verification" and e["verdict"] == "verified"
    )["signatures"]
    index = linked["tlog"]["log_index"]
    assert linked["tlog"]["url"] == f"https://search.sigstore.dev/?logIndex={index}"
    [repository] = trace["repositories"]
    assert sorted(repository["tags"]) == ["latest", "v1"]

    code, text, _ = await w.trace(capsys, f"{w.host}/{repo}:latest", output="text")
    assert code == 0 and isinstance(text, str)
    for needle in ("moved here from", "ImageUnsigned", "signature", "build_signer_uri", "tlog #"):
        assert needle in text, needle

    status, body = await api(
        watched, f"/api/v1/images/{image.digest}/history", route="/api/v1/images/{digest}/history"
    )
    assert status == 200 and body["timeline"] == trace["timeline"]


async def test_new_signer_is_a_finding_exactly_once(watched: Watched, capsys) -> None:  # type: ignore[no-untyped-def]
    w = watched.world
    repo = w.repo("drift")
    first = await w.push(repo, "v1")
    await w.sign_legacy(repo, first, ALICE)
    await watched.final(repo, first.digest, "verified")
    newcomer = await w.push(repo, "v2")
    await w.sign_bundle(repo, newcomer, BOB)  # allowed by the policy, but new here
    await watched.final(repo, newcomer.digest, "verified")
    again = await w.push(repo, "v3")
    await w.sign_bundle(repo, again, BOB)
    await watched.final(repo, again.digest, "verified")
    await w.sign_legacy(repo, newcomer, ALICE)  # re-checks v2: final once more
    store = watched.daemon.store
    assert store is not None

    async def rechecked() -> bool:
        rows = (await store.history(Digest(newcomer.digest)))["verdicts"]
        return sum(1 for v in rows if v["final"]) >= 2

    await watched.until(rechecked)

    assert w.rows("SELECT repository, subject, digest FROM findings") == [
        (repo, BOB, newcomer.digest)
    ]
    assert w.rows(
        "SELECT alertname, severity, digest, policy FROM outbox WHERE alertname='ImageNewSigner'"
    ) == [("ImageNewSigner", "warning", newcomer.digest, "release")]
    signers = w.rows("SELECT subject FROM signers WHERE repository=?", repo)
    assert sorted(r[0] for r in signers) == sorted([ALICE, BOB])
    code, trace, _ = await w.trace(capsys, newcomer.digest)
    [finding] = trace["findings"]
    assert finding["subject"] == BOB and finding["known_signers"] == [
        f"{ALICE} (issuer {finding['issuer']})"
    ]
    assert any(e["type"] == "finding" for e in trace["timeline"])
    code, trace, _ = await w.trace(capsys, again.digest)
    assert code == 0 and trace["findings"] == []
    status, body = await api(
        watched,
        f"/api/v1/images/{newcomer.digest}/history",
        route="/api/v1/images/{digest}/history",
    )
    assert status == 200 and [f["subject"] for f in body["findings"]] == [BOB]


async def test_query_api(watched: Watched, capsys) -> None:  # type: ignore[no-untyped-def]
    w = watched.world
    app = w.repo("app")
    signed = await w.push(app, "signed")
    await w.sign_legacy(app, signed)
    bare = await w.push(app, "bare")
    await w.retag(app, bare, "bare-too")
    await watched.final(app, signed.digest, "verified")
    await watched.final(app, bare.digest, "unsigned")
    prod = w.repo("prod")
    await w.sign_legacy(prod, prod_image := await w.push(prod, "v1"))
    await watched.final(prod, prod_image.digest, "missing_attestation")

    status, body = await api(watched, "/api/v1/openapi.json", token=False)
    assert status == 200 and body == DOC and body["openapi"].startswith("3.1")

    for path in ("/api/v1/coverage", "/api/v1/images", f"/api/v1/images/{bare.digest}/history"):
        route = "/api/v1/images/{digest}/history" if "history" in path else path
        status, body = await api(watched, path, token=False, route=route)
        assert status == 401

    status, coverage = await api(watched, "/api/v1/coverage")
    assert status == 200
    rows = {r["repository"]: r for r in coverage["repositories"]}
    assert (rows[app]["tags"], rows[app]["digests"], rows[app]["verified"]) == (3, 2, 1)
    assert (rows[app]["unsigned"], rows[app]["ratio"]) == (1, round(1 / 3, 4))
    assert rows[prod]["missing_attestation"] == 1
    assert coverage["totals"]["digests"] == 3

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        status, page = await api(watched, "/api/v1/images", **params)
        assert status == 200 and len(page["images"]) <= 1
        seen.extend(i["digest"] for i in page["images"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({signed.digest, bare.digest, prod_image.digest})
    assert len(seen) == 3

    status, page = await api(watched, "/api/v1/images", verdict="unsigned")
    assert [i["digest"] for i in page["images"]] == [bare.digest]
    assert sorted(page["images"][0]["tags"]) == ["bare", "bare-too"]
    status, page = await api(watched, "/api/v1/images", repository=prod)
    assert [i["digest"] for i in page["images"]] == [prod_image.digest]
    status, page = await api(watched, "/api/v1/images", since="2999-01-01T00:00:00Z")
    assert page == {"images": [], "next_cursor": None}
    for bad in ({"verdict": "nope"}, {"since": "yesterday"}, {"limit": "0"}, {"cursor": "%%"}):
        status, body = await api(watched, "/api/v1/images", **bad)
        assert status == 400, bad

    route = "/api/v1/images/{digest}"
    status, body = await api(watched, f"/api/v1/images/{signed.digest}", route=route)
    assert status == 200 and body["results"][0]["verdict"] == "verified"
    unknown = "sha256:" + "0" * 64
    status, _ = await api(watched, f"/api/v1/images/{unknown}", route=route)
    assert status == 404
    status, _ = await api(watched, f"/api/v1/images/{unknown}/history", route=route + "/history")
    assert status == 404
    status, _ = await api(watched, "/api/v1/images/nonsense/history", route=route + "/history")
    assert status == 400


async def test_trace_of_unknown_digest_or_tag_exits_4(watched: Watched, capsys) -> None:  # type: ignore[no-untyped-def]
    w = watched.world
    code, _, err = await w.trace(capsys, "sha256:" + "f" * 64)
    assert code == 4 and "unknown digest" in err
    code, _, err = await w.trace(capsys, f"{w.host}/{w.repo('app')}:nope")
    assert code == 4 and "does not exist" in err
    code, _, err = await w.trace(capsys, "Not An Image!")
    assert code == 2
