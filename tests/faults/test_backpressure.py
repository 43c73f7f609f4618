"""Scenario 4: a full store and a full disk answer 503 + Retry-After, write nothing, and recover.

Store full: ``store_max_batches`` / ``store_max_bytes`` reached while the backend is down (nothing
drains). Disk full: ``data_dir`` on a 2 MiB tmpfs that the test fills up (root is needed to mount;
without it, and only outside CI, the test uses a per-process file size limit (RLIMIT_FSIZE, set on
the running service with prlimit) instead: the same "the write fails" for SQLite).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import (
    Answer,
    Ledger,
    ReceiverProcess,
    Service,
    fixture,
    fresh,
    integrity_check,
    post,
    read_store,
    report,
    wait_until,
)

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")
MiB = 1024 * 1024


def _is_unavailable(answer: Answer) -> bool:
    return answer.status == 503 and answer.code == "unavailable" and answer.retry_after == "5"


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param({"store_max_batches": 20}, id="max-batches"),
        pytest.param({"store_max_bytes": MiB, "max_body_bytes": MiB}, id="max-bytes"),
    ],
)
def test_a_full_store_answers_503_writes_nothing_and_recovers_by_itself(
    limit: dict[str, Any], receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    capacity = limit.get("store_max_batches") or limit["store_max_bytes"] // len(TEMPLATE)
    service = make_service(
        {
            "otlp_traces_endpoint": receiver_process.http_endpoint,
            "retry_initial_backoff": 0.2,
            "retry_max_backoff": 1.0,
            **limit,
        }
    )
    pid = service.start().pid
    ledger = Ledger()
    with requests.Session() as session:
        for _ in range(capacity + 10):
            batch = fresh(TEMPLATE)
            ledger.record(batch, post(session, service.base_url, batch.body))
        refusals = [answer for _, answer in ledger.refused]
        view = read_store(service.store_path)
        ready = requests.get(f"{service.base_url}/readyz", timeout=5)
        gauge = service.metrics()["dynamiq_otel_store_batches"]

        assert len(ledger.accepted) == capacity, (len(ledger.accepted), refusals[:1])
        assert len(refusals) == 10 and all(_is_unavailable(answer) for answer in refusals), refusals[:3]
        assert view.consistent, view  # the running totals are the rows: nothing half-written
        assert view.totals == (capacity, sum(len(batch.body) for batch in ledger.accepted)), view
        if "store_max_batches" in limit:  # at the batch limit exactly; /readyz fails only once bytes >= max_bytes
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "unavailable"
        assert gauge == capacity

        receiver_process.start()  # the backend comes back: the store drains, posts are accepted again
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 60, "the store to drain")
        after = fresh(TEMPLATE)
        answer = post(session, service.base_url, after.body)
        ledger.record(after, answer)
    assert answer.status == 200, answer
    assert service.pid == pid and service.running(), "recovery must not need a restart"
    counts = receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
    result = ledger.account(counts)
    report(
        f"4 store full ({next(iter(limit))})",
        **result.table(),
        capacity=capacity,
        refused_503=len(refusals),
        retry_after=refusals[0].retry_after,
        readyz_when_full=ready.status_code,
    )
    assert result.runs_lost == 0 and result.runs_duplicated == 0
    assert result.refused_runs_delivered == 0, "a refused batch was stored after all"
    assert result.unknown_spans == 0


# --- disk full ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` on ``directory``; yields False when mounting is not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


class _Filler:
    """Makes the store's disk refuse writes, and gives the space back."""

    def __init__(self, mechanism: str, data_dir: Path, service: Service) -> None:
        self.mechanism = mechanism
        self.path = data_dir / "filler.bin"
        self.service = service

    def fill(self) -> None:
        if self.mechanism == "tmpfs":
            chunk = b"\0" * 65536
            # Unbuffered: a buffered file keeps the bytes a full disk refused and raises ENOSPC again when
            # it is closed. Here a write takes what fits (a partial write) and the next one fails.
            with self.path.open("wb", buffering=0) as handle:
                while True:
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
            with contextlib.suppress(OSError):
                self.path.open("ab").write(b"\0" * 4096)  # the last partial block
        else:  # no file of the service may grow past its current size
            biggest = max(path.stat().st_size for path in self.service.data_dir.glob("queue.sqlite3*"))
            resource.prlimit(self.service.pid, resource.RLIMIT_FSIZE, (biggest, resource.RLIM_INFINITY))

    def free(self) -> None:
        if self.mechanism == "tmpfs":
            self.path.unlink()
        else:
            resource.prlimit(self.service.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


@pytest.mark.parametrize("wanted", ["tmpfs", "fsize-limit"])
def test_a_full_disk_answers_503_writes_nothing_and_recovers(
    wanted: str, tmp_path: Path, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    """``tmpfs``: a 2 MiB tmpfs filled to the last block. ``fsize-limit``: RLIMIT_FSIZE of the running
    service lowered to the size of its biggest store file (no root needed), then raised again."""
    disk = tmp_path / "disk"
    with _tmpfs(disk, "2m") if wanted == "tmpfs" else contextlib.nullcontext(False) as mounted:
        if wanted == "tmpfs" and not mounted and os.environ.get("CI") != "true":
            pytest.skip("mounting a tmpfs is not permitted here (needs root); the fsize-limit case still runs")
        mechanism = "tmpfs" if mounted else "fsize-limit"  # under CI without mount rights: the fallback
        receiver_process.start()
        service = make_service(
            {
                "data_dir": str(disk),
                "otlp_traces_endpoint": receiver_process.http_endpoint,
                "otlp_timeout": 2000,
                "retry_initial_backoff": 0.2,
                "retry_max_backoff": 1.0,
                "store_max_bytes": MiB,
                "max_body_bytes": MiB,
            }
        )
        service.start()
        filler = _Filler(mechanism, disk, service)
        ledger = Ledger()
        answers: list[Answer] = []
        try:
            with requests.Session() as session:
                for _ in range(3):
                    batch = fresh(TEMPLATE)
                    ledger.record(batch, post(session, service.base_url, batch.body))
                receiver_process.wait_for(ledger.accepted_span_ids(), timeout=30)
                wait_until(lambda: read_store(service.store_path).totals == (0, 0), 30, "the store to drain")

                filler.fill()
                for _ in range(40):  # the WAL may still hold a little room: post until the disk says no
                    batch = fresh(TEMPLATE)
                    answer = post(session, service.base_url, batch.body)
                    ledger.record(batch, answer)
                    answers.append(answer)
                    if answer.status != 200 and len([a for a in answers if a.status == 503]) >= 3:
                        break
                full_view = read_store(service.store_path)
                ready_while_full = requests.get(f"{service.base_url}/readyz", timeout=5).status_code
                filler.free()

                recovered = fresh(TEMPLATE)
                answer_after = post(session, service.base_url, recovered.body)
                ledger.record(recovered, answer_after)
            counts = receiver_process.wait_for(ledger.accepted_span_ids(), timeout=60)
            wait_until(lambda: read_store(service.store_path).totals == (0, 0), 60, "the store to drain")
        finally:
            with contextlib.suppress(OSError):
                filler.free()
            service.stop()  # before the unmount
        integrity = integrity_check(service.store_path)
        final_view = read_store(service.store_path)
    result = ledger.account(counts)
    statuses = [answer.status for answer in answers]
    report(
        f"4 disk full ({mechanism})",
        **result.table(),
        answers_while_full=statuses,
        refused_503=statuses.count(503),
        integrity=integrity,
        readyz_while_full=ready_while_full,
    )

    assert 503 in statuses, f"the full disk never refused a batch: {statuses}"
    assert all(answer.status == 200 or _is_unavailable(answer) for answer in answers), answers
    assert full_view.consistent and final_view.consistent, (full_view, final_view)
    assert answer_after.status == 200, answer_after
    assert integrity == "ok"
    assert result.runs_lost == 0 and result.unknown_spans == 0
    assert result.refused_runs_delivered == 0, "a refused batch was stored after all"


def test_readyz_reports_a_full_disk(
    tmp_path: Path, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    disk = tmp_path / "disk"
    with _tmpfs(disk, "2m") as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        receiver_process.start()
        service = make_service(
            {
                "data_dir": str(disk),
                "otlp_traces_endpoint": receiver_process.http_endpoint,
                "store_max_bytes": MiB,
                "max_body_bytes": MiB,
            }
        )
        service.start()
        filler = _Filler("tmpfs", disk, service)
        try:
            ready_before = requests.get(f"{service.base_url}/readyz", timeout=5).status_code
            filler.fill()
            with requests.Session() as session:
                refused = post(session, service.base_url, fresh(TEMPLATE).body)
            ready_while_full = requests.get(f"{service.base_url}/readyz", timeout=5)
            filler.free()
            ready_after = requests.get(f"{service.base_url}/readyz", timeout=5).status_code
        finally:
            with contextlib.suppress(OSError):
                filler.free()
            service.stop()
    assert ready_before == 200 and _is_unavailable(refused)
    assert ready_while_full.status_code == 503, "ready while every batch is refused for lack of disk space"
    assert ready_after == 200
