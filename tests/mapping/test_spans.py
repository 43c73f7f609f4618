"""Status, errors, parents, kinds, attempts, links and unfinished runs, table by table."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mapping import MappingOptions, span_id_bytes
from tests.batches import node_run, workflow_run
from tests.mapping.helpers import attrs, map_runs
from tests.otlp_receiver import attributes_to_dict

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/flow.py", line 10, in run\n'
    "    raise ValueError('bad input')\n"
    "dynamiq.nodes.exceptions.NodeFailedException: bad input\n"
)

ERROR = Status.STATUS_CODE_ERROR
UNSET = Status.STATUS_CODE_UNSET
OK = Status.STATUS_CODE_OK


def _event(span: Span) -> dict[str, Any] | None:
    events = [event for event in span.events if event.name == "exception"]
    assert len(events) <= 1
    return attributes_to_dict(events[0].attributes) if events else None


@pytest.mark.parametrize(
    ("status", "error", "ok_on_success", "expected"),
    [
        pytest.param("succeeded", None, False, (UNSET, "", None, None), id="succeeded-unset"),
        pytest.param("succeeded", None, True, (OK, "", None, None), id="succeeded-ok-when-configured"),
        pytest.param("skipped", None, True, (UNSET, "", None, None), id="skipped-never-error-nor-ok"),
        pytest.param(
            "failed",
            {"message": "bad input", "traceback": TRACEBACK},
            False,
            (
                ERROR,
                "bad input",
                "dynamiq.nodes.exceptions.NodeFailedException",
                {
                    "exception.type": "dynamiq.nodes.exceptions.NodeFailedException",
                    "exception.message": "bad input",
                    "exception.stacktrace": TRACEBACK,
                },
            ),
            id="failed-with-traceback",
        ),
        pytest.param(
            "failed",
            {"message": "", "traceback": "Traceback (most recent call last):\n  x\nTimeoutError\n"},
            False,
            (
                ERROR,
                "TimeoutError",
                "TimeoutError",
                {
                    "exception.type": "TimeoutError",
                    "exception.message": "",
                    "exception.stacktrace": "Traceback (most recent call last):\n  x\nTimeoutError\n",
                },
            ),
            id="failed-empty-message-falls-back-to-type",
        ),
        pytest.param(
            "failed",
            {"message": "boom", "traceback": "NoneType: None\n"},
            False,
            (ERROR, "boom", "_OTHER", {"exception.type": "_OTHER", "exception.message": "boom"}),
            id="failed-junk-traceback-is-no-stacktrace",
        ),
        pytest.param(
            "failed",
            None,
            False,
            (ERROR, "failed", "_OTHER", {"exception.type": "_OTHER", "exception.message": ""}),
            id="failed-without-error-object",
        ),
        pytest.param(
            "canceled",
            {"message": "Workflow 'w' was canceled during execution"},
            False,
            (ERROR, "Workflow 'w' was canceled during execution", "canceled", None),
            id="canceled",
        ),
    ],
)
def test_status_table(status: str, error: Any, ok_on_success: bool, expected: tuple[Any, ...]) -> None:
    (span,) = map_runs(
        workflow_run(status=status, error=error), options=MappingOptions(status_ok_on_success=ok_on_success)
    )
    code, message, error_type, event = expected
    assert (span.status.code, span.status.message) == (code, message)
    assert attrs(span).get("error.type") == error_type
    assert _event(span) == event
    if event:
        assert span.events[0].time_unix_nano == span.end_time_unix_nano


def test_provider_keys_are_scrubbed_from_error_texts() -> None:
    error = {"message": "401 invalid key sk-proj-abcdefghijklmnop1234", "traceback": "AuthError: sk-abcdefgh12345678\n"}
    (span,) = map_runs(workflow_run(status="failed", error=error))
    text = span.SerializeToString()
    assert b"sk-proj-abcdefghijklmnop1234" not in text and b"sk-abcdefgh12345678" not in text
    assert span.status.message == "401 invalid key [REDACTED]"


def test_parents_ids_and_times() -> None:
    root = workflow_run()
    child = node_run(root)
    self_parent = node_run(root, id="5a0e5d0c-0000-4000-8000-000000000001")
    self_parent["parent_run_id"] = self_parent["id"]
    orphan = node_run(root, parent_run_id="run-in-another-batch")
    spans = map_runs(root, child, self_parent, orphan)
    assert [span.name for span in spans] == ["Workflow", "Classifier", "Classifier", "Classifier"]
    assert spans[0].parent_span_id == b""
    assert spans[1].parent_span_id == spans[0].span_id == span_id_bytes(root["id"])
    assert spans[2].parent_span_id == b""
    assert spans[3].parent_span_id == span_id_bytes("run-in-another-batch")
    assert {span.trace_id.hex() for span in spans} == {"6e7f8091a2b34c5d8e6f708192a3b4c5"}
    assert (spans[0].start_time_unix_nano, spans[0].end_time_unix_nano) == (
        1_781_082_921_000_001_000,
        1_781_082_934_123_456_000,
    )


@pytest.mark.parametrize(
    ("group", "oi_kind", "span_kind", "operation"),
    [
        ("llms", "LLM", Span.SPAN_KIND_CLIENT, "chat"),
        ("embedders", "EMBEDDING", Span.SPAN_KIND_CLIENT, "embeddings"),
        ("agents", "AGENT", Span.SPAN_KIND_INTERNAL, "invoke_agent"),
        ("tools", "TOOL", Span.SPAN_KIND_INTERNAL, "execute_tool"),
        ("retrievers", "RETRIEVER", Span.SPAN_KIND_INTERNAL, "retrieval"),
        ("rankers", "RERANKER", Span.SPAN_KIND_INTERNAL, None),
        ("validators", "GUARDRAIL", Span.SPAN_KIND_INTERNAL, None),
        ("utils", "CHAIN", Span.SPAN_KIND_INTERNAL, None),
        (None, "CHAIN", Span.SPAN_KIND_INTERNAL, None),
    ],
)
def test_kinds_by_node_group(group: str | None, oi_kind: str, span_kind: int, operation: str | None) -> None:
    root = workflow_run()
    node = node_run(root, metadata={"node": {"id": "n", "name": "N", "type": "t", "group": group}})
    spans = map_runs(root, node)
    assert attrs(spans[0])["openinference.span.kind"] == "CHAIN"
    assert attrs(spans[0])["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs(spans[1])["openinference.span.kind"] == oi_kind
    assert spans[1].kind == span_kind
    assert attrs(spans[1]).get("gen_ai.operation.name") == operation


def test_flow_is_a_chain() -> None:
    (span,) = map_runs(workflow_run(type="flow", name="Flow", metadata={"flow": {"id": "f-1"}}))
    assert attrs(span)["openinference.span.kind"] == "CHAIN"
    assert attrs(span)["dynamiq.flow.id"] == "f-1"
    assert "gen_ai.operation.name" not in attrs(span)


def test_retry_attempts_become_child_spans_with_their_own_status() -> None:
    root = workflow_run()
    executions = [
        {
            "id": f"aaaaaaaa-0000-4000-8000-00000000000{n}",
            "start_time": f"2026-06-10T09:15:2{n}+00:00",
            "end_time": f"2026-06-10T09:15:2{n}.5+00:00",
            "status": "failed",
            "error": {"message": f"attempt {n} failed", "traceback": f"RuntimeError: attempt {n} failed\n"},
        }
        for n in (2, 3, 4)
    ]
    node = node_run(
        root,
        status="failed",
        end_time="2026-06-10T09:15:25+00:00",
        error={"message": "attempt 4 failed", "traceback": "RuntimeError: attempt 4 failed\n"},
        executions=executions,
    )
    spans = map_runs(root, node)
    assert [span.name for span in spans] == [
        "Workflow",
        "Classifier",
        "Classifier (attempt 1)",
        "Classifier (attempt 2)",
        "Classifier (attempt 3)",
    ]
    node_span, attempts = spans[1], spans[2:]
    assert attrs(node_span)["dynamiq.executions.count"] == 3
    for number, (attempt, execution) in enumerate(zip(attempts, executions, strict=True), start=1):
        assert attempt.parent_span_id == node_span.span_id
        assert attempt.span_id == span_id_bytes(execution["id"])
        assert attempt.status.code == ERROR
        assert attempt.status.message == f"attempt {number + 1} failed"
        assert attrs(attempt)["dynamiq.execution.attempt"] == number
        assert attrs(attempt)["error.type"] == "RuntimeError"
        assert attempt.end_time_unix_nano - attempt.start_time_unix_nano == 500_000_000
    assert node_span.status.message == "attempt 4 failed"


def test_single_execution_adds_no_attempt_span() -> None:
    root = workflow_run()
    node = node_run(
        root,
        executions=[
            {"id": "e1", "start_time": root["start_time"], "end_time": root["end_time"], "status": "succeeded"}
        ],
    )
    assert len(map_runs(root, node)) == 2


def test_unfinished_run_is_closed_at_its_closest_finished_ancestor() -> None:
    root = workflow_run(end_time="2026-06-10T09:15:40+00:00")
    agent = node_run(root, end_time=None, status=None)
    tool = node_run(agent, end_time=None, status=None, start_time="2026-06-10T09:15:23+00:00")
    spans = map_runs(root, agent, tool)
    for span in spans[1:]:
        assert span.end_time_unix_nano == spans[0].end_time_unix_nano
        assert attrs(span)["dynamiq.run.unfinished"] is True
        assert attrs(span)["dynamiq.run.status"] == "unfinished"
        assert span.status.code == UNSET and "unfinished" in span.status.message


def test_run_depends_become_links_to_the_dependency_run() -> None:
    root = workflow_run()
    first = node_run(root, metadata={"node": {"id": "embedder-node", "name": "Embed", "group": "embedders"}})
    second = node_run(
        root,
        metadata={
            "node": {"id": "writer-node", "name": "Write", "group": "writers"},
            "run_depends": [{"node": {"id": "embedder-node", "name": "Embed", "type": "x"}, "option": None}],
        },
    )
    spans = map_runs(root, first, second)
    assert [link.span_id for link in spans[2].links] == [span_id_bytes(first["id"])]
    assert spans[2].links[0].trace_id == spans[2].trace_id


def test_mapping_is_deterministic_to_the_byte() -> None:
    root = workflow_run()
    runs = (root, node_run(root, id="node-run-1"))
    first = [span.SerializeToString(deterministic=True) for span in map_runs(*runs)]
    second = [span.SerializeToString(deterministic=True) for span in map_runs(*runs)]
    assert first == second
