"""End to end: the real Dynamiq SDK -> the service (started with its CLI) -> a real OTLP receiver.

Checked on arrival, over gRPC and over HTTP/protobuf: one span per SDK run with the documented
ids, the SDK's parent links, the SDK's times to the microsecond, status and key attributes.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import RecordingReceiver, SpanRecord, attributes_to_dict
from tests.processes import run_sdk, running_service

pytestmark = pytest.mark.e2e

ACCESS_KEY = "e2e-access-key"
SCENARIOS = ["linear", "llm_usage", "agent_tools", "retry_fail", "skipped", "canceled", "async_run", "custom_ids"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _span_id(run_id: str) -> str:
    return hashlib.sha256(f"dynamiq-otel:span:{uuid.UUID(run_id)}".encode()).hexdigest()[:16]


def _trace_id(trace_id: str) -> str:
    try:
        return uuid.UUID(trace_id).hex
    except ValueError:
        return hashlib.sha256(f"dynamiq-otel:trace:{trace_id}".encode()).hexdigest()[:32]


def _ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _expected_runs(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_span_id(run["id"]): run for summary in summaries for run in summary["runs"]}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sdk_runs_arrive_as_spans(protocol: str, tmp_path: Path) -> None:
    with RecordingReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        settings = {"access_keys": [ACCESS_KEY], "otlp_protocol": protocol, "otlp_traces_endpoint": endpoint}
        with running_service(tmp_path, settings) as base_url:
            summaries = run_sdk(base_url, ACCESS_KEY, SCENARIOS)
            expected = _expected_runs(summaries)
            receiver.wait_until(
                lambda: expected.keys() <= {span.span_id for span in receiver.spans()},
                timeout=60,
                what=f"{len(expected)} run spans",
            )
        spans = {span.span_id: span for span in receiver.spans()}
        assert {request.transport for request in receiver.requests()} == {"grpc" if protocol == "grpc" else "http"}
    for span_id, run in expected.items():
        _check_span(spans[span_id], run)


def _check_span(record: SpanRecord, run: dict[str, Any]) -> None:
    span = record.span
    attributes = attributes_to_dict(span.attributes)
    where = f"{run['name']} ({run['id']})"
    assert record.trace_id == _trace_id(run["trace_id"]), where
    assert record.parent_span_id == (_span_id(run["parent_run_id"]) if run["parent_run_id"] else ""), where
    assert span.name == run["name"], where
    assert span.start_time_unix_nano == _ns(run["start_time"]), where
    assert span.end_time_unix_nano == _ns(run["end_time"]), where
    assert attributes["dynamiq.run.id"] == run["id"], where
    assert attributes["dynamiq.run.status"] == run["status"], where
    assert attributes["dynamiq.trace.id"] == run["trace_id"], where
    assert attributes["session.id"] == run["session_id"], where
    expected_code = 2 if run["status"] in ("failed", "canceled") else 0
    assert span.status.code == expected_code, where
    if run["status"] == "failed":
        assert span.status.message == (run["error_message"] or attributes["error.type"]), where
    kind = {"llms": "LLM", "agents": "AGENT", "tools": "TOOL"}.get(run.get("node_group") or "", "CHAIN")
    assert attributes["openinference.span.kind"] == kind, where
    usage = run.get("usage")
    if run.get("node_group") == "llms" and usage:
        assert attributes["llm.token_count.prompt"] == usage["prompt_tokens"], where
        assert attributes["llm.token_count.completion"] == usage["completion_tokens"], where
        assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"], where
    assert record.resource_attributes["service.name"] == "dynamiq"
    assert record.resource_attributes["openinference.project.name"] == "dynamiq"
