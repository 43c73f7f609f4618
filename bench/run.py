#!/usr/bin/env python3
"""The dynamiq-otel benchmark, in one run: floor, bare echo and the real service, side by side.

    python bench/run.py                 # full measurement (about an hour on 2 cores)
    python bench/run.py --quick         # a fast pass of every section (development, smoke test)
    python bench/run.py --out bench-results/today.md

Sections (``docs/performance.md`` explains each and holds the latest results):

1. floor: orjson + pydantic + direct protobuf + serialise, in process, one core (plus the
   textbook OpenTelemetry SDK path and the service's own validation and mapping, for reference);
2. the bare Litestar echo under uvicorn (the HTTP floor): saturation, and latency at the
   service's half-saturation request rate;
3. the real service (``dynamiq-otel serve --workers N``: validation, durable SQLite store,
   mapping, export) delivering to a local counting OTLP sink over gRPC and over HTTP: sustained
   runs/s *delivered*, ingest latency p50/p99 at saturation and at half of it, server CPU per run,
   peak RSS; beside it the textbook bridge (``bench/textbook_app.py``: pydantic, ``ReadableSpan``,
   the SDK's batch processor and exporter, no durable store), saturated and drained the same way;
4. cost per run for batch sizes 1, 10, 100, 1,000;
5. overload: offered load 2x saturation for 60 s against a bounded store: 503s and peak RSS.

Every request carries fresh run, trace and execution ids (``bench/workload.py``). All servers
listen on 127.0.0.1 and are stopped at the end. Results: a Markdown table on standard output and in
``--out`` (default ``bench-results/bench-<time>.md``), every raw number next to it as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import loadgen, processes, procstat  # noqa: E402
from bench.processes import ACCESS_KEY, Started  # noqa: E402
from bench.workload import Workload  # noqa: E402

MiB = 1024 * 1024
X, DASH = "\u00d7", "\u2013"  # the multiplication sign and the en dash of the Markdown tables
TARGETS = {
    "delivered_vs_floor": 0.5,
    "delivered_vs_textbook": 3.0,
    "p99_half_vs_echo": 3.0,
    "cost_spread": 0.30,
    "overload_rss": 1.5,
}


@dataclass
class Plan:
    """What to run and for how long."""

    repeats: int = 3
    seconds: float = 10.0  # closed-loop saturation window
    warmup: float = 2.0
    half_seconds: float = 10.0  # fixed-rate window at half saturation (longer for few requests/s)
    half_min_requests: int = 100
    half_max_seconds: float = 30.0
    overload_seconds: float = 60.0
    overload_baseline_seconds: float = 15.0
    overload_backlog_seconds: float = 10.0  # store_max_batches = this many seconds of saturation
    floor_seconds: float = 0.5
    drain_timeout: float = 180.0
    batches: tuple[int, ...] = (22, 500)
    workers: tuple[int, ...] = (2, 1)
    protocols: tuple[str, ...] = ("grpc", "http")
    cost_sizes: tuple[int, ...] = (1, 10, 100, 1000)
    cost_workers: int = 2
    cost_protocol: str = "grpc"
    overload: bool = True
    quick: bool = False
    export_processes: int | None = None  # export processes per service; None: as many as its workers
    wait_quiet_pct: float | None = None  # before each measurement, wait until others use less of the machine


def quick_plan() -> Plan:
    return Plan(repeats=1, seconds=1.5, warmup=0.5, half_seconds=1.5, half_min_requests=0, half_max_seconds=1.5,
                overload_seconds=3.0, overload_baseline_seconds=1.5, overload_backlog_seconds=0.5,
                floor_seconds=0.02, drain_timeout=60.0, batches=(22,), workers=(1,), cost_sizes=(10, 100),
                cost_workers=1, quick=True)  # fmt: skip


def connections_for(batch_runs: int, workers: int) -> int:
    """Closed-loop clients: enough to keep every worker busy while one request is on the wire."""
    if batch_runs <= 10:
        return 8 * workers
    if batch_runs <= 100:
        return 4 * workers
    return 2 * workers


# --- measurement helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Phase:
    """One load phase against one server, with what the machine did meanwhile."""

    mode: str
    seconds: float
    offered_req_s: float | None
    sent: int
    ok: int
    statuses: dict[str, int]
    errors: int
    dropped: int
    accepted_runs_s: float
    delivered_runs_s: float | None
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_s: float
    sink_cpu_s: float
    machine_busy_s: float
    rss_peak_mb: float
    rss_mean_mb: float
    runs_accepted: int
    spans_accepted: int
    server_cpu_us_per_run: float | None = None  # window + drain CPU / runs accepted
    drain_s: float | None = None
    sustained_runs_s: float | None = None  # runs delivered from window start to drained / (window + drain)
    undelivered_spans: int = 0


class Target:
    """A server under test (service or echo) with its CPU and memory probes."""

    def __init__(self, started: Started, sink: Started | None) -> None:
        self.started = started
        self.sink = sink
        self.sampler = procstat.TreeSampler(started.pid).start()
        self.spans_accepted = 0

    def pids(self) -> list[int]:
        return self.sampler.pids()

    def sink_spans(self) -> float:
        return processes.sink_stats(self.sink)["spans"] if self.sink else 0.0

    def close(self) -> None:
        self.sampler.stop()
        self.started.stop()

    def phase(
        self,
        generator: loadgen.LoadGenerator,
        mode: str,
        *,
        seconds: float,
        connections: int,
        rate: float | None = None,
        spans_per_run: float = 1.0,
        drain_timeout: float = 0.0,
    ) -> Phase:
        pids = self.pids()
        sink_pid = [self.sink.pid] if self.sink else []
        spans0, cpu0, sink0 = self.sink_spans(), procstat.cpu_seconds(pids), procstat.cpu_seconds(sink_pid)
        busy0, _ = procstat.machine_cpu_seconds()
        self.sampler.reset()
        started = time.monotonic()
        if mode == "closed":
            result = loadgen.run(lambda: generator.closed_loop(connections, seconds))
        else:
            assert rate is not None
            result = loadgen.run(lambda: generator.fixed_rate(rate, seconds, connections, max_pending=4 * connections))
        window = time.monotonic() - started
        spans1, cpu1, sink1 = self.sink_spans(), procstat.cpu_seconds(pids), procstat.cpu_seconds(sink_pid)
        busy1, _ = procstat.machine_cpu_seconds()
        peak, mean = self.sampler.peak, self.sampler.mean
        self.spans_accepted += result.spans_accepted
        phase = Phase(
            mode=mode,
            seconds=window,
            offered_req_s=rate,
            sent=result.sent,
            ok=result.ok,
            statuses={str(k): v for k, v in sorted(result.statuses.items())},
            errors=result.errors,
            dropped=result.dropped,
            accepted_runs_s=result.runs_accepted / window,
            delivered_runs_s=(spans1 - spans0) / spans_per_run / window if self.sink else None,
            p50_ms=result.percentile(50) * 1e3,
            p99_ms=result.percentile(99) * 1e3,
            server_cpu_s=cpu1 - cpu0,
            client_cpu_s=result.client_cpu_s,
            sink_cpu_s=sink1 - sink0,
            machine_busy_s=busy1 - busy0,
            rss_peak_mb=peak / MiB,
            rss_mean_mb=mean / MiB,
            runs_accepted=result.runs_accepted,
            spans_accepted=result.spans_accepted,
        )
        if self.sink and drain_timeout > 0:
            phase.drain_s, phase.undelivered_spans = self.drain(drain_timeout)
            total_cpu = procstat.cpu_seconds(pids) - cpu0
            delivered_spans = self.sink_spans() - spans0
            phase.sustained_runs_s = delivered_spans / spans_per_run / (window + phase.drain_s)
            if result.runs_accepted:
                phase.server_cpu_us_per_run = total_cpu / result.runs_accepted * 1e6
        elif result.runs_accepted:
            phase.server_cpu_us_per_run = phase.server_cpu_s / result.runs_accepted * 1e6
        return phase

    def drain(self, timeout: float) -> tuple[float, int]:
        """Wait until the sink holds every span accepted so far; (seconds waited, spans missing)."""
        started = time.monotonic()
        missing = int(self.spans_accepted - self.sink_spans())
        while missing > 0 and time.monotonic() - started < timeout:
            time.sleep(0.1)
            missing = int(self.spans_accepted - self.sink_spans())
        return time.monotonic() - started, max(missing, 0)


# --- sections -----------------------------------------------------------------------------------


def measure_floor(plan: Plan) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
    """The floor rows on one core, and the floor row on every core at once (per copy runs/s), by batch size."""
    results: dict[str, list[dict[str, Any]]] = {}
    all_cores: dict[str, list[float]] = {}
    for batch in sorted({*plan.batches, 22, 500}):
        workload = Workload(batch)
        count = 2 if plan.quick else max(2, min(len(workload.templates), 4000 // batch))
        bodies = workload.bodies(count)
        from bench import floor  # imported late: from the code snapshot (see snapshot_code)

        rows = floor.measure(bodies, batch, min_seconds=plan.floor_seconds, repeats=1 if plan.quick else 3)
        results[str(batch)] = [asdict(row) for row in rows]
        wait_quiet(plan)
        all_cores[str(batch)] = floor.measure_all_cores(bodies, batch, os.cpu_count() or 1, 6 * plan.floor_seconds)
    return results, all_cores


def measure_group(plan: Plan, workdir: Path, sink: Started, workers: int, batch: int) -> dict[str, Any]:
    """Echo saturation, then the service over each protocol, then the echo at each half rate."""
    workload = Workload(batch)
    spans_per_run = workload.spans_per_run
    connections = connections_for(batch, workers)
    group: dict[str, Any] = {"workers": workers, "batch": batch, "connections": connections,
                             "body_kb": workload.mean_body_bytes / 1024, "services": {}, "textbook": {}}  # fmt: skip
    wait_quiet(plan)
    echo = Target(processes.start_echo(workdir, workers=workers), None)
    try:
        echo_gen = loadgen.LoadGenerator(echo.started.port, workload.next, batch, ACCESS_KEY)
        echo.phase(echo_gen, "closed", seconds=plan.warmup, connections=connections)
        group["echo_saturation"] = asdict(echo.phase(echo_gen, "closed", seconds=plan.seconds, connections=connections))
        log(f"  echo w={workers} batch={batch}: {group['echo_saturation']['accepted_runs_s']:.0f} runs/s")
        for protocol in plan.protocols:
            try:
                group["services"][protocol] = measure_service(plan, workdir, sink, workers, batch, protocol, workload)
            except Exception as exc:  # one failed case must not lose a long run: record it and go on
                log(f"  service w={workers} batch={batch} {protocol} FAILED: {exc!r}")
                group["services"][protocol] = {"protocol": protocol, "error": repr(exc)}
        for protocol in plan.protocols:
            try:
                group["textbook"][protocol] = measure_textbook(plan, workdir, sink, workers, batch, protocol, workload)
            except Exception as exc:
                log(f"  textbook w={workers} batch={batch} {protocol} FAILED: {exc!r}")
                group["textbook"][protocol] = {"protocol": protocol, "error": repr(exc)}
        for protocol, service in group["services"].items():
            if "error" in service:
                continue
            rate = service["half_rate_req_s"]
            seconds = half_seconds(plan, rate)
            wait_quiet(plan)
            phase = echo.phase(echo_gen, "fixed", seconds=seconds, connections=max(32, connections), rate=rate)
            service["echo_half"] = asdict(phase)
            log(f"  echo at {rate:.1f} req/s ({protocol}'s half rate): p99 {phase.p99_ms:.1f} ms")
    finally:
        echo.close()
    group["spans_per_run"] = spans_per_run
    return group


def half_seconds(plan: Plan, rate: float) -> float:
    wanted = plan.half_min_requests / rate if rate > 0 else plan.half_seconds
    return min(max(plan.half_seconds, wanted), max(plan.half_max_seconds, plan.half_seconds))


SATURATION_SETTINGS = {"store_max_batches": 10_000_000, "store_max_bytes": 64 * 1024 * MiB}
"""Saturation runs must measure the pipeline, not the store's limits: the limits are raised."""


def service_settings(plan: Plan, workers: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` plus the export processes the plan gives a service of ``workers`` workers."""
    export = workers if plan.export_processes is None else plan.export_processes
    return {**settings, "export_processes": export}


def measure_service(
    plan: Plan, workdir: Path, sink: Started, workers: int, batch: int, protocol: str, workload: Workload
) -> dict[str, Any]:
    spans_per_run = workload.spans_per_run
    connections = connections_for(batch, workers)
    wait_quiet(plan)
    processes.sink_reset(sink)
    service = Target(
        processes.start_service(
            workdir,
            workers=workers,
            protocol=protocol,
            sink=sink,
            settings=service_settings(plan, workers, SATURATION_SETTINGS),
        ),
        sink,
    )
    out: dict[str, Any] = {"protocol": protocol}
    try:
        gen = loadgen.LoadGenerator(service.started.port, workload.next, batch, ACCESS_KEY)
        service.phase(gen, "closed", seconds=plan.warmup, connections=connections, spans_per_run=spans_per_run,
                      drain_timeout=plan.drain_timeout)  # fmt: skip
        saturation = service.phase(gen, "closed", seconds=plan.seconds, connections=connections,
                                   spans_per_run=spans_per_run, drain_timeout=plan.drain_timeout)  # fmt: skip
        out["saturation"] = asdict(saturation)
        delivered = saturation.sustained_runs_s or 0.0
        rate = max(0.5 * delivered / batch, 0.2)
        out["half_rate_req_s"] = rate
        half = service.phase(gen, "fixed", seconds=half_seconds(plan, rate), connections=max(32, connections),
                             rate=rate, spans_per_run=spans_per_run, drain_timeout=plan.drain_timeout)  # fmt: skip
        out["half"] = asdict(half)
        out["lost_spans"] = int(service.spans_accepted - service.sink_spans())
        log(
            f"  service w={workers} batch={batch} {protocol}: sustained {delivered:.0f} runs/s delivered "
            f"(in the window: accepted {saturation.accepted_runs_s:.0f}, delivered "
            f"{saturation.delivered_runs_s or 0:.0f}; drain {saturation.drain_s or 0:.1f} s), "
            f"p99 sat {saturation.p99_ms:.0f} ms, "
            f"half {rate:.1f} req/s p99 {half.p99_ms:.1f} ms, cpu {saturation.server_cpu_us_per_run or 0:.0f} us/run"
        )
    except Exception:
        log(f"  service log:\n{service.started.tail()}")
        raise
    finally:
        service.close()
        shutil.rmtree(service.started.extra["data_dir"], ignore_errors=True)
    return out


def measure_textbook(
    plan: Plan, workdir: Path, sink: Started, workers: int, batch: int, protocol: str, workload: Workload
) -> dict[str, Any]:
    """The textbook bridge (``bench/textbook_app.py``) at saturation: sustained delivered runs/s, as the
    service's (one span per run: it makes no attempt spans)."""
    connections = connections_for(batch, workers)
    wait_quiet(plan)
    textbook = Target(processes.start_textbook(workdir, workers=workers, protocol=protocol, sink=sink), sink)
    try:
        processes.sink_reset(sink)

        def next_body() -> tuple[bytes, int]:
            return workload.next()[0], batch  # one span per run

        gen = loadgen.LoadGenerator(textbook.started.port, next_body, batch, ACCESS_KEY)
        textbook.phase(gen, "closed", seconds=plan.warmup, connections=connections, drain_timeout=plan.drain_timeout)
        saturation = textbook.phase(gen, "closed", seconds=plan.seconds, connections=connections,
                                    drain_timeout=plan.drain_timeout)  # fmt: skip
    finally:
        textbook.close()
    out = {"protocol": protocol, "saturation": asdict(saturation),
           "lost_spans": int(textbook.spans_accepted - textbook.sink_spans())}  # fmt: skip
    log(
        f"  textbook w={workers} batch={batch} {protocol}: sustained {saturation.sustained_runs_s or 0:.0f} runs/s "
        f"delivered (accepted {saturation.accepted_runs_s:.0f}; drain {saturation.drain_s or 0:.1f} s), "
        f"cpu {saturation.server_cpu_us_per_run or 0:.0f} us/run"
    )
    return out


def measure_cost(plan: Plan, workdir: Path, sink: Started) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for batch in plan.cost_sizes:
        try:
            results[str(batch)] = measure_cost_case(plan, workdir, sink, batch)
        except Exception as exc:  # one failed case must not lose a long run: record it and go on
            log(f"  cost batch={batch} FAILED: {exc!r}")
            results[str(batch)] = {"error": repr(exc), "connections": connections_for(batch, plan.cost_workers)}
    return results


def measure_cost_case(plan: Plan, workdir: Path, sink: Started, batch: int) -> dict[str, Any]:
    workload = Workload(batch)
    connections = connections_for(batch, plan.cost_workers)
    wait_quiet(plan)
    processes.sink_reset(sink)
    service = Target(
        processes.start_service(workdir, workers=plan.cost_workers, protocol=plan.cost_protocol, sink=sink,
                                settings=service_settings(plan, plan.cost_workers, SATURATION_SETTINGS)),
        sink,
    )  # fmt: skip
    try:
        gen = loadgen.LoadGenerator(service.started.port, workload.next, batch, ACCESS_KEY)
        service.phase(gen, "closed", seconds=plan.warmup, connections=connections,
                      spans_per_run=workload.spans_per_run, drain_timeout=plan.drain_timeout)  # fmt: skip
        phase = service.phase(gen, "closed", seconds=max(plan.seconds, 1.0), connections=connections,
                              spans_per_run=workload.spans_per_run, drain_timeout=plan.drain_timeout)  # fmt: skip
        log(f"  cost batch={batch}: {phase.server_cpu_us_per_run or 0:.0f} us/run, "
            f"{phase.sustained_runs_s or 0:.0f} runs/s sustained")  # fmt: skip
        return asdict(phase) | {"connections": connections}
    except Exception:
        log(f"  service log:\n{service.started.tail()}")
        raise
    finally:
        service.close()
        shutil.rmtree(service.started.extra["data_dir"], ignore_errors=True)


def measure_overload(plan: Plan, workdir: Path, sink: Started, saturation_runs_s: float) -> dict[str, Any]:
    """Half load (the RSS baseline), then 2x saturation against a store bounded to a few seconds."""
    batch, workers = 22, max(plan.workers)
    workload = Workload(batch)
    sat_req_s = max(saturation_runs_s / batch, 1.0)
    max_batches = max(20, round(plan.overload_backlog_seconds * sat_req_s))
    wait_quiet(plan)
    processes.sink_reset(sink)
    service = Target(
        processes.start_service(workdir, workers=workers, protocol="grpc", sink=sink,
                                settings=service_settings(plan, workers, {"store_max_batches": max_batches})),
        sink,
    )  # fmt: skip
    out: dict[str, Any] = {"workers": workers, "batch": batch, "store_max_batches": max_batches,
                           "saturation_req_s": sat_req_s}  # fmt: skip
    try:
        gen = loadgen.LoadGenerator(service.started.port, workload.next, batch, ACCESS_KEY)
        half = service.phase(gen, "fixed", seconds=plan.overload_baseline_seconds, connections=32,
                             rate=0.5 * sat_req_s, spans_per_run=workload.spans_per_run)  # fmt: skip
        out["half"] = asdict(half)
        over = service.phase(gen, "fixed", seconds=plan.overload_seconds, connections=64, rate=2 * sat_req_s,
                             spans_per_run=workload.spans_per_run)  # fmt: skip
        out["overload"] = asdict(over)
        samples = service.sampler.samples[:]  # the sampler was reset at the start of the phase
        tenth = max(1, len(samples) // 6)
        out["rss_first_mb"] = statistics.mean(samples[:tenth]) / MiB if samples else 0.0
        out["rss_last_mb"] = statistics.mean(samples[-tenth:]) / MiB if samples else 0.0
        out["healthy_after"] = _healthy(service.started.port)
        log(f"  overload: {over.statuses} peak RSS {over.rss_peak_mb:.0f} MB vs half-load {half.rss_mean_mb:.0f} MB")
    finally:
        service.close()
        shutil.rmtree(service.started.extra["data_dir"], ignore_errors=True)
    return out


QUIET_WAITS: list[float] = []
"""Seconds waited for a quiet machine before each measurement (``--wait-quiet``)."""


def wait_quiet(plan: Plan, timeout_s: float = 600.0) -> None:
    """With ``--wait-quiet PCT``: wait until other processes use less than PCT % of the machine.

    Measured over 3 s while nothing of the benchmark runs but idle servers, so another team's test
    run on a shared machine does not end up in the numbers. Gives up after ``timeout_s``.
    """
    if plan.wait_quiet_pct is None:
        return
    started = time.monotonic()
    while True:
        busy0, total0 = procstat.machine_cpu_seconds()
        time.sleep(3.0)
        busy1, total1 = procstat.machine_cpu_seconds()
        share = 100 * (busy1 - busy0) / max(total1 - total0, 1e-9)
        waited = time.monotonic() - started
        if share < plan.wait_quiet_pct or waited > timeout_s:
            if waited > 10:
                log(f"  machine {share:.0f}% busy: measuring after waiting {waited:.0f} s")
            QUIET_WAITS.append(waited)
            return
        log(f"  machine {share:.0f}% busy from other processes: waiting")
        time.sleep(7.0)


def _healthy(port: int) -> bool:
    try:
        return processes._get_ok(f"http://127.0.0.1:{port}/healthz")
    except OSError:
        return False


# --- summary ------------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None and v == v]
    return statistics.median(kept) if kept else float("nan")


def span(values: Iterable[float | None]) -> tuple[float, float]:
    kept = [v for v in values if v is not None and v == v]
    return (min(kept), max(kept)) if kept else (float("nan"), float("nan"))


def summarise(repeats: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Medians over the repeats of every number the table shows."""

    def over(getter: Callable[[dict[str, Any]], float | None]) -> list[float | None]:
        out = []
        for rep in repeats:
            try:
                out.append(getter(rep))
            except (KeyError, TypeError, ZeroDivisionError):
                out.append(None)
        return out

    summary: dict[str, Any] = {
        "floor": {}, "floor_all_cores": {}, "cases": [], "echo": [], "textbook": [], "cost": [], "overload": None
    }  # fmt: skip
    for batch in sorted({*plan.batches, 22, 500}):
        keys = [row["key"] for row in repeats[0]["floor"][str(batch)]]
        rows = []
        for index, key in enumerate(keys):
            rows.append({
                "key": key,
                "label": repeats[0]["floor"][str(batch)][index]["label"],
                "us_per_run": median(over(lambda r, i=index, b=str(batch): r["floor"][b][i]["us_per_run"])),
                "runs_per_s": median(over(lambda r, i=index, b=str(batch): r["floor"][b][i]["runs_per_s"])),
                "out_bytes_per_run": median(
                    over(lambda r, i=index, b=str(batch): r["floor"][b][i]["out_bytes_per_run"])
                ),
            })  # fmt: skip
        summary["floor"][str(batch)] = {row["key"]: row for row in rows}
        together = median(over(lambda r, b=str(batch): sum(r["floor_all_cores"][b])))
        summary["floor_all_cores"][str(batch)] = {
            "copies": len(repeats[0]["floor_all_cores"][str(batch)]),
            "runs_per_s": together,
            "per_copy_runs_s": median(over(lambda r, b=str(batch): statistics.mean(r["floor_all_cores"][b]))),
            "vs_one_core": together / summary["floor"][str(batch)]["floor"]["runs_per_s"],
        }
    for gi, group in enumerate(repeats[0]["groups"]):
        batch, workers = group["batch"], group["workers"]

        def g(rep: dict[str, Any], gi: int = gi) -> dict[str, Any]:
            result: dict[str, Any] = rep["groups"][gi]
            return result

        echo_runs = median(over(lambda r: g(r)["echo_saturation"]["accepted_runs_s"]))
        summary["echo"].append({
            "workers": workers, "batch": batch, "connections": group["connections"],
            "runs_s": echo_runs, "req_s": echo_runs / batch,
            "p50_ms": median(over(lambda r: g(r)["echo_saturation"]["p50_ms"])),
            "p99_ms": median(over(lambda r: g(r)["echo_saturation"]["p99_ms"])),
            "cpu_us_per_run": median(over(lambda r: g(r)["echo_saturation"]["server_cpu_us_per_run"])),
        })  # fmt: skip
        floor_runs = summary["floor"][str(batch)]["floor"]["runs_per_s"]
        textbook_runs = summary["floor"][str(batch)]["textbook"]["runs_per_s"]
        bridge: dict[str, float] = {}
        for protocol in group.get("textbook", {}):

            def t(rep: dict[str, Any], protocol: str = protocol, gi: int = gi) -> dict[str, Any]:
                result: dict[str, Any] = rep["groups"][gi]["textbook"][protocol]["saturation"]
                return result

            bridge_all = over(lambda r: t(r)["sustained_runs_s"])
            bridge[protocol] = median(bridge_all)
            summary["textbook"].append({
                "workers": workers, "batch": batch, "protocol": protocol, "connections": group["connections"],
                "delivered_runs_s": bridge[protocol], "delivered_range": span(bridge_all),
                "accepted_runs_s": median(over(lambda r: t(r)["accepted_runs_s"])),
                "drain_s": median(over(lambda r: t(r)["drain_s"])),
                "cpu_us_per_run": median(over(lambda r: t(r)["server_cpu_us_per_run"])),
                "rss_peak_mb": median(over(lambda r: t(r)["rss_peak_mb"])),
                "p99_sat_ms": median(over(lambda r: t(r)["p99_ms"])),
                "server_cpu_pct": median(over(lambda r: 100 * t(r)["server_cpu_s"] / t(r)["seconds"])),
            })  # fmt: skip
        for protocol in group["services"]:

            def s(rep: dict[str, Any], protocol: str = protocol, gi: int = gi) -> dict[str, Any]:
                result: dict[str, Any] = rep["groups"][gi]["services"][protocol]
                return result

            delivered_all = over(lambda r: s(r)["saturation"]["sustained_runs_s"])
            delivered = median(delivered_all)
            p99_half = median(over(lambda r: s(r)["half"]["p99_ms"]))
            echo_p99_half = median(over(lambda r: s(r)["echo_half"]["p99_ms"]))
            sat_other = over(lambda r: other_share(s(r)["saturation"]))
            summary["cases"].append({
                "workers": workers, "batch": batch, "protocol": protocol,
                "connections": group["connections"],
                "delivered_runs_s": delivered, "delivered_range": span(delivered_all),
                "accepted_runs_s": median(over(lambda r: s(r)["saturation"]["accepted_runs_s"])),
                "window_delivered_runs_s": median(over(lambda r: s(r)["saturation"]["delivered_runs_s"])),
                "vs_floor": delivered / floor_runs, "vs_textbook": delivered / textbook_runs,
                "vs_floor_all_cores": delivered / summary["floor_all_cores"][str(batch)]["runs_per_s"],
                "vs_bridge": delivered / bridge[protocol] if bridge.get(protocol) else float("nan"),
                "vs_echo": delivered / echo_runs,
                "p50_sat_ms": median(over(lambda r: s(r)["saturation"]["p50_ms"])),
                "p99_sat_ms": median(over(lambda r: s(r)["saturation"]["p99_ms"])),
                "half_req_s": median(over(lambda r: s(r)["half_rate_req_s"])),
                "p50_half_ms": median(over(lambda r: s(r)["half"]["p50_ms"])),
                "p99_half_ms": p99_half,
                "echo_p99_half_ms": echo_p99_half,
                "echo_p50_half_ms": median(over(lambda r: s(r)["echo_half"]["p50_ms"])),
                "p99_half_vs_echo": median(over(lambda r: s(r)["half"]["p99_ms"] / s(r)["echo_half"]["p99_ms"])),
                "cpu_us_per_run": median(over(lambda r: s(r)["saturation"]["server_cpu_us_per_run"])),
                "cpu_us_per_run_half": median(over(lambda r: s(r)["half"]["server_cpu_us_per_run"])),
                "rss_peak_mb": median(over(lambda r: s(r)["saturation"]["rss_peak_mb"])),
                "rss_half_mb": median(over(lambda r: s(r)["half"]["rss_mean_mb"])),
                "drain_s": median(over(lambda r: s(r)["saturation"]["drain_s"])),
                "lost_spans": max(v or 0 for v in over(lambda r: s(r)["lost_spans"])),
                "client_cpu_pct": median(over(lambda r: 100 * s(r)["saturation"]["client_cpu_s"]
                                              / s(r)["saturation"]["seconds"])),
                "sink_cpu_pct": median(over(lambda r: 100 * s(r)["saturation"]["sink_cpu_s"]
                                            / s(r)["saturation"]["seconds"])),
                "server_cpu_pct": median(over(lambda r: 100 * s(r)["saturation"]["server_cpu_s"]
                                              / s(r)["saturation"]["seconds"])),
                "other_cpu_pct": median(sat_other),
            })  # fmt: skip
    for size in plan.cost_sizes:
        key = str(size)
        summary["cost"].append({
            "batch": size,
            "cpu_us_per_run": median(over(lambda r, k=key: r["cost"][k]["server_cpu_us_per_run"])),
            "delivered_runs_s": median(over(lambda r, k=key: r["cost"][k]["sustained_runs_s"])),
            "accepted_runs_s": median(over(lambda r, k=key: r["cost"][k]["accepted_runs_s"])),
            "p99_ms": median(over(lambda r, k=key: r["cost"][k]["p99_ms"])),
            "connections": repeats[0]["cost"][key]["connections"],
        })  # fmt: skip
    measured = [r for r in repeats if r.get("overload") and "error" not in r["overload"]]
    if plan.overload and measured:
        o = "overload"
        summary["overload"] = {
            "workers": measured[0][o]["workers"],
            "store_max_batches": median(over(lambda r: r[o]["store_max_batches"])),
            "offered_req_s": median(over(lambda r: r[o]["overload"]["offered_req_s"])),
            "half_req_s": median(over(lambda r: r[o]["half"]["offered_req_s"])),
            "rss_half_mean_mb": median(over(lambda r: r[o]["half"]["rss_mean_mb"])),
            "rss_half_peak_mb": median(over(lambda r: r[o]["half"]["rss_peak_mb"])),
            "rss_over_peak_mb": median(over(lambda r: r[o]["overload"]["rss_peak_mb"])),
            "rss_first_mb": median(over(lambda r: r[o]["rss_first_mb"])),
            "rss_last_mb": median(over(lambda r: r[o]["rss_last_mb"])),
            "rss_ratio": median(over(lambda r: r[o]["overload"]["rss_peak_mb"] / r[o]["half"]["rss_mean_mb"])),
            "ok_s": median(over(lambda r: r[o]["overload"]["ok"] / r[o]["overload"]["seconds"])),
            "s503_s": median(over(lambda r: r[o]["overload"]["statuses"].get("503", 0) / r[o]["overload"]["seconds"])),
            "statuses": measured[-1][o]["overload"]["statuses"],
            "errors": median(over(lambda r: r[o]["overload"]["errors"])),
            "dropped": median(over(lambda r: r[o]["overload"]["dropped"])),
            "p99_ok_ms": median(over(lambda r: r[o]["overload"]["p99_ms"])),
            "p50_ok_ms": median(over(lambda r: r[o]["overload"]["p50_ms"])),
            "dropped_s": median(over(lambda r: r[o]["overload"]["dropped"] / r[o]["overload"]["seconds"])),
            "healthy_after": all(r[o]["healthy_after"] for r in measured),
        }  # fmt: skip
    return summary


def other_share(phase: dict[str, Any]) -> float:
    """Share of the machine's CPU used by processes outside the benchmark during a phase, in %."""
    ours = phase["server_cpu_s"] + phase["client_cpu_s"] + phase["sink_cpu_s"]
    cores = os.cpu_count() or 1
    return max(0.0, 100 * (phase["machine_busy_s"] - ours) / (phase["seconds"] * cores))


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return DASH
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render(summary: dict[str, Any], meta: dict[str, Any], plan: Plan) -> str:
    lines: list[str] = []
    add = lines.append
    add(f"# dynamiq-otel benchmark — {meta['finished']}")
    add("")
    add(f"- command: `{meta['command']}`")
    add(f"- machine: {meta['machine']}")
    code = meta["code"]
    add(
        f"- service code: commit `{code['commit']}` (uncommitted changes in adapter/ mapping/ config/ and the "
        "build files: "
        f"{code['uncommitted']}; sources sha256 `{code['sources_sha256']}`), run from a snapshot; "
        f"mapping {code['mapping']}"
    )
    add(f"- repeats: {plan.repeats} (every number is the median over the repeats); saturation window "
        f"{plan.seconds:g} s, half-load window ≥ {plan.half_seconds:g} s, overload {plan.overload_seconds:g} s"
        + (" — **quick mode: numbers are not meaningful**" if plan.quick else ""))  # fmt: skip
    add("- export processes per service: "
        + ("as many as its workers" if plan.export_processes is None else str(plan.export_processes))
        + (" (0: each worker exports in a thread)" if plan.export_processes == 0 else ""))  # fmt: skip
    add(
        f"- load average (1/5/15 min): before {meta['loadavg_before']}, after {meta['loadavg_after']}; "
        f"per repeat (start → end): {'; '.join(meta['loadavg_repeats'])}"
    )
    others = [c["other_cpu_pct"] for c in summary["cases"]]
    add(
        f"- CPU used by other processes during the service's saturation windows: median {fmt(median(others))} % "
        f"of the machine (max {fmt(max(others) if others else None)} %)"
        + (
            f"; waited {meta['quiet_waits_s']} s in all for a quiet machine (--wait-quiet)"
            if meta["quiet_waits_s"]
            else ""
        )
    )
    add("")
    add("## 1. Floor: in process, one core (µs per run)")
    add("")
    batches = sorted(summary["floor"], key=int)
    add("| step | " + " | ".join(f"{b}-run batch µs/run (runs/s)" for b in batches) + " | output bytes/run |")
    add("|---|" + "---:|" * len(batches) + "---:|")
    for key, row in summary["floor"][batches[0]].items():
        cells = [f"{fmt(summary['floor'][b][key]['us_per_run'], 1)} ({fmt(summary['floor'][b][key]['runs_per_s'])})"
                 for b in batches]  # fmt: skip
        size = summary["floor"][batches[0]][key]["out_bytes_per_run"]
        add(f"| {row['label']} | " + " | ".join(cells) + f" | {fmt(size) if size else ''} |")
    together = summary["floor_all_cores"]
    copies = together[batches[0]]["copies"]
    cells = [f"{fmt(together[b]['runs_per_s'])} in all = {fmt(together[b]['vs_one_core'], 2)}{X} one core "
             f"({fmt(together[b]['per_copy_runs_s'])} per copy)" for b in batches]  # fmt: skip
    add(f"| floor on all {copies} cores at once ({copies} processes, started together) | " + " | ".join(cells) + " | |")
    add("")
    add(
        f"The last row runs the floor in {copies} processes at once, started together: what this machine's cores "
        "give together, measured rather than taken as that many times one core (the service runs on all of them)."
    )
    add("")
    add("## 2. Bare Litestar echo under uvicorn (the HTTP floor), closed loop")
    add("")
    add(
        "The echo reads the body and answers the service's 200. Its saturation is bounded by the load generator "
        "(one Python process on the same cores), so these are lower bounds of the echo's capacity."
    )
    add("")
    add("| workers | batch | connections | req/s | runs/s | p50 ms | p99 ms | server CPU µs/run |")
    add("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in summary["echo"]:
        add(f"| {e['workers']} | {e['batch']} | {e['connections']} | {fmt(e['req_s'])} | {fmt(e['runs_s'])} | "
            f"{fmt(e['p50_ms'], 1)} | {fmt(e['p99_ms'], 1)} | {fmt(e['cpu_us_per_run'], 1)} |")  # fmt: skip
    add("")
    add("## 3. The service: validation + durable store + mapping + export to a local OTLP sink")
    add("")
    add(
        "Sustained delivered = runs the sink received from the start of a closed-loop window until every run "
        "accepted in it was delivered, divided by that time (window + drain). In the window alone the service "
        "may accept faster than it exports (the backlog waits in the store). Ratios: ÷ floor and ÷ textbook "
        "are against the one-core in-process rows of section 1 for the same batch; ÷ bridge against the "
        "textbook bridge below (same workers, batch and export protocol, measured the same way); ÷ echo "
        "against the echo's runs/s with the same workers. Server CPU per run: all service processes, "
        "window + drain, per run."
    )
    add("")
    add(
        f"| workers | batch | export | sustained delivered runs/s (min{DASH}max) | ÷ floor | ÷ textbook | ÷ bridge "
        "| ÷ echo | in the window: accepted / delivered runs/s | drain s | server CPU µs/run | peak RSS MB "
        "| lost spans |"
    )
    add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in summary["cases"]:
        low, high = c["delivered_range"]
        add(
            f"| {c['workers']} | {c['batch']} | {c['protocol']} | **{fmt(c['delivered_runs_s'])}** "
            f"({fmt(low)}{DASH}{fmt(high)}) | {fmt(c['vs_floor'], 2)}{X} | {fmt(c['vs_textbook'], 2)}{X} "
            f"| {fmt(c['vs_bridge'], 2)}{X} | {fmt(c['vs_echo'], 3)}{X} "
            f"| {fmt(c['accepted_runs_s'])} / {fmt(c['window_delivered_runs_s'])} "
            f"| {fmt(c['drain_s'], 1)} | {fmt(c['cpu_us_per_run'])} | {fmt(c['rss_peak_mb'])} | {c['lost_spans']} |"
        )
    add("")
    add(
        "Ingest latency (request sent → answer received) at saturation (closed loop) and at half of the "
        "sustained rate (fixed rate, measured from the scheduled send time), with the bare echo at the same "
        "request rate."
    )
    add("")
    add(
        "| workers | batch | export | p50 / p99 ms at saturation | half rate req/s | p50 / p99 ms at half "
        "| echo p50 / p99 ms at same rate | p99 ÷ echo p99 |"
    )
    add("|---:|---:|---|---:|---:|---:|---:|---:|")
    for c in summary["cases"]:
        add(
            f"| {c['workers']} | {c['batch']} | {c['protocol']} "
            f"| {fmt(c['p50_sat_ms'], 1)} / {fmt(c['p99_sat_ms'], 1)} "
            f"| {fmt(c['half_req_s'], 1)} | {fmt(c['p50_half_ms'], 1)} / {fmt(c['p99_half_ms'], 1)} "
            f"| {fmt(c['echo_p50_half_ms'], 1)} / {fmt(c['echo_p99_half_ms'], 1)} "
            f"| {fmt(c['p99_half_vs_echo'], 1)}{X} |"
        )
    add("")
    if summary["textbook"]:
        add(
            "The textbook bridge (`bench/textbook_app.py`): the same endpoint built the way the OpenTelemetry SDK's "
            "documentation suggests, under uvicorn with the same workers: pydantic validation, one SDK "
            "`ReadableSpan` per run (the floor's attributes), the SDK's `BatchSpanProcessor` and OTLP exporter. "
            "No auth, no durable store (what it accepted is lost if a process dies), its queue raised to "
            f"{processes.TEXTBOOK_QUEUE:,} spans so that it drops nothing. Same closed loop, delivered and drained "
            "the same way."
        )
        add("")
        add(
            f"| workers | batch | export | sustained delivered runs/s (min{DASH}max) | accepted runs/s in the window "
            "| drain s | p99 ms at saturation | server CPU µs/run | server % | peak RSS MB |"
        )
        add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for b in summary["textbook"]:
            low, high = b["delivered_range"]
            add(
                f"| {b['workers']} | {b['batch']} | {b['protocol']} | **{fmt(b['delivered_runs_s'])}** "
                f"({fmt(low)}{DASH}{fmt(high)}) | {fmt(b['accepted_runs_s'])} | {fmt(b['drain_s'], 1)} "
                f"| {fmt(b['p99_sat_ms'], 1)} | {fmt(b['cpu_us_per_run'])} | {fmt(b['server_cpu_pct'])} "
                f"| {fmt(b['rss_peak_mb'])} |"
            )
        add("")
    add("CPU during the saturation windows (% of one core; the machine has "
        f"{os.cpu_count()} cores): server, load generator, sink, and everything else on the machine.")  # fmt: skip
    add("")
    add("| workers | batch | export | server % | load generator % | sink % | other processes % of machine |")
    add("|---:|---:|---|---:|---:|---:|---:|")
    for c in summary["cases"]:
        add(f"| {c['workers']} | {c['batch']} | {c['protocol']} | {fmt(c['server_cpu_pct'])} | "
            f"{fmt(c['client_cpu_pct'])} | {fmt(c['sink_cpu_pct'])} | {fmt(c['other_cpu_pct'])} |")  # fmt: skip
    add("")
    add(f"## 4. Cost per run by batch size (workers={plan.cost_workers}, export {plan.cost_protocol}, closed loop)")
    add("")
    add("Server CPU from the start of the window until every accepted run was delivered, per run.")
    add("")
    reference = [c["cpu_us_per_run"] for c in summary["cost"] if 10 <= c["batch"] <= 1000]
    ref = median(reference)
    add(f"| runs per batch | connections | server CPU µs/run | ÷ median of 10{DASH}1,000 | delivered runs/s | "
        "accepted runs/s | p99 ms |")  # fmt: skip
    add("|---:|---:|---:|---:|---:|---:|---:|")
    for c in summary["cost"]:
        add(f"| {c['batch']:,} | {c['connections']} | {fmt(c['cpu_us_per_run'])} | {fmt(c['cpu_us_per_run'] / ref, 2)} "
            f"| {fmt(c['delivered_runs_s'])} | {fmt(c['accepted_runs_s'])} | {fmt(c['p99_ms'], 1)} |")  # fmt: skip
    add("")
    o = summary["overload"]
    if o:
        add(f"## 5. Overload: 2{X} saturation for {plan.overload_seconds:g} s (workers={o['workers']}, 22-run "
            f"batches, gRPC, store_max_batches={fmt(o['store_max_batches'])})")  # fmt: skip
        add("")
        add(
            "The load generator keeps at most 64 requests in flight (64 connections) and drops what would queue "
            "behind 256 more; dropped requests were never sent."
        )
        add("")
        add(
            "| offered req/s | client-dropped/s | 200/s | 503/s | p50 / p99 ms of 200s | RSS at half load (mean) MB "
            "| peak RSS in overload MB | ÷ half load | RSS first / last sixth of overload MB | healthy after |"
        )
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        add(f"| {fmt(o['offered_req_s'], 1)} | {fmt(o['dropped_s'], 1)} | {fmt(o['ok_s'], 1)} | {fmt(o['s503_s'], 1)} "
            f"| {fmt(o['p50_ok_ms'], 1)} / {fmt(o['p99_ok_ms'], 1)} "
            f"| {fmt(o['rss_half_mean_mb'])} | {fmt(o['rss_over_peak_mb'])} | {fmt(o['rss_ratio'], 2)}{X} "
            f"| {fmt(o['rss_first_mb'])} / {fmt(o['rss_last_mb'])} | {o['healthy_after']} |")  # fmt: skip
        add("")
    add("## Targets")
    add("")
    add("| target | measured | verdict |")
    add("|---|---|---|")
    best_workers = max(plan.workers)
    for c in summary["cases"]:
        if c["workers"] != best_workers:
            continue
        add(f"| delivered ≥ {TARGETS['delivered_vs_floor']}{X} one-core floor ({c['batch']}-run, {c['protocol']}, "
            f"{c['workers']} workers) | {fmt(c['delivered_runs_s'])} runs/s = {fmt(c['vs_floor'], 2)}{X} | "
            f"{verdict(c['vs_floor'] >= TARGETS['delivered_vs_floor'])} |")  # fmt: skip
        together = summary["floor_all_cores"][str(c["batch"])]["runs_per_s"]
        add(f"| … against the floor on all cores at once ({c['batch']}-run, {c['protocol']}) "
            f"| {fmt(c['vs_floor_all_cores'], 2)}{X} of {fmt(together)} runs/s | info |")  # fmt: skip
        if c["vs_bridge"] == c["vs_bridge"]:
            add(
                f"| delivered ≥ {TARGETS['delivered_vs_textbook']:g}{X} the textbook bridge ({c['batch']}-run, "
                f"{c['protocol']}, {c['workers']} workers) | {fmt(c['vs_bridge'], 2)}{X} "
                f"| {verdict(c['vs_bridge'] >= TARGETS['delivered_vs_textbook'])} |"
            )
        add(
            f"| delivered ≥ {TARGETS['delivered_vs_textbook']:g}{X} the one-core in-process textbook rate "
            f"({c['batch']}-run, {c['protocol']}) | {fmt(c['vs_textbook'], 2)}{X} "
            f"| {verdict(c['vs_textbook'] >= TARGETS['delivered_vs_textbook'])} |"
        )
        add(
            f"| ingest p99 at half saturation ≤ {TARGETS['p99_half_vs_echo']:g}{X} echo p99 ({c['batch']}-run, "
            f"{c['protocol']}) | {fmt(c['p99_half_ms'], 1)} ms vs {fmt(c['echo_p99_half_ms'], 1)} ms = "
            f"{fmt(c['p99_half_vs_echo'], 1)}{X} | {verdict(c['p99_half_vs_echo'] <= TARGETS['p99_half_vs_echo'])} |"
        )
    for c in summary["cases"]:
        if c["workers"] == best_workers and c["batch"] == min(plan.batches) and c["protocol"] == plan.protocols[0]:
            add(
                f"| uses every core: server CPU at saturation, {best_workers} workers ({c['batch']}-run, "
                f"{c['protocol']}) | {fmt(c['server_cpu_pct'])} % of {100 * best_workers} % "
                f"(other processes: {fmt(c['other_cpu_pct'])} % of the machine) | info |"
            )
    if reference:
        spread = max(abs(v / ref - 1) for v in reference)
        add(f"| cost per run within ±{TARGETS['cost_spread']:.0%} from 10 to 1,000 runs per batch "
            f"| {', '.join(fmt(v) for v in reference)} µs/run: ±{spread:.0%} of their median "
            f"| {verdict(spread <= TARGETS['cost_spread'])} |")  # fmt: skip
    if o:
        ok = o["rss_ratio"] <= TARGETS["overload_rss"] and o["s503_s"] > 0
        add(f"| overload: peak RSS ≤ {TARGETS['overload_rss']}{X} half-load RSS, answers 503 "
            f"| {fmt(o['rss_ratio'], 2)}{X}, {fmt(o['s503_s'], 1)} 503/s | {verdict(ok)} |")  # fmt: skip
    add("")
    return "\n".join(lines)


def machine() -> str:
    memory = ""
    try:
        with open("/proc/meminfo") as handle:
            total_kb = int(handle.readline().split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB RAM, "
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model or platform.machine()}), {memory}Linux {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "?"


SERVICE_PACKAGES = ("adapter", "mapping", "config")


BUILD_FILES = ("setup.py", "pyproject.toml")
"""Files that decide how the service is built (the mapping compiled or not), beside its packages."""


def snapshot_code(workdir: Path, mapping: str = "mypyc") -> dict[str, str]:
    """Copy the service's packages to ``workdir/code`` and run everything from there.

    With ``mapping="mypyc"`` the copy's mapping is compiled the way the container image builds it
    (``DYNAMIQ_OTEL_USE_MYPYC=1`` through ``setup.py``). Returns the git commit, whether the packages
    differ from it, a hash of the copied sources, and how the mapping runs.
    """
    code = workdir / "code"
    digest = hashlib.sha256()
    for package in SERVICE_PACKAGES:
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        for path in sorted((code / package).rglob("*.py")):
            digest.update(path.relative_to(code).as_posix().encode() + b"\0" + path.read_bytes())
    if mapping == "mypyc":
        compile_mapping(code)
    processes.CODE_DIR = code
    sys.path.insert(0, str(code))

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", *SERVICE_PACKAGES, *BUILD_FILES)
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted": "yes" if changed else "no",
        "sources_sha256": digest.hexdigest()[:16],
        "mapping": "compiled with mypyc" if mapping == "mypyc" else "pure Python",
    }


def compile_mapping(code: Path) -> None:
    """Compile ``code/mapping`` in place with mypyc, as ``pip install .`` does with the build switch on."""
    for name in (*BUILD_FILES, "README.md"):  # the project's readme is part of its metadata
        shutil.copy2(ROOT / name, code / name)
    log("compiling the mapping with mypyc (about 20 s)")
    env = {**os.environ, "DYNAMIQ_OTEL_USE_MYPYC": "1"}
    done = subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=code, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(
            "bench: compiling the mapping with mypyc failed (it needs mypy, a C compiler and the Python "
            "headers; `pip install mypy`, or run the pure-Python build with --mapping python):\n"
            + (done.stderr or done.stdout)[-3000:]
        )
    probe = "from adapter.protobuf import mapping_build; print(mapping_build())"
    which = subprocess.run([sys.executable, "-c", probe], cwd=code, capture_output=True, text=True, check=False)
    if which.stdout.strip() != "mypyc":
        raise SystemExit(f"bench: the compiled mapping does not load: {which.stdout}{which.stderr[-2000:]}")


def save_partial(out: Path, repeats: list[dict[str, Any]]) -> None:
    """What was measured so far, in case a long run is interrupted."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".partial.json").write_text(json.dumps(repeats, default=str), encoding="utf-8")


def wait_for_quiet_machine(threshold: float, poll_s: float = 60.0, limit_s: float = 1800.0) -> None:
    """Wait until the 1-minute load average drops below ``threshold`` (or ``limit_s`` passed)."""
    started = time.monotonic()
    while True:
        load = float(loadavg().split()[0])
        if load < threshold:
            log(f"load average {load:.2f} < {threshold:g}: starting")
            return
        if time.monotonic() - started > limit_s:
            log(f"load average still {load:.2f} after {limit_s / 60:.0f} min: starting anyway (noted in the table)")
            return
        log(f"load average {load:.2f} >= {threshold:g}: waiting {poll_s:.0f} s")
        time.sleep(poll_s)


def parse_args(argv: list[str] | None) -> tuple[Plan, Path, argparse.Namespace]:
    parser = argparse.ArgumentParser(description="dynamiq-otel benchmark (see docs/performance.md)")
    parser.add_argument("--quick", action="store_true", help="a fast pass of every section (numbers not meaningful)")
    parser.add_argument("--out", type=Path, help="Markdown result file (JSON next to it)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--seconds", type=float, help="closed-loop saturation window")
    parser.add_argument("--half-seconds", type=float, help="fixed-rate window at half saturation (minimum)")
    parser.add_argument("--overload-seconds", type=float)
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts of the service (and echo)")
    parser.add_argument("--batches", type=int, nargs="+", help="runs per batch for sections 2-3")
    parser.add_argument("--protocols", nargs="+", choices=["grpc", "http"])
    parser.add_argument("--cost-sizes", type=int, nargs="+", help="runs per batch for section 4")
    parser.add_argument("--no-overload", action="store_true", help="skip section 5")
    parser.add_argument(
        "--export-processes",
        type=int,
        metavar="N",
        help="the service's export_processes setting (default: as many as its workers; 0: export in a thread)",
    )
    parser.add_argument(
        "--mapping",
        choices=["mypyc", "python"],
        default="mypyc",
        help="run the mapping compiled with mypyc, as the container image does (default), or from its sources",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        metavar="PCT",
        help="before each measurement wait (up to 10 min) until other processes use less than PCT %% of the machine",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        metavar="LOAD",
        help="first wait (up to 30 min, polling every 60 s) until the 1-minute load average is below LOAD",
    )
    args = parser.parse_args(argv)
    plan = quick_plan() if args.quick else Plan()
    for name in ("repeats", "seconds", "half_seconds", "overload_seconds"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.half_seconds is not None and plan.half_max_seconds < args.half_seconds:
        plan.half_max_seconds = args.half_seconds
    for name in ("workers", "batches", "protocols", "cost_sizes"):
        if getattr(args, name):
            setattr(plan, name, tuple(getattr(args, name)))
    if args.workers:
        plan.cost_workers = max(args.workers)
    plan.overload = not args.no_overload
    plan.export_processes = args.export_processes
    plan.wait_quiet_pct = args.wait_quiet
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench-results" / f"bench-{stamp}{'-quick' if plan.quick else ''}.md"
    return plan, out, args


def main(argv: list[str] | None = None) -> int:
    plan, out, args = parse_args(argv)
    if args.wait_load is not None:
        wait_for_quiet_machine(args.wait_load)
    meta: dict[str, Any] = {
        "command": " ".join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
    }
    log(f"benchmark on {meta['machine']}; load average {meta['loadavg_before']}")
    workdir = Path(tempfile.mkdtemp(prefix="dynamiq-otel-bench-"))
    meta["code"] = snapshot_code(workdir, args.mapping)
    log(
        f"service code: commit {meta['code']['commit']}, uncommitted changes: {meta['code']['uncommitted']}, "
        f"sources {meta['code']['sources_sha256']}, mapping {meta['code']['mapping']} (a snapshot runs, "
        "whatever changes in the repository meanwhile)"
    )
    repeats: list[dict[str, Any]] = []
    sink = processes.start_sink(workdir)
    try:
        for number in range(1, plan.repeats + 1):
            log(f"repeat {number}/{plan.repeats}: floor")
            rep: dict[str, Any] = {"loadavg_start": loadavg(), "groups": []}
            rep["floor"], rep["floor_all_cores"] = measure_floor(plan)
            for workers in plan.workers:
                for batch in plan.batches:
                    log(f"repeat {number}: echo and service, {workers} worker(s), {batch}-run batches")
                    rep["groups"].append(measure_group(plan, workdir, sink, workers, batch))
                    save_partial(out, [*repeats, rep])
            log(f"repeat {number}: cost per run by batch size")
            rep["cost"] = measure_cost(plan, workdir, sink)
            if plan.overload:
                log(f"repeat {number}: overload")
                reference = [
                    s.get("saturation", {}).get("sustained_runs_s") or 1000.0
                    for g in rep["groups"]
                    if g["workers"] == max(plan.workers) and g["batch"] == min(plan.batches)
                    for s in [g["services"].get("grpc") or next(iter(g["services"].values()))]
                ]
                try:
                    rep["overload"] = measure_overload(plan, workdir, sink, reference[0] if reference else 1000.0)
                except Exception as exc:  # keep the rest of the run
                    log(f"  overload FAILED: {exc!r}")
                    rep["overload"] = {"error": repr(exc)}
            rep["loadavg_end"] = loadavg()
            repeats.append(rep)
            save_partial(out, repeats)
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_after"] = loadavg()
    meta["quiet_waits_s"] = round(sum(QUIET_WAITS))
    meta["loadavg_repeats"] = [f"{rep['loadavg_start']} → {rep['loadavg_end']}" for rep in repeats]
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    meta["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = summarise(repeats, plan)
    table = render(summary, meta, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "repeats": repeats}, indent=1, default=str), encoding="utf-8"
    )
    print(table)
    log(f"results written to {out} (raw numbers: {out.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
