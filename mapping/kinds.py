"""Lookup tables: what a Dynamiq run is in OpenInference, GenAI and OpenTelemetry span-kind terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

OPENINFERENCE_KIND_BY_GROUP = {
    "llms": "LLM",
    "agents": "AGENT",
    "tools": "TOOL",
    "retrievers": "RETRIEVER",
    "embedders": "EMBEDDING",
    "rankers": "RERANKER",
    "validators": "GUARDRAIL",
}
"""Dynamiq node group -> ``openinference.span.kind``. Anything else is a CHAIN."""

GENAI_OPERATION_BY_GROUP = {
    "llms": "chat",
    "agents": "invoke_agent",
    "tools": "execute_tool",
    "retrievers": "retrieval",
    "embedders": "embeddings",
}
"""Dynamiq node group -> ``gen_ai.operation.name``. Workflows are ``invoke_workflow``."""

CLIENT_GROUPS = frozenset({"llms", "embedders"})
"""Groups whose runs stand for a call to a remote model: span kind CLIENT."""

PROVIDER_BY_CONNECTION = {
    "openai": "openai",
    "azureai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertexai": "gcp.vertex_ai",
    "google": "gcp.gemini",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "ibm": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "ollama": "ollama",
    "togetherai": "together_ai",
    "huggingface": "huggingface",
}
"""Lower-cased Dynamiq connection class name (or provider prefix) -> ``gen_ai.provider.name``."""


def node_of(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """The serialised node in a run's metadata, or an empty mapping."""
    node = metadata.get("node")
    return node if isinstance(node, dict) else {}


def group_of(run_type: str, metadata: Mapping[str, Any]) -> str | None:
    """The node group (``llms``, ``agents``, …) of a node run; None for workflows and flows."""
    if run_type != "node":
        return None
    group = node_of(metadata).get("group")
    return group.lower() if isinstance(group, str) else None


def openinference_kind(group: str | None) -> str:
    """The OpenInference span kind of a run in ``group``."""
    return OPENINFERENCE_KIND_BY_GROUP.get(group or "", "CHAIN")


def genai_operation(run_type: str, group: str | None) -> str | None:
    """The GenAI operation name of a run, or None when it has none."""
    if run_type == "workflow":
        return "invoke_workflow"
    return GENAI_OPERATION_BY_GROUP.get(group or "")


def span_kind(group: str | None) -> int:
    """OTLP span kind: CLIENT for calls to a remote model, INTERNAL otherwise."""
    return Span.SPAN_KIND_CLIENT if group in CLIENT_GROUPS else Span.SPAN_KIND_INTERNAL


def provider_prefix(prefix: str) -> str | None:
    """The GenAI provider named by a litellm-style model prefix (``openai`` in ``openai/gpt-4o``)."""
    return PROVIDER_BY_CONNECTION.get(prefix.lower().replace("_", "").replace("-", ""))


def provider_of(node: Mapping[str, Any]) -> str | None:
    """``gen_ai.provider.name`` of a model node, from its connection type or its model prefix."""
    connection = node.get("connection")
    candidates: list[str] = []
    if isinstance(connection, dict):
        for key in ("type", "name"):
            value = connection.get(key)
            if isinstance(value, str):
                candidates.append(value.rsplit(".", 1)[-1])
    model = node.get("model")
    if isinstance(model, str) and "/" in model:
        candidates.append(model.split("/", 1)[0])
    for candidate in candidates:
        provider = provider_prefix(candidate)
        if provider:
            return provider
    return None


OPENINFERENCE_PROVIDER = {
    "openai": ("openai", "openai"),
    "azure.ai.openai": ("azure", "openai"),
    "anthropic": ("anthropic", "anthropic"),
    "aws.bedrock": ("aws", None),
    "gcp.gemini": ("google", "vertexai"),
    "gcp.vertex_ai": ("google", "vertexai"),
    "cohere": ("cohere", "cohere"),
    "mistral_ai": ("mistralai", "mistralai"),
    "x_ai": ("xai", "xai"),
    "deepseek": ("deepseek", "deepseek"),
}
"""``gen_ai.provider.name`` -> (``llm.provider``, ``llm.system``) in OpenInference's vocabulary."""


def openinference_provider(provider: str) -> tuple[str, str | None]:
    """``(llm.provider, llm.system)`` of a GenAI provider name."""
    return OPENINFERENCE_PROVIDER.get(provider, (provider, None))
