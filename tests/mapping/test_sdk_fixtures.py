"""The mapping over batches captured from the real Dynamiq SDK: properties, then golden files.

Golden files (tests/fixtures/golden/<batch>.json) hold the exact spans of each captured batch.
They are rewritten only on purpose: ``UPDATE_GOLDEN=1 pytest tests/mapping/test_sdk_fixtures.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from adapter.validation import parse_batch
from mapping import MappingOptions, Run, runs_to_spans, span_id_bytes, trace_id_bytes
from mapping.ids import canonical_id
from tests.otlp_receiver import attributes_to_dict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SDK = FIXTURES / "sdk"
GOLDEN = FIXTURES / "golden"
BATCHES = sorted(path.name for path in SDK.glob("*.json") if path.name != "manifest.json")
KIND_BY_GROUP = {"llms": "LLM", "agents": "AGENT", "tools": "TOOL"}


def _runs(name: str) -> list[Run]:
    return parse_batch((SDK / name).read_bytes(), accept_unfinished=True, max_runs=100_000)


def test_every_scenario_was_captured() -> None:
    scenarios = {name.split(".")[0] for name in BATCHES}
    assert scenarios >= {
        "linear", "llm_usage", "agent_tools", "retry_fail", "skipped", "canceled", "async_run", "custom_ids",
        "reused_handler",
    }


@pytest.mark.parametrize("name", BATCHES)
def test_every_run_is_one_span_with_its_parent(name: str) -> None:
    runs = _runs(name)
    spans = runs_to_spans(runs, MappingOptions())
    run_spans = [span for span in spans if "dynamiq.execution.attempt" not in attributes_to_dict(span.attributes)]
    assert len(run_spans) == len(runs)
    by_id = {canonical_id(run.id) for run in runs}
    for run, span in zip(runs, run_spans, strict=True):
        assert span.span_id == span_id_bytes(run.id)
        assert span.trace_id == trace_id_bytes(run.trace_id)
        assert span.start_time_unix_nano == run.start_ns
        if run.end_ns is not None:
            assert span.end_time_unix_nano == run.end_ns
        if run.parent_run_id is None:
            assert span.parent_span_id == b""
        else:
            assert canonical_id(run.parent_run_id) in by_id, "the SDK sends the whole tree in one batch"
            assert span.parent_span_id == span_id_bytes(run.parent_run_id)


@pytest.mark.parametrize("name", BATCHES)
def test_kinds_usage_and_errors_follow_the_run(name: str) -> None:
    runs = _runs(name)
    spans = {span.span_id: span for span in runs_to_spans(runs, MappingOptions())}
    for run in runs:
        span = spans[span_id_bytes(run.id)]
        attributes = attributes_to_dict(span.attributes)
        group = (run.metadata.get("node") or {}).get("group")
        assert attributes["openinference.span.kind"] == KIND_BY_GROUP.get(group, "CHAIN")
        usage = run.metadata.get("usage") or {}
        if group == "llms" and usage:
            assert attributes["llm.token_count.prompt"] == usage["prompt_tokens"]
            assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        else:
            assert not any(key.startswith(("llm.token_count", "gen_ai.usage")) for key in attributes)
        if run.status == "failed":
            assert span.status.code == 2 and span.status.message
            assert [event.name for event in span.events] == ["exception"]
        if run.status == "canceled":
            assert attributes["error.type"] == "canceled"


def test_retry_fail_shows_every_attempt() -> None:
    runs = _runs("retry_fail.1.json")
    failing = next(run for run in runs if run.status == "failed" and run.type == "node")
    spans = runs_to_spans(runs, MappingOptions())
    attempts = [s for s in spans if s.parent_span_id == span_id_bytes(failing.id) and "attempt" in s.name]
    assert len(attempts) == len(failing.executions) >= 2
    assert all(span.status.code == 2 for span in attempts)


def test_custom_ids_are_hashed_and_kept() -> None:
    runs = _runs("custom_ids.1.json")
    spans = runs_to_spans(runs, MappingOptions())
    attributes = attributes_to_dict(spans[0].attributes)
    assert attributes["dynamiq.trace.id"] == "checkout-trace-42"
    assert attributes["session.id"] == "session alpha"
    assert attributes["dynamiq.source.id"] == "billing-bot"
    assert spans[0].trace_id == trace_id_bytes("checkout-trace-42")


def _canonical(name: str) -> list[dict[str, Any]]:
    spans = runs_to_spans(_runs(name), MappingOptions())
    return [MessageToDict(span, preserving_proto_field_name=True) for span in spans]


@pytest.mark.parametrize("name", BATCHES)
def test_golden(name: str) -> None:
    path = GOLDEN / name
    actual = _canonical(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 once, on purpose, and review it"
    assert actual == json.loads(path.read_text(encoding="utf-8"))
