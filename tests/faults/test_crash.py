"""Scenarios 1 and 2: ``kill -9`` of the service, with the backend down and under steady load.

A 200 means the batch is on disk: after a SIGKILL and a restart every accepted run must arrive.
Duplicates are allowed only for batches that were in flight (exported, not yet acknowledged in the
store) at the moment of the kill; the test reads those from the store file before the restart.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.faults.harness import (
    BlackHole,
    Ledger,
    Poster,
    ReceiverProcess,
    Service,
    fixture,
    fresh,
    post,
    read_store,
    report,
    wait_until,
)

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")  # 22.8 KB, 6 runs, as the real SDK posted it


def settings(endpoint: str, **more: Any) -> dict[str, Any]:
    return {
        "otlp_traces_endpoint": endpoint,
        "retry_initial_backoff": 0.2,
        "retry_max_backoff": 2.0,
        "otlp_timeout": 5000,
        **more,
    }


def drained(service: Service) -> Callable[[], bool]:
    return lambda: read_store(service.store_path).totals == (0, 0)


@pytest.mark.parametrize("backend", ["refusing", "hanging"])
def test_kill9_with_the_backend_down_loses_nothing(
    backend: str, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    """``refusing``: nothing listens (connection refused, batches back off as ``ready``).
    ``hanging``: the port accepts but never answers, so a claim is in flight (leased) at the kill and
    must come back through orphan reclaim (owner pid gone) - well before its lease would run out."""
    hole = BlackHole(receiver_process.http_port) if backend == "hanging" else None
    lease_s = 2 * 5 + 30  # build_runtime: 2 * otlp_timeout + 30 s
    service = make_service(settings(receiver_process.http_endpoint))
    try:
        service.start()
        ledger = Ledger()
        with requests.Session() as session:
            for _ in range(200):
                batch = fresh(TEMPLATE)
                ledger.record(batch, post(session, service.base_url, batch.body))
        assert len(ledger.accepted) == 200, ledger.refused[:3] or ledger.unanswered[:3]
        time.sleep(1.0)  # let the worker claim and fail (or hang in) a few rounds
        if hole is not None:  # the first claim held one batch; wait for a full claim to hang
            wait_until(lambda: read_store(service.store_path).by_state.get("inflight", 0) > 1, 20, "a full claim")
        service.kill9()
    finally:
        if hole is not None:
            hole.close()
    at_kill = read_store(service.store_path)
    assert at_kill.consistent, at_kill
    assert at_kill.totals[0] == 200, f"a killed process lost accepted batches: {at_kill}"
    in_flight = at_kill.by_state.get("inflight", 0)
    if backend == "hanging":
        assert in_flight > 0, "the kill was meant to hit an export in flight"

    receiver_process.start()
    restarted = time.monotonic()
    service.start()
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=120)
    took = time.monotonic() - restarted
    wait_until(drained(service), 30, "the store to drain")
    result = ledger.account(receiver_process.span_counts())
    report(
        f"1 kill -9, backend {backend}",
        **result.table(),
        batches_in_flight_at_kill=in_flight,
        batches_ready_at_kill=at_kill.by_state.get("ready", 0),
        delivered_after_restart_s=round(took, 1),
    )

    assert result.runs_lost == 0
    assert result.runs_accepted == result.runs_delivered == 200 * 6
    # the backend never accepted anything before the kill: nothing can have been delivered twice
    assert result.runs_duplicated == 0, sorted(result.duplicated_ids)[:5]
    assert result.unknown_spans == 0
    if in_flight:
        assert took < lease_s, f"in-flight batches waited for their lease ({took:.0f}s): orphan reclaim did not work"


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_kill9_under_load_with_exports_in_flight_loses_nothing(
    sync: str, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    """``store_sync: normal`` skips the fsync per commit; a killed *process* loses nothing either way
    (the WAL is in the OS page cache). What ``normal`` gives up, power loss, cannot be shown here."""
    seed = int(os.environ.get("FAULTS_SEED", time.time_ns() % 2**32))
    kill_after = random.Random(seed).uniform(2.0, 8.0)
    receiver_process.start()
    service = make_service(settings(receiver_process.http_endpoint, store_sync=sync))
    service.start()
    ledger = Ledger()
    poster = Poster(service.base_url, TEMPLATE, ledger, max_seconds=10.0, max_posts=5000).start()
    try:
        time.sleep(kill_after)
        accepted_before_kill = len(ledger.accepted)
        service.kill9()
        at_kill = read_store(service.store_path)
        time.sleep(0.5)  # the poster meets a dead port for a while, as a real client would
        service.start()
    finally:
        poster.stop()
    assert at_kill.consistent, at_kill
    assert accepted_before_kill > 20, "the load did not get going before the kill"

    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=120)
    wait_until(drained(service), 30, "the store to drain")
    result = ledger.account(receiver_process.span_counts())
    report(
        f"2 kill -9 under load, store_sync {sync}",
        **result.table(),
        seed=seed,
        kill_after_s=round(kill_after, 2),
        accepted_before_kill=accepted_before_kill,
        posts_unanswered=len(ledger.unanswered),
        batches_in_flight_at_kill=at_kill.by_state.get("inflight", 0),
        runs_in_flight_at_kill=len(at_kill.inflight_span_ids),
    )

    assert result.runs_lost == 0
    assert result.runs_accepted == result.runs_delivered
    # at-least-once: a duplicate is only possible for a batch in flight (claimed, not acknowledged) at the kill
    assert result.duplicated_ids <= at_kill.inflight_span_ids, sorted(result.duplicated_ids - at_kill.inflight_span_ids)
    assert result.unknown_spans == 0
    assert not ledger.refused, ledger.refused[:3]


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def _unshare_permitted() -> bool:
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, check=False)
    return probe.returncode == 0


def test_kill9_as_pid_1_of_a_container_reclaims_in_flight_batches_at_restart(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    if not _unshare_permitted():
        pytest.skip("unshare --pid is not permitted here (needs root): cannot run the service as PID 1")
    lease_s = 2 * 1 + 30
    hole = BlackHole(receiver_process.http_port)
    service = make_service(settings(receiver_process.http_endpoint, otlp_timeout=1000), wrapper=UNSHARE)
    try:
        service.start()  # `dynamiq-otel serve` as PID 1, as in a container whose ENTRYPOINT it is
        batch = fresh(TEMPLATE)
        with requests.Session() as session:
            assert post(session, service.base_url, batch.body).status == 200
        wait_until(lambda: read_store(service.store_path).by_state.get("inflight", 0) == 1, 5, "the claim", 0.02)
        service.kill9()  # unshare --kill-child: the namespace's PID 1 gets SIGKILL too
    finally:
        hole.close()
    assert read_store(service.store_path).by_state.get("inflight", 0) == 1, "the kill missed the export in flight"
    receiver_process.start()
    restarted = time.monotonic()
    service.start()  # the new container's service is PID 1 again
    try:
        receiver_process.wait_for(batch.span_ids, timeout=15)  # reclaim at start takes ~2 s; the lease 32 s
    finally:
        took = time.monotonic() - restarted
        report("1 kill -9 as PID 1 (container restart)", delivered_after_restart_s=round(took, 1), lease_s=lease_s)
    assert took < 10, f"the in-flight batch waited {took:.0f}s instead of being reclaimed at start"
