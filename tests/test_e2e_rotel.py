"""End to end through a collector: the real Dynamiq SDK -> the service -> rotel -> a real Arize Phoenix.

rotel (PyPI package ``rotel``, https://github.com/streamfold/pyrotel) is a small OpenTelemetry
collector written in Rust; the wheel ships its binary as ``rotel/rotel-agent`` inside the package
(no console script). It runs in the foreground with every listener on 127.0.0.1, no internal telemetry (off unless
``--enable-internal-telemetry``) and an environment without ``ROTEL_*`` / ``OTEL_*`` variables, so
it sends to Phoenix and nowhere else; the test checks its sockets while it runs.

Both legs are covered crosswise: service -gRPC-> rotel -HTTP-> Phoenix, and service -HTTP-> rotel
-gRPC-> Phoenix. What Phoenix then shows is checked exactly as in test_e2e_phoenix.py (tree,
kinds, times to the microsecond, status and exception events, sessions, tokens and costs): the
spans went through the collector intact.

The binary is found in the ``rotel`` package of the interpreter running pytest, or at ``$ROTEL_AGENT``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.phoenix import (
    PhoenixServer,
    check_sdk_runs,
    expected_span_count,
    foreign_sockets,
    running_phoenix,
    stop_group,
)
from tests.processes import free_port, run_sdk, running_service, sdk_python

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ACCESS_KEY = "rotel-e2e-access-key"
SCENARIOS = ["llm_usage", "agent_tools", "nested_agents", "retry_fail", "canceled"]
LOOPBACK = "127.0.0.1"


def rotel_agent() -> Path:
    """The rotel binary: ``$ROTEL_AGENT``, else ``rotel-agent`` inside the installed ``rotel`` package.

    Skips on a developer machine without it; fails under CI, where the test extra must install it.
    """
    if os.environ.get("ROTEL_AGENT"):
        path = Path(os.environ["ROTEL_AGENT"])
    else:
        spec = importlib.util.find_spec("rotel")
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / "rotel-agent" if locations else Path("rotel-agent (package rotel not installed)")
    if not path.is_file():
        message = f"no rotel binary at {path}: pip install rotel (PyPI; pre-release only), or set ROTEL_AGENT"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Rotel:
    """A running rotel: its OTLP receivers and its process."""

    grpc_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def endpoint(self, protocol: str) -> str:
        """The service's ``otlp_traces_endpoint`` for ``protocol``."""
        if protocol == "grpc":
            return f"http://{LOOPBACK}:{self.grpc_port}"
        return f"http://{LOOPBACK}:{self.http_port}/v1/traces"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def rotel_command(
    agent: Path, grpc_port: int, http_port: int, exporter_protocol: str, exporter_endpoint: str, workdir: Path
) -> list[str]:
    """rotel's command line: receivers on 127.0.0.1, one OTLP exporter, its files in ``workdir``."""
    return [
        str(agent),
        "--log-format",
        "json",
        "start",
        "--otlp-grpc-endpoint",
        f"{LOOPBACK}:{grpc_port}",
        "--otlp-http-endpoint",
        f"{LOOPBACK}:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-protocol",
        exporter_protocol,  # grpc | http
        "--otlp-exporter-endpoint",
        exporter_endpoint,  # http: the base URL, rotel appends /v1/traces
        "--pid-file",
        str(workdir / "rotel.pid"),  # only used with --daemon; kept out of /tmp all the same
        "--log-file",
        str(workdir / "rotel.log"),
    ]


@contextmanager
def running_rotel(workdir: Path, exporter_protocol: str, exporter_endpoint: str) -> Iterator[Rotel]:
    """Start rotel in the foreground on free loopback ports; wait until both receivers accept
    connections; yield it; stop it."""
    agent = rotel_agent()
    workdir.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    command = rotel_command(agent, grpc_port, http_port, exporter_protocol, exporter_endpoint, workdir)
    # Nothing of the caller's rotel or OpenTelemetry configuration (an exporter, internal telemetry).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTEL_", "OTEL_"))}
    env["NO_COLOR"] = "1"
    log_path = workdir / "rotel.out"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    rotel = Rotel(grpc_port, http_port, process, log_path)
    try:
        _wait_listening(rotel, (grpc_port, http_port), 30.0)
        yield rotel
    finally:
        stop_group(process)


def _wait_listening(rotel: Rotel, ports: tuple[int, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if rotel.process.poll() is not None:
            raise AssertionError(f"rotel exited with {rotel.process.returncode}:\n{rotel.log()}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, pending[0]), timeout=1):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"rotel not listening on {pending} after {timeout:.0f} s:\n{rotel.log()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """One real Phoenix for the module, on free loopback ports, with an empty database."""
    rotel_agent()  # skip (or fail in CI) before paying for Phoenix's start
    sdk_python()
    with running_phoenix(tmp_path_factory.mktemp("phoenix") / "data") as server:
        yield server


@pytest.mark.parametrize(
    ("service_protocol", "rotel_protocol"),
    [("grpc", "http"), ("http/protobuf", "grpc")],
    ids=["service-grpc-rotel-http", "service-http-rotel-grpc"],
)
def test_sdk_runs_reach_phoenix_through_rotel(
    phoenix: PhoenixServer, service_protocol: str, rotel_protocol: str, tmp_path: Path
) -> None:
    project = f"dynamiq-rotel-{service_protocol.replace('/', '-')}"
    phoenix_endpoint = phoenix.url if rotel_protocol == "http" else phoenix.grpc_endpoint
    with running_rotel(tmp_path / "rotel", rotel_protocol, phoenix_endpoint) as rotel:
        settings = {
            "access_keys": [ACCESS_KEY],
            "otlp_protocol": service_protocol,
            "otlp_traces_endpoint": rotel.endpoint(service_protocol),
            "project_name": project,  # a resource attribute: it must survive the collector
            "retry_initial_backoff": 0.2,
            "retry_max_backoff": 2.0,
        }
        with running_service(tmp_path, settings) as base_url:
            summaries = run_sdk(base_url, ACCESS_KEY, SCENARIOS)
            phoenix.client.wait_for_spans(project, expected_span_count(summaries))
        assert foreign_sockets(rotel.process.pid) == [], f"rotel reaches beyond 127.0.0.1:\n{rotel.log()}"
        assert rotel.process.poll() is None, rotel.log()

    matched = check_sdk_runs(phoenix.client, project, summaries)
    assert {span["span_kind"] for span in matched.span_of.values()} == {"LLM", "AGENT", "TOOL", "CHAIN"}
    assert phoenix.client.spans("default") == [], "the project name (a resource attribute) was lost"
