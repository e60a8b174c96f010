"""The served OpenAPI document is valid OpenAPI 3.1 and describes every /api/v1 route."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate as validate_spec

from tests.inventory.openapi import DOC
from watcher.config import load_config
from watcher.daemon.app import Daemon
from watcher.daemon.http import build_app


def test_document_is_valid_openapi_31() -> None:
    validate_spec(DOC)
    assert DOC["openapi"].startswith("3.1")


def test_every_api_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n")
    app = build_app(Daemon(config, load_config(config)))
    served = {r.canonical for r in app.router.resources() if r.canonical.startswith("/api/")}
    assert served == set(DOC["paths"])
    for path, item in DOC["paths"].items():
        for operation in item.values():
            if path != "/api/v1/openapi.json":
                assert "401" in operation["responses"], path  # behind the optional token
