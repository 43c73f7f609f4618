#!/usr/bin/env python3
"""A fast counting OTLP trace sink: OTLP/gRPC and OTLP/HTTP (protobuf) on 127.0.0.1.

It only counts: requests, bytes and spans (found by walking the protobuf wire format, no message
objects), and answers success with an empty ``ExportTraceServiceResponse``. ``GET /stats`` on the
HTTP port returns the counters as JSON. ``tests/otlp_receiver.py`` records and decodes every span,
which makes it the bottleneck at benchmark rates; this one costs ~1 µs per span.

    python bench/sink.py --grpc-port N --http-port M
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
import time
from concurrent import futures

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire}")


def _fields(buf: bytes, start: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) of every length-delimited field number ``wanted`` in ``buf[start:end]``."""
    found = []
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if number == wanted:
                found.append((pos, pos + length))
            pos += length
        else:
            pos = _skip(buf, pos, wire)
    return found


def count_spans(buf: bytes) -> int:
    """Spans in a serialised ExportTraceServiceRequest (resource_spans=1 > scope_spans=2 > spans=2)."""
    total = 0
    for rs_start, rs_end in _fields(buf, 0, len(buf), 1):
        for ss_start, ss_end in _fields(buf, rs_start, rs_end, 2):
            total += len(_fields(buf, ss_start, ss_end, 2))
    return total


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.values = {"requests": 0, "spans": 0, "bytes": 0, "grpc_spans": 0, "http_spans": 0, "last": 0.0}

    def add(self, transport: str, body: bytes) -> None:
        spans = count_spans(body)
        with self.lock:
            values = self.values
            values["requests"] += 1
            values["spans"] += spans
            values["bytes"] += len(body)
            values[f"{transport}_spans"] += spans
            values["last"] = time.time()

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.values)


def start_grpc(counters: Counters, port: int) -> grpc.Server:
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        counters.add("grpc", request)
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )  # no (de)serialisers: the request arrives as bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


class _HttpSink(asyncio.Protocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._one():
            pass

    def _one(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return False
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        method, path = head[0].split(" ")[:2]
        assert self.transport is not None
        if method == "GET" and path.startswith("/stats"):
            payload = json.dumps(self.counters.snapshot()).encode()
            self._answer(b"200 OK", b"application/json", payload)
        elif method == "POST" and path.startswith("/reset"):
            self.counters.reset()
            self._answer(b"200 OK", b"application/json", b"{}")
        elif method == "POST":
            self.counters.add("http", body)
            self._answer(b"200 OK", b"application/x-protobuf", b"")
        else:
            self._answer(b"404 Not Found", b"text/plain", b"")
        return True

    def _answer(self, status: bytes, content_type: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip


async def _serve_http(counters: Counters, port: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HttpSink(counters), "127.0.0.1", port, backlog=1024)
    print(json.dumps({"ready": True}), flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args(argv)
    counters = Counters()
    grpc_server = start_grpc(counters, args.grpc_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _serve_http(counters, args.http_port, stop)

    try:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(run())
    finally:
        grpc_server.stop(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
