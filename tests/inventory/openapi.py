"""Validate JSON (API responses, CLI documents) against the served OpenAPI 3.1 document.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so the document itself is registered as one
resource and responses are checked against the schema the document names for their route and
status, through JSON pointers into it: a response that drifts from the document fails.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from watcher.daemon.http import openapi_document

URI = "urn:registry-watcher:openapi"
DOC = openapi_document()
_REGISTRY: Registry[Any] = Registry().with_resource(
    URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _check(ref: str, instance: Any) -> None:
    validator = Draft202012Validator(
        {"$ref": f"{URI}#/{ref}"},
        registry=_REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate(instance)


def validate(instance: Any, schema: str) -> None:
    """Check ``instance`` against ``components.schemas[schema]``."""
    _check(_pointer("components", "schemas", schema), instance)


def validate_response(path: str, status: int, body: Any, method: str = "get") -> None:
    """Check a response body against what the document promises for the route and status."""
    responses = DOC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    _check(
        _pointer(
            "paths", path, method, "responses", str(status), "content", "application/json", "schema"
        ),
        body,
    )
