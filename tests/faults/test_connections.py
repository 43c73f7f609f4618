"""Bursty traffic must not leak SQLite connections (file descriptors) in the serving process.

``Store`` opens one connection per thread. Ingest writes run in anyio worker threads, and anyio
retires a worker thread after 10 s idle and starts new ones for the next burst. A connection must
not outlive its thread: otherwise every burst after a quiet spell adds connections (two descriptors
each, plus page cache) until the process runs out of descriptors and every post gets 503.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import pytest
import requests

from tests.faults.harness import Ledger, ReceiverProcess, Service, fixture, fresh, post, report

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")
IDLE_S = 11.0  # anyio.WorkerThread.MAX_IDLE_TIME is 10 s


def _store_descriptors(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # a descriptor closed while we look
            count += "queue.sqlite3" in os.readlink(f"/proc/{pid}/fd/{name}")
    return count


def _burst(base_url: str, ledger: Ledger, clients: int = 16, posts: int = 3) -> None:
    def client() -> None:
        with requests.Session() as session:
            for _ in range(posts):
                batch = fresh(TEMPLATE)
                ledger.record(batch, post(session, base_url, batch.body))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_bursts_after_idle_spells_do_not_leak_store_connections(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    receiver_process.start()
    service = make_service({"otlp_traces_endpoint": receiver_process.http_endpoint})
    service.start()
    ledger = Ledger()
    samples = []
    for _ in range(3):
        _burst(service.base_url, ledger)
        samples.append(_store_descriptors(service.pid))
        time.sleep(IDLE_S)
        requests.get(f"{service.base_url}/readyz", timeout=5)  # the next thread hand-off retires idle workers
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    report("connections across bursts", store_descriptors_after_each_burst=samples, posts=len(ledger.accepted))
    assert len(ledger.accepted) == 3 * 16 * 3
    assert samples[-1] <= samples[0] + 6, f"store descriptors grew burst after burst: {samples}"
