"""Group commit: one thread per process writes every accepted batch to the store.

Requests hand their batch to ``BatchWriter.submit`` and await the returned future. The writer
thread takes every batch that is waiting (up to ``max_batches`` / ``max_bytes``) and commits them
in one transaction, so N concurrent requests cost one fsync and one turn of the write lock instead
of N threads (each with its own connection) queueing for it. A request is answered only after the
transaction holding its batch committed: a 200 still means "on disk".
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from adapter.store import Store, StoreFull, StoreUnavailable

log = logging.getLogger("dynamiq_otel.writer")


@dataclass(frozen=True, slots=True)
class _Pending:
    body: bytes
    runs: int
    tenant: str
    future: Future[int]


class WriterStopped(StoreUnavailable):
    """The writer was stopped before the batch was written (nothing was written)."""


class BatchWriter:
    """The store's single writer in this process: ``submit`` a batch, await its id."""

    def __init__(self, store: Store, *, max_batches: int = 64, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.store = store
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self.groups = 0
        """Transactions committed (tests and the benchmark read it)."""

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._loop, name="dynamiq-otel-writer", daemon=True)
        self._thread.start()

    def submit(self, body: bytes, runs: int, tenant: str) -> Future[int]:
        """Queue a batch for the next group; the future gives its id, or raises StoreFull/StoreUnavailable."""
        future: Future[int] = Future()
        with self._lock:
            if not self._stopped:
                self._queue.put(_Pending(body, runs, tenant, future))
                return future
        future.set_exception(WriterStopped("the store writer is stopped"))
        return future

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            self._stopped = True
            self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
        while True:  # anything submitted after the stop marker is refused, never left hanging
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(WriterStopped("the store writer is stopped"))

    def _loop(self) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            size = len(first.body)
            while len(group) < self.max_batches and size < self.max_bytes:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    running = False
                    break
                group.append(item)
                size += len(item.body)
            self._write(group)

    def _write(self, group: list[_Pending]) -> None:
        # A request that went away (its future was cancelled) is not written; the others can no longer be cancelled.
        group = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not group:
            return
        try:
            results = self.store.put_many([(item.body, item.runs, item.tenant) for item in group])
        except StoreUnavailable as exc:
            for item in group:
                item.future.set_exception(StoreUnavailable(str(exc)))
            return
        except Exception as exc:  # a bug must not leave requests waiting forever
            log.exception("store writer failed")
            for item in group:
                item.future.set_exception(StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            return
        self.groups += 1
        for item, result in zip(group, results, strict=True):
            if isinstance(result, StoreFull):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
