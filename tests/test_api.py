"""``POST /v1/traces`` against the contract (../shared/spec/dynamiq-traces-api.md), row by row.

Every test runs the real app with its lifespan (real SQLite store in tmp_path, real export worker).
Tests that look into the store point the exporter at an unused loopback port, so an accepted batch
stays in the store (export fails and is retried) and nothing leaves the machine; tests that look at
the exported spans use the recording OTLP receiver.
"""

from __future__ import annotations

import gc
import gzip
import socket
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from litestar.testing import TestClient

from adapter.app import create_app
from adapter.store import Store
from adapter.validation import UNFINISHED_HINT
from config import Settings
from tests.batches import body, node_run, workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver
from tests.processes import running_service

AUTH = {"Authorization": f"Bearer {ACCESS_KEY}"}
JSON = {"Content-Type": "application/json"}
HEADERS = {**AUTH, **JSON}
OK = {"message": "ok"}
BLANK = "cannot be blank"
BAD_TIME = "must be a valid RFC 3339 timestamp"
BAD_TYPE = "must be one of: workflow, flow, node"
BAD_STATUS = "must be one of: succeeded, failed, skipped, canceled"
NOT_STRING = "must be a string"
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Unauthorized"}}


def error(code: str, message: str, details: dict[str, str] | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        inner["details"] = details
    return {"error": inner}


def bad_request(details: dict[str, str]) -> dict[str, Any]:
    return error("bad_request", "Bad Request", details)


def too_large(details: dict[str, str]) -> dict[str, Any]:
    return error("payload_too_large", "Payload Too Large", details)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings whose exporter points at an unused loopback port: accepted batches stay in the store."""
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"

    def build(**overrides: Any) -> Settings:
        return make_settings(otlp_traces_endpoint=endpoint, **overrides)

    return build


@pytest.fixture
def online(make_settings: Callable[..., Settings], receiver: RecordingReceiver) -> Callable[..., Settings]:
    """Settings exporting over OTLP/HTTP to the recording receiver."""

    def build(**overrides: Any) -> Settings:
        return make_settings(otlp_traces_endpoint=receiver.http_endpoint, **overrides)

    return build


def stored(settings: Settings) -> list[tuple[bytes, int]]:
    """``(body, runs)`` of every batch in the store file, oldest first."""
    if not settings.store_path.exists():
        return []
    db = sqlite3.connect(settings.store_path)
    try:
        query = "SELECT body, runs FROM batches JOIN bodies USING (id) ORDER BY id"
        return [(bytes(row[0]), row[1]) for row in db.execute(query)]
    finally:
        db.close()


def totals(settings: Settings) -> tuple[int, int]:
    """``(batches, bytes)`` waiting, as the store's running totals say."""
    store = Store(settings.store_path, max_bytes=settings.store_max_bytes, max_batches=settings.store_max_batches)
    try:
        stats = store.stats()
    finally:
        store.close()
    return stats.batches, stats.bytes


def post(client: TestClient[Any], content: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/traces", content=content, headers=HEADERS if headers is None else headers)


def sized_body(size: int) -> bytes:
    """A valid one-run body of exactly ``size`` bytes."""
    base = body(workflow_run(input={"pad": ""}))
    result = body(workflow_run(input={"pad": "x" * (size - len(base))}))
    assert len(result) == size
    return result


VALID = body(workflow_run())


# --- 200 ------------------------------------------------------------------------------------------


def test_accepted_batch_is_stored(offline: Callable[..., Settings]) -> None:
    settings = offline()
    wf = workflow_run()
    payload = body(wf, node_run(wf))
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
        assert (response.status_code, response.json()) == (200, OK)
        assert response.headers["content-type"] == "application/json"
    assert stored(settings) == [(payload, 2)]
    assert totals(settings) == (1, len(payload))


def test_accepted_batch_is_exported(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    wf = workflow_run()
    node = node_run(wf)
    with TestClient(app=create_app(online())) as client:
        response = post(client, body(wf, node))
        assert (response.status_code, response.json()) == (200, OK)
        spans = receiver.wait_for_spans(2, timeout=10)
    assert sorted((s.span.name, s.span.start_time_unix_nano, s.span.end_time_unix_nano) for s in spans) == [
        ("Classifier", 1_781_082_922_500_000_000, 1_781_082_930_000_000_000),
        ("Workflow", 1_781_082_921_000_001_000, 1_781_082_934_123_456_000),
    ]
    assert len({s.trace_id for s in spans}) == 1


@pytest.mark.parametrize(
    ("start_time", "end_time", "start_ns", "end_ns"),
    [
        pytest.param(
            "2026-06-10T09:15:21",
            "2026-06-10T09:15:34.5",
            1_781_082_921_000_000_000,
            1_781_082_934_500_000_000,
            id="no-offset-is-utc",
        ),
        pytest.param(
            "2026-06-10T11:15:21+02:00",
            "2026-06-10T04:15:34-05:00",
            1_781_082_921_000_000_000,
            1_781_082_934_000_000_000,
            id="offsets",
        ),
        pytest.param(
            "2026-06-10t09:15:21z",
            "2026-06-10 09:15:34.123456789Z",
            1_781_082_921_000_000_000,
            1_781_082_934_123_456_789,
            id="lowercase-space-nanoseconds",
        ),
        pytest.param(
            "2026-06-10T09:15:21.000001+00:00",
            "2026-06-10T09:15:21.000001+00:00",
            1_781_082_921_000_001_000,
            1_781_082_921_000_001_000,
            id="sdk-format-zero-duration",
        ),
    ],
)
def test_timestamps_accepted(
    online: Callable[..., Settings],
    receiver: RecordingReceiver,
    start_time: str,
    end_time: str,
    start_ns: int,
    end_ns: int,
) -> None:
    with TestClient(app=create_app(online())) as client:
        response = post(client, body(workflow_run(start_time=start_time, end_time=end_time)))
        assert (response.status_code, response.json()) == (200, OK)
        [span] = receiver.wait_for_spans(1, timeout=10)
    assert (span.span.start_time_unix_nano, span.span.end_time_unix_nano) == (start_ns, end_ns)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"trace_id": "my-own-trace"}, id="trace-id-any-string"),
        pytest.param({"trace_id": "12345"}, id="trace-id-digits"),
        pytest.param({"session_id": "session of alice"}, id="session-id-any-string"),
        pytest.param({"source_id": "my-source"}, id="source-id-any-string"),
        pytest.param({"id": "run-1"}, id="run-id-any-string"),
        pytest.param({"session_id": None, "parent_run_id": None, "tags": None}, id="optional-null"),
        pytest.param({"session_id": 42}, id="session-id-number"),
        pytest.param(
            {
                "metadata": "not an object",
                "tags": "single-tag",
                "executions": "not a list",
                "error": "boom",
                "input": None,
                "output": [1, 2, 18446744073709551615],
                "custom_field": {"kept": True},
            },
            id="odd-optional-fields",
        ),
    ],
)
def test_lenient_fields_accepted_and_exported(
    online: Callable[..., Settings], receiver: RecordingReceiver, changes: dict[str, Any]
) -> None:
    with TestClient(app=create_app(online())) as client:
        response = post(client, body(workflow_run(**changes)))
        assert (response.status_code, response.json()) == (200, OK)
        [span] = receiver.wait_for_spans(1, timeout=10)
    assert span.span.name == "Workflow"


def test_resent_runs_accepted_again(offline: Callable[..., Settings]) -> None:
    """A reused SDK handler re-sends every earlier run in each later batch: each batch is accepted."""
    settings = offline()
    first = workflow_run()
    second = workflow_run(id="22d4a6e8-9c2b-4f3a-8e1d-2f6071829302", trace_id="another-trace")
    with TestClient(app=create_app(settings)) as client:
        assert post(client, body(first)).status_code == 200
        assert post(client, body(first, second)).status_code == 200
    assert [runs for _, runs in stored(settings)] == [1, 2]


def test_one_and_a_half_megabyte_body_accepted(offline: Callable[..., Settings]) -> None:
    settings = offline()
    payload = sized_body(1_500_000)
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
        assert (response.status_code, response.json()) == (200, OK)
    assert totals(settings) == (1, 1_500_000)
    assert stored(settings) == [(payload, 1)]


# --- 400 ------------------------------------------------------------------------------------------


def _batch_with(field: str, value: Any, *, remove: bool = False, index: int = 1) -> bytes:
    """A batch of ``index`` good runs followed by one whose ``field`` is ``value`` (or removed)."""
    wf = workflow_run()
    run = node_run(wf)
    if remove:
        del run[field]
    else:
        run[field] = value
    return body(*[workflow_run(id=f"good-{i}") for i in range(index)], run)


_MISSING = object()
_BLANKS = [("missing", _MISSING), ("null", None), ("empty", ""), ("whitespace", "  \t ")]


def _blank_rows() -> Iterator[Any]:
    for field in ("id", "name", "type", "trace_id", "source_id", "start_time", "end_time", "status"):
        for label, value in _BLANKS:
            message = BLANK
            if field in ("end_time", "status") and label in ("missing", "null"):
                message = UNFINISHED_HINT
            payload = _batch_with(field, value, remove=value is _MISSING)
            yield pytest.param(payload, {f"runs[1].{field}": message}, id=f"{field}-{label}")


def _wrong_type_rows() -> Iterator[Any]:
    rows: list[tuple[str, Any, str, str]] = [
        ("id", 123, NOT_STRING, "id-number"),
        ("name", ["Workflow"], NOT_STRING, "name-list"),
        ("trace_id", {"id": 1}, NOT_STRING, "trace-id-object"),
        ("source_id", True, NOT_STRING, "source-id-bool"),
        ("session_id", {"id": 1}, NOT_STRING, "session-id-object"),
        ("session_id", True, NOT_STRING, "session-id-bool"),
        ("parent_run_id", ["p"], NOT_STRING, "parent-run-id-list"),
        ("type", "agent", BAD_TYPE, "type-unknown"),
        ("type", "Workflow", BAD_TYPE, "type-case"),
        ("type", 1, BAD_TYPE, "type-number"),
        ("type", ["workflow"], BAD_TYPE, "type-list"),
        ("status", "ok", BAD_STATUS, "status-unknown"),
        ("status", "SUCCEEDED", BAD_STATUS, "status-case"),
        ("status", "cancelled", BAD_STATUS, "status-british"),
        ("status", False, BAD_STATUS, "status-bool"),
    ]
    for field, value, message, row_id in rows:
        yield pytest.param(_batch_with(field, value), {f"runs[1].{field}": message}, id=row_id)


BAD_TIMESTAMPS = [
    ("yesterday", "word"),
    ("2026-13-01T00:00:00Z", "month-13"),
    ("2026-02-30T00:00:00Z", "feb-30"),
    ("2026-06-10T24:00:00Z", "hour-24"),
    ("2026-06-10T09:61:00Z", "minute-61"),
    ("2026-06-10T09:15:21+25:00", "offset-25h"),
    ("2026-06-10T09:15:21+0200", "offset-no-colon"),
    ("2026-06-10", "date-only"),
    ("09:15:21Z", "time-only"),
    ("10/06/2026 09:15:21", "us-format"),
    ("2026-06-10T09:15:21.Z", "empty-fraction"),
    ("1969-12-31T23:59:59Z", "before-epoch"),
    (" 2026-06-10T09:15:21Z", "leading-space"),
    (1700000000, "unix-seconds"),
    (1700000000.5, "unix-float"),
    (True, "bool"),
    ({"seconds": 1}, "object"),
    ("2026-06-10T09:15:21Z\n", "trailing-newline"),
    ("2026-06-10T09:15:21Zjunk", "trailing-junk"),
    ("\uff12\uff10\uff12\uff16-06-10T09:15:21Z", "fullwidth-digits"),
    ("2026-06-10T09:15:\u0662\u0661Z", "arabic-indic-digits"),
]


def _bad_time_rows() -> Iterator[Any]:
    for field in ("start_time", "end_time"):
        for value, label in BAD_TIMESTAMPS:
            yield pytest.param(_batch_with(field, value), {f"runs[1].{field}": BAD_TIME}, id=f"{field}-{label}")


def _several_bad_runs() -> tuple[bytes, dict[str, str]]:
    wf = workflow_run()
    runs: list[Any] = [
        node_run(wf, type="agent"),
        node_run(wf, end_time=None),
        node_run(wf, start_time="2026-06-10T09:15:21"),  # fine: no offset is UTC
        node_run(wf, start_time="yesterday"),
        node_run(wf, start_time="2026-06-10T09:15:40Z", end_time="2026-06-10T09:15:30Z"),
        "not a run",
        node_run(wf, id="", status="done", trace_id=None, name=7),
        wf,
    ]
    del runs[6]["source_id"]
    return body(*runs), {
        "runs[0].type": BAD_TYPE,
        "runs[1].end_time": UNFINISHED_HINT,
        "runs[3].start_time": BAD_TIME,
        "runs[4].end_time": "must not be before start_time",
        "runs[5]": "must be an object",
        "runs[6].id": BLANK,
        "runs[6].name": NOT_STRING,
        "runs[6].trace_id": BLANK,
        "runs[6].source_id": BLANK,
        "runs[6].status": BAD_STATUS,
    }


BAD_REQUESTS = [
    pytest.param(b"", {"input": BLANK}, id="empty-body"),
    pytest.param(b" \r\n\t ", {"input": BLANK}, id="whitespace-body"),
    pytest.param(b'{"runs": [', {"input": "must be valid JSON"}, id="truncated-json"),
    pytest.param(b"runs=1", {"input": "must be valid JSON"}, id="form-data"),
    pytest.param(b"\xff\xfe{}", {"input": "must be valid JSON"}, id="not-utf8"),
    pytest.param(b'{"runs": [NaN]}', {"input": "must be valid JSON"}, id="nan"),
    pytest.param(b"[" * 5000 + b"]" * 5000, {"input": "must be valid JSON"}, id="deeply-nested"),
    pytest.param(b"[]", {"input": "must be a JSON object"}, id="empty-array"),
    pytest.param(b'[{"runs": []}]', {"input": "must be a JSON object"}, id="array-of-object"),
    pytest.param(b'"runs"', {"input": "must be a JSON object"}, id="string"),
    pytest.param(b"null", {"input": "must be a JSON object"}, id="null"),
    pytest.param(b"{}", {"runs": BLANK}, id="empty-object"),
    pytest.param(b'{"run": []}', {"runs": BLANK}, id="runs-misspelt"),
    pytest.param(b'{"runs": []}', {"runs": BLANK}, id="runs-empty"),
    pytest.param(b'{"runs": null}', {"runs": BLANK}, id="runs-null"),
    pytest.param(b'{"runs": "x"}', {"runs": "must be a list"}, id="runs-string"),
    pytest.param(b'{"runs": {"id": 1}}', {"runs": "must be a list"}, id="runs-object"),
    pytest.param(b'{"runs": 3}', {"runs": "must be a list"}, id="runs-number"),
    pytest.param(b'{"runs": [1]}', {"runs[0]": "must be an object"}, id="run-number"),
    pytest.param(
        body(workflow_run(), "x", None, []),  # type: ignore[arg-type]
        {"runs[1]": "must be an object", "runs[2]": "must be an object", "runs[3]": "must be an object"},
        id="runs-not-objects",
    ),
    pytest.param(
        b'{"runs": [{}]}',
        {
            "runs[0].id": BLANK,
            "runs[0].name": BLANK,
            "runs[0].trace_id": BLANK,
            "runs[0].source_id": BLANK,
            "runs[0].type": BLANK,
            "runs[0].start_time": BLANK,
            "runs[0].end_time": UNFINISHED_HINT,
            "runs[0].status": UNFINISHED_HINT,
        },
        id="empty-run",
    ),
    *_blank_rows(),
    *_wrong_type_rows(),
    *_bad_time_rows(),
    pytest.param(
        body(workflow_run(start_time="2026-06-10T09:15:34Z", end_time="2026-06-10T09:15:33.999999Z")),
        {"runs[0].end_time": "must not be before start_time"},
        id="end-before-start",
    ),
    pytest.param(
        body(workflow_run(start_time="2026-06-10T11:15:34+02:00", end_time="2026-06-10T09:15:33Z")),
        {"runs[0].end_time": "must not be before start_time"},
        id="end-before-start-across-offsets",
    ),
    pytest.param(*_several_bad_runs(), id="several-bad-runs-every-problem"),
]


@pytest.mark.parametrize(("payload", "details"), BAD_REQUESTS)
def test_bad_request(offline: Callable[..., Settings], payload: bytes, details: dict[str, str]) -> None:
    settings = offline()
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
        assert (response.status_code, response.json()) == (400, bad_request(details))
    assert (stored(settings), totals(settings)) == ([], (0, 0)), "a 400 must leave nothing in the store"


def test_more_than_a_thousand_problems_are_capped(offline: Callable[..., Settings]) -> None:
    settings = offline()
    payload = orjson.dumps({"runs": list(range(1005))})
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
    expected = {f"runs[{i}]": "must be an object" for i in range(1000)}
    expected["more"] = "5 more problems not listed"
    assert (response.status_code, response.json()) == (400, bad_request(expected))


# --- unfinished runs ------------------------------------------------------------------------------


def _unfinished_batch() -> tuple[dict[str, Any], dict[str, Any], bytes]:
    wf = workflow_run()
    node = node_run(wf, end_time=None, status=None)
    return wf, node, body(wf, node)


def test_unfinished_runs_refused_by_default(offline: Callable[..., Settings]) -> None:
    settings = offline()
    *_, payload = _unfinished_batch()
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
    assert (response.status_code, response.json()) == (
        400,
        bad_request({"runs[1].end_time": UNFINISHED_HINT, "runs[1].status": UNFINISHED_HINT}),
    )
    assert "accept_unfinished_runs" in UNFINISHED_HINT
    assert "DYNAMIQ_OTEL_ACCEPT_UNFINISHED_RUNS" in UNFINISHED_HINT
    assert stored(settings) == []


def test_unfinished_runs_accepted_when_enabled(online: Callable[..., Settings], receiver: RecordingReceiver) -> None:
    *_, payload = _unfinished_batch()
    with TestClient(app=create_app(online(accept_unfinished_runs=True))) as client:
        response = post(client, payload)
        assert (response.status_code, response.json()) == (200, OK)
        spans = {s.span.name: s for s in receiver.wait_for_spans(2, timeout=10)}
    unfinished = spans["Classifier"]
    assert unfinished.attributes["dynamiq.run.unfinished"] is True
    assert unfinished.span.end_time_unix_nano == spans["Workflow"].span.end_time_unix_nano
    assert "dynamiq.run.unfinished" not in spans["Workflow"].attributes


@pytest.mark.parametrize(
    ("changes", "details"),
    [
        pytest.param({"end_time": ""}, {"runs[0].end_time": BLANK}, id="empty-end-time"),
        pytest.param({"status": "  "}, {"runs[0].status": BLANK}, id="blank-status"),
        pytest.param({"status": "running"}, {"runs[0].status": BAD_STATUS}, id="bad-status"),
        pytest.param({"start_time": None}, {"runs[0].start_time": BLANK}, id="start-time-still-required"),
    ],
)
def test_accept_unfinished_still_validates(
    offline: Callable[..., Settings], changes: dict[str, Any], details: dict[str, str]
) -> None:
    settings = offline(accept_unfinished_runs=True)
    with TestClient(app=create_app(settings)) as client:
        response = post(client, body(workflow_run(**changes)))
    assert (response.status_code, response.json()) == (400, bad_request(details))
    assert stored(settings) == []


# --- 401 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(JSON, id="no-header"),
        pytest.param({**JSON, "Authorization": f"Basic {ACCESS_KEY}"}, id="basic-scheme"),
        pytest.param({**JSON, "Authorization": ACCESS_KEY}, id="no-scheme"),
        pytest.param({**JSON, "Authorization": "Bearer wrong-key"}, id="wrong-key"),
        pytest.param({**JSON, "Authorization": f"Bearer {ACCESS_KEY[:-1]}"}, id="key-prefix"),
        pytest.param({**JSON, "Authorization": f"Bearer {ACCESS_KEY}x"}, id="key-longer"),
        pytest.param({**JSON, "Authorization": f"Bearer {ACCESS_KEY.upper()}"}, id="key-case"),
        pytest.param({**JSON, "Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({**JSON, "Authorization": "Bearer"}, id="bare-scheme"),
        pytest.param({**JSON, "Authorization": ""}, id="empty-header"),
        pytest.param({"Content-Type": "text/plain"}, id="before-content-type-check"),
        pytest.param({**JSON, "Content-Length": str(10**9)}, id="before-size-check"),
    ],
)
def test_unauthorized(offline: Callable[..., Settings], headers: dict[str, str]) -> None:
    settings = offline()
    with TestClient(app=create_app(settings)) as client:
        response = post(client, VALID, headers=headers)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert stored(settings) == []


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {ACCESS_KEY}", id="canonical"),
        pytest.param(f"bearer {ACCESS_KEY}", id="scheme-lowercase"),
        pytest.param(f"BEARER   {ACCESS_KEY}  ", id="scheme-uppercase-extra-spaces"),
        pytest.param("Bearer second-key", id="second-key"),
    ],
)
def test_authorized(offline: Callable[..., Settings], authorization: str) -> None:
    settings = offline(access_keys=[ACCESS_KEY, "second-key"])
    with TestClient(app=create_app(settings)) as client:
        response = post(client, VALID, headers={**JSON, "Authorization": authorization})
        assert (response.status_code, response.json()) == (200, OK)
    assert len(stored(settings)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(JSON, id="no-header"),
        pytest.param({**JSON, "Authorization": "Bearer anything"}, id="any-key"),
    ],
)
def test_auth_disabled_accepts(offline: Callable[..., Settings], headers: dict[str, str]) -> None:
    settings = offline(access_keys=[], auth_disabled=True)
    with TestClient(app=create_app(settings)) as client:
        response = post(client, VALID, headers=headers)
        assert (response.status_code, response.json()) == (200, OK)
    assert stored(settings) == [(VALID, 1)]


# --- 413 ------------------------------------------------------------------------------------------

LIMIT = 4096


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("content", "extra_headers", "details"),
    [
        pytest.param(
            sized_body(LIMIT + 1), {}, {"input": f"body must not exceed {LIMIT} bytes"}, id="content-length-over"
        ),
        pytest.param(
            VALID,
            {"Content-Length": str(10**9)},
            {"input": f"body must not exceed {LIMIT} bytes"},
            id="announced-length-refused-before-reading",
        ),
        pytest.param(
            lambda: _chunks(sized_body(LIMIT + 1)),
            {},
            {"input": f"body must not exceed {LIMIT} bytes"},
            id="streamed-without-length",
        ),
        pytest.param(
            gzip.compress(b" " * 3_000_000),
            {"Content-Encoding": "gzip"},
            {"input": f"decompressed body must not exceed {LIMIT} bytes"},
            id="gzip-bomb",
        ),
        pytest.param(
            zlib.compress(b" " * 3_000_000),
            {"Content-Encoding": "deflate"},
            {"input": f"decompressed body must not exceed {LIMIT} bytes"},
            id="deflate-bomb",
        ),
        pytest.param(
            lambda: _chunks(gzip.compress(b" " * 3_000_000), 512),
            {"Content-Encoding": "gzip"},
            {"input": f"decompressed body must not exceed {LIMIT} bytes"},
            id="gzip-bomb-streamed",
        ),
        pytest.param(
            gzip.compress(sized_body(LIMIT + 1)),
            {"Content-Encoding": "gzip"},
            {"input": f"decompressed body must not exceed {LIMIT} bytes"},
            id="gzip-one-byte-over",
        ),
    ],
)
def test_payload_too_large(
    offline: Callable[..., Settings], content: Any, extra_headers: dict[str, str], details: dict[str, str]
) -> None:
    settings = offline(max_body_bytes=LIMIT)
    with TestClient(app=create_app(settings)) as client:
        response = post(client, content() if callable(content) else content, headers={**HEADERS, **extra_headers})
        assert (response.status_code, response.json()) == (413, too_large(details))
    assert stored(settings) == []


@pytest.mark.parametrize(
    ("content", "extra_headers"),
    [
        pytest.param(sized_body(LIMIT), {}, id="exactly-the-limit"),
        pytest.param(lambda: _chunks(sized_body(LIMIT)), {}, id="exactly-the-limit-streamed"),
        pytest.param(gzip.compress(sized_body(LIMIT)), {"Content-Encoding": "gzip"}, id="gzip-exactly-the-limit"),
        pytest.param(
            lambda: _chunks(gzip.compress(sized_body(LIMIT)), 100),
            {"Content-Encoding": "gzip"},
            id="gzip-streamed-in-small-chunks",
        ),
        pytest.param(zlib.compress(sized_body(LIMIT - 1)), {"Content-Encoding": "deflate"}, id="deflate"),
        pytest.param(sized_body(LIMIT - 1), {"Content-Encoding": "identity"}, id="identity"),
        pytest.param(gzip.compress(sized_body(LIMIT - 1)), {"Content-Encoding": "GZIP"}, id="gzip-uppercase"),
    ],
)
def test_size_edge_accepted(offline: Callable[..., Settings], content: Any, extra_headers: dict[str, str]) -> None:
    settings = offline(max_body_bytes=LIMIT)
    raw = content() if callable(content) else content
    with TestClient(app=create_app(settings)) as client:
        response = post(client, raw, headers={**HEADERS, **extra_headers})
        assert (response.status_code, response.json()) == (200, OK)
    [(kept, runs)] = stored(settings)
    assert runs == 1
    assert orjson.loads(kept)["runs"][0]["id"] == workflow_run()["id"]
    assert len(kept) in (LIMIT, LIMIT - 1), "the store keeps the decompressed body"


@pytest.mark.parametrize(
    ("runs", "status", "expected"),
    [
        pytest.param(3, 200, OK, id="at-the-limit"),
        pytest.param(4, 413, too_large({"runs": "must hold at most 3 runs"}), id="one-over"),
    ],
)
def test_max_runs_per_batch(offline: Callable[..., Settings], runs: int, status: int, expected: dict[str, Any]) -> None:
    settings = offline(max_runs_per_batch=3)
    wf = workflow_run()
    payload = body(wf, *[node_run(wf) for _ in range(runs - 1)])
    with TestClient(app=create_app(settings)) as client:
        response = post(client, payload)
        assert (response.status_code, response.json()) == (status, expected)
    assert [n for _, n in stored(settings)] == ([runs] if status == 200 else [])


def test_too_many_runs_even_if_they_are_invalid(offline: Callable[..., Settings]) -> None:
    """The run count is checked before each run is validated: a huge bad batch costs little."""
    settings = offline(max_runs_per_batch=3)
    with TestClient(app=create_app(settings)) as client:
        response = post(client, orjson.dumps({"runs": [1, 2, 3, 4]}))
    assert (response.status_code, response.json()) == (413, too_large({"runs": "must hold at most 3 runs"}))


@pytest.mark.parametrize(
    ("content", "encoding", "details"),
    [
        pytest.param(b"not gzip at all", "gzip", {"input": "is not valid gzip data"}, id="gzip-garbage"),
        pytest.param(
            gzip.compress(VALID)[:-12], "gzip", {"input": "is not valid gzip data (truncated)"}, id="gzip-truncated"
        ),
        pytest.param(b"", "gzip", {"input": "is not valid gzip data (truncated)"}, id="gzip-empty"),
        pytest.param(b"not deflate", "deflate", {"input": "is not valid deflate data"}, id="deflate-garbage"),
    ],
)
def test_bad_compressed_body(
    offline: Callable[..., Settings], content: bytes, encoding: str, details: dict[str, str]
) -> None:
    settings = offline()
    with TestClient(app=create_app(settings)) as client:
        response = post(client, content, headers={**HEADERS, "Content-Encoding": encoding})
        assert (response.status_code, response.json()) == (400, bad_request(details))
    assert stored(settings) == []


# --- 415 ------------------------------------------------------------------------------------------

UNSUPPORTED_TYPE = error(
    "unsupported_media_type", "Unsupported Media Type", {"Content-Type": "must be application/json"}
)


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        pytest.param({**AUTH, "Content-Type": "text/plain"}, 415, UNSUPPORTED_TYPE, id="text-plain"),
        pytest.param(AUTH, 415, UNSUPPORTED_TYPE, id="no-content-type"),
        pytest.param({**AUTH, "Content-Type": ""}, 415, UNSUPPORTED_TYPE, id="empty-content-type"),
        pytest.param({**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 415, UNSUPPORTED_TYPE, id="form"),
        pytest.param({**AUTH, "Content-Type": "application/json-seq"}, 415, UNSUPPORTED_TYPE, id="json-seq"),
        pytest.param({**AUTH, "Content-Type": "application/json; charset=utf-8"}, 200, OK, id="json-charset"),
        pytest.param({**AUTH, "Content-Type": "Application/JSON"}, 200, OK, id="json-mixed-case"),
        pytest.param(
            {**HEADERS, "Content-Encoding": "br"},
            415,
            error(
                "unsupported_media_type",
                "Unsupported Media Type",
                {"Content-Encoding": "must be one of: identity, gzip, deflate"},
            ),
            id="unknown-content-encoding",
        ),
    ],
)
def test_media_type(
    offline: Callable[..., Settings], headers: dict[str, str], status: int, expected: dict[str, Any]
) -> None:
    settings = offline()
    with TestClient(app=create_app(settings)) as client:
        response = post(client, VALID, headers=headers)
        assert (response.status_code, response.json()) == (status, expected)
    assert len(stored(settings)) == (1 if status == 200 else 0)


# --- 404 / 405 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        pytest.param("GET", "/", 404, error("not_found", "Not Found"), id="root"),
        pytest.param("POST", "/v1/trace", 404, error("not_found", "Not Found"), id="typo-path"),
        pytest.param("POST", "/v1/traces/extra", 404, error("not_found", "Not Found"), id="sub-path"),
        pytest.param("GET", "/v1/traces", 405, error("method_not_allowed", "Method Not Allowed"), id="get-traces"),
        pytest.param("PUT", "/v1/traces", 405, error("method_not_allowed", "Method Not Allowed"), id="put-traces"),
        pytest.param("POST", "/healthz", 405, error("method_not_allowed", "Method Not Allowed"), id="post-healthz"),
        pytest.param("GET", "/healthz", 200, {"status": "ok"}, id="healthz"),
    ],
)
def test_routing_envelopes(
    offline: Callable[..., Settings], method: str, path: str, status: int, expected: dict[str, Any]
) -> None:
    with TestClient(app=create_app(offline())) as client:
        response = client.request(method, path, headers=HEADERS, content=VALID)
        assert (response.status_code, response.json()) == (status, expected)
        assert response.headers["content-type"] == "application/json"


def test_405_has_allow_header(offline: Callable[..., Settings]) -> None:
    with TestClient(app=create_app(offline())) as client:
        response = client.get("/v1/traces", headers=HEADERS)
    assert response.status_code == 405
    assert "POST" in [method.strip() for method in response.headers.get("allow", "").split(",")]


# --- 503 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "first", "second"),
    [
        pytest.param({"store_max_batches": 1}, VALID, body(workflow_run(name="Second")), id="batches"),
        pytest.param(
            {"store_max_bytes": 1024 * 1024, "max_body_bytes": 1024 * 1024},
            sized_body(700_000),
            sized_body(400_000),
            id="bytes",
        ),
    ],
)
def test_store_full_gives_503(
    offline: Callable[..., Settings], limits: dict[str, int], first: bytes, second: bytes
) -> None:
    settings = offline(**limits)
    with TestClient(app=create_app(settings)) as client:
        accepted = post(client, first)
        assert (accepted.status_code, accepted.json()) == (200, OK)
        refused = post(client, second)
        assert (refused.status_code, refused.json()) == (
            503,
            error("unavailable", "Service Unavailable", {"store": "full; retry later"}),
        )
        assert refused.headers["retry-after"] == "5"
    assert stored(settings) == [(first, 1)], "nothing of the refused batch may be written"
    assert totals(settings) == (1, len(first))


def test_stopping_service_gives_503(offline: Callable[..., Settings]) -> None:
    """Once shutdown has begun (SIGTERM), new batches get 503 + Retry-After and are not stored."""
    from adapter.app import begin_shutdown

    settings = offline()
    app = create_app(settings)
    with TestClient(app=app) as client:
        begin_shutdown(app)
        response = post(client, VALID)
        assert (response.status_code, response.json()) == (
            503,
            error("unavailable", "Service Unavailable", {"service": "shutting down; retry"}),
        )
        assert response.headers["retry-after"] == "5"
    assert stored(settings) == []


@pytest.mark.e2e
def test_batches_over_the_concurrency_limit_get_503_at_once(tmp_path: Path) -> None:
    """A real service whose store is write-locked by another process: two batches wait in the store, the
    third is refused at once with 503 + Retry-After instead of queueing, and the two get 200 once the
    lock is free. A slow upload does not hold a slot."""
    config = {"access_keys": [ACCESS_KEY], "max_concurrent_requests": 2,
              "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"}  # fmt: skip
    with running_service(tmp_path, config) as base_url, ThreadPoolExecutor(4) as pool:
        url = f"{base_url}/v1/traces"
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACCESS_KEY}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(VALID)}\r\n\r\n".encode()
                         + VALID[:10])  # fmt: skip
            lock = sqlite3.connect(tmp_path / "data" / "queue.sqlite3", isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            try:
                waiting = [pool.submit(requests.post, url, data=VALID, headers=HEADERS, timeout=30) for _ in range(2)]
                time.sleep(1.0)  # both are inside the service, waiting for the store
                assert not any(future.done() for future in waiting)
                refused = requests.post(url, data=VALID, headers=HEADERS, timeout=30)
            finally:
                lock.execute("COMMIT")
                lock.close()
            answered = [future.result(timeout=30) for future in waiting]
            slow.sendall(VALID[10:])
            slow_status = read_status(slow)
        after = requests.post(url, data=VALID, headers=HEADERS, timeout=30)
    assert (refused.status_code, refused.json()) == (
        503,
        error("unavailable", "Service Unavailable", {"service": "too many batches in progress; retry"}),
    )
    assert refused.headers["retry-after"] == "1"
    assert [(r.status_code, r.json()) for r in answered] == [(200, OK), (200, OK)]
    assert slow_status == 200
    assert (after.status_code, after.json()) == (200, OK), "the limit counts batches in progress, not batches seen"


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_objects_built_at_startup_are_left_out_of_garbage_collection(offline: Callable[..., Settings]) -> None:
    """gc.freeze() after startup: full collections do not rescan the framework, the settings and the like."""
    gc.unfreeze()
    with TestClient(app=create_app(offline())):
        assert gc.get_freeze_count() > 10_000
    gc.unfreeze()
