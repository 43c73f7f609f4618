#!/usr/bin/env python3
"""Recording OTLP trace receiver for tests: OTLP/gRPC + OTLP/HTTP (protobuf or JSON) on 127.0.0.1.

    with RecordingReceiver() as rx:
        exporter = OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
        ...
        records = rx.wait_for_spans(3, timeout=5)

Faults are scripted per transport (``plan_http`` / ``plan_grpc``): each planned reply answers one
request, then the receiver answers success again. ``stop()`` + ``start()`` reuses the same ports.
Standalone: ``python tests/otlp_receiver.py --grpc-port N --http-port M [--jsonl FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["GrpcReply", "ReceivedRequest", "RecordingReceiver", "Reply", "SpanRecord",
           "any_value_to_python", "attributes_to_dict", "main"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
Transport = Literal["grpc", "http"]
TRACES_PATH = "/v1/traces"
_PROTOBUF, _JSON = "application/x-protobuf", "application/json"
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_HTTP_TO_RPC_CODE = {400: code_pb2.INVALID_ARGUMENT, 404: code_pb2.NOT_FOUND, 415: code_pb2.INVALID_ARGUMENT,
                     429: code_pb2.RESOURCE_EXHAUSTED, 502: code_pb2.UNAVAILABLE, 503: code_pb2.UNAVAILABLE,
                     504: code_pb2.DEADLINE_EXCEEDED}


def any_value_to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to Python (arrays -> list, kvlists -> dict, empty -> None)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    if kind is None or kind == "string_value_strindex":  # empty, or a profiling-only field
        return None
    return getattr(value, kind)


def attributes_to_dict(kv_list: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP ``KeyValue`` list -> ``{key: str | bool | int | float | list | dict | bytes | None}``."""
    return {kv.key: any_value_to_python(kv.value) for kv in kv_list}


@dataclass(frozen=True, kw_only=True)
class _PlannedReply:
    message: str = ""  # error message (HTTP: google.rpc.Status body; gRPC: status details)
    rejected_spans: int = 0  # partial success, sent with a success status/code
    error_message: str = ""  # partial success message
    delay_s: float = 0.0  # sleep before answering (the request is recorded on arrival)

    @classmethod
    def partial_success(cls, rejected_spans: int, error_message: str = "partially rejected") -> Self:
        return cls(rejected_spans=rejected_spans, error_message=error_message)


@dataclass(frozen=True)
class Reply(_PlannedReply):
    """Planned answer to one OTLP/HTTP request; 2xx counts as accepted.

    Bodies default to ``ExportTraceServiceResponse`` (2xx) or ``google.rpc.Status`` (errors), encoded
    like the request; ``body`` overrides. ``drop_connection`` closes the socket without answering.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    drop_connection: bool = False
    body: bytes | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300 and not self.drop_connection


@dataclass(frozen=True)
class GrpcReply(_PlannedReply):
    """Planned answer to one OTLP/gRPC ``Export`` call; a non-OK ``code`` aborts the call.

    ``retry_delay_s`` adds a ``google.rpc.RetryInfo`` to the status details (``grpc-status-details-bin``,
    per the OTLP spec) and as trailer ``google.rpc.retryinfo-bin`` (read by opentelemetry-python).
    """

    code: grpc.StatusCode = grpc.StatusCode.OK
    retry_delay_s: float | None = None

    @property
    def accepted(self) -> bool:
        return self.code is grpc.StatusCode.OK


@dataclass(frozen=True)
class SpanRecord:
    """A received span with its resource and scope; attributes are already plain dicts."""

    transport: Transport
    resource: Resource
    scope: InstrumentationScope
    span: Span
    resource_attributes: dict[str, Any]
    attributes: dict[str, Any]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    def to_json_dict(self) -> dict[str, Any]:
        s = self.span
        return {"transport": self.transport, "trace_id": self.trace_id, "span_id": self.span_id,
                "parent_span_id": self.parent_span_id, "name": s.name, "kind": int(s.kind),
                "start_time_unix_nano": s.start_time_unix_nano, "end_time_unix_nano": s.end_time_unix_nano,
                "status_code": int(s.status.code), "status_message": s.status.message,
                "attributes": self.attributes, "resource_attributes": self.resource_attributes,
                "scope": self.scope.name}


@dataclass(frozen=True)
class ReceivedRequest:
    """One received export request and the reply it got.

    ``headers`` have lowercased names (gRPC ``-bin`` values stay bytes). ``body_size`` is the HTTP
    body as sent (maybe compressed) or the gRPC message's serialized size. ``received_at`` is
    ``time.time()``. ``error`` is set when an HTTP request could not be decoded (``request`` empty).
    """

    transport: Transport
    request: ExportTraceServiceRequest
    headers: dict[str, Any]
    body_size: int
    received_at: float
    content_type: str
    reply: Reply | GrpcReply
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.reply.accepted

    @property
    def span_count(self) -> int:
        return sum(len(ss.spans) for rs in self.request.resource_spans for ss in rs.scope_spans)

    def spans(self) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        for rs in self.request.resource_spans:
            res_attrs = attributes_to_dict(rs.resource.attributes)
            for ss in rs.scope_spans:
                out += [SpanRecord(self.transport, rs.resource, ss.scope, s, res_attrs,
                                   attributes_to_dict(s.attributes)) for s in ss.spans]
        return out


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON encodes trace/span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(obj, list):
        return [_hex_ids_to_base64(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, val in obj.items():
        if key in _ID_KEYS and isinstance(val, str):
            with contextlib.suppress(ValueError):  # not hex: leave as is (maybe already base64)
                val = base64.b64encode(bytes.fromhex(val)).decode()
        out[key] = _hex_ids_to_base64(val)
    return out


def _decode_body(body: bytes, encoding: str, as_json: bool) -> ExportTraceServiceRequest:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        body = gzip.decompress(body)
    elif encoding == "deflate":  # zlib-wrapped (what clients send) or raw deflate
        body = zlib.decompress(body, 15 if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    elif encoding not in ("", "identity", "none"):
        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    request = ExportTraceServiceRequest()
    if as_json:
        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True)
    else:
        request.ParseFromString(body)
    return request


def _success(reply: _PlannedReply) -> ExportTraceServiceResponse:
    resp = ExportTraceServiceResponse()
    if reply.rejected_spans or reply.error_message:
        resp.partial_success.rejected_spans = reply.rejected_spans
        resp.partial_success.error_message = reply.error_message
    return resp


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # SO_REUSEADDR: restart on the same port despite TIME_WAIT

    def __init__(self, address: tuple[str, int], receiver: RecordingReceiver) -> None:
        self.receiver = receiver
        self.connections: set[socket.socket] = set()  # open (keep-alive) connections
        super().__init__(address, _HTTPHandler)

    def server_bind(self) -> None:  # skips HTTPServer's getfqdn() DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # hang-ups (and stop() cutting them) are normal
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Cut keep-alive connections so that a stopped receiver really is down."""
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real collectors
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # silence the access log
        pass

    def do_POST(self) -> None:
        rx, received_at = self.server.receiver, time.time()
        headers: dict[str, Any] = {k.lower(): v for k, v in self.headers.items()}
        body = self.rfile.read(int(headers.get("content-length") or 0))
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        as_json, request, error, reply = content_type == _JSON, ExportTraceServiceRequest(), None, Reply()
        if urlsplit(self.path).path != TRACES_PATH:
            error, reply = f"unknown path {self.path!r}", Reply(status=404)
        elif content_type not in (_PROTOBUF, _JSON):
            error, reply = f"unsupported Content-Type {content_type!r}", Reply(status=415)
        else:
            try:
                request = _decode_body(body, headers.get("content-encoding", ""), as_json)
            except Exception as exc:
                error, reply = f"cannot decode body: {exc}", Reply(status=400)
        reply = rx._next(rx._http_plan, reply) if error is None else Reply(status=reply.status, message=error)
        rx._record(ReceivedRequest("http", request, headers, len(body), received_at, content_type, reply,
                                   error))
        time.sleep(reply.delay_s)
        if reply.drop_connection:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = reply.body
        if payload is None:
            msg: Message = _success(reply) if reply.accepted else status_pb2.Status(
                code=_HTTP_TO_RPC_CODE.get(reply.status, code_pb2.UNKNOWN),
                message=reply.message or f"HTTP {reply.status}")
            payload = json_format.MessageToJson(msg).encode() if as_json else msg.SerializeToString()
        self.send_response(reply.status)
        self.send_header("Content-Type", _JSON if as_json else _PROTOBUF)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: RecordingReceiver) -> None:
        self._rx = receiver

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> Message:
        received_at, reply = time.time(), self._rx._next(self._rx._grpc_plan, GrpcReply())
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        self._rx._record(ReceivedRequest("grpc", request, headers, request.ByteSize(), received_at,
                                         "application/grpc", reply))
        time.sleep(reply.delay_s)
        if reply.code is not grpc.StatusCode.OK:
            status = status_pb2.Status(code=reply.code.value[0], message=reply.message)
            trailers: list[tuple[str, bytes]] = []
            if reply.retry_delay_s is not None:
                info = error_details_pb2.RetryInfo()
                info.retry_delay.FromNanoseconds(round(reply.retry_delay_s * 1e9))
                status.details.add().Pack(info)
                trailers.append(("google.rpc.retryinfo-bin", info.SerializeToString()))
            trailers.append(("grpc-status-details-bin", status.SerializeToString()))
            context.set_trailing_metadata(trailers)
            context.abort(reply.code, reply.message)
        return _success(reply)


class RecordingReceiver:
    """OTLP/gRPC + OTLP/HTTP trace receiver that records every request; thread-safe.

    Ports 0 mean "pick free ports" on the first ``start()``; later starts reuse them.
    ``on_accept`` gets the spans of each accepted request, in the server thread, before the reply.
    """

    def __init__(self, grpc_port: int = 0, http_port: int = 0, host: str = "127.0.0.1",
                 on_accept: Callable[[list[SpanRecord]], None] | None = None, grpc_workers: int = 8) -> None:
        self._host, self._grpc_port, self._http_port = host, grpc_port, http_port
        self._on_accept, self._grpc_workers = on_accept, grpc_workers
        self._cond = threading.Condition()  # guards records and plans
        self._accepted: list[ReceivedRequest] = []
        self._rejected: list[ReceivedRequest] = []
        self._span_total = 0
        self._http_plan: deque[Reply] = deque()
        self._grpc_plan: deque[GrpcReply] = deque()
        self._lifecycle = threading.Lock()
        self._grpc_server: grpc.Server | None = None
        self._grpc_pool: futures.ThreadPoolExecutor | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start both servers (no-op if running); raises ``OSError`` if a port is taken."""
        with self._lifecycle:
            if self._grpc_server is not None:
                return self
            options = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)]
            pool = futures.ThreadPoolExecutor(self._grpc_workers, "otlp-rx-grpc")
            server = grpc.server(pool, options=options)
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
                _TraceServicer(self), server)
            try:
                port = server.add_insecure_port(f"{self._host}:{self._grpc_port}")
                http_server = _HTTPServer((self._host, self._http_port), self)
            except (OSError, RuntimeError) as exc:  # grpc raises RuntimeError when it cannot bind
                server.stop(None)
                pool.shutdown(wait=False)
                raise OSError(f"cannot bind receiver (grpc port {self._grpc_port}, http port "
                              f"{self._http_port}) on {self._host}: {exc}") from exc
            server.start()
            self._grpc_port, self._http_port = port, http_server.server_address[1]
            self._http_thread = threading.Thread(target=http_server.serve_forever, args=(0.05,),
                                                 name="otlp-rx-http", daemon=True)
            self._http_thread.start()
            self._grpc_server, self._grpc_pool, self._http_server = server, pool, http_server
            return self

    def stop(self, grace: float | None = None) -> None:
        """Stop both servers and cut open connections (clients then see connection refused)."""
        with self._lifecycle:
            if self._http_server is not None:
                self._http_server.shutdown()
                self._http_server.server_close()
                self._http_server.close_connections()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            if self._grpc_server is not None:
                self._grpc_server.stop(grace).wait(timeout=5)
            if self._grpc_pool is not None:
                self._grpc_pool.shutdown(wait=False)
            self._grpc_server = self._grpc_pool = self._http_server = self._http_thread = None

    def restart(self, downtime_s: float = 0.0) -> None:
        """``stop()``, stay down ``downtime_s`` seconds, ``start()`` again on the same ports."""
        self.stop()
        time.sleep(downtime_s)
        self.start()

    @property
    def running(self) -> bool:
        return self._grpc_server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def grpc_port(self) -> int:
        if not self._grpc_port:
            raise RuntimeError("RecordingReceiver not started yet: gRPC port unknown")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        if not self._http_port:
            raise RuntimeError("RecordingReceiver not started yet: HTTP port unknown")
        return self._http_port

    @property
    def grpc_target(self) -> str:
        """``host:port``, for ``grpc.insecure_channel``."""
        return f"{self._host}:{self.grpc_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.grpc_target}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self._host}:{self.http_port}{TRACES_PATH}"

    def plan_http(self, replies: Iterable[Reply]) -> None:
        """Queue replies for the next OTLP/HTTP requests, one per request (then: success)."""
        with self._cond:
            self._http_plan.extend(replies)

    def plan_grpc(self, replies: Iterable[GrpcReply]) -> None:
        """Queue replies for the next OTLP/gRPC calls, one per call (then: success)."""
        with self._cond:
            self._grpc_plan.extend(replies)

    def requests(self) -> list[ReceivedRequest]:
        """Accepted requests (2xx / OK, partial successes included), in arrival order."""
        with self._cond:
            return list(self._accepted)

    def rejected(self) -> list[ReceivedRequest]:
        """Requests answered with an error (planned, undecodable, wrong path, dropped)."""
        with self._cond:
            return list(self._rejected)

    def spans(self, transport: Transport | None = None) -> list[SpanRecord]:
        """All spans of accepted requests (optionally of one transport), in arrival order."""
        return [s for r in self.requests() if transport in (None, r.transport) for s in r.spans()]

    def span_count(self) -> int:
        with self._cond:
            return self._span_total

    def clear(self, plans: bool = False) -> None:
        """Forget recorded requests (and the queued replies too if ``plans``)."""
        with self._cond:
            self._accepted.clear()
            self._rejected.clear()
            self._span_total = 0
            if plans:
                self._http_plan.clear()
                self._grpc_plan.clear()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``predicate()`` to hold, else raise ``TimeoutError`` with progress counts.

        The predicate runs under the (reentrant) lock after each recorded request; it may call
        ``spans()`` / ``requests()`` but should be quick.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}: received "
                                       f"{self._span_total} span(s) in {len(self._accepted)} accepted "
                                       f"request(s); {len(self._rejected)} rejected request(s)")
                self._cond.wait(remaining)

    def wait_for_spans(self, n: int, timeout: float = 5.0) -> list[SpanRecord]:
        """Block until at least ``n`` accepted spans arrived; returns all spans."""
        self.wait_until(lambda: self._span_total >= n, timeout, f"at least {n} span(s)")
        return self.spans()

    def wait_for_requests(self, n: int, timeout: float = 5.0, *,
                          rejected: bool = False) -> list[ReceivedRequest]:
        """Block until at least ``n`` accepted (or, with ``rejected``, rejected) requests arrived."""
        bucket, kind = (self._rejected, "rejected") if rejected else (self._accepted, "accepted")
        self.wait_until(lambda: len(bucket) >= n, timeout, f"at least {n} {kind} request(s)")
        return self.rejected() if rejected else self.requests()

    def _next(self, plan: deque[_T], default: _T) -> _T:
        with self._cond:
            return plan.popleft() if plan else default

    def _record(self, rec: ReceivedRequest) -> None:
        with self._cond:
            if rec.accepted:
                self._accepted.append(rec)
                self._span_total += rec.span_count
            else:
                self._rejected.append(rec)
            self._cond.notify_all()
        if rec.accepted and self._on_accept is not None:
            try:
                self._on_accept(rec.spans())
            except Exception:
                _log.exception("on_accept callback failed")


def main(argv: list[str] | None = None) -> int:
    """Run a receiver until SIGINT/SIGTERM; print one line per span; optionally append JSONL."""
    parser = argparse.ArgumentParser(description="Recording OTLP trace receiver (gRPC + HTTP).")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--jsonl", help="append one JSON line per accepted span to this file")
    args = parser.parse_args(argv)
    out_lock = threading.Lock()
    jsonl = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None  # noqa: SIM115

    def dumps(obj: Any) -> str:  # bytes attribute values become base64 strings
        return json.dumps(obj, default=lambda b: base64.b64encode(b).decode())

    def on_accept(records: list[SpanRecord]) -> None:
        with out_lock:
            for r in records:
                print(f"span [{r.transport}] trace={r.trace_id} span={r.span_id} "
                      f"parent={r.parent_span_id or '-'} name={r.span.name!r} attrs={dumps(r.attributes)}",
                      flush=True)
                if jsonl is not None:
                    jsonl.write(dumps(r.to_json_dict()) + "\n")
            if jsonl is not None:
                jsonl.flush()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rx = RecordingReceiver(args.grpc_port, args.http_port, args.host, on_accept=on_accept)
    try:
        rx.start()
        print(f"otlp-receiver ready grpc={rx.grpc_endpoint} http={rx.http_endpoint}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        rx.stop()
        if jsonl is not None:
            jsonl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
