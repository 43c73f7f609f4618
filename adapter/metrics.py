"""Prometheus metrics, with the official client. Names are listed in docs/operations.md.

With several processes (``workers`` > 1, or export processes) the counters and histograms live in
the client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set by the CLI) and a scrape of
any worker sums all of them; the store gauges are read from the shared store at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from adapter.store import Store

PREFIX = "dynamiq_otel"
_SIZE_BUCKETS = (1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6, 8e6, 16e6)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric the service writes."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.store_collector = StoreCollector(store)
        if not multiprocess_dir():
            registry.register(self.store_collector)
        self.batches_received = Counter(
            f"{PREFIX}_batches_received", "Batches received on /v1/traces, by outcome and reason.",
            ["outcome", "reason", "tenant"], registry=registry,
        )  # fmt: skip
        self.runs_received = Counter(
            f"{PREFIX}_runs_received", "Runs in batches received, by outcome.", ["outcome", "tenant"],
            registry=registry,
        )  # fmt: skip
        self.runs_exported = Counter(f"{PREFIX}_runs_exported", "Runs exported and accepted.", registry=registry)
        self.spans_exported = Counter(
            f"{PREFIX}_spans_exported", "Spans accepted by the backend (runs plus attempt spans).", registry=registry
        )
        self.runs_skipped_resent = Counter(
            f"{PREFIX}_runs_skipped_resent", "Runs not exported again because they were delivered before.",
            registry=registry,
        )  # fmt: skip
        self.export_retries = Counter(
            f"{PREFIX}_export_retries", "Batches put back for another export attempt.", registry=registry
        )
        self.batches_dead_lettered = Counter(
            f"{PREFIX}_batches_dead_lettered", "Batches the backend rejected for good (kept in the dead-letter store).",
            registry=registry,
        )  # fmt: skip
        self.spans_rejected = Counter(
            f"{PREFIX}_spans_rejected_by_backend", "Spans a backend rejected in a partial-success answer.",
            registry=registry,
        )  # fmt: skip
        self.export_responses = Counter(
            f"{PREFIX}_export_responses", "Backend answers to export requests, by status.", ["status"],
            registry=registry,
        )  # fmt: skip
        self.export_duration = Histogram(
            f"{PREFIX}_export_duration_seconds", "Time of one export request.", buckets=_LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.export_request_size = Histogram(
            f"{PREFIX}_export_request_size_bytes", "Size of one export request.", buckets=_SIZE_BUCKETS,
            registry=registry,
        )  # fmt: skip


class StoreCollector(Collector):
    """Store depth, read from the shared store at scrape time."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._store.stats()
        yield GaugeMetricFamily(f"{PREFIX}_store_batches", "Batches waiting for export.", value=stats.batches)
        yield GaugeMetricFamily(f"{PREFIX}_store_bytes", "Bytes of batches waiting for export.", value=stats.bytes)
        age = (time.time_ns() - stats.oldest_received_ns) / 1e9 if stats.oldest_received_ns else 0.0
        yield GaugeMetricFamily(
            f"{PREFIX}_store_oldest_age_seconds", "Age of the oldest batch waiting for export.", value=age
        )
        yield GaugeMetricFamily(f"{PREFIX}_dead_letter_batches", "Batches in the dead-letter store.", value=stats.dead)


def multiprocess_dir() -> str | None:
    """The client's multiprocess directory, when several workers share the metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(metrics: Metrics) -> bytes:
    """The text exposition for a scrape: this process's registry, or every worker's files."""
    directory = multiprocess_dir()
    if not directory:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(metrics.store_collector)
    return generate_latest(registry)
