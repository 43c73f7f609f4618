"""The in-process floor, on one core: what the same bodies cost with nothing but the essential work.

Rows (per run, single thread, the benchmark's own fresh-id bodies):

* ``orjson.loads`` alone;
* ``pydantic model_validate_json`` and ``orjson.loads + model_validate`` of a small pydantic model of
  a Dynamiq run (``RunModel`` below: the contract's required fields, typed);
* **floor**: ``orjson.loads + model_validate + direct protobuf .add() + SerializeToString`` — one
  span per run with the same kinds of content the service emits (ids, times, status, node
  identity, node config / metadata / input / output as JSON text), written as straight-line code;
* **textbook**: the same attributes through the OpenTelemetry SDK (``ReadableSpan`` +
  ``encode_spans`` + ``SerializeToString``), what an exporter-based design pays;
* the service's own pieces: ``adapter.validation.parse_batch`` (orjson + hand validation: what the
  export's read-back does), ``check_batch`` (ingest's verdict: msgspec, the fields the rules read) and
  ``parse_batch + mapping.runs_to_span_bytes + RequestEncoder`` (the service's CPU path without
  HTTP, SQLite or the network).

``measure_all_cores`` runs the floor row in one process per core at once: what the machine's cores give
together, measured rather than taken as that many times one core.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SdkScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status as SdkStatus
from opentelemetry.trace.status import StatusCode as SdkStatusCode
from pydantic import BaseModel, ConfigDict, Field

from adapter.validation import check_batch, parse_batch
from mapping import MappingOptions, RequestEncoder, build_resource, runs_to_span_bytes


class RunModel(BaseModel):
    """A Dynamiq run as the contract requires it (the floor's validation step)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    type: Literal["workflow", "flow", "node"]
    trace_id: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    session_id: str | None = None
    parent_run_id: str | None = None
    start_time: datetime
    end_time: datetime
    status: Literal["succeeded", "failed", "skipped", "canceled"]
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] | None = None
    error: Any = None
    executions: list[Any] | None = None
    tags: list[Any] | None = None


class BatchModel(BaseModel):
    """The request body."""

    runs: list[RunModel] = Field(min_length=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_OI_KIND = {"llms": "LLM", "agents": "AGENT", "tools": "TOOL", "embedders": "EMBEDDING", "retrievers": "RETRIEVER"}
_GENAI_OP = {"llms": "chat", "agents": "invoke_agent", "tools": "execute_tool", "embedders": "embeddings"}
_OK, _ERROR = Status.STATUS_CODE_UNSET, Status.STATUS_CODE_ERROR


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICRO * 1000


def _trace_id(value: str) -> bytes:
    try:
        return uuid.UUID(value).bytes
    except ValueError:
        return value.encode()[:16].ljust(16, b"\x01")


def _span_id(value: str) -> bytes:
    try:
        return uuid.UUID(value).bytes[8:]
    except ValueError:
        return value.encode()[:8].ljust(8, b"\x01")


def _attributes(run: RunModel) -> dict[str, Any]:
    """The span's attributes: the kinds of content the service emits, without its refinements."""
    metadata = dict(run.metadata or {})
    node = metadata.pop("node", None) or {}
    group = node.get("group") if isinstance(node, dict) else None
    attrs: dict[str, Any] = {
        "dynamiq.run.id": run.id,
        "dynamiq.run.type": run.type,
        "dynamiq.run.status": run.status,
        "dynamiq.source.id": run.source_id,
        "dynamiq.trace.id": run.trace_id,
    }
    if run.session_id:
        attrs["dynamiq.session.id"] = run.session_id
        attrs["session.id"] = run.session_id
    if run.parent_run_id:
        attrs["dynamiq.run.parent_id"] = run.parent_run_id
    if isinstance(node, dict) and node:
        for key in ("id", "name", "type", "group"):
            if isinstance(node.get(key), str):
                attrs[f"dynamiq.node.{key}"] = node[key]
        attrs["dynamiq.node.config"] = orjson.dumps(node, option=orjson.OPT_SORT_KEYS).decode()
    if metadata:
        attrs["dynamiq.metadata"] = orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS).decode()
    attrs["dynamiq.executions.count"] = len(run.executions or ())
    attrs["openinference.span.kind"] = _OI_KIND.get(group or "", "CHAIN")
    if group in _GENAI_OP:
        attrs["gen_ai.operation.name"] = _GENAI_OP[group]
    if run.input is not None:
        attrs["input.value"] = orjson.dumps(run.input, option=orjson.OPT_SORT_KEYS).decode()
        attrs["input.mime_type"] = "application/json"
    if run.output is not None:
        attrs["output.value"] = orjson.dumps(run.output, option=orjson.OPT_SORT_KEYS).decode()
        attrs["output.mime_type"] = "application/json"
    if run.error is not None:
        attrs["error.type"] = str(run.error.get("type", "error")) if isinstance(run.error, dict) else "error"
    return attrs


def _set(span: Span, attrs: dict[str, Any]) -> None:
    add = span.attributes.add
    for key, value in attrs.items():
        kv = add(key=key)
        if isinstance(value, str):
            kv.value.string_value = value
        elif isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.double_value = float(value)


def floor_request(body: bytes) -> bytes:
    """orjson.loads + model_validate + direct protobuf ``.add()`` + serialise."""
    batch = BatchModel.model_validate(orjson.loads(body))
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "floor"
    add = scope_spans.spans.add
    for run in batch.runs:
        span = add(
            trace_id=_trace_id(run.trace_id),
            span_id=_span_id(run.id),
            name=run.name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=_ns(run.start_time),
            end_time_unix_nano=_ns(run.end_time),
            flags=1,
        )
        if run.parent_run_id:
            span.parent_span_id = _span_id(run.parent_run_id)
        if run.status == "failed":
            span.status.code = _ERROR
        _set(span, _attributes(run))
    return request.SerializeToString()


_SDK_RESOURCE = SdkResource({"service.name": "bench"})
_SDK_SCOPE = SdkScope("textbook")


def textbook_request(body: bytes) -> bytes:
    """The same spans the textbook way: ReadableSpan + the SDK's OTLP encoder + serialise."""
    return encode_spans(textbook_spans(body)).SerializeToString()


def textbook_spans(body: bytes) -> list[ReadableSpan]:
    """orjson.loads + model_validate, then one SDK ``ReadableSpan`` per run (the textbook bridge's span)."""
    batch = BatchModel.model_validate(orjson.loads(body))
    spans = []
    for run in batch.runs:
        trace_id = int.from_bytes(_trace_id(run.trace_id), "big")
        context = SpanContext(trace_id, int.from_bytes(_span_id(run.id), "big"), False, TraceFlags(1))
        parent = (
            SpanContext(trace_id, int.from_bytes(_span_id(run.parent_run_id), "big"), False, TraceFlags(1))
            if run.parent_run_id
            else None
        )
        status = SdkStatus(SdkStatusCode.ERROR) if run.status == "failed" else SdkStatus(SdkStatusCode.UNSET)
        spans.append(
            ReadableSpan(
                run.name,
                context=context,
                parent=parent,
                resource=_SDK_RESOURCE,
                attributes=_attributes(run),
                kind=SpanKind.INTERNAL,
                status=status,
                start_time=_ns(run.start_time),
                end_time=_ns(run.end_time),
                instrumentation_scope=_SDK_SCOPE,
            )
        )
    return spans


_OPTIONS = MappingOptions()
_RESOURCE = build_resource("bench", "bench", {})


_ENCODER = RequestEncoder(_RESOURCE, "bench")


def service_request(body: bytes) -> bytes:
    """The service's CPU path in process: parse_batch + runs_to_span_bytes + RequestEncoder (as export does)."""
    runs = parse_batch(body, accept_unfinished=False, max_runs=1 << 30)
    return _ENCODER.encode(runs_to_span_bytes(runs, _OPTIONS))


def _parse_batch(body: bytes) -> object:
    return parse_batch(body, accept_unfinished=False, max_runs=1 << 30)


def _check_batch(body: bytes) -> object:
    return check_batch(body, accept_unfinished=False, max_runs=1 << 30)


ROWS: tuple[tuple[str, str, Callable[[bytes], object]], ...] = (
    ("orjson", "orjson.loads", orjson.loads),
    ("pydantic_json", "pydantic model_validate_json", BatchModel.model_validate_json),
    ("orjson_pydantic", "orjson.loads + model_validate", lambda body: BatchModel.model_validate(orjson.loads(body))),
    ("floor", "floor: orjson + model_validate + protobuf .add() + serialise", floor_request),
    ("textbook", "textbook: orjson + model_validate + ReadableSpan + encode_spans + serialise", textbook_request),
    ("parse_batch", "service adapter.validation.parse_batch (orjson + hand validation)", _parse_batch),
    ("check_batch", "service ingest: adapter.validation.check_batch (msgspec, the rules' fields only)", _check_batch),
    ("service_cpu", "service in process: parse_batch + runs_to_span_bytes + RequestEncoder", service_request),
)


@dataclass(frozen=True)
class FloorRow:
    key: str
    label: str
    us_per_run: float
    runs_per_s: float
    out_bytes_per_run: float


def measure(bodies: Sequence[bytes], runs_per_body: int, min_seconds: float = 0.5, repeats: int = 3) -> list[FloorRow]:
    """Median over ``repeats`` of the time per run of every row, each over at least ``min_seconds``
    (cycling through ``bodies``, at least one body per sample)."""
    rows = []
    for key, label, function in ROWS:
        function(bodies[0])  # warm up (imports, caches)
        samples = []
        for _ in range(repeats):
            done = 0
            started = time.perf_counter()
            while True:
                function(bodies[done % len(bodies)])
                done += 1
                elapsed = time.perf_counter() - started
                if elapsed >= min_seconds:
                    break
            samples.append(elapsed / (done * runs_per_body))
        per_run = statistics.median(samples)
        out = function(bodies[0])
        size = len(out) / runs_per_body if isinstance(out, bytes) else 0.0
        rows.append(FloorRow(key, label, per_run * 1e6, 1 / per_run, size))
    return rows


def _floor_copy(  # ready, results: a multiprocessing Barrier and Queue
    bodies: Sequence[bytes], runs_per_body: int, seconds: float, ready: Any, results: Any
) -> None:
    floor_request(bodies[0])  # warm up before the others start
    ready.wait()
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        floor_request(bodies[done % len(bodies)])
        done += 1
    results.put(done * runs_per_body / elapsed)


def measure_all_cores(bodies: Sequence[bytes], runs_per_body: int, copies: int, seconds: float) -> list[float]:
    """The floor row in ``copies`` processes at once, started together: each copy's runs per second."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(copies), context.Queue()
    workers = [
        context.Process(target=_floor_copy, args=(bodies, runs_per_body, seconds, ready, results))
        for _ in range(copies)
    ]
    for worker in workers:
        worker.start()
    try:
        rates = [float(results.get(timeout=seconds + 120)) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    return sorted(rates)
