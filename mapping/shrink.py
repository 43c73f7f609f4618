"""Shrinking a span that alone would pass the export request size limit."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mapping.values import TRUNCATION_MARK

SHRUNK = "dynamiq.shrunk"
"""True on a span whose largest attributes were cut to fit the export request size limit."""

_FLOOR = 256


def _largest_string(span: Span) -> AnyValue | None:
    candidates: list[KeyValue] = list(span.attributes)
    for event in span.events:
        candidates.extend(event.attributes)
    best: AnyValue | None = None
    for kv in candidates:
        length = len(kv.value.string_value) if kv.value.WhichOneof("value") == "string_value" else 0
        if length > _FLOOR + len(TRUNCATION_MARK) and (best is None or length > len(best.string_value)):
            best = kv.value
    return best


def shrink_span(span: Span, max_bytes: int) -> bool:
    """Cut the span's largest string attributes (halving each time) until it fits ``max_bytes``.

    Cut values end with the truncation mark and the span gets ``dynamiq.shrunk = true``. Returns
    whether the span fits now (a span made of thousands of small attributes may still not).
    """
    if span.ByteSize() <= max_bytes:
        return True
    span.attributes.add(key=SHRUNK, value=AnyValue(bool_value=True))
    while span.ByteSize() > max_bytes:
        value = _largest_string(span)
        if value is None:
            return False
        excess = span.ByteSize() - max_bytes
        text = value.string_value
        keep = max(_FLOOR, min(len(text) // 2, len(text) - excess - len(TRUNCATION_MARK) * 3))
        value.string_value = text[:keep] + TRUNCATION_MARK
    _fix_mime_types(span)
    return True


def _fix_mime_types(span: Span) -> None:
    """A cut JSON ``input.value`` / ``output.value`` is no longer JSON: label it text/plain."""
    cut = {kv.key for kv in span.attributes if kv.value.string_value.endswith(TRUNCATION_MARK)}
    for kv in span.attributes:
        if kv.key.endswith(".mime_type") and kv.key.replace(".mime_type", ".value") in cut:
            kv.value.string_value = "text/plain"
