"""The demo: Arize Phoenix + dynamiq-otel on this machine, sample Dynamiq traces, a link to open.

Run it with ``bash scripts/demo.sh`` (which creates the venvs), or directly with the project venv's
Python once they exist::

    .venv/bin/python scripts/demo.py [--check] [--keep-data] [--port 8080] [--phoenix-port 6006]

Steps:

1. picks the ports: 6006 (Phoenix UI and OTLP/HTTP), 4317 (Phoenix OTLP/gRPC) and 8080 (the service)
   when free, else free ones; every server binds 127.0.0.1 only;
2. starts Phoenix (``scripts/phoenix_local.py`` in ``.venv-phoenix``, data in ``.demo/phoenix``,
   log in ``.demo/phoenix.log``) and waits for its ``GET /healthz``;
3. writes ``.demo/dynamiq-otel.yaml`` and starts ``dynamiq-otel serve`` with it (log in
   ``.demo/dynamiq-otel.log``), exporting OTLP/HTTP to Phoenix, and waits for ``GET /healthz``;
4. posts the Dynamiq SDK's own batches from ``tests/fixtures/sdk/*.json`` (or, when there are none,
   one hand-made batch built with ``tests/batches.py``) to ``POST /v1/traces`` with the headers the
   SDK sends. Each demo run gives the runs fresh ids and moves their times so the newest ends now:
   the traces show up in Phoenix's default time range and never collide with an earlier run's;
5. waits until Phoenix's REST API (``GET /v1/projects``, ``GET /v1/projects/{id}/spans``) shows
   every span, with its parent link, and prints where to look; Ctrl-C (or SIGTERM) stops both.

``--check`` does the same without waiting for Ctrl-C: it also verifies that every listener of both
processes is on the loopback interface, prints PASS or FAIL, stops everything and exits 0 or 1.
Unless ``--keep-data`` is given, ``.demo/phoenix`` and ``.demo/data`` start empty.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib import error, parse, request

REPO = Path(__file__).resolve().parent.parent
"""The repository root (this file is ``scripts/demo.py``)."""
DEMO_DIR = REPO / ".demo"
"""Everything the demo writes (gitignored), unless ``--demo-dir`` says otherwise."""
FIXTURES = REPO / "tests" / "fixtures" / "sdk"
"""Trace batches captured from the real Dynamiq SDK (``tests/sdk/capture.py``)."""
PHOENIX_PYTHON = REPO / ".venv-phoenix" / "bin" / "python"
PHOENIX_LAUNCHER = REPO / "scripts" / "phoenix_local.py"

LOOPBACK = "127.0.0.1"
ACCESS_KEY = "demo-key"
"""The demo service's access key (``Authorization: Bearer demo-key``)."""
PROJECT = "dynamiq-demo"
"""The Phoenix project the demo's traces go to (``project_name``)."""
DEFAULT_PORTS = {"service": 8080, "phoenix": 6006, "phoenix-grpc": 4317}
SDK_USER_AGENT = "dynamiq-python/unknown"
"""User-Agent of the hand-made batch (the SDK sends ``dynamiq-python/<version>``)."""
RUN_ATTRIBUTE = "dynamiq.run.id"
ATTEMPT_ATTRIBUTE = "dynamiq.execution.attempt"

_HTTP = request.build_opener(request.ProxyHandler({}))  # loopback only: never through a proxy
_STARTED = time.monotonic()


class DemoError(Exception):
    """Something the person running the demo has to act on; ``str()`` says what."""


@dataclass(frozen=True)
class Paths:
    """Where one demo keeps its files: ``root`` is ``.demo`` unless ``--demo-dir`` says otherwise."""

    root: Path

    @property
    def phoenix_data(self) -> Path:
        """Phoenix's working directory (its SQLite database)."""
        return self.root / "phoenix"

    @property
    def phoenix_log(self) -> Path:
        """Phoenix's output."""
        return self.root / "phoenix.log"

    @property
    def service_data(self) -> Path:
        """The service's ``data_dir`` (its durable SQLite queue)."""
        return self.root / "data"

    @property
    def service_log(self) -> Path:
        """The service's output."""
        return self.root / "dynamiq-otel.log"

    @property
    def service_config(self) -> Path:
        """The generated configuration file of the service."""
        return self.root / "dynamiq-otel.yaml"


def say(message: str) -> None:
    """Print one progress line with the seconds since start."""
    print(f"[{time.monotonic() - _STARTED:5.1f}s] {message}", flush=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``"1 trace"``, ``"2 traces"`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def rel(path: Path) -> str:
    """``path`` relative to the repository root, for messages."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)


# --- HTTP ------------------------------------------------------------------------------------------


def http(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One request; returns (status, body). Connection errors raise ``OSError``."""
    req = request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310 (http://127.0.0.1 only)
    try:
        with _HTTP.open(req, timeout=timeout) as response:
            return int(response.status), response.read()
    except error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON body; ``DemoError`` unless 200."""
    status, body = http("GET", url)
    if status != 200:
        raise DemoError(f"GET {url} answered {status}: {body[:300]!r}")
    return json.loads(body)


# --- ports -----------------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    """A free loopback port not in ``taken``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def choose_port(what: str, requested: int | None, taken: set[int]) -> int:
    """``requested`` (must be free), else the default when free, else any free port."""
    flag = f"--{what}-port" if what != "service" else "--port"
    if requested is not None:
        if requested in taken or not port_is_free(requested):
            raise DemoError(
                f"port {requested} ({what}) is taken on {LOOPBACK}: another program listens there "
                f"(`ss -ltnp 'sport = :{requested}'` shows which). Stop it or pick another port with {flag}."
            )
        port = requested
    elif DEFAULT_PORTS[what] not in taken and port_is_free(DEFAULT_PORTS[what]):
        port = DEFAULT_PORTS[what]
    else:
        port = free_port(taken)
        say(f"port {DEFAULT_PORTS[what]} ({what}) is taken; using {port} instead ({flag} to choose)")
    taken.add(port)
    return port


# --- child processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the demo dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """A server the demo started: its own process group, output in ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        """The last lines of its log, indented, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return "    (no log)"
        return "\n".join(f"    {line}" for line in text)

    def failure(self, what: str) -> DemoError:
        """A ``DemoError`` saying ``what`` went wrong, with the tail of the log."""
        code = self.process.poll()
        state = f"exited with code {code}" if code is not None else "it is still running"
        return DemoError(f"{self.name} {what} ({state}). Last lines of {rel(self.log)}:\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM its process group, wait, then SIGKILL. A second Ctrl-C kills at once."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_child(name: str, command: Sequence[str], log: Path, env: Mapping[str, str]) -> Child:
    """Start ``command`` in its own session with stdout and stderr going to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Child(name, process, log)


def wait_until(child: Child, what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until it is true; fail with the log tail if ``child`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            raise child.failure(f"stopped before {what}")
        with contextlib.suppress(OSError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise child.failure(f"was not {what} within {timeout:.0f} s")
        time.sleep(0.25)


def healthy(url: str) -> Callable[[], bool]:
    """A readiness probe: ``GET url`` answers 200."""
    return lambda: http("GET", url, timeout=2.0)[0] == 200


# --- the two servers -------------------------------------------------------------------------------


def start_phoenix(paths: Paths, python: Path, port: int, grpc_port: int, children: list[Child], timeout: float) -> None:
    """Start Phoenix on 127.0.0.1 (added to ``children`` at once) and wait until it answers ``/healthz``."""
    if not python.exists():
        raise DemoError(f"{rel(python)} does not exist: run `bash scripts/demo.sh`, which creates .venv-phoenix")
    command = [
        str(python),
        str(PHOENIX_LAUNCHER),
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--data-dir",
        str(paths.phoenix_data),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = start_child("Phoenix", command, paths.phoenix_log, env)
    children.append(child)
    say(f"starting Phoenix on http://{LOOPBACK}:{port} (log: {rel(paths.phoenix_log)})")
    wait_until(child, "answering /healthz", healthy(f"http://{LOOPBACK}:{port}/healthz"), timeout)


def service_config(paths: Paths, port: int, phoenix_port: int) -> str:
    """The demo's dynamiq-otel configuration (YAML; keys are the setting names)."""
    values: dict[str, Any] = {
        "host": LOOPBACK,
        "port": port,
        "access_keys": [ACCESS_KEY],
        "data_dir": rel(paths.service_data),
        "otlp_protocol": "http/protobuf",
        "otlp_traces_endpoint": f"http://{LOOPBACK}:{phoenix_port}/v1/traces",
        "project_name": PROJECT,
        "accept_unfinished_runs": True,  # the SDK flushes runs cut short by a node time-out
        "retry_initial_backoff": 0.5,
        "retry_max_backoff": 5.0,
        "shutdown_grace": 5.0,
    }
    lines = ["# Written by scripts/demo.py for the demo; every run rewrites it.", "# Reference: config/settings.py"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def start_service(paths: Paths, port: int, phoenix_port: int, children: list[Child], timeout: float) -> None:
    """Write the config, start ``dynamiq-otel serve`` (added to ``children``), wait for ``/healthz``."""
    paths.service_config.write_text(service_config(paths, port, phoenix_port), encoding="utf-8")
    script = Path(sys.executable).with_name("dynamiq-otel")
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "adapter.cli"]
    command = [*entry, "serve", "--config", rel(paths.service_config)]
    # The environment wins over the config file: keep the caller's OTEL_* / DYNAMIQ_OTEL_* out of it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    child = start_child("dynamiq-otel", command, paths.service_log, env)
    children.append(child)
    say(
        f"starting dynamiq-otel on http://{LOOPBACK}:{port} "
        f"(config: {rel(paths.service_config)}, log: {rel(paths.service_log)})"
    )
    wait_until(child, "answering /healthz", healthy(f"http://{LOOPBACK}:{port}/healthz"), timeout)


# --- the batches -----------------------------------------------------------------------------------


@dataclass
class Batch:
    """One request body's runs, where they came from and the User-Agent the SDK sent."""

    source: str
    runs: list[dict[str, Any]]
    user_agent: str


def _fixture_key(path: Path, order: Sequence[str]) -> tuple[int, str, int]:
    scenario, _, index = path.name.removesuffix(".json").rpartition(".")
    rank = order.index(scenario) if scenario in order else len(order)
    return rank, scenario or path.stem, int(index) if index.isdigit() else 0


def load_fixtures(directory: Path) -> list[Batch]:
    """The SDK batches in ``directory`` (``<scenario>.<n>.json``), in scenario and arrival order."""
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    scenarios: dict[str, Any] = manifest.get("scenarios", {})
    agents = {b.get("file"): b.get("headers", {}).get("User-Agent") for s in scenarios.values() for b in s["batches"]}
    fallback_agent = f"dynamiq-python/{manifest.get('dynamiq_version', 'unknown')}"
    batches = []
    for path in sorted(directory.glob("*.json"), key=lambda p: _fixture_key(p, list(scenarios))):
        if path.name == "manifest.json":
            continue
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
            say(f"skipping {rel(path)}: not a batch (a JSON object with a non-empty 'runs' list)")
            continue
        batches.append(Batch(rel(path), data["runs"], agents.get(path.name) or fallback_agent))
    return batches


def hand_made_batch() -> Batch:
    """A realistic support-triage trace built with ``tests/batches.py``: workflow, flow, LLM, tool."""
    sys.path.insert(0, str(REPO))
    from tests import batches as helpers

    workflow = helpers.workflow_run(id=str(uuid.uuid4()))
    flow = helpers.node_run(
        workflow,
        name="Flow",
        type="flow",
        metadata={"flow": {"id": "flow-triage"}},
        start_time="2026-06-10T09:15:21.2+00:00",
        end_time="2026-06-10T09:15:34+00:00",
    )
    messages = [
        {"role": "system", "content": "Classify the support ticket: billing, bug or other. Answer with one word."},
        {"role": "user", "content": "Charged twice for June invoice"},
    ]
    classify = helpers.node_run(
        flow,
        name="classify-ticket",
        start_time="2026-06-10T09:15:21.4+00:00",
        end_time="2026-06-10T09:15:29.9+00:00",
        input={"ticket_subject": "Charged twice for June invoice"},
        output={"content": "billing"},
        metadata={
            "node": {
                "id": "node-classify",
                "name": "classify-ticket",
                "type": "dynamiq.nodes.llms.OpenAI",
                "group": "llms",
                "model": "gpt-4o-mini",
                "temperature": 0,
                "prompt": {"messages": messages},
            },
            "usage": {"prompt_tokens": 41, "completion_tokens": 1, "total_tokens": 42},
        },
    )
    lookup = helpers.node_run(
        flow,
        name="lookup-invoice",
        start_time="2026-06-10T09:15:30+00:00",
        end_time="2026-06-10T09:15:33.8+00:00",
        input={"category": "billing", "customer": "C-1042"},
        output={"content": {"invoices": ["INV-0611", "INV-0612"]}},
        metadata={
            "node": {
                "id": "node-lookup",
                "name": "lookup-invoice",
                "type": "dynamiq.nodes.tools.Python",
                "group": "tools",
            }
        },
    )
    return Batch("hand-made batch (tests/batches.py)", [workflow, flow, classify, lookup], SDK_USER_AGENT)


def sample_batches() -> list[Batch]:
    """The SDK fixtures when there are any, else the hand-made batch."""
    batches = load_fixtures(FIXTURES) if FIXTURES.is_dir() else []
    if batches:
        say(f"using {len(batches)} batches captured from the Dynamiq SDK in {rel(FIXTURES)}")
        return batches
    say(f"no SDK captures in {rel(FIXTURES)}: using one hand-made batch from tests/batches.py")
    return [hand_made_batch()]


def _parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as sent (naive when it has no offset), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    """``moment`` with UTC assumed when it has no offset (as the service reads it)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _timed(runs: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every object with start_time/end_time: the runs and their executions."""
    for run in runs:
        yield run
        yield from (e for e in run.get("executions") or [] if isinstance(e, dict))


def refresh(batches: Sequence[Batch], now: datetime) -> list[Batch]:
    """Copies whose runs have fresh ids (one mapping for all batches) and times shifted to end ``now``."""
    copies = [Batch(b.source, copy.deepcopy(b.runs), b.user_agent) for b in batches]
    times = [
        t
        for b in copies
        for obj in _timed(b.runs)
        for k in ("start_time", "end_time")
        if (t := _parse_time(obj.get(k))) is not None
    ]
    latest = max(_aware(t) for t in times) if times else now
    shift = now - latest
    namespace, token = uuid.uuid4(), uuid.uuid4().hex[:8]

    def new_id(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        try:
            return str(uuid.uuid5(namespace, str(uuid.UUID(value))))
        except ValueError:
            return f"{value}-{token}"

    for batch in copies:
        for obj in _timed(batch.runs):
            for key in ("start_time", "end_time"):
                if (t := _parse_time(obj.get(key))) is not None:
                    obj[key] = (t + shift).isoformat()
            obj["id"] = new_id(obj.get("id"))
        for run in batch.runs:
            run["trace_id"] = new_id(run.get("trace_id"))
            run["parent_run_id"] = new_id(run.get("parent_run_id"))
    return copies


def post_batches(service_url: str, batches: Sequence[Batch]) -> None:
    """POST each batch as the SDK does; ``DemoError`` on any answer but 200."""
    for batch in batches:
        body = json.dumps({"runs": batch.runs}, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {ACCESS_KEY}",
            "User-Agent": batch.user_agent,
        }
        status, answer = http("POST", f"{service_url}/v1/traces", body, headers, timeout=30.0)
        if status != 200:
            detail = answer[:500].decode(errors="replace")
            raise DemoError(f"POST /v1/traces with {batch.source} answered {status}: {detail}")
    runs = sum(len(b.runs) for b in batches)
    say(f"posted {plural(len(batches), 'batch', 'batches')} ({plural(runs, 'run')}) to {service_url}/v1/traces")


# --- verification in Phoenix -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What Phoenix must show for one run: its span, its parent's span, its retry-attempt spans."""

    run_id: str
    trace_id: str
    parent_run_id: str | None
    attempts: int


def expectations(batches: Sequence[Batch]) -> dict[str, Expected]:
    """One entry per distinct run (a run sent twice, as a reused SDK handler does, is one span)."""
    expected: dict[str, Expected] = {}
    for run in (r for b in batches for r in b.runs):
        executions = run.get("executions") or []
        parent = run.get("parent_run_id") or None
        expected[run["id"]] = Expected(
            run["id"],
            run["trace_id"],
            parent if parent != run["id"] else None,
            len(executions) if len(executions) > 1 else 0,  # attempt spans only for retried runs
        )
    return expected


@dataclass
class Verdict:
    """The outcome of comparing Phoenix's spans with the expectations."""

    problems: list[str]
    spans: int = 0
    traces: int = 0
    attempts: int = 0
    project_id: str | None = None
    featured_trace: str | None = None


def phoenix_project_id(phoenix_url: str) -> str | None:
    """Phoenix's id of the demo project (``GET /v1/projects``), or None before its first span."""
    for project in get_json(f"{phoenix_url}/v1/projects?limit=1000")["data"]:
        if project.get("name") == PROJECT:
            return str(project["id"])
    return None


def phoenix_spans(phoenix_url: str, project_id: str, since: datetime) -> list[dict[str, Any]]:
    """Every span of the project that started at or after ``since`` (``GET /v1/projects/{id}/spans``)."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1000", "start_time": since.isoformat(), **({"cursor": cursor} if cursor else {})}
        page = get_json(f"{phoenix_url}/v1/projects/{parse.quote(project_id)}/spans?{parse.urlencode(query)}")
        spans.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return spans


def compare(spans: Sequence[dict[str, Any]], expected: Mapping[str, Expected]) -> Verdict:
    """Check that every run has exactly one span, in one trace per Dynamiq trace, with the right parent."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        run_id = span.get("attributes", {}).get(RUN_ATTRIBUTE)
        if run_id in expected:
            by_run.setdefault(run_id, []).append(span)
    problems = [
        f"run {r} has {len(by_run.get(r, []))} spans in Phoenix, expected 1"
        for r in expected
        if len(by_run.get(r, [])) != 1
    ]
    if problems:
        return Verdict([f"{len(problems)} of {len(expected)} runs not (yet) right in Phoenix; first: {problems[0]}"])
    span_of = {run_id: found[0] for run_id, found in by_run.items()}
    span_ids = {s["context"]["span_id"] for s in span_of.values()}
    for run in expected.values():
        span = span_of[run.run_id]
        parent = span_of.get(run.parent_run_id) if run.parent_run_id else None
        if run.parent_run_id is None and span.get("parent_id"):
            problems.append(f"run {run.run_id} is a root but its span has parent {span['parent_id']}")
        elif parent is not None and span.get("parent_id") != parent["context"]["span_id"]:
            problems.append(f"run {run.run_id}: span parent {span.get('parent_id')} is not the span of its parent run")
        elif parent is not None and span["context"]["trace_id"] != parent["context"]["trace_id"]:
            problems.append(f"run {run.run_id} is not in its parent run's trace")
    traces = {s["context"]["trace_id"] for s in span_of.values()}
    dynamiq_traces = {r.trace_id for r in expected.values()}
    if len(traces) != len(dynamiq_traces):
        problems.append(f"{len(traces)} traces in Phoenix for {len(dynamiq_traces)} Dynamiq traces")
    in_traces = [s for s in spans if s["context"]["trace_id"] in traces]
    attempts = [s for s in in_traces if s["context"]["span_id"] not in span_ids]
    wanted_attempts = sum(r.attempts for r in expected.values())
    if len(attempts) != wanted_attempts or any(
        s.get("parent_id") not in span_ids or ATTEMPT_ATTRIBUTE not in s.get("attributes", {}) for s in attempts
    ):
        problems.append(f"{len(attempts)} other spans in the traces, expected {wanted_attempts} retry-attempt spans")
    return Verdict(problems, len(in_traces), len(traces), len(attempts), featured_trace=featured(in_traces))


def featured(spans: Sequence[dict[str, Any]]) -> str | None:
    """The trace to show first: the largest one without an error (the newest on a tie)."""
    size: dict[str, int] = {}
    failed: set[str] = set()
    started: dict[str, str] = {}
    for span in spans:
        trace = span["context"]["trace_id"]
        size[trace] = size.get(trace, 0) + 1
        started[trace] = max(started.get(trace, ""), str(span.get("start_time")))
        if span.get("status_code") == "ERROR":
            failed.add(trace)
    candidates = [t for t in size if t not in failed] or list(size)
    return max(candidates, key=lambda t: (size[t], started[t]), default=None)


def wait_for_spans(phoenix_url: str, expected: Mapping[str, Expected], since: datetime, timeout: float) -> Verdict:
    """Poll Phoenix until ``compare`` finds nothing wrong, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        project_id = phoenix_project_id(phoenix_url)
        verdict = Verdict([f"Phoenix has no project {PROJECT!r} yet"])
        if project_id is not None:
            verdict = compare(phoenix_spans(phoenix_url, project_id, since), expected)
            verdict.project_id = project_id
        if not verdict.problems or time.monotonic() > deadline:
            return verdict
        time.sleep(0.5)


# --- listeners -------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pids[index]}/task/{pids[index]}/children").read_text().split()
            pids.extend(int(child) for child in children)
        index += 1
    return pids


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket (from /proc/net/tcp and tcp6)."""
    found = {}
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                hex_address, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_address)
                # the kernel prints each 32-bit word in host (little-endian) order
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
                found[fields[9]] = (str(ipaddress.ip_address(packed)), int(hex_port, 16))
    return found


def exposed_listeners(children: Sequence[Child]) -> list[str]:
    """Listeners of the children (and their children) that are not on a loopback address."""
    listening = _listening_sockets()
    exposed = []
    for child in children:
        for pid in _descendants(child.process.pid):
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        inode = target.removeprefix("socket:[").removesuffix("]")
                        if target.startswith("socket:[") and inode in listening:
                            address, port = listening[inode]
                            ip = ipaddress.ip_address(address)
                            mapped = getattr(ip, "ipv4_mapped", None)
                            if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
                                shown = f"[{address}]" if ":" in address else address
                                exposed.append(f"{child.name} (pid {pid}) listens on {shown}:{port}")
    return exposed


# --- main ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py", description="Phoenix + dynamiq-otel on 127.0.0.1 with sample Dynamiq traces."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="verify the spans in Phoenix, print PASS/FAIL, stop, exit 0/1 (no Ctrl-C needed)",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep .demo/phoenix and .demo/data from the last run")
    parser.add_argument(
        "--demo-dir",
        type=Path,
        default=DEMO_DIR,
        help="where the data, logs and config go (default: .demo in the repository)",
    )
    parser.add_argument("--port", type=int, help="the service's port (default 8080, else a free one)")
    parser.add_argument("--phoenix-port", type=int, help="Phoenix UI / OTLP-HTTP port (default 6006, else a free one)")
    parser.add_argument("--phoenix-grpc-port", type=int, help="Phoenix OTLP/gRPC port (default 4317, else a free one)")
    parser.add_argument(
        "--phoenix-python",
        type=Path,
        default=PHOENIX_PYTHON,
        help="Python of the venv with arize-phoenix (default: .venv-phoenix/bin/python)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for Phoenix to start and for the spans to show (default 120)",
    )
    return parser


def prepare_dirs(paths: Paths, keep: bool) -> None:
    """Create the demo directory; empty Phoenix's and the service's data unless ``keep``."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if not keep:
        for directory in (paths.phoenix_data, paths.service_data):
            shutil.rmtree(directory, ignore_errors=True)


def show(paths: Paths, verdict: Verdict, phoenix_url: str, service_url: str) -> None:
    """Print where to look and how to send one's own traces."""
    project_url = f"{phoenix_url}/projects/{verdict.project_id}"
    print(
        f"""
  {plural(verdict.spans, "span")} in {plural(verdict.traces, "trace")} are in Phoenix (project {PROJECT!r}).

  Phoenix UI:        {project_url}
  A trace to open:   {phoenix_url}/redirects/traces/{verdict.featured_trace}
  dynamiq-otel:      {service_url}   (POST /v1/traces, access key {ACCESS_KEY!r})

  Send your own Dynamiq traces here:
      from dynamiq.callbacks import TracingCallbackHandler
      from dynamiq.clients import DynamiqTracingClient
      from dynamiq.runnables import RunnableConfig

      tracing = TracingCallbackHandler(
          client=DynamiqTracingClient(base_url="{service_url}", access_key="{ACCESS_KEY}"))
      workflow.run(input_data, config=RunnableConfig(callbacks=[tracing]))

  Logs: {rel(paths.phoenix_log)}, {rel(paths.service_log)}    Config: {rel(paths.service_config)}
  Ctrl-C to stop.
""",
        flush=True,
    )


def run(args: argparse.Namespace, children: list[Child]) -> int:
    """Start everything, post, verify; then wait for Ctrl-C (or return the --check result)."""
    taken: set[int] = set()
    phoenix_port = choose_port("phoenix", args.phoenix_port, taken)
    grpc_port = choose_port("phoenix-grpc", args.phoenix_grpc_port, taken)
    service_port = choose_port("service", args.port, taken)
    phoenix_url, service_url = f"http://{LOOPBACK}:{phoenix_port}", f"http://{LOOPBACK}:{service_port}"
    paths = Paths(args.demo_dir.resolve())
    prepare_dirs(paths, args.keep_data)
    batches = refresh(sample_batches(), datetime.now(UTC))
    start_phoenix(paths, args.phoenix_python, phoenix_port, grpc_port, children, args.timeout)
    say("Phoenix is up")
    start_service(paths, service_port, phoenix_port, children, 30.0)
    say("dynamiq-otel is up")
    post_batches(service_url, batches)
    expected = expectations(batches)
    since = min(_aware(t) for b in batches for o in _timed(b.runs) if (t := _parse_time(o.get("start_time"))))
    verdict = wait_for_spans(phoenix_url, expected, since - timedelta(seconds=1), args.timeout)
    exposed = exposed_listeners(children)
    if args.check:
        problems = verdict.problems + [f"not loopback-only: {line}" for line in exposed]
        if problems:
            print("FAIL: " + "\n      ".join(problems), flush=True)
            return 1
        print(
            f"PASS: {plural(verdict.spans, 'span')} ({plural(len(expected), 'run')} + "
            f"{plural(verdict.attempts, 'retry attempt')}) in {plural(verdict.traces, 'trace')} reached Phoenix "
            "with every parent link; all listeners on loopback",
            flush=True,
        )
        return 0
    if verdict.problems:
        raise DemoError(
            "the spans did not show up in Phoenix: "
            + "; ".join(verdict.problems)
            + f". See {rel(paths.service_log)} and {rel(paths.phoenix_log)}."
        )
    for line in exposed:
        say(f"warning: {line}")
    say(f"Phoenix shows all {plural(len(expected), 'run')}, with their parent links")
    show(paths, verdict, phoenix_url, service_url)
    while True:
        for child in children:
            if not child.alive():
                raise child.failure("stopped unexpectedly")
        time.sleep(0.5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the demo, always stopping what it started."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, _interrupt)
    children: list[Child] = []
    code = 1
    try:
        code = run(args, children)
    except DemoError as exc:
        print(f"{'FAIL' if args.check else 'error'}: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(flush=True)
        say("stopping")
        code = 0 if not args.check else 1
    finally:
        for child in reversed(children):  # the service first: it may still be exporting to Phoenix
            child.stop()
        if children:
            say("stopped " + " and ".join(c.name for c in reversed(children)))
    return code


if __name__ == "__main__":
    sys.exit(main())
