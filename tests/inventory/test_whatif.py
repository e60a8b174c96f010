"""What-if: the recorded inventory under a proposed policy, the store left untouched.

A stricter release policy (one exact workflow, no key) must report exactly the images it
fails, from the stored evidence alone; a policy covering a repository that no policy covered
needs the registry again, and says so. The database dump is compared before and after.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

from tests.inventory.conftest import ALICE, BOB, GH, MALLORY, World
from tests.inventory.openapi import validate
from watcher import cli
from watcher.config import load_config


def dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def policy_file(tmp: Path, name: str, spec: dict[str, object]) -> Path:
    doc = {
        "apiVersion": "policy.sigstore.dev/v1beta1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def what_if(w: World, capsys, *files: Path, output: str = "json") -> tuple[int, object]:  # type: ignore[no-untyped-def]
    import json

    config = load_config(w.config_path)
    code = await cli.scan_command(
        config, [], output=output, policy_files=list(files), what_if=True, tty=False
    )
    out = capsys.readouterr().out
    return code, json.loads(out) if output == "json" else out


async def test_stricter_policy_reports_exactly_what_it_fails(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    app, free = world.repo("app"), world.repo("free")
    alice = await world.push(app, "alice")
    await world.sign_legacy(app, alice, ALICE)
    bob = await world.push(app, "bob")
    await world.sign_bundle(app, bob, BOB)
    keyed = await world.push(app, "keyed")
    await world.sign_key(app, keyed)
    await world.sign_bundle(app, await world.push(app, "mallory"), MALLORY)
    await world.push(app, "bare")
    loose = await world.push(free, "v1")  # no policy covers inv/free-*
    code, scanned, _ = await world.scan(capsys)
    assert code == 1
    before = {(i["repository"], i["tags"][0]): i["verdict"] for i in scanned["images"]}
    assert before == {
        (app, "alice"): "verified",
        (app, "bob"): "verified",
        (app, "keyed"): "verified",
        (app, "mallory"): "unexpected_signer",
        (app, "bare"): "unsigned",
        (free, "v1"): "no_policy",
    }
    db_before = dump(world.db)

    strict = policy_file(
        world.tmp,
        "release",  # same name: replaces the configured release policy
        {
            "images": [{"glob": f"{world.host}/inv/app-*"}],
            "authorities": [
                {
                    "name": "release-workflow",
                    "keyless": {"identities": [{"issuer": GH, "subject": ALICE}]},
                }
            ],
        },
    )
    code, report = await what_if(world, capsys, strict)
    assert isinstance(report, dict)
    validate(report, "WhatIfReport")
    assert code == 1
    assert {(c["tags"][0], c["from"], c["to"]) for c in report["changes"]} == {
        ("bob", "verified", "unexpected_signer"),
        ("keyed", "verified", "unexpected_signer"),
    }
    assert report["refetched"] == 0  # identity-only change: the stored evidence sufficed
    assert (report["evaluated"], report["unchanged"]) == (6, 4)
    assert report["transitions"] == [{"from": "verified", "to": "unexpected_signer", "images": 2}]
    assert dump(world.db) == db_before

    code, text = await what_if(world, capsys, strict, output="text")
    assert code == 1 and isinstance(text, str)
    assert "verified -> unexpected_signer" in text and "2 would change, 4 unchanged" in text

    covering = policy_file(
        world.tmp,
        "free",  # a new name: added beside the configured policies
        {
            "images": [{"glob": f"{world.host}/inv/free-*"}],
            "authorities": [
                {"name": "gha", "keyless": {"identities": [{"issuer": GH, "subject": ALICE}]}}
            ],
        },
    )
    code, report = await what_if(world, capsys, covering)
    assert isinstance(report, dict)
    assert code == 1 and report["refetched"] == 1  # nothing was examined under no policy
    assert [(c["digest"], c["from"], c["to"], c["refetched"]) for c in report["changes"]] == [
        (loose.digest, "no_policy", "unsigned", True)
    ]
    assert dump(world.db) == db_before

    code, report = await what_if(
        world,
        capsys,
        policy_file(
            world.tmp,
            "noop",
            {
                "images": [{"glob": "nowhere.example/**"}],
                "authorities": [
                    {"name": "gha", "keyless": {"identities": [{"issuer": GH, "subject": ALICE}]}}
                ],
            },
        ),
    )
    assert code == 0 and isinstance(report, dict) and report["changes"] == []
    assert dump(world.db) == db_before


async def test_invalid_policy_file_is_a_usage_error(world: World, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: policy.sigstore.dev/v1beta1\nkind: ClusterImagePolicy\nspec: 3\n")
    config = load_config(world.config_path)
    code = await cli.scan_command(config, [], policy_files=[bad], what_if=True, tty=False)
    assert code == 2 and "bad.yaml" in capsys.readouterr().err
