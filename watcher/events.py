"""What the sources (webhooks, poller, scan) tell the rest of the watcher: push events.

Every source, whatever its registry's payload looks like, produces these. A digest may be
unknown (Docker Hub and Quay webhooks name only a tag); then the daemon resolves the tag with
a HEAD before anything else, and records that it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from watcher.refs import Digest


class Action(StrEnum):
    """What happened to a manifest."""

    PUSH = "push"
    DELETE = "delete"


class Source(StrEnum):
    """How the watcher learned about it (a label value of watcher_push_events_total)."""

    WEBHOOK = "webhook"
    POLL = "poll"
    SCAN = "scan"


@dataclass(frozen=True)
class PushEvent:
    """One manifest pushed (or deleted) in one repository of a configured registry."""

    registry: str  # the configured registry's name, never a host taken from the payload
    repository: str
    digest: Digest | None
    tag: str | None
    action: Action = Action.PUSH
    source: Source = Source.WEBHOOK
    event_id: str | None = None  # the sender's delivery/event id, for deduplication
    occurred_at: datetime | None = None
    actor: str | None = None
    source_addr: str | None = None
    media_type: str | None = None
