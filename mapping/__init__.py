"""Pure Dynamiq -> OpenTelemetry translation.

Imports no web framework, exporter, disk, clock or environment: the same runs and options always
give byte-identical spans. ``runs_to_spans`` is the entry point, ``runs_to_span_bytes`` the same spans
serialised one by one; ``build_request`` (or, from serialised spans, ``RequestEncoder``) wraps spans
for export.
"""

from mapping.ids import span_id_bytes, trace_id_bytes
from mapping.model import RUN_STATUSES, RUN_TYPES, MappingOptions, Run
from mapping.resource import RequestEncoder, build_request, build_resource
from mapping.spans import runs_to_span_bytes, runs_to_spans
from mapping.timestamps import parse_timestamp_ns

__all__ = [
    "RUN_STATUSES",
    "RUN_TYPES",
    "MappingOptions",
    "RequestEncoder",
    "Run",
    "build_request",
    "build_resource",
    "parse_timestamp_ns",
    "runs_to_span_bytes",
    "runs_to_spans",
    "span_id_bytes",
    "trace_id_bytes",
]
