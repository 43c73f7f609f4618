"""Real processes and bookkeeping for the fault tests.

* ``Service``: ``python -m adapter.cli serve --config FILE`` (the users' command) as a Popen that a
  test can SIGKILL, SIGTERM and start again on the same port, data directory and log file.
* ``ReceiverProcess``: ``tests/otlp_receiver.py --jsonl FILE`` as its own process, so it outlives
  service restarts; spans are counted by span id from the JSONL file.
* ``fresh``: a real SDK fixture body with every UUID in it (run, parent, trace, session, execution
  ids) replaced consistently by new ones, so each post is a new set of runs.
* ``Ledger``: what the service answered for every post, and the accounting against what arrived:
  accepted / delivered / lost / duplicated.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests
import yaml

from mapping.ids import span_id_bytes
from tests.processes import ROOT, free_port

ACCESS_KEY = "faults-access-key-0123456789"
FIXTURES = ROOT / "tests" / "fixtures" / "sdk"
RECEIVER_SCRIPT = ROOT / "tests" / "otlp_receiver.py"
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def clean_env() -> dict[str, str]:
    """The environment for child processes: no OTEL_* / DYNAMIQ_OTEL_* of the machine leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_"))}


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process is still there after 20 s; reaped either way."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- fixture bodies ---------------------------------------------------------------------------
def fixture(name: str) -> bytes:
    """The raw bytes of a real SDK batch, e.g. ``fixture("agent_tools.1.json")``."""
    return (FIXTURES / name).read_bytes()


@dataclass(frozen=True)
class Batch:
    """A body to post and the span ids of its runs (one span per run; no fixture used here retries)."""

    body: bytes
    run_ids: tuple[str, ...]
    span_ids: tuple[str, ...]


def batch_of(body: bytes) -> Batch:
    """The runs and their span ids of ``body``."""
    runs = orjson.loads(body)["runs"]
    ids = tuple(str(run["id"]) for run in runs)
    return Batch(body, ids, tuple(span_id_bytes(run_id).hex() for run_id in ids))


def fresh(body: bytes, renames: dict[bytes, bytes] | None = None) -> Batch:
    """``body`` with every UUID replaced by a new one, consistently (``renames`` shares the mapping)."""
    table: dict[bytes, bytes] = {} if renames is None else renames

    def rename(match: re.Match[bytes]) -> bytes:
        old = match.group(0).lower()
        if old not in table:
            table[old] = str(uuid.uuid4()).encode()
        return table[old]

    return batch_of(_UUID.sub(rename, body))


def many_runs_batch(template: bytes, runs: int) -> Batch:
    """One body of ``runs`` runs: copies of ``template``'s runs with fresh ids."""
    out: list[Any] = []
    while len(out) < runs:
        out.extend(orjson.loads(fresh(template).body)["runs"])
    return batch_of(orjson.dumps({"runs": out[:runs]}))


# --- the service ------------------------------------------------------------------------------
class Service:
    """The service as a real process, started with the CLI users run; restartable on the same port."""

    def __init__(
        self, directory: Path, settings: dict[str, Any], *, name: str = "service", wrapper: Sequence[str] = ()
    ) -> None:
        self.wrapper = list(wrapper)  # e.g. unshare: run the service as PID 1 of its own namespace
        self.directory = directory
        self.port = free_port()
        self.data_dir = Path(settings.get("data_dir", directory / "data"))
        self.config = directory / f"{name}.yaml"
        values = {"data_dir": str(self.data_dir), "access_keys": [ACCESS_KEY], **settings}
        self.config.write_text(yaml.safe_dump(values), encoding="utf-8")
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def store_path(self) -> Path:
        return self.data_dir / "queue.sqlite3"

    def start(self, ready_timeout: float = 30.0) -> subprocess.Popen[bytes]:
        """Start ``serve`` and wait for /healthz; returns the Popen (its pid is the serving process)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            *self.wrapper,
            sys.executable,
            "-m",
            "adapter.cli",
            "serve",
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self.process
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"service not healthy after {ready_timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM and wait; returns (exit code, seconds until exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> None:
        """Stop whatever runs (SIGTERM, SIGKILL after 20 s); for finally blocks."""
        if self.process is not None and self.process.poll() is None:
            if self.wrapper:  # `unshare --fork` ignores SIGTERM; --kill-child passes SIGKILL on
                self.kill9()
                return
            stop_process(self.process)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def rss_kib(self) -> int:
        """VmRSS of the serving process (workers=1: the Popen pid serves), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metrics(self) -> dict[str, float]:
        """Prometheus exposition as ``{"name{labels}": value}``."""
        text = requests.get(f"{self.base_url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m adapter.cli ARGS --config FILE`` (e.g. ``dead-letter list``)."""
        command = [sys.executable, "-m", "adapter.cli", *args, "--config", str(self.config)]
        return subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)


# --- the store, read from outside -----------------------------------------------------------------
@dataclass(frozen=True)
class StoreView:
    """The store's rows and running totals, read directly from the SQLite file."""

    totals: tuple[int, int]
    live: tuple[int, int]
    by_state: dict[str, int]
    inflight_span_ids: frozenset[str]

    @property
    def consistent(self) -> bool:
        """The running totals equal the live rows (ready + inflight): nothing half-written."""
        return self.totals == self.live


def read_store(path: Path) -> StoreView:
    """Read the store's state (works while the service runs: WAL readers do not block writers)."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        totals = conn.execute("SELECT batches, bytes FROM totals").fetchone()
        live = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM batches WHERE state != 'dead'").fetchone()
        by_state = dict(conn.execute("SELECT state, count(*) FROM batches GROUP BY state").fetchall())
        inflight: set[str] = set()
        inflight_bodies = "SELECT body FROM batches JOIN bodies USING (id) WHERE state = 'inflight'"
        for (body,) in conn.execute(inflight_bodies):
            inflight.update(batch_of(bytes(body)).span_ids)
    finally:
        conn.close()
    return StoreView((int(totals[0]), int(totals[1])), (int(live[0]), int(live[1])), by_state, frozenset(inflight))


def integrity_check(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# --- the receiver as its own process -----------------------------------------------------------
class ReceiverProcess:
    """``tests/otlp_receiver.py --jsonl`` on fixed free ports; stop/start keep the ports and the file."""

    def __init__(self, directory: Path) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.jsonl = directory / "received-spans.jsonl"
        self.log_path = directory / "receiver.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._parsed = 0
        self._counts: Counter[str] = Counter()

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def start(self, timeout: float = 20.0) -> None:
        command = [
            sys.executable,
            str(RECEIVER_SCRIPT),
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--jsonl",
            str(self.jsonl),
        ]
        with self.log_path.open("ab") as log:  # one line per span goes here, not to a pipe nobody reads
            self.process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _listening(self.http_port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"receiver did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def span_counts(self) -> Counter[str]:
        """How many times each span id arrived (complete JSONL lines only; parsed incrementally)."""
        if not self.jsonl.exists():
            return Counter()
        with self.jsonl.open("rb") as handle:
            handle.seek(self._parsed)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.strip():
                self._counts[json.loads(line)["span_id"]] += 1
        self._parsed += end
        return Counter(self._counts)

    def wait_for(self, span_ids: Iterable[str], timeout: float) -> Counter[str]:
        """Wait until every span id arrived at least once; return the counts."""
        wanted = set(span_ids)
        counts: Counter[str] = Counter()

        def arrived() -> bool:
            nonlocal counts
            counts = self.span_counts()
            return wanted <= counts.keys()

        try:
            wait_until(arrived, timeout, f"{len(wanted)} spans", interval=0.5)
        except AssertionError:
            missing = len(wanted - counts.keys())
            raise AssertionError(f"{missing} of {len(wanted)} accepted runs never arrived in {timeout:g}s") from None
        return counts


class BlackHole:
    """A backend that hangs: the port accepts TCP connections (kernel backlog) but never answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1024)

    def close(self) -> None:
        self.sock.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- posting and accounting --------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What one post got: a status (None: no HTTP answer), Retry-After, the envelope's code."""

    status: int | None
    retry_after: str | None = None
    code: str | None = None
    error: str | None = None
    at: float = 0.0


def post(session: requests.Session, base_url: str, body: bytes, timeout: float = 30.0) -> Answer:
    """POST a batch as the SDK does; connection failures become ``Answer(None, error=...)``."""
    headers = {"Authorization": f"Bearer {ACCESS_KEY}", "Content-Type": "application/json"}
    try:
        reply = session.post(f"{base_url}/v1/traces", data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return Answer(None, error=type(exc).__name__, at=time.monotonic())
    code = None
    if reply.status_code != 200:
        try:
            code = reply.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "<not the envelope>"
    return Answer(reply.status_code, reply.headers.get("Retry-After"), code, at=time.monotonic())


@dataclass
class Ledger:
    """Every post and its answer; ``account`` compares them with what the receiver got."""

    accepted: list[Batch] = field(default_factory=list)
    unanswered: list[Batch] = field(default_factory=list)  # no HTTP answer: may or may not be stored
    refused: list[tuple[Batch, Answer]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, batch: Batch, answer: Answer) -> None:
        with self._lock:
            if answer.status == 200:
                self.accepted.append(batch)
            elif answer.status is None:
                self.unanswered.append(batch)
            else:
                self.refused.append((batch, answer))

    def accepted_span_ids(self) -> set[str]:
        return {span for batch in self.accepted for span in batch.span_ids}

    def account(self, counts: Counter[str]) -> Accounting:
        accepted = self.accepted_span_ids()
        unanswered = {span for batch in self.unanswered for span in batch.span_ids}
        refused = {span for batch, _ in self.refused for span in batch.span_ids}
        delivered = accepted & counts.keys()
        return Accounting(
            batches_accepted=len(self.accepted),
            runs_accepted=len(accepted),
            runs_delivered=len(delivered),
            runs_lost=len(accepted - delivered),
            runs_duplicated=sum(1 for span in delivered if counts[span] > 1),
            extra_deliveries=sum(counts[span] - 1 for span in delivered if counts[span] > 1),
            duplicated_ids=frozenset(span for span in counts if counts[span] > 1),
            unanswered_runs_delivered=len(unanswered & counts.keys()),
            refused_runs_delivered=len(refused & counts.keys()),
            unknown_spans=len(counts.keys() - accepted - unanswered - refused),
        )


@dataclass(frozen=True)
class Accounting:
    """The numbers of the results table."""

    batches_accepted: int
    runs_accepted: int
    runs_delivered: int
    runs_lost: int
    runs_duplicated: int
    extra_deliveries: int
    duplicated_ids: frozenset[str]
    unanswered_runs_delivered: int
    refused_runs_delivered: int
    unknown_spans: int

    def table(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


def report(scenario: str, **numbers: Any) -> None:
    """Print one result line (``-s`` shows it); append it to $FAULTS_REPORT when that is set."""
    line = json.dumps({"scenario": scenario, **numbers}, default=str)
    print(f"FAULTS-RESULT {line}", flush=True)
    target = os.environ.get("FAULTS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


class Poster:
    """A load generator thread: posts fresh copies of ``template`` until stopped, bounded in count and time."""

    def __init__(
        self,
        base_url: str,
        template: bytes,
        ledger: Ledger,
        *,
        rate: float | None = None,
        max_posts: int = 5000,
        max_seconds: float = 60.0,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        self.base_url = base_url
        self.template = template
        self.ledger = ledger
        self.rate = rate
        self.max_posts = max_posts
        self.max_seconds = max_seconds
        self.on_answer = on_answer
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poster", daemon=True)

    def start(self) -> Poster:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "poster did not stop"

    def _run(self) -> None:
        started = time.monotonic()
        with requests.Session() as session:
            for n in range(self.max_posts):
                if self._stop.is_set() or time.monotonic() - started > self.max_seconds:
                    return
                batch = fresh(self.template)
                answer = post(session, self.base_url, batch.body, timeout=10)
                self.ledger.record(batch, answer)
                self.answers.append(answer)
                if self.on_answer is not None:
                    self.on_answer(answer)
                if answer.status is None:
                    time.sleep(0.05)  # the service is down: do not spin
                if self.rate:
                    pause = started + (n + 1) / self.rate - time.monotonic()
                    if pause > 0:
                        self._stop.wait(pause)
