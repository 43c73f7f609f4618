"""The Litestar application: ``create_app(settings)``, its lifespan and its routes."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import CollectorRegistry

from adapter.auth import AccessKeys
from adapter.body import read_body
from adapter.delivery import Delivery
from adapter.errors import EXCEPTION_HANDLERS, ApiError, error_response
from adapter.exporter import build_delivery, build_store
from adapter.metrics import Metrics, exposition
from adapter.openapi import ERROR_RESPONSES, Accepted, TracesOperation
from adapter.ratelimit import RateLimits
from adapter.selftrace import tracer_for
from adapter.store import Store, StoreFull, StoreUnavailable
from adapter.validation import InvalidBatch, TooManyRuns, check_batch
from adapter.version import package_version
from adapter.writer import BatchWriter
from config import Settings
from config.tenants import DEFAULT_TENANT

log = logging.getLogger("dynamiq_otel")

RETRY_AFTER_UNAVAILABLE_S = 5
"""Retry-After sent with 503 when the store is full, cannot be written, or the service is stopping."""
RETRY_AFTER_BUSY_S = 1
"""Retry-After sent with 503 when a worker already validates and stores ``max_concurrent_requests`` batches."""
_JSON_TYPES = ("application/json",)
_REASONS = {400: "bad_request", 401: "unauthorized", 408: "request_timeout", 413: "payload_too_large",
            415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}  # fmt: skip


@dataclass
class Runtime:
    """Long-lived resources of one application instance (opened and closed by the lifespan)."""

    settings: Settings
    keys: AccessKeys
    store: Store
    writer: BatchWriter
    delivery: Delivery | None
    """The export loop of this process; None when export processes do the exporting."""
    metrics: Metrics
    limits: RateLimits
    tracer: Tracer
    tracer_provider: TracerProvider | None = None
    stopping: bool = False
    in_progress: int = 0
    started_ns: int = field(default_factory=time.time_ns)


def build_runtime(settings: Settings, registry: CollectorRegistry | None = None) -> Runtime:
    """Create (but do not open or start) the store, the export loop (unless export processes do it) and the rest."""
    store = build_store(settings)
    metrics = Metrics(store, registry)
    delivery = build_delivery(settings, store, metrics) if not settings.export_processes else None
    limits = {DEFAULT_TENANT: (settings.rate_limit_runs_per_second, settings.rate_limit_burst)}
    limits.update({t.name: (t.rate_limit_runs_per_second, t.rate_limit_burst) for t in settings.tenants})
    tracer, provider = tracer_for(settings)
    if delivery is not None:
        delivery.tracer = tracer
    keys = AccessKeys.from_settings(settings)
    writer = BatchWriter(store)
    return Runtime(settings, keys, store, writer, delivery, metrics, RateLimits(limits), tracer, provider)


def _runtime(request: Request[Any, Any, State]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@post(
    "/v1/traces",
    status_code=200,
    media_type=MediaType.JSON,
    summary="Ingest a batch of Dynamiq runs",
    description="Drop-in for Dynamiq's trace collector. A 200 means the batch is durably stored.",
    operation_class=TracesOperation,
    responses=ERROR_RESPONSES,
)
async def ingest(request: Request[Any, Any, State]) -> Accepted:
    """Check, validate, store durably, answer. Export happens later, from the store."""
    runtime = _runtime(request)
    # Not uuid4: os.urandom releases the interpreter lock, and taking it back can wait a switch
    # interval (5 ms) behind the export thread. A request id needs to be unique, not unpredictable.
    request_id = request.headers.get("x-request-id") or f"{random.getrandbits(128):032x}"
    seen = _Seen()
    with runtime.tracer.start_as_current_span("ingest", kind=SpanKind.SERVER) as span:
        try:
            await _ingest(request, runtime, seen)
        except ApiError as exc:
            span.set_attributes({"http.response.status_code": exc.status, "dynamiq_otel.runs": seen.runs})
            _refused(runtime, request_id, seen.tenant, seen.runs, exc)
            raise
        span.set_attributes({"http.response.status_code": 200, "dynamiq_otel.runs": seen.runs,
                             "dynamiq_otel.tenant": seen.tenant or ""})  # fmt: skip
    _count(runtime, seen.tenant, seen.runs, 200)
    log.debug("batch accepted", extra={"request_id": request_id, "tenant": seen.tenant, "runs": seen.runs})
    return Accepted()


@dataclass
class _Seen:
    """What is known about a batch so far: filled in by ``_ingest`` as each check passes."""

    tenant: str | None = None
    runs: int = 0


def _refused(runtime: Runtime, request_id: str, tenant: str | None, runs: int, exc: ApiError) -> None:
    _count(runtime, tenant, runs, exc.status)
    log.info("batch refused", extra={"request_id": request_id, "tenant": tenant, "status": exc.status,
                                     "runs": runs, "problems": len(exc.details or {})})  # fmt: skip


def _count(runtime: Runtime, tenant: str | None, runs: int, status: int) -> None:
    outcome = "accepted" if status == 200 else "rejected"
    name = tenant or "unknown"
    runtime.metrics.batches_received.labels(outcome, _REASONS.get(status, "ok"), name).inc()
    runtime.metrics.runs_received.labels(outcome, name).inc(runs)


async def _ingest(request: Request[Any, Any, State], runtime: Runtime, seen: _Seen) -> None:
    settings = runtime.settings
    if runtime.stopping:
        raise ApiError(503, {"service": "shutting down; retry"}, retry_after=RETRY_AFTER_UNAVAILABLE_S)
    headers = request.headers
    tenant = runtime.keys.tenant_of(headers.get("authorization"))
    if tenant is None:
        raise ApiError(401)
    seen.tenant = tenant
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise ApiError(415, {"Content-Type": "must be application/json"})
    try:
        async with asyncio.timeout(settings.request_read_timeout):  # lighter than anyio's cancel scope
            body = await read_body(
                request.stream(),
                headers.get("content-length"),
                headers.get("content-encoding"),
                settings.max_body_bytes,
            )
    except TimeoutError:
        raise ApiError(
            408,
            {"input": f"body not received within {settings.request_read_timeout:g}s"},
            headers={"Connection": "close"},
        ) from None
    # Admission: a body that has arrived is validated and stored only while fewer than
    # max_concurrent_requests others are (a slow upload holds no slot; an overload is refused at once).
    if runtime.in_progress >= settings.max_concurrent_requests:
        raise ApiError(503, {"service": "too many batches in progress; retry"}, retry_after=RETRY_AFTER_BUSY_S)
    runtime.in_progress += 1
    try:
        await _validate_and_store(runtime, body, tenant, seen)
    finally:
        runtime.in_progress -= 1


async def _validate_and_store(runtime: Runtime, body: bytes, tenant: str, seen: _Seen) -> None:
    settings = runtime.settings
    try:
        runs = check_batch(
            body, accept_unfinished=settings.accept_unfinished_runs, max_runs=settings.max_runs_per_batch
        )
    except InvalidBatch as exc:
        raise ApiError(400, exc.details) from None
    except TooManyRuns as exc:
        seen.runs = int(exc.args[0]) if exc.args else 0
        raise ApiError(413, {"runs": f"must hold at most {settings.max_runs_per_batch} runs"}) from None
    seen.runs = runs
    wait = runtime.limits.retry_after(tenant, runs)
    if wait is not None:
        raise ApiError(429, {"runs": f"rate limit of tenant {tenant!r} reached"}, retry_after=wait)
    await _store(runtime, body, runs, tenant)


async def _store(runtime: Runtime, body: bytes, runs: int, tenant: str) -> None:
    try:
        await asyncio.wrap_future(runtime.writer.submit(body, runs, tenant))
    except StoreFull as exc:
        log.warning("store full, batch refused with 503: %s", exc)
        raise ApiError(503, {"store": "full; retry later"}, retry_after=RETRY_AFTER_UNAVAILABLE_S) from None
    except StoreUnavailable as exc:
        log.error("store write failed, batch refused with 503: %s", exc)
        raise ApiError(
            503, {"store": "cannot write safely; retry later"}, retry_after=RETRY_AFTER_UNAVAILABLE_S
        ) from None
    if runtime.delivery is not None:
        runtime.delivery.notify()


@get("/healthz", media_type=MediaType.JSON, summary="Liveness: 200 once batches can be accepted")
async def healthz() -> dict[str, str]:
    """Answers as soon as the lifespan has opened the store, i.e. when batches can be accepted."""
    return {"status": "ok"}


@get(
    "/readyz",
    media_type=MediaType.JSON,
    summary="Readiness: the store is writable and below its limits",
    responses={503: ERROR_RESPONSES[503]},
)
async def readyz(request: Request[Any, Any, State]) -> Response[dict[str, Any]]:
    """503 while stopping, when the store is at a limit or cannot be read, or (if configured) when no
    export has succeeded for ``ready_export_max_age`` seconds while batches wait."""
    runtime = _runtime(request)
    problems = await to_thread.run_sync(_readiness_problems, runtime)
    if problems:
        return error_response(503, problems, retry_after=RETRY_AFTER_UNAVAILABLE_S)
    return Response({"status": "ready"})


def _readiness_problems(runtime: Runtime) -> dict[str, str]:
    if runtime.stopping:
        return {"service": "shutting down"}
    try:
        stats = runtime.store.stats()
        runtime.store.check_writable()
    except StoreUnavailable as exc:
        return {"store": f"not writable: {exc}"}
    store = runtime.store
    if stats.batches >= store.max_batches or stats.bytes >= store.max_bytes:
        return {"store": f"full ({stats.batches} batches, {stats.bytes} bytes waiting)"}
    free = shutil.disk_usage(store.path.parent).free
    if free < runtime.settings.max_body_bytes:  # a write lock writes nothing: look at the space itself
        return {"store": f"disk nearly full ({free} bytes free, batches may need {runtime.settings.max_body_bytes})"}
    max_age = runtime.settings.ready_export_max_age
    if max_age > 0 and stats.batches > 0:
        last = max(stats.last_ack_ns, runtime.started_ns)  # any export thread or process of this store
        if time.time_ns() - last > max_age * 1e9:
            return {"exporter": f"no export succeeded in the last {max_age:g}s"}
    return {}


@get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8", summary="Prometheus metrics")
async def metrics(request: Request[Any, Any, State]) -> bytes:
    """Prometheus text exposition."""
    runtime = _runtime(request)
    return await to_thread.run_sync(exposition, runtime.metrics)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Litestar:
    """The application for ``settings``. Nothing is opened until its lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = build_runtime(settings, registry)
        await to_thread.run_sync(runtime.store.open)
        runtime.writer.start()
        if runtime.delivery is not None:
            runtime.delivery.start()
        app.state.runtime = runtime
        # Everything built so far lives as long as the process: move it out of the collector's sight,
        # so a full collection (triggered by the many short-lived objects of parsing and mapping) does
        # not scan it each time. 22-run batches at half load: ingest p99 13-18 ms -> 7-8 ms.
        gc.freeze()
        try:
            yield
        finally:
            runtime.stopping = True
            await to_thread.run_sync(runtime.writer.stop)
            if runtime.delivery is not None:
                await to_thread.run_sync(runtime.delivery.stop, settings.shutdown_grace)
            runtime.store.close()
            if runtime.tracer_provider is not None:
                await to_thread.run_sync(runtime.tracer_provider.shutdown)

    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS OFF: any client can post traces. Use this for local trials only.")
    return Litestar(
        route_handlers=[ingest, healthz, readyz, metrics],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=None,
        openapi_config=OpenAPIConfig(title="dynamiq-otel", version=package_version(), path="/schema"),
        logging_config=None,  # logs go through adapter.logs (JSON lines), configured by the CLI
        debug=False,
    )


def begin_shutdown(app: Litestar) -> None:
    """Answer 503 to new batches from now on (called on SIGTERM, before the server drains)."""
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.stopping = True
