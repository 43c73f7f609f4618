"""The Litestar application: ``create_app(settings)``, its lifespan and its routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from anyio import to_thread
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State

from adapter.auth import AccessKeys
from adapter.body import read_body
from adapter.delivery import Delivery, DeliveryConfig
from adapter.errors import EXCEPTION_HANDLERS, ApiError
from adapter.otlp import TransportConfig, make_transport
from adapter.store import Store, StoreFull, StoreUnavailable
from adapter.validation import InvalidBatch, TooManyRuns, parse_batch
from config import Settings
from config.loading import reveal
from mapping import MappingOptions, build_resource

log = logging.getLogger("dynamiq_otel")

RETRY_AFTER_FULL_S = 5
"""Retry-After sent with 503 when the store is full or cannot be written."""
_JSON_TYPES = ("application/json",)


def package_version() -> str:
    """The installed version of dynamiq-otel."""
    try:
        return version("dynamiq-otel")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class Runtime:
    """Long-lived resources of one application instance (opened and closed by the lifespan)."""

    settings: Settings
    keys: AccessKeys
    store: Store
    delivery: Delivery


def mapping_options(settings: Settings) -> MappingOptions:
    """The translator's options from the settings."""
    return MappingOptions(
        dynamiq_attributes=settings.attributes_dynamiq,
        genai_attributes=settings.attributes_genai,
        openinference_attributes=settings.attributes_openinference,
        capture_content=settings.capture_content,
        max_attribute_length=settings.max_attribute_length,
        redact_keys=tuple(fragment.lower() for fragment in settings.redact_keys),
        status_ok_on_success=settings.status_ok_on_success,
        semconv_span_names=settings.span_names == "semconv",
    )


def transport_config(settings: Settings) -> TransportConfig:
    """The OTLP transport's configuration from the settings."""
    return TransportConfig(
        protocol=settings.otlp_protocol,
        endpoint=settings.traces_endpoint,
        headers=tuple(settings.otlp_headers.items()),
        timeout_s=settings.otlp_timeout / 1000,
        gzip=settings.otlp_compression == "gzip",
        insecure=settings.otlp_insecure,
        certificate=str(settings.otlp_certificate) if settings.otlp_certificate else None,
        client_key=str(settings.otlp_client_key) if settings.otlp_client_key else None,
        client_certificate=str(settings.otlp_client_certificate) if settings.otlp_client_certificate else None,
    )


def build_runtime(settings: Settings) -> Runtime:
    """Create (but do not start) the store, the transport and the export worker."""
    store = Store(
        settings.store_path,
        max_bytes=settings.store_max_bytes,
        max_batches=settings.store_max_batches,
        sync=settings.store_sync,
    )
    resource = build_resource(settings.service_name, settings.effective_project_name, settings.resource_attributes)
    delivery = Delivery(
        store,
        make_transport(transport_config(settings)),
        mapping_options(settings),
        resource,
        DeliveryConfig(
            max_batches_per_request=settings.export_max_batches_per_request,
            max_request_bytes=settings.export_max_request_bytes,
            initial_backoff_s=settings.retry_initial_backoff,
            max_backoff_s=settings.retry_max_backoff,
            lease_s=2 * settings.otlp_timeout / 1000 + 30,
            scope_version=package_version(),
        ),
    )
    keys = AccessKeys(reveal(settings.access_keys), disabled=settings.auth_disabled)
    return Runtime(settings, keys, store, delivery)


@post("/v1/traces", status_code=200, media_type=MediaType.JSON, summary="Ingest a batch of Dynamiq runs")
async def ingest(request: Request[Any, Any, State]) -> Response[dict[str, str]]:
    """Validate a batch, store it durably, answer. Export happens later, from the store."""
    runtime: Runtime = request.app.state.runtime
    if not runtime.keys.check(request.headers.get("authorization")):
        raise ApiError(401)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise ApiError(415, {"Content-Type": "must be application/json"})
    settings = runtime.settings
    body = await read_body(
        request.stream(),
        request.headers.get("content-length"),
        request.headers.get("content-encoding"),
        settings.max_body_bytes,
    )
    try:
        runs = parse_batch(
            body, accept_unfinished=settings.accept_unfinished_runs, max_runs=settings.max_runs_per_batch
        )
    except InvalidBatch as exc:
        raise ApiError(400, exc.details) from None
    except TooManyRuns:
        raise ApiError(413, {"runs": f"must hold at most {settings.max_runs_per_batch} runs"}) from None
    try:
        await to_thread.run_sync(runtime.store.put, body, len(runs))
    except StoreFull as exc:
        log.warning("store full, batch refused with 503: %s", exc)
        raise ApiError(503, {"store": "full; retry later"}, retry_after=RETRY_AFTER_FULL_S) from None
    except StoreUnavailable as exc:
        log.error("store write failed, batch refused with 503: %s", exc)
        raise ApiError(503, {"store": "cannot write safely; retry later"}, retry_after=RETRY_AFTER_FULL_S) from None
    runtime.delivery.notify()
    return Response({"message": "ok"})


@get("/healthz", media_type=MediaType.JSON, summary="Liveness: 200 once batches can be accepted")
async def healthz() -> dict[str, str]:
    """Answers as soon as the lifespan has opened the store, i.e. when batches can be accepted."""
    return {"status": "ok"}


def create_app(settings: Settings) -> Litestar:
    """The application for ``settings``. Nothing is opened until its lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        await to_thread.run_sync(runtime.store.open)
        runtime.delivery.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            await to_thread.run_sync(runtime.delivery.stop, settings.shutdown_grace)
            runtime.store.close()

    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS OFF: any client can post traces. Use this for local trials only.")
    return Litestar(
        route_handlers=[ingest, healthz],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=None,
        debug=False,
    )
