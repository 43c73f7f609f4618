"""Map hand-made runs and read the spans back as plain data."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from adapter.validation import parse_batch
from mapping import MappingOptions, runs_to_spans
from tests.otlp_receiver import attributes_to_dict


def map_runs(*runs: dict[str, Any], options: MappingOptions | None = None) -> list[Span]:
    """Validate ``runs`` as the ingest step does, then map them."""
    body = orjson.dumps({"runs": list(runs)})
    parsed = parse_batch(body, accept_unfinished=True, max_runs=100_000)
    return runs_to_spans(parsed, options or MappingOptions())


def attrs(span: Span) -> dict[str, Any]:
    """The span's attributes as a dict."""
    return attributes_to_dict(span.attributes)
