"""A run seen through the options: what every attribute builder needs, derived once per run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mapping.kinds import group_of, node_of
from mapping.model import MappingOptions, Run
from mapping.values import redact, scrub_error

KNOWN_METADATA_KEYS = frozenset(
    {
        "node",
        "workflow",
        "flow",
        "usage",
        "run_depends",
        "tool_data",
        "is_output_from_cache",
        "is_mocked",
        "skip",
        "failed_nodes",
        "hooks",
        "human_feedback",
    }
)
"""Metadata keys the Dynamiq SDK writes itself; every other key came from the user's handler."""

CONTENT_NODE_KEYS = frozenset({"prompt", "tools", "response_format", "schema_", "schema"})
"""Keys of a serialised node that hold prompt content; dropped when content capture is off."""

CONTENT_METADATA_KEYS = frozenset({"tool_data", "human_feedback", "skip"})
"""Metadata keys that hold user content; dropped when content capture is off."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs an object.__setattr__ per field, per run
class RunView:
    """A run with its secrets redacted and its content removed when capture is off."""

    run: Run
    options: MappingOptions
    node: Mapping[str, Any]
    group: str | None
    metadata: Mapping[str, Any]
    input: Any
    output: Any
    error: Any
    tags: tuple[Any, ...] = ()
    extra: Mapping[str, Any] | None = None

    @property
    def usage(self) -> Mapping[str, Any]:
        """The LLM usage block of the run, or an empty mapping."""
        usage = self.metadata.get("usage")
        return usage if isinstance(usage, dict) else {}

    @property
    def user_metadata(self) -> dict[str, Any]:
        """Metadata keys that the SDK did not write (the handler's own ``metadata``)."""
        return {key: value for key, value in self.metadata.items() if key not in KNOWN_METADATA_KEYS}


def view_of(run: Run, options: MappingOptions) -> RunView:
    """Build the view of ``run``: redacted copies of its metadata, input and output."""
    fragments = options.redact_keys
    metadata = redact(run.metadata, fragments) if isinstance(run.metadata, dict) else {}
    node = dict(node_of(metadata))
    if not options.capture_content:
        node = {key: value for key, value in node.items() if key not in CONTENT_NODE_KEYS}
        metadata = {key: value for key, value in metadata.items() if key not in CONTENT_METADATA_KEYS}
        if node:
            metadata = {**metadata, "node": node}
    content = options.capture_content
    return RunView(
        run=run,
        options=options,
        node=node,
        group=group_of(run.type, metadata),
        metadata=metadata,
        input=redact(run.input, fragments) if content else None,
        output=redact(run.output, fragments) if content else None,
        error=scrub_error(redact(run.error, fragments)),
        tags=tuple(redact(list(run.tags), fragments)),
        extra=redact(dict(run.extra), fragments) if run.extra else None,
    )
