"""Start and stop the processes of a benchmark: the sink, the service, the bare echo (127.0.0.1 only).

Every process is started here with ``subprocess.Popen`` and stopped by its own pid (SIGTERM, then
SIGKILL after a timeout); uvicorn stops its worker processes itself.
"""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACCESS_KEY = "bench-access-key-0123456789"
CODE_DIR: Path | None = None
"""A snapshot of the service's packages (``bench.run`` sets it): the service runs from there, so a
colleague's commit in the middle of a long benchmark does not change the code under test."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_", "PROMETHEUS_"))}
    paths = [str(CODE_DIR)] if CODE_DIR else []
    paths.append(str(ROOT))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@dataclass
class Started:
    """A running process and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _popen(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        # ``python -m`` puts the working directory first on sys.path: run from the snapshot
        cwd = CODE_DIR or ROOT
        environment = {**_clean_env(), **(env or {})}
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=handle, stderr=subprocess.STDOUT)


def listening_pids(port: int) -> set[int]:
    """Processes holding a listening TCP socket on ``port`` (from /proc/net/tcp and /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    owners = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    owners.add(int(entry))
                    break
            except OSError:
                continue
    return owners


def _wait(started: Started, probe: Any, timeout: float) -> None:
    """Until ``probe()`` succeeds *and* the port is ours (another team's server may have raced us to it)."""
    from bench.procstat import descendants

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise RuntimeError(f"{started.name} exited with {started.process.returncode}:\n{started.tail()}")
        try:
            if probe():
                if listening_pids(started.port) & set(descendants(started.pid)):
                    return
                started.stop()
                raise RuntimeError(f"port {started.port} taken by another process; {started.name} not started")
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    started.stop()
    raise RuntimeError(f"{started.name} not ready after {timeout}s:\n{started.tail()}")


def _retrying(start: Any, attempts: int = 3) -> Started:
    """Start with fresh ports up to ``attempts`` times (a free port can be taken before we bind it)."""
    for attempt in range(1, attempts + 1):
        try:
            started: Started = start()
            return started
        except RuntimeError:
            if attempt == attempts:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _get_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - a loopback URL we built
        return bool(answer.status == 200)


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def _post_ok(url: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310
        return bool(answer.status == 200)


def start_sink(workdir: Path) -> Started:
    return _retrying(lambda: _start_sink(workdir))


def _start_sink(workdir: Path) -> Started:
    grpc_port, http_port = free_port(), free_port()
    log = workdir / "sink.log"
    command = [
        sys.executable,
        str(ROOT / "bench" / "sink.py"),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
    ]
    started = Started("sink", _popen(command, log), http_port, log, {"grpc_port": grpc_port})
    _wait(started, lambda: _get_ok(f"http://127.0.0.1:{http_port}/stats"), 20)
    return started


def sink_endpoint(sink: Started, protocol: str) -> str:
    """Where an exporter over ``protocol`` (grpc | http) reaches ``sink``."""
    return f"http://127.0.0.1:{sink.extra['grpc_port']}" if protocol == "grpc" else f"http://127.0.0.1:{sink.port}"


def start_service(
    workdir: Path, *, workers: int, protocol: str, sink: Started, settings: dict[str, Any] | None = None
) -> Started:
    """``dynamiq-otel serve --workers N`` exporting to ``sink`` over ``protocol`` (grpc | http)."""
    return _retrying(lambda: _start_service(workdir, workers, protocol, sink, settings))


def _start_service(
    workdir: Path, workers: int, protocol: str, sink: Started, settings: dict[str, Any] | None
) -> Started:
    port = free_port()
    data_dir = workdir / f"data-{port}"
    config: dict[str, Any] = {
        "data_dir": str(data_dir),
        "access_keys": [ACCESS_KEY],
        "otlp_protocol": "grpc" if protocol == "grpc" else "http/protobuf",
        "otlp_endpoint": sink_endpoint(sink, protocol),
        **(settings or {}),
    }
    path = workdir / f"service-{port}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = workdir / f"service-{port}.log"
    command = [sys.executable, "-m", "adapter.cli", "serve", "--config", str(path),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]  # fmt: skip
    started = Started("service", _popen(command, log), port, log, {"data_dir": data_dir, "config": config})
    _wait(started, lambda: _get_ok(f"http://127.0.0.1:{port}/healthz"), 60)
    children = (workers if workers > 1 else 0) + int(config.get("export_processes", 0))
    if children:
        _wait_workers(started, children)
    return started


def start_echo(workdir: Path, *, workers: int) -> Started:
    """The bare Litestar echo (``bench/echo_app.py``) under uvicorn, like the service."""
    return _retrying(lambda: _start_echo(workdir, workers))


def _start_echo(workdir: Path, workers: int) -> Started:
    port = free_port()
    log = workdir / f"echo-{port}.log"
    command = [sys.executable, "-m", "uvicorn", "bench.echo_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    started = Started("echo", _popen(command, log), port, log)
    _wait(started, lambda: _post_ok(f"http://127.0.0.1:{port}/v1/traces"), 60)
    if workers > 1:
        _wait_workers(started, workers)
    return started


TEXTBOOK_QUEUE = 4_000_000
"""The textbook bridge's span queue in the benchmark: large enough that it drops nothing it accepted."""


def start_textbook(workdir: Path, *, workers: int, protocol: str, sink: Started) -> Started:
    """The textbook bridge (``bench/textbook_app.py``) under uvicorn, exporting to ``sink``."""
    return _retrying(lambda: _start_textbook(workdir, workers, protocol, sink))


def _start_textbook(workdir: Path, workers: int, protocol: str, sink: Started) -> Started:
    port = free_port()
    log = workdir / f"textbook-{port}.log"
    env = {
        "TEXTBOOK_OTLP_ENDPOINT": sink_endpoint(sink, protocol),
        "TEXTBOOK_OTLP_PROTOCOL": protocol,
        "TEXTBOOK_QUEUE": str(TEXTBOOK_QUEUE),
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # not the default 5 s: the last spans of a window leave at once
    }
    command = [sys.executable, "-m", "uvicorn", "bench.textbook_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    started = Started("textbook", _popen(command, log, env), port, log)
    _wait(started, lambda: _connects(port), 60)
    if workers > 1:
        _wait_workers(started, workers)
    return started


def _wait_workers(started: Started, workers: int, timeout: float = 60.0) -> None:
    """Wait until ``workers`` child processes (uvicorn's workers, export processes) run and each had
    time to start."""
    from bench.procstat import descendants

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the serve process has them (and multiprocessing's resource tracker) below it
        if len(descendants(started.pid)) - 1 >= workers:
            break
        time.sleep(0.1)
    time.sleep(1.5)  # each worker runs its lifespan (store open, export thread) before serving
    if started.process.poll() is not None:
        raise RuntimeError(f"{started.name} exited with {started.process.returncode}:\n{started.tail()}")


def sink_stats(sink: Started) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/stats", timeout=5) as answer:
        result: dict[str, float] = json.loads(answer.read())
        return result


def sink_reset(sink: Started) -> None:
    _post_ok(f"http://127.0.0.1:{sink.port}/reset")
