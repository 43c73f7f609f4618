"""Real processes for end-to-end tests: the service started with its own CLI, and the Dynamiq SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
SDK_SCENARIOS = ROOT / "tests" / "sdk" / "scenarios.py"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sdk_python() -> Path:
    """The interpreter of the venv that holds the real ``dynamiq`` SDK (built by scripts/test.sh).

    Skips the test on a developer machine without it; fails under CI, where it must exist.
    """
    path = Path(os.environ.get("DYNAMIQ_SDK_PYTHON", ROOT / ".venv-sdk" / "bin" / "python"))
    if not path.exists():
        message = f"no Dynamiq SDK venv at {path}: run scripts/test.sh (or set DYNAMIQ_SDK_PYTHON)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def running_service(tmp_path: Path, settings: dict[str, Any], ready_timeout: float = 30.0) -> Iterator[str]:
    """Start ``dynamiq-otel serve`` with ``settings`` as its YAML file; yield its base URL; stop it."""
    port = free_port()
    config = tmp_path / "dynamiq-otel.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **settings}), encoding="utf-8")
    log_path = tmp_path / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_"))}
    command = [
        sys.executable,
        "-m",
        "adapter.cli",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(process, base_url, ready_timeout, log_path)
            yield base_url
        finally:
            stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"service not healthy after {timeout}s:\n{log_path.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def run_sdk(base_url: str, access_key: str, scenarios: list[str], timeout: float = 240.0) -> list[dict[str, Any]]:
    """Run real SDK scenarios against ``base_url``; return their JSON summaries."""
    command = [str(sdk_python()), str(SDK_SCENARIOS), "--base-url", base_url, "--access-key", access_key]
    for scenario in scenarios:
        command += ["--scenario", scenario]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_"))}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"SDK scenarios failed ({done.returncode}):\n{done.stderr[-4000:]}"
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [s["scenario"] for s in summaries] == scenarios, done.stdout[-2000:]
    assert all(s["ok"] for s in summaries), [s for s in summaries if not s["ok"]]
    return summaries
