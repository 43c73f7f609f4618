"""Arize Phoenix for end-to-end tests: a real Phoenix on free loopback ports, and a client of its API.

    with running_phoenix(tmp_path / "phoenix") as phoenix:
        settings = {"otlp_protocol": "grpc", "otlp_traces_endpoint": phoenix.grpc_endpoint,
                    "project_name": "my-test"}
        ...
        spans = phoenix.client.wait_for_spans("my-test", count=12)

Phoenix runs from its own venv (``.venv-phoenix``, which ``scripts/test.sh`` and ``scripts/demo.sh``
build, or the interpreter named by ``PHOENIX_PYTHON``) through ``scripts/phoenix_local.py``, which
binds every Phoenix listener -- the UI/REST/OTLP-HTTP server and the OTLP gRPC server -- to
127.0.0.1 and turns telemetry and external resources off. Its SQLite database lives in the
directory the caller gives (a pytest tmp dir), so every Phoenix starts empty.

Without that venv the test is skipped on a developer's machine and fails under CI (``CI=true``).

``PhoenixClient`` reads back what Phoenix stored through Phoenix's own API: the REST API
(``/v1/projects``, ``/v1/projects/{p}/spans|traces|sessions``) for spans, traces and sessions, and
GraphQL (``/graphql``) for what REST does not return: token counts per span and Phoenix's cost
summaries. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "phoenix_local.py"
LOOPBACK = "127.0.0.1"
_T = TypeVar("_T")


def phoenix_python() -> Path:
    """The interpreter of the venv with ``arize-phoenix``: ``$PHOENIX_PYTHON`` or ``.venv-phoenix``.

    Skips the calling test on a developer machine without it; fails under CI, where it must exist.
    """
    path = Path(os.environ.get("PHOENIX_PYTHON") or ROOT / ".venv-phoenix" / "bin" / "python")
    if not path.exists():
        message = (
            f"no Arize Phoenix venv at {path}: run `bash scripts/test.sh` or `bash scripts/demo.sh --check` "
            "once (they install Phoenix from PyPI into .venv-phoenix), or set PHOENIX_PYTHON"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must create it before the tests run")
        pytest.skip(message)
    return path


# --- the Phoenix process ---------------------------------------------------------------------------


@dataclass
class PhoenixServer:
    """A running Phoenix: where it listens, its process and log, and a client of its API."""

    port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    client: PhoenixClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = PhoenixClient(self.url)

    @property
    def url(self) -> str:
        """Base URL of the UI, the REST/GraphQL API and OTLP/HTTP."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def http_traces_endpoint(self) -> str:
        """``otlp_traces_endpoint`` for ``otlp_protocol: http/protobuf``."""
        return f"{self.url}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        """``otlp_traces_endpoint`` for ``otlp_protocol: grpc`` (plaintext)."""
        return f"http://{LOOPBACK}:{self.grpc_port}"

    def endpoint(self, protocol: str) -> str:
        """The service's ``otlp_traces_endpoint`` for ``protocol`` (``grpc`` or ``http/protobuf``)."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_traces_endpoint

    def log_tail(self, chars: int = 4000) -> str:
        """The end of Phoenix's output, for failure messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@contextmanager
def running_phoenix(data_dir: Path, ready_timeout: float = 180.0) -> Iterator[PhoenixServer]:
    """Start Phoenix (``scripts/phoenix_local.py``) on free loopback ports with its database in
    ``data_dir``; wait for ``GET /healthz``; yield it; stop it (SIGTERM, then SIGKILL)."""
    python = phoenix_python()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    grpc_port = free_port()
    while grpc_port == port:
        grpc_port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}.log"
    command = [str(python), str(LAUNCHER), "--port", str(port), "--grpc-port", str(grpc_port)]
    command += ["--data-dir", str(data_dir)]
    # The launcher drops every PHOENIX_* variable and sets its own (loopback, telemetry off).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update({"PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    server = PhoenixServer(port, grpc_port, process, log_path)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        stop_group(process)


def _wait_ready(server: PhoenixServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"Phoenix exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if server.client.session.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"Phoenix did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def stop_group(process: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    """SIGTERM ``process``'s process group (it was started with ``start_new_session``), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return int(process.returncode)


# --- the API client --------------------------------------------------------------------------------

SPAN_COSTS_QUERY = """
query TraceCosts($project: ID!, $traceId: ID!) {
  node(id: $project) {
    ... on Project {
      trace(traceId: $traceId) {
        traceId
        numSpans
        session { sessionId }
        rootSpan { spanId cumulativeTokenCountPrompt cumulativeTokenCountCompletion cumulativeTokenCountTotal }
        costSummary { prompt { tokens cost } completion { tokens cost } total { tokens cost } }
        spans(first: 1000) {
          edges {
            node {
              spanId
              name
              spanKind
              tokenCountPrompt
              tokenCountCompletion
              tokenCountTotal
              cumulativeTokenCountTotal
              costSummary { prompt { tokens cost } completion { tokens cost } total { tokens cost } }
            }
          }
        }
      }
    }
  }
}
"""


class PhoenixClient:
    """A small client of one Phoenix's REST and GraphQL API (no proxies: loopback only)."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy from the environment

    def get(self, path: str, **params: Any) -> Any:
        """``GET <base>/<path>`` with ``params``; the decoded JSON body (raises unless 2xx)."""
        response = self.session.get(f"{self.base_url}{path}", params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        """Run a GraphQL query; its ``data`` (raises on errors)."""
        response = self.session.post(
            f"{self.base_url}/graphql", json={"query": query, "variables": variables}, timeout=self.timeout
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return dict(body["data"])

    def _pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=1000, **params, **({"cursor": cursor} if cursor else {}))
            items.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def projects(self) -> dict[str, str]:
        """Project name -> Phoenix's project id (a GraphQL global id)."""
        return {p["name"]: p["id"] for p in self._pages("/v1/projects")}

    def project_id(self, name: str) -> str | None:
        """The id of project ``name``, or None while it does not exist (Phoenix creates it with its
        first span)."""
        return self.projects().get(name)

    def spans(self, project: str, **filters: Any) -> list[dict[str, Any]]:
        """Every span of ``project`` (name or id) as REST returns it: ``context`` (trace/span id),
        ``parent_id``, ``name``, ``span_kind``, ``start_time``/``end_time`` (ISO 8601, microseconds),
        ``status_code``/``status_message``, ``events`` and flattened ``attributes``. [] while the
        project does not exist."""
        try:
            return self._pages(f"/v1/projects/{project}/spans", **filters)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:  # no such project (yet)
                return []
            raise

    def traces(self, project: str) -> list[dict[str, Any]]:
        """Every trace of ``project`` (REST): trace id, times, token counts."""
        return self._pages(f"/v1/projects/{project}/traces")

    def sessions(self, project: str) -> list[dict[str, Any]]:
        """Every session of ``project`` (REST): ``session_id``, its ``traces``, token counts."""
        return self._pages(f"/v1/projects/{project}/sessions")

    def trace_costs(self, project: str, trace_id: str) -> dict[str, Any]:
        """GraphQL view of one trace: per-span token counts and Phoenix's cost summaries, the root's
        cumulative token counts and the trace's cost summary."""
        project_id = self.project_id(project) or project
        data = self.graphql(SPAN_COSTS_QUERY, project=project_id, traceId=trace_id)
        trace = data["node"]["trace"]
        if trace is None:
            raise AssertionError(f"Phoenix has no trace {trace_id} in project {project}")
        trace["spans"] = [edge["node"] for edge in trace["spans"]["edges"]]
        return dict(trace)

    def wait_for_spans(
        self,
        project: str,
        count: int,
        timeout: float = 90.0,
        settle: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Poll until ``project`` has at least ``count`` spans, then once more after ``settle``
        seconds (so a late surplus shows); return them. Fails with what it saw on time-out."""
        spans = wait_until(
            lambda: found if len(found := self.spans(project)) >= count else None,
            timeout,
            lambda: f"{count} spans in Phoenix project {project!r} (has {len(self.spans(project))})",
        )
        time.sleep(settle)
        return self.spans(project) or spans

    def trace_url(self, trace_id: str) -> str:
        """A UI link to one trace (Phoenix's own redirect resolves the project)."""
        return f"{self.base_url}/redirects/traces/{trace_id}"


def wait_until(probe: Callable[[], _T | None], timeout: float, what: Callable[[], str] | str) -> _T:
    """Call ``probe`` until it returns something other than None (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(0.5)


# --- network hygiene -------------------------------------------------------------------------------


def _socket_table() -> dict[str, tuple[str, str, int, str, int]]:
    """inode -> (state, local address, local port, remote address, remote port) of every TCP socket."""
    table = {}
    for name, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (_address(fields[i], width) for i in (1, 2))
                table[fields[9]] = (fields[3], *local, *remote)
    return table


def _address(text: str, width: int) -> tuple[str, int]:
    hex_address, hex_port = text.split(":")
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word in host (little-endian) order
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
    return str(ipaddress.ip_address(packed)), int(hex_port, 16)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _process_tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pids[index]}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(child) for child in children if int(child) not in pids)
        index += 1
    return pids


def foreign_sockets(pid: int) -> list[str]:
    """TCP sockets of process ``pid`` (and its children) that are not loopback-only: a listener on
    another address, or a connection to a peer outside 127.0.0.0/8 / ::1. Empty when all is local."""
    table = _socket_table()
    problems = []
    for process in _process_tree(pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{process}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if not target.startswith("socket:["):
                        continue
                    entry = table.get(target[len("socket:[") : -1])
                    if entry is None:
                        continue
                    state, local, local_port, remote, remote_port = entry
                    if state == "0A" and not _is_loopback(local):  # LISTEN
                        problems.append(f"pid {process} listens on {local}:{local_port}")
                    elif state != "0A" and remote_port and not _is_loopback(remote):
                        problems.append(f"pid {process} is connected to {remote}:{remote_port}")
    return problems


# --- what Phoenix must show for real SDK runs ------------------------------------------------------

KIND_BY_GROUP = {"llms": "LLM", "agents": "AGENT", "tools": "TOOL", "embedders": "EMBEDDING", "retrievers": "RETRIEVER"}
"""OpenInference span kind by Dynamiq node group; workflows, flows and anything else are CHAIN."""
RUN_ID = "dynamiq.run.id"
EXECUTION_ID = "dynamiq.execution.id"
COST_KEYS = {
    "prompt": "dynamiq.metadata.usage.prompt_tokens_cost_usd",
    "completion": "dynamiq.metadata.usage.completion_tokens_cost_usd",
    "total": "dynamiq.metadata.usage.total_tokens_cost_usd",
}
"""Where the SDK's own costs (``metadata.usage.*_cost_usd``) show in Phoenix: the service sends
``dynamiq.metadata`` as one JSON string, and Phoenix parses every attribute whose key ends in
``metadata`` into an object, which its REST API returns flattened."""


def expected_kind(run: dict[str, Any]) -> str:
    """The ``span_kind`` Phoenix must show for an SDK run."""
    return KIND_BY_GROUP.get(run.get("node_group") or "", "CHAIN")


def sdk_runs(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every run of the scenarios' summaries by run id (a run re-sent by a reused handler is one)."""
    return {run["id"]: run for summary in summaries for run in summary["runs"]}


def retried(run: dict[str, Any]) -> bool:
    """Runs with more than one execution attempt get one child span per attempt."""
    return len(run.get("executions") or []) > 1


def expected_span_count(summaries: list[dict[str, Any]]) -> int:
    """One span per run plus one per attempt of each retried run."""
    runs = sdk_runs(summaries).values()
    return len(runs) + sum(len(run["executions"]) for run in runs if retried(run))


def usage_of(run: dict[str, Any]) -> dict[str, int]:
    """The SDK's token usage of an LLM run (zeros for any other run, or an LLM run without usage)."""
    usage = run.get("usage") if run.get("node_group") == "llms" else None
    return {key: int((usage or {}).get(key) or 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Matched:
    """Phoenix's spans matched to the SDK's runs (through the ``dynamiq.run.id`` attribute)."""

    runs: dict[str, dict[str, Any]]
    span_of: dict[str, dict[str, Any]]
    attempts_of: dict[str, list[dict[str, Any]]]
    spans: list[dict[str, Any]]

    def trace_of(self, run_id: str) -> str:
        return str(self.span_of[run_id]["context"]["trace_id"])


def match_runs(spans: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> Matched:
    """Exactly one span per SDK run, one per attempt of a retried run, and no other span."""
    runs = sdk_runs(summaries)
    span_of: dict[str, dict[str, Any]] = {}
    attempts_of: dict[str, list[dict[str, Any]]] = {}
    strays = []
    for span in spans:
        attributes = span["attributes"]
        run_id = attributes.get(RUN_ID)
        if EXECUTION_ID in attributes:
            parent = next((s for s in spans if s["context"]["span_id"] == span["parent_id"]), None)
            owner = parent["attributes"].get(RUN_ID) if parent else None
            if owner in runs:
                attempts_of.setdefault(owner, []).append(span)
                continue
        elif run_id in runs:
            assert run_id not in span_of, f"run {run_id} ({runs[run_id]['name']}) has two spans in Phoenix"
            span_of[run_id] = span
            continue
        strays.append(f"{span['name']} ({span['context']['span_id']})")
    missing = [f"{run['name']} ({run_id})" for run_id, run in runs.items() if run_id not in span_of]
    assert not missing, f"{len(missing)} of {len(runs)} SDK runs have no span in Phoenix: {missing}"
    assert not strays, f"spans in the project that are no SDK run or attempt: {strays}"
    for run_id, run in runs.items():
        wanted = len(run["executions"]) if retried(run) else 0
        got = len(attempts_of.get(run_id, []))
        assert got == wanted, f"{run['name']} ({run_id}): {got} attempt spans in Phoenix, expected {wanted}"
    return Matched(runs, span_of, attempts_of, spans)


def check_tree(matched: Matched) -> None:
    """Phoenix's parent links and traces are the SDK's run tree: the parent of each run's span is
    the span of its parent run, roots have none, and each Dynamiq trace is one Phoenix trace."""
    for run_id, run in matched.runs.items():
        span = matched.span_of[run_id]
        where = f"{run['name']} ({run_id})"
        parent_run = run["parent_run_id"] if run["parent_run_id"] != run_id else None
        if parent_run is None:
            assert span["parent_id"] is None, f"{where} is an SDK root but has parent {span['parent_id']} in Phoenix"
        else:
            parent = matched.span_of[parent_run]
            assert span["parent_id"] == parent["context"]["span_id"], f"{where}: wrong parent span in Phoenix"
            assert matched.trace_of(run_id) == matched.trace_of(parent_run), f"{where} not in its parent's trace"
        for attempt in matched.attempts_of.get(run_id, []):
            assert attempt["parent_id"] == span["context"]["span_id"], f"{where}: attempt span not under the run"
            assert attempt["context"]["trace_id"] == span["context"]["trace_id"], where
    phoenix_traces: dict[str, set[str]] = {}
    for run_id, run in matched.runs.items():
        phoenix_traces.setdefault(run["trace_id"], set()).add(matched.trace_of(run_id))
    assert all(len(traces) == 1 for traces in phoenix_traces.values()), f"a Dynamiq trace split: {phoenix_traces}"
    assert len({t for traces in phoenix_traces.values() for t in traces}) == len(phoenix_traces), phoenix_traces


def check_kinds_times_status(matched: Matched) -> None:
    """Span kind by node group; the SDK's start/end times to the microsecond; status and errors."""
    for run_id, run in matched.runs.items():
        span = matched.span_of[run_id]
        where = f"{run['name']} ({run_id})"
        assert span["name"] == run["name"], where
        assert span["span_kind"] == expected_kind(run), f"{where}: kind {span['span_kind']}"
        assert _when(span["start_time"]) == _when(run["start_time"]), f"{where}: start {span['start_time']}"
        if run["end_time"] is not None:  # an unfinished run is closed out by the service
            assert _when(span["end_time"]) == _when(run["end_time"]), f"{where}: end {span['end_time']}"
        assert span["attributes"]["session.id"] == run["session_id"], where
        _check_status(span, run["status"], run["error_message"], where)
        for attempt, execution in zip(
            sorted(matched.attempts_of.get(run_id, []), key=lambda s: s["attributes"]["dynamiq.execution.attempt"]),
            run["executions"],
            strict=False,
        ):
            assert attempt["attributes"][EXECUTION_ID] == execution["id"], where
            assert _when(attempt["start_time"]) == _when(execution["start_time"]), f"{where}: attempt start"
            assert _when(attempt["end_time"]) == _when(execution["end_time"]), f"{where}: attempt end"
            _check_status(attempt, execution["status"], execution["error_message"], f"{where} attempt")


def _check_status(span: dict[str, Any], status: str | None, error: str | None, where: str) -> None:
    exceptions = [event for event in span["events"] if event["name"] == "exception"]
    if status == "failed":
        assert span["status_code"] == "ERROR", f"{where}: {span['status_code']}"
        assert span["status_message"] == (error or span["attributes"]["error.type"]), where
        assert len(exceptions) == 1, f"{where}: {len(exceptions)} exception events"
        event = exceptions[0]["attributes"]
        assert event["exception.type"] == span["attributes"]["error.type"], where
        if error:
            assert event["exception.message"] == error, where
    elif status == "canceled":
        assert span["status_code"] == "ERROR", f"{where}: {span['status_code']}"
        assert span["status_message"] == error, where
        assert not exceptions, where
    else:  # succeeded, skipped, unfinished
        assert span["status_code"] in ("UNSET", "OK"), f"{where}: {span['status_code']}"
        assert not exceptions, where


def check_sessions(client: PhoenixClient, project: str, matched: Matched) -> None:
    """Phoenix's sessions are the SDK's ``session_id``s, each holding exactly the traces of its
    runs, with the SDK's token totals."""
    wanted: dict[str, set[str]] = {}
    tokens: dict[str, int] = {}
    for run_id, run in matched.runs.items():
        wanted.setdefault(run["session_id"], set()).add(matched.trace_of(run_id))
        tokens[run["session_id"]] = tokens.get(run["session_id"], 0) + usage_of(run)["total_tokens"]
    sessions = {s["session_id"]: s for s in client.sessions(project)}
    got = {session_id: {t["trace_id"] for t in s["traces"]} for session_id, s in sessions.items()}
    assert got == wanted, f"Phoenix sessions {got} != SDK sessions {wanted}"
    for session_id, session in sessions.items():
        assert session["token_count_total"] == tokens[session_id], f"session {session_id!r} tokens"


def check_tokens_and_costs(client: PhoenixClient, project: str, matched: Matched) -> None:
    """Token counts on LLM spans equal the SDK's usage, other spans have none, and each trace's
    totals (REST, GraphQL cost summary and the roots' cumulative counts) equal the sum over its LLM
    runs: nothing is counted twice. Phoenix's costs equal the SDK's own ``*_cost_usd``."""
    by_trace: dict[str, list[str]] = {}
    for run_id in matched.runs:
        by_trace.setdefault(matched.trace_of(run_id), []).append(run_id)
    rest_traces = {t["trace_id"]: t for t in client.traces(project)}
    assert set(rest_traces) == set(by_trace), f"Phoenix traces {sorted(rest_traces)} != {sorted(by_trace)}"
    for trace_id, run_ids in by_trace.items():
        want = {k: sum(usage_of(matched.runs[r])[k] for r in run_ids) for k in ("prompt_tokens", "completion_tokens")}
        want["total_tokens"] = want["prompt_tokens"] + want["completion_tokens"]
        rest = rest_traces[trace_id]
        assert (rest["token_count_prompt"], rest["token_count_completion"], rest["token_count_total"]) == (
            want["prompt_tokens"],
            want["completion_tokens"],
            want["total_tokens"],
        ), f"trace {trace_id}: REST token counts {rest} != SDK {want}"
        view = client.trace_costs(project, trace_id)
        spans = {s["spanId"]: s for s in view["spans"]}
        roots = [matched.span_of[r]["context"]["span_id"] for r in run_ids if matched.span_of[r]["parent_id"] is None]
        assert sum(spans[root]["cumulativeTokenCountTotal"] for root in roots) == want["total_tokens"], trace_id
        want_cost = 0.0
        for run_id in run_ids:
            run, span = matched.runs[run_id], matched.span_of[run_id]
            node = spans[span["context"]["span_id"]]
            where = f"{run['name']} ({run_id})"
            usage = usage_of(run)
            if run.get("node_group") == "llms" and run.get("usage"):
                assert (node["tokenCountPrompt"], node["tokenCountCompletion"], node["tokenCountTotal"]) == (
                    usage["prompt_tokens"],
                    usage["completion_tokens"],
                    usage["total_tokens"],
                ), f"{where}: Phoenix tokens {node} != SDK usage {usage}"
                sdk_cost = {part: span["attributes"].get(key) for part, key in COST_KEYS.items()}
                if sdk_cost["total"] is not None:
                    phoenix_cost = node["costSummary"]
                    assert phoenix_cost is not None, f"{where}: Phoenix computed no cost"
                    for part, value in sdk_cost.items():
                        assert phoenix_cost[part]["cost"] == pytest.approx(value, rel=1e-9, abs=1e-15), (
                            f"{where}: Phoenix {part} cost {phoenix_cost[part]['cost']} != SDK {value}"
                        )
                    want_cost += sdk_cost["total"]
            else:
                assert not node["tokenCountPrompt"] and not node["tokenCountCompletion"], f"{where}: tokens {node}"
                assert node["costSummary"] is None, f"{where}: a cost on a non-LLM span"
        summary = view["costSummary"]
        got = {part: summary[part]["tokens"] or 0 for part in ("prompt", "completion", "total")}  # None: no LLM
        assert got == {
            "prompt": want["prompt_tokens"],
            "completion": want["completion_tokens"],
            "total": want["total_tokens"],
        }, f"trace {trace_id}: cost summary tokens {summary}"
        if want_cost:
            assert summary["total"]["cost"] == pytest.approx(want_cost, rel=1e-9), f"trace {trace_id} cost"


def check_sdk_runs(client: PhoenixClient, project: str, summaries: list[dict[str, Any]]) -> Matched:
    """Every check above, on the spans of ``project``; returns the matching for more checks."""
    matched = match_runs(client.spans(project), summaries)
    check_tree(matched)
    check_kinds_times_status(matched)
    check_sessions(client, project, matched)
    check_tokens_and_costs(client, project, matched)
    return matched
