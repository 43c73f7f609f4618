"""An OTLP/HTTP receiver whose answer depends on the request's content (for dead-letter tests).

``tests/otlp_receiver.py`` plans replies per request in arrival order; a backend that refuses one
*batch* wherever it travels (alone or combined with others in one request) needs to look at the
spans. ``PolicyReceiver`` answers, in order of precedence: the next planned reply, 400 for any
request holding a span id in ``poison``, else 200. Every request is logged with its arrival time,
size, span ids and answer; spans of 200 answers are counted by span id.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Logged:
    at: float
    status: int
    size: int
    span_ids: frozenset[str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: PolicyReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        at = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
        request = ExportTraceServiceRequest.FromString(raw)
        spans = frozenset(
            span.span_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
        )
        status, headers = self.server.owner._decide(spans)
        self.server.owner._log(Logged(at, status, len(body), spans))
        if status == 200:
            payload = ExportTraceServiceResponse().SerializeToString()
        else:
            code = code_pb2.INVALID_ARGUMENT if status == 400 else code_pb2.UNAVAILABLE
            payload = status_pb2.Status(code=code, message=f"HTTP {status} by policy").SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class PolicyReceiver:
    """In-process OTLP/HTTP receiver on 127.0.0.1 with content-dependent answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.poison: set[str] = set()
        self._plan: deque[tuple[int, dict[str, str]]] = deque()
        self.logged: list[Logged] = []
        self.counts: Counter[str] = Counter()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def __enter__(self) -> PolicyReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def plan(self, replies: Iterable[tuple[int, dict[str, str]]]) -> None:
        with self._lock:
            self._plan.extend(replies)

    def set_poison(self, span_ids: Iterable[str]) -> None:
        with self._lock:
            self.poison = set(span_ids)

    def snapshot(self) -> tuple[list[Logged], Counter[str]]:
        with self._lock:
            return list(self.logged), Counter(self.counts)

    def _decide(self, spans: frozenset[str]) -> tuple[int, dict[str, str]]:
        with self._lock:
            if self._plan:
                return self._plan.popleft()
            if spans & self.poison:
                return 400, {}
            return 200, {}

    def _log(self, entry: Logged) -> None:
        with self._lock:
            self.logged.append(entry)
            if entry.status == 200:
                self.counts.update(entry.span_ids)
