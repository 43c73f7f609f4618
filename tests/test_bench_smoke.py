"""The benchmark command still runs: ``bench/run.py --quick`` with tiny durations.

No timing is asserted (the benchmark is run by hand, see docs/performance.md); only that every
section ran, the table and the raw JSON were written, and no accepted run went missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.timeout(330)
def test_bench_quick_runs_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    command = [sys.executable, "bench/run.py", "--quick", "--seconds", "1", "--half-seconds", "1",
               "--overload-seconds", "2", "--cost-sizes", "10", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=320, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    table = out.read_text(encoding="utf-8")
    for heading in ("## 1. Floor", "## 2. Bare Litestar echo", "## 3. The service", "## 4. Cost per run",
                    "## 5. Overload", "## Targets"):  # fmt: skip
        assert heading in table, heading
    assert table in done.stdout  # the same table is printed
    assert "mapping compiled with mypyc" in table  # the default: the build the container image ships
    assert "export processes per service: as many as its workers" in table  # the default

    raw = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    cases = raw["summary"]["cases"]
    assert {case["protocol"] for case in cases} == {"grpc", "http"}
    assert all(case["lost_spans"] == 0 for case in cases)  # every accepted run reached the sink
    assert all(case["delivered_runs_s"] > 0 for case in cases)
    assert raw["summary"]["overload"]["healthy_after"]
    bridge = raw["summary"]["textbook"]  # the textbook bridge ran over both protocols and delivered
    assert {row["protocol"] for row in bridge} == {"grpc", "http"}
    assert all(row["delivered_runs_s"] > 0 for row in bridge)
    assert all(case["vs_bridge"] > 0 for case in cases)
    assert "The textbook bridge (`bench/textbook_app.py`)" in table
    together = raw["summary"]["floor_all_cores"]  # the floor ran in one process per core at once
    assert {row["copies"] for row in together.values()} == {os.cpu_count() or 1}
    assert all(row["runs_per_s"] > 0 for row in together.values())
    assert all(case["vs_floor_all_cores"] > 0 for case in cases)


def test_store_benchmark_quick_runs() -> None:
    """``bench/store.py --quick`` (the store alone) runs and prints both of its tables."""
    command = [sys.executable, "bench/store.py", "--quick"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "## 1. Batch lifecycle" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1,000 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["end time first (the service)", "hash only (before)"]


def test_export_benchmark_quick_runs() -> None:
    """``bench/export.py --quick`` (the export alone) drains its stores over both protocols and prints every step."""
    command = [sys.executable, "bench/export.py", "--quick", "--mapping", "python"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("| export |"))
    assert [cell.strip() for cell in header.strip("|").split("|")][3:] == [
        "thread", "process", "claim", "read-back", "dedupe", "mapping", "shrink", "send", "ack", "rest of the loop",
    ]  # fmt: skip
    rows = [line.split("|")[1:3] for line in done.stdout.splitlines() if line.startswith(("| grpc |", "| http |"))]
    assert sorted((protocol.strip(), batch.strip()) for protocol, batch in rows) == [
        ("grpc", "22"), ("grpc", "500"), ("http", "22"), ("http", "500"),
    ]  # fmt: skip
