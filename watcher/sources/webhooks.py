"""Registry webhooks: authenticate a delivery, then turn its payload into push events.

Every registry announces pushes in its own shape (see the per-kind parsers below); this
module is the one place that knows those shapes, so the daemon only ever sees
:class:`PushEvent`. Both functions are pure: they take the configured registry, the request
headers and the raw body, and either return a value or raise :class:`WebhookError`, whose
status and message the HTTP layer can send back as they are.

Choices that hold for every kind:

* Malformed input is a 400 whose message names the field (``events[0].target.digest``) and
  what is wrong with it, but never echoes the value: the sender may be an attacker probing
  us, and a message must never carry a secret or a payload back out.
* Anything well formed that we have no use for (pulls, blob uploads, other event types,
  repositories outside the configured globs, images on another host) is not an error: it is
  skipped with a reason in :attr:`ParsedWebhook.ignored`. A registry that got a 4xx for an
  event it was configured to send would retry it (distribution retries forever).
* Digests are always taken from the payload and validated, never resolved from a tag here:
  distribution queues its event before it links the tag, so a tag may not point at the
  pushed manifest yet. Registries that send only a tag give ``digest=None`` and the daemon
  resolves it, recording that it did.
* Cosign attachment tags (``sha256-<hex>.sig``) are ordinary events: the daemon uses them to
  re-check the image they belong to.
* ``event_id`` is unique per event within a delivery, because the store deduplicates
  redeliveries on it; a delivery id that covers several events gets ``#<index>`` appended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from watcher.config import RegistryConfig
from watcher.events import Action, PushEvent, Source
from watcher.refs import (
    DOCKER_HUB,
    Digest,
    ImageReference,
    ReferenceError,
    normalize_registry,
    parse_digest,
)
from watcher.registry.client import MANIFEST_MEDIA_TYPES

__all__ = ["MAX_BODY", "ParsedWebhook", "WebhookError", "authenticate", "parse_webhook"]

MAX_BODY = 1 << 20
"""Largest body accepted (the contract's 413 limit); real push notifications are a few KiB."""

# Manifests and indexes as registries report them. Anything else pushed is a blob (2.8.x says
# application/octet-stream) or a layer, which has no signature of its own to check.
_MANIFEST_MEDIA_TYPES = frozenset(
    (
        *MANIFEST_MEDIA_TYPES,
        "application/vnd.oci.artifact.manifest.v1+json",  # OCI 1.1 release candidates
        "application/vnd.docker.distribution.manifest.v1+json",  # schema 1
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
)
_DISTRIBUTION_CONTENT_TYPES = frozenset(
    (
        "application/vnd.docker.distribution.events.v1+json",  # distribution 2.x
        "application/vnd.docker.distribution.events.v2+json",  # distribution 3.x
        "application/json",
    )
)
_ACR_EVENT_GRID_TYPES = {
    "Microsoft.ContainerRegistry.ImagePushed": Action.PUSH,
    "Microsoft.ContainerRegistry.ImageDeleted": Action.DELETE,
}
_HARBOR_TYPES = {"PUSH_ARTIFACT": Action.PUSH, "DELETE_ARTIFACT": Action.DELETE}
_HARBOR_CLOUDEVENT_TYPES = {
    "harbor.artifact.pushed": Action.PUSH,
    "harbor.artifact.deleted": Action.DELETE,
}
_GITHUB_EVENTS = ("package", "registry_package")
_GITHUB_ACTIONS = ("published", "updated")
_GITHUB_CONTAINER_ECOSYSTEMS = ("container", "docker")
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)
# The distribution spec's practical limit on a repository name, and a bound on the ids we
# store, so that a delivery cannot make us keep arbitrarily large strings.
_MAX_REPOSITORY = 255
_MAX_ID = 256
# Repository names and tags are checked by parsing them under a placeholder host with the
# one reference grammar the watcher has (watcher.refs), rather than a second copy of it.
_CHECK_HOST = "webhook.invalid"

_JSON = dict[str, object]
# What a kind parser yields per entry: an event, or the reason the entry was skipped.
_Item = PushEvent | str


class WebhookError(Exception):
    """A delivery we refuse: ``status`` 400 (malformed), 401 (auth), 404 or 413.

    The message is safe to send back to whoever made the request: it names a field or a
    header, never a secret and never a value taken from the payload.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"WebhookError({self.status}, {self.message!r})"


@dataclass(frozen=True)
class ParsedWebhook:
    """The events a delivery announced, and why any of its entries were skipped.

    ``ignored`` is for logs and metrics (blob pushes, pulls, other event types, repositories
    outside the globs, other hosts, duplicates); it may quote the payload, so it is not
    meant to be sent back to the caller.
    """

    events: tuple[PushEvent, ...]
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Context:
    """What a kind parser needs besides the body: the registry and the request's headers."""

    registry: RegistryConfig
    headers: Mapping[str, str]  # names lower-cased
    remote: str | None


# --- authentication ---------------------------------------------------------------------------


def authenticate(registry: RegistryConfig, headers: Mapping[str, str], body: bytes) -> None:
    """Raise WebhookError(401) unless the request proves it knows the webhook's secret.

    GitHub signs the raw body (``X-Hub-Signature-256``); every other sender can only repeat
    a shared secret in ``Authorization``: as a bearer token, as the password (or the whole
    ``user:pass``) of Basic auth, or verbatim (Harbor sends its ``auth_header`` as it is).
    Comparisons are constant-time over SHA-256 hashes, so neither the secret's content nor
    its length leaks through timing. A webhook configured ``insecure: true`` has no secret
    and accepts everything; that has to be said explicitly in the config.
    """
    webhook = registry.webhook
    if webhook is None:
        raise WebhookError(404, f"registry {registry.name!r} does not accept webhooks")
    secret = webhook.secret
    if secret is None:
        if webhook.insecure:
            return
        raise WebhookError(401, "no webhook secret is configured for this registry")
    lowered = _lower_headers(headers)
    key = secret.get().encode("utf-8")
    if webhook.kind == "github":
        _check_github_signature(key, lowered.get("x-hub-signature-256"), body)
    else:
        _check_authorization(key, lowered.get("authorization"))


def _check_github_signature(key: bytes, header: str | None, body: bytes) -> None:
    """GitHub's HMAC-SHA256 of the raw body, as ``sha256=<hex>``."""
    if header is None:
        raise WebhookError(401, "missing X-Hub-Signature-256 header")
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    given = header.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode("ascii"), given):
        raise WebhookError(401, "X-Hub-Signature-256 does not match the body and secret")


def _check_authorization(key: bytes, header: str | None) -> None:
    """Accept the secret as bearer token, Basic password or whole credentials, or raw."""
    if header is None:
        raise WebhookError(401, "missing Authorization header")
    value = header.strip()
    candidates = [value]
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        candidates.append(credentials)
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = None
        if decoded is not None:
            candidates.append(decoded)
            if ":" in decoded:
                candidates.append(decoded.split(":", 1)[1])
    # Every candidate is compared (no short-circuit), so timing says nothing about which
    # form, if any, matched.
    matched = False
    for candidate in candidates:
        matched |= _same_secret(candidate.encode("utf-8", "replace"), key)
    if not matched:
        raise WebhookError(401, "Authorization does not match the configured webhook secret")


def _same_secret(given: bytes, key: bytes) -> bool:
    """Constant-time equality that also hides the secret's length."""
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(key).digest())


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive; the first of repeated headers wins."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered


# --- parsing ------------------------------------------------------------------------------------


def parse_webhook(
    registry: RegistryConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    remote: str | None = None,
) -> ParsedWebhook:
    """The push events of one delivery, in the format of ``registry.webhook.kind``.

    ``remote`` is the address the request came from; it is the event's ``source_addr``
    when the payload does not name the pushing client itself (only distribution's
    ``request.addr`` does). Raises WebhookError: 400 for a malformed body, 413 for one over
    :data:`MAX_BODY`, 404 for a registry without a webhook.
    """
    webhook = registry.webhook
    if webhook is None:
        raise WebhookError(404, f"registry {registry.name!r} does not accept webhooks")
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"body is larger than {MAX_BODY} bytes")
    context = _Context(registry, _lower_headers(headers), remote)
    items = _PARSERS[webhook.kind](context, _decode_json(body, "body"))
    return _collect(registry, items)


def _collect(registry: RegistryConfig, items: list[_Item]) -> ParsedWebhook:
    """Drop what the registry does not watch and what the delivery repeated."""
    events: list[PushEvent] = []
    ignored: list[str] = []
    seen_ids: set[str] = set()
    seen: set[PushEvent] = set()
    for item in items:
        if isinstance(item, str):
            ignored.append(item)
        elif not registry.watches(item.repository):
            ignored.append(f"{item.repository}: not among the registry's watched repositories")
        elif item.event_id is not None and item.event_id in seen_ids:
            ignored.append(f"{item.repository}: duplicate event id {_quote(item.event_id)}")
        elif item in seen:
            ignored.append(f"{item.repository}: duplicate event")
        else:
            if item.event_id is not None:
                seen_ids.add(item.event_id)
            seen.add(item)
            events.append(item)
    return ParsedWebhook(tuple(events), tuple(ignored))


# --- distribution (and ACR, which sends the same event objects) ------------------------------


def _distribution(context: _Context, body: object) -> list[_Item]:
    """CNCF distribution's ``{"events": [...]}`` envelope (also GitLab's bundled registry)."""
    content_type = context.headers.get("content-type")
    if content_type is not None and _media_type(content_type) not in _DISTRIBUTION_CONTENT_TYPES:
        raise WebhookError(
            400,
            "Content-Type must be application/vnd.docker.distribution.events.v1+json "
            "(or v2+json, or application/json)",
        )
    envelope = _object(body, "body")
    items: list[_Item] = []
    for index, event in enumerate(_required_list(envelope, "events", "")):
        path = f"events[{index}]"
        items.extend(_registry_event(context, _object(event, path), path))
    return items


def _registry_event(
    context: _Context,
    event: _JSON,
    path: str,
    *,
    fallback_id: str | None = None,
    fallback_time: datetime | None = None,
) -> list[_Item]:
    """One distribution-style event: ``{id, timestamp, action, target, request, actor}``."""
    action_name = _required_str(event, "action", path)
    if action_name not in ("push", "delete"):
        return [f"{_join(path, 'action')}: {_quote(action_name)} event ignored"]
    action = Action(action_name)
    target_path = _join(path, "target")
    target = _required_object(event, "target", path)
    media_type = _optional_str(target, "mediaType", target_path)
    url = _optional_str(target, "url", target_path)
    if media_type is not None and _media_type(media_type) not in _MANIFEST_MEDIA_TYPES:
        where = path or "body"
        return [f"{where}: {action_name} of a blob or non-manifest ({_quote(media_type)}) ignored"]
    if media_type is None and url is not None and "/blobs/" in url:
        return [f"{path or 'body'}: {action_name} of a blob ignored"]
    repository = _repository(context, target.get("repository"), _join(target_path, "repository"))
    digest = _optional_digest(target, "digest", target_path)
    tag = _optional_tag(target, "tag", target_path)
    if action is Action.PUSH and digest is None:
        raise _bad(_join(target_path, "digest"), "is required for a push")
    if digest is None and tag is None:
        return [f"{path or 'body'}: delete of a whole repository ({repository}) ignored"]
    actor = _optional_object(event, "actor", path)
    request = _optional_object(event, "request", path)
    return [
        _event(
            context,
            path,
            action=action,
            repository=repository,
            digest=digest,
            tag=tag,
            event_id=_optional_id(event, "id", path) or fallback_id,
            occurred_at=_timestamp(event.get("timestamp"), _join(path, "timestamp"))
            or fallback_time,
            actor=_optional_str(actor, "name", _join(path, "actor")) if actor else None,
            source_addr=_optional_str(request, "addr", _join(path, "request")) if request else None,
            media_type=media_type,
        )
    ]


def _acr(context: _Context, body: object) -> list[_Item]:
    """Azure Container Registry: one event object, a list of them, or Event Grid events.

    ACR's own webhook posts a single distribution-style event with no envelope. Event Grid
    (which is how ACR events reach most other consumers) wraps the same object in ``data``
    and names the kind in ``eventType`` (``type`` in its CloudEvents schema); anything but
    image pushes and deletes (chart events, subscription validation) is skipped.
    """
    items: list[_Item] = []
    for entry, path in _entries(body):
        if "target" in entry or "data" not in entry:
            items.extend(_registry_event(context, entry, path))
            continue
        kind = _optional_str(entry, "eventType", path) or _optional_str(entry, "type", path)
        if kind not in _ACR_EVENT_GRID_TYPES:
            items.append(f"{path or 'body'}: Event Grid event {_quote(kind)} ignored")
            continue
        data = _required_object(entry, "data", path)
        when = entry.get("eventTime", entry.get("time"))
        items.extend(
            _registry_event(
                context,
                # The event type says what happened when the data does not.
                {"action": _ACR_EVENT_GRID_TYPES[kind].value, **data},
                _join(path, "data"),
                fallback_id=_optional_id(entry, "id", path),
                fallback_time=_timestamp(when, _join(path, "eventTime")),
            )
        )
    return items


# --- Harbor -------------------------------------------------------------------------------------


def _harbor(context: _Context, body: object) -> list[_Item]:
    """Harbor's Default payload (``PUSH_ARTIFACT``) or its CloudEvents one.

    Both carry ``resources[]`` (digest and tag) and ``repository.repo_full_name``; Default
    puts them under ``event_data`` with ``occur_at`` in Unix seconds and no id, CloudEvents
    under ``data`` with an ``id`` and an RFC 3339 ``time``. An artifact pushed without a
    tag has its digest in ``tag``, which is not a tag.
    """
    payload = _object(body, "body")
    kind = _required_str(payload, "type", "")
    cloudevents = "specversion" in payload or kind.startswith("harbor.")
    if cloudevents:
        action = _HARBOR_CLOUDEVENT_TYPES.get(kind)
        data_key, event_id = "data", _optional_id(payload, "id", "")
        occurred_at = _timestamp(payload.get("time"), "time")
    else:
        action = _HARBOR_TYPES.get(kind)
        data_key, event_id = "event_data", None
        occurred_at = _timestamp(payload.get("occur_at"), "occur_at")
    if action is None:
        return [f"type: Harbor event {_quote(kind)} ignored"]
    data = _required_object(payload, data_key, "")
    operator = _optional_str(payload, "operator", "") or _optional_str(data, "operator", data_key)
    repository_path = _join(data_key, "repository")
    repository_object = _required_object(data, "repository", data_key)
    repository = _repository(
        context,
        repository_object.get("repo_full_name"),
        _join(repository_path, "repo_full_name"),
    )
    resources = _required_list(data, "resources", data_key)
    items: list[_Item] = []
    for index, raw in enumerate(resources):
        path = f"{data_key}.resources[{index}]"
        resource = _object(raw, path)
        digest = _required_digest(resource, "digest", path)
        tag_value = _optional_str(resource, "tag", path)
        if tag_value is not None and tag_value.startswith("sha256:"):
            tag_value = None  # untagged push: Harbor puts the digest here
        tag = _tag(tag_value, _join(path, "tag")) if tag_value is not None else None
        items.append(
            _event(
                context,
                path,
                action=action,
                repository=repository,
                digest=digest,
                tag=tag,
                event_id=_indexed(event_id, index, len(resources)),
                occurred_at=occurred_at,
                actor=operator,
            )
        )
    return items


# --- GitHub -------------------------------------------------------------------------------------


def _github(context: _Context, body: object) -> list[_Item]:
    """GitHub's ``package`` / ``registry_package`` events for container packages.

    GitHub names a package, not an image: the repository is ``<owner>/<package>``, both
    lower-cased as GHCR paths are. ``package_version.name`` is the manifest digest for
    containers; ``container_metadata.manifest.digest`` is the fallback (GitHub's own example
    payload has a 40-hex value there, so it is second choice). Events for another registry
    than the configured one (GHCR unless the registry is GitHub Enterprise's) are skipped.
    """
    event_name = context.headers.get("x-github-event")
    if event_name is None:
        raise WebhookError(400, "missing X-GitHub-Event header")
    if event_name not in _GITHUB_EVENTS:
        return [f"X-GitHub-Event: {_quote(event_name)} event ignored"]
    payload = _object(body, "body")
    action = _required_str(payload, "action", "")
    if action not in _GITHUB_ACTIONS:
        return [f"action: package {_quote(action)} event ignored"]
    package = _required_object(payload, event_name, "")
    ecosystems = {
        (_optional_str(package, key, event_name) or "").lower()
        for key in ("ecosystem", "package_type")
    }
    if not ecosystems.intersection(_GITHUB_CONTAINER_ECOSYSTEMS):
        return [f"{event_name}.ecosystem: not a container package, ignored"]
    registry_object = _optional_object(package, "registry", event_name)
    registry_url = (
        _optional_str(registry_object, "url", _join(event_name, "registry"))
        if registry_object
        else None
    )
    if context.registry.host != "ghcr.io":
        host = _url_host(registry_url) if registry_url else None
        if host != context.registry.host:
            return [f"{event_name}.registry.url: package of another registry ({_quote(host)})"]
    owner = _required_object(package, "owner", event_name)
    login = _required_str(owner, "login", _join(event_name, "owner"))
    name = _required_str(package, "name", event_name)
    repository = _repository(context, f"{login.lower()}/{name.lower()}", _join(event_name, "name"))
    version_path = _join(event_name, "package_version")
    version = _required_object(package, "package_version", event_name)
    metadata_path = _join(version_path, "container_metadata")
    metadata = _optional_object(version, "container_metadata", version_path) or {}
    digest = _digest_or_none(_optional_str(version, "name", version_path))
    if digest is None:
        manifest = _optional_object(metadata, "manifest", metadata_path)
        if manifest is None:
            raise _bad(_join(version_path, "name"), "is not a digest and there is no manifest")
        digest = _required_digest(manifest, "digest", _join(metadata_path, "manifest"))
    tag_object = _optional_object(metadata, "tag", metadata_path)
    tag = _optional_tag(tag_object, "name", _join(metadata_path, "tag")) if tag_object else None
    sender = _optional_object(payload, "sender", "")
    occurred_at = _first_timestamp(
        (version, "updated_at", version_path),
        (version, "created_at", version_path),
        (package, "updated_at", event_name),
    )
    return [
        _event(
            context,
            event_name,
            action=Action.PUSH,
            repository=repository,
            digest=digest,
            tag=tag,
            event_id=_header_id(context, "x-github-delivery"),
            occurred_at=occurred_at,
            actor=_optional_str(sender, "login", "sender") if sender else None,
        )
    ]


# --- Docker Hub and Quay: a repository and tags, no digest ------------------------------------


def _dockerhub(context: _Context, body: object) -> list[_Item]:
    """Docker Hub: ``push_data.tag`` in ``repository.repo_name``; no digest, no id."""
    payload = _object(body, "body")
    push_data = _required_object(payload, "push_data", "")
    repository_object = _required_object(payload, "repository", "")
    repository = _repository(context, repository_object.get("repo_name"), "repository.repo_name")
    return [
        _event(
            context,
            "push_data",
            action=Action.PUSH,
            repository=repository,
            digest=None,
            tag=_tag(push_data.get("tag"), "push_data.tag"),
            occurred_at=_timestamp(push_data.get("pushed_at"), "push_data.pushed_at"),
            actor=_optional_str(push_data, "pusher", "push_data"),
        )
    ]


def _quay(context: _Context, body: object) -> list[_Item]:
    """Quay's ``repo_push``: ``repository`` and ``updated_tags``, one event per tag.

    Quay sends other notifications (builds, vulnerabilities) in other shapes; one without
    ``updated_tags`` is skipped rather than refused, so pointing every notification at us
    does no harm. ``docker_url`` names the host; pushes to another host are skipped.
    """
    payload = _object(body, "body")
    if "updated_tags" not in payload:
        return ["body: not a repo_push notification (no updated_tags), ignored"]
    repository = _repository(context, payload.get("repository"), "repository")
    tags = [
        _tag(tag, f"updated_tags[{i}]")
        for i, tag in enumerate(_required_list(payload, "updated_tags", ""))
    ]
    docker_url = _optional_str(payload, "docker_url", "")
    if docker_url is not None:
        host = _url_host(docker_url if "://" in docker_url else f"//{docker_url}")
        if host != context.registry.host:
            return [f"docker_url: push to another host ({_quote(host)}) ignored"]
    if not tags:
        return [f"{repository}: repo_push without updated tags ignored"]
    return [
        _event(
            context,
            f"updated_tags[{i}]",
            action=Action.PUSH,
            repository=repository,
            digest=None,
            tag=tag,
        )
        for i, tag in enumerate(tags)
    ]


# --- clouds: ECR (EventBridge) and Artifact Registry (Pub/Sub) -------------------------------


def _ecr(context: _Context, body: object) -> list[_Item]:
    """Amazon ECR's EventBridge ``ECR Image Action`` event (via an API destination).

    Only successful pushes and deletes count. When the configured host is an ECR endpoint
    (``<account>.dkr.ecr.<region>.amazonaws.com``), events of another account or region
    are skipped: an EventBridge rule can easily forward more than one registry's events.
    """
    event = _object(body, "body")
    source = _required_str(event, "source", "")
    detail_type = _required_str(event, "detail-type", "")
    if source != "aws.ecr" or detail_type != "ECR Image Action":
        return [f"detail-type: {_quote(source)} {_quote(detail_type)} event ignored"]
    detail = _required_object(event, "detail", "")
    result = _optional_str(detail, "result", "detail")
    if result != "SUCCESS":
        return [f"detail.result: {_quote(result)} image action ignored"]
    action_type = _required_str(detail, "action-type", "detail")
    actions = {"PUSH": Action.PUSH, "DELETE": Action.DELETE}
    if action_type not in actions:
        return [f"detail.action-type: {_quote(action_type)} ignored"]
    endpoint = _ECR_HOST.match(context.registry.host)
    if endpoint is not None:
        account = _optional_str(event, "account", "")
        region = _optional_str(event, "region", "")
        if account not in (None, endpoint["account"]) or region not in (None, endpoint["region"]):
            where = f"{_quote(account)} {_quote(region)}"
            return [f"account/region: event of another ECR registry ({where}) ignored"]
    repository = _repository(context, detail.get("repository-name"), "detail.repository-name")
    return [
        _event(
            context,
            "detail",
            action=actions[action_type],
            repository=repository,
            digest=_required_digest(detail, "image-digest", "detail"),
            tag=_optional_tag(detail, "image-tag", "detail"),
            event_id=_optional_id(event, "id", ""),
            occurred_at=_timestamp(event.get("time"), "time"),
        )
    ]


def _gar(context: _Context, body: object) -> list[_Item]:
    """Google Artifact Registry's ``gcr`` Pub/Sub topic, delivered by a push subscription.

    The message names full references (``host/project/repo/image@sha256:…`` and ``…:tag``);
    the host must be the configured registry's and the repository is the path. A wrapped
    push has the message base64 in ``message.data``; an unwrapped one (``--push-no-wrapper``)
    is the message itself, with its id in the ``x-goog-pubsub-message-id`` header.
    """
    envelope = _object(body, "body")
    if "message" in envelope:
        message = _required_object(envelope, "message", "")
        data = _required_str(message, "data", "message")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("message.data", "is not base64") from None
        path = "message.data"
        inner = _object(_decode_json(raw, path), path)
        event_id = _optional_id(message, "messageId", "message") or _optional_id(
            message, "message_id", "message"
        )
        published = message.get("publishTime", message.get("publish_time"))
        occurred_at = _timestamp(published, "message.publishTime")
    else:
        path, inner = "", envelope
        event_id = _header_id(context, "x-goog-pubsub-message-id")
        published = context.headers.get("x-goog-pubsub-publish-time")
        occurred_at = _timestamp(published, "X-Goog-Pubsub-Publish-Time")
    action_name = _required_str(inner, "action", path)
    actions = {"INSERT": Action.PUSH, "DELETE": Action.DELETE}
    if action_name not in actions:
        return [f"{_join(path, 'action')}: {_quote(action_name)} ignored"]
    digest_ref = _optional_reference(inner, "digest", path)
    tag_ref = _optional_reference(inner, "tag", path)
    if digest_ref is not None and digest_ref.digest is None:
        raise _bad(_join(path, "digest"), "is not a reference with a digest (…@sha256:…)")
    if tag_ref is not None and tag_ref.tag is None:
        raise _bad(_join(path, "tag"), "is not a reference with a tag (…:tag)")
    refs = [r for r in (digest_ref, tag_ref) if r is not None]
    if not refs:
        raise _bad(path or "body", "names neither a digest nor a tag")
    if len({(r.registry, r.repository) for r in refs}) > 1:
        raise _bad(path or "body", "digest and tag name different images")
    ref = refs[0]
    if ref.registry.lower() != context.registry.host:
        return [f"{path or 'body'}: image on another host ({_quote(ref.registry)}) ignored"]
    return [
        _event(
            context,
            path or "body",
            action=actions[action_name],
            repository=_repository(context, ref.repository, _join(path, "digest")),
            digest=digest_ref.digest if digest_ref else None,
            tag=tag_ref.tag if tag_ref else None,
            event_id=event_id,
            occurred_at=occurred_at,
        )
    ]


# --- generic ------------------------------------------------------------------------------------


def _generic(context: _Context, body: object) -> list[_Item]:
    """The watcher's own format, for scripts and CI: ``{repository, digest?, tag?, ...}``.

    One object or a list of them; ``action`` is ``push`` (the default) or ``delete``. Being
    ours, it is strict: an unknown action is an error, not something to skip.
    """
    items: list[_Item] = []
    for entry, path in _entries(body):
        action_name = (_optional_str(entry, "action", path) or "push").lower()
        if action_name not in ("push", "delete"):
            raise _bad(_join(path, "action"), "must be push or delete")
        items.append(
            _event(
                context,
                path or "body",
                action=Action(action_name),
                repository=_repository(context, entry.get("repository"), _join(path, "repository")),
                digest=_optional_digest(entry, "digest", path),
                tag=_optional_tag(entry, "tag", path),
                event_id=_optional_id(entry, "id", path),
                occurred_at=_timestamp(entry.get("timestamp"), _join(path, "timestamp")),
            )
        )
    return items


_PARSERS: Mapping[str, Callable[[_Context, object], list[_Item]]] = {
    "distribution": _distribution,
    "harbor": _harbor,
    "github": _github,
    "dockerhub": _dockerhub,
    "quay": _quay,
    "acr": _acr,
    "ecr": _ecr,
    "gar": _gar,
    "generic": _generic,
}


# --- building blocks ----------------------------------------------------------------------------


def _event(
    context: _Context,
    path: str,
    *,
    action: Action,
    repository: str,
    digest: Digest | None,
    tag: str | None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    actor: str | None = None,
    source_addr: str | None = None,
    media_type: str | None = None,
) -> PushEvent:
    """A PushEvent of this registry; one naming neither digest nor tag is malformed."""
    if digest is None and tag is None:
        raise _bad(path or "body", "names neither a digest nor a tag")
    return PushEvent(
        registry=context.registry.name,
        repository=repository,
        digest=digest,
        tag=tag,
        action=action,
        source=Source.WEBHOOK,
        event_id=event_id,
        occurred_at=occurred_at,
        actor=actor,
        source_addr=source_addr or context.remote,
        media_type=media_type,
    )


def _entries(body: object) -> list[tuple[_JSON, str]]:
    """The objects of a body that is one object or an array of them, with their paths."""
    if isinstance(body, list):
        return [(_object(entry, f"[{i}]"), f"[{i}]") for i, entry in enumerate(body)]
    return [(_object(body, "body"), "")]


def _decode_json(data: bytes, path: str) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, nesting bounded by the interpreter."""
    if not data.strip():
        raise _bad(path, "is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, "is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _bad(
            path, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):
        raise _bad(path, "is not valid JSON (out-of-range number or nesting too deep)") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _bad(path: str, problem: str) -> WebhookError:
    return WebhookError(400, f"{path}: {problem}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: object) -> str:
    """JSON's name for a value's type, for messages that must not quote the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _object(value: object, path: str) -> _JSON:
    if not isinstance(value, dict):
        raise _bad(path, f"must be an object, not {_json_type(value)}")
    return value


def _required_object(parent: _JSON, key: str, path: str) -> _JSON:
    where = _join(path, key)
    if parent.get(key) is None:
        raise _bad(where, "is required")
    return _object(parent[key], where)


def _optional_object(parent: _JSON, key: str, path: str) -> _JSON | None:
    value = parent.get(key)
    return None if value is None else _object(value, _join(path, key))


def _required_list(parent: _JSON, key: str, path: str) -> list[object]:
    where = _join(path, key)
    value = parent.get(key)
    if value is None:
        raise _bad(where, "is required")
    if not isinstance(value, list):
        raise _bad(where, f"must be an array, not {_json_type(value)}")
    return value


def _optional_str(parent: _JSON, key: str, path: str) -> str | None:
    """A string field; absent, null and empty all mean "not given"."""
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(_join(path, key), f"must be a string, not {_json_type(value)}")
    return value or None


def _required_str(parent: _JSON, key: str, path: str) -> str:
    value = _optional_str(parent, key, path)
    if value is None:
        raise _bad(_join(path, key), "is required")
    return value


def _given_str(value: object, path: str) -> str:
    """A string that must be there (absent, null and empty are all "not given")."""
    if value is None or value == "":
        raise _bad(path, "is required")
    if not isinstance(value, str):
        raise _bad(path, f"must be a string, not {_json_type(value)}")
    return value


def _optional_id(parent: _JSON, key: str, path: str) -> str | None:
    """A sender's event id: a string (or a number, which some senders use), bounded."""
    value = parent.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None and not isinstance(value, str):
        raise _bad(_join(path, key), f"must be a string, not {_json_type(value)}")
    if value is not None and len(value) > _MAX_ID:
        raise _bad(_join(path, key), f"is longer than {_MAX_ID} characters")
    return value or None


def _header_id(context: _Context, name: str) -> str | None:
    value = context.headers.get(name)
    if value is not None and len(value) > _MAX_ID:
        raise WebhookError(400, f"{name} header is longer than {_MAX_ID} characters")
    return value or None


def _indexed(event_id: str | None, index: int, count: int) -> str | None:
    """Keep ids unique per event when one delivery id covers several events."""
    if event_id is None or count == 1:
        return event_id
    return f"{event_id}#{index}"


def _digest_or_none(value: str | None) -> Digest | None:
    if value is None:
        return None
    try:
        return parse_digest(value)
    except ReferenceError:
        return None


def _optional_digest(parent: _JSON, key: str, path: str) -> Digest | None:
    value = _optional_str(parent, key, path)
    if value is None:
        return None
    digest = _digest_or_none(value)
    if digest is None:
        # parse_digest's own message quotes the value; this one must not.
        raise _bad(_join(path, key), "is not a digest (want sha256:<64 lowercase hex>)")
    return digest


def _required_digest(parent: _JSON, key: str, path: str) -> Digest:
    digest = _optional_digest(parent, key, path)
    if digest is None:
        raise _bad(_join(path, key), "is required")
    return digest


def _tag(value: object, path: str) -> str:
    """A tag as the distribution spec allows it (up to 128 of ``[A-Za-z0-9_.-]``)."""
    value = _given_str(value, path)
    try:
        parsed = ImageReference.parse(f"{_CHECK_HOST}/x:{value}")
    except ReferenceError:
        parsed = None
    if parsed is None or parsed.tag != value or parsed.digest is not None:
        raise _bad(path, "is not a valid tag (up to 128 of letters, digits, _ . -)")
    return value


def _optional_tag(parent: _JSON, key: str, path: str) -> str | None:
    value = _optional_str(parent, key, path)
    return None if value is None else _tag(value, _join(path, key))


def _repository(context: _Context, value: object, path: str) -> str:
    """A repository path, with Docker Hub's ``library/`` for official images."""
    repository = _given_str(value, path)
    if context.registry.host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    try:
        parsed = ImageReference.parse(f"{_CHECK_HOST}/{repository}")
    except ReferenceError:
        parsed = None
    if (
        parsed is None
        or parsed.repository != repository
        or parsed.tag is not None
        or len(repository) > _MAX_REPOSITORY
    ):
        raise _bad(
            path,
            "is not a valid repository name (lowercase path components of letters, digits "
            f"and . _ -, at most {_MAX_REPOSITORY} characters)",
        )
    return repository


def _optional_reference(parent: _JSON, key: str, path: str) -> ImageReference | None:
    """A full image reference (``host/path:tag`` or ``host/path@digest``)."""
    value = _optional_str(parent, key, path)
    if value is None:
        return None
    try:
        return ImageReference.parse(value)
    except ReferenceError:
        raise _bad(_join(path, key), "is not a valid image reference") from None


def _timestamp(value: object, path: str) -> datetime | None:
    """RFC 3339 text or Unix seconds, as an aware datetime (UTC when no offset is given)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise _bad(path, "is not a valid timestamp") from None
    raise _bad(path, f"must be a timestamp, not {_json_type(value)}")


def _first_timestamp(*fields: tuple[_JSON, str, str]) -> datetime | None:
    """The first of several (object, key, path) timestamps that is given."""
    for parent, key, path in fields:
        occurred_at = _timestamp(parent.get(key), _join(path, key))
        if occurred_at is not None:
            return occurred_at
    return None


def _media_type(value: str) -> str:
    """The media type without parameters, lower-cased (``; charset=utf-8`` is noise)."""
    return value.split(";", 1)[0].strip().lower()


def _url_host(url: str) -> str | None:
    """``host[:port]`` of a URL, normalised as RegistryConfig.host is."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    return normalize_registry(host)


def _quote(value: object) -> str:
    """A payload value for a log line: quoted and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
