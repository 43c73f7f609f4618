"""The lossless ``dynamiq.*`` attribute set: every field of a run, under names Jaeger users can search."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapping.values import Attributes, text_of, to_json
from mapping.view import RunView

RUN_ID = "dynamiq.run.id"
"""The run's own id, as sent."""
RUN_TYPE = "dynamiq.run.type"
"""``workflow``, ``flow`` or ``node``."""
RUN_STATUS = "dynamiq.run.status"
"""The run's status as sent (``succeeded``, ``failed``, ``skipped``, ``canceled``) or ``unfinished``."""
PARENT_RUN_ID = "dynamiq.run.parent_id"
"""The parent run's id, as sent."""
SOURCE_ID = "dynamiq.source.id"
"""The handler's ``source_id``."""
TRACE_ID = "dynamiq.trace.id"
"""The original ``trace_id`` string (the OTel trace id may be a hash of it)."""
SESSION_ID = "dynamiq.session.id"
"""The handler's ``session_id``."""
TAGS = "dynamiq.tags"
"""The run's tags."""
NODE_PREFIX = "dynamiq.node."
"""``dynamiq.node.id``, ``.name``, ``.type``, ``.group`` of the serialised node."""
NODE_CONFIG = "dynamiq.node.config"
"""The rest of the serialised node (model, connection id and type, error handling, …) as JSON. An LLM
node's ``prompt`` is left out when the GenAI or OpenInference set carries its messages."""
WORKFLOW_ID = "dynamiq.workflow.id"
"""Id of the workflow (workflow runs)."""
WORKFLOW_VERSION = "dynamiq.workflow.version"
"""Version of the workflow (workflow runs)."""
FLOW_ID = "dynamiq.flow.id"
"""Id of the flow (flow runs)."""
CACHE_HIT = "dynamiq.cache.hit"
"""True when the node's output came from the cache."""
MOCKED = "dynamiq.mocked"
"""True when the node was mocked."""
SKIP = "dynamiq.skip"
"""Why the node was skipped, as JSON."""
FAILED_NODES = "dynamiq.failed_nodes"
"""The nodes that failed in a failed workflow or flow, as JSON."""
HOOKS = "dynamiq.hooks"
"""Hook events of the node, as JSON."""
INPUT = "dynamiq.input"
"""The run's input as JSON (only when the OpenInference set, which carries input.value, is off)."""
OUTPUT = "dynamiq.output"
"""The run's output as JSON (only when the OpenInference set is off)."""
METADATA = "dynamiq.metadata"
"""Every metadata key not mapped to an attribute above (usage, run_depends, tool_data, …), as JSON."""
EXTRA = "dynamiq.run.extra"
"""Top-level run fields this version does not know, as JSON."""
ERROR = "dynamiq.error"
"""The run's error object, as JSON."""
EXECUTIONS = "dynamiq.executions.count"
"""How many execution attempts the run had."""

_MAPPED_METADATA = frozenset(
    {"node", "workflow", "flow", "is_output_from_cache", "is_mocked", "skip", "failed_nodes", "hooks"}
)


def attributes_from_run(view: RunView, out: Attributes) -> None:
    """Set every ``dynamiq.*`` attribute of a run in ``out``."""
    run = view.run
    out[RUN_ID] = run.id
    out[RUN_TYPE] = run.type
    out[RUN_STATUS] = run.status or "unfinished"
    out[SOURCE_ID] = run.source_id
    out[TRACE_ID] = run.trace_id
    if run.session_id is not None:
        out[SESSION_ID] = run.session_id
    if run.parent_run_id is not None:
        out[PARENT_RUN_ID] = run.parent_run_id
    tags = [str(tag) for tag in view.tags]
    if tags:
        out[TAGS] = tags
    options = view.options
    messages_elsewhere = view.group == "llms" and (options.genai_attributes or options.openinference_attributes)
    _attributes_from_node(view.node, messages_elsewhere, out)
    _attributes_from_metadata(view.metadata, out)
    if run.executions:
        out[EXECUTIONS] = len(run.executions)
    if view.error is not None:
        out[ERROR] = to_json(view.error)
    if not view.options.openinference_attributes:
        if view.input is not None:
            out[INPUT] = text_of(view.input)[0]
        if view.output is not None:
            out[OUTPUT] = text_of(view.output)[0]
    if view.extra:
        out[EXTRA] = to_json(view.extra)


_NODE_FIELDS = ("id", "name", "type", "group")


def _attributes_from_node(node: Mapping[str, Any], skip_prompt: bool, out: Attributes) -> None:
    for key in _NODE_FIELDS:
        value = node.get(key)
        if isinstance(value, str):
            out[NODE_PREFIX + key] = value
    left_out = (*_NODE_FIELDS, "prompt") if skip_prompt else _NODE_FIELDS
    rest = {key: value for key, value in node.items() if key not in left_out}
    if rest:
        out[NODE_CONFIG] = to_json(rest)


def _attributes_from_metadata(metadata: Mapping[str, Any], out: Attributes) -> None:
    workflow = metadata.get("workflow")
    if isinstance(workflow, dict):
        _str_attr(WORKFLOW_ID, workflow.get("id"), out)
        _str_attr(WORKFLOW_VERSION, workflow.get("version"), out)
    flow = metadata.get("flow")
    if isinstance(flow, dict):
        _str_attr(FLOW_ID, flow.get("id"), out)
    if isinstance(metadata.get("is_output_from_cache"), bool):
        out[CACHE_HIT] = metadata["is_output_from_cache"]
    if isinstance(metadata.get("is_mocked"), bool):
        out[MOCKED] = metadata["is_mocked"]
    for key, attribute in (("skip", SKIP), ("failed_nodes", FAILED_NODES), ("hooks", HOOKS)):
        if metadata.get(key) not in (None, [], {}):
            out[attribute] = to_json(metadata[key])
    rest = {key: value for key, value in metadata.items() if key not in _MAPPED_METADATA}
    if rest:
        out[METADATA] = to_json(rest)


def _str_attr(key: str, value: Any, out: Attributes) -> None:
    if value is not None and value != "":
        out[key] = str(value)
