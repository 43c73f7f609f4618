#!/usr/bin/env python3
"""The durable store alone: what a batch costs in SQLite, and what remembering delivered runs costs.

    python bench/store.py            # about a minute
    python bench/store.py --quick    # tiny sizes (smoke test; numbers not meaningful)

Sections (``docs/performance.md`` and ``docs/delivery.md`` quote the results):

1. **Batch lifecycle**: the benchmark's 22-run bodies (``bench/workload.py``, about 69 KB each) are
   stored four at a time (``put_many``), claimed as the export does (up to 64 batches or 4 MiB) and
   acknowledged with one delivered-run key per run. Reported: CPU per batch for the whole cycle,
   and the median time of one claim (bodies read included) and one ack.
2. **Remembered runs**: with N keys already in the ``delivered`` table, acks of 60 batches carrying
   1,320 run keys: how long the ack holds the write lock and the CPU per run. Two key layouts: the
   service's (``adapter.delivery.run_key``: the run's end time first, then a hash) and a plain hash
   of the same fields (the layout before), whose keys land all over the index.

Single thread, one store file in a temporary directory, nothing else running in the process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapter.delivery import run_key  # noqa: E402
from adapter.store import Store  # noqa: E402
from bench.workload import Workload  # noqa: E402
from mapping import Run  # noqa: E402

RUNS_PER_BATCH = 22
BATCHES_PER_ACK = 60
"""An export round of 22-run batches under the 4 MiB claim limit takes about 60 of them."""


def _store(directory: Path) -> Store:
    store = Store(directory / "queue.sqlite3", max_bytes=1 << 40, max_batches=1 << 40)
    store.open()
    return store


def _ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000


def lifecycle(batches: int) -> dict[str, float]:
    """Put, claim and ack ``batches`` bodies of 22 runs; CPU per batch and median claim / ack times."""
    bodies = Workload(RUNS_PER_BATCH, seed=1).bodies(batches)
    claims: list[float] = []
    acks: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        store = _store(Path(directory))
        cpu = time.process_time()
        for start in range(0, batches, BATCHES_PER_ACK):
            group = bodies[start : start + BATCHES_PER_ACK]
            for offset in range(0, len(group), 4):
                store.put_many([(body, RUNS_PER_BATCH, "default") for body in group[offset : offset + 4]])
            began = time.perf_counter()
            claimed = store.claim(64, 60.0, max_bytes=4 << 20)
            claims.append(time.perf_counter() - began)
            ended = time.time_ns()
            keys = [run_key(_run(start * RUNS_PER_BATCH + n, ended + n)) for n in range(RUNS_PER_BATCH * len(claimed))]
            began = time.perf_counter()
            store.ack([batch.id for batch in claimed], keys)
            acks.append(time.perf_counter() - began)
        cpu = time.process_time() - cpu
        store.close()
    return {"cpu_ms_per_batch": cpu / batches * 1000, "claim_ms": _ms(claims), "ack_ms": _ms(acks),
            "batches_per_claim": batches / len(claims)}  # fmt: skip


def _run(number: int, end_ns: int) -> Run:
    return Run(id=str(uuid.UUID(int=number)), name="n", type="node", trace_id="t", source_id="s",
               start_ns=end_ns - 1_000_000, end_ns=end_ns, status="succeeded")  # fmt: skip


def hash_key(run: Run) -> bytes:
    """The key layout before: 16 bytes of a SHA-256 of id, status and end time, nothing ordered
    (``run_key`` without the end time in front)."""
    return run_key(run)[8:]


def remembered(prefill: int, rounds: int, key: Callable[[Run], bytes]) -> dict[str, float]:
    """Acks of 60 small batches with 1,320 run keys into a table already holding ``prefill`` keys."""
    day_ns = 86_400 * 10**9
    now = time.time_ns()
    holds: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        store = _store(Path(directory))
        step = day_ns // max(prefill, 1)
        old_keys = [key(_run(n, now - day_ns + n * step)) for n in range(prefill)]  # the last day's runs
        (first,) = store.put_many([(b"{}", prefill, "default")])
        assert isinstance(first, int)
        store.claim(1, 60.0)
        store.ack([first], old_keys)  # remembered in one ack, in the order they ended
        cpu = time.process_time()
        keys_per_ack = RUNS_PER_BATCH * BATCHES_PER_ACK
        for number in range(rounds):
            ids = store.put_many([(b"{}", RUNS_PER_BATCH, "default")] * BATCHES_PER_ACK)
            store.claim(BATCHES_PER_ACK, 60.0)
            ended = time.time_ns() - 5 * 10**9  # runs that ended in the last seconds, as exported live
            base = prefill + number * keys_per_ack
            keys = [key(_run(base + index, ended + index * 1000)) for index in range(keys_per_ack)]
            began = time.perf_counter()
            store.ack([i for i in ids if isinstance(i, int)], keys)
            holds.append(time.perf_counter() - began)
        cpu = time.process_time() - cpu
        store.close()
    return {"ack_ms": _ms(holds), "cpu_us_per_run": cpu / (rounds * keys_per_ack) * 1e6}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args(argv)
    batches, rounds, prefills = (120, 2, (1_000,)) if args.quick else (1_200, 30, (100_000, 1_000_000))

    life = lifecycle(batches)
    print("## 1. Batch lifecycle (22-run bodies: put four at a time, claim, ack)\n")
    print("| batches | batches per claim | CPU per batch ms | claim ms (median, bodies read) | ack ms (median) |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {batches:,} | {life['batches_per_claim']:.0f} | {life['cpu_ms_per_batch']:.2f} "
          f"| {life['claim_ms']:.1f} | {life['ack_ms']:.1f} |")  # fmt: skip

    print(f"\n## 2. Remembered runs: acks of {BATCHES_PER_ACK} batches / "
          f"{RUNS_PER_BATCH * BATCHES_PER_ACK:,} run keys\n")  # fmt: skip
    print("| keys remembered | key layout | ack ms (median) | CPU per run µs (put, claim, ack) |")
    print("|---:|---|---:|---:|")
    for prefill in prefills:
        for label, key in (("end time first (the service)", run_key), ("hash only (before)", hash_key)):
            result = remembered(prefill, rounds, key)
            print(f"| {prefill:,} | {label} | {result['ack_ms']:.1f} | {result['cpu_us_per_run']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
