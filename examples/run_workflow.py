"""Run a real Dynamiq workflow through dynamiq-otel and print where its trace is in Phoenix.

    python examples/run_workflow.py                     # against `bash scripts/demo.sh`
    python examples/run_workflow.py --base-url http://127.0.0.1:8080 --access-key demo-key \
        --phoenix-url http://127.0.0.1:6006

The workflow is an agent with a calculator tool, followed by a Python node. Its LLM calls go to
OpenAI when OPENAI_API_KEY is set; otherwise to a small OpenAI-compatible stand-in started on
127.0.0.1 (tests/sdk/fake_openai.py), so the example runs offline. Needs the `dynamiq` package
(`bash scripts/example.sh` builds a virtual environment with it and runs this file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no download at import

from dynamiq import Workflow
from dynamiq.callbacks import TracingCallbackHandler
from dynamiq.clients import DynamiqTracingClient
from dynamiq.connections import OpenAI as OpenAIConnection
from dynamiq.flows import Flow
from dynamiq.nodes.agents import Agent
from dynamiq.nodes.llms import OpenAI
from dynamiq.nodes.tools.python import Python
from dynamiq.runnables import RunnableConfig

ROOT = Path(__file__).resolve().parent.parent
CALCULATOR = 'def run(inp):\n    return {"content": str(int(inp["a"]) * int(inp["b"]))}\n'


def build_workflow(connection: OpenAIConnection, model: str) -> Workflow:
    """An agent that uses a calculator tool, then a Python node that formats its answer."""
    llm = OpenAI(name="agent-llm", connection=connection, model=model, temperature=0.1, max_tokens=512)
    calculator = Python(
        name="calculator",
        description='Multiplies two integers. Input: {"a": <int>, "b": <int>}.',
        code=CALCULATOR,
    )
    agent = Agent(name="math-agent", llm=llm, tools=[calculator], role="You answer arithmetic questions.")
    report = (
        Python(
            name="format-report",
            code='def run(inp):\n    return {"content": "Answer: " + str(inp["answer"])}\n',
        )
        .inputs(answer=agent.outputs.content)
        .depends_on(agent)
    )
    return Workflow(flow=Flow(nodes=[agent, report]))


def llm_connection(llm_url: str | None) -> tuple[OpenAIConnection, str, object | None]:
    """OpenAI when a key is set, else the bundled offline stand-in (started here)."""
    if os.environ.get("OPENAI_API_KEY") and not llm_url:
        return OpenAIConnection(api_key=os.environ["OPENAI_API_KEY"]), "gpt-4o-mini", None
    server = None
    if not llm_url:
        sys.path.insert(0, str(ROOT / "tests" / "sdk"))
        from fake_openai import start_fake_openai

        server, llm_url = start_fake_openai()
    return OpenAIConnection(api_key="sk-offline-example", url=llm_url), "gpt-4o-mini", server


def spans_in_phoenix(phoenix_url: str, project: str, trace_hex: str) -> int:
    """How many spans of the trace Phoenix holds (its REST API), 0 when it cannot be asked."""
    url = f"{phoenix_url}/v1/projects/{project}/spans?trace_id={trace_hex}&limit=1000"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a URL the user gave
            return len(json.loads(answer.read())["data"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_trace(phoenix_url: str, project: str, trace_hex: str, runs: int, timeout: float) -> bool:
    """True once Phoenix holds a span for every run of the trace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spans_in_phoenix(phoenix_url, project, trace_hex) >= runs:
            return True
        time.sleep(1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8080", help="dynamiq-otel (default: the demo)")
    parser.add_argument("--access-key", default="demo-key")
    parser.add_argument("--phoenix-url", default="http://127.0.0.1:6006")
    parser.add_argument("--project", default="dynamiq-demo", help="the Phoenix project (project_name setting)")
    parser.add_argument("--llm-url", help="an OpenAI-compatible base URL (default: OpenAI or the offline stand-in)")
    parser.add_argument("--question", default='What is 6 times 7? [[call:calculator {"a": 6, "b": 7}]]')
    args = parser.parse_args()

    connection, model, server = llm_connection(args.llm_url)
    tracing = TracingCallbackHandler(
        client=DynamiqTracingClient(base_url=args.base_url, access_key=args.access_key),
        tags=["example"],
        metadata={"example": "examples/run_workflow.py"},
    )
    try:
        result = build_workflow(connection, model).run_sync(
            input_data={"input": args.question}, config=RunnableConfig(callbacks=[tracing])
        )
    finally:
        if server is not None:
            server.shutdown()
    trace_hex = uuid.UUID(str(tracing.trace_id)).hex
    print(json.dumps({"status": str(result.status), "runs": len(tracing.runs), "trace_id": trace_hex}))
    url = f"{args.phoenix_url}/redirects/traces/{trace_hex}"
    if wait_for_trace(args.phoenix_url, args.project, trace_hex, len(tracing.runs), timeout=30):
        print(f"Your workflow's trace in Phoenix: {url}")
        return 0
    print(f"Posted {len(tracing.runs)} runs; the trace did not show in Phoenix within 30 s: {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
