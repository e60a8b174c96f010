"""Coverage: how many of a repository's images are verified, counted one way everywhere.

``scan`` (from what it just saw) and ``GET /api/v1/coverage`` (from the store) build the same
rows with the same function, so the table a platform team reads before turning alerts on and
the number a dashboard shows afterwards cannot drift apart. Verdict columns count distinct
digests; ``ratio`` is the contract's ``watcher_signing_coverage_ratio``: the share of current
tags whose digest is ``verified``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from watcher.verdicts import Verdict

VERDICT_COLUMNS: tuple[str, ...] = tuple(
    str(v)
    for v in (
        Verdict.VERIFIED,
        Verdict.PENDING,
        Verdict.UNSIGNED,
        Verdict.UNEXPECTED_SIGNER,
        Verdict.INVALID_SIGNATURE,
        Verdict.MISSING_ATTESTATION,
        Verdict.ERROR,
        Verdict.NO_POLICY,
    )
)
_FAILING = tuple(str(v) for v in Verdict if v.failing)


@dataclass
class Coverage:
    """One repository's row (or the totals, with registry and repository None)."""

    registry: str | None
    repository: str | None
    tags: int = 0
    digests: int = 0
    verified_tags: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICT_COLUMNS, 0))

    def add(self, verdict: str, tags: int) -> None:
        """Count one digest with its verdict, pointed at by ``tags`` current tags."""
        self.digests += 1
        self.tags += tags
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        if verdict == Verdict.VERIFIED:
            self.verified_tags += tags

    @property
    def failing(self) -> int:
        """Digests whose verdict alerts (unsigned, unexpected, invalid, missing)."""
        return sum(self.counts.get(v, 0) for v in _FAILING)

    @property
    def ratio(self) -> float | None:
        """Share of current tags whose digest is verified; None when there are no tags."""
        return round(self.verified_tags / self.tags, 4) if self.tags else None

    def to_json(self) -> dict[str, Any]:
        """The row as the scan JSON and the coverage API give it."""
        return {
            "registry": self.registry,
            "repository": self.repository,
            "tags": self.tags,
            "digests": self.digests,
            **{v: self.counts.get(v, 0) for v in VERDICT_COLUMNS},
            "failing": self.failing,
            "ratio": self.ratio,
        }


def coverage_of(items: Iterable[tuple[str, str, str, int]]) -> tuple[list[Coverage], Coverage]:
    """Rows per (registry, repository), sorted, and their totals.

    ``items`` are (registry, repository, verdict, number of current tags) per digest.
    """
    rows: dict[tuple[str, str], Coverage] = {}
    totals = Coverage(None, None)
    for registry, repository, verdict, tags in items:
        row = rows.setdefault((registry, repository), Coverage(registry, repository))
        row.add(verdict, tags)
        totals.add(verdict, tags)
    return [rows[k] for k in sorted(rows)], totals


def contract_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored verdict document in the contract's shape (without the store's bookkeeping)."""
    return {k: v for k, v in doc.items() if k not in ("final", "policy_hashes")}
