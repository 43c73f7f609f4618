"""The textbook bridge: the service as the OpenTelemetry SDK's documentation would have it built.

A Litestar app served by uvicorn like the service and the echo. ``POST /v1/traces`` validates the body
with pydantic (``orjson.loads`` + ``model_validate``, the floor's step), builds one SDK ``ReadableSpan``
per run with the floor's attributes, and hands them to the SDK's ``BatchSpanProcessor``, whose thread
exports them with the SDK's OTLP exporter (``encode_spans``) to ``TEXTBOOK_OTLP_ENDPOINT`` over
``TEXTBOOK_OTLP_PROTOCOL`` (grpc | http). No auth, no durable store, no dedupe: what it accepted lives in
memory until exported, and is lost if the process dies. Its queue holds ``TEXTBOOK_QUEUE`` spans (the
SDK's default is 2,048; the benchmark raises it so that nothing is dropped and every accepted span can
be counted as delivered), and the benchmark sets ``OTEL_BSP_SCHEDULE_DELAY`` to 200 ms (default 5 s) so
that the last spans of a window do not wait for the timer.
"""

from __future__ import annotations

import os

from litestar import Litestar, MediaType, Request, post
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from bench.floor import textbook_spans


def _exporter() -> SpanExporter:
    endpoint = os.environ.get("TEXTBOOK_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    if os.environ.get("TEXTBOOK_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


_PROCESSOR = BatchSpanProcessor(_exporter(), max_queue_size=int(os.environ.get("TEXTBOOK_QUEUE", "2048")))


@post("/v1/traces", status_code=200, media_type=MediaType.JSON)
async def ingest(request: Request) -> bytes:  # type: ignore[type-arg]
    for span in textbook_spans(await request.body()):
        _PROCESSOR.on_end(span)
    return b'{"message":"ok"}'


app = Litestar(
    route_handlers=[ingest], openapi_config=None, logging_config=None, debug=False, on_shutdown=[_PROCESSOR.shutdown]
)
