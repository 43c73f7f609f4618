"""Group commit: the one writer thread per process that stores every accepted batch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from adapter.store import Store, StoreFull, StoreUnavailable
from adapter.writer import BatchWriter, WriterStopped


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "queue.sqlite3", max_bytes=10_000, max_batches=1000)
    opened.open()
    yield opened
    opened.close()


@pytest.fixture
def writer(store: Store) -> Iterator[BatchWriter]:
    started = BatchWriter(store)
    started.start()
    yield started
    started.stop()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) takes the write lock and keeps it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def rows(path: Path) -> list[tuple[int, bytes, int, str]]:
    db = sqlite3.connect(path)
    try:
        query = "SELECT id, body, runs, tenant FROM batches JOIN bodies USING (id)"
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in db.execute(query)]
    finally:
        db.close()


def test_batches_waiting_together_are_committed_together(store: Store, writer: BatchWriter) -> None:
    """While the lock is taken, 20 requests queue up; they then go to disk in far fewer transactions."""
    other = hold_write_lock(store.path)
    try:
        futures = [writer.submit(f"batch-{n}".encode(), n + 1, "acme" if n % 2 else "default") for n in range(20)]
        assert not any(future.done() for future in futures), "nothing is answered before it is on disk"
    finally:
        other.execute("COMMIT")
        other.close()
    ids = [future.result(timeout=10) for future in futures]
    assert ids == sorted(ids) and len(set(ids)) == 20, "each batch has its own id, in submission order"
    assert writer.groups <= 2, f"20 waiting batches took {writer.groups} transactions"
    assert rows(store.path) == [
        (batch_id, f"batch-{n}".encode(), n + 1, "acme" if n % 2 else "default") for n, batch_id in enumerate(ids)
    ]
    stats = store.stats()
    assert (stats.batches, stats.bytes) == (20, sum(len(f"batch-{n}") for n in range(20)))


def test_a_full_store_refuses_only_the_batches_that_do_not_fit(store: Store, writer: BatchWriter) -> None:
    other = hold_write_lock(store.path)
    try:
        futures = [writer.submit(b"x" * size, 1, "default") for size in (6_000, 5_000, 4_000)]
    finally:
        other.execute("COMMIT")
        other.close()
    first, second, third = futures
    assert first.result(timeout=10) > 0
    with pytest.raises(StoreFull):
        second.result(timeout=10)  # 6,000 + 5,000 > 10,000
    assert third.result(timeout=10) > 0  # 6,000 + 4,000 fits
    assert [len(body) for _, body, _, _ in rows(store.path)] == [6_000, 4_000]


def test_a_store_that_cannot_be_written_fails_every_batch_of_the_group(tmp_path: Path) -> None:
    store = Store(tmp_path / "queue.sqlite3", max_bytes=10_000, max_batches=10, busy_timeout_ms=200)
    store.open()
    writer = BatchWriter(store)
    writer.start()
    other = hold_write_lock(store.path)  # held for longer than the store waits for it
    try:
        futures = [writer.submit(b"x", 1, "default") for _ in range(3)]
        for future in futures:
            with pytest.raises(StoreUnavailable, match="locked"):
                future.result(timeout=10)
    finally:
        other.execute("ROLLBACK")
        other.close()
        writer.stop()
        store.close()
    assert rows(store.path) == []


def test_stop_writes_what_was_submitted_and_refuses_the_rest(store: Store) -> None:
    writer = BatchWriter(store)
    writer.start()
    submitted = [writer.submit(b"before stop", 1, "default") for _ in range(5)]
    writer.stop()
    assert all(future.result(timeout=1) > 0 for future in submitted)
    late = writer.submit(b"after stop", 1, "default")
    with pytest.raises(WriterStopped):
        late.result(timeout=1)
    assert len(rows(store.path)) == 5


def test_a_cancelled_request_is_not_written(store: Store, writer: BatchWriter) -> None:
    """A client that went away before its batch was written gets nothing stored (and no 200 to see)."""
    other = hold_write_lock(store.path)
    try:
        gone: Future[int] = writer.submit(b"client went away", 1, "default")
        assert gone.cancel()
        kept = writer.submit(b"client waits", 1, "default")
    finally:
        other.execute("COMMIT")
        other.close()
    assert kept.result(timeout=10) > 0
    assert [body for _, body, _, _ in rows(store.path)] == [b"client waits"]


def test_submitting_from_many_threads(store: Store, writer: BatchWriter) -> None:
    ids: list[int] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for item in range(25):
            batch_id = writer.submit(f"{number}-{item}".encode(), 1, "default").result(timeout=30)
            with lock:
                ids.append(batch_id)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(ids) == list(range(1, 201))
    assert store.stats().batches == 200
