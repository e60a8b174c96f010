"""Webhooks: every captured payload parses to the right events; bad ones get helpful 400s.

The payloads in ``tests/fixtures/payloads`` are copies of the reference captures (live from
docker-registry 2.8.2, or verbatim from each vendor's documentation). Where a vendor's doc
redacts its digest (ACR's x's, ECR's truncated hex, GAR's ``sha256:...``), the verbatim
payload must be refused, and a copy with a real digest must parse.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watcher.config import RegistryConfig, load_config
from watcher.events import Action, PushEvent, Source
from watcher.refs import Digest, is_attachment_tag, signature_tag
from watcher.sources.webhooks import (
    MAX_BODY,
    ParsedWebhook,
    WebhookError,
    authenticate,
    parse_webhook,
)

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"

BEARER_SECRET = "s3cret-shared-token"  # what distribution-config.yml sends
GITHUB_SECRET = "It's a Secret to Everybody"  # GitHub's documented test vector
ENV = {"HOME": "/home/w", "HOOK_SECRET": BEARER_SECRET, "GITHUB_SECRET": GITHUB_SECRET}

D_MANIFEST = "sha256:000b77356170a0b5ba223a15ad1d4aa733bb067fe87e4fbd15b80732e0b1e8e1"
D_INDEX = "sha256:1c8922a2afab59c26f50eec2d6731c231797f5d04bfa8af2be0c7e3610d0c5bc"
D_HARBOR = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8"
D_HARBOR_CE = "sha256:dde8e930c7b6a490f728e66292bc9bce42efc9bbb5278bae40e4f30f6e00fe8c"
D_GITHUB = "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
D_OTHER = "sha256:" + "ab" * 32
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DISTRIBUTION_V1 = "application/vnd.docker.distribution.events.v1+json"
CANARY = "CANARYvalue"  # planted in bad values: no error message may repeat it

CONFIG = """\
registries:
  - name: local
    url: http://127.0.0.1:5000
    repositories: ["library/*", "acme/**"]
    webhook: {kind: distribution, secret_env: HOOK_SECRET}
  - name: harbor
    url: https://hub.harbor.com
    repositories: ["test-webhook/*", "library/*"]
    webhook: {kind: harbor, secret_env: HOOK_SECRET}
  - name: ghcr
    url: https://ghcr.io
    repositories: ["codertocat/**"]
    webhook: {kind: github, secret_env: GITHUB_SECRET}
  - name: ghes
    url: https://container.pkg.github.com
    webhook: {kind: github, secret_env: GITHUB_SECRET}
  - name: ghes-other
    url: https://containers.example.com
    webhook: {kind: github, secret_env: GITHUB_SECRET}
  - name: hub
    url: https://registry-1.docker.io
    repositories: ["svendowideit/*", "nginx"]
    webhook: {kind: dockerhub, insecure: true}
  - name: quay
    url: https://quay.io
    repositories: ["mynamespace/*"]
    webhook: {kind: quay, insecure: true}
  - name: quay-internal
    url: https://quay.internal.example
    webhook: {kind: quay, insecure: true}
  - name: acr
    url: https://myregistry.azurecr.io
    webhook: {kind: acr, secret_env: HOOK_SECRET}
  - name: ecr
    url: https://123456789012.dkr.ecr.us-west-2.amazonaws.com
    webhook: {kind: ecr, secret_env: HOOK_SECRET}
  - name: gar
    url: https://us-west1-docker.pkg.dev
    repositories: ["my-project/**"]
    webhook: {kind: gar, secret_env: HOOK_SECRET}
  - name: generic
    url: http://localhost:5000
    repositories: ["acme/*"]
    webhook: {kind: generic, secret_env: HOOK_SECRET}
  - name: nohook
    url: http://localhost:6000
"""


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RegistryConfig]:
    path = tmp_path_factory.mktemp("webhooks") / "config.yaml"
    path.write_text(CONFIG)
    return {r.name: r for r in load_config(path, environ=ENV).registries}


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def body_of(name: str) -> dict[str, Any]:
    body: dict[str, Any] = payload(name)["body"]
    return body


def headers_of(name: str) -> dict[str, str]:
    headers: dict[str, str] = payload(name).get("http_request_headers", {})
    return headers


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def parse(
    registry: RegistryConfig,
    body: object,
    headers: Mapping[str, str] | None = None,
    remote: str | None = None,
) -> ParsedWebhook:
    raw = body if isinstance(body, bytes) else encode(body)
    return parse_webhook(registry, headers or {}, raw, remote=remote)


def refused(
    registry: RegistryConfig, body: object, headers: Mapping[str, str] | None = None
) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        parse(registry, body, headers)
    return info.value


def summary(parsed: ParsedWebhook) -> list[tuple[str, str | None, str | None, Action, str | None]]:
    return [(e.repository, e.digest, e.tag, e.action, e.event_id) for e in parsed.events]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def github_headers(event: str = "package", delivery: str = "d-1") -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}


def pubsub(message: object, message_id: str = "1234567890") -> dict[str, Any]:
    """A Pub/Sub push envelope as in gar-pubsub.json, with ``message`` as its data."""
    envelope: dict[str, Any] = copy.deepcopy(payload("gar-pubsub.json")["pubsub_push_envelope"])
    envelope["message"]["data"] = base64.b64encode(encode(message)).decode()
    envelope["message"]["messageId"] = message_id
    return envelope


def gar_messages() -> list[dict[str, str]]:
    """The documented messages with their ``sha256:...`` placeholder made a real digest."""
    text = json.dumps(payload("gar-pubsub.json")["messages"]).replace("sha256:...", D_OTHER)
    messages: list[dict[str, str]] = json.loads(text)
    return messages


# --- every captured payload ---------------------------------------------------------------------

# Reference files that are not webhook deliveries (registry API and auth captures).
NOT_WEBHOOKS = {
    "distribution-config.yml",
    "distribution-pull-api-samples.json",
    "docker-config.json",
    "docker-token-auth.json",
    "oci-referrers-response.json",
}
WEBHOOK_TESTS = {
    "distribution-push.json": "test_distribution_push_by_tag",
    "distribution-push-by-digest.json": "test_distribution_push_by_digest",
    "distribution-delete.json": "test_distribution_deletes",
    "distribution-blob-push.json": "test_distribution_blob_push_is_ignored",
    "harbor-push.json": "test_harbor_default_push",
    "harbor-cloudevents-example.json": "test_harbor_cloudevents",
    "github-package.json": "test_github_packages",
    "github-registry_package.json": "test_github_packages",
    "dockerhub-push.json": "test_dockerhub_push",
    "quay-repo_push.json": "test_quay_repo_push",
    "acr-push.json": "test_acr_push",
    "ecr-image-action.json": "test_ecr_image_action",
    "gar-pubsub.json": "test_gar_pubsub",
}


def test_every_payload_fixture_has_a_test() -> None:
    assert {p.name for p in PAYLOADS.iterdir()} == NOT_WEBHOOKS | set(WEBHOOK_TESTS)
    assert all(name in globals() for name in WEBHOOK_TESTS.values())


def test_distribution_push_by_tag(registries: dict[str, RegistryConfig]) -> None:
    name = "distribution-push.json"
    parsed = parse(registries["local"], body_of(name), headers_of(name), remote="10.0.0.9")
    assert parsed == ParsedWebhook(
        events=(
            PushEvent(
                registry="local",
                repository="library/hello",
                digest=Digest(D_MANIFEST),
                tag="v1",
                action=Action.PUSH,
                source=Source.WEBHOOK,
                event_id="c2165efa-5c43-4cd4-8b0b-dfe328ef22b3",
                occurred_at=datetime(2026, 11, 25, 14, 39, 35, 468127, tzinfo=UTC),
                actor=None,  # "actor": {} when anonymous
                source_addr="127.0.0.1:48582",  # the pusher, not the webhook's sender
                media_type=OCI_MANIFEST,
            ),
        ),
        ignored=(),
    )


def test_distribution_push_by_digest(registries: dict[str, RegistryConfig]) -> None:
    name = "distribution-push-by-digest.json"
    parsed = parse(registries["local"], body_of(name), headers_of(name))
    assert summary(parsed) == [
        ("library/hello", D_INDEX, None, Action.PUSH, "366dc03d-627b-4687-8d74-907a40ef5028")
    ]
    (event,) = parsed.events
    assert event.media_type == OCI_INDEX and event.source_addr == "127.0.0.1:48590"


def test_distribution_deletes(registries: dict[str, RegistryConfig]) -> None:
    name = "distribution-delete.json"
    parsed = parse(registries["local"], body_of(name), headers_of(name))
    assert summary(parsed) == [
        ("library/hello", D_INDEX, None, Action.DELETE, "9c331459-eef9-4afb-bf82-cdca9b4c6b92"),
        ("library/hello", None, "latest", Action.DELETE, "1c3ed447-1e58-4442-96e1-94c957753103"),
    ]
    assert parsed.events[1].occurred_at == datetime(2026, 11, 25, 14, 39, 36, 610040, tzinfo=UTC)
    assert parsed.ignored == ()


def test_distribution_blob_push_is_ignored(registries: dict[str, RegistryConfig]) -> None:
    name = "distribution-blob-push.json"
    parsed = parse(registries["local"], body_of(name), headers_of(name))
    assert parsed.events == ()
    (reason,) = parsed.ignored
    assert "blob" in reason and "application/octet-stream" in reason


def test_harbor_default_push(registries: dict[str, RegistryConfig]) -> None:
    name = "harbor-push.json"
    parsed = parse(registries["harbor"], body_of(name), headers_of(name), remote="192.0.2.7")
    assert summary(parsed) == [("test-webhook/debian", D_HARBOR, "latest", Action.PUSH, None)]
    (event,) = parsed.events
    assert event.occurred_at == datetime.fromtimestamp(1586922308, UTC)
    assert (event.actor, event.source_addr, event.registry) == ("admin", "192.0.2.7", "harbor")


def test_harbor_cloudevents(registries: dict[str, RegistryConfig]) -> None:
    name = "harbor-cloudevents-example.json"
    # The captured example is a pull: nothing to verify.
    pulled = parse(registries["harbor"], body_of(name), headers_of(name))
    assert pulled.events == () and "harbor.artifact.pulled" in pulled.ignored[0]

    pushed = body_of(name) | {"type": "harbor.artifact.pushed"}
    parsed = parse(registries["harbor"], pushed, headers_of(name))
    # Pushed untagged: Harbor puts the digest in "tag", which is therefore no tag.
    assert summary(parsed) == [
        ("library/busybox", D_HARBOR_CE, None, Action.PUSH, "4b2f89a6-548d-4c12-9993-a1f5790b97d2")
    ]
    (event,) = parsed.events
    assert event.occurred_at == utc("2023-03-06T06:08:43")
    assert event.actor == "robot$library+scanner-Trivy-51fe4548-bbe5-11ed-9217-0242ac14000d"

    deleted = body_of(name) | {"type": "harbor.artifact.deleted"}
    assert [e.action for e in parse(registries["harbor"], deleted).events] == [Action.DELETE]


def test_harbor_default_delete_and_other_types(registries: dict[str, RegistryConfig]) -> None:
    body = body_of("harbor-push.json")
    deleted = parse(registries["harbor"], body | {"type": "DELETE_ARTIFACT"})
    assert summary(deleted) == [("test-webhook/debian", D_HARBOR, "latest", Action.DELETE, None)]
    scanned = parse(registries["harbor"], body | {"type": "SCANNING_COMPLETED"})
    assert scanned.events == () and "SCANNING_COMPLETED" in scanned.ignored[0]


def test_harbor_one_id_for_several_resources_stays_unique(
    registries: dict[str, RegistryConfig],
) -> None:
    body = body_of("harbor-cloudevents-example.json") | {"type": "harbor.artifact.pushed"}
    body["data"]["resources"].append({"digest": D_OTHER, "tag": "v2"})
    parsed = parse(registries["harbor"], body)
    event_id = "4b2f89a6-548d-4c12-9993-a1f5790b97d2"
    assert summary(parsed) == [
        ("library/busybox", D_HARBOR_CE, None, Action.PUSH, f"{event_id}#0"),
        ("library/busybox", D_OTHER, "v2", Action.PUSH, f"{event_id}#1"),
    ]


@pytest.mark.parametrize(
    ("name", "actor"),
    [
        ("github-package.json", "Codertocat"),
        ("github-registry_package.json", "github-actions[bot]"),
    ],
)
def test_github_packages(registries: dict[str, RegistryConfig], name: str, actor: str) -> None:
    parsed = parse(registries["ghcr"], body_of(name), headers_of(name))
    # package_version.name is the digest; container_metadata's 40-hex "digest" is not used.
    assert summary(parsed) == [
        (
            "codertocat/hello-world-npm",
            D_GITHUB,
            None,  # tag.name is "" when untagged
            Action.PUSH,
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        )
    ]
    (event,) = parsed.events
    assert event.actor == actor and event.occurred_at == utc("2019-05-09T23:28:29")


def test_github_tag_and_manifest_digest_fallback(registries: dict[str, RegistryConfig]) -> None:
    body = body_of("github-package.json")
    version = body["package"]["package_version"]
    version["name"] = "1.0.0"
    version["container_metadata"]["manifest"]["digest"] = D_OTHER
    version["container_metadata"]["tag"]["name"] = "v1.0.0"
    parsed = parse(registries["ghcr"], body, github_headers(delivery="abc"))
    assert summary(parsed) == [
        ("codertocat/hello-world-npm", D_OTHER, "v1.0.0", Action.PUSH, "abc")
    ]


def test_github_ignores_what_is_not_a_container_push(
    registries: dict[str, RegistryConfig],
) -> None:
    ghcr = registries["ghcr"]
    body = body_of("github-package.json")
    ping = parse(ghcr, {"zen": "Keep it logically awesome."}, github_headers("ping"))
    assert ping.events == () and "'ping'" in ping.ignored[0]
    npm = copy.deepcopy(body)
    npm["package"]["ecosystem"] = npm["package"]["package_type"] = "npm"
    assert parse(ghcr, npm, github_headers()).events == ()
    for action in ("deleted", "created"):
        assert parse(ghcr, body | {"action": action}, github_headers()).events == ()
    assert parse(ghcr, body | {"action": "updated"}, github_headers()).events != ()


def test_github_enterprise_host_must_match(registries: dict[str, RegistryConfig]) -> None:
    body = body_of("github-package.json")
    # The payload's registry.url is https://CONTAINER.pkg.github.com/Codertocat.
    assert len(parse(registries["ghes"], body, github_headers()).events) == 1
    other = parse(registries["ghes-other"], body, github_headers())
    assert other.events == () and "another registry" in other.ignored[0]


def test_dockerhub_push(registries: dict[str, RegistryConfig]) -> None:
    parsed = parse(registries["hub"], body_of("dockerhub-push.json"), remote="203.0.113.5")
    assert summary(parsed) == [("svendowideit/testhook", None, "latest", Action.PUSH, None)]
    (event,) = parsed.events
    assert event.occurred_at == datetime.fromtimestamp(1417566161, UTC)
    assert (event.actor, event.source_addr) == ("trustedbuilder", "203.0.113.5")


def test_dockerhub_official_images_are_under_library(
    registries: dict[str, RegistryConfig],
) -> None:
    body = body_of("dockerhub-push.json")
    body["repository"]["repo_name"] = "nginx"
    assert summary(parse(registries["hub"], body)) == [
        ("library/nginx", None, "latest", Action.PUSH, None)
    ]


def test_quay_repo_push(registries: dict[str, RegistryConfig]) -> None:
    name = "quay-repo_push.json"
    parsed = parse(registries["quay"], body_of(name), headers_of(name))
    assert summary(parsed) == [
        ("mynamespace/myrepo", None, "latest", Action.PUSH, None),
        ("mynamespace/myrepo", None, "foo", Action.PUSH, None),
    ]


def test_quay_other_host_and_other_notifications(registries: dict[str, RegistryConfig]) -> None:
    body = body_of("quay-repo_push.json")
    other = parse(registries["quay-internal"], body)
    assert other.events == () and "another host" in other.ignored[0]
    internal = body | {"docker_url": "quay.internal.example/mynamespace/myrepo"}
    assert len(parse(registries["quay-internal"], internal).events) == 2
    build = {"repository": "mynamespace/myrepo", "build_id": "x", "docker_tags": ["latest"]}
    assert parse(registries["quay"], build).events == ()
    twice = body | {"updated_tags": ["latest", "latest"]}
    assert [e.tag for e in parse(registries["quay"], twice).events] == ["latest"]


def test_acr_push(registries: dict[str, RegistryConfig]) -> None:
    name = "acr-push.json"
    # Microsoft's example redacts the digest with x's: that is not a digest.
    error = refused(registries["acr"], body_of(name), headers_of(name))
    assert (error.status, error.message) == (
        400,
        "target.digest: is not a digest (want sha256:<64 lowercase hex>)",
    )
    body = body_of(name)
    body["target"]["digest"] = D_OTHER
    parsed = parse(registries["acr"], body, headers_of(name))
    expected = [("hello-world", D_OTHER, "v1", Action.PUSH, "cb8c3971-9adc-488b-xxxx-43cbb4974ff5")]
    assert summary(parsed) == expected
    (event,) = parsed.events
    assert event.occurred_at == datetime(2023, 11, 17, 16, 52, 1, 343145, tzinfo=UTC)
    assert event.media_type == "application/vnd.docker.distribution.manifest.v2+json"

    # The same object as an array, and wrapped by Event Grid.
    assert summary(parse(registries["acr"], [body])) == expected
    grid = {
        "id": "grid-1",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "eventTime": "2023-11-17T16:52:02Z",
        "data": body,
    }
    assert summary(parse(registries["acr"], [grid])) == expected
    no_id = {k: v for k, v in body.items() if k not in ("id", "action")}
    assert summary(parse(registries["acr"], grid | {"data": no_id})) == [
        ("hello-world", D_OTHER, "v1", Action.PUSH, "grid-1")
    ]
    chart = grid | {"eventType": "Microsoft.ContainerRegistry.ChartPushed"}
    assert parse(registries["acr"], chart).events == ()
    deleted = grid | {"eventType": "Microsoft.ContainerRegistry.ImageDeleted", "data": no_id}
    assert [e.action for e in parse(registries["acr"], deleted).events] == [Action.DELETE]
    whole_repository = {"id": "r", "action": "delete", "target": {"repository": "hello-world"}}
    gone = parse(registries["acr"], whole_repository)
    assert gone.events == () and "whole repository" in gone.ignored[0]


def test_ecr_image_action(registries: dict[str, RegistryConfig]) -> None:
    name = "ecr-image-action.json"
    # AWS's example truncates the digest to 60 hex digits.
    error = refused(registries["ecr"], body_of(name))
    assert error.message == "detail.image-digest: is not a digest (want sha256:<64 lowercase hex>)"
    body = body_of(name)
    body["detail"]["image-digest"] = D_OTHER
    parsed = parse(registries["ecr"], body)
    assert summary(parsed) == [
        (
            "my-repository-name",
            D_OTHER,
            "latest",
            Action.PUSH,
            "13cde686-328b-6117-af20-0e5566167482",
        )
    ]
    assert parsed.events[0].occurred_at == utc("2019-11-16T01:54:34")

    delete = copy.deepcopy(body)
    delete["detail"]["action-type"] = "DELETE"
    assert [e.action for e in parse(registries["ecr"], delete).events] == [Action.DELETE]
    failed = copy.deepcopy(body)
    failed["detail"]["result"] = "FAILURE"
    assert parse(registries["ecr"], failed).events == ()
    scan = body | {"detail-type": "ECR Image Scan"}
    assert parse(registries["ecr"], scan).events == ()
    other_account = parse(registries["ecr"], body | {"account": "210987654321"})
    assert other_account.events == () and "another ECR registry" in other_account.ignored[0]
    untagged = copy.deepcopy(body)
    del untagged["detail"]["image-tag"]
    assert [e.tag for e in parse(registries["ecr"], untagged).events] == [None]


def test_gar_pubsub(registries: dict[str, RegistryConfig]) -> None:
    gar = registries["gar"]
    envelope = payload("gar-pubsub.json")["pubsub_push_envelope"]  # data is a placeholder
    assert refused(gar, envelope).message == "message.data: is not base64"
    verbatim = payload("gar-pubsub.json")["messages"][0]  # digest "...@sha256:..."
    assert (
        refused(gar, pubsub(verbatim)).message
        == "message.data.digest: is not a valid image reference"
    )

    repository = "my-project/my-repo/hello-world"
    results = [summary(parse(gar, pubsub(m, f"m{i}"))) for i, m in enumerate(gar_messages())]
    assert results == [
        [(repository, D_OTHER, None, Action.PUSH, "m0")],
        [(repository, D_OTHER, "1.1", Action.PUSH, "m1")],
        [(repository, None, "1.1", Action.DELETE, "m2")],
    ]
    (event,) = parse(gar, pubsub(gar_messages()[1])).events
    assert event.occurred_at == utc("2026-01-01T00:00:00")

    # Unwrapped delivery (--push-no-wrapper): the message is the body, its id a header.
    unwrapped = parse(gar, gar_messages()[1], {"X-Goog-Pubsub-Message-Id": "m9"})
    assert summary(unwrapped) == [(repository, D_OTHER, "1.1", Action.PUSH, "m9")]

    elsewhere = json.loads(json.dumps(gar_messages()[1]).replace("us-west1", "europe-west4"))
    other = parse(gar, pubsub(elsewhere))
    assert other.events == () and "another host" in other.ignored[0]


def test_generic(registries: dict[str, RegistryConfig]) -> None:
    generic = registries["generic"]
    assert summary(parse(generic, {"repository": "acme/app", "digest": D_OTHER})) == [
        ("acme/app", D_OTHER, None, Action.PUSH, None)
    ]
    entries = [
        {"repository": "acme/app", "tag": "v1", "id": "e1"},
        {"repository": "acme/app", "digest": D_OTHER, "tag": "v2", "action": "delete", "id": 7},
        {"repository": "other/app", "tag": "v1"},
    ]
    parsed = parse(generic, entries)
    assert summary(parsed) == [
        ("acme/app", None, "v1", Action.PUSH, "e1"),
        ("acme/app", D_OTHER, "v2", Action.DELETE, "7"),
    ]
    assert parsed.ignored == ("other/app: not among the registry's watched repositories",)


# --- what is skipped ------------------------------------------------------------------------------


def distribution_event(**target: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "digest": D_OTHER,
        "repository": "acme/app",
        "tag": "v1",
    }
    return {"id": "e-1", "action": "push", "target": base | target}


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (distribution_event() | {"action": "pull"}, "'pull' event ignored"),
        (distribution_event() | {"action": "mount"}, "'mount' event ignored"),
        (distribution_event() | {"action": "teleport"}, "'teleport' event ignored"),
        (distribution_event(mediaType="application/octet-stream", tag=None), "blob"),
        (
            distribution_event(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", tag=None),
            "blob or non-manifest",
        ),
        (
            distribution_event(mediaType=None, tag=None, url="http://r/v2/acme/app/blobs/sha256:1"),
            "blob",
        ),
        (distribution_event(repository="elsewhere/app"), "not among the registry's watched"),
    ],
)
def test_distribution_skips(
    registries: dict[str, RegistryConfig], event: dict[str, Any], words: str
) -> None:
    parsed = parse(registries["local"], {"events": [event]})
    assert parsed.events == ()
    (reason,) = parsed.ignored
    assert words in reason


def test_distribution_envelopes(registries: dict[str, RegistryConfig]) -> None:
    local = registries["local"]
    pull = distribution_event() | {"id": "e-2", "action": "pull"}
    second = distribution_event(tag="v2") | {"id": "e-3"}
    parsed = parse(local, {"events": [distribution_event(), pull, distribution_event(), second]})
    assert [(e.event_id, e.tag) for e in parsed.events] == [("e-1", "v1"), ("e-3", "v2")]
    assert len(parsed.ignored) == 2 and "duplicate event id 'e-1'" in parsed.ignored[1]
    assert parse(local, {"events": []}) == ParsedWebhook((), ())
    # No mediaType but a manifest URL (or none at all) is a manifest.
    assert len(parse(local, {"events": [distribution_event(mediaType=None)]}).events) == 1
    # v2 envelopes (distribution 3.x), plain JSON and parameters are all fine.
    for content_type in (
        "application/vnd.docker.distribution.events.v2+json",
        "application/json; charset=utf-8",
        DISTRIBUTION_V1.upper(),
    ):
        headers = {"content-type": content_type}
        assert len(parse(local, {"events": [distribution_event()]}, headers).events) == 1


def test_attachment_tags_are_ordinary_events(registries: dict[str, RegistryConfig]) -> None:
    tag = signature_tag(Digest(D_MANIFEST))
    event = distribution_event(tag=tag)
    (parsed,) = parse(registries["local"], {"events": [event]}).events
    assert parsed.tag == tag and is_attachment_tag(tag) and parsed.digest == D_OTHER


# --- malformed bodies: 400 with a message that says what is wrong -------------------------------


def events(*entries: object) -> dict[str, object]:
    return {"events": list(entries)}


GOOD_HARBOR = body_of("harbor-push.json")
GOOD_DOCKERHUB = body_of("dockerhub-push.json")
GOOD_ECR = body_of("ecr-image-action.json")
GOOD_ECR["detail"]["image-digest"] = D_OTHER


def harbor(**resource: object) -> dict[str, Any]:
    body = copy.deepcopy(GOOD_HARBOR)
    body["event_data"]["resources"][0].update(resource)
    return body


def ecr(**detail: object) -> dict[str, Any]:
    body = copy.deepcopy(GOOD_ECR)
    body["detail"].update(detail)
    return body


def github_with(**version: object) -> dict[str, Any]:
    body = body_of("github-package.json")
    body["package"]["package_version"].update(version)
    return body


MALFORMED: list[tuple[str, str, object, dict[str, str], str]] = [
    # (id, registry, body, headers, expected message)
    ("empty", "local", b"", {}, "body: is empty"),
    ("truncated", "local", b'{"events": [{"id": "x"', {}, "body: is not valid JSON ("),
    ("not utf-8", "local", b'{"events": ["\xff"]}', {}, "body: is not UTF-8"),
    ("NaN", "local", b'{"events": [NaN]}', {}, "body: is not valid JSON"),
    ("too deep", "local", b"[" * 100_000 + b"]" * 100_000, {}, "body: is not valid JSON"),
    ("array body", "local", [], {}, "body: must be an object, not an array"),
    ("no events", "local", {"event": []}, {}, "events: is required"),
    ("events not a list", "local", {"events": {}}, {}, "events: must be an array, not an object"),
    ("event not an object", "local", events(3), {}, "events[0]: must be an object, not a number"),
    (
        "action wrong type",
        "local",
        events(distribution_event() | {"action": 1}),
        {},
        "events[0].action: must be a string, not a number",
    ),
    (
        "no target",
        "local",
        events({"id": "x", "action": "push"}),
        {},
        "events[0].target: is required",
    ),
    (
        "bad digest",
        "local",
        events(distribution_event(digest=f"sha256:{CANARY}")),
        {},
        "events[0].target.digest: is not a digest (want sha256:<64 lowercase hex>)",
    ),
    (
        "uppercase digest",
        "local",
        events(distribution_event(digest=D_OTHER.upper())),
        {},
        "events[0].target.digest: is not a digest",
    ),
    (
        "push without digest",
        "local",
        events(distribution_event(digest=None)),
        {},
        "events[0].target.digest: is required for a push",
    ),
    (
        "bad repository",
        "local",
        events(distribution_event(repository=f"acme/{CANARY}")),
        {},
        "events[0].target.repository: is not a valid repository name",
    ),
    (
        "repository with a tag",
        "local",
        events(distribution_event(repository="acme/app:v1")),
        {},
        "events[0].target.repository: is not a valid repository name",
    ),
    (
        "repository wrong type",
        "local",
        events(distribution_event(repository=["acme/app"])),
        {},
        "events[0].target.repository: must be a string, not an array",
    ),
    (
        "bad tag",
        "local",
        events(distribution_event(tag=f"{CANARY}/x")),
        {},
        "events[0].target.tag: is not a valid tag",
    ),
    (
        "bad timestamp",
        "local",
        events(distribution_event() | {"timestamp": CANARY}),
        {},
        "events[0].timestamp: is not a valid timestamp",
    ),
    (
        "id wrong type",
        "local",
        events(distribution_event() | {"id": {"x": 1}}),
        {},
        "events[0].id: must be a string, not an object",
    ),
    (
        "actor wrong type",
        "local",
        events(distribution_event() | {"actor": "someone"}),
        {},
        "events[0].actor: must be an object, not a string",
    ),
    (
        "content type",
        "local",
        events(),
        {"Content-Type": "text/plain"},
        "Content-Type must be application/vnd.docker.distribution.events.v1+json",
    ),
    ("harbor no type", "harbor", {"event_data": {}}, {}, "type: is required"),
    (
        "harbor no repository",
        "harbor",
        GOOD_HARBOR | {"event_data": {"resources": {}, "repository": {}}},
        {},
        "event_data.repository.repo_full_name: is required",
    ),
    (
        "harbor resources not a list",
        "harbor",
        GOOD_HARBOR
        | {"event_data": {"resources": "x", "repository": {"repo_full_name": "library/x"}}},
        {},
        "event_data.resources: must be an array, not a string",
    ),
    (
        "harbor bad digest",
        "harbor",
        harbor(digest=CANARY),
        {},
        "event_data.resources[0].digest: is not a digest",
    ),
    (
        "harbor occur_at",
        "harbor",
        GOOD_HARBOR | {"occur_at": True},
        {},
        "occur_at: must be a timestamp, not a boolean",
    ),
    (
        "harbor occur_at overflow",
        "harbor",
        b'{"type": "PUSH_ARTIFACT", "occur_at": 1e400, "event_data": {}}',
        {},
        "occur_at: is not a valid timestamp",
    ),
    (
        "github no event header",
        "ghcr",
        body_of("github-package.json"),
        {},
        "missing X-GitHub-Event header",
    ),
    (
        "github no digest",
        "ghcr",
        github_with(name="1.0", container_metadata={}),
        github_headers(),
        "package.package_version.name: is not a digest and there is no manifest",
    ),
    (
        "github bad manifest digest",
        "ghcr",
        github_with(name="1.0"),
        github_headers(),
        "package.package_version.container_metadata.manifest.digest: is not a digest",
    ),
    (
        "github no version",
        "ghcr",
        github_with() | {"package": {"ecosystem": "CONTAINER", "owner": {"login": "a"}}},
        github_headers(),
        "package.name: is required",
    ),
    (
        "dockerhub no tag",
        "hub",
        GOOD_DOCKERHUB | {"push_data": {}},
        {},
        "push_data.tag: is required",
    ),
    (
        "dockerhub bad repository",
        "hub",
        GOOD_DOCKERHUB | {"repository": {"repo_name": f"{CANARY}/x"}},
        {},
        "repository.repo_name: is not a valid repository name",
    ),
    (
        "quay tags not a list",
        "quay",
        body_of("quay-repo_push.json") | {"updated_tags": "latest"},
        {},
        "updated_tags: must be an array, not a string",
    ),
    (
        "quay tag wrong type",
        "quay",
        body_of("quay-repo_push.json") | {"updated_tags": ["ok", 5]},
        {},
        "updated_tags[1]: must be a string, not a number",
    ),
    ("acr no target", "acr", {"id": "x", "action": "push"}, {}, "target: is required"),
    ("acr list of junk", "acr", [{"action": "push", "target": {}}, 1], {}, "[1]: must be"),
    (
        "ecr no digest",
        "ecr",
        ecr(**{"image-digest": None}),
        {},
        "detail.image-digest: is required",
    ),
    ("ecr detail", "ecr", GOOD_ECR | {"detail": []}, {}, "detail: must be an object, not an array"),
    ("ecr not eventbridge", "ecr", {"detail": {}}, {}, "source: is required"),
    (
        "gar data not base64",
        "gar",
        {"message": {"data": f"!{CANARY}!"}},
        {},
        "message.data: is not base64",
    ),
    (
        "gar data not JSON",
        "gar",
        {"message": {"data": base64.b64encode(b"{nope").decode()}},
        {},
        "message.data: is not valid JSON",
    ),
    (
        "gar digest without digest",
        "gar",
        pubsub({"action": "INSERT", "digest": "us-west1-docker.pkg.dev/p/r/i:1"}),
        {},
        "message.data.digest: is not a reference with a digest",
    ),
    (
        "gar two images",
        "gar",
        pubsub(
            {
                "action": "INSERT",
                "digest": f"us-west1-docker.pkg.dev/p/r/a@{D_OTHER}",
                "tag": "us-west1-docker.pkg.dev/p/r/b:1",
            }
        ),
        {},
        "message.data: digest and tag name different images",
    ),
    (
        "gar nothing",
        "gar",
        pubsub({"action": "INSERT"}),
        {},
        "message.data: names neither a digest nor a tag",
    ),
    (
        "generic action",
        "generic",
        {"repository": "acme/app", "tag": "v1", "action": CANARY},
        {},
        "action: must be push or delete",
    ),
    (
        "generic nothing",
        "generic",
        [{"repository": "acme/app", "tag": "v1"}, {"repository": "acme/app"}],
        {},
        "[1]: names neither a digest nor a tag",
    ),
    ("generic scalar", "generic", "acme/app", {}, "body: must be an object, not a string"),
    (
        "generic long id",
        "generic",
        {"repository": "acme/app", "tag": "v1", "id": "x" * 300},
        {},
        "id: is longer than 256 characters",
    ),
]


@pytest.mark.parametrize(
    ("registry", "body", "headers", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_bodies_are_400(
    registries: dict[str, RegistryConfig],
    registry: str,
    body: object,
    headers: dict[str, str],
    message: str,
) -> None:
    error = refused(registries[registry], body, headers)
    assert error.status == 400
    assert error.message.startswith(message), error.message
    assert str(error) == error.message
    assert CANARY not in error.message


def test_size_limit_and_unknown_webhook(registries: dict[str, RegistryConfig]) -> None:
    big = encode({"events": [], "pad": "x" * MAX_BODY})
    error = refused(registries["local"], big)
    assert error.status == 413
    error = refused(registries["nohook"], events())
    assert error.status == 404
    with pytest.raises(WebhookError) as info:
        authenticate(registries["nohook"], {}, b"")
    assert info.value.status == 404


def mutations(value: object) -> Iterator[object]:
    """Copies of ``value`` with one node replaced by a value of each JSON type."""
    replacements: list[object] = [None, 0, -1, 1e300, True, "", CANARY, [], {}, [CANARY]]
    yield from replacements
    if isinstance(value, dict):
        for key, child in value.items():
            for replaced in mutations(child):
                yield {**value, key: replaced}
            yield {k: v for k, v in value.items() if k != key}
    elif isinstance(value, list):
        for index, child in enumerate(value):
            for replaced in mutations(child):
                yield [*value[:index], replaced, *value[index + 1 :]]


def good_bodies() -> list[tuple[str, object, dict[str, str]]]:
    acr = body_of("acr-push.json")
    acr["target"]["digest"] = D_OTHER
    return [
        ("local", body_of("distribution-push.json"), {}),
        ("local", body_of("distribution-delete.json"), {}),
        ("harbor", body_of("harbor-push.json"), {}),
        (
            "harbor",
            body_of("harbor-cloudevents-example.json") | {"type": "harbor.artifact.pushed"},
            {},
        ),
        ("ghcr", body_of("github-package.json"), github_headers()),
        ("hub", body_of("dockerhub-push.json"), {}),
        ("quay", body_of("quay-repo_push.json"), {}),
        ("acr", acr, {}),
        ("ecr", GOOD_ECR, {}),
        ("gar", gar_messages()[1], {}),
        ("generic", [{"repository": "acme/app", "digest": D_OTHER, "tag": "v1"}], {}),
    ]


def test_any_mangled_payload_is_parsed_or_a_400(registries: dict[str, RegistryConfig]) -> None:
    """Nothing but WebhookError escapes, whatever shape a field takes; no value is echoed."""
    tried = 0
    for registry, body, headers in good_bodies():
        assert parse(registries[registry], body, headers).events, registry
        for mutated in mutations(body):
            tried += 1
            try:
                parsed = parse(registries[registry], mutated, headers)
            except WebhookError as error:
                assert error.status == 400 and CANARY not in error.message, error.message
            else:
                assert all(isinstance(event, PushEvent) for event in parsed.events)
    assert tried > 2000


# --- authentication -----------------------------------------------------------------------------


def auth_error(registry: RegistryConfig, headers: Mapping[str, str], body: bytes = b"{}") -> str:
    with pytest.raises(WebhookError) as info:
        authenticate(registry, headers, body)
    assert info.value.status == 401
    return info.value.message


def test_github_hmac_test_vector(registries: dict[str, RegistryConfig]) -> None:
    ghcr = registries["ghcr"]
    body = b"Hello, World!"
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    authenticate(ghcr, {"X-Hub-Signature-256": good}, body)
    authenticate(ghcr, {"x-hub-signature-256": good.upper().replace("SHA256=", "sha256=")}, body)
    assert "does not match" in auth_error(ghcr, {"X-Hub-Signature-256": good}, body + b" ")
    assert "does not match" in auth_error(ghcr, {"X-Hub-Signature-256": good[:-1] + "0"}, body)
    assert "does not match" in auth_error(ghcr, {"X-Hub-Signature-256": good[7:]}, body)
    assert "does not match" in auth_error(ghcr, {"X-Hub-Signature-256": "sha256=é"}, body)
    assert auth_error(ghcr, {}, body) == "missing X-Hub-Signature-256 header"
    # GitHub cannot send a bearer token; knowing the secret is not proof of the body.
    bearer = {"Authorization": f"Bearer {GITHUB_SECRET}"}
    assert auth_error(ghcr, bearer, body) == "missing X-Hub-Signature-256 header"


def test_github_signature_over_a_real_payload(registries: dict[str, RegistryConfig]) -> None:
    body = (PAYLOADS / "github-package.json").read_bytes()
    mac = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    authenticate(registries["ghcr"], {"X-Hub-Signature-256": f"sha256={mac}"}, body)


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {BEARER_SECRET}",
        f"bearer  {BEARER_SECRET} ",
        basic(f"webhook:{BEARER_SECRET}"),
        basic(f":{BEARER_SECRET}"),
        basic(BEARER_SECRET),  # the whole user:pass is the secret
        BEARER_SECRET,  # Harbor sends its auth_header verbatim
    ],
)
def test_shared_secret_accepted(registries: dict[str, RegistryConfig], header: str) -> None:
    for name in ("local", "harbor", "acr", "ecr", "gar", "generic"):
        authenticate(registries[name], {"Authorization": header}, b"{}")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong",
        f"Bearer {BEARER_SECRET}x",
        f"Bearer {BEARER_SECRET[:-1]}",
        f"Token {BEARER_SECRET}",
        basic(f"{BEARER_SECRET}:wrong"),
        basic("user:pass"),
        f"Basic {BEARER_SECRET}",
        "Basic %%%not-base64",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
        "",
    ],
)
def test_shared_secret_refused(registries: dict[str, RegistryConfig], header: str) -> None:
    message = auth_error(registries["local"], {"Authorization": header})
    assert message == "Authorization does not match the configured webhook secret"


def test_captured_distribution_headers_authenticate(registries: dict[str, RegistryConfig]) -> None:
    name = "distribution-push.json"
    authenticate(registries["local"], headers_of(name), encode(body_of(name)))
    assert auth_error(registries["local"], {}) == "missing Authorization header"
    assert auth_error(registries["acr"], {"X-Hub-Signature-256": "sha256=00"}) == (
        "missing Authorization header"
    )


def test_insecure_webhooks_accept_anything(registries: dict[str, RegistryConfig]) -> None:
    for name in ("hub", "quay"):
        authenticate(registries[name], {}, b"anything")
        authenticate(registries[name], {"Authorization": "Bearer whatever"}, b"")


def test_secret_never_appears_in_errors(registries: dict[str, RegistryConfig]) -> None:
    messages: list[str] = []
    attempts: list[tuple[str, dict[str, str]]] = [
        ("local", {"Authorization": f"Bearer {BEARER_SECRET[:-1]}"}),
        ("local", {"Authorization": basic(f"{BEARER_SECRET}:x")}),
        ("local", {"Authorization": f"{BEARER_SECRET} {BEARER_SECRET}"}),
        ("harbor", {"Authorization": BEARER_SECRET.upper()}),
        ("ghcr", {"X-Hub-Signature-256": f"sha256={GITHUB_SECRET}"}),
        ("ghcr", {"Authorization": f"Bearer {GITHUB_SECRET}"}),
    ]
    for name, headers in attempts:
        with pytest.raises(WebhookError) as info:
            authenticate(registries[name], headers, GITHUB_SECRET.encode())
        messages += [info.value.message, str(info.value), repr(info.value)]
    # Bodies carrying the secret in bad fields: the 400 names the field, not the value.
    for body in (
        events(distribution_event(digest=BEARER_SECRET)),
        events(distribution_event(repository=f"Acme/{BEARER_SECRET}")),
        events(distribution_event(tag=f"{BEARER_SECRET}/x")),
        events(distribution_event() | {"timestamp": BEARER_SECRET}),
        events(distribution_event() | {"action": [BEARER_SECRET]}),
    ):
        error = refused(registries["local"], body)
        messages += [error.message, repr(error)]
    assert messages
    for message in messages:
        assert BEARER_SECRET not in message and GITHUB_SECRET not in message
        assert BEARER_SECRET.upper() not in message


def test_headers_are_case_insensitive(registries: dict[str, RegistryConfig]) -> None:
    body = body_of("github-package.json")
    parsed = parse(
        registries["ghcr"], body, {"x-github-event": "package", "X-GITHUB-DELIVERY": "z"}
    )
    assert [e.event_id for e in parsed.events] == ["z"]
