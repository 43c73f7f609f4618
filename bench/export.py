#!/usr/bin/env python3
"""The export alone: a filled store drained by the delivery loop to the counting OTLP sink.

    python bench/export.py                      # about two minutes; the mapping compiled, as shipped
    python bench/export.py --mapping python     # the mapping from its sources
    python bench/export.py --quick              # tiny sizes (smoke test; numbers not meaningful)

The export is where a replica's throughput is decided (``docs/performance.md``): this measures it
without HTTP, ingest or a load generator in the way. A store in a temporary directory is filled with
the benchmark's bodies (``bench/workload.py``: real SDK captures, fresh ids in every body), then one
``Delivery`` loop, as an export process runs it, drains it with ``run_once`` to ``bench/sink.py`` (a
process of its own) over gRPC or HTTP/protobuf. Reported per delivered run, medians over the repeats:

* the loop thread's CPU (``time.thread_time``) and this process's (every thread: gRPC's too), from
  the first claim until the store is empty;
* the loop's CPU split by step, from timers around the delivery's own calls: claim (leases, bodies
  read), read-back (``load_stored``), dedupe (``already_delivered``), mapping (``runs_to_span_bytes``),
  shrink (``_fitted``), send (request assembly and the transport), ack (delete, remember the runs,
  commit), and the rest of the loop.

Compare two versions of the code by running this script from each, in alternating pairs, on the same
machine: this host's speed drifts by the hour, a ratio measured at one time does not.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import processes  # noqa: E402
from bench.run import snapshot_code  # noqa: E402
from bench.workload import Workload  # noqa: E402

DASH = "\u2013"
STEPS = ("claim", "read-back", "dedupe", "mapping", "shrink", "send", "ack")


class _Timers:
    """Thread CPU spent inside each wrapped call, by step."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STEPS, 0.0)

    def wrap(self, step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                self.spent[step] += time.thread_time() - began

        return timed


def drain_once(
    workdir: Path, sink: processes.Started, protocol: str, batch_runs: int, batches: int
) -> dict[str, float]:
    """Fill a fresh store with ``batches`` bodies, drain it; CPU per run in all and by step (µs)."""
    import adapter.delivery as delivery_module
    from adapter.app import build_runtime
    from config import Settings

    data_dir = Path(tempfile.mkdtemp(dir=workdir))
    settings = Settings(
        data_dir=data_dir,
        access_keys=[processes.ACCESS_KEY],
        otlp_protocol="grpc" if protocol == "grpc" else "http/protobuf",
        otlp_endpoint=processes.sink_endpoint(sink, protocol),
        export_processes=0,
        store_max_bytes=1 << 40,
        store_max_batches=1 << 30,
    )
    runtime = build_runtime(settings)
    runtime.store.open()
    store, delivery = runtime.store, runtime.delivery
    assert delivery is not None
    bodies = Workload(batch_runs, seed=batches).bodies(batches)
    for start in range(0, len(bodies), 8):
        store.put_many([(body, batch_runs, "default") for body in bodies[start : start + 8]])
    timers = _Timers()
    originals = (delivery_module.load_stored, delivery_module.runs_to_span_bytes, delivery_module._fitted)
    delivery_module.load_stored = timers.wrap("read-back", originals[0])
    delivery_module.runs_to_span_bytes = timers.wrap("mapping", originals[1])
    delivery_module._fitted = timers.wrap("shrink", originals[2])
    store.claim = timers.wrap("claim", store.claim)
    store.already_delivered = timers.wrap("dedupe", store.already_delivered)
    store.ack = timers.wrap("ack", store.ack)
    delivery._send = timers.wrap("send", delivery._send)
    try:
        thread, process = time.thread_time(), time.process_time()
        while delivery.run_once():
            pass
        thread, process = time.thread_time() - thread, time.process_time() - process
        runs = delivery.counters.runs_exported
        assert store.stats().batches == 0, f"not drained: {store.stats()} {delivery.counters}"
        assert runs == batch_runs * batches, f"{runs} runs exported of {batch_runs * batches}"
    finally:
        delivery_module.load_stored, delivery_module.runs_to_span_bytes, delivery_module._fitted = originals
        delivery.close()
        store.close()
    result = {"thread": thread / runs * 1e6, "process": process / runs * 1e6}
    result |= {step: spent / runs * 1e6 for step, spent in timers.spent.items()}
    result["rest of the loop"] = result["thread"] - sum(timers.spent.values()) / runs * 1e6
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (numbers not meaningful)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--protocols", nargs="+", choices=("grpc", "http"), default=["grpc", "http"])
    parser.add_argument("--batches", nargs="+", type=int, default=[22, 500], help="runs per batch")
    parser.add_argument("--runs", type=int, default=13_200, help="runs per drain (rounded to whole batches)")
    parser.add_argument("--mapping", choices=("mypyc", "python"), default="mypyc")
    args = parser.parse_args(argv)
    repeats, total = (1, 200) if args.quick else (args.repeats, args.runs)
    with tempfile.TemporaryDirectory(prefix="dynamiq-otel-export-bench-") as name:
        workdir = Path(name)
        code = snapshot_code(workdir, args.mapping)
        print(f"code: commit {code['commit']} (uncommitted: {code['uncommitted']}), mapping {code['mapping']}")
        sink = processes.start_sink(workdir)
        try:
            rows = []
            for protocol in args.protocols:
                for batch_runs in args.batches:
                    batches = max(1, total // batch_runs)
                    samples = [drain_once(workdir, sink, protocol, batch_runs, batches) for _ in range(repeats)]
                    rows.append((protocol, batch_runs, batches, samples))
        finally:
            sink.stop()
    columns = ["thread", "process", *STEPS, "rest of the loop"]
    print(f"\nExport CPU per delivered run, µs (median of {repeats}; the range in brackets)\n")
    print("| export | batch | batches per drain | " + " | ".join(columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    for protocol, batch_runs, batches, samples in rows:
        cells = []
        for column in columns:
            values = [sample[column] for sample in samples]
            spread = f" [{min(values):.1f}{DASH}{max(values):.1f}]" if repeats > 1 else ""
            cells.append(f"{statistics.median(values):.1f}{spread}")
        print(f"| {protocol} | {batch_runs} | {batches} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
