"""Tests for the recording OTLP receiver used by the test suite (tests/otlp_receiver.py)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import StatusCode as SpanStatusCode

from tests.otlp_receiver import GrpcReply, RecordingReceiver, Reply, attributes_to_dict

PROTO = {"Content-Type": "application/x-protobuf"}
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
RECEIVER_SCRIPT = Path(__file__).with_name("otlp_receiver.py")


@pytest.fixture
def rx() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as receiver:
        yield receiver


def export_two_spans(exporter: SpanExporter) -> None:
    """Export a parent and a child span through a real SDK pipeline, then shut it down."""
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-under-test", "deployment": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("receiver-test", "1.2.3")
    with tracer.start_as_current_span("parent", attributes={"s": "x", "b": True, "i": 7, "f": 1.5}) as parent:
        parent.set_attribute("arr", ["a", "b"])
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("n", [1, 2, 3])
            child.set_status(SpanStatusCode.ERROR, "boom")
    provider.shutdown()


def one_span_request(name: str = "raw") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = name, bytes(range(16)), bytes(range(8))
    span.attributes.add(key="k", value=AnyValue(int_value=42))
    return req


def post(rx: RecordingReceiver, name: str = "raw", session: requests.Session | None = None,
         timeout: float = 5) -> requests.Response:
    body = one_span_request(name).SerializeToString()
    return (session or requests).post(rx.http_endpoint, data=body, headers=PROTO, timeout=timeout)


def channel_to(target: str) -> grpc.Channel:
    """A channel with its own subchannel pool, so it never inherits another channel's reconnect backoff."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def stub(channel: grpc.Channel) -> TraceServiceStub:
    return TraceServiceStub(channel)  # type: ignore[no-untyped-call]


def assert_two_spans(rx: RecordingReceiver, transport: str) -> None:
    records = {r.span.name: r for r in rx.wait_for_spans(2, timeout=5)}
    parent, child = records["parent"], records["child"]
    assert {r.transport for r in records.values()} == {transport}
    assert parent.attributes == {"s": "x", "b": True, "i": 7, "f": 1.5, "arr": ["a", "b"]}
    assert child.attributes == {"n": [1, 2, 3]}
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id
    assert parent.parent_span_id == "" and len(parent.trace_id) == 32
    assert child.span.status.code == child.span.status.STATUS_CODE_ERROR
    assert parent.resource_attributes["service.name"] == "svc-under-test"
    assert (parent.scope.name, parent.scope.version) == ("receiver-test", "1.2.3")
    assert rx.span_count() == 2 and rx.rejected() == []
    request = rx.requests()[0]
    assert request.headers["x-api-key"] == "secret" and request.body_size > 0 and request.received_at > 0


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
def test_grpc_exporter_spans_arrive(rx: RecordingReceiver, compression: grpc.Compression | None) -> None:
    export_two_spans(GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, compression=compression,
                                      headers={"x-api-key": "secret"}, timeout=5))  # gRPC: lowercase only
    assert_two_spans(rx, "grpc")


@pytest.mark.parametrize("compression", [HttpCompression.NoCompression, HttpCompression.Gzip])
def test_http_exporter_spans_arrive(rx: RecordingReceiver, compression: HttpCompression) -> None:
    export_two_spans(HttpSpanExporter(endpoint=rx.http_endpoint, compression=compression,
                                      headers={"X-Api-Key": "secret"}, timeout=5))
    assert_two_spans(rx, "http")
    request = rx.requests()[0]
    assert request.content_type == "application/x-protobuf"
    if compression is HttpCompression.Gzip:
        assert request.headers["content-encoding"] == "gzip"
        assert request.body_size < request.request.ByteSize()


def test_attributes_to_dict_all_value_kinds() -> None:
    nested = KeyValueList(values=[KeyValue(key="inner", value=AnyValue(string_value="v"))])
    kvs = [
        KeyValue(key="s", value=AnyValue(string_value="text")),
        KeyValue(key="b", value=AnyValue(bool_value=False)),
        KeyValue(key="i", value=AnyValue(int_value=-3)),
        KeyValue(key="d", value=AnyValue(double_value=2.5)),
        KeyValue(key="a", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1),
                                                                         AnyValue(string_value="x")]))),
        KeyValue(key="kv", value=AnyValue(kvlist_value=nested)),
        KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\x01")),
        KeyValue(key="empty", value=AnyValue()),
    ]
    assert attributes_to_dict(kvs) == {"s": "text", "b": False, "i": -3, "d": 2.5, "a": [1, "x"],
                                       "kv": {"inner": "v"}, "bytes": b"\x00\x01", "empty": None}


def test_http_planned_replies(rx: RecordingReceiver) -> None:
    rx.plan_http([Reply(status=503, headers={"Retry-After": "2"}, message="overloaded"), Reply(status=429),
                  Reply.partial_success(1, "span 'raw' dropped")])
    first = post(rx)
    assert first.status_code == 503 and first.headers["Retry-After"] == "2"
    status = status_pb2.Status.FromString(first.content)
    assert (status.code, status.message) == (14, "overloaded")  # UNAVAILABLE
    assert post(rx).status_code == 429
    partial = post(rx)
    assert partial.status_code == 200
    response = ExportTraceServiceResponse.FromString(partial.content)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message == "span 'raw' dropped"
    ok = post(rx)  # plan exhausted -> success
    assert ok.status_code == 200
    assert not ExportTraceServiceResponse.FromString(ok.content).HasField("partial_success")
    assert [r.reply.status for r in rx.rejected() if isinstance(r.reply, Reply)] == [503, 429]
    assert len(rx.requests()) == 2 and rx.span_count() == 2


def test_grpc_planned_replies(rx: RecordingReceiver) -> None:
    rx.plan_grpc([GrpcReply(code=grpc.StatusCode.UNAVAILABLE, message="down"),
                  GrpcReply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay_s=1.5),
                  GrpcReply.partial_success(2, "two spans rejected")])
    with channel_to(rx.grpc_target) as channel:
        grpc_stub = stub(channel)
        with pytest.raises(grpc.RpcError) as unavailable:
            grpc_stub.Export(one_span_request(), timeout=5)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert unavailable.value.details() == "down"
        with pytest.raises(grpc.RpcError) as exhausted:
            grpc_stub.Export(one_span_request(), timeout=5)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(exhausted.value.trailing_metadata())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        retry_info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry_info)
        assert retry_info.retry_delay.ToTimedelta().total_seconds() == 1.5
        assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == retry_info
        partial = grpc_stub.Export(one_span_request(), timeout=5)
        assert partial.partial_success.rejected_spans == 2
        assert partial.partial_success.error_message == "two spans rejected"
        assert not grpc_stub.Export(one_span_request(), timeout=5).HasField("partial_success")
    codes = [r.reply.code for r in rx.rejected() if isinstance(r.reply, GrpcReply)]
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(rx.requests()) == 2 and rx.span_count() == 2


def test_real_exporters_retry_planned_errors(rx: RecordingReceiver) -> None:
    rx.plan_http([Reply(status=503, headers={"Retry-After": "0"})])
    rx.plan_grpc([GrpcReply(code=grpc.StatusCode.UNAVAILABLE, retry_delay_s=0.01)])
    export_two_spans(HttpSpanExporter(endpoint=rx.http_endpoint, timeout=5))
    export_two_spans(GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5))
    rx.wait_for_spans(4, timeout=5)
    assert sorted(r.transport for r in rx.rejected()) == ["grpc", "http"]
    assert sorted(r.transport for r in rx.requests()) == ["grpc", "grpc", "http", "http"]


def test_transports_have_independent_plans(rx: RecordingReceiver) -> None:
    rx.plan_http([Reply(status=500)])
    with channel_to(rx.grpc_target) as channel:
        stub(channel).Export(one_span_request(), timeout=5)
    assert post(rx).status_code == 500
    assert post(rx).status_code == 200


def test_http_json_and_deflate(rx: RecordingReceiver) -> None:
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                             "value": {"stringValue": "json-svc"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": TRACE_HEX, "spanId": "eee19b7ec3c1b174",
                                   "parentSpanId": "eee19b7ec3c1b173", "name": "json-span", "kind": 2,
                                   "startTimeUnixNano": "1544712660000000000",
                                   "attributes": [{"key": "count", "value": {"intValue": "5"}}]}]}]}]}
    resp = requests.post(rx.http_endpoint, data=gzip.compress(json.dumps(body).encode()), timeout=5,
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    [record] = rx.spans()
    assert (record.trace_id, record.span_id) == (TRACE_HEX, "eee19b7ec3c1b174")
    assert record.parent_span_id == "eee19b7ec3c1b173"
    assert record.span.start_time_unix_nano == 1544712660000000000
    assert record.attributes == {"count": 5} and record.resource_attributes == {"service.name": "json-svc"}
    deflated = zlib.compress(one_span_request("deflated").SerializeToString())
    resp = requests.post(rx.http_endpoint, data=deflated, headers={**PROTO, "Content-Encoding": "deflate"},
                         timeout=5)
    assert resp.status_code == 200 and rx.spans()[-1].span.name == "deflated"


def test_http_bad_requests_are_rejected_without_consuming_plan(rx: RecordingReceiver) -> None:
    rx.plan_http([Reply(status=503)])
    body, url = one_span_request().SerializeToString(), rx.http_endpoint
    assert requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=5).status_code == 415
    assert requests.post(url, data=b"\xff\xff garbage", headers=PROTO, timeout=5).status_code == 400
    wrong_path = url.replace("traces", "logs")
    assert requests.post(wrong_path, data=body, headers=PROTO, timeout=5).status_code == 404
    assert [r.reply.status for r in rx.rejected() if isinstance(r.reply, Reply)] == [415, 400, 404]
    assert all(r.error for r in rx.rejected())
    assert post(rx).status_code == 503  # the plan is still intact


def test_drop_connection_and_delay(rx: RecordingReceiver) -> None:
    rx.plan_http([Reply(drop_connection=True), Reply(delay_s=0.5)])
    with pytest.raises(requests.ConnectionError):
        post(rx)
    with pytest.raises(requests.Timeout):
        post(rx, timeout=0.1)
    assert len(rx.rejected()) == 1
    rx.wait_for_requests(1)  # the delayed one is recorded as accepted (on arrival)


def test_stop_start_on_same_ports(rx: RecordingReceiver) -> None:
    grpc_port, http_port = rx.grpc_port, rx.http_port
    session = requests.Session()  # keeps a pooled keep-alive connection across the restart
    assert post(rx, session=session).status_code == 200
    with channel_to(rx.grpc_target) as channel:
        grpc_stub = stub(channel)
        grpc_stub.Export(one_span_request(), timeout=5)
        rx.stop()
        assert not rx.running
        with pytest.raises(requests.ConnectionError):
            post(rx, session=session)
        with pytest.raises(requests.ConnectionError):
            post(rx)
        with pytest.raises(grpc.RpcError) as down:
            grpc_stub.Export(one_span_request(), timeout=1)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        rx.start()
        assert (rx.grpc_port, rx.http_port) == (grpc_port, http_port)
        assert post(rx, session=session).status_code == 200
    with channel_to(rx.grpc_target) as channel:  # a new channel: the old one waits ~1 s reconnect backoff
        stub(channel).Export(one_span_request(), timeout=5)
    assert rx.span_count() == 4
    rx.restart()
    assert post(rx).status_code == 200 and rx.span_count() == 5


def test_wait_for_spans_timeout_reports_progress(rx: RecordingReceiver) -> None:
    post(rx)
    with pytest.raises(TimeoutError, match=r"at least 3 span\(s\): received 1 span\(s\) in 1 accepted"):
        rx.wait_for_spans(3, timeout=0.1)
    rx.wait_until(lambda: rx.spans()[0].span.name == "raw", timeout=1, what="a span named raw")  # reentrant
    rx.clear()
    assert rx.span_count() == 0 and rx.requests() == [] and rx.spans() == []


def test_concurrent_senders(rx: RecordingReceiver) -> None:
    def send(i: int) -> None:
        with requests.Session() as session:
            for j in range(10):
                assert post(rx, f"s{i}-{j}", session=session).status_code == 200

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    with channel_to(rx.grpc_target) as channel:
        for _ in range(20):
            stub(channel).Export(one_span_request(), timeout=5)
    for t in threads:
        t.join()
    assert rx.span_count() == 80 and len(rx.spans("http")) == 60 and len(rx.spans("grpc")) == 20


def test_second_receiver_on_taken_ports_fails(rx: RecordingReceiver) -> None:
    with pytest.raises(OSError, match="cannot bind"):
        RecordingReceiver(grpc_port=rx.grpc_port).start()
    with pytest.raises(OSError, match="cannot bind"):
        RecordingReceiver(http_port=rx.http_port).start()
    assert post(rx).status_code == 200


def start_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the receiver script; return the process and its endpoints from the ``ready`` line."""
    proc = subprocess.Popen([sys.executable, str(RECEIVER_SCRIPT), *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[:2] == ["otlp-receiver", "ready"], ready
    return proc, dict(word.split("=", 1) for word in ready[2:])


def test_standalone_process_prints_and_writes_jsonl_across_restarts(tmp_path: Path) -> None:
    jsonl = tmp_path / "spans.jsonl"
    proc, endpoints = start_cli("--jsonl", str(jsonl))
    with proc:
        try:
            assert proc.stdout is not None
            resp = requests.post(endpoints["http"], data=one_span_request("cli-span").SerializeToString(),
                                 headers=PROTO, timeout=5)
            assert resp.status_code == 200
            line = proc.stdout.readline()
            assert "name='cli-span'" in line and 'attrs={"k": 42}' in line
        finally:
            proc.kill()  # a crash: no clean shutdown
    grpc_port, http_port = endpoints["grpc"].rsplit(":", 1)[1], endpoints["http"].split(":")[2].split("/")[0]
    proc, endpoints2 = start_cli("--grpc-port", grpc_port, "--http-port", http_port, "--jsonl", str(jsonl))
    with proc:
        try:
            assert endpoints2 == endpoints
            with channel_to(endpoints["grpc"].removeprefix("http://")) as channel:
                stub(channel).Export(one_span_request("after-restart"), timeout=5)
        finally:
            proc.terminate()
    assert proc.returncode == 0
    entries = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [(e["name"], e["transport"]) for e in entries] == [("cli-span", "http"), ("after-restart", "grpc")]
    assert entries[0]["attributes"] == {"k": 42} and entries[0]["parent_span_id"] == ""
    assert (entries[0]["trace_id"], entries[0]["span_id"]) == (bytes(range(16)).hex(), bytes(range(8)).hex())
