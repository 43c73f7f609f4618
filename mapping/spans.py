"""Compose spans: one per run (plus one per retry attempt), from the attribute builders."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mapping import attrs_dynamiq, attrs_genai, attrs_openinference
from mapping.ids import canonical_id, span_id_bytes, trace_id_bytes
from mapping.kinds import genai_operation, span_kind
from mapping.model import MappingOptions, Run
from mapping.status import Failure, error_type, exception_attributes, status_of
from mapping.timestamps import parse_timestamp_ns
from mapping.values import Attributes, add_attribute_map, add_attributes, cap, redact
from mapping.view import RunView, view_of
from mapping.wire import encode_attribute_map

TRUNCATED = "dynamiq.truncated_attributes"
"""Keys of the attributes that were cut to ``max_attribute_length``."""
UNFINISHED = "dynamiq.run.unfinished"
"""True on a run that arrived without end_time/status and was closed out."""
ATTEMPT = "dynamiq.execution.attempt"
"""1-based number of a retry-attempt span."""
SAMPLED = 0x01
"""W3C trace flags of every span: sampled."""


def runs_to_spans(runs: Sequence[Run], options: MappingOptions) -> list[Span]:
    """The spans of a batch: every run once, in order, followed by its attempt spans."""
    spans: list[Span] = []
    limit = options.max_attribute_length
    for span, attributes in _bare_spans(runs, options):
        cut = add_attribute_map(span.attributes, attributes, limit)
        if cut:
            add_attributes(span.attributes, [(TRUNCATED, cut)], limit)
        spans.append(span)
    return spans


def runs_to_span_bytes(runs: Sequence[Run], options: MappingOptions) -> list[bytes]:
    """``runs_to_spans`` serialised span by span (what export sends), without an attribute message each.

    ``Span.FromString(data)`` of each item equals the span of ``runs_to_spans``; the attributes follow
    the span's other fields on the wire (``mapping.wire``).
    """
    out: list[bytes] = []
    limit = options.max_attribute_length
    for span, attributes in _bare_spans(runs, options):
        encoded, cut = encode_attribute_map(attributes, limit)
        data = span.SerializeToString() + encoded
        if cut:
            data += encode_attribute_map({TRUNCATED: cut}, limit)[0]
        out.append(data)
    return out


def _bare_spans(runs: Sequence[Run], options: MappingOptions) -> Iterator[tuple[Span, Attributes]]:
    """Every span of the batch without its attributes, and those attributes, for the caller to add."""
    fallback_end = _fallback_end_times(runs)
    links = _dependency_index(runs)
    for run in runs:
        yield from _spans_of_run(run, options, fallback_end.get(run.id), links)


def _spans_of_run(
    run: Run, options: MappingOptions, fallback_end: int | None, links: Mapping[tuple[str, str], str]
) -> Iterator[tuple[Span, Attributes]]:
    view = view_of(run, options)
    trace_id = trace_id_bytes(run.trace_id)
    span = Span(
        trace_id=trace_id,
        span_id=span_id_bytes(run.id),
        name=cap(_span_name(view), options.max_attribute_length)[0],
        kind=span_kind(view.group),  # type: ignore[arg-type]
        start_time_unix_nano=run.start_ns,
        end_time_unix_nano=run.end_ns if run.end_ns is not None else (fallback_end or run.start_ns),
        flags=SAMPLED,
    )
    parent = _parent_id(run)
    if parent is not None:
        span.parent_span_id = span_id_bytes(parent)
    status, failure = status_of(run.status, view.error, options.status_ok_on_success)
    status.message = cap(status.message, options.max_attribute_length)[0]
    span.status.CopyFrom(status)
    attributes = _attributes(view)
    kind = error_type(run.status, failure)
    if kind:
        attributes["error.type"] = kind
    if run.status is None:
        attributes[UNFINISHED] = True
        span.status.message = "unfinished: the run had no end_time/status when the batch was sent"
    if failure is not None and run.status == "failed":
        _add_exception_event(span, failure, options.max_attribute_length)
    for dependency in _dependencies(view, links):
        span.links.add(trace_id=trace_id, span_id=span_id_bytes(dependency), flags=SAMPLED)
    yield span, attributes
    if len(run.executions) > 1:
        yield from _attempt_spans(run, span, options)


def _parent_id(run: Run) -> str | None:
    parent = run.parent_run_id
    if not parent or canonical_id(parent) == canonical_id(run.id):
        return None
    return parent


def _span_name(view: RunView) -> str:
    name = view.run.name or view.run.type
    if not view.options.semconv_span_names:
        return name
    operation = genai_operation(view.run.type, view.group)
    if operation == "chat":
        model = view.node.get("model")
        return f"chat {model}" if isinstance(model, str) else f"chat {name}"
    return f"{operation} {name}" if operation else name


def _attributes(view: RunView) -> Attributes:
    """The run's attributes of every enabled convention; a later convention's value of a key wins."""
    attributes: Attributes = {}
    if view.options.dynamiq_attributes:
        attrs_dynamiq.attributes_from_run(view, attributes)
    if view.options.genai_attributes:
        attrs_genai.attributes_from_run(view, attributes)
    if view.options.openinference_attributes:
        attrs_openinference.attributes_from_run(view, attributes)
    return attributes


def _add_exception_event(span: Span, failure: Failure, limit: int) -> None:
    event = span.events.add(name="exception", time_unix_nano=span.end_time_unix_nano)
    add_attributes(event.attributes, exception_attributes(failure), limit)


def _attempt_spans(run: Run, parent: Span, options: MappingOptions) -> Iterator[tuple[Span, Attributes]]:
    """One child span per execution attempt, when the run was retried (more than one attempt)."""
    for number, execution in enumerate(run.executions, start=1):
        if not isinstance(execution, dict):
            continue
        start = _time_of(execution.get("start_time")) or parent.start_time_unix_nano
        end = _time_of(execution.get("end_time")) or parent.end_time_unix_nano
        attempt_id = execution.get("id")
        span = Span(
            trace_id=parent.trace_id,
            span_id=span_id_bytes(str(attempt_id) if attempt_id else f"{run.id}#attempt-{number}"),
            parent_span_id=parent.span_id,
            name=f"{parent.name} (attempt {number})",
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start,
            end_time_unix_nano=max(end, start),
            flags=SAMPLED,
        )
        status_text = execution.get("status") if isinstance(execution.get("status"), str) else None
        error = redact(execution.get("error"), options.redact_keys)
        status, failure = status_of(status_text, error, options.status_ok_on_success)
        status.message = cap(status.message, options.max_attribute_length)[0]
        span.status.CopyFrom(status)
        attributes: Attributes = {ATTEMPT: number, attrs_dynamiq.RUN_STATUS: status_text or "unfinished"}
        if attempt_id:
            attributes["dynamiq.execution.id"] = str(attempt_id)
        if options.openinference_attributes:
            attributes[attrs_openinference.SPAN_KIND] = "CHAIN"
        kind = error_type(status_text, failure)
        if kind:
            attributes["error.type"] = kind
        if failure is not None and status_text == "failed":
            _add_exception_event(span, failure, options.max_attribute_length)
        yield span, attributes


def _time_of(value: Any) -> int | None:
    return parse_timestamp_ns(value) if isinstance(value, str) else None


def _fallback_end_times(runs: Sequence[Run]) -> dict[str, int]:
    """End times for unfinished runs: the closest finished ancestor's end, else the batch's latest time."""
    unfinished = [run for run in runs if run.end_ns is None]
    if not unfinished:
        return {}
    by_id = {canonical_id(run.id): run for run in runs}
    latest = max(max(run.start_ns, run.end_ns or 0) for run in runs)
    result: dict[str, int] = {}
    for run in unfinished:
        end = latest
        seen = {canonical_id(run.id)}
        parent = by_id.get(canonical_id(run.parent_run_id)) if run.parent_run_id else None
        while parent is not None and canonical_id(parent.id) not in seen:
            if parent.end_ns is not None:
                end = parent.end_ns
                break
            seen.add(canonical_id(parent.id))
            parent = by_id.get(canonical_id(parent.parent_run_id)) if parent.parent_run_id else None
        result[run.id] = max(end, run.start_ns)
    return result


def _dependency_index(runs: Sequence[Run]) -> dict[tuple[str, str], str]:
    """(trace id, node id) -> run id, to turn ``run_depends`` node references into span links."""
    index: dict[tuple[str, str], str] = {}
    for run in runs:
        node = run.metadata.get("node") if isinstance(run.metadata, dict) else None
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            index.setdefault((run.trace_id, node["id"]), run.id)
    return index


def _dependencies(view: RunView, index: Mapping[tuple[str, str], str]) -> Iterator[str]:
    depends = view.metadata.get("run_depends")
    if not isinstance(depends, list):
        return
    for dependency in depends:
        node = dependency.get("node") if isinstance(dependency, dict) else None
        node_id = node.get("id") if isinstance(node, dict) else None
        run_id = index.get((view.run.trace_id, node_id)) if isinstance(node_id, str) else None
        if run_id is not None and run_id != view.run.id:
            yield run_id
