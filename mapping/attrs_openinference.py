"""OpenInference attributes, so Phoenix, Arize and Langfuse render LLM / AGENT / TOOL / CHAIN spans."""

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
from mapping.kinds import openinference_kind, openinference_provider, provider_of
from mapping.values import Attributes, text_of, to_json
from mapping.view import RunView

SPAN_KIND = "openinference.span.kind"
"""LLM, AGENT, TOOL, CHAIN, RETRIEVER, EMBEDDING, RERANKER or GUARDRAIL."""
INPUT_VALUE = "input.value"
"""The run's input: text as is, anything else as JSON."""
INPUT_MIME_TYPE = "input.mime_type"
"""``text/plain`` or ``application/json`` (text/plain when a JSON value had to be cut)."""
OUTPUT_VALUE = "output.value"
"""The run's output."""
OUTPUT_MIME_TYPE = "output.mime_type"
"""Mime type of ``output.value``."""
SESSION_ID = "session.id"
"""The Dynamiq ``session_id``: groups the runs of a session in Phoenix."""
TAGS = "tag.tags"
"""The run's tags."""
METADATA = "metadata"
"""The handler's own metadata (keys the SDK did not write), as JSON."""
MODEL_NAME = "llm.model_name"
"""Model of an LLM run."""
PROVIDER = "llm.provider"
"""Provider of an LLM run."""
SYSTEM = "llm.system"
"""AI system of an LLM run (the provider's family name)."""
INVOCATION_PARAMETERS = "llm.invocation_parameters"
"""The request parameters of an LLM run, as JSON."""
TOOL_NAME = "tool.name"
"""Name of a tool run."""
TOOL_DESCRIPTION = "tool.description"
"""Description of a tool node."""
EMBEDDING_MODEL = "embedding.model_name"
"""Model of an embedder run."""
AGENT_NAME = "agent.name"
"""Name of an agent run."""

_TOKEN_COUNTS = (
    ("prompt_tokens", "llm.token_count.prompt"),
    ("completion_tokens", "llm.token_count.completion"),
    ("total_tokens", "llm.token_count.total"),
    ("cache_read_input_tokens", "llm.token_count.prompt_details.cache_read"),
    ("cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write"),
)
_COSTS = (
    ("prompt_tokens_cost_usd", "llm.cost.prompt"),
    ("completion_tokens_cost_usd", "llm.cost.completion"),
    ("total_tokens_cost_usd", "llm.cost.total"),
)


def attributes_from_run(view: RunView, out: Attributes) -> None:
    """Set every OpenInference attribute of a run in ``out``."""
    run = view.run
    out[SPAN_KIND] = openinference_kind(view.group)
    if run.session_id is not None:
        out[SESSION_ID] = run.session_id
    tags = [str(tag) for tag in view.tags]
    if tags:
        out[TAGS] = tags
    user_metadata = view.user_metadata
    if user_metadata:
        out[METADATA] = to_json(user_metadata)
    limit = view.options.max_attribute_length
    if view.input is not None:
        _value_attributes(INPUT_VALUE, INPUT_MIME_TYPE, view.input, limit, out)
    if view.output is not None:
        _value_attributes(OUTPUT_VALUE, OUTPUT_MIME_TYPE, view.output, limit, out)
    if view.group == "llms":
        _attributes_from_llm(view, out)
    elif view.group == "embedders":
        model = model_of(view.node)
        if model:
            out[EMBEDDING_MODEL] = model
    elif view.group == "tools":
        out[TOOL_NAME] = run.name
        description = view.node.get("description")
        if isinstance(description, str) and description:
            out[TOOL_DESCRIPTION] = description
    elif view.group == "agents":
        out[AGENT_NAME] = run.name


def _value_attributes(value_key: str, mime_key: str, value: Any, limit: int, out: Attributes) -> None:
    text, mime = text_of(value)
    if len(text) > limit:
        mime = "text/plain"  # a cut JSON document is no longer JSON
    out[value_key] = text
    out[mime_key] = mime


def _attributes_from_llm(view: RunView, out: Attributes) -> None:
    model = model_of(view.node)
    if model:
        out[MODEL_NAME] = model
    provider = provider_of(view.node)
    if provider:
        oi_provider, oi_system = openinference_provider(provider)
        out[PROVIDER] = oi_provider
        if oi_system:
            out[SYSTEM] = oi_system
    parameters = {name: view.node[name] for name in REQUEST_PARAMETERS if number(view.node.get(name)) is not None}
    if parameters:
        out[INVOCATION_PARAMETERS] = to_json(parameters)
    usage = view.usage
    for source, key in _TOKEN_COUNTS:
        count = number(usage.get(source))
        if count is not None:
            out[key] = int(count)
    for source, key in _COSTS:
        cost = number(usage.get(source))
        if cost is not None:
            out[key] = float(cost)
    if view.options.capture_content:
        _attributes_from_messages(view, out)


def _attributes_from_messages(view: RunView, out: Attributes) -> None:
    for index, message in enumerate(input_messages(view.node)):
        prefix = f"llm.input_messages.{index}.message."
        role = message.get("role")
        if isinstance(role, str):
            out[prefix + "role"] = role
        text = message_text(message.get("content"))
        if text is not None:
            out[prefix + "content"] = text
    content, calls = output_message(view.output)
    if content is None and not calls:
        return
    prefix = "llm.output_messages.0.message."
    out[prefix + "role"] = "assistant"
    if content is not None:
        out[prefix + "content"] = content
    for index, call in enumerate(calls):
        _tool_call_attributes(f"{prefix}tool_calls.{index}.tool_call.", call, out)


def _tool_call_attributes(prefix: str, call: Mapping[str, Any], out: Attributes) -> None:
    name, arguments, call_id = call_function(call)
    if call_id:
        out[prefix + "id"] = call_id
    if name:
        out[prefix + "function.name"] = name
    if arguments is not None:
        out[prefix + "function.arguments"] = arguments if isinstance(arguments, str) else to_json(arguments)
