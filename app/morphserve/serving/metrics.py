"""Prometheus metrics, one registry per server instance (so tests can run several apps in one process)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "morphserve_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "morphserve_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "morphserve_batch_size", "rows per executed batch", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("morphserve_queue_depth", "inference requests waiting", ["model"], registry=r)
        self.version = Gauge("morphserve_model_version", "version currently serving", ["model"], registry=r)
        self.edits = Counter("morphserve_edits", "edits by outcome", ["model", "outcome"], registry=r)
        self.edit_latency = Histogram(
            "morphserve_edit_duration_seconds",
            "edit latency, request to live",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "morphserve_inference_duration_seconds",
            "inference latency per model, from the registry taking the request to "
            "its result (queueing and batching included)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag_versions = Gauge(
            "morphserve_replica_lag_versions",
            "versions committed to the journal that this replica has not applied yet",
            ["model"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "morphserve_replica_lag_seconds",
            "seconds since the journal's newest version "
            "committed, while this replica has not applied it (0 when caught up)",
            ["model"],
            registry=r,
        )
        self.journal_up = Gauge("morphserve_journal_up", "1 while the journal is reachable, else 0", registry=r)
        # Rollouts: `role` is bounded (current / candidate), never a version number.
        self.rollout_requests = Counter(
            "morphserve_rollout_requests", "requests answered during a rollout, by role", ["model", "role"], registry=r
        )
        self.rollout_errors = Counter(
            "morphserve_rollout_errors", "failed requests during a rollout, by role", ["model", "role"], registry=r
        )
        self.rollout_latency = Histogram(
            "morphserve_rollout_duration_seconds",
            "latency of the requests answered during a rollout, by the role of the version that answered",
            ["model", "role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_runs = Counter(
            "morphserve_shadow_runs",
            "shadow runs on the candidate, by outcome (compared, dropped, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.rollout_agreement = Gauge(
            "morphserve_rollout_agreement",
            "share of shadowed requests where candidate and current agree",
            ["model"],
            registry=r,
        )
        self.rollout_active = Gauge("morphserve_rollout_active", "1 while a rollout runs", ["model"], registry=r)
        # Not labelled by version: versions grow without bound, Prometheus series must not.
        self.inferences = Counter(
            "morphserve_inferences", "inference requests served by the worker", ["model"], registry=r
        )

    def forget(self, model: str) -> None:
        """Drop a deleted model's series (a name deleted for good must not be scraped for ever, and one created
        again starts from zero)."""
        for metric in (
            self.batch_size,
            self.queue_depth,
            self.version,
            self.edit_latency,
            self.inference_latency,
            self.lag_versions,
            self.lag_seconds,
            self.inferences,
        ):
            with contextlib.suppress(KeyError):  # never observed for this model
                metric.remove(model)
        for outcome in ("committed", "rejected"):
            with contextlib.suppress(KeyError):
                self.edits.remove(model, outcome)
