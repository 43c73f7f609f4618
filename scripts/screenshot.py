"""Take the README's screenshot: a real Dynamiq workflow's trace in Arize Phoenix.

Run it with the project venv's Python once the venvs exist (``bash scripts/test.sh`` builds them)::

    .venv/bin/python scripts/screenshot.py                       # -> docs/images/phoenix-trace.png
    .venv/bin/python scripts/screenshot.py --scenario agent_tools --output /tmp/trace.png

Steps, everything on 127.0.0.1 and in a temporary directory that is removed at the end:

1. starts Phoenix (``scripts/phoenix_local.py`` in ``.venv-phoenix``) on free ports, empty database;
2. starts ``dynamiq-otel serve`` exporting OTLP/HTTP to it (project ``dynamiq``, status OK on
   succeeded runs so the picture shows green OK badges rather than UNSET);
3. runs one real Dynamiq SDK scenario (``tests/sdk/scenarios.py``, default ``nested_agents``: an
   agent that uses another agent with a Python tool, LLM calls to a local fake OpenAI server) with
   the SDK's own ``TracingCallbackHandler`` posting to the service;
4. waits until Phoenix's REST API shows every run of it, picks the trace and the LLM span to open
   (the last call of the most deeply nested agent: it shows the chat messages, model and tokens);
5. renders that trace page with headless Chromium (Debian's ``chromium`` package: ``apt-get install
   -y chromium``), network limited to loopback, and writes the PNG; then loads the page once more
   with ``--dump-dom`` and checks that every span name of the trace was rendered;
6. stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib import error, parse, request

REPO = Path(__file__).resolve().parent.parent
"""The repository root (this file is ``scripts/screenshot.py``)."""
LOOPBACK = "127.0.0.1"
ACCESS_KEY = "screenshot-key"
PROJECT = "dynamiq"
DEFAULT_OUTPUT = REPO / "docs" / "images" / "phoenix-trace.png"
PHOENIX_LAUNCHER = REPO / "scripts" / "phoenix_local.py"
SCENARIOS = REPO / "tests" / "sdk" / "scenarios.py"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")

_HTTP = request.build_opener(request.ProxyHandler({}))  # loopback only: never through a proxy
_STARTED = time.monotonic()


class ScreenshotError(Exception):
    """Something the person running the script has to act on."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.1f}s] {message}", flush=True)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with _HTTP.open(request.Request(url), timeout=timeout) as response:  # noqa: S310 (http://127.0.0.1 only)
        return json.loads(response.read())


def healthy(url: str) -> bool:
    try:
        with _HTTP.open(request.Request(url), timeout=2) as response:  # noqa: S310 (http://127.0.0.1 only)
            return int(response.status) == 200
    except (OSError, error.URLError):
        return False


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


# --- processes -------------------------------------------------------------------------------------


@contextmanager
def child(name: str, command: Sequence[str], log: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group (output to ``log``); stop the group on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        say(f"stopped {name}")


def wait_until(
    process: subprocess.Popen[bytes], log: Path, what: str, ready: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise ScreenshotError(f"{what} did not come up (exit code {process.poll()}); end of {log}:\n{tail}")
        time.sleep(0.25)


def clean_env(*prefixes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({"PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return env


def service_config(port: int, phoenix_port: int, data_dir: Path) -> str:
    values = {
        "host": LOOPBACK,
        "port": port,
        "access_keys": [ACCESS_KEY],
        "data_dir": str(data_dir),
        "otlp_protocol": "http/protobuf",
        "otlp_traces_endpoint": f"http://{LOOPBACK}:{phoenix_port}/v1/traces",
        "project_name": PROJECT,
        "status_ok_on_success": True,
        "retry_initial_backoff": 0.5,
        "retry_max_backoff": 5.0,
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items())


def run_scenario(sdk_python: Path, service_url: str, scenario: str) -> dict[str, Any]:
    command = [str(sdk_python), str(SCENARIOS), "--base-url", service_url, "--access-key", ACCESS_KEY]
    command += ["--scenario", scenario]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=clean_env("OTEL_", "DYNAMIQ_OTEL_"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not summaries or not summaries[0].get("ok"):
        raise ScreenshotError(f"the SDK scenario {scenario} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(summaries[0])


# --- Phoenix ---------------------------------------------------------------------------------------


def otel_trace_id(trace_id: str) -> str:
    """The OTel trace id dynamiq-otel gives a Dynamiq trace id that is a UUID (docs/mapping.md)."""
    return uuid.UUID(trace_id).hex


def project_id(phoenix_url: str) -> str | None:
    for project in get_json(f"{phoenix_url}/v1/projects?limit=1000")["data"]:
        if project["name"] == PROJECT:
            return str(project["id"])
    return None


def trace_spans(phoenix_url: str, trace_id: str) -> list[dict[str, Any]]:
    query = parse.urlencode({"limit": 1000, "trace_id": trace_id})
    return list(get_json(f"{phoenix_url}/v1/projects/{PROJECT}/spans?{query}")["data"])


def wait_for_trace(phoenix_url: str, trace_id: str, runs: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        spans: list[dict[str, Any]] = []
        with contextlib.suppress(OSError, error.URLError):
            spans = trace_spans(phoenix_url, trace_id) if project_id(phoenix_url) else []
        if len(spans) >= runs:
            return spans
        if time.monotonic() > deadline:
            raise ScreenshotError(f"Phoenix shows {len(spans)} of {runs} spans of trace {trace_id}")
        time.sleep(0.5)


def span_to_open(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The most deeply nested LLM span, the latest on a tie (else the root)."""
    by_id = {s["context"]["span_id"]: s for s in spans}

    def depth(span: dict[str, Any]) -> int:
        level = 0
        while span.get("parent_id") in by_id:
            span, level = by_id[span["parent_id"]], level + 1
        return level

    llms = [s for s in spans if s.get("span_kind") == "LLM"]
    if not llms:
        return next(s for s in spans if not s.get("parent_id"))
    return max(llms, key=lambda s: (depth(s), s["start_time"]))


# --- Chromium --------------------------------------------------------------------------------------


def find_chromium(given: str | None) -> str:
    for candidate in [given] if given else CHROMIUM_CANDIDATES:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise ScreenshotError(
        "no Chromium found: install Debian's package (apt-get update && apt-get install -y chromium) "
        "or give --chromium PATH"
    )


def chromium_command(chromium: str, profile: Path, window: str, budget_ms: int) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-proxy-server",
        # every host name but the loopback address fails to resolve: the page can reach nothing else
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}",  # let the single-page app fetch and render first
    ]


def take_screenshot(chromium: str, url: str, output: Path, profile: Path, window: str, budget_ms: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial.png")
    command = [*chromium_command(chromium, profile, window, budget_ms), f"--screenshot={partial}", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0 or not partial.exists():
        raise ScreenshotError(f"Chromium failed ({done.returncode}):\n{done.stderr[-3000:]}")
    partial.replace(output)


def rendered_dom(chromium: str, url: str, profile: Path, window: str, budget_ms: int) -> str:
    command = [*chromium_command(chromium, profile, window, budget_ms), "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    return done.stdout


# --- main ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Screenshot a real Dynamiq trace in Arize Phoenix.")
    parser.add_argument("--scenario", default="nested_agents", help="SDK scenario (tests/sdk/scenarios.py --list)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write (default: %(default)s)")
    parser.add_argument(
        "--phoenix-python",
        type=Path,
        default=Path(os.environ.get("PHOENIX_PYTHON") or REPO / ".venv-phoenix" / "bin" / "python"),
        help="Python of the venv with arize-phoenix (default: $PHOENIX_PYTHON or .venv-phoenix)",
    )
    parser.add_argument(
        "--sdk-python",
        type=Path,
        default=Path(os.environ.get("DYNAMIQ_SDK_PYTHON") or REPO / ".venv-sdk" / "bin" / "python"),
        help="Python of the venv with the dynamiq SDK (default: $DYNAMIQ_SDK_PYTHON or .venv-sdk)",
    )
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")
    parser.add_argument("--window-size", default="1600,1000", help="browser window WIDTH,HEIGHT (default 1600,1000)")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time for the page to render")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (logs) and say where")
    return parser


def run(args: argparse.Namespace, workdir: Path) -> int:
    chromium = find_chromium(args.chromium)
    for what, path in (("Phoenix", args.phoenix_python), ("Dynamiq SDK", args.sdk_python)):
        if not path.exists():
            raise ScreenshotError(f"no {what} venv at {path}: run `bash scripts/test.sh` once (it builds them)")
    taken: set[int] = set()
    phoenix_port, grpc_port, service_port = free_port(taken), free_port(taken), free_port(taken)
    phoenix_url, service_url = f"http://{LOOPBACK}:{phoenix_port}", f"http://{LOOPBACK}:{service_port}"

    phoenix_cmd = [str(args.phoenix_python), str(PHOENIX_LAUNCHER), "--port", str(phoenix_port)]
    phoenix_cmd += ["--grpc-port", str(grpc_port), "--data-dir", str(workdir / "phoenix")]
    phoenix_log = workdir / "phoenix.log"
    with child("Phoenix", phoenix_cmd, phoenix_log, clean_env("PHOENIX_", "OTEL_")) as phoenix:
        say(f"starting Phoenix on {phoenix_url}")
        wait_until(phoenix, phoenix_log, "Phoenix", lambda: healthy(f"{phoenix_url}/healthz"), 180)

        config = workdir / "dynamiq-otel.yaml"
        config.write_text(service_config(service_port, phoenix_port, workdir / "data"), encoding="utf-8")
        service_cmd = [sys.executable, "-m", "adapter.cli", "serve", "--config", str(config)]
        service_log = workdir / "dynamiq-otel.log"
        with child("dynamiq-otel", service_cmd, service_log, clean_env("OTEL_", "DYNAMIQ_OTEL_")) as service:
            say(f"starting dynamiq-otel on {service_url}")
            wait_until(service, service_log, "dynamiq-otel", lambda: healthy(f"{service_url}/healthz"), 60)

            say(f"running the SDK scenario {args.scenario!r}")
            summary = run_scenario(args.sdk_python, service_url, args.scenario)
            trace_id = otel_trace_id(summary["trace_ids"][0])
            spans = wait_for_trace(phoenix_url, trace_id, summary["run_count"], 90)
            say(f"Phoenix shows {len(spans)} spans in trace {trace_id}")

        selected = span_to_open(spans)
        url = f"{phoenix_url}/projects/{project_id(phoenix_url)}/traces/{trace_id}"
        url += "?" + parse.urlencode({"selectedSpanNodeId": selected["id"]})
        profile = workdir / "chromium-profile"
        say(f"rendering {url} (span {selected['name']!r} open)")
        take_screenshot(chromium, url, args.output, profile, args.window_size, args.budget_ms)
        dom = rendered_dom(chromium, url, profile, args.window_size, args.budget_ms)
        missing = sorted({s["name"] for s in spans if s["name"] not in dom})
        if missing:
            raise ScreenshotError(f"the page did not render the spans {missing}; try a larger --budget-ms")
    say(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.output = args.output.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="dynamiq-otel-screenshot-"))
    try:
        return run(args, workdir)
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if args.keep_dir:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
