"""The OpenAPI description of /v1/traces: the request body and the exact error envelopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from adapter.errors import MESSAGES
from mapping import RUN_STATUSES, RUN_TYPES


@dataclass
class ErrorDetail:
    """The inside of the envelope."""

    code: str
    message: str
    details: dict[str, str] | None = None


@dataclass
class ErrorEnvelope:
    """Every non-200 answer: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorDetail


@dataclass
class Accepted:
    """The 200 answer."""

    message: str = "ok"


def _string(**extra: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, **extra)


_TIME = _string(format="date-time", description="RFC 3339; without an offset it is UTC")
RUN_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["id", "name", "type", "trace_id", "source_id", "start_time", "end_time", "status"],
    properties={
        "id": _string(min_length=1),
        "name": _string(min_length=1),
        "type": _string(enum=list(RUN_TYPES)),
        "trace_id": _string(min_length=1, description="a UUID, or any string (then hashed)"),
        "source_id": _string(min_length=1),
        "session_id": Schema(one_of=[_string(), Schema(type=OpenAPIType.NULL)]),
        "parent_run_id": Schema(one_of=[_string(), Schema(type=OpenAPIType.NULL)]),
        "start_time": _TIME,
        "end_time": _TIME,
        "status": _string(enum=list(RUN_STATUSES)),
        "input": Schema(description="kept as sent"),
        "output": Schema(description="kept as sent"),
        "metadata": Schema(type=OpenAPIType.OBJECT, description="kept as sent"),
        "error": Schema(description='{"message", "traceback"} or null'),
        "executions": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
        "tags": Schema(type=OpenAPIType.ARRAY, items=_string()),
    },
)
BATCH_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["runs"],
    properties={"runs": Schema(type=OpenAPIType.ARRAY, items=RUN_SCHEMA, min_items=1)},
)


@dataclass
class TracesOperation(Operation):
    """Operation of POST /v1/traces with its request body (the handler reads the raw body itself).

    Litestar constructs the operation with ``request_body=None`` (the handler has no ``data``
    parameter), which overrides any field default: the body is filled in after construction.
    """

    def __post_init__(self) -> None:
        if self.request_body is None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=BATCH_SCHEMA)},
                required=True,
                description="A batch of Dynamiq runs, as the Dynamiq SDK's DynamiqTracingClient sends it.",
            )


ERROR_RESPONSES = {
    status: ResponseSpec(data_container=ErrorEnvelope, description=f"{code}: {message}", generate_examples=False)
    for status, (code, message) in MESSAGES.items()
    if status not in (404, 405)
}
"""The error answers of POST /v1/traces, for the OpenAPI document."""
