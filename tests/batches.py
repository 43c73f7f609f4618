"""Hand-made batches for API and mapping tests (real SDK captures live in tests/fixtures/sdk)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import orjson

TRACE_ID = "6e7f8091-a2b3-4c5d-8e6f-708192a3b4c5"

_WORKFLOW: dict[str, Any] = {
    "id": "11d4a6e8-9c2b-4f3a-8e1d-2f6071829301",
    "name": "Workflow",
    "type": "workflow",
    "trace_id": TRACE_ID,
    "source_id": "4f6e1c2a-7b8d-4e9f-a1b2-c3d4e5f60718",
    "session_id": "3d3e8a1f-09a6-4f64-9d68-1d2f3a4b5c6d",
    "start_time": "2026-06-10T09:15:21.000001+00:00",
    "end_time": "2026-06-10T09:15:34.123456+00:00",
    "parent_run_id": None,
    "status": "succeeded",
    "input": {"ticket_subject": "Charged twice for June invoice"},
    "output": {"category": "billing"},
    "metadata": {"workflow": {"id": "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901", "version": "3"}},
    "error": None,
    "executions": [],
    "tags": ["support-triage", "production"],
}


def workflow_run(**changes: Any) -> dict[str, Any]:
    """The contract's example run, with ``changes`` applied."""
    run = copy.deepcopy(_WORKFLOW)
    run.update(changes)
    return run


def node_run(parent: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A succeeded node run under ``parent``."""
    run = workflow_run(
        id=str(uuid.uuid4()),
        name="Classifier",
        type="node",
        parent_run_id=parent["id"],
        start_time="2026-06-10T09:15:22.5+00:00",
        end_time="2026-06-10T09:15:30+00:00",
        metadata={
            "node": {"id": "node-1", "name": "Classifier", "type": "dynamiq.nodes.tools.Python", "group": "tools"}
        },
    )
    run.update(changes)
    return run


def body(*runs: dict[str, Any]) -> bytes:
    """A request body holding ``runs``."""
    return orjson.dumps({"runs": list(runs)})
