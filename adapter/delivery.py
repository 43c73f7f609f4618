"""The export worker: durable store -> map -> OTLP, deleting a batch only once the backend took it."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from adapter.otlp import ExportResult, Outcome, Transport
from adapter.store import Claimed, Store, StoreUnavailable
from adapter.validation import InvalidBatch, parse_batch
from mapping import MappingOptions, build_request, runs_to_spans

log = logging.getLogger("dynamiq_otel.delivery")

MAX_RETRY_AFTER_S = 3600.0
"""A backend's Retry-After is honoured up to this many seconds."""
_REQUEST_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the worker batches and backs off."""

    max_batches_per_request: int = 64
    max_request_bytes: int = 4 * 1024 * 1024
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    lease_s: float = 60.0
    idle_poll_s: float = 1.0
    scope_version: str = "0"


@dataclass
class DeliveryCounters:
    """What the worker did since start (read by tests, logs and, later, metrics)."""

    requests: int = 0
    spans_exported: int = 0
    batches_delivered: int = 0
    batches_retried: int = 0
    batches_dead: int = 0
    spans_rejected_partial: int = 0
    last_result: ExportResult | None = None
    by_status: dict[str, int] = field(default_factory=dict)


class Delivery:
    """Drains the store in a background thread."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        options: MappingOptions,
        resource: Resource,
        config: DeliveryConfig,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),  # noqa: S311 - not crypto
    ) -> None:
        self.store = store
        self.transport = transport
        self.options = options
        self.resource = resource
        self.config = config
        self.counters = DeliveryCounters()
        self._jitter = jitter
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._loop, name="dynamiq-otel-delivery", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A batch was stored: wake the worker now instead of at its next poll."""
        self._wake.set()

    def stop(self, grace_s: float) -> bool:
        """Stop taking work; wait up to ``grace_s`` for the export under way. True if it finished."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(grace_s)
        finished = not self._thread.is_alive()
        if not finished:
            log.warning("export still under way at shutdown; its batches stay on disk and are retried at restart")
        if finished:
            self.transport.close()
        return finished

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except StoreUnavailable as exc:
                log.error("store unavailable in delivery: %s", exc)
                worked = 0
            except Exception:  # a bug must not kill the worker; the batches stay leased and return
                log.exception("delivery step failed")
                worked = 0
            if not worked:
                self._wake.wait(self.config.idle_poll_s)
                self._wake.clear()

    # --- one step -----------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim due batches, export them, settle them in the store. Returns how many were claimed."""
        claimed = self.store.claim(self.config.max_batches_per_request, self.config.lease_s)
        if claimed:
            self._deliver(claimed)
        return len(claimed)

    def _deliver(self, batches: Sequence[Claimed]) -> None:
        spans: list[Span] = []
        good: list[Claimed] = []
        for batch in batches:
            try:
                runs = parse_batch(batch.body, accept_unfinished=True, max_runs=1 << 62)
                spans.extend(runs_to_spans(runs, self.options))
                good.append(batch)
            except (InvalidBatch, ValueError, TypeError) as exc:
                log.error("stored batch %d cannot be mapped, moved to dead-letter: %s", batch.id, exc)
                self.store.bury([batch.id], f"mapping failed: {exc}")
                self.counters.batches_dead += 1
        if not good:
            return
        result = self._send(spans)
        self._settle(good, result)

    def _send(self, spans: Sequence[Span]) -> ExportResult:
        """Send ``spans`` in requests under the size limit; the first failure decides."""
        result = ExportResult(Outcome.DELIVERED, "empty")
        for request in self._requests(spans):
            result = self.transport.send(request)
            self.counters.requests += 1
            self.counters.by_status[result.status] = self.counters.by_status.get(result.status, 0) + 1
            self.counters.last_result = result
            if result.outcome is not Outcome.DELIVERED:
                return result
            self.counters.spans_exported += sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
            if result.rejected_spans:
                self.counters.spans_rejected_partial += result.rejected_spans
                log.warning("backend rejected %d spans (partial success): %s", result.rejected_spans, result.detail)
        return result

    def _requests(self, spans: Sequence[Span]) -> list[ExportTraceServiceRequest]:
        limit = self.config.max_request_bytes - _REQUEST_OVERHEAD - self.resource.ByteSize()
        chunks: list[list[Span]] = [[]]
        size = 0
        for span in spans:
            span_size = span.ByteSize() + 8
            if chunks[-1] and size + span_size > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(span)
            size += span_size
        return [build_request(self.resource, chunk, self.config.scope_version) for chunk in chunks if chunk]

    def _settle(self, batches: Sequence[Claimed], result: ExportResult) -> None:
        ids = [batch.id for batch in batches]
        if result.outcome is Outcome.DELIVERED:
            self.store.ack(ids)
            self.counters.batches_delivered += len(ids)
        elif result.outcome is Outcome.RETRY:
            delay = self._backoff(max(batch.attempts for batch in batches), result.retry_after)
            log.warning(
                "export failed (%s), %d batch(es) retried in %.1fs: %s",
                result.status,
                len(ids),
                delay,
                result.detail[:200],
            )
            self.store.retry(ids, delay, f"{result.status}: {result.detail[:500]}")
            self.counters.batches_retried += len(ids)
        elif len(batches) > 1:
            for batch in batches:  # find the batch the backend refuses; deliver the others
                self._deliver([batch])
        else:
            log.error(
                "backend rejected batch %d (%s), moved to dead-letter: %s", ids[0], result.status, result.detail[:200]
            )
            self.store.bury(ids, f"{result.status}: {result.detail[:500]}")
            self.counters.batches_dead += 1

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        exponential = self.config.initial_backoff_s * (2 ** max(attempts - 1, 0))
        return float(min(exponential, self.config.max_backoff_s) * self._jitter())
