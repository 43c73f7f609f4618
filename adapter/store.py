"""The durable queue: accepted batches in SQLite until the backend has accepted their spans.

Semantics (``docs/delivery.md``):

* ``put`` commits the batch before it returns (WAL, ``synchronous=FULL`` by default: the commit is
  fsynced, so it survives a crash of the process and of the machine). A full store refuses
  *before* writing anything.
* ``claim`` moves due batches to ``inflight`` with a lease, in one statement; a batch whose lease
  ran out, or whose claiming process is gone, is claimed again (at-least-once delivery).
* ``ack`` deletes; ``retry`` puts back with a next-attempt time; ``bury`` moves to the dead-letter
  state, kept on disk until replayed or purged.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns   INTEGER NOT NULL,
    tenant        TEXT    NOT NULL DEFAULT 'default',
    runs          INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'inflight', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_try_ns   INTEGER NOT NULL DEFAULT 0,
    lease_ns      INTEGER NOT NULL DEFAULT 0,
    owner_pid     INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    owner_start   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_due ON batches (state, next_try_ns, id);
CREATE TABLE IF NOT EXISTS totals (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    batches INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
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


class Store:
    """A SQLite-backed durable queue, safe to share between threads and processes."""

    def __init__(
        self, path: Path, *, max_bytes: int, max_batches: int, sync: str = "full", busy_timeout_ms: int = 5000
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_batches = max_batches
        self._sync = "FULL" if sync == "full" else "NORMAL"
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
            columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
            if "owner_start" not in columns:  # a store written by an older version
                conn.execute("ALTER TABLE batches ADD COLUMN owner_start INTEGER NOT NULL DEFAULT 0")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self.reclaim_orphans()

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
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            self._local.conn = conn
            with self._lock:
                for thread in [thread for thread in self._all if not thread.is_alive()]:
                    self._all.pop(thread).close()  # its thread is gone: nobody can use it any more
                self._all[threading.current_thread()] = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; any SQLite failure becomes StoreUnavailable, nothing half-written."""
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
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

    # --- producer ---------------------------------------------------------------------------
    def put(self, body: bytes, runs: int, tenant: str = "default") -> int:
        """Store one accepted batch durably and return its id.

        Raises:
            StoreFull: the limits would be passed; nothing was written.
            StoreUnavailable: the write failed (disk full, I/O error); nothing was written.
        """
        with self._write() as db:
            batches, size = db.execute("SELECT batches, bytes FROM totals").fetchone()
            if batches + 1 > self.max_batches or size + len(body) > self.max_bytes:
                raise StoreFull(f"{batches} batches, {size} bytes waiting")
            cursor = db.execute(
                "INSERT INTO batches (received_ns, tenant, runs, size, body) VALUES (?, ?, ?, ?, ?)",
                (time.time_ns(), tenant, runs, len(body), body),
            )
            db.execute("UPDATE totals SET batches = batches + 1, bytes = bytes + ?", (len(body),))
            return int(cursor.lastrowid or 0)

    # --- consumer ---------------------------------------------------------------------------
    def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        """Take up to ``limit`` due batches (oldest first) for export, leased for ``lease_s``."""
        now = time.time_ns()
        with self._write() as db:
            rows = db.execute(
                """
                UPDATE batches
                   SET state = 'inflight', lease_ns = ?, owner_pid = ?, owner_start = ?, attempts = attempts + 1
                 WHERE id IN (
                       SELECT id FROM batches
                        WHERE (state = 'ready' AND next_try_ns <= ?)
                           OR (state = 'inflight' AND lease_ns <= ?)
                        ORDER BY id LIMIT ?)
             RETURNING id, tenant, body, attempts, received_ns
                """,
                (now + int(lease_s * 1e9), os.getpid(), _start_time(os.getpid()), now, now, limit),
            ).fetchall()
        rows.sort(key=lambda row: row[0])
        return [Claimed(row[0], row[1], bytes(row[2]), row[3], row[4]) for row in rows]

    def ack(self, ids: Sequence[int], delivered: Sequence[bytes] = ()) -> None:
        """Delete batches whose spans the backend accepted and remember the runs in ``delivered``.

        Both happen in one transaction: a batch is gone exactly when its runs are remembered.
        """
        if not ids:
            return
        now = time.time_ns()
        with self._write() as db:
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
            db.execute("UPDATE totals SET batches = batches - ?, bytes = bytes - ?", (count, int(size)))

    def retry(self, ids: Sequence[int], delay_s: float, error: str) -> None:
        """Put batches back for another attempt after ``delay_s``."""
        next_try = time.time_ns() + int(delay_s * 1e9)
        with self._write() as db:
            db.executemany(
                "UPDATE batches SET state = 'ready', next_try_ns = ?, last_error = ?"
                " WHERE id = ? AND state = 'inflight'",
                [(next_try, error, batch_id) for batch_id in ids],
            )

    def bury(self, ids: Sequence[int], error: str) -> None:
        """Move batches to the dead-letter state (permanently rejected); they stay on disk."""
        if not ids:
            return
        with self._write() as db:
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
        with self._write() as db:
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
            if ids is None:
                return int(db.execute("DELETE FROM batches WHERE state = 'dead'").rowcount)
            wanted = list(ids)
            return int(
                db.executemany("DELETE FROM batches WHERE state = 'dead' AND id = ?", [(i,) for i in wanted]).rowcount
            )

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
        batches, size = conn.execute("SELECT batches, bytes FROM totals").fetchone()
        oldest = conn.execute("SELECT min(received_ns) FROM batches WHERE state != 'dead'").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM batches WHERE state = 'dead'").fetchone()[0]
        return StoreStats(batches, size, oldest, dead)

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
