"""Attribute sets: GenAI, OpenInference, dynamiq.*, switches, caps, redaction and content capture."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mapping import MappingOptions
from mapping.values import REDACTED, TRUNCATION_MARK
from tests.batches import node_run, workflow_run
from tests.mapping.helpers import attrs, map_runs

LLM_NODE = {
    "id": "llm-node-1",
    "name": "Answer",
    "type": "dynamiq.nodes.llms.OpenAI",
    "group": "llms",
    "model": "gpt-4o-mini",
    "temperature": 0.2,
    "max_tokens": 256,
    "stop": ["###"],
    "connection": {"id": "conn-1", "type": "dynamiq.connections.OpenAI"},
    "prompt": {
        "id": "p",
        "messages": [
            {"role": "system", "content": "You are terse.", "metadata": None},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]},
        ],
    },
}
USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_cost_usd": 0.0011,
    "completion_tokens_cost_usd": 0.0007,
    "total_tokens_cost_usd": 0.0018,
    "cache_read_input_tokens": 3,
    "cache_creation_input_tokens": None,
}


def _llm_spans(options: MappingOptions | None = None, **changes: Any) -> dict[str, dict[str, Any]]:
    root = workflow_run()
    agent = node_run(
        root,
        name="Agent",
        metadata={
            "node": {
                "id": "agent-1",
                "name": "Agent",
                "type": "dynamiq.nodes.agents.Agent",
                "group": "agents",
                "llm": {"model": "gpt-4o-mini"},
            }
        },
    )
    llm = node_run(
        agent,
        name="Answer",
        input={"question": "Hi"},
        output={"content": "Hello!", "tool_calls": [{"id": "c1", "function": {"name": "search", "arguments": "{}"}}]},
        metadata={"node": LLM_NODE, "usage": USAGE, "user_tag": "blue"},
        **changes,
    )
    spans = map_runs(root, agent, llm, options=options)
    return {span.name: attrs(span) for span in spans}


def test_llm_span_carries_genai_and_openinference_attributes() -> None:
    llm = _llm_spans()["Answer"]
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.stop_sequences": ["###"],
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 3,
        "gen_ai.conversation.id": "3d3e8a1f-09a6-4f64-9d68-1d2f3a4b5c6d",
        "gen_ai.system_instructions": '[{"content":"You are terse.","type":"text"}]',
        "gen_ai.input.messages": '[{"parts":[{"content":"Hi","type":"text"}],"role":"user"}]',
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.invocation_parameters": '{"max_tokens":256,"temperature":0.2}',
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 7,
        "llm.token_count.total": 18,
        "llm.token_count.prompt_details.cache_read": 3,
        "llm.cost.prompt": 0.0011,
        "llm.cost.completion": 0.0007,
        "llm.cost.total": 0.0018,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are terse.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Hi",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Hello!",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "c1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "search",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "{}",
        "metadata": '{"user_tag":"blue"}',
        "session.id": "3d3e8a1f-09a6-4f64-9d68-1d2f3a4b5c6d",
        "tag.tags": ["support-triage", "production"],
    }
    assert {key: llm.get(key) for key in expected} == expected
    assert "gen_ai.usage.cache_creation.input_tokens" not in llm
    assert json.loads(llm["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Hello!"},
                {"type": "tool_call", "id": "c1", "name": "search", "arguments": "{}"},
            ],
        }
    ]


def test_usage_and_model_stay_on_the_llm_span_only() -> None:
    spans = _llm_spans()
    for name in ("Workflow", "Agent"):
        keys = set(spans[name])
        assert not {k for k in keys if k.startswith(("llm.token_count", "llm.cost", "gen_ai.usage"))}, name
        assert not keys & {"llm.model_name", "gen_ai.request.model", "gen_ai.provider.name"}, name
    assert spans["Agent"]["gen_ai.agent.name"] == "Agent"
    assert spans["Agent"]["gen_ai.agent.id"] == "agent-1"
    assert spans["Agent"]["openinference.span.kind"] == "AGENT"


def test_session_and_tags_on_every_span() -> None:
    for name, span in _llm_spans().items():
        assert span["session.id"] == "3d3e8a1f-09a6-4f64-9d68-1d2f3a4b5c6d", name
        assert span["tag.tags"] == ["support-triage", "production"], name


@pytest.mark.parametrize(
    ("options", "present", "absent"),
    [
        pytest.param(MappingOptions(), ("dynamiq.", "gen_ai.", "llm."), (), id="all-on"),
        pytest.param(MappingOptions(dynamiq_attributes=False), ("gen_ai.", "llm."), ("dynamiq.",), id="no-dynamiq"),
        pytest.param(MappingOptions(genai_attributes=False), ("dynamiq.", "llm."), ("gen_ai.",), id="no-genai"),
        pytest.param(
            MappingOptions(openinference_attributes=False),
            ("dynamiq.", "gen_ai.", "dynamiq.input"),
            ("llm.", "openinference.", "input.value"),
            id="no-openinference",
        ),
    ],
)
def test_attribute_sets_switch(options: MappingOptions, present: tuple[str, ...], absent: tuple[str, ...]) -> None:
    llm = _llm_spans(options)["Answer"]
    for prefix in present:
        assert any(key.startswith(prefix) for key in llm), prefix
    for prefix in absent:
        assert not any(key.startswith(prefix) for key in llm), prefix


def test_content_capture_off_drops_inputs_outputs_and_messages() -> None:
    llm = _llm_spans(MappingOptions(capture_content=False))["Answer"]
    leaked = [k for k in llm if k.startswith(("input.", "output.", "llm.input_messages", "llm.output_messages"))]
    assert leaked == []
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"} & set(llm)
    assert "You are terse" not in json.dumps(llm)
    assert llm["llm.token_count.total"] == 18 and llm["llm.model_name"] == "gpt-4o-mini"


def test_secret_looking_keys_are_redacted_everywhere() -> None:
    root = workflow_run(
        input={"query": "x", "api_key": "plain-secret-1", "nested": [{"Authorization": "Bearer abcdefghijkl"}]},
        metadata={"workflow": {"id": "w"}, "db_password": "plain-secret-2"},
    )
    (span,) = map_runs(root)
    values = json.dumps(attrs(span))
    assert "plain-secret-1" not in values and "plain-secret-2" not in values and "abcdefghijkl" not in values
    assert json.loads(attrs(span)["input.value"]) == {
        "query": "x",
        "api_key": REDACTED,
        "nested": [{"Authorization": REDACTED}],
    }


def test_long_values_are_capped_marked_and_json_mime_dropped() -> None:
    limit = 200
    root = workflow_run(input={"text": "x" * 1000}, output="y" * 1000)
    (span,) = map_runs(root, options=MappingOptions(max_attribute_length=limit))
    values = attrs(span)
    assert len(values["input.value"]) == limit and values["input.value"].endswith(TRUNCATION_MARK)
    assert values["input.mime_type"] == "text/plain"
    assert values["output.mime_type"] == "text/plain"
    assert sorted(values["dynamiq.truncated_attributes"]) == ["input.value", "output.value"]


def test_value_exactly_at_the_limit_is_not_cut() -> None:
    (span,) = map_runs(workflow_run(output="z" * 64), options=MappingOptions(max_attribute_length=64))
    assert attrs(span)["output.value"] == "z" * 64
    assert "dynamiq.truncated_attributes" not in attrs(span)


def test_dynamiq_namespace_keeps_every_field() -> None:
    root = workflow_run(extra_field={"a": 1})
    root["metadata"]["custom"] = {"team": "payments"}
    (span,) = map_runs(root)
    values = attrs(span)
    assert values["dynamiq.workflow.id"] == "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
    assert values["dynamiq.workflow.version"] == "3"
    assert values["dynamiq.trace.id"] == "6e7f8091-a2b3-4c5d-8e6f-708192a3b4c5"
    assert values["dynamiq.source.id"] == "4f6e1c2a-7b8d-4e9f-a1b2-c3d4e5f60718"
    assert json.loads(values["dynamiq.metadata"]) == {"custom": {"team": "payments"}}
    assert json.loads(values["dynamiq.run.extra"]) == {"extra_field": {"a": 1}}


def test_semconv_span_names_are_an_option() -> None:
    spans = _llm_spans(MappingOptions(semconv_span_names=True))
    assert set(spans) == {"invoke_workflow Workflow", "invoke_agent Agent", "chat gpt-4o-mini"}
