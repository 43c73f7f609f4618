"""End to end with a real Arize Phoenix: the real Dynamiq SDK runs real workflows, posts them to the
service (started with its CLI), which exports OTLP to Phoenix over gRPC and over HTTP/protobuf.

Everything is read back through Phoenix's own API (REST and GraphQL), not from what we sent:

* the span tree (parent ids) and the traces are the SDK's run tree; retried runs have their attempts;
* span kinds LLM / AGENT / TOOL / CHAIN by node group;
* token counts on LLM spans equal the SDK's usage, and each trace's and session's totals equal the
  sum over its LLM runs (no double counting); Phoenix's own costs equal the SDK's ``*_cost_usd``;
* sessions group the traces of one ``session_id``;
* failed runs are ERROR with the SDK's message and an ``exception`` event; canceled runs are ERROR;
* start and end times equal the SDK's to the microsecond (Phoenix keeps microseconds, see
  docs/phoenix.md for what it drops or changes).

One Phoenix serves the module (it takes 10-20 s to start); each test writes to its own project.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.phoenix import (
    Matched,
    PhoenixClient,
    PhoenixServer,
    check_sdk_runs,
    expected_span_count,
    foreign_sockets,
    running_phoenix,
)
from tests.processes import run_sdk, running_service, sdk_python

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

ACCESS_KEY = "phoenix-e2e-access-key"
SCENARIOS = [
    "linear",
    "llm_usage",
    "agent_tools",
    "function_calling_agent",
    "nested_agents",
    "retry_fail",
    "skipped",
    "canceled",
    "async_run",
    "reused_handler",
    "sub_workflow",
]
"""Every scenario whose ids are fresh on each run (``custom_ids`` has a fixed trace id: its own test)."""


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """One real Phoenix for the module, on free loopback ports, with an empty database."""
    sdk_python()  # skip (or fail in CI) before paying for Phoenix's start
    with running_phoenix(tmp_path_factory.mktemp("phoenix") / "data") as server:
        yield server


def service_settings(endpoint: str, protocol: str, project: str, **extra: Any) -> dict[str, Any]:
    """The service's settings for exporting to Phoenix: fast retries, the test's own project."""
    return {
        "access_keys": [ACCESS_KEY],
        "otlp_protocol": protocol,
        "otlp_traces_endpoint": endpoint,
        "project_name": project,
        "retry_initial_backoff": 0.2,
        "retry_max_backoff": 2.0,
        **extra,
    }


def run_into_phoenix(
    phoenix: PhoenixServer, tmp_path: Path, protocol: str, project: str, scenarios: list[str], **extra: Any
) -> list[dict[str, Any]]:
    """Start the service exporting to ``phoenix`` over ``protocol``, run the SDK scenarios, and wait
    until Phoenix shows a span for every run and attempt; return the SDK's summaries."""
    settings = service_settings(phoenix.endpoint(protocol), protocol, project, **extra)
    tmp_path.mkdir(parents=True, exist_ok=True)
    with running_service(tmp_path, settings) as base_url:
        summaries = run_sdk(base_url, ACCESS_KEY, scenarios)
        phoenix.client.wait_for_spans(project, expected_span_count(summaries))
    return summaries


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sdk_workflows_in_phoenix(phoenix: PhoenixServer, protocol: str, tmp_path: Path) -> None:
    project = f"dynamiq-e2e-{protocol.replace('/', '-')}"
    summaries = run_into_phoenix(phoenix, tmp_path, protocol, project, SCENARIOS)

    matched = check_sdk_runs(phoenix.client, project, summaries)

    kinds = {span["span_kind"] for span in matched.span_of.values()}
    assert kinds == {"LLM", "AGENT", "TOOL", "CHAIN"}, kinds
    assert len({s["session_ids"][0] for s in summaries}) == len(summaries)  # one session per scenario
    check_phoenix_attribute_handling(matched)
    assert phoenix.client.spans("default") == [], "spans reached Phoenix without our project name"
    assert foreign_sockets(phoenix.process.pid) == [], "Phoenix listens or talks beyond 127.0.0.1"


def check_phoenix_attribute_handling(matched: Matched) -> None:
    """What docs/phoenix.md says Phoenix does with our attributes, pinned so a Phoenix upgrade that
    changes it shows up here: unknown ``dynamiq.*`` keys are kept verbatim, any key ending in
    ``metadata`` that holds a JSON string is parsed (REST returns it flattened), and TOOL spans get a
    ``tool.parameters`` object synthesized from ``gen_ai.tool.call.arguments``."""
    for run_id, run in matched.runs.items():
        attributes = matched.span_of[run_id]["attributes"]
        assert attributes["dynamiq.run.id"] == run_id
        assert attributes["dynamiq.run.status"] == run["status"]
        assert attributes["dynamiq.trace.id"] == run["trace_id"]
        assert "dynamiq.metadata" not in attributes, "Phoenix no longer parses *metadata JSON strings"
        if run["node_group"] == "llms" and run["usage"]:
            assert attributes["dynamiq.metadata.usage.prompt_tokens"] == run["usage"]["prompt_tokens"]
            assert attributes["llm.token_count.prompt"] == run["usage"]["prompt_tokens"]
            assert isinstance(attributes["dynamiq.node.config"], str)  # not parsed: no *metadata key
    tools = [matched.span_of[r] for r, run in matched.runs.items() if run["node_group"] == "tools"]
    assert tools
    assert any(key.startswith("tool.parameters.") for span in tools for key in span["attributes"])


def test_fixed_ids_unfinished_and_large_runs(phoenix: PhoenixServer, tmp_path: Path) -> None:
    """The ``custom_ids`` scenario (a handler with a fixed, non-UUID trace id ``checkout-trace-42``,
    session ``session alpha``, tags and metadata), a run cut short by a time-out (``unfinished``,
    accepted and closed out by the service) and a ~1.6 MB batch (``large``)."""
    project = "dynamiq-e2e-custom"
    scenarios = ["custom_ids", "unfinished", "large"]
    summaries = run_into_phoenix(
        phoenix, tmp_path / "first", "http/protobuf", project, scenarios, accept_unfinished_runs=True
    )

    matched = check_sdk_runs(phoenix.client, project, summaries)

    custom = summaries[0]
    sessions = {s["session_id"]: s for s in phoenix.client.sessions(project)}
    assert {t["trace_id"] for t in sessions["session alpha"]["traces"]} == {
        matched.trace_of(run["id"]) for run in custom["runs"]
    }
    for run in custom["runs"]:
        attributes = matched.span_of[run["id"]]["attributes"]
        assert attributes["dynamiq.trace.id"] == "checkout-trace-42"
        assert attributes["tag.tags"] == ["checkout", "priority:high"]
        assert attributes["metadata.customer_tier"] == "gold"  # the OpenInference `metadata` JSON, parsed
    unfinished = next(run for run in summaries[1]["runs"] if run["status"] is None)
    assert matched.span_of[unfinished["id"]]["attributes"]["dynamiq.run.status"] == "unfinished"

    # The same fixed trace id again, now with another project name (and over gRPC): Phoenix files a
    # span under the project of the trace it belongs to, i.e. where that trace id first arrived.
    again = "dynamiq-e2e-custom-again"
    settings = service_settings(phoenix.grpc_endpoint, "grpc", again)
    (tmp_path / "again").mkdir()
    with running_service(tmp_path / "again", settings) as base_url:
        repeat = run_sdk(base_url, ACCESS_KEY, ["custom_ids"])
        phoenix.client.wait_for_spans(project, expected_span_count(summaries + repeat))
    assert repeat[0]["trace_ids"] == ["checkout-trace-42"]
    in_first = {span["attributes"]["dynamiq.run.id"] for span in phoenix.client.spans(project)}
    assert {run["id"] for run in repeat[0]["runs"]} <= in_first, "a known trace's new spans left its project"
    assert again not in phoenix.client.projects(), "Phoenix filed spans of a known trace under a new project"
    trace = phoenix.client.trace_costs(project, matched.trace_of(custom["runs"][0]["id"]))
    assert trace["numSpans"] == 2 * len(custom["runs"])  # both runs in the one trace


def test_example_script_prints_its_trace_url(phoenix: PhoenixServer, tmp_path: Path) -> None:
    """examples/run_workflow.py: a real workflow through the service; the URL it prints is in Phoenix."""
    project = "example-script"
    settings = service_settings(phoenix.http_traces_endpoint, "http/protobuf", project)
    with running_service(tmp_path, settings) as base_url:
        done = subprocess.run(
            [str(sdk_python()), "examples/run_workflow.py", "--base-url", base_url, "--access-key", ACCESS_KEY,
             "--phoenix-url", phoenix.url, "--project", project],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert f"/redirects/traces/{summary['trace_id']}" in done.stdout
    spans = PhoenixClient(phoenix.url).spans(project, trace_id=summary["trace_id"])
    assert len(spans) == summary["runs"] == 7
    assert {span["span_kind"] for span in spans} == {"CHAIN", "AGENT", "LLM", "TOOL"}
