"""Shared readers for LLM runs: messages, output message, usage and request parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapping.kinds import provider_prefix

REQUEST_PARAMETERS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty", "seed")
"""Node fields that are model request parameters (``gen_ai.request.<name>``)."""


def input_messages(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The prompt messages of an LLM node (already rendered by the SDK), or an empty list."""
    prompt = node.get("prompt")
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


def message_text(content: Any) -> str | None:
    """Plain text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(part["text"]) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def output_message(output: Any) -> tuple[str | None, list[Mapping[str, Any]]]:
    """``(content, tool_calls)`` of an LLM run's output."""
    if isinstance(output, str):
        return output, []
    if not isinstance(output, dict):
        return None, []
    content = output.get("content")
    calls = output.get("tool_calls")
    if isinstance(calls, dict):
        calls = list(calls.values())
    tool_calls: list[Mapping[str, Any]] = (
        [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    )
    return (content if isinstance(content, str) else None), tool_calls


def call_function(call: Mapping[str, Any]) -> tuple[str | None, Any, str | None]:
    """``(name, arguments, id)`` of one tool call in OpenAI's shape (or a flat one)."""
    function = call.get("function")
    source = function if isinstance(function, dict) else call
    name = source.get("name")
    call_id = call.get("id")
    return (
        name if isinstance(name, str) else None,
        source.get("arguments"),
        call_id if isinstance(call_id, str) else None,
    )


def number(value: Any) -> int | float | None:
    """``value`` when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def model_of(node: Mapping[str, Any]) -> str | None:
    """The model name of a model node (LLM or embedder)."""
    model = node.get("model")
    if isinstance(model, str) and model:
        prefix, slash, name = model.partition("/")
        return name if slash and name and provider_prefix(prefix) else model
    embedder = node.get("embedder")
    if isinstance(embedder, dict) and isinstance(embedder.get("model"), str):
        return str(embedder["model"])
    return None
