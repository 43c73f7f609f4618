"""OpenTelemetry GenAI semantic-convention attributes (``gen_ai.*``, semconv v1.37 names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapping.attrs_llm import (
    REQUEST_PARAMETERS,
    call_function,
    input_messages,
    message_text,
    model_of,
    number,
    output_message,
)
from mapping.kinds import genai_operation, provider_of
from mapping.values import Attributes, to_json
from mapping.view import RunView

OPERATION_NAME = "gen_ai.operation.name"
"""``chat``, ``invoke_agent``, ``execute_tool``, ``retrieval``, ``embeddings`` or ``invoke_workflow``."""
PROVIDER_NAME = "gen_ai.provider.name"
"""The model provider (``openai``, ``anthropic``, ``aws.bedrock``, …)."""
REQUEST_MODEL = "gen_ai.request.model"
"""The model the node asked for."""
CONVERSATION_ID = "gen_ai.conversation.id"
"""The Dynamiq ``session_id``."""
AGENT_NAME = "gen_ai.agent.name"
"""Name of an agent node."""
AGENT_ID = "gen_ai.agent.id"
"""Id of an agent node."""
TOOL_NAME = "gen_ai.tool.name"
"""Name of a tool node."""
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
"""The input a tool was called with, as JSON."""
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
"""What a tool returned, as JSON."""
INPUT_TOKENS = "gen_ai.usage.input_tokens"
"""Prompt tokens of this LLM call (never summed over children)."""
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
"""Completion tokens of this LLM call."""
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
"""Prompt tokens served from the provider's cache."""
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
"""Prompt tokens written to the provider's cache."""
INPUT_MESSAGES = "gen_ai.input.messages"
"""The chat history sent to the model, as JSON in the GenAI message schema."""
OUTPUT_MESSAGES = "gen_ai.output.messages"
"""The model's answer, as JSON in the GenAI message schema."""
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
"""The system messages, as JSON in the GenAI parts schema."""

_MODEL_GROUPS = frozenset({"llms", "embedders"})


def attributes_from_run(view: RunView, out: Attributes) -> None:
    """Set every ``gen_ai.*`` attribute of a run in ``out``."""
    run = view.run
    operation = genai_operation(run.type, view.group)
    if operation:
        out[OPERATION_NAME] = operation
    if run.session_id is not None:
        out[CONVERSATION_ID] = run.session_id
    if view.group in _MODEL_GROUPS:
        _attributes_from_model_node(view, out)
    elif view.group == "agents":
        _node_str(AGENT_NAME, view.node, "name", out)
        _node_str(AGENT_ID, view.node, "id", out)
    elif view.group == "tools":
        out[TOOL_NAME] = run.name
        if view.options.capture_content:
            if view.input is not None:
                out[TOOL_CALL_ARGUMENTS] = to_json(view.input)
            if view.output is not None:
                out[TOOL_CALL_RESULT] = to_json(view.output)


def _attributes_from_model_node(view: RunView, out: Attributes) -> None:
    provider = provider_of(view.node)
    if provider:
        out[PROVIDER_NAME] = provider
    model = model_of(view.node)
    if model:
        out[REQUEST_MODEL] = model
    for name in REQUEST_PARAMETERS:
        value = number(view.node.get(name))
        if value is not None:
            out[f"gen_ai.request.{name}"] = value
    stop = view.node.get("stop")
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop) and stop:
        out["gen_ai.request.stop_sequences"] = list(stop)
    _attributes_from_usage(view.usage, out)
    if view.options.capture_content and view.group == "llms":
        _attributes_from_messages(view, out)


_USAGE = (
    ("prompt_tokens", INPUT_TOKENS),
    ("completion_tokens", OUTPUT_TOKENS),
    ("cache_read_input_tokens", CACHE_READ_TOKENS),
    ("cache_creation_input_tokens", CACHE_CREATION_TOKENS),
)


def _attributes_from_usage(usage: Mapping[str, Any], out: Attributes) -> None:
    for source, key in _USAGE:
        value = number(usage.get(source))
        if value is not None:
            out[key] = int(value)


def _attributes_from_messages(view: RunView, out: Attributes) -> None:
    system: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for message in input_messages(view.node):
        text = message_text(message.get("content"))
        parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text is not None else []
        if message.get("role") == "system":
            system.extend(parts)
        else:
            history.append({"role": str(message.get("role", "user")), "parts": parts})
    if system:
        out[SYSTEM_INSTRUCTIONS] = to_json(system)
    if history:
        out[INPUT_MESSAGES] = to_json(history)
    content, calls = output_message(view.output)
    answer: list[dict[str, Any]] = []
    if content is not None:
        answer.append({"type": "text", "content": content})
    for call in calls:
        name, arguments, call_id = call_function(call)
        answer.append({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})
    if answer:
        out[OUTPUT_MESSAGES] = to_json([{"role": "assistant", "parts": answer}])


def _node_str(key: str, node: Mapping[str, Any], field: str, out: Attributes) -> None:
    value = node.get(field)
    if isinstance(value, str) and value:
        out[key] = value
