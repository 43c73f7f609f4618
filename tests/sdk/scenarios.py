"""Real Dynamiq SDK scenarios that post trace batches to a dynamiq-otel endpoint.

Runs in a venv with the real ``dynamiq`` package installed. Every scenario builds and runs real
Dynamiq workflows with a real ``TracingCallbackHandler`` whose ``DynamiqTracingClient`` posts the
batches to ``<base-url>/v1/traces`` itself; LLM nodes use the SDK's OpenAI connection (openai
client + litellm) pointed at an OpenAI-compatible server (``tests/sdk/fake_openai.py``).

Usage::

    python tests/sdk/scenarios.py --base-url http://127.0.0.1:4318 --access-key KEY \\
        --llm-url http://127.0.0.1:8089/v1 --scenario linear --scenario retry_fail
    python tests/sdk/scenarios.py ... --all
    python tests/sdk/scenarios.py --list

``--llm-url`` may be omitted: the fake OpenAI server is then started in-process.

One JSON line per scenario goes to stdout (logs go to stderr)::

    {"scenario": "linear", "ok": true, "expected_batches": 1, "trace_ids": [...],
     "workflow_runs": [{"run_id", "status", "result_status"}],
     "runs": [{"id", "parent_run_id", "name", "type", "status", "trace_id", "session_id", "source_id",
               "start_time", "end_time", "node_group", "node_type", "usage", "error_message",
               "executions": [{"id", "status", "start_time", "end_time", "error_message"}]}],
     "llm_usage": {"<run id>": {"prompt_tokens", "completion_tokens", "total_tokens"}}, "notes": "..."}

``runs`` is read from ``handler.runs`` in insertion order, which is the order the SDK puts them in
a batch; times are the SDK's own datetimes as ``isoformat()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Offline switches: must be set before litellm / dynamiq are imported.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no model cost map download
    "LITELLM_OFFLINE_MODE": "true",  # litellm: no catalogs / tokenizers / checks fetched on its own
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "true",
    "LITELLM_LOCAL_BLOG_POSTS": "true",
    "LITELLM_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)
# Never fall back to a real key or the public collector.
os.environ.pop("DYNAMIQ_ACCESS_KEY", None)
os.environ.pop("DYNAMIQ_SERVICE_TOKEN", None)
os.environ["OPENAI_API_KEY"] = "sk-fake-key-for-tests"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import litellm  # noqa: E402
from dynamiq import Workflow  # noqa: E402
from dynamiq.callbacks import BaseCallbackHandler, TracingCallbackHandler  # noqa: E402
from dynamiq.clients import DynamiqTracingClient  # noqa: E402
from dynamiq.connections import OpenAI as OpenAIConnection  # noqa: E402
from dynamiq.flows import Flow  # noqa: E402
from dynamiq.nodes import ErrorHandling  # noqa: E402
from dynamiq.nodes.agents import Agent  # noqa: E402
from dynamiq.nodes.llms import OpenAI  # noqa: E402
from dynamiq.nodes.node import NodeDependency  # noqa: E402
from dynamiq.nodes.operators import Choice  # noqa: E402
from dynamiq.nodes.operators.operators import ChoiceOption  # noqa: E402
from dynamiq.nodes.operators.sub_workflow import SubWorkflow  # noqa: E402
from dynamiq.nodes.tools.python import Python  # noqa: E402
from dynamiq.nodes.types import ChoiceCondition, ConditionOperator, InferenceMode  # noqa: E402
from dynamiq.prompts import Message, Prompt  # noqa: E402
from dynamiq.runnables import RunnableConfig, RunnableResult  # noqa: E402

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on provider errors
litellm.telemetry = False

MODEL = "gpt-4o-mini"
FAIL_MODEL = "fail-model"  # fake_openai answers HTTP 500 for any model containing "fail"
LARGE_TARGET_BYTES = 540_000  # UTF-8 bytes of the big string; it appears 3x in the batch (~1.6 MB)


@dataclass
class Ctx:
    base_url: str
    access_key: str
    llm_url: str


@dataclass
class Outcome:
    """What one scenario ran: the handler(s) it used and the workflow results."""

    handlers: list[TracingCallbackHandler]
    results: list[RunnableResult]
    expected_batches: int
    notes: str = ""
    # a scenario that leaves work running in background threads snapshots its runs itself
    snapshot: list[dict] | None = None


# ---------------------------------------------------------------------------------------------
# building blocks


class CancelWhenNodeStarts(BaseCallbackHandler):
    """Not tracing: signals a CancellationToken ``delay`` seconds after the named node starts."""

    def __init__(self, node_name: str, token: Any, delay: float):
        self.node_name = node_name
        self.token = token
        self.delay = delay
        self.timer: threading.Timer | None = None

    def on_node_start(self, serialized: dict[str, Any], input_data: dict[str, Any], **kwargs: Any):
        if serialized.get("name") == self.node_name and self.timer is None:
            self.timer = threading.Timer(self.delay, self.token.cancel)
            self.timer.start()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


def make_handler(ctx: Ctx, **kwargs: Any) -> TracingCallbackHandler:
    client = DynamiqTracingClient(base_url=ctx.base_url, access_key=ctx.access_key, timeout=30)
    return TracingCallbackHandler(client=client, **kwargs)


def connection(ctx: Ctx) -> OpenAIConnection:
    return OpenAIConnection(api_key="sk-fake-key-for-tests", url=ctx.llm_url)


def llm_node(ctx: Ctx, name: str, user: str | None = None, system: str | None = None, **kwargs: Any) -> OpenAI:
    messages = []
    if system:
        messages.append(Message(role="system", content=system))
    if user:
        messages.append(Message(role="user", content=user))
    if messages:
        kwargs["prompt"] = Prompt(messages=messages)
    kwargs.setdefault("model", MODEL)
    return OpenAI(name=name, connection=connection(ctx), **kwargs)


def python_node(node_id: str, name: str, code: str, **kwargs: Any) -> Python:
    return Python(id=node_id, name=name, code=code, **kwargs)


def agent_llm(ctx: Ctx, name: str, **kwargs: Any) -> OpenAI:
    return OpenAI(name=name, connection=connection(ctx), model=MODEL, temperature=0.1, max_tokens=512, **kwargs)


def run_sync(workflow: Workflow, input_data: dict, handler: TracingCallbackHandler, **config: Any) -> RunnableResult:
    return workflow.run_sync(input_data, config=RunnableConfig(callbacks=[handler], **config))


# ---------------------------------------------------------------------------------------------
# scenarios


def scenario_linear(ctx: Ctx) -> Outcome:
    """Python node -> OpenAI LLM node -> Python node, in sequence; succeeds."""
    prepare = python_node(
        "node-prepare-question",
        "prepare-question",
        'def run(inp):\n    return {"content": "What is " + inp["topic"] + "? Answer in one sentence."}\n',
    )
    answer = (
        llm_node(ctx, "answer-llm", user="{{question}}", system="You are a helpful assistant.", id="node-answer-llm")
        .inputs(question=prepare.outputs.content)
        .depends_on(prepare)
    )
    shout = (
        python_node(
            "node-format-answer",
            "format-answer",
            'def run(inp):\n    return {"content": inp["answer"].upper()}\n',
        )
        .inputs(answer=answer.outputs.content)
        .depends_on(answer)
    )
    workflow = Workflow(id="wf-linear", version="3", flow=Flow(id="flow-linear", nodes=[prepare, answer, shout]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"topic": "OpenTelemetry"}, handler)
    return Outcome([handler], [result], expected_batches=1)


def scenario_llm_usage(ctx: Ctx) -> Outcome:
    """A single OpenAI node with system + user messages, temperature and max_tokens; usage reported."""
    node = llm_node(
        ctx,
        "summarize-llm",
        id="node-summarize-llm",
        system="You are a concise assistant that summarizes text.",
        user="Summarize in one line: {{text}}",
        temperature=0.3,
        max_tokens=256,
    )
    workflow = Workflow(id="wf-llm-usage", flow=Flow(id="flow-llm-usage", nodes=[node]))
    handler = make_handler(ctx)
    text = "Dynamiq traces are converted into OpenTelemetry spans and exported over OTLP."
    result = run_sync(workflow, {"text": text}, handler)
    return Outcome([handler], [result], expected_batches=1)


CALCULATOR_CODE = (
    'def run(inp):\n    a = inp.get("a", 0)\n    b = inp.get("b", 0)\n    return {"content": str(a * b)}\n'
)


def scenario_agent_tools(ctx: Ctx) -> Outcome:
    """A ReAct agent (default text inference mode) that calls a Python tool, then answers."""
    calculator = python_node("tool-calculator", "calculator", CALCULATOR_CODE, description="Multiplies a and b.")
    agent = Agent(
        id="node-react-agent",
        name="react-agent",
        role="You are a careful math assistant.",
        llm=agent_llm(ctx, "react-agent-llm"),
        tools=[calculator],
        inference_mode=InferenceMode.DEFAULT,
        max_loops=4,
    )
    workflow = Workflow(id="wf-agent-tools", flow=Flow(id="flow-agent-tools", nodes=[agent]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"input": 'What is 6 times 7? [[call:calculator {"a": 6, "b": 7}]]'}, handler)
    return Outcome([handler], [result], expected_batches=1)


def scenario_function_calling_agent(ctx: Ctx) -> Outcome:
    """An agent in FUNCTION_CALLING mode: tool_calls -> tool run -> provide_final_answer."""
    weather = python_node(
        "tool-get-weather",
        "get_weather",
        'def run(inp):\n    return {"content": "Sunny, 21 C in " + inp.get("city", "?")}\n',
        description="Returns the current weather for a city.",
    )
    agent = Agent(
        id="node-fc-agent",
        name="fc-agent",
        role="You answer weather questions using tools.",
        llm=agent_llm(ctx, "fc-agent-llm"),
        tools=[weather],
        inference_mode=InferenceMode.FUNCTION_CALLING,
        max_loops=4,
    )
    workflow = Workflow(id="wf-function-calling", flow=Flow(id="flow-function-calling", nodes=[agent]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"input": 'Weather in Paris? [[call:get_weather {"city": "Paris"}]]'}, handler)
    return Outcome([handler], [result], expected_batches=1)


def scenario_nested_agents(ctx: Ctx) -> Outcome:
    """An agent that uses another agent (with its own Python tool) as a tool."""
    shout = python_node(
        "tool-shout",
        "shout",
        'def run(inp):\n    return {"content": str(inp.get("input", "")).upper()}\n',
        description="Upper-cases the input text.",
    )
    writer = Agent(
        id="node-writer-agent",
        name="writer-agent",
        description="Writes and formats short texts. Input: the text task.",
        role="You write short slogans.",
        llm=agent_llm(ctx, "writer-agent-llm"),
        tools=[shout],
        max_loops=4,
    )
    lead = Agent(
        id="node-lead-agent",
        name="lead-agent",
        role="You coordinate other agents.",
        llm=agent_llm(ctx, "lead-agent-llm"),
        tools=[writer],
        max_loops=4,
    )
    workflow = Workflow(id="wf-nested-agents", flow=Flow(id="flow-nested-agents", nodes=[lead]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"input": "write a slogan for tracing"}, handler)
    return Outcome([handler], [result], expected_batches=1)


def scenario_retry_fail(ctx: Ctx) -> Outcome:
    """An LLM node with max_retries=2 whose every attempt gets HTTP 500 -> 3 failed executions."""
    prepare = python_node(
        "node-prepare-prompt",
        "prepare-prompt",
        'def run(inp):\n    return {"content": "Classify: " + inp["ticket"]}\n',
    )
    flaky = (
        llm_node(
            ctx,
            "flaky-llm",
            id="node-flaky-llm",
            model=FAIL_MODEL,
            user="{{prompt}}",
            error_handling=ErrorHandling(max_retries=2, retry_interval_seconds=0.05, backoff_rate=2),
        )
        .inputs(prompt=prepare.outputs.content)
        .depends_on(prepare)
    )
    notify = python_node("node-notify", "notify", 'def run(inp):\n    return {"content": "sent"}\n').depends_on(flaky)
    workflow = Workflow(id="wf-retry-fail", flow=Flow(id="flow-retry-fail", nodes=[prepare, flaky, notify]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"ticket": "My invoice is wrong"}, handler)
    return Outcome(
        [handler],
        [result],
        expected_batches=1,
        notes="flaky-llm fails 3 attempts (HTTP 500); notify depends on it and is skipped; flow and workflow fail",
    )


def scenario_skipped(ctx: Ctx) -> Outcome:
    """A Choice routes to one branch; the untaken branch and its dependant are skipped."""
    high = ChoiceOption(
        id="opt-high",
        name="high",
        condition=ChoiceCondition(variable="$.amount", operator=ConditionOperator.NUMERIC_GREATER_THAN, value=100),
    )
    low = ChoiceOption(id="opt-low", name="low")  # fallback, skipped once "high" matched
    route = Choice(id="node-route", name="route-by-amount", options=[high, low])
    manual = python_node(
        "node-manual-review", "manual-review", 'def run(inp):\n    return {"content": "queued for review"}\n'
    )
    manual.depends.append(NodeDependency(node=route, option="opt-high"))
    auto = python_node("node-auto-approve", "auto-approve", 'def run(inp):\n    return {"content": "approved"}\n')
    auto.depends.append(NodeDependency(node=route, option="opt-low"))
    receipt = python_node(
        "node-send-receipt", "send-receipt", 'def run(inp):\n    return {"content": "receipt"}\n'
    ).depends_on(auto)
    workflow = Workflow(id="wf-skipped", flow=Flow(id="flow-skipped", nodes=[route, manual, auto, receipt]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"amount": 250}, handler)
    return Outcome(
        [handler], [result], expected_batches=1, notes="auto-approve (option not taken) and send-receipt are skipped"
    )


def scenario_canceled(ctx: Ctx) -> Outcome:
    """The run's CancellationToken is signalled while the agent waits on a slow LLM call."""
    agent = Agent(
        id="node-slow-agent",
        name="slow-agent",
        role="You answer questions.",
        llm=agent_llm(ctx, "slow-agent-llm"),
        tools=[],
        max_loops=3,
    )
    publish = python_node("node-publish", "publish", 'def run(inp):\n    return {"content": "published"}\n')
    publish.depends_on(agent)
    workflow = Workflow(id="wf-canceled", flow=Flow(id="flow-canceled", nodes=[agent, publish]))
    handler = make_handler(ctx)
    config = RunnableConfig(callbacks=[handler])
    trigger = CancelWhenNodeStarts(node_name="slow-agent-llm", token=config.cancellation.token, delay=0.2)
    config.callbacks.append(trigger)
    try:
        result = workflow.run_sync({"input": "Tell me a story [[SLOW:1.0]]"}, config=config)
    finally:
        trigger.cancel_timer()
    return Outcome(
        [handler],
        [result],
        expected_batches=1,
        notes="token canceled 0.2 s after the agent's LLM call started; the call finishes (1 s), the agent then "
        "sees the token: agent, flow and workflow end 'canceled'; publish never starts (no run)",
    )


def scenario_async_run(ctx: Ctx) -> Outcome:
    """Two LLM nodes in parallel and a Python node joining them, run with ``await workflow.run_async``."""
    pros = llm_node(ctx, "pros-llm", id="node-pros-llm", user="List pros of {{topic}}", max_tokens=128)
    cons = llm_node(ctx, "cons-llm", id="node-cons-llm", user="List cons of {{topic}}", max_tokens=128)
    join = (
        python_node(
            "node-join",
            "join",
            'def run(inp):\n    return {"content": inp["pros"] + " | " + inp["cons"]}\n',
        )
        .inputs(pros=pros.outputs.content, cons=cons.outputs.content)
        .depends_on([pros, cons])
    )
    workflow = Workflow(id="wf-async", flow=Flow(id="flow-async", nodes=[pros, cons, join]))
    handler = make_handler(ctx)

    async def main() -> RunnableResult:
        return await workflow.run_async({"topic": "async tracing"}, config=RunnableConfig(callbacks=[handler]))

    # asyncio.run waits for the default executor, where the SDK sends the batch in async context
    result = asyncio.run(main())
    return Outcome([handler], [result], expected_batches=1)


def scenario_custom_ids(ctx: Ctx) -> Outcome:
    """Handler with non-UUID trace/session/source ids, plus handler tags and metadata."""
    node = llm_node(ctx, "greet-llm", id="node-greet-llm", user="Say hello to {{name}}")
    workflow = Workflow(id="wf-custom-ids", flow=Flow(id="flow-custom-ids", nodes=[node]))
    handler = make_handler(
        ctx,
        trace_id="checkout-trace-42",
        session_id="session alpha",
        source_id="billing-bot",
        tags=["checkout", "priority:high"],
        metadata={"customer_tier": "gold"},
    )
    result = run_sync(workflow, {"name": "Ada"}, handler)
    return Outcome(
        [handler],
        [result],
        expected_batches=1,
        notes="handler tags are copied to every run; handler metadata keys are merged into every run's metadata",
    )


def scenario_reused_handler(ctx: Ctx) -> Outcome:
    """ONE handler for two workflow runs: the 2nd batch re-sends every run of the 1st."""
    node = llm_node(ctx, "echo-llm", id="node-echo-llm", user="Repeat: {{text}}")
    workflow = Workflow(id="wf-reused", flow=Flow(id="flow-reused", nodes=[node]))
    handler = make_handler(ctx)
    first = run_sync(workflow, {"text": "first run"}, handler)
    second = run_sync(workflow, {"text": "second run"}, handler)
    return Outcome(
        [handler],
        [first, second],
        expected_batches=2,
        notes="batch 1 = runs of workflow run 1; batch 2 = runs of workflow run 1 (again) + run 2; same trace_id",
    )


def scenario_sub_workflow(ctx: Ctx) -> Outcome:
    """A workflow whose middle node is a SubWorkflow running an inner flow (Python + LLM)."""
    compute = python_node(
        "node-compute-total",
        "compute-total",
        'def run(inp):\n    return {"content": sum(item["price"] * item["qty"] for item in inp["items"])}\n',
    )
    explain = (
        llm_node(ctx, "explain-total", id="node-explain-total", user="Explain an order total of {{total}} EUR")
        .inputs(total=compute.outputs.content)
        .depends_on(compute)
    )
    inner = Flow(id="flow-pricing", name="pricing-flow", nodes=[compute, explain])
    load = python_node(
        "node-load-order",
        "load-order",
        'def run(inp):\n    return {"content": [{"price": 5, "qty": 2}, {"price": 3, "qty": 1}]}\n',
    )
    pricing = SubWorkflow(id="node-pricing", name="pricing", flow=inner).inputs(items=load.outputs.content)
    pricing.depends_on(load)
    finalize = python_node("node-finalize", "finalize", 'def run(inp):\n    return {"content": "done"}\n').depends_on(
        pricing
    )
    workflow = Workflow(id="wf-sub-workflow", flow=Flow(id="flow-outer", nodes=[load, pricing, finalize]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"order_id": "A-1"}, handler)
    return Outcome([handler], [result], expected_batches=1, notes="inner Flow run is a child of the 'pricing' node run")


def scenario_large(ctx: Ctx) -> Outcome:
    """A Python node returning a ~0.54 MB (UTF-8) string: it appears in the node, flow and workflow
    outputs, so the batch is >= 1.5 MB."""
    code = (
        "def run(inp):\n"
        '    line = "Grüße - 価格 € line of the quarterly report, padded with filler text.\\n"\n'
        '    size = len(line.encode("utf-8"))\n'
        '    count = inp["target_bytes"] // size + 1\n'
        '    return {"content": line * count}\n'
    )
    node = python_node("node-generate-report", "generate-report", code)
    workflow = Workflow(id="wf-large", flow=Flow(id="flow-large", nodes=[node]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"target_bytes": LARGE_TARGET_BYTES}, handler)
    return Outcome(
        [handler],
        [result],
        expected_batches=1,
        notes=f"node output string >= {LARGE_TARGET_BYTES} UTF-8 bytes, repeated in flow and workflow outputs",
    )


def scenario_unfinished(ctx: Ctx) -> Outcome:
    """An agent with a 0.5 s timeout whose LLM call takes 1.5 s: the agent fails with TimeoutError,
    the workflow fails and flushes while the agent's LLM run (still running in the abandoned thread)
    has no end_time / status."""
    agent = Agent(
        id="node-timeout-agent",
        name="timeout-agent",
        role="You answer questions.",
        llm=agent_llm(ctx, "timeout-agent-llm"),
        tools=[],
        max_loops=2,
        error_handling=ErrorHandling(timeout_seconds=0.5),
    )
    workflow = Workflow(id="wf-unfinished", flow=Flow(id="flow-unfinished", nodes=[agent]))
    handler = make_handler(ctx)
    result = run_sync(workflow, {"input": "Think for a long time [[SLOW:1.5]]"}, handler)
    # The LLM call goes on in a background thread and will update handler.runs later (never flushed):
    # snapshot what the flushed batch held, right now.
    snapshot = summarize_runs(handler)
    return Outcome(
        [handler],
        [result],
        expected_batches=1,
        snapshot=snapshot,
        notes="timeout-agent-llm run (and its execution) has end_time=null, status=null in the batch",
    )


SCENARIOS: dict[str, Callable[[Ctx], Outcome]] = {
    "linear": scenario_linear,
    "llm_usage": scenario_llm_usage,
    "agent_tools": scenario_agent_tools,
    "function_calling_agent": scenario_function_calling_agent,
    "nested_agents": scenario_nested_agents,
    "retry_fail": scenario_retry_fail,
    "skipped": scenario_skipped,
    "canceled": scenario_canceled,
    "async_run": scenario_async_run,
    "custom_ids": scenario_custom_ids,
    "reused_handler": scenario_reused_handler,
    "sub_workflow": scenario_sub_workflow,
    "large": scenario_large,
    "unfinished": scenario_unfinished,
}


# ---------------------------------------------------------------------------------------------
# summaries


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _val(value: Any) -> Any:
    return getattr(value, "value", value)


def _usage_totals(usage: Any) -> dict | None:
    if not isinstance(usage, dict):
        return None
    return {key: usage.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def summarize_runs(handler: TracingCallbackHandler) -> list[dict]:
    runs = []
    for run in list(handler.runs.values()):
        metadata = run.metadata if isinstance(run.metadata, dict) else {}
        node = metadata.get("node") if isinstance(metadata.get("node"), dict) else {}
        error = run.error if isinstance(run.error, dict) else None
        runs.append(
            {
                "id": str(run.id),
                "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
                "name": run.name,
                "type": _val(run.type),
                "status": _val(run.status),
                "trace_id": str(run.trace_id),
                "session_id": str(run.session_id),
                "source_id": str(run.source_id),
                "start_time": _iso(run.start_time),
                "end_time": _iso(run.end_time),
                "node_group": _val(node.get("group")) if node else None,
                "node_type": node.get("type") if node else None,
                "usage": _usage_totals(metadata.get("usage")),
                "error_message": error.get("message") if error else None,
                "executions": [
                    {
                        "id": str(ex.id),
                        "status": _val(ex.status),
                        "start_time": _iso(ex.start_time),
                        "end_time": _iso(ex.end_time),
                        "error_message": ex.error.get("message") if isinstance(ex.error, dict) else None,
                    }
                    for ex in list(run.executions)
                ],
            }
        )
    return runs


def summarize(name: str, outcome: Outcome) -> dict:
    runs = outcome.snapshot if outcome.snapshot is not None else []
    if outcome.snapshot is None:
        for handler in outcome.handlers:
            runs.extend(summarize_runs(handler))
    workflow_runs = [r for r in runs if r["type"] == "workflow"]
    return {
        "scenario": name,
        "ok": True,
        "expected_batches": outcome.expected_batches,
        "trace_ids": sorted({str(h.trace_id) for h in outcome.handlers}),
        "session_ids": sorted({str(h.session_id) for h in outcome.handlers}),
        "source_ids": sorted({str(h.source_id) for h in outcome.handlers}),
        "workflow_runs": [
            {"run_id": wr["id"], "status": wr["status"], "result_status": _val(res.status)}
            for wr, res in zip(workflow_runs, outcome.results)
        ],
        "run_count": len(runs),
        "runs": runs,
        "llm_usage": {r["id"]: r["usage"] for r in runs if r["usage"] is not None},
        "notes": outcome.notes,
    }


def run_scenario(name: str, ctx: Ctx) -> dict:
    started = time.monotonic()
    try:
        # stdout carries only the JSON lines: anything a library prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            summary = summarize(name, SCENARIOS[name](ctx))
    except Exception as exc:  # report and go on with the next scenario
        summary = {"scenario": name, "ok": False, "error": repr(exc), "traceback": traceback.format_exc()}
    summary["duration_s"] = round(time.monotonic() - started, 3)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run real Dynamiq SDK scenarios that post trace batches.")
    parser.add_argument("--base-url", help="tracing endpoint base URL; batches go to <base-url>/v1/traces")
    parser.add_argument("--access-key", default="test-access-key", help="sent as 'Authorization: Bearer <key>'")
    parser.add_argument("--llm-url", help="OpenAI-compatible base URL (…/v1); default: start fake_openai in-process")
    parser.add_argument("--scenario", action="append", default=[], choices=sorted(SCENARIOS), help="repeatable")
    parser.add_argument("--all", action="store_true", help="run every scenario, in the documented order")
    parser.add_argument("--list", action="store_true", help="print the scenario names and exit")
    parser.add_argument("--verbose", action="store_true", help="keep the SDK's INFO logs (stderr)")
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if not args.base_url:
        parser.error("--base-url is required")
    names = list(SCENARIOS) if args.all else args.scenario
    if not names:
        parser.error("give --scenario NAME (repeatable) or --all")
    if not args.verbose:
        logging.getLogger("dynamiq").setLevel(logging.WARNING)
        logging.getLogger("dynamiq.utils.logger").setLevel(logging.ERROR)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    fake = None
    llm_url = args.llm_url
    if not llm_url:
        from fake_openai import start_fake_openai, stop_fake_openai

        fake, llm_url = start_fake_openai()
    ctx = Ctx(base_url=args.base_url, access_key=args.access_key, llm_url=llm_url)
    failures = 0
    try:
        for name in names:
            summary = run_scenario(name, ctx)
            failures += not summary["ok"]
            print(json.dumps(summary), flush=True)
    finally:
        if fake is not None:
            stop_fake_openai(fake)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
