"""The export worker: durable store -> map -> OTLP, deleting a batch only once the backend took it."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from adapter.metrics import Metrics
from adapter.otlp import ExportResult, Outcome, Transport
from adapter.store import Claimed, Store, StoreUnavailable
from adapter.validation import InvalidBatch, load_stored
from mapping import MappingOptions, RequestEncoder, Run, runs_to_span_bytes
from mapping.ids import canonical_id
from mapping.shrink import shrink_span

log = logging.getLogger("dynamiq_otel.delivery")

MAX_RETRY_AFTER_S = 3600.0
"""A backend's Retry-After is honoured up to this many seconds."""
_PRUNE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the worker batches, backs off and remembers delivered runs."""

    max_batches_per_request: int = 64
    max_request_bytes: int = 4 * 1024 * 1024
    max_claim_bytes: int = 4 * 1024 * 1024
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    lease_s: float = 60.0
    idle_poll_s: float = 1.0
    """How long an idle loop waits for work it is not told about (a ``notify`` wakes it earlier)."""
    scope_version: str = "0"
    dedupe_window_s: float = 86_400.0
    dedupe_max_runs: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where one tenant's spans go, under which resource."""

    transport: Transport
    resource: Resource


@dataclass
class DeliveryCounters:
    """What this worker did since start (tests and logs read it; Prometheus has the same numbers)."""

    requests: int = 0
    spans_exported: int = 0
    runs_exported: int = 0
    runs_skipped_resent: int = 0
    batches_delivered: int = 0
    batches_retried: int = 0
    batches_dead: int = 0
    spans_rejected_partial: int = 0
    last_result: ExportResult | None = None
    by_status: dict[str, int] = field(default_factory=dict)


def _fitted(spans: list[bytes], limit: int) -> list[bytes]:
    """``spans`` (serialised) with each one over ``limit`` bytes shrunk (sent as is if it cannot be)."""
    for index, data in enumerate(spans):
        if len(data) > limit:
            span = Span.FromString(data)
            if not shrink_span(span, limit):
                log.error("span %s does not fit %d bytes even after shrinking; sent as is", span.name, limit)
            spans[index] = span.SerializeToString()
    return spans


def _chunks(encoder: RequestEncoder, spans: Sequence[bytes], limit: int) -> list[Sequence[bytes]]:
    """``spans`` cut into runs of consecutive spans whose request fits ``limit`` (a lone larger span alone)."""
    chunks: list[Sequence[bytes]] = []
    start = size = 0
    for index, span in enumerate(spans):
        span_size = encoder.span_size(span)
        if index > start and size + span_size > limit:
            chunks.append(spans[start:index])
            start, size = index, 0
        size += span_size
    if start < len(spans):
        chunks.append(spans[start:])
    return chunks


def run_key(run: Run) -> bytes:
    """Identity of a delivered run: its id and its final state (status and end time).

    The run's end time (8 bytes, big-endian) comes first and 16 bytes of a SHA-256 of the three
    follow, so the keys of runs that ended about the same time sit next to each other in the store's
    index: an ack writes a few pages at its end instead of one page per run spread over the index.
    """
    text = f"{canonical_id(run.id)}\x00{run.status}\x00{run.end_ns}"
    moment = (run.start_ns if run.end_ns is None else run.end_ns) & 0xFFFF_FFFF_FFFF_FFFF
    return moment.to_bytes(8, "big") + hashlib.sha256(text.encode()).digest()[:16]


@dataclass
class _Prepared:
    batches: list[Claimed] = field(default_factory=list)
    spans: list[bytes] = field(default_factory=list)  # serialised, each under the request size limit if it can be
    keys: list[bytes] = field(default_factory=list)
    runs: int = 0
    skipped: int = 0


class Delivery:
    """Drains the store: in a background thread of a worker, or as the loop of an export process."""

    def __init__(
        self,
        store: Store,
        targets: Mapping[str, ExportTarget],
        options: MappingOptions,
        config: DeliveryConfig,
        metrics: Metrics,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),  # noqa: S311 - not crypto
    ) -> None:
        self.store = store
        self.targets = dict(targets)
        self.options = options
        self.config = config
        self.metrics = metrics
        self.counters = DeliveryCounters()
        self._jitter = jitter
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._encoders = {
            name: RequestEncoder(target.resource, config.scope_version) for name, target in self.targets.items()
        }
        self.tracer: trace.Tracer = trace.NoOpTracer()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Run the loop in a background thread of this process (``export_processes: 0``)."""
        self._thread = threading.Thread(target=self.run, name="dynamiq-otel-delivery", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A batch was stored: wake the worker now instead of at its next poll."""
        self._wake.set()

    def stop(self, grace_s: float) -> bool:
        """Stop taking work; wait up to ``grace_s`` for the export under way. True if it finished."""
        self.halt()
        finished = True
        if self._thread is not None:
            self._thread.join(grace_s)
            finished = not self._thread.is_alive()
        if finished:
            self.close()
        else:
            log.warning("export still under way at shutdown; its batches stay on disk and are sent after restart")
        return finished

    def close(self) -> None:
        """Close every transport."""
        for target in self.targets.values():
            target.transport.close()

    def halt(self) -> None:
        """Let ``run`` return after the step under way (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Export until ``halt``: claim, map, send, settle; wait ``idle_poll_s`` (or a ``notify``) when idle."""
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                self._prune()
            except StoreUnavailable as exc:
                log.error("store unavailable in delivery: %s", exc)
                worked = 0
            except Exception:  # a bug must not kill the worker; the batches stay leased and come back
                log.exception("delivery step failed")
                worked = 0
            if not worked:
                self._wake.wait(self.config.idle_poll_s)
                self._wake.clear()

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = now
            self.store.forget_delivered(self.config.dedupe_window_s, self.config.dedupe_max_runs)

    # --- one step -----------------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim due batches, export them, settle them in the store. Returns how many were claimed."""
        claimed = self.store.claim(
            self.config.max_batches_per_request, self.config.lease_s, max_bytes=self.config.max_claim_bytes
        )
        by_tenant: dict[str, list[Claimed]] = {}
        for batch in claimed:
            by_tenant.setdefault(batch.tenant, []).append(batch)
        for tenant, batches in by_tenant.items():
            self._deliver(tenant, batches)
        return len(claimed)

    def _deliver(self, tenant: str, batches: Sequence[Claimed]) -> None:
        target = self.targets.get(tenant)
        if target is None:
            self._bury(batches, f"unknown tenant {tenant!r}: no export target configured")
            return
        encoder = self._encoders[tenant]
        limit = self.config.max_request_bytes - encoder.overhead  # bytes of spans one request may carry
        prepared = self._prepare(batches, limit)
        if not prepared.batches:
            return
        if not prepared.spans:  # every run was delivered before
            self.store.ack([batch.id for batch in prepared.batches])
            self._count_skipped(prepared.skipped)
            return
        result = self._send(target, encoder, prepared.spans, limit)
        self._settle(tenant, prepared, result)

    def _prepare(self, batches: Sequence[Claimed], span_limit: int) -> _Prepared:
        """Parse, map and serialise the batches, leaving out runs delivered before (re-sent by the SDK).

        A span larger than ``span_limit`` bytes is shrunk first (``mapping.shrink``). A batch that
        fails to map is dead-lettered alone: its runs are not remembered as delivered, and a run it
        shares with a later batch of the round is still exported there.
        """
        prepared = _Prepared()
        parsed: list[tuple[Claimed, list[Run]]] = []
        for batch in batches:
            try:
                parsed.append((batch, load_stored(batch.body)))
            except (InvalidBatch, ValueError, TypeError) as exc:
                self._bury([batch], f"stored batch cannot be parsed: {exc}")
        dedupe = self.config.dedupe_window_s > 0
        all_keys = [run_key(run) for _, runs in parsed for run in runs] if dedupe else []
        seen = self.store.already_delivered(all_keys) if dedupe else set()
        keys = iter(all_keys)  # in the order of the loop below
        for batch, runs in parsed:
            fresh: list[Run] = []
            fresh_keys: list[bytes] = []
            taken: set[bytes] = set()
            for run in runs:
                key = next(keys) if dedupe else b""
                if dedupe and (key in seen or key in taken):
                    continue
                taken.add(key)
                fresh.append(run)
                fresh_keys.append(key)
            try:
                spans = _fitted(runs_to_span_bytes(fresh, self.options), span_limit)
            except Exception as exc:  # a mapping bug must not block the queue: keep the batch for replay
                log.exception("mapping failed for batch %d", batch.id)
                self._bury([batch], f"mapping failed: {type(exc).__name__}: {exc}")
                continue
            seen |= taken
            prepared.spans.extend(spans)
            prepared.keys.extend(fresh_keys)
            prepared.batches.append(batch)
            prepared.runs += len(fresh)
            prepared.skipped += len(runs) - len(fresh)
        return prepared

    def _send(self, target: ExportTarget, encoder: RequestEncoder, spans: Sequence[bytes], limit: int) -> ExportResult:
        """Send ``spans`` in requests of at most ``limit`` bytes of spans; the first failure decides."""
        result = ExportResult(Outcome.DELIVERED, "empty")
        for chunk in _chunks(encoder, spans, limit):
            request = encoder.encode(chunk)
            size = len(request)
            started = time.monotonic()
            with self.tracer.start_as_current_span("export", kind=trace.SpanKind.CLIENT) as span:
                result = target.transport.send(request)
                span.set_attributes({"dynamiq_otel.export.bytes": size, "dynamiq_otel.export.status": result.status})
            self.metrics.export_duration.observe(time.monotonic() - started)
            self.metrics.export_request_size.observe(size)
            self.metrics.export_responses.labels(result.status).inc()
            self.counters.requests += 1
            self.counters.by_status[result.status] = self.counters.by_status.get(result.status, 0) + 1
            self.counters.last_result = result
            if result.outcome is not Outcome.DELIVERED:
                return result
            sent = len(chunk)
            self.counters.spans_exported += sent
            self.metrics.spans_exported.inc(sent)
            if result.rejected_spans:
                self.counters.spans_rejected_partial += result.rejected_spans
                self.metrics.spans_rejected.inc(result.rejected_spans)
                log.warning("backend rejected %d spans (partial success): %s", result.rejected_spans, result.detail)
        return result

    def _settle(self, tenant: str, prepared: _Prepared, result: ExportResult) -> None:
        batches = prepared.batches
        ids = [batch.id for batch in batches]
        if result.outcome is Outcome.DELIVERED:
            self.store.ack(ids, [key for key in prepared.keys if key])
            self._count_skipped(prepared.skipped)
            self.counters.batches_delivered += len(ids)
            self.counters.runs_exported += prepared.runs
            self.metrics.runs_exported.inc(prepared.runs)
        elif result.outcome is Outcome.RETRY:
            delay = self._backoff(max(batch.attempts for batch in batches), result.retry_after)
            log.warning(
                "export failed, will retry",
                extra={"status": result.status, "batches": len(ids), "delay_s": round(delay, 2),
                       "detail": result.detail[:200], "tenant": tenant},
            )  # fmt: skip
            self.store.retry(ids, delay, f"{result.status}: {result.detail[:500]}")
            self.counters.batches_retried += len(ids)
            self.metrics.export_retries.inc(len(ids))
        elif len(batches) > 1:
            for batch in batches:  # find the batch the backend refuses; deliver the others
                self._deliver(tenant, [batch])
        else:
            self._bury(batches, f"{result.status}: {result.detail[:500]}")

    def _count_skipped(self, skipped: int) -> None:
        if skipped:
            self.counters.runs_skipped_resent += skipped
            self.metrics.runs_skipped_resent.inc(skipped)

    def _bury(self, batches: Sequence[Claimed], reason: str) -> None:
        log.error("batches moved to dead-letter", extra={"ids": [b.id for b in batches], "reason": reason[:300]})
        self.store.bury([batch.id for batch in batches], reason)
        self.counters.batches_dead += len(batches)
        self.metrics.batches_dead_lettered.inc(len(batches))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        exponential = self.config.initial_backoff_s * (2 ** max(attempts - 1, 0))
        return float(min(exponential, self.config.max_backoff_s) * self._jitter())
