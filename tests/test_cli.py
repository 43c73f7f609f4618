"""The ``dynamiq-otel`` console script, run as a real subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from config import MASK

SCRIPT = Path(sys.executable).with_name("dynamiq-otel")
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "adapter.cli"]
NO_KEY_LINE = (
    "dynamiq-otel: invalid settings: no access key configured: set DYNAMIQ_OTEL_ACCESS_KEYS (or access_keys in "
    "the config file); for a local trial only, set auth_disabled: true"
)


def free_port() -> int:
    """A loopback port nobody listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Only what a process needs to start, plus ``extra``; nothing of this machine's OTEL/DYNAMIQ settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- check-config ------------------------------------------------------------------------------


def test_check_config_prints_masked_json(tmp_path: Path) -> None:
    config = tmp_path / "dynamiq-otel.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\notlp_protocol: grpc\notlp_endpoint: http://collector:4317\n"
        "otlp_headers: {X-Scope-OrgID: tenant-1}\n",
        encoding="utf-8",
    )
    result = run_cli(
        tmp_path,
        "check-config",
        "--config",
        str(config),
        DYNAMIQ_OTEL_ACCESS_KEYS="first-cli-secret, second-cli-secret",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="Authorization=Bearer%20header-cli-secret,X-Scope-OrgID=tenant-2",
        OTEL_SERVICE_NAME="svc-from-env",
    )
    assert (result.returncode, result.stderr) == (0, "")
    data = json.loads(result.stdout)
    assert {
        key: data[key]
        for key in (
            "access_keys",
            "otlp_headers",
            "data_dir",
            "otlp_protocol",
            "traces_endpoint",
            "service_name",
            "effective_project_name",
            "auth_disabled",
        )
    } == {
        "access_keys": [MASK, MASK],
        "otlp_headers": {"authorization": MASK, "x-scope-orgid": "tenant-2"},
        "data_dir": str(tmp_path / "data"),
        "otlp_protocol": "grpc",
        "traces_endpoint": "http://collector:4317",
        "service_name": "svc-from-env",
        "effective_project_name": "svc-from-env",
        "auth_disabled": False,
    }
    for secret in ("first-cli-secret", "second-cli-secret", "header-cli-secret"):
        assert secret not in result.stdout
    assert not (tmp_path / "data").exists(), "check-config must not create the store"


@pytest.mark.parametrize(
    ("args", "env", "expected_prefix"),
    [
        pytest.param(
            ["check-config"],
            {"DYNAMIQ_OTEL_ACCESS_KEYS": "k", "DYNAMIQ_OTEL_PORT": "eighty"},
            "dynamiq-otel: invalid setting 'port' (environment: DYNAMIQ_OTEL_PORT): Input should be a valid integer",
            id="bad-port",
        ),
        pytest.param(
            ["check-config"],
            {"DYNAMIQ_OTEL_ACCESS_KEYS": "k", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
            "dynamiq-otel: invalid setting 'otlp_timeout' (environment: DYNAMIQ_OTEL_OTLP_TIMEOUT or "
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT): Input should be a valid integer",
            id="bad-otel-timeout",
        ),
        pytest.param(
            ["serve"],
            {"DYNAMIQ_OTEL_ACCESS_KEYS": "k", "DYNAMIQ_OTEL_LOG_LEVEL": "chatty"},
            "dynamiq-otel: invalid setting 'log_level' (environment: DYNAMIQ_OTEL_LOG_LEVEL): Input should be",
            id="serve-bad-log-level",
        ),
        pytest.param(
            ["check-config", "--config", "missing.yaml"],
            {"DYNAMIQ_OTEL_ACCESS_KEYS": "k"},
            "dynamiq-otel: config file missing.yaml does not exist",
            id="missing-config",
        ),
        pytest.param(["serve"], {}, NO_KEY_LINE, id="serve-no-key"),
        pytest.param(["check-config"], {}, NO_KEY_LINE, id="check-config-no-key"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], expected_prefix: str
) -> None:
    result = run_cli(tmp_path, *args, **env)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected_prefix), lines[0]
    assert not (tmp_path / "dynamiq-otel-data").exists(), "nothing may be created when the settings are refused"


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.returncode == 2
    assert "usage: dynamiq-otel" in result.stderr


# --- serve -------------------------------------------------------------------------------------


@dataclass
class ServeRun:
    """What one start / health check / SIGTERM cycle of ``dynamiq-otel serve`` showed."""

    health_status: int
    health_body: bytes
    returncode: int | None
    stopped_within_15s: bool
    stderr: str
    data_dir: Path


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeRun]:
    """Start the service with auth off and the exporter on an unused port, probe it, SIGTERM it."""
    tmp_path = tmp_path_factory.mktemp("serve")
    config = tmp_path / "dynamiq-otel.yaml"
    config.write_text(
        "auth_disabled: true\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"otlp_traces_endpoint: http://127.0.0.1:{free_port()}/v1/traces\n"
        "shutdown_grace: 2\n",
        encoding="utf-8",
    )
    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w", encoding="utf-8") as stderr_file:
        process = subprocess.Popen(
            [*COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)],
            env=clean_env(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
        try:
            status, body = 0, b""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status, body = _get(f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            try:
                returncode: int | None = process.wait(timeout=15)
                stopped = True
            except subprocess.TimeoutExpired:
                returncode, stopped = None, False
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    yield ServeRun(status, body, returncode, stopped, stderr_path.read_text(encoding="utf-8"), tmp_path / "data")


def test_serve_answers_healthz(serve_run: ServeRun) -> None:
    assert (serve_run.health_status, json.loads(serve_run.health_body or b"null")) == (200, {"status": "ok"})


def test_serve_warns_that_auth_is_off(serve_run: ServeRun) -> None:
    assert "AUTHENTICATION IS OFF" in serve_run.stderr


def test_serve_shuts_down_gracefully_on_sigterm(serve_run: ServeRun) -> None:
    """Stopped within 15 s, through the lifespan: the store was closed, so SQLite removed its WAL file."""
    assert serve_run.stopped_within_15s
    assert (serve_run.data_dir / "queue.sqlite3").is_file()
    assert not (serve_run.data_dir / "queue.sqlite3-wal").exists()


def test_serve_exits_0_on_sigterm(serve_run: ServeRun) -> None:
    assert serve_run.returncode == 0


def test_serve_logs_one_json_object_per_line(serve_run: ServeRun) -> None:
    lines = [line for line in serve_run.stderr.splitlines() if line.strip()]
    assert len(lines) > 1
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)


def test_check_config_warns_about_unknown_variable(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "check-config", DYNAMIQ_OTEL_ACCESS_KEYS="k", DYNAMIQ_OTEL_ACESS_KEYS="typo")
    assert (result.returncode, result.stderr) == (
        0,
        "dynamiq-otel: warning: unknown variable DYNAMIQ_OTEL_ACESS_KEYS is ignored\n",
    )
    assert json.loads(result.stdout)["access_keys"] == [MASK]


def test_the_build_switch_is_not_an_unknown_variable(tmp_path: Path) -> None:
    # DYNAMIQ_OTEL_USE_MYPYC is read by setup.py at install time; a shell that built the service
    # and then runs it still has it set.
    result = run_cli(tmp_path, "check-config", DYNAMIQ_OTEL_ACCESS_KEYS="k", DYNAMIQ_OTEL_USE_MYPYC="1")
    assert (result.returncode, result.stderr) == (0, "")
