"""The durable SQLite queue: put / claim / ack / retry / bury / replay, limits, leases, crash recovery."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.store import Store, StoreFull

HOUR = 3600.0


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def rows(path: Path) -> list[tuple[int, str, int, int, bytes]]:
    """``(id, state, attempts, owner_pid, body)`` of every row, read with a separate connection."""
    db = sqlite3.connect(path)
    try:
        return [
            (row[0], row[1], row[2], row[3], bytes(row[4]))
            for row in db.execute(
                "SELECT id, state, attempts, owner_pid, body FROM batches JOIN bodies USING (id) ORDER BY id"
            )
        ]
    finally:
        db.close()


def set_owner(path: Path, ids: list[int], pid: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.executemany("UPDATE batches SET owner_pid = ?, owner_start = 0 WHERE id = ?", [(pid, i) for i in ids])
        db.commit()
    finally:
        db.close()


def assert_consistent(store: Store) -> tuple[int, int, int]:
    """The running totals equal what the table holds; returns ``(batches, bytes, dead)``."""
    stats = store.stats()
    db = sqlite3.connect(store.path)
    try:
        live, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM batches WHERE state != 'dead'").fetchone()
        dead = db.execute("SELECT count(*) FROM batches WHERE state = 'dead'").fetchone()[0]
        batch_ids = [row[0] for row in db.execute("SELECT id FROM batches ORDER BY id")]
        body_ids = [row[0] for row in db.execute("SELECT id FROM bodies ORDER BY id")]
    finally:
        db.close()
    assert (stats.batches, stats.bytes, stats.dead) == (live, size, dead)
    assert body_ids == batch_ids, "every batch has its body, and no body outlives its batch"
    return stats.batches, stats.bytes, stats.dead


def make_store(
    path: Path, max_bytes: int = 1_000_000, max_batches: int = 1000, sync: str = "full", secure_delete: bool = False
) -> Store:
    store = Store(path, max_bytes=max_bytes, max_batches=max_batches, sync=sync, secure_delete=secure_delete)
    store.open()
    return store


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    opened = make_store(path)
    yield opened
    opened.close()


def fill(store: Store, count: int, size: int = 10) -> list[int]:
    return [store.put(bytes([65 + i % 26]) * size, runs=i + 1) for i in range(count)]


# --- put / stats -----------------------------------------------------------------------------------


def test_open_creates_directory_and_empty_store(store: Store, path: Path) -> None:
    assert path.is_file()
    stats = store.stats()
    assert (stats.batches, stats.bytes, stats.oldest_received_ns, stats.dead) == (0, 0, None, 0)
    assert store.claim(10, HOUR) == []


def test_open_twice_is_harmless(store: Store) -> None:
    store.put(b"abc", 1)
    store.open()
    assert assert_consistent(store) == (1, 3, 0)


def test_put_and_stats(store: Store) -> None:
    ids = [store.put(b"a" * 10, 1), store.put(b"b" * 20, 2, tenant="acme"), store.put(b"c" * 30, 3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert assert_consistent(store) == (3, 60, 0)
    claimed = store.claim(10, HOUR)
    assert [(c.id, c.tenant, c.body, c.attempts) for c in claimed] == [
        (ids[0], "default", b"a" * 10, 1),
        (ids[1], "acme", b"b" * 20, 1),
        (ids[2], "default", b"c" * 30, 1),
    ]
    assert store.stats().oldest_received_ns == claimed[0].received_ns
    assert claimed[0].received_ns <= claimed[1].received_ns <= claimed[2].received_ns


@pytest.mark.parametrize(
    ("max_batches", "max_bytes", "sizes", "accepted"),
    [
        pytest.param(2, 1_000_000, [10, 10, 10], [True, True, False], id="batches"),
        pytest.param(100, 100, [60, 40, 1], [True, True, False], id="bytes-exactly-at-limit"),
        pytest.param(100, 100, [60, 41, 40], [True, False, True], id="bytes-over-then-fits"),
        pytest.param(100, 100, [101], [False], id="one-batch-bigger-than-store"),
        pytest.param(1, 100, [100, 1], [True, False], id="both-limits"),
    ],
)
def test_limits_refuse_before_writing(
    path: Path, max_batches: int, max_bytes: int, sizes: list[int], accepted: list[bool]
) -> None:
    store = make_store(path, max_bytes=max_bytes, max_batches=max_batches)
    try:
        outcome = []
        for size in sizes:
            try:
                store.put(b"x" * size, 1)
                outcome.append(True)
            except StoreFull:
                outcome.append(False)
        assert outcome == accepted
        kept = [size for size, ok in zip(sizes, accepted, strict=True) if ok]
        assert assert_consistent(store) == (len(kept), sum(kept), 0)
        assert [len(row[4]) for row in rows(path)] == kept
    finally:
        store.close()


def test_room_again_after_ack(path: Path) -> None:
    store = make_store(path, max_batches=1)
    try:
        first = store.put(b"one", 1)
        with pytest.raises(StoreFull):
            store.put(b"two", 1)
        store.ack([first])
        store.put(b"two", 1)
        assert [row[4] for row in rows(path)] == [b"two"]
        assert assert_consistent(store) == (1, 3, 0)
    finally:
        store.close()


# --- claim -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        pytest.param([1, 1, 1, 1], [[1], [2], [3], []], id="one-at-a-time"),
        pytest.param([2, 2], [[1, 2], [3]], id="two-at-a-time"),
        pytest.param([10, 10], [[1, 2, 3], []], id="all"),
    ],
)
def test_claim_is_oldest_first(store: Store, limits: list[int], expected: list[list[int]]) -> None:
    ids = fill(store, 3)
    got = [[c.id for c in store.claim(limit, HOUR)] for limit in limits]
    assert got == [[ids[i - 1] for i in group] for group in expected]
    assert assert_consistent(store) == (3, 30, 0), "claiming does not change the totals"


def test_claim_respects_lease(store: Store) -> None:
    [batch] = fill(store, 1)
    assert [c.id for c in store.claim(10, HOUR)] == [batch]
    assert store.claim(10, HOUR) == [], "a leased batch is not claimed again"


def test_expired_lease_is_claimed_again(store: Store) -> None:
    [batch] = fill(store, 1)
    assert [(c.id, c.attempts) for c in store.claim(10, 0.0)] == [(batch, 1)]
    assert [(c.id, c.attempts) for c in store.claim(10, HOUR)] == [(batch, 2)]
    assert store.claim(10, HOUR) == []


def test_claim_respects_next_attempt_time(store: Store) -> None:
    first, second = fill(store, 2)
    store.claim(10, HOUR)
    store.retry([first], HOUR, "503: later")
    store.retry([second], 0.0, "503: now")
    assert [(c.id, c.attempts) for c in store.claim(10, HOUR)] == [(second, 2)]
    assert store.claim(10, HOUR) == []
    assert assert_consistent(store) == (2, 20, 0), "retrying does not change the totals"
    db = sqlite3.connect(store.path)
    try:
        errors = db.execute("SELECT id, state, last_error FROM batches ORDER BY id").fetchall()
    finally:
        db.close()
    assert errors == [(first, "ready", "503: later"), (second, "inflight", "503: now")]


# --- ack / bury / replay / purge ---------------------------------------------------------------------


def test_ack_deletes_and_keeps_totals(store: Store) -> None:
    ids = fill(store, 3)
    store.claim(10, HOUR)
    store.ack([ids[0], ids[2]])
    assert [row[0] for row in rows(store.path)] == [ids[1]]
    assert assert_consistent(store) == (1, 10, 0)
    store.ack([ids[0], ids[2], 999])  # already gone, unknown: nothing changes
    store.ack([])
    assert assert_consistent(store) == (1, 10, 0)


def test_ack_records_when_it_happened_for_every_process(store: Store, path: Path) -> None:
    """Readiness (``ready_export_max_age``) reads it: an ack by an export process counts in every worker."""
    ids = fill(store, 2)
    assert store.stats().last_ack_ns == 0
    store.claim(10, HOUR)
    store.retry([ids[0]], 0, "502")
    store.bury([ids[1]], "400")
    assert store.stats().last_ack_ns == 0, "only an ack is an export that succeeded"
    other = make_store(path)  # another process's store object on the same file
    try:
        before = time.time_ns()
        other.claim(10, HOUR)
        other.ack([ids[0]])
        assert before <= store.stats().last_ack_ns <= time.time_ns()
    finally:
        other.close()


def test_an_empty_claim_does_not_take_the_write_lock(store: Store, path: Path) -> None:
    """Idle export loops poll with ``claim``; a poll that finds nothing must not make a request's commit wait."""
    fill(store, 1)
    store.claim(10, HOUR)  # leased: nothing is due now
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # a writer in another process holds the lock
        assert store.claim(10, HOUR) == []  # taking the lock would fail: StoreUnavailable after the busy timeout
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_bury_moves_to_dead_letters(store: Store) -> None:
    ids = fill(store, 2)
    claimed = store.claim(10, HOUR)
    store.bury([ids[0]], "400: rejected by backend")
    store.bury([ids[0]], "400: again")  # already dead: the totals must not drop twice
    assert assert_consistent(store) == (1, 10, 1)
    assert store.dead_letters() == [(ids[0], claimed[0].received_ns, 1, "400: again")]
    store.retry([ids[1]], 0.0, "retry")
    assert [c.id for c in store.claim(10, HOUR)] == [ids[1]], "a dead batch is never claimed"
    assert store.stats().oldest_received_ns == claimed[1].received_ns, "dead batches are not waiting"


def test_ack_of_dead_batch_keeps_totals(store: Store) -> None:
    ids = fill(store, 2)
    store.bury([ids[0]], "dead")
    store.ack([ids[0]])
    assert assert_consistent(store) == (1, 10, 0)


@pytest.mark.parametrize(
    ("replay_ids", "expected_count", "expected_dead"),
    [
        pytest.param(None, 2, 0, id="all"),
        pytest.param([1], 1, 1, id="one"),
        pytest.param([3, 999], 0, 2, id="not-dead-or-unknown"),
    ],
)
def test_replay(store: Store, replay_ids: list[int] | None, expected_count: int, expected_dead: int) -> None:
    ids = fill(store, 3)
    assert ids == [1, 2, 3]
    store.claim(10, HOUR)
    store.bury([1, 2], "dead")
    assert store.replay(replay_ids) == expected_count
    batches, size, dead = assert_consistent(store)
    assert (batches, size, dead) == (1 + expected_count, 10 * (1 + expected_count), expected_dead)
    replayed = store.claim(10, HOUR)
    assert sorted((c.id, c.attempts) for c in replayed) == sorted(
        (i, 1) for i in ([1, 2] if replay_ids is None else [i for i in replay_ids if i in (1, 2)])
    ), "replayed batches are due at once, with attempts counted afresh"


def test_purge_dead(store: Store) -> None:
    ids = fill(store, 3)
    store.bury(ids[:2], "dead")
    assert store.purge_dead([ids[0]]) == 1
    assert assert_consistent(store) == (1, 10, 1)
    assert store.purge_dead() == 1
    assert assert_consistent(store) == (1, 10, 0)
    assert [row[0] for row in rows(store.path)] == [ids[2]]


def test_retry_of_dead_batch_keeps_totals_consistent(store: Store) -> None:
    [batch] = fill(store, 1)
    store.claim(10, 0.0)  # process A; its lease runs out
    store.claim(10, HOUR)  # process B takes over ...
    store.bury([batch], "400: rejected")  # ... and the backend rejects the batch for good
    store.retry([batch], 0.0, "A: timeout")  # A's late answer
    assert_consistent(store)


# --- recovery ------------------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(path: Path) -> None:
    store = make_store(path)
    ids = fill(store, 3)
    store.claim(1, HOUR)
    store.bury([ids[2]], "dead")
    store.close()
    again = make_store(path)
    try:
        assert assert_consistent(again) == (2, 20, 1)
        assert [(row[0], row[1], row[4]) for row in rows(path)] == [
            (ids[0], "inflight", b"A" * 10),
            (ids[1], "ready", b"B" * 10),
            (ids[2], "dead", b"C" * 10),
        ]
        assert [c.id for c in again.claim(10, HOUR)] == [ids[1]], "own live lease is kept across reopen"
    finally:
        again.close()


OLD_SCHEMA = """
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_ns INTEGER NOT NULL, tenant TEXT NOT NULL DEFAULT 'default',
    runs INTEGER NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'inflight', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0, next_try_ns INTEGER NOT NULL DEFAULT 0, lease_ns INTEGER NOT NULL DEFAULT 0,
    owner_pid INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX batches_due ON batches (state, next_try_ns, id);
CREATE TABLE totals (one INTEGER PRIMARY KEY CHECK (one = 1), batches INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO totals VALUES (1, 2, 9);
INSERT INTO batches (received_ns, runs, size, body) VALUES (1, 1, 4, x'6f6e6521');
INSERT INTO batches (received_ns, runs, size, body, state, last_error) VALUES (2, 2, 3, x'747721', 'dead', 'no');
INSERT INTO batches (received_ns, runs, size, body) VALUES (3, 3, 5, x'7468726565');
"""
"""A store as the first releases wrote it: bodies inside the batches rows, no owner_start, no dedupe table."""


def test_store_written_by_an_older_version_is_upgraded_in_place(path: Path) -> None:
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    store = make_store(path)
    try:
        assert assert_consistent(store) == (2, 9, 1)
        assert rows(path) == [(1, "ready", 0, 0, b"one!"), (2, "dead", 0, 0, b"tw!"), (3, "ready", 0, 0, b"three")]
        assert [(batch.id, batch.body) for batch in store.claim(10, HOUR)] == [(1, b"one!"), (3, b"three")]
        assert store.stats().last_ack_ns == 0
        store.ack([1, 3])
        assert store.stats().last_ack_ns > 0, "the totals row gained the time of the last ack"
        assert store.replay() == 1
        assert [(batch.id, batch.body) for batch in store.claim(10, HOUR)] == [(2, b"tw!")]
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
    finally:
        db.close()
    assert "body" not in columns, "the bodies moved to their own table"
    make_store(path).close()  # opening the upgraded store again changes nothing


def test_inflight_batches_of_dead_process_reclaimed_on_open(path: Path) -> None:
    store = make_store(path)
    ids = fill(store, 4)
    store.claim(10, HOUR)
    store.close()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        set_owner(path, [ids[0], ids[1]], dead_pid())
        set_owner(path, [ids[2]], sleeper.pid)  # another process that still runs: its lease holds
        # ids[3] stays owned by this (live) process
        again = make_store(path)
        try:
            assert [(row[0], row[1]) for row in rows(path)] == [
                (ids[0], "ready"),
                (ids[1], "ready"),
                (ids[2], "inflight"),
                (ids[3], "inflight"),
            ]
            assert [(c.id, c.attempts) for c in again.claim(10, HOUR)] == [(ids[0], 2), (ids[1], 2)]
            assert assert_consistent(again) == (4, 40, 0)
        finally:
            again.close()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_reclaim_orphans_counts_every_batch(store: Store) -> None:
    ids = fill(store, 3)
    store.claim(10, HOUR)
    first, second = dead_pid(), dead_pid()
    set_owner(store.path, [ids[0], ids[1]], first)
    set_owner(store.path, [ids[2]], second)
    assert store.reclaim_orphans() == 3


@pytest.mark.parametrize(("sync", "pragma"), [("full", 2), ("normal", 1)])
def test_sync_mode(path: Path, sync: str, pragma: int) -> None:
    store = make_store(path, sync=sync)
    try:
        assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


@pytest.mark.parametrize("secure_delete", [False, True])
def test_secure_delete_decides_whether_an_exported_body_stays_on_disk(path: Path, secure_delete: bool) -> None:
    """Off (the default, whatever the SQLite build's own default): an acked body's pages go to the free
    list as they are and the next batches overwrite them. On: SQLite zeroes them as the ack deletes them."""
    store = make_store(path, secure_delete=secure_delete)
    marker = b"needle-" + os.urandom(8).hex().encode()
    try:
        for conn in (store._conn(), _conn_of_another_thread(store)):
            assert conn.execute("PRAGMA secure_delete").fetchone()[0] == int(secure_delete)
        store.put(marker * 2_000, 1)  # 38 KB: overflow pages, like a real body
        (claimed,) = store.claim(1, HOUR)
        store.ack([claimed.id])
        assert assert_consistent(store) == (0, 0, 0)
    finally:
        store.close()  # the last connection to close copies the WAL into the database and removes it
    assert not path.with_name(path.name + "-wal").exists()
    assert (marker in path.read_bytes()) is not secure_delete


@pytest.mark.parametrize(("variable", "pragma"), [(None, 0), ("true", 1), ("false", 0)])
def test_the_service_builds_its_store_with_the_secure_delete_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str | None, pragma: int
) -> None:
    from adapter.exporter import build_store
    from config import load_settings

    monkeypatch.setenv("DYNAMIQ_OTEL_AUTH_DISABLED", "true")
    monkeypatch.setenv("DYNAMIQ_OTEL_DATA_DIR", str(tmp_path))
    if variable is not None:
        monkeypatch.setenv("DYNAMIQ_OTEL_STORE_SECURE_DELETE", variable)
    store = build_store(load_settings())
    store.open()
    try:
        assert store._conn().execute("PRAGMA secure_delete").fetchone()[0] == pragma
    finally:
        store.close()


def _conn_of_another_thread(store: Store) -> sqlite3.Connection:
    found: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: found.append(store._conn()))
    thread.start()
    thread.join()
    return found[0]


# --- concurrency ---------------------------------------------------------------------------------------


def test_two_store_objects_never_claim_the_same_batch(path: Path) -> None:
    """Two Store objects on one file (each with its own connections, as two processes have)."""
    producer = make_store(path)
    fill(producer, 200, size=5)
    stores = [make_store(path), make_store(path)]
    claimed: list[list[int]] = [[], []]
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        store = stores[index % 2]
        start.wait()
        while batch := store.claim(3, HOUR):
            claimed[index % 2].extend(c.id for c in batch)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        everything = claimed[0] + claimed[1]
        assert sorted(everything) == list(range(1, 201))
        assert len(set(everything)) == len(everything), "a batch was claimed twice"
        assert assert_consistent(producer) == (200, 1000, 0)
    finally:
        for store in [producer, *stores]:
            store.close()


CLAIMER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from adapter.store import Store
    store = Store(Path(sys.argv[1]), max_bytes=10**9, max_batches=10**6)
    store.open()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": both processes are open and alive
    ids = []
    while batch := store.claim(2, 3600):
        ids.extend(c.id for c in batch)
    print(json.dumps(ids), flush=True)
    sys.stdin.readline()  # stay alive until the other process is done too
    store.close()
    """
)


def test_two_processes_never_claim_the_same_batch(path: Path) -> None:
    """Two live processes claiming from one store at the same time never take the same batch.

    (Both stay alive until both are done: a batch in flight in a process that has exited is
    reclaimed on ``open()`` by design, which would be a legitimate second claim.)
    """
    producer = make_store(path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    try:
        fill(producer, 300, size=5)
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        claimed = [json.loads(process.stdout.readline()) for process in processes if process.stdout is not None]
        everything = claimed[0] + claimed[1]
        assert sorted(everything) == list(range(1, 301))
        assert not set(claimed[0]) & set(claimed[1]), "a batch was claimed by both processes"
        owners = {row[3] for row in rows(path)}
        assert owners == {process.pid for process, ids in zip(processes, claimed, strict=True) if ids}
        assert os.getpid() not in owners
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        producer.close()


# --- group commit, claims bounded by bytes, export bookkeeping -----------------------------------------


def test_put_many_is_one_transaction_with_per_batch_limits(path: Path) -> None:
    store = make_store(path, max_bytes=100, max_batches=3)
    try:
        results = store.put_many([(b"a" * 40, 1, "default"), (b"b" * 70, 2, "acme"), (b"c" * 50, 3, "default"),
                                  (b"d" * 5, 4, "default"), (b"e" * 1, 5, "default")])  # fmt: skip
        assert [type(result).__name__ for result in results] == ["int", "StoreFull", "int", "int", "StoreFull"]
        assert str(results[1]) == "1 batches, 40 bytes waiting"
        assert str(results[4]) == "3 batches, 95 bytes waiting"
        assert [(body, state) for _, state, _, _, body in rows(path)] == [
            (b"a" * 40, "ready"), (b"c" * 50, "ready"), (b"d" * 5, "ready")]  # fmt: skip
        assert assert_consistent(store) == (3, 95, 0)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("max_bytes", "first", "second"),
    [(None, [1, 2, 3, 4], []), (100, [1, 2], [3, 4]), (99, [1], [2, 3]), (10, [1], [2]), (1_000, [1, 2, 3, 4], [])],
)
def test_claim_is_bounded_by_bytes_and_takes_at_least_one(
    store: Store, max_bytes: int | None, first: list[int], second: list[int]
) -> None:
    for size in (50, 50, 30, 20):
        store.put(b"x" * size, 1)
    claimed = store.claim(10, HOUR, max_bytes=max_bytes)
    assert [c.id for c in claimed] == first
    assert [len(c.body) for c in claimed] == [(50, 50, 30, 20)[i - 1] for i in first], "bodies come with the claim"
    assert [c.id for c in store.claim(10, HOUR, max_bytes=max_bytes)] == second


def test_export_bookkeeping_does_not_wait_for_the_disk_but_puts_do(path: Path) -> None:
    """Claims and acks commit with synchronous=NORMAL (a power cut may re-send, never lose); puts with FULL."""
    store = make_store(path, sync="full")
    try:
        store.put(b"one", 1)
        (claimed,) = store.claim(1, HOUR)
        conn = store._conn()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1, "after a claim: NORMAL"
        store.put(b"two", 1)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2, "a put is fsynced: FULL"
        store.ack([claimed.id])
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert assert_consistent(store) == (1, 3, 0)
    finally:
        store.close()


def test_request_commits_leave_checkpoints_to_export_bookkeeping(path: Path) -> None:
    """A checkpoint runs inside the commit that crosses wal_autocheckpoint: puts (which requests wait
    for) cross it only far later than claims and acks do."""
    store = make_store(path)
    try:
        store.put(b"x", 1)
        conn = store._conn()
        request_pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        store.claim(1, HOUR)
        bookkeeping_pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert (request_pages, bookkeeping_pages) == (16_000, 100)
    finally:
        store.close()
