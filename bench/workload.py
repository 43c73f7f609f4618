"""Realistic request bodies built from the real SDK captures, every request with fresh ids.

The *run stream* is the runs of the SDK fixtures (whole traces, in a fixed order) repeated
forever. A batch of ``n`` runs is a window of ``n`` consecutive runs of that stream; successive
requests take successive windows, so every batch size sees the same mix of runs on average.

Fresh ids are cheap: a body is pre-split into byte segments around every occurrence of a run id,
trace id or execution id, and each request joins the segments with new 8-hex-digit prefixes (the
first 8 digits of each UUID), one prefix per copy of a fixture trace in the batch and a global
counter across requests. Ids therefore stay valid UUIDs, are unique across every request of a
benchmark, and keep their parent/child/trace relations inside a batch.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "sdk"

TRACE_ORDER = (
    "agent_tools.1.json",
    "linear.1.json",
    "function_calling_agent.1.json",
    "async_run.1.json",
    "skipped.1.json",
    "nested_agents.1.json",
    "sub_workflow.1.json",
    "llm_usage.1.json",
    "retry_fail.1.json",
    "canceled.1.json",
    "custom_ids.1.json",
    "reused_handler.1.json",
)
"""Fixture traces of the run stream, in order (the first four make the 22-run batch). Left out:
``large`` (a 1.6 MB outlier), ``unfinished`` (needs ``accept_unfinished_runs``) and
``reused_handler.2`` (re-sends the runs of ``reused_handler.1``)."""

_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class _Trace:
    name: str
    runs: list[bytes]  # each run's compact JSON
    spans: list[int]  # spans the service makes of each run (1, plus one per attempt when retried)
    ids: frozenset[bytes]  # run, trace and execution ids of this trace


def _load_traces() -> list[_Trace]:
    traces = []
    for name in TRACE_ORDER:
        document = orjson.loads((FIXTURES / name).read_bytes())
        runs: list[dict[str, Any]] = document["runs"]
        ids: set[str] = set()
        for run in runs:
            ids.update(value for value in (run.get("id"), run.get("trace_id")) if isinstance(value, str))
            for execution in run.get("executions") or ():
                if isinstance(execution, dict) and isinstance(execution.get("id"), str):
                    ids.add(execution["id"])
        uuids = {value.encode() for value in ids if _UUID.fullmatch(value.encode())}
        spans = [1 + (len(run.get("executions") or ()) if len(run.get("executions") or ()) > 1 else 0) for run in runs]
        traces.append(_Trace(name, [orjson.dumps(run) for run in runs], spans, frozenset(uuids)))
    return traces


@dataclass(frozen=True)
class Template:
    """One batch body, split around the 8-digit id prefixes to rewrite.

    ``parts`` alternates static bytes and slot numbers (``int``): slot ``k`` is the prefix of the
    ``k``-th fixture-trace copy in the batch.
    """

    parts: tuple[bytes | int, ...]
    slots: int
    runs: int
    spans: int
    size: int


def _template(pieces: Sequence[tuple[_Trace, Sequence[int]]]) -> Template:
    parts: list[bytes | int] = []
    pending = bytearray(b'{"runs":[')
    first = True
    for slot, (trace, indexes) in enumerate(pieces):
        for run in (trace.runs[index] for index in indexes):
            if not first:
                pending += b","
            first = False
            position = 0
            for match in _UUID.finditer(run):
                if match.group(0) not in trace.ids:
                    continue
                pending += run[position : match.start()]
                parts.append(bytes(pending))
                parts.append(slot)
                pending = bytearray()
                position = match.start() + 8  # keep the last 28 characters of the id
            pending += run[position:]
    pending += b"]}"
    parts.append(bytes(pending))
    runs_total = sum(len(indexes) for _, indexes in pieces)
    spans_total = sum(trace.spans[index] for trace, indexes in pieces for index in indexes)
    size = sum(len(p) if isinstance(p, bytes) else 8 for p in parts)
    return Template(tuple(parts), len(pieces), runs_total, spans_total, size)


class Workload:
    """Bodies of ``batch_runs`` runs each; ``next_body()`` gives a new one with fresh ids."""

    def __init__(self, batch_runs: int, max_templates: int = 64, seed: int | None = None) -> None:
        traces = _load_traces()
        stream = [(trace, index) for trace in traces for index in range(len(trace.runs))]
        self.batch_runs = batch_runs
        self.stream_runs = len(stream)
        self.templates: list[Template] = []
        offset = 0
        for _ in range(max_templates):
            pieces: list[tuple[_Trace, list[int]]] = []
            for step in range(batch_runs):
                trace, index = stream[(offset + step) % len(stream)]
                if not pieces or pieces[-1][0] is not trace or index == 0:
                    pieces.append((trace, []))  # a new copy of the trace gets its own id prefix
                pieces[-1][1].append(index)
            self.templates.append(_template(pieces))
            offset = (offset + batch_runs) % len(stream)
            if offset == 0:
                break
        start = int.from_bytes(os.urandom(4), "big") if seed is None else seed
        self._counter = itertools.count(start)
        self._cycle = itertools.cycle(self.templates)

    @property
    def mean_body_bytes(self) -> float:
        return sum(t.size for t in self.templates) / len(self.templates)

    @property
    def spans_per_run(self) -> float:
        return sum(t.spans for t in self.templates) / sum(t.runs for t in self.templates)

    def next_body(self) -> bytes:
        """A new body: the next template with fresh id prefixes."""
        return self.next()[0]

    def next(self) -> tuple[bytes, int]:
        """A new body and the number of spans the service makes of it."""
        template = next(self._cycle)
        counter = self._counter
        prefixes = [b"%08x" % (next(counter) & 0xFFFFFFFF) for _ in range(template.slots)]
        body = b"".join([part if isinstance(part, bytes) else prefixes[part] for part in template.parts])
        return body, template.spans

    def bodies(self, count: int) -> list[bytes]:
        return [self.next_body() for _ in range(count)]

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self.next_body()
