"""`scan` against a real registry holding a population of known make-up.

The population covers every verdict a tag can get; the coverage table must count it exactly.
A second scan must cost only listings and one HEAD per tag (counted with the watcher's own
``watcher_registry_requests_total``) and verify nothing; a late signature (a new ``.sig`` tag)
must make exactly its subject be verified again; a never-seen signer in a repository with a
history is a drift finding exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from tests.inventory.conftest import BOB, MALLORY, World, requests_by_method
from tests.inventory.openapi import validate
from watcher.metrics import Metrics
from watcher.testing import oci


def by_tag(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(repository, tag) -> verdict, over every image of a scan document."""
    return {(i["repository"], t): i["verdict"] for i in doc["images"] for t in i["tags"]}


def row(doc: dict[str, Any], repository: str) -> dict[str, Any]:
    [found] = [r for r in doc["coverage"] if r["repository"] == repository]
    return found


async def population(w: World) -> dict[str, Any]:
    """Two watched repositories of known make-up, and one outside the watched globs."""
    app, prod = w.repo("app"), w.repo("prod")
    v1 = await w.push(app, "v1")
    await w.sign_legacy(app, v1)
    await w.retag(app, v1, "v1-alias")  # two tags, one digest
    await w.sign_bundle(app, await w.push(app, "v2"))
    v3 = await w.push(app, "v3")  # unsigned (for now)
    await w.sign_bundle(app, await w.push(app, "v4"), MALLORY)
    await w.sign_legacy(app, await w.push(app, "v5"), bad_set=True)
    a = await w.push(prod, "a")
    await w.sign_legacy(prod, a)
    await w.attest(prod, a)
    await w.sign_legacy(prod, await w.push(prod, "b"))  # no provenance
    multi = await oci.push_index(w.client, prod, "multi", platforms=2)
    await w.sign_bundle(prod, multi)
    await w.attest(prod, multi)
    await w.push(f"other/elsewhere-{w.suffix}", "v1")  # not watched: never scanned
    return {"app": app, "prod": prod, "v3": v3}


async def test_coverage_cache_late_signature_and_drift(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    pop = await population(world)
    app, prod = pop["app"], pop["prod"]

    first_metrics = Metrics()
    code, doc, err = await world.scan(capsys, metrics=first_metrics)
    validate(doc, "ScanReport")
    assert code == 1  # some images fail
    assert "images/s" not in err  # no progress bar when stderr is not a terminal
    assert by_tag(doc) == {
        (app, "v1"): "verified",
        (app, "v1-alias"): "verified",
        (app, "v2"): "verified",
        (app, "v3"): "unsigned",
        (app, "v4"): "unexpected_signer",
        (app, "v5"): "invalid_signature",
        (prod, "a"): "verified",
        (prod, "b"): "missing_attestation",
        (prod, "multi"): "verified",
    }
    zero = {"pending": 0, "error": 0, "no_policy": 0}
    assert row(doc, app) == {
        "registry": "local",
        "repository": app,
        "tags": 6,
        "digests": 5,
        "verified": 2,
        "unsigned": 1,
        "unexpected_signer": 1,
        "invalid_signature": 1,
        "missing_attestation": 0,
        "failing": 3,
        "ratio": 0.5,  # v1, v1-alias and v2 of six tags
        **zero,
    }
    assert row(doc, prod) == {
        "registry": "local",
        "repository": prod,
        "tags": 3,
        "digests": 3,
        "verified": 2,
        "unsigned": 0,
        "unexpected_signer": 0,
        "invalid_signature": 0,
        "missing_attestation": 1,
        "failing": 1,
        "ratio": 0.6667,
        **zero,
    }
    assert [r["repository"] for r in doc["coverage"]] == sorted([app, prod])
    assert (doc["totals"]["tags"], doc["totals"]["digests"], doc["totals"]["failing"]) == (9, 8, 4)
    assert doc["totals"]["ratio"] == round(5 / 9, 4)
    assert (doc["scan"]["checked"], doc["scan"]["reused"], doc["scan"]["repositories"]) == (
        8,
        0,
        2,
    )
    assert doc["findings"] == []  # the first look at a repository is its baseline
    multi = next(i for i in doc["images"] if "multi" in i["tags"])
    assert any("multi-arch index" in r for r in multi["reasons"])
    # Recorded as source scan: events, digests, tags and verdicts.
    assert world.rows("SELECT DISTINCT source FROM events") == [("scan",)]
    assert world.rows("SELECT count(*) FROM verdicts WHERE source='scan'") == [(8,)]
    assert world.rows("SELECT count(*) FROM outbox WHERE alertname != 'ImageNewSigner'") == [(0,)]

    # Nothing new: listings and one HEAD per tag, no verification, no new event.
    tags_in_registry = await world.all_tags(app, prod)
    again = Metrics()
    code, doc2, err = await world.scan(capsys, metrics=again, tty=True)
    validate(doc2, "ScanReport")
    assert "images/s" in err  # the progress bar, on a terminal
    assert code == 1 and doc2["coverage"] == doc["coverage"]
    assert (doc2["scan"]["checked"], doc2["scan"]["reused"], doc2["scan"]["events"]) == (0, 8, 0)
    assert requests_by_method(again) == {"GET": 1 + 2, "HEAD": tags_in_registry}
    assert tags_in_registry == doc2["scan"]["tags"]

    # A late signature for v3 (a new .sig tag) and a new image signed by a new identity.
    await world.sign_legacy(app, pop["v3"])
    v6 = await world.push(app, "v6")
    await world.sign_bundle(app, v6, BOB)
    code, doc3, _ = await world.scan(capsys)
    assert doc3["scan"]["checked"] == 2 and doc3["scan"]["reused"] == 7
    assert by_tag(doc3)[(app, "v3")] == "verified" and by_tag(doc3)[(app, "v6")] == "verified"
    assert [(f["repository"], f["subject"], f["digest"]) for f in doc3["findings"]] == [
        (app, BOB, v6.digest)
    ]
    drift_alerts = "SELECT alertname, severity, digest FROM outbox WHERE alertname='ImageNewSigner'"
    assert world.rows(drift_alerts) == [("ImageNewSigner", "warning", v6.digest)]

    # --recheck verifies everything again; BOB is known now, so no second finding.
    code, doc4, _ = await world.scan(capsys, recheck=True)
    assert doc4["scan"]["checked"] == 9 and doc4["findings"] == []
    assert len(world.rows(drift_alerts)) == 1
    assert world.rows("SELECT count(*) FROM findings") == [(1,)]

    # GLOBs: a repository glob, then an image glob; nothing needs verifying.
    code, only_prod, _ = await world.scan(capsys, "inv/prod-*")
    assert [r["repository"] for r in only_prod["coverage"]] == [prod]
    assert code == 1 and only_prod["scan"]["checked"] == 0
    code, only_app, _ = await world.scan(capsys, f"{world.host}/inv/app-*")
    assert [r["repository"] for r in only_app["coverage"]] == [app]


async def test_tag_moves_and_deletions_are_recorded(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    app = world.repo("app")
    old = await world.push(app, "latest")
    await world.sign_legacy(app, old)
    code, _, _ = await world.scan(capsys)
    assert code == 0
    new = await world.push(app, "latest")  # the tag moves to an unsigned image
    code, doc, _ = await world.scan(capsys)
    assert code == 1 and doc["scan"]["checked"] == 1 and doc["scan"]["events"] == 1
    assert world.rows(
        "SELECT tag, previous_digest, source FROM tag_history WHERE digest=?", new.digest
    ) == [("latest", old.digest, "scan")]
    # The old digest is untagged now: no longer part of the coverage.
    assert [i["digest"] for i in doc["images"]] == [new.digest]


async def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=120
    )


async def test_console_script(world: World) -> None:
    app = world.repo("app")
    await world.sign_legacy(app, await world.push(app, "v1"))
    base = [sys.executable, "-m", "watcher"]
    ok = await _run([*base, "scan", "-c", str(world.config_path)])
    assert ok.returncode == 0, ok.stderr
    assert "Signing coverage" in ok.stdout and app in ok.stdout and "100.0%" in ok.stdout
    assert "images/s" in ok.stdout and "images/s" not in ok.stderr  # summary, no bar
    usage = await _run([*base, "scan", "-c", str(world.config_path), "--what-if"])
    assert usage.returncode == 2 and "--policy-file" in usage.stderr
    bad_glob = await _run([*base, "scan", "-c", str(world.config_path), "Not A Glob!"])
    assert bad_glob.returncode == 2
    unknown = await _run([*base, "trace", "-c", str(world.config_path), "sha256:" + "e" * 64])
    assert unknown.returncode == 4 and "unknown digest" in unknown.stderr


async def test_unreachable_registry_exits_3(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    world.registry.stop()
    code, doc, _ = await world.scan(capsys)
    assert code == 3 and doc["scan"]["errors"] and doc["images"] == []
