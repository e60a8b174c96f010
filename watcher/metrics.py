"""Every Prometheus metric of the contract, declared once against a replaceable registry.

Label values come from configuration only (registry names, repositories inside configured
globs, policy names, verdict strings), never from a digest or tag, so cardinality is bounded
by the config file.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watcher import __version__

# Registry round-trips: a loopback hit is milliseconds, a throttled cloud registry tens of s.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Push to verdict/signature: seconds for CI that signs right away, up to hours of grace.
_PUSH_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


class Metrics:
    """The watcher's metrics; tests build one on a fresh CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.push_events = Counter(
            "watcher_push_events",
            "Pushes learned about.",
            ["registry", "repository", "source"],
            registry=r,
        )
        self.verdicts = Counter(
            "watcher_verdicts",
            "Verdicts given, per policy.",
            ["registry", "repository", "policy", "verdict"],
            registry=r,
        )
        self.signing_coverage = Gauge(
            "watcher_signing_coverage_ratio",
            "Share of current tags whose digest is verified.",
            ["registry", "repository"],
            registry=r,
        )
        self.images_by_verdict = Gauge(
            "watcher_images_by_verdict",
            "Current tags by their digest's verdict.",
            ["registry", "repository", "verdict"],
            registry=r,
        )
        self.push_to_verdict = Histogram(
            "watcher_push_to_verdict_seconds",
            "Push seen to final verdict.",
            ["registry"],
            buckets=_PUSH_BUCKETS,
            registry=r,
        )
        self.push_to_signature = Histogram(
            "watcher_push_to_signature_seconds",
            "Push seen to first valid signature.",
            ["registry"],
            buckets=_PUSH_BUCKETS,
            registry=r,
        )
        self.pending_digests = Gauge(
            "watcher_pending_digests",
            "Digests inside their grace period.",
            ["registry"],
            registry=r,
        )
        self.alerts = Counter(
            "watcher_alerts",
            "Alert deliveries.",
            ["sink", "verdict", "outcome"],
            registry=r,
        )
        self.registry_requests = Counter(
            "watcher_registry_requests",
            "HTTP requests made to registries.",
            ["registry", "method", "code"],
            registry=r,
        )
        self.registry_request_duration = Histogram(
            "watcher_registry_request_duration_seconds",
            "Registry request latency.",
            ["registry"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.webhook_requests = Counter(
            "watcher_webhook_requests",
            "Webhook requests received.",
            ["registry", "code"],
            registry=r,
        )
        # Beyond the contract: webhook entries dropped on purpose (blob pushes, pulls,
        # repositories outside the configured globs, other hosts), so a misrouted webhook
        # shows up on a dashboard instead of only in logs.
        self.webhook_events_ignored = Counter(
            "watcher_webhook_events_ignored",
            "Webhook entries ignored (outside the watched repositories, blob pushes, pulls).",
            ["registry"],
            registry=r,
        )
        self.last_poll_success = Gauge(
            "watcher_last_poll_success_timestamp_seconds",
            "Unix time of the last successful poll cycle.",
            ["registry"],
            registry=r,
        )
        self.build_info = Gauge(
            "watcher_build_info",
            "Build information.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(version=__version__).set(1)

    def registry_request(self, registry: str, method: str, code: str, seconds: float) -> None:
        """Record one registry HTTP request; code is the status or 'error' for no answer."""
        self.registry_requests.labels(registry=registry, method=method, code=code).inc()
        self.registry_request_duration.labels(registry=registry).observe(seconds)
