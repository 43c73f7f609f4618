"""Hostile input, named case by case: what must never crash, hang, exhaust memory or leak.

In-process cases use the real app with its lifespan (``TestClient``); cases where the HTTP server
itself matters (a ``Content-Length`` refused before the body is read, slow clients, log output) run
the service as a real process (``tests/processes.py``) and talk to it over raw sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import socket
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from litestar.testing import TestClient

import adapter.auth
from adapter.app import create_app
from adapter.auth import AccessKeys
from adapter.validation import parse_batch
from config import Settings, load_settings
from mapping import MappingOptions, runs_to_spans, span_id_bytes
from tests.batches import body, node_run, workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver
from tests.processes import free_port, running_service

AUTH = {"Authorization": f"Bearer {ACCESS_KEY}"}
HEADERS = {**AUTH, "Content-Type": "application/json"}
OK = {"message": "ok"}
NOT_JSON = {"error": {"code": "bad_request", "message": "Bad Request", "details": {"input": "must be valid JSON"}}}


@pytest.fixture
def online(make_settings: Callable[..., Settings], receiver: RecordingReceiver) -> Callable[..., Settings]:
    """Settings exporting over OTLP/HTTP to the recording receiver."""

    def build(**overrides: Any) -> Settings:
        return make_settings(otlp_traces_endpoint=receiver.http_endpoint, **overrides)

    return build


@pytest.fixture
def offline(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings whose exporter points at an unused loopback port: accepted batches stay in the store."""
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"

    def build(**overrides: Any) -> Settings:
        return make_settings(otlp_traces_endpoint=endpoint, retry_initial_backoff=5, retry_max_backoff=10, **overrides)

    return build


def post(client: TestClient[Any], content: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/traces", content=content, headers=HEADERS if headers is None else headers)


def settle(client: TestClient[Any], timeout: float = 30.0) -> tuple[int, int]:
    """Wait until the store holds no live batch; return ``(batches, dead)`` (dead: dead-lettered)."""
    store = client.app.state.runtime.store
    deadline = time.monotonic() + timeout
    while store.stats().batches and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = store.stats()
    return stats.batches, stats.dead


def map_body(payload: bytes, *, unfinished: bool = False) -> list[Any]:
    runs = parse_batch(payload, accept_unfinished=unfinished, max_runs=1_000_000)
    return runs_to_spans(runs, MappingOptions())


def nested_json(depth: int) -> bytes:
    """JSON text nested ``depth`` levels deep (objects and arrays in turn); orjson cannot write it."""
    return b'{"k":[' * (depth // 2) + b'"leaf"' + b"]}" * (depth // 2)


def with_input(raw_json: bytes, **changes: Any) -> bytes:
    """A one-run body whose ``input`` is ``raw_json``, spliced in as text."""
    return body(workflow_run(input="INPUT-PLACEHOLDER", **changes)).replace(b'"INPUT-PLACEHOLDER"', raw_json)


# --- malformed JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"runs": [{"id": "\xff\xfe"}]}', id="invalid-byte-in-string"),
        pytest.param(b'{"runs": [{"id": "\xc0\xaf"}]}', id="overlong-encoding"),
        pytest.param(b'{"runs": [{"id": "\xed\xa0\x80"}]}', id="encoded-surrogate"),
        pytest.param(b'{"runs": [{"id": "\\ud800"}]}', id="escaped-lone-surrogate"),
        pytest.param(b'{"runs": [{"id": "\xe2\x82"}]}', id="truncated-sequence"),
        pytest.param(b'\xef\xbb\xbf{"runs": []}', id="byte-order-mark"),
        pytest.param(b'{"runs": [{"id": "a\x00b"}]}', id="raw-nul-byte"),
    ],
)
def test_invalid_utf8_and_raw_control_bytes(offline: Callable[..., Settings], content: bytes) -> None:
    with TestClient(app=create_app(offline())) as client:
        response = post(client, content)
    assert (response.status_code, response.json()) == (400, NOT_JSON)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k-nested-arrays"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100k-nested-objects"),
        pytest.param(b'{"runs": [' + b"[" * 100_000, id="100k-unclosed-arrays"),
        pytest.param(orjson.dumps({"runs": [workflow_run()]})[:-2] + b"[" * 2000 + b"]" * 2000 + b"]}", id="deep-tail"),
    ],
)
def test_deeply_nested_json_is_refused(offline: Callable[..., Settings], content: bytes) -> None:
    with TestClient(app=create_app(offline())) as client:
        response = post(client, content)
        assert (response.status_code, response.json()) == (400, NOT_JSON)
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("depth", [300, 900])
def test_deep_but_parseable_nesting_is_mapped(
    online: Callable[..., Settings], receiver: RecordingReceiver, depth: int
) -> None:
    payload = with_input(nested_json(depth))
    assert len(map_body(payload)) == 1
    with TestClient(app=create_app(online())) as client:
        assert (post(client, payload).status_code, settle(client)) == (200, (0, 0))
    assert receiver.span_count() == 1


# --- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b"1e400", id="1e400-overflows-double"),
        pytest.param(b"-1e400", id="minus-1e400"),
        pytest.param(b"0x10", id="hex"),
        pytest.param(b"01", id="leading-zero"),
        pytest.param(b"+1", id="plus-sign"),
    ],
)
def test_non_json_numbers_are_refused(offline: Callable[..., Settings], literal: bytes) -> None:
    payload = body(workflow_run(input={"value": "PLACEHOLDER"})).replace(b'"PLACEHOLDER"', literal)
    with TestClient(app=create_app(offline())) as client:
        response = post(client, payload)
    assert (response.status_code, response.json()) == (400, NOT_JSON)


@pytest.mark.parametrize(
    "number",
    [
        pytest.param(2**70, id="2**70"),
        pytest.param(-(2**70), id="minus-2**70"),
        pytest.param(10**300, id="10**300"),
        pytest.param(2**64 - 1, id="uint64-max"),
        pytest.param(-(2**63), id="int64-min"),
    ],
)
def test_huge_integers_are_accepted_and_exported(
    online: Callable[..., Settings], receiver: RecordingReceiver, number: int
) -> None:
    literal = str(number).encode()
    payload = body(workflow_run(input={"n": "N"}, session_id="S", metadata={"usage": {"prompt_tokens": "T"}, "x": "X"}))
    for placeholder in (b'"N"', b'"S"', b'"T"', b'"X"'):
        payload = payload.replace(placeholder, literal)
    assert len(map_body(payload)) == 1
    with TestClient(app=create_app(online())) as client:
        assert (post(client, payload).status_code, settle(client)) == (200, (0, 0))
    [span] = receiver.wait_for_spans(1)
    assert span.attributes["dynamiq.run.id"] == workflow_run()["id"]


def test_tiny_and_huge_floats_are_accepted(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    payload = body(workflow_run(input={"a": 0.0})).replace(b'"a":0.0', b'"a":1e-400,"b":1.7976931348623157e308')
    with TestClient(app=create_app(online())) as client:
        assert (post(client, payload).status_code, settle(client)) == (200, (0, 0))
    assert receiver.span_count() == 1


# --- duplicate keys, NUL bytes, huge strings -----------------------------------------------------


def test_duplicate_keys_last_one_wins(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    run = orjson.dumps(workflow_run(name="first"))
    duplicated = run[:-1] + b',"name":"second","status":"failed","status":"succeeded"}'
    payload = b'{"runs": "not a list", "runs": [' + duplicated + b"]}"
    with TestClient(app=create_app(online())) as client:
        assert (post(client, payload).status_code, settle(client)) == (200, (0, 0))
    [span] = receiver.wait_for_spans(1)
    assert span.span.name == "second"
    assert span.attributes["dynamiq.run.status"] == "succeeded"


def test_nul_bytes_in_strings_are_accepted_and_mapped(
    online: Callable[..., Settings], receiver: RecordingReceiver
) -> None:
    nul = "a\x00b"
    run = workflow_run(
        id=f"run{nul}", name=f"Name{nul}", trace_id=f"trace{nul}", source_id=nul, session_id=nul, tags=[nul],
        input={f"key{nul}": nul}, output=nul, metadata={nul: nul}, error={"message": nul}, custom=nul,
    )  # fmt: skip
    payload = body(run)
    assert b"\\u0000" in payload
    with TestClient(app=create_app(online())) as client:
        assert (post(client, payload).status_code, settle(client)) == (200, (0, 0))
    [span] = receiver.wait_for_spans(1)
    assert span.span.name == f"Name{nul}"
    assert span.span.span_id == span_id_bytes(f"run{nul}")
    assert span.attributes["dynamiq.run.id"] == f"run{nul}"
    assert span.attributes["input.value"] == orjson.dumps({f"key{nul}": nul}).decode()


def test_huge_strings_are_capped_and_exported(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    huge = "x" * 3_000_000
    run = workflow_run(
        id="h" * 200_000, trace_id="t" * 200_000, input=huge, output={"text": huge}, metadata={"note": huge},
        tags=["y" * 200_000], error={"message": "short", "traceback": huge}, status="failed",
    )  # fmt: skip
    limit = 64 * 1024
    settings = online(max_attribute_length=4096, export_max_request_bytes=limit)
    with TestClient(app=create_app(settings)) as client:
        assert (post(client, body(run)).status_code, settle(client)) == (200, (0, 0))
    [span] = receiver.wait_for_spans(1)
    assert len(span.attributes["input.value"]) == 4096
    assert span.attributes["input.value"].endswith("…[truncated]")
    assert len(span.attributes["dynamiq.run.id"]) == 4096
    assert all(request.request.ByteSize() <= limit for request in receiver.requests())


def test_huge_run_name_fits_the_export_limit(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    limit = 64 * 1024
    settings = online(max_attribute_length=4096, export_max_request_bytes=limit)
    with TestClient(app=create_app(settings)) as client:
        assert (post(client, body(workflow_run(name="N" * 5_000_000))).status_code, settle(client)) == (200, (0, 0))
    receiver.wait_for_spans(1)
    assert all(request.request.ByteSize() <= limit for request in receiver.requests())


@pytest.mark.e2e
def test_oversized_span_does_not_stall_the_export_worker(tmp_path: Path, receiver: RecordingReceiver) -> None:
    """Run in a real process: the hang must not spin inside the test process."""
    config = {"access_keys": [ACCESS_KEY], "otlp_traces_endpoint": receiver.http_endpoint, "shutdown_grace": 0}
    runs = [
        workflow_run(id=str(uuid.uuid4()), status="failed", error={"message": "x" * 5_000_000}),
        workflow_run(id=str(uuid.uuid4()), name="N" * 5_000_000, input="y" * 1000),
        workflow_run(id=str(uuid.uuid4()), name="after"),
    ]
    with running_service(tmp_path, config) as base_url:
        for run in runs:
            answer = requests.post(f"{base_url}/v1/traces", data=body(run), headers=HEADERS, timeout=30)
            assert answer.status_code == 200
        try:
            receiver.wait_until(lambda: any(s.span.name == "after" for s in receiver.spans()), 6, "the normal run")
        except TimeoutError:
            pytest.fail("the export worker stalled on an oversized span")


@pytest.mark.parametrize("end_time", ["2554-07-21T23:34:34Z", "9999-12-31T23:59:59Z"])
def test_far_future_time_is_refused_or_mapped(offline: Callable[..., Settings], end_time: str) -> None:
    payload = body(workflow_run(end_time=end_time))
    with TestClient(app=create_app(offline())) as client:
        response = post(client, payload)
    if response.status_code == 200:
        assert len(map_body(payload)) == 1
    else:
        assert response.json()["error"]["details"] == {"runs[0].end_time": "must be a valid RFC 3339 timestamp"}


# --- many runs, self-parents, cycles -------------------------------------------------------------


def test_ten_thousand_runs_in_one_batch(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    root = workflow_run(id=str(uuid.uuid4()))
    runs = [root] + [node_run(root, id=f"node-{index}") for index in range(9_999)]
    with TestClient(app=create_app(online())) as client:
        assert (post(client, body(*runs)).status_code, settle(client, timeout=60)) == (200, (0, 0))
    spans = receiver.wait_for_spans(10_000, timeout=30)
    assert len(spans) == 10_000
    assert len({span.span_id for span in spans}) == 10_000
    assert len(receiver.requests()) > 1, "split under export_max_request_bytes"


def test_run_that_is_its_own_parent_is_a_root(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    run_id = "5c4b3a29-1807-4f6e-8d5c-4b3a29180706"
    run = workflow_run(id=run_id, parent_run_id=run_id.upper())
    assert map_body(body(run))[0].parent_span_id == b""
    with TestClient(app=create_app(online())) as client:
        assert (post(client, body(run)).status_code, settle(client)) == (200, (0, 0))
    [span] = receiver.wait_for_spans(1)
    assert span.parent_span_id == ""


def _cycle(length: int, finished: bool) -> list[dict[str, Any]]:
    """Runs r0 -> r1 -> ... -> r(length-1) -> r0 (each the parent of the previous)."""
    runs = []
    for index in range(length):
        run = workflow_run(id=f"r{index}", name=f"R{index}", parent_run_id=f"r{(index + 1) % length}")
        if not finished:
            run.update(end_time=None, status=None)
        runs.append(run)
    return runs


@pytest.mark.timeout(30)
@pytest.mark.parametrize("length", [2, 3, 50])
@pytest.mark.parametrize("finished", [True, False], ids=["finished", "unfinished"])
def test_parent_cycles_map_without_looping(length: int, finished: bool) -> None:
    runs = _cycle(length, finished)
    spans = map_body(body(*runs), unfinished=True)
    assert [span.name for span in spans] == [f"R{index}" for index in range(length)]
    for index, span in enumerate(spans):
        assert span.parent_span_id == span_id_bytes(f"r{(index + 1) % length}")
        assert span.start_time_unix_nano <= span.end_time_unix_nano


@pytest.mark.timeout(60)
def test_parent_cycle_through_the_service(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    runs = [*_cycle(2, finished=False), workflow_run(id="self", parent_run_id="self", end_time=None, status=None)]
    with TestClient(app=create_app(online(accept_unfinished_runs=True))) as client:
        assert (post(client, body(*runs)).status_code, settle(client)) == (200, (0, 0))
        assert client.get("/healthz").status_code == 200
    assert receiver.span_count() == 3


# --- size and compression ------------------------------------------------------------------------


def _gzip_of_zeros(size: int, members: int = 1) -> bytes:
    chunk = b"\x00" * (1 << 20)
    out = bytearray()
    for _ in range(members):
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        for _ in range(size // members // len(chunk)):
            out += compressor.compress(chunk)
        out += compressor.flush()
    return bytes(out)


@pytest.mark.parametrize(
    ("bomb", "encoding"),
    [
        pytest.param(lambda: _gzip_of_zeros(256 << 20), "gzip", id="gzip-256MiB"),
        pytest.param(lambda: _gzip_of_zeros(128 << 20, members=128), "gzip", id="gzip-128-members"),
        pytest.param(lambda: zlib.compress(b"\x00" * (64 << 20), 9), "deflate", id="deflate-64MiB"),
    ],
)
def test_compression_bomb_is_refused_in_bounded_memory(
    offline: Callable[..., Settings], bomb: Callable[[], bytes], encoding: str
) -> None:
    limit = 1 << 20
    compressed = bomb()
    assert len(compressed) < limit
    with TestClient(app=create_app(offline(max_body_bytes=limit))) as client:
        tracemalloc.start()
        try:
            response = post(client, compressed, headers={**HEADERS, "Content-Encoding": encoding})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"input": f"decompressed body must not exceed {limit} bytes"}
    assert peak < 16 * limit, f"peak {peak} bytes while refusing a bomb"


# --- secrets in unusual places --------------------------------------------------------------------

SECRET = "s3cr3t-value-7d1c"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"api_key": SECRET}, id="unknown-field"),
        pytest.param({"metadata": [{"password": SECRET}]}, id="metadata-not-an-object"),
        pytest.param({"tags": [{"token": SECRET}]}, id="tag-object"),
        pytest.param({"status": "failed", "error": {"message": {"password": SECRET}}}, id="error-message-object"),
        pytest.param({"status": "failed", "error": [{"password": SECRET}]}, id="error-list"),
        pytest.param({"status": "canceled", "error": {"message": {"api_key": SECRET}}}, id="canceled-error"),
        pytest.param(
            {"executions": [{"id": "e1", "status": "failed", "error": {"message": {"secret": SECRET}}}, {"id": "e2"}]},
            id="execution-error",
        ),
    ],
)
def test_secret_keys_are_redacted_everywhere(changes: dict[str, Any]) -> None:
    spans = map_body(body(workflow_run(**changes)))
    assert not [span.name for span in spans if SECRET.encode() in span.SerializeToString()]


# --- the HTTP server itself (real process) --------------------------------------------------------


def raw_request(port: int, head: bytes, body_part: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send ``head`` (and ``body_part``) on a fresh socket; return everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body_part)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    """Read one HTTP/1.1 response (headers and a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def status_and_json(response: bytes) -> tuple[int, Any]:
    head, _, rest = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(rest) if rest else None


def head_of(port: int, length: int | str, extra: str = "") -> bytes:
    return (
        f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {ACCESS_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


STALL_BOUND_S = 4
"""How long a stalled client may be kept waiting when the read deadline is 1 s (a bound, not a timing)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real service (1 MiB body cap, exporter offline) for the raw-socket tests; yields its port."""
    tmp_path = tmp_path_factory.mktemp("hostile-server")
    config: dict[str, Any] = {
        "access_keys": [ACCESS_KEY],
        "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
        "max_body_bytes": 1 << 20,
        "retry_initial_backoff": 5,
        "retry_max_backoff": 10,
    }
    if "request_read_timeout" in Settings.model_fields:  # the proposed fix for stalled clients (see below)
        config["request_read_timeout"] = 1
    with running_service(tmp_path, config) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


@pytest.mark.e2e
def test_announced_size_over_the_cap_is_refused_before_the_body_is_sent(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(head_of(server, 10**12))  # headers only: the terabyte never comes
        response = read_response(sock)
    status, payload = status_and_json(response)
    assert status == 413
    assert payload == {
        "error": {
            "code": "payload_too_large",
            "message": "Payload Too Large",
            "details": {"input": f"body must not exceed {1 << 20} bytes"},
        }
    }


@pytest.mark.e2e
@pytest.mark.parametrize("length", ["abc", "1e3"])
def test_malformed_content_length_is_refused_without_5xx(server: int, length: str) -> None:
    response = raw_request(server, head_of(server, length))
    assert response.startswith(b"HTTP/1.1 4"), response[:200]


@pytest.mark.e2e
def test_slow_clients_do_not_block_others(server: int) -> None:
    """Fifty clients trickling bodies a few bytes at a time; meanwhile the service answers everyone."""
    payload = body(workflow_run())
    base = f"http://127.0.0.1:{server}"
    slow = [socket.create_connection(("127.0.0.1", server), timeout=10) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(head_of(server, len(payload)))
        for step in range(4):
            for sock in slow:
                sock.sendall(payload[step * 4 : step * 4 + 4])
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
            fast = requests.post(f"{base}/v1/traces", data=payload, headers=HEADERS, timeout=5)
            assert (fast.status_code, fast.json()) == (200, OK)
            time.sleep(0.25)
        completed: list[tuple[int | None, Any]] = []
        for sock in slow:
            try:
                sock.sendall(payload[16:])
                completed.append(status_and_json(read_response(sock)))
            except OSError:
                completed.append((None, None))  # cut off by a read deadline: also fine
        assert all(status in (200, 408, None) for status, _ in completed)
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.e2e
def test_stalled_body_is_cut_off(server: int) -> None:
    payload = body(workflow_run())
    with socket.create_connection(("127.0.0.1", server), timeout=STALL_BOUND_S) as sock:
        sock.sendall(head_of(server, len(payload)) + payload[:10])
        try:
            response = read_response(sock)
        except TimeoutError:
            pytest.fail(f"the server still waits for the body after {STALL_BOUND_S} s")
    assert response == b"" or response.startswith(b"HTTP/1.1 408"), response[:200]


@pytest.mark.e2e
def test_stalled_headers_are_cut_off(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=STALL_BOUND_S) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            response = read_response(sock)
        except TimeoutError:
            pytest.fail(f"the server still waits for the headers after {STALL_BOUND_S} s")
    assert response == b"" or response.startswith(b"HTTP/1.1 408"), response[:200]


# --- access keys ----------------------------------------------------------------------------------


def _keys(tmp_path: Path) -> AccessKeys:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# comment\nfile-key-0001\n\n", encoding="utf-8")
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        access_keys=[ACCESS_KEY, "second-default-key"],
        tenants=[
            {"name": "acme", "access_keys": ["acme-key-0001"]},
            {"name": "globex", "access_key_sha256": [hashlib.sha256(b"globex-key-0001").hexdigest()]},
            {"name": "initech", "access_keys_file": str(key_file)},
        ],
    )
    return AccessKeys.from_settings(settings)


AUTHORIZATIONS = {
    "first-key": f"Bearer {ACCESS_KEY}",
    "tenant-clear": "Bearer acme-key-0001",
    "tenant-digest": "Bearer globex-key-0001",
    "last-key-from-file": "Bearer file-key-0001",
    "wrong-key": "Bearer wrong-key-0000000000",
    "wrong-key-same-length": "Bearer " + "x" * len(ACCESS_KEY),
    "key-prefix": f"Bearer {ACCESS_KEY[:-1]}",
    "empty-bearer": "Bearer ",
    "other-scheme": f"Basic {ACCESS_KEY}",
    "missing": None,
}
EXPECTED_TENANTS = {"first-key": "default", "tenant-clear": "acme", "tenant-digest": "globex",
                    "last-key-from-file": "initech"}  # fmt: skip


def test_right_and_wrong_keys_take_the_same_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key, right or wrong or absent, is hashed once and compared with every known digest."""
    keys = _keys(tmp_path)
    assert len(keys) == 5
    compared: list[tuple[int, int]] = []
    hashed: list[str] = []
    real_compare, real_digest = hmac.compare_digest, adapter.auth.digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    def counting_digest(key: str) -> bytes:
        hashed.append(key)
        return real_digest(key)

    monkeypatch.setattr(hmac, "compare_digest", counting_compare)  # adapter.auth looks it up at each call
    monkeypatch.setattr(adapter.auth, "digest", counting_digest)
    for name, authorization in AUTHORIZATIONS.items():
        compared.clear()
        hashed.clear()
        assert keys.tenant_of(authorization) == EXPECTED_TENANTS.get(name), name
        assert compared == [(32, 32)] * len(keys), name
        assert len(hashed) == 1, name


def test_right_and_wrong_keys_run_the_same_lines(tmp_path: Path) -> None:
    """Line by line: a right key runs exactly one line more than a wrong one (recording the match)."""
    keys = _keys(tmp_path)
    code = AccessKeys.tenant_of.__code__
    source, first = inspect.getsourcelines(AccessKeys.tenant_of)
    match_line = first + next(i for i, line in enumerate(source) if "found = tenant" in line)

    def lines_of(authorization: str | None) -> list[int]:
        seen: list[int] = []

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code is code:
                if event == "line":
                    seen.append(frame.f_lineno)
                return tracer
            return None

        sys.settrace(tracer)
        try:
            keys.tenant_of(authorization)
        finally:
            sys.settrace(None)
        return seen

    wrong = lines_of("Bearer wrong-key-0000000000")
    for name in ("first-key", "tenant-digest", "last-key-from-file"):
        right = lines_of(AUTHORIZATIONS[name])
        assert len(right) == len(wrong) + 1, name
        right.remove(match_line)
        assert right == wrong, name


def _service_log(tmp_path: Path) -> str:
    return (tmp_path / "service.log").read_text(encoding="utf-8", errors="replace")


@pytest.mark.e2e
def test_keys_never_appear_in_logs(tmp_path: Path) -> None:
    right = f"right-key-{uuid.uuid4().hex}"
    wrong = f"wrong-key-{uuid.uuid4().hex}"
    tenant_key = f"tenant-key-{uuid.uuid4().hex}"
    config = {
        "log_level": "debug",
        "access_keys": [right],
        "tenants": [{"name": "acme", "access_keys": [tenant_key]}],
        "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
        "rate_limit_runs_per_second": 0.001,
        "rate_limit_burst": 1,
    }
    with running_service(tmp_path, config) as base_url:
        for key in (right, wrong, tenant_key, right):  # the second batch of `right` is rate limited
            for content in (body(workflow_run()), b"{}", b"not json"):
                for content_type in ("application/json", "text/plain"):
                    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
                    answer = requests.post(f"{base_url}/v1/traces", data=content, headers=headers, timeout=10)
                    assert answer.status_code < 500
        requests.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {right}"}, timeout=10)
    log = _service_log(tmp_path)
    assert '"level": "debug"' in log, "the service did not log at debug level"
    for key in (right, wrong, tenant_key):
        for form in (key, hashlib.sha256(key.encode()).hexdigest(), key[-12:]):
            assert form not in log


@pytest.mark.e2e
def test_no_payload_content_in_logs_at_default_level(tmp_path: Path) -> None:
    marker = f"payload-{uuid.uuid4().hex}"
    config = {
        "access_keys": [ACCESS_KEY],
        "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
        "max_body_bytes": 64 * 1024,
        "max_runs_per_batch": 3,
    }
    batches = [
        body(workflow_run(name=marker, input={"q": marker}, metadata={"m": marker})),  # accepted
        body(workflow_run(name=marker, status=marker, type=marker)),  # 400 with details
        body(*[workflow_run(name=marker)] * 4),  # 413: too many runs
        body(workflow_run(input=marker * 5000)),  # 413: too large
        marker.encode(),  # not JSON
        body(workflow_run(end_time="9999-12-31T23:59:59Z", name=marker)),  # accepted, fails to map
    ]
    with running_service(tmp_path, config) as base_url:
        for content in batches:
            answer = requests.post(f"{base_url}/v1/traces", data=content, headers=HEADERS, timeout=10)
            assert answer.status_code < 500
        time.sleep(1.0)  # let the export worker try (and fail) once
    log = _service_log(tmp_path)
    assert "batch refused" in log
    assert marker not in log
