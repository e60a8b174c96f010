"""Requests per digest, by signature format, against the minimum that format needs.

A few digests of each format are verified through the Engine (what every source — verify,
scan, the daemon's workers — calls) with a fresh metrics registry, and
``watcher_registry_requests_total`` is read back per method and status. The daemon adds one
manifest GET per new digest to classify it (image, index, attachment); the latency benchmark
measures that path.

The minimum, on a registry without the OCI 1.1 referrers API (every distribution 2.x):
- reading a format: bundle = fallback index + referrer manifest + bundle blob (3, the same
  with a referrers API: referrers list + manifest + blob); ``.sig``/``.att`` = manifest + one
  blob per layer (2);
- a complete answer: a verdict must also know that no other material exists (extra signers,
  attestations), so each of the three places cosign writes — referrers/fallback tag, ``.sig``,
  ``.att`` — is looked at once: 3 lookups plus one fetch per manifest and blob found. That is
  the baseline the watcher is compared with.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import generate_latest

from bench.common import Lab, Section, fmt, ratio, run_id, table, write_config
from bench.population import Fmt, push_many, writer
from watcher.config import load_config
from watcher.engine import Engine, Target
from watcher.metrics import Metrics
from watcher.refs import Digest, ImageReference
from watcher.verify.trust import load_trust

FORMATS = (Fmt.UNSIGNED, Fmt.BUNDLE, Fmt.LEGACY, Fmt.BUNDLE_ATT, Fmt.LEGACY_ATT, Fmt.ALL)


def format_minimum(f: Fmt) -> int:
    """Requests to read this format's material alone (0 for none)."""
    return 3 * f.bundle_sig + 2 * f.bundle_att + 2 * f.legacy_sig + 2 * f.legacy_att


def complete_minimum(f: Fmt) -> int:
    """Requests for a complete answer: 3 lookups, plus each manifest and blob that exists."""
    bundles = f.bundle_sig + f.bundle_att
    return 3 + 2 * bundles + f.legacy_sig + f.legacy_att


def _requests(metrics: Metrics) -> Counter[str]:
    """``METHOD code`` -> count, from the metrics registry."""
    out: Counter[str] = Counter()
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("watcher_registry_requests_total{"):
            head, _, value = line.rpartition(" ")
            labels = dict(
                part.split("=", 1) for part in head[head.index("{") + 1 : -1].split(",") if part
            )
            key = f"{labels['method'].strip(chr(34))} {labels['code'].strip(chr(34))}"
            out[key] += int(float(value))
    return out


async def run(lab: Lab, *, per_format: int, repeat: int) -> Section:
    registry = lab.registry()
    namespace = f"rq{run_id()}"
    specs = [
        (f"{namespace}/{f.name.lower().replace('_', '-')}", f"v{i}", f)
        for f in FORMATS
        for i in range(per_format)
    ]
    async with writer(registry.url) as pusher:
        host = pusher.host
        images = await push_many(pusher, lab.kit, host, specs)
    workdir = lab.dir(namespace)
    config = load_config(
        write_config(
            workdir / "config.yaml",
            registry_url=registry.url,
            host=host,
            namespace=namespace,
            store=workdir / "watcher.db",
            trusted_root=lab.trusted_root,
        )
    )
    trust = load_trust(config.trust.trusted_root, config.state_dir)
    reg = config.registries[0]
    section = Section(
        "requests",
        "registry requests per digest, by format, vs the minimum",
        {"per_format": per_format, "repeat": repeat, "registry_has_referrers_api": False},
    )
    breakdown: dict[str, Counter[str]] = {}
    verdicts: dict[str, Counter[str]] = {}
    for _ in range(repeat):
        for f in FORMATS:
            metrics = Metrics()
            seen: Counter[str] = Counter()
            async with Engine(config, trust, metrics) as engine:
                client = await engine.client_named(reg)
                for img in (i for i in images if i.fmt is f):
                    digest = Digest(img.digest)
                    ref = ImageReference(reg.host, img.repository, None, digest)
                    verdict = await engine.verify_digest(
                        Target(reg.name, reg.host, img.repository),
                        client,
                        digest,
                        (str(img.tag),),
                        config.policies_for(ref),
                    )
                    seen[str(verdict.verdict)] += 1
            counts = _requests(metrics)
            section.add(f"{f}_requests_per_digest", "requests", sum(counts.values()) / per_format)
            breakdown[str(f)] = counts
            verdicts[str(f)] = seen
    rows = []
    for f in FORMATS:
        got = section.med(f"{f}_requests_per_digest")
        per = breakdown[str(f)]
        split = ", ".join(f"{k} {v / per_format:g}" for k, v in sorted(per.items()))
        rows.append(
            [
                str(f),
                fmt(got, 1),
                format_minimum(f),
                complete_minimum(f),
                fmt(ratio(got, complete_minimum(f)), 2),
                split,
            ]
        )
        section.ratios[f"{f}: watcher/complete minimum"] = ratio(got, complete_minimum(f))
        section.add(f"{f}_complete_minimum", "requests", complete_minimum(f))
        section.add(f"{f}_format_minimum", "requests", format_minimum(f))
    section.tables.append(
        table(
            [
                "format",
                "watcher req/digest",
                "format min",
                "complete min",
                "watcher ÷ min",
                "by method and status (per digest)",
            ],
            rows,
        )
    )
    section.details["requests_by_method_and_status"] = {k: dict(v) for k, v in breakdown.items()}
    section.details["verdicts"] = {k: dict(v) for k, v in verdicts.items()}
    expected = {str(f): ("unsigned" if f is Fmt.UNSIGNED else "verified") for f in FORMATS}
    for name, seen in verdicts.items():
        if set(seen) != {expected[name]}:
            section.problems.append(f"{name}: verdicts {dict(seen)}, expected {expected[name]}")
    section.notes.append(
        "format min = fetch this format's material only; complete min = look once in each of "
        "the 3 places cosign writes (referrers or its fallback tag, .sig, .att) and fetch what "
        "is there — what a verdict that reports every signer needs"
    )
    section.notes.append(
        "the daemon adds 1 GET per new digest (classify: image, index or attachment); "
        "see latency's daemon requests/digest"
    )
    return section
