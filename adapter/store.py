"""The durable queue: accepted batches in SQLite until the backend has accepted their spans.

Semantics (``docs/delivery.md``):

* ``put`` / ``put_many`` commit the batches before they return (WAL, ``synchronous=FULL`` by
  default: the commit is fsynced, so it survives a crash of the process and of the machine). A
  full store refuses a batch *before* writing it. ``put_many`` writes several batches in one
  transaction (one fsync): the group commit of ``adapter.writer``.
* ``claim`` moves due batches to ``inflight`` with a lease, in one statement; a batch whose lease
  ran out, or whose claiming process is gone, is claimed again (at-least-once delivery). The
  bodies are read after that transaction, so the write lock is held for the update only.
* The write lock is taken with ``BEGIN IMMEDIATE`` and, while another connection holds it, retried
  every 0.1 to 2 ms up to ``busy_timeout_ms`` (SQLite's own busy handler sleeps up to 100 ms per try,
  so a waiter would often sleep long after the lock was free).
* ``ack`` deletes; ``retry`` puts back with a next-attempt time; ``bury`` moves to the dead-letter
  state, kept on disk until replayed or purged.
* A batch's body lives in its own table (``bodies``), apart from its small bookkeeping row in
  ``batches``: SQLite rewrites a whole row when any of its columns changes, so with the body in the
  row every claim, retry and bury copied the whole body (tens of KB) again.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns   INTEGER NOT NULL,
    tenant        TEXT    NOT NULL DEFAULT 'default',
    runs          INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'inflight', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_try_ns   INTEGER NOT NULL DEFAULT 0,
    lease_ns      INTEGER NOT NULL DEFAULT 0,
    owner_pid     INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    owner_start   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_due ON batches (state, next_try_ns, id);
CREATE TABLE IF NOT EXISTS bodies (
    id    INTEGER PRIMARY KEY,
    body  BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    batches     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    last_ack_ns INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO totals (one, batches, bytes) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS delivered (
    run_key      BLOB    PRIMARY KEY,
    delivered_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_age ON delivered (delivered_ns);
"""


class StoreFull(Exception):
    """Accepting the batch would pass ``store_max_bytes`` or ``store_max_batches``."""


class StoreUnavailable(Exception):
    """The batch could not be written safely (disk full, I/O error, database locked too long)."""


_BOOKKEEPING_CHECKPOINT_PAGES = 100
_REQUEST_CHECKPOINT_PAGES = 16_000
_LOCK_RETRY_MIN_S = 0.0001
_LOCK_RETRY_MAX_S = 0.002


@dataclass(frozen=True, slots=True)
class Claimed:
    """A batch taken for export."""

    id: int
    tenant: str
    body: bytes
    attempts: int
    received_ns: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Depth of the queue (live batches: ready and in flight) and of the dead-letter state."""

    batches: int
    bytes: int
    oldest_received_ns: int | None
    dead: int
    last_ack_ns: int = 0
    """When an export process or thread last settled batches as delivered (0: never)."""


class Store:
    """A SQLite-backed durable queue, safe to share between threads and processes."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_batches: int,
        sync: str = "full",
        secure_delete: bool = False,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_batches = max_batches
        self._sync = "FULL" if sync == "full" else "NORMAL"
        self._secure_delete = secure_delete
        self._busy_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    # --- connections ----------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory and schema; reclaim batches held by processes that are gone."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._conn()
            conn.executescript(SCHEMA)
            self._upgrade()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self.reclaim_orphans()

    def _upgrade(self) -> None:
        """Bring a store written by an older version to this schema (once; other processes wait)."""
        with self._write() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
            if "owner_start" not in columns:
                db.execute("ALTER TABLE batches ADD COLUMN owner_start INTEGER NOT NULL DEFAULT 0")
            if "body" in columns:  # bodies were kept in the batches rows
                db.execute("INSERT INTO bodies (id, body) SELECT id, body FROM batches")
                db.execute("ALTER TABLE batches DROP COLUMN body")
            if "last_ack_ns" not in {row[1] for row in db.execute("PRAGMA table_info(totals)")}:
                db.execute("ALTER TABLE totals ADD COLUMN last_ack_ns INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._lock:
            for conn in self._all.values():
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # Set either way: SQLite's default is off, but distributions build it on (Debian's is).
            # On, every ack writes each page of the deleted bodies again, as zeros, and the checkpoint
            # copies them: an ack of 60 22-run batches held the write lock 21-23 ms instead of 5-8.
            conn.execute(f"PRAGMA secure_delete={'ON' if self._secure_delete else 'OFF'}")
            self._local.sync = None
            self._set_sync(conn, self._sync)
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            self._local.conn = conn
            with self._lock:
                for thread in [thread for thread in self._all if not thread.is_alive()]:
                    self._all.pop(thread).close()  # its thread is gone: nobody can use it any more
                self._all[threading.current_thread()] = conn
        return conn

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; any SQLite failure becomes StoreUnavailable, nothing half-written.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL``: safe against
        a crash of the process, not of the machine). Export bookkeeping uses it: losing a claim, an
        ack or a retry to a power cut only sends those batches again (at least once, never lost).
        """
        try:
            conn = self._conn()
            self._set_sync(conn, self._sync if durable else "NORMAL")
            self._begin(conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(str(exc)) from exc
            raise

    def _set_sync(self, conn: sqlite3.Connection, mode: str) -> None:
        """Commit mode of this thread's connection, and who copies the WAL back into the database:

        a checkpoint runs inside the commit that passes ``wal_autocheckpoint`` pages and writes and
        fsyncs what the WAL holds, so the commits requests wait for leave it to export bookkeeping and
        only step in far later (``_REQUEST_CHECKPOINT_PAGES``), in case nothing is exported for a long
        time. Bookkeeping checkpoints often (100 pages, not SQLite's default 1,000): each then copies
        less, and the fsync a request's commit shares the disk with is shorter.
        """
        if getattr(self._local, "sync", None) != mode:
            conn.execute(f"PRAGMA synchronous={mode}")
            pages = _BOOKKEEPING_CHECKPOINT_PAGES if mode == "NORMAL" else _REQUEST_CHECKPOINT_PAGES
            conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
            self._local.sync = mode

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried with short sleeps while another connection writes.

        SQLite's busy handler is switched off for this one statement (and on again for the rest).
        """
        deadline = time.monotonic() + self._busy_ms / 1000
        pause = _LOCK_RETRY_MIN_S
        conn.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
                pause = min(pause * 2, _LOCK_RETRY_MAX_S)
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    # --- producer ---------------------------------------------------------------------------
    def put(self, body: bytes, runs: int, tenant: str = "default") -> int:
        """Store one accepted batch durably and return its id.

        Raises:
            StoreFull: the limits would be passed; nothing was written.
            StoreUnavailable: the write failed (disk full, I/O error); nothing was written.
        """
        result = self.put_many([(body, runs, tenant)])[0]
        if isinstance(result, StoreFull):
            raise result
        return result

    def put_many(self, batches: Sequence[tuple[bytes, int, str]]) -> list[int | StoreFull]:
        """Store ``(body, runs, tenant)`` batches in one transaction (one fsync), in order.

        Each batch gets its id, or ``StoreFull`` when it would pass a limit (it is not written; the
        batches after it still may be, if they fit).

        Raises:
            StoreUnavailable: the write failed (disk full, I/O error); nothing was written.
        """
        results: list[int | StoreFull] = []
        now = time.time_ns()
        with self._write() as db:
            count, size = db.execute("SELECT batches, bytes FROM totals").fetchone()
            added = added_bytes = 0
            for body, runs, tenant in batches:
                if count + added + 1 > self.max_batches or size + added_bytes + len(body) > self.max_bytes:
                    results.append(StoreFull(f"{count + added} batches, {size + added_bytes} bytes waiting"))
                    continue
                cursor = db.execute(
                    "INSERT INTO batches (received_ns, tenant, runs, size) VALUES (?, ?, ?, ?)",
                    (now, tenant, runs, len(body)),
                )
                batch_id = int(cursor.lastrowid or 0)
                db.execute("INSERT INTO bodies (id, body) VALUES (?, ?)", (batch_id, body))
                results.append(batch_id)
                added += 1
                added_bytes += len(body)
            if added:
                db.execute("UPDATE totals SET batches = batches + ?, bytes = bytes + ?", (added, added_bytes))
        return results

    # --- consumer ---------------------------------------------------------------------------
    def claim(self, limit: int, lease_s: float, max_bytes: int | None = None) -> list[Claimed]:
        """Take up to ``limit`` due batches (oldest first) for export, leased for ``lease_s``.

        With ``max_bytes``, batches are taken while their bodies add up to at most that many bytes
        (always at least one), so a backlog of large batches does not load into memory at once.
        """
        now = time.time_ns()
        due = """SELECT id, size FROM batches
                  WHERE (state = 'ready' AND next_try_ns <= ?) OR (state = 'inflight' AND lease_ns <= ?)
                  ORDER BY id LIMIT ?"""
        # Look before taking the write lock: an idle export loop polls often, and each write lock it
        # took for nothing could make a request's commit wait.
        try:
            if not self._conn().execute(due, (now, now, 1)).fetchone():
                return []
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        with self._write(durable=False) as db:
            candidates = db.execute(due, (now, now, limit)).fetchall()
            chosen: list[int] = []
            total = 0
            for batch_id, size in candidates:
                if chosen and max_bytes is not None and total + size > max_bytes:
                    break
                chosen.append(batch_id)
                total += size
            if not chosen:
                return []
            marks = ",".join("?" * len(chosen))
            rows = db.execute(
                f"UPDATE batches SET state = 'inflight', lease_ns = ?, owner_pid = ?, owner_start = ?,"  # noqa: S608
                f" attempts = attempts + 1 WHERE id IN ({marks}) RETURNING id, tenant, attempts, received_ns",
                (now + int(lease_s * 1e9), *_this_process(), *chosen),
            ).fetchall()
        # The lease is ours now: read the bodies outside the write transaction (WAL readers do not block writers).
        bodies = dict(self._conn().execute(f"SELECT id, body FROM bodies WHERE id IN ({marks})", chosen))  # noqa: S608
        rows.sort(key=lambda row: row[0])
        return [Claimed(row[0], row[1], bytes(bodies[row[0]]), row[2], row[3]) for row in rows if row[0] in bodies]

    def ack(self, ids: Sequence[int], delivered: Sequence[bytes] = ()) -> None:
        """Delete batches whose spans the backend accepted and remember the runs in ``delivered``.

        Both happen in one transaction: a batch is gone exactly when its runs are remembered.
        """
        if not ids:
            return
        now = time.time_ns()
        with self._write(durable=False) as db:
            db.executemany(
                "INSERT OR REPLACE INTO delivered (run_key, delivered_ns) VALUES (?, ?)",
                [(key, now) for key in delivered],
            )
            marks = ",".join("?" * len(ids))
            count, size = db.execute(
                f"SELECT count(*), total(size) FROM batches WHERE state != 'dead' AND id IN ({marks})",  # noqa: S608
                ids,
            ).fetchone()
            db.execute(f"DELETE FROM batches WHERE id IN ({marks})", ids)  # noqa: S608
            db.execute(f"DELETE FROM bodies WHERE id IN ({marks})", ids)  # noqa: S608
            db.execute(
                "UPDATE totals SET batches = batches - ?, bytes = bytes - ?, last_ack_ns = ?", (count, int(size), now)
            )

    def retry(self, ids: Sequence[int], delay_s: float, error: str) -> None:
        """Put batches back for another attempt after ``delay_s``."""
        next_try = time.time_ns() + int(delay_s * 1e9)
        with self._write(durable=False) as db:
            db.executemany(
                "UPDATE batches SET state = 'ready', next_try_ns = ?, last_error = ?"
                " WHERE id = ? AND state = 'inflight'",
                [(next_try, error, batch_id) for batch_id in ids],
            )

    def bury(self, ids: Sequence[int], error: str) -> None:
        """Move batches to the dead-letter state (permanently rejected); they stay on disk."""
        if not ids:
            return
        with self._write(durable=False) as db:
            marks = ",".join("?" * len(ids))
            count, size = db.execute(
                f"SELECT count(*), total(size) FROM batches WHERE state != 'dead' AND id IN ({marks})",  # noqa: S608
                ids,
            ).fetchone()
            db.executemany(
                "UPDATE batches SET state = 'dead', last_error = ? WHERE id = ?",
                [(error, batch_id) for batch_id in ids],
            )
            db.execute("UPDATE totals SET batches = batches - ?, bytes = bytes - ?", (count, int(size)))

    def already_delivered(self, keys: Sequence[bytes]) -> set[bytes]:
        """The subset of ``keys`` that were delivered before (and are still remembered)."""
        found: set[bytes] = set()
        conn = self._conn()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                bytes(row[0])
                for row in conn.execute(f"SELECT run_key FROM delivered WHERE run_key IN ({marks})", chunk)  # noqa: S608
            )
        return found

    def forget_delivered(self, older_than_s: float, keep_at_most: int) -> int:
        """Bound the memory of delivered runs by age and by count; return how many were forgotten."""
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        with self._write(durable=False) as db:
            removed = db.execute("DELETE FROM delivered WHERE delivered_ns < ?", (cutoff,)).rowcount
            count = db.execute("SELECT count(*) FROM delivered").fetchone()[0]
            if count > keep_at_most:
                removed += db.execute(
                    "DELETE FROM delivered WHERE run_key IN "
                    "(SELECT run_key FROM delivered ORDER BY delivered_ns LIMIT ?)",
                    (count - keep_at_most,),
                ).rowcount
            return int(removed)

    def purge_dead(self, ids: Iterable[int] | None = None) -> int:
        """Delete dead-lettered batches (all, or ``ids``) for good; return how many."""
        with self._write() as db:
            dead = [row[0] for row in db.execute("SELECT id FROM batches WHERE state = 'dead'")]
            chosen = dead if ids is None else sorted(set(dead) & set(ids))
            db.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in chosen])
            db.executemany("DELETE FROM bodies WHERE id = ?", [(i,) for i in chosen])
            return len(chosen)

    def reclaim_orphans(self) -> int:
        """Make in-flight batches of processes that no longer run due again; return how many.

        A process is its pid *and* its start time: a restarted container's service has the same pid
        (often 1) as the one that crashed, but not the same start time.
        """
        me = (os.getpid(), _start_time(os.getpid()))
        with self._write() as db:
            owners = db.execute("SELECT DISTINCT owner_pid, owner_start FROM batches WHERE state='inflight'").fetchall()
            gone = [(pid, start) for pid, start in owners if (pid, start) != me and not _alive(pid, start)]
            count = 0
            for pid, start in gone:
                count += db.execute(
                    "UPDATE batches SET state = 'ready', next_try_ns = 0"
                    " WHERE state = 'inflight' AND owner_pid = ? AND owner_start = ?",
                    (pid, start),
                ).rowcount
            return count

    def check_writable(self) -> None:
        """Take and release the write lock: raises StoreUnavailable when the store cannot be written."""
        with self._write():
            pass

    # --- inspection -------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Current depth, from the running totals (no table scan)."""
        conn = self._conn()
        batches, size, last_ack = conn.execute("SELECT batches, bytes, last_ack_ns FROM totals").fetchone()
        oldest = conn.execute("SELECT min(received_ns) FROM batches WHERE state != 'dead'").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM batches WHERE state = 'dead'").fetchone()[0]
        return StoreStats(batches, size, oldest, dead, last_ack)

    def dead_letters(self) -> list[tuple[int, int, int, str]]:
        """``(id, received_ns, runs, last_error)`` of every dead-lettered batch, oldest first."""
        return list(
            self._conn().execute(
                "SELECT id, received_ns, runs, coalesce(last_error, '') FROM batches WHERE state = 'dead' ORDER BY id"
            )
        )

    def replay(self, ids: Iterable[int] | None = None) -> int:
        """Make dead-lettered batches (all, or ``ids``) due again; return how many."""
        with self._write() as db:
            dead = db.execute("SELECT id, size FROM batches WHERE state = 'dead'").fetchall()
            wanted = set(ids) if ids is not None else None
            chosen = [(batch_id, size) for batch_id, size in dead if wanted is None or batch_id in wanted]
            db.executemany(
                "UPDATE batches SET state = 'ready', next_try_ns = 0, attempts = 0 WHERE id = ?",
                [(batch_id,) for batch_id, _ in chosen],
            )
            db.execute(
                "UPDATE totals SET batches = batches + ?, bytes = bytes + ?",
                (len(chosen), sum(size for _, size in chosen)),
            )
            return len(chosen)


def _this_process() -> tuple[int, int]:
    """``(pid, start time)`` of this process, read once per process (a fork has another pid)."""
    pid = os.getpid()
    return pid, _own_start_time(pid)


@lru_cache(maxsize=4)
def _own_start_time(pid: int) -> int:
    return _start_time(pid)


def _start_time(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int = 0) -> bool:
    """Whether the process that was ``pid`` started at ``start`` still runs (0: any process with the pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return not (start and now and now != start)  # the pid belongs to another process now
