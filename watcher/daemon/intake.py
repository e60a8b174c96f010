"""Turning a push event into durable work: what to (re-)check, and when.

Signature artifacts are not images. A push of ``sha256-<hex>.sig/.att/.sbom`` or of the
referrers fallback tag ``sha256-<hex>`` re-checks the subject digest now, and never gets a
verdict of its own. A manifest pushed by digest without a tag might be a referrer or a
platform manifest of a multi-arch push that is still arriving; it is looked at after a short
settle delay, when the worker can tell which it is.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from watcher.events import Action, PushEvent
from watcher.refs import ATTACHMENT_TAG_RE, Digest
from watcher.store.base import TAG_REF_PREFIX, Enqueue

UNTAGGED_SETTLE = timedelta(seconds=3)


def attachment_subject(tag: str | None) -> Digest | None:
    """The digest a cosign/referrers-fallback tag attaches to, or None for an ordinary tag."""
    if tag is None or not ATTACHMENT_TAG_RE.match(tag):
        return None
    return Digest("sha256:" + tag[len("sha256-") : len("sha256-") + 64])


def plan(event: PushEvent, now: datetime, settle: timedelta = UNTAGGED_SETTLE) -> list[Enqueue]:
    """The work an event causes (none for deletes: they are recorded, not verified)."""
    if event.action is not Action.PUSH:
        return []
    subject = attachment_subject(event.tag)
    if subject is not None:
        return [Enqueue(subject, now, f"signature artifact {event.tag} pushed", recheck=True)]
    if event.digest is None:
        if event.tag is None:
            return []
        # Re-opened every time: the same tag pushed again may now name another digest.
        return [
            Enqueue(
                TAG_REF_PREFIX + event.tag, now, f"tag {event.tag} pushed (no digest)", recheck=True
            )
        ]
    if event.tag is None:
        return [Enqueue(event.digest, now + settle, "pushed by digest, untagged")]
    # A tagged push is judged again even if the digest was judged before: a new tag can bring
    # policies that select by tag, and a digest first seen untagged must not stay unjudged.
    return [Enqueue(event.digest, now, f"pushed as {event.tag}", recheck=True)]
