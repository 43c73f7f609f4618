"""``export_processes``: export in processes of their own, supervised by ``serve``.

Real processes throughout: the service started with the users' command, the recording receiver as
its own process, and SIGKILL for the faults. The export processes are found through their own log
lines ("export process started", with their pid), as an operator would find them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import Ledger, ReceiverProcess, Service, fixture, fresh, post, read_store, wait_until

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")  # 6 runs, as the real SDK posted it
RUNS_PER_BATCH = 6


def settings(endpoint: str, **more: Any) -> dict[str, Any]:
    return {"otlp_traces_endpoint": endpoint, "retry_initial_backoff": 0.2, "retry_max_backoff": 1.0, **more}


def log_entries(path: Path, message: str) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == message:
                entries.append(entry)
    return entries


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (its parent has not reaped it yet)
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def post_batches(service: Service, ledger: Ledger, count: int) -> None:
    with requests.Session() as session:
        for _ in range(count):
            batch = fresh(TEMPLATE)
            ledger.record(batch, post(session, service.base_url, batch.body))


def export_pids(service: Service, count: int, timeout: float = 30.0) -> list[int]:
    """Pids of the export processes now running, from their "export process started" lines."""
    found: list[int] = []

    def started() -> bool:
        found[:] = [e["pid"] for e in log_entries(service.log_path, "export process started") if alive(e["pid"])]
        return len(found) >= count

    wait_until(started, timeout, f"{count} export processes")
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_export_processes_deliver_every_batch_and_stop_with_the_service(
    workers: int, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    receiver_process.start()
    config = settings(receiver_process.http_endpoint, workers=workers, export_processes=2, export_nice=5)
    service = make_service(config)
    service.start()
    pids = export_pids(service, 2)
    for pid in pids:  # they run at the configured niceness, the workers at serve's
        assert niceness(pid) == niceness(service.pid) + 5

    ledger = Ledger()
    post_batches(service, ledger, 60)
    assert len(ledger.accepted) == 60, ledger.refused[:3]
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    result = ledger.account(receiver_process.span_counts())
    assert result.runs_delivered == result.runs_accepted == 60 * RUNS_PER_BATCH
    assert result.runs_lost == 0

    # counters written by the export processes are summed into any worker's scrape
    wait_until(lambda: service.metrics().get("dynamiq_otel_runs_exported_total") == 60 * RUNS_PER_BATCH, 10,
               "the export counter")  # fmt: skip
    assert requests.get(f"{service.base_url}/readyz", timeout=5).status_code == 200

    code, _ = service.terminate()
    assert code == 0
    assert not [pid for pid in pids if alive(pid)], "an export process outlived the service"
    stopped = {entry["pid"] for entry in log_entries(service.log_path, "export process stopped")}
    assert stopped == set(pids), "each export process stops cleanly on SIGTERM"


def test_a_killed_export_process_is_restarted_and_nothing_is_lost(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    receiver_process.start()
    service = make_service(settings(receiver_process.http_endpoint, export_processes=1))
    service.start()
    (first,) = export_pids(service, 1)

    ledger = Ledger()
    post_batches(service, ledger, 30)
    os.kill(first, signal.SIGKILL)  # whatever it had claimed is leased to a dead process
    post_batches(service, ledger, 30)
    wait_until(lambda: bool(log_entries(service.log_path, "export process exited; restarting it")), 10, "the restart")
    (exited,) = log_entries(service.log_path, "export process exited; restarting it")
    assert exited["pid"] == first and exited["exit_code"] == -signal.SIGKILL

    (second,) = export_pids(service, 1)
    assert second != first
    assert len(ledger.accepted) == 60
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    result = ledger.account(receiver_process.span_counts())
    assert result.runs_lost == 0
    assert result.runs_delivered == 60 * RUNS_PER_BATCH
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the store to drain")


def test_export_processes_do_not_outlive_a_killed_service(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    """SIGKILL of ``serve`` runs none of its shutdown code; its export processes notice and stop.

    The backend is down, so the accepted batches wait in the store; after a restart with the backend
    up every one of them arrives."""
    service = make_service(settings(receiver_process.http_endpoint, export_processes=2))
    service.start()
    pids = export_pids(service, 2)
    ledger = Ledger()
    post_batches(service, ledger, 20)
    serve_pid = service.pid
    service.kill9()
    killed = time.monotonic()
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the export processes to stop")
    assert time.monotonic() - killed < 5
    gone = log_entries(service.log_path, "the serve process is gone; stopping")
    assert [entry["parent_pid"] for entry in gone] == [serve_pid, serve_pid]

    receiver_process.start()
    service.start()
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    assert ledger.account(receiver_process.span_counts()).runs_lost == 0


def test_ctrl_c_stops_workers_then_export_processes_without_restarting_them(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    """Ctrl-C sends SIGINT to the whole process group: the export processes ignore it and are
    stopped by ``serve`` once the workers are done, so none is restarted on the way out."""
    receiver_process.start()
    service = make_service(settings(receiver_process.http_endpoint, workers=2, export_processes=2))
    service.start()
    pids = export_pids(service, 2)
    ledger = Ledger()
    post_batches(service, ledger, 10)
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    for pid in [service.pid, *pids]:  # what the terminal does
        os.kill(pid, signal.SIGINT)
    assert service.process is not None
    service.process.wait(30)
    assert not [pid for pid in pids if alive(pid)]
    assert not log_entries(service.log_path, "export process exited; restarting it")
    assert {entry["pid"] for entry in log_entries(service.log_path, "export process stopped")} == set(pids)
