"""Property-based tests (hypothesis): the ingest endpoint never fails on any input, and every valid
batch validates and maps to well-formed, deterministic spans.

* Any body (JSON values of every shape, mutated batches, arbitrary bytes) is answered 200, 400, 413
  or 415, never 5xx; every non-200 body is the error envelope.
* Valid batches drawn from a strategy (UUID and non-UUID ids, RFC 3339 times with random offsets,
  separators and fractions, every status and type, nested metadata / executions / errors, unicode)
  always validate and map: ``runs_to_spans`` is total, ids are well-formed and non-zero, start <= end
  and equals the time sent, one span per run plus one per attempt of a retried run, and the same
  runs give the same bytes twice.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from adapter.app import create_app
from adapter.errors import MESSAGES
from adapter.validation import load_stored, parse_batch
from config import Settings
from mapping import (
    RUN_STATUSES,
    RUN_TYPES,
    MappingOptions,
    RequestEncoder,
    build_request,
    build_resource,
    runs_to_spans,
    span_id_bytes,
    trace_id_bytes,
)
from tests.batches import workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver, attributes_to_dict

HEADERS = {"Authorization": f"Bearer {ACCESS_KEY}", "Content-Type": "application/json"}
MAX_BODY = 8 * 1024
MAX_RUNS = 40
ALLOWED = {200, 400, 413, 415}
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_OTLP_SECOND = (2**64 - 1) // 1_000_000_000 - 1
"""OTLP times are unsigned 64-bit nanoseconds: the last whole second they can hold is in 2554."""

# --- strategies ----------------------------------------------------------------------------------

keys = st.text(max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
"""JSON values that orjson can write (64-bit integers, finite floats, no lone surrogates)."""

wild_scalars = st.one_of(
    scalars,
    st.integers(),  # beyond 64 bits
    st.floats(),  # NaN and infinities (written as NaN / Infinity tokens, which are not JSON)
)
wild_values = st.recursive(
    wild_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)

non_blank = st.text(min_size=1, max_size=40).filter(lambda text: text.strip() != "")
ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda value: value.hex.upper()),
    st.uuids().map(lambda value: str(value).upper()),
    non_blank,
)


@st.composite
def timestamps(draw: st.DrawFn, earliest_ns: int = 0) -> tuple[str, int]:
    """An RFC 3339 text (random offset, separator, fraction, zone style) and the instant it names."""
    low = max(earliest_ns // 1_000_000_000, 2 * 86_400)
    seconds = draw(st.integers(min_value=low, max_value=LAST_OTLP_SECOND))
    digits = draw(st.text(alphabet="0123456789", max_size=12))
    zone = draw(st.sampled_from(["Z", "z", "offset", "none"]))
    offset_minutes = draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)) if zone == "offset" else 0
    local = EPOCH + timedelta(seconds=seconds, minutes=offset_minutes)
    separator = draw(st.sampled_from(["T", "t", " "]))
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if digits:
        text += "." + digits
    if zone in ("Z", "z"):
        text += zone
    elif zone == "offset":
        sign = "+" if offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    nanos = seconds * 1_000_000_000 + int(digits[:9].ljust(9, "0"))
    return text, nanos


statuses = st.sampled_from(RUN_STATUSES)
errors = st.one_of(
    st.none(),
    st.fixed_dictionaries({"message": st.text(max_size=40), "traceback": st.none() | st.text(max_size=200)}),
    st.just({"message": "boom", "traceback": "Traceback (most recent call last):\nValueError: boom"}),
    st.text(max_size=40),
    json_values,
)
nodes = st.fixed_dictionaries(
    {
        "id": st.text(max_size=20),
        "name": st.text(max_size=20),
        "type": st.sampled_from(["dynamiq.nodes.llms.OpenAI", "dynamiq.nodes.agents.Agent", "x"]),
        "group": st.sampled_from(["llms", "agents", "tools", "retrievers", "embedders", "utils", ""]),
    },
    optional={
        "model": st.text(max_size=20),
        "prompt": st.fixed_dictionaries(
            {"messages": st.lists(st.fixed_dictionaries({"role": st.text(max_size=10), "content": json_values}))}
        ),
        "temperature": st.floats(allow_nan=False, allow_infinity=False),
        "connection": st.dictionaries(keys, json_values, max_size=3),
    },
)
metadata = st.one_of(
    st.none(),
    st.dictionaries(keys, json_values, max_size=4),
    st.fixed_dictionaries(
        {"node": nodes},
        optional={
            "usage": st.dictionaries(
                st.sampled_from(["prompt_tokens", "completion_tokens", "cache_read_input_tokens"]),
                st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False) | st.text(),
            ),
            "run_depends": st.lists(st.fixed_dictionaries({"node": st.fixed_dictionaries({"id": st.text()})})),
            "workflow": st.dictionaries(keys, json_values, max_size=3),
            "is_output_from_cache": st.booleans(),
            "extra": json_values,
        },
    ),
    json_values,  # not an object: kept as an extra field
)


@st.composite
def executions(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["none", "empty", "attempts", "junk"]))
    if shape == "none":
        return None
    if shape == "empty":
        return []
    if shape == "junk":
        return draw(json_values)
    attempts: list[Any] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.booleans()):
            attempts.append(
                {
                    "id": draw(st.none() | ids),
                    "start_time": draw(st.none() | timestamps().map(lambda pair: pair[0]) | st.text(max_size=5)),
                    "end_time": draw(st.none() | timestamps().map(lambda pair: pair[0])),
                    "status": draw(st.none() | statuses | st.integers(min_value=-(2**63), max_value=2**63 - 1)),
                    "error": draw(errors),
                }
            )
        else:
            attempts.append(draw(json_values))
    return attempts


@st.composite
def valid_runs(draw: st.DrawFn, trace_ids: list[str], run_ids: list[str]) -> tuple[dict[str, Any], int, int]:
    """A valid run dict, with the start and end instants (ns) it must map to."""
    start_text, start_ns = draw(timestamps())
    end_text, end_ns = draw(timestamps(earliest_ns=start_ns))
    if end_ns < start_ns:  # the end was drawn in the same second with a smaller fraction
        end_text, end_ns = start_text, start_ns
    run_id = draw(ids)
    run: dict[str, Any] = {
        "id": run_id,
        "name": draw(non_blank),
        "type": draw(st.sampled_from(RUN_TYPES)),
        "trace_id": draw(st.sampled_from(trace_ids)),
        "source_id": draw(ids),
        "start_time": start_text,
        "end_time": end_text,
        "status": draw(statuses),
    }
    optional: dict[str, Any] = {
        "session_id": st.none() | ids | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "parent_run_id": st.none() | st.just(run_id) | (st.sampled_from(run_ids) if run_ids else ids) | ids,
        "input": json_values,
        "output": json_values,
        "metadata": metadata,
        "error": errors,
        "executions": executions(),
        "tags": st.none() | st.lists(st.text(max_size=15), max_size=4) | st.text(max_size=15),
        "custom_field": json_values,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            run[name] = draw(strategy)
    run_ids.append(run_id)
    return run, start_ns, end_ns


@st.composite
def valid_batches(draw: st.DrawFn, max_runs: int = 8) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    trace_ids = draw(st.lists(ids, min_size=1, max_size=3))
    run_ids: list[str] = []
    drawn = draw(st.lists(valid_runs(trace_ids, run_ids), min_size=1, max_size=max_runs))
    return [run for run, _, _ in drawn], [(start, end) for _, start, end in drawn]


@st.composite
def any_bodies(draw: st.DrawFn) -> bytes:
    """Bodies of every kind: wild JSON, batches with wild runs, mutated valid batches, raw bytes."""
    kind = draw(st.sampled_from(["json", "runs", "mutated", "bytes", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        value = draw(wild_values)
    elif kind == "runs":
        value = {"runs": draw(st.lists(st.one_of(wild_values, st.dictionaries(keys, wild_values)), max_size=50))}
    else:
        runs, _ = draw(valid_batches())
        if kind == "mutated":
            run = draw(st.sampled_from(runs))
            field = draw(st.sampled_from([*run, "type", "status", "start_time", "end_time"]))
            if draw(st.booleans()):
                run.pop(field, None)
            else:
                run[field] = draw(wild_values)
        value = {"runs": runs}
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def _envelope_ok(status: int, payload: Any) -> bool:
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return False
    error = payload["error"]
    code, message = MESSAGES[status]
    if not isinstance(error, dict) or error.get("code") != code or error.get("message") != message:
        return False
    details = error.get("details")
    return set(error) <= {"code", "message", "details"} and (
        details is None or (isinstance(details, dict) and all(isinstance(v, str) for v in details.values()))
    )


@pytest.fixture
def service_settings(make_settings: Callable[..., Settings], receiver: RecordingReceiver) -> Settings:
    """Small limits, so 413 is reachable; accepted batches are exported to the recording receiver."""
    return make_settings(
        otlp_traces_endpoint=receiver.http_endpoint, max_body_bytes=MAX_BODY, max_runs_per_batch=MAX_RUNS
    )


def assert_all_exported(client: TestClient[Any], timeout: float = 30.0) -> None:
    """Every accepted batch left the store by export: none was dead-lettered (e.g. by a mapping error)."""
    store = client.app.state.runtime.store
    deadline = time.monotonic() + timeout
    while store.stats().batches and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = store.stats()
    assert (stats.batches, stats.dead) == (0, 0), store.dead_letters()


# --- the service never fails -------------------------------------------------------------------


def test_any_body_gets_a_contract_answer(service_settings: Settings) -> None:
    with TestClient(app=create_app(service_settings)) as client:

        @SETTINGS
        @given(content=any_bodies(), gzip_it=st.booleans())
        def check(content: bytes, gzip_it: bool) -> None:
            headers = dict(HEADERS)
            if gzip_it:
                content = gzip.compress(content)
                headers["Content-Encoding"] = "gzip"
            response = client.post("/v1/traces", content=content, headers=headers)
            assert response.status_code in ALLOWED, response.text
            assert response.headers["content-type"] == "application/json"
            if response.status_code == 200:
                assert response.json() == {"message": "ok"}
            else:
                assert _envelope_ok(response.status_code, response.json()), response.text

        check()
        assert_all_exported(client)


def test_any_headers_get_a_contract_answer(service_settings: Settings) -> None:
    """Random Content-Type, Content-Encoding and Content-Length values never cause a 5xx."""
    header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    with TestClient(app=create_app(service_settings)) as client:

        @SETTINGS
        @given(
            content_type=st.none() | st.sampled_from(["application/json", "application/JSON; x=y"]) | header_text,
            encoding=st.none() | st.sampled_from(["gzip", "deflate", "identity", "br", "gzip, gzip"]) | header_text,
            content=st.binary(max_size=512) | st.just(orjson.dumps({"runs": [workflow_run()]})),
        )
        def check(content_type: str | None, encoding: str | None, content: bytes) -> None:
            headers = {"Authorization": HEADERS["Authorization"]}
            if content_type is not None:
                headers["Content-Type"] = content_type
            if encoding is not None:
                headers["Content-Encoding"] = encoding
            response = client.post("/v1/traces", content=content, headers=headers)
            assert response.status_code in ALLOWED, response.text
            if response.status_code != 200:
                assert _envelope_ok(response.status_code, response.json()), response.text

        check()


def test_valid_batches_are_accepted(service_settings: Settings) -> None:
    with TestClient(app=create_app(service_settings)) as client:

        @settings(SETTINGS, max_examples=60)
        @given(batch=valid_batches(max_runs=4))
        def check(batch: tuple[list[dict[str, Any]], list[tuple[int, int]]]) -> None:
            payload = orjson.dumps({"runs": batch[0]})
            assume(len(payload) <= MAX_BODY)
            response = client.post("/v1/traces", content=payload, headers=HEADERS)
            assert (response.status_code, response.json()) == (200, {"message": "ok"})

        check()
        assert_all_exported(client)


# --- mapping of valid batches ------------------------------------------------------------------

OPTIONS = [
    MappingOptions(),
    MappingOptions(capture_content=False, status_ok_on_success=True, semconv_span_names=True),
    MappingOptions(dynamiq_attributes=False, openinference_attributes=False, max_attribute_length=64),
    MappingOptions(genai_attributes=False, redact_keys=()),
]


def _same_id(one: str, other: str) -> bool:
    """Two run ids name the same run: equal, or the same UUID written differently."""
    try:
        return uuid.UUID(one) == uuid.UUID(other)
    except ValueError:
        return one == other


def _attempts(run: Mapping[str, Any]) -> int:
    executions = run.get("executions")
    if not isinstance(executions, list) or len(executions) <= 1:
        return 0
    return sum(1 for execution in executions if isinstance(execution, dict))


@settings(SETTINGS, max_examples=150)
@given(batch=valid_batches(), options=st.sampled_from(OPTIONS))
def test_valid_batches_validate_and_map(
    batch: tuple[list[dict[str, Any]], list[tuple[int, int]]], options: MappingOptions
) -> None:
    runs_sent, times = batch
    payload = orjson.dumps({"runs": runs_sent})
    runs = parse_batch(payload, accept_unfinished=False, max_runs=len(runs_sent))
    assert [run.id for run in runs] == [run["id"] for run in runs_sent]

    spans = runs_to_spans(runs, options)

    assert len(spans) == sum(1 + _attempts(run) for run in runs_sent)
    position = 0
    for run, (start_ns, end_ns) in zip(runs_sent, times, strict=True):
        span = spans[position]
        assert span.span_id == span_id_bytes(run["id"])
        assert span.trace_id == trace_id_bytes(run["trace_id"])
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (start_ns, end_ns)
        parent = run.get("parent_run_id")
        own = parent is not None and _same_id(parent, run["id"])
        assert span.parent_span_id == (b"" if parent is None or own else span_id_bytes(parent))
        for attempt in spans[position + 1 : position + 1 + _attempts(run)]:
            assert attempt.parent_span_id == span.span_id
            assert attempt.trace_id == span.trace_id
        position += 1 + _attempts(run)
    for span in spans:
        assert len(span.trace_id) == 16 and any(span.trace_id)
        assert len(span.span_id) == 8 and any(span.span_id)
        assert span.parent_span_id == b"" or (len(span.parent_span_id) == 8 and any(span.parent_span_id))
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.name
        attributes = attributes_to_dict(span.attributes)
        assert len(attributes) == len(span.attributes), "attribute keys must be unique"

    again = runs_to_spans(parse_batch(payload, accept_unfinished=False, max_runs=len(runs_sent)), options)
    assert [span.SerializeToString() for span in again] == [span.SerializeToString() for span in spans]

    assert load_stored(payload) == runs, "export reads a stored body back as exactly the runs ingest validated"
    resource = build_resource("svc", "project", {"deployment.environment.name": "test"})
    assert (
        RequestEncoder(resource, "1.0").encode([span.SerializeToString() for span in spans])
        == build_request(resource, spans, "1.0").SerializeToString()
    ), "a request assembled from span bytes is the request message, byte for byte"


@settings(SETTINGS, max_examples=80)
@given(batch=valid_batches(), data=st.data())
def test_unfinished_runs_map_when_accepted(
    batch: tuple[list[dict[str, Any]], list[tuple[int, int]]], data: st.DataObject
) -> None:
    """With accept_unfinished_runs, any run may lack end_time/status: still one well-formed span each."""
    runs_sent, _ = batch
    for run in runs_sent:
        if data.draw(st.booleans()):
            run["end_time"] = None
            run["status"] = data.draw(st.none() | statuses)
    runs = parse_batch(orjson.dumps({"runs": runs_sent}), accept_unfinished=True, max_runs=100)
    assert load_stored(orjson.dumps({"runs": runs_sent})) == runs
    spans = runs_to_spans(runs, MappingOptions())
    assert len(spans) == sum(1 + _attempts(run) for run in runs_sent)
    for span in spans:
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano


SECRET_KEYS = ["api_key", "password", "access_token", "Authorization", "X-API-Key", "clientSecret", "cookie"]


@st.composite
def with_secret(draw: st.DrawFn, value: Any, secret: str) -> Any:
    """``value`` with ``{<secret-looking key>: secret}`` planted somewhere inside (or around it)."""
    key = draw(st.sampled_from(SECRET_KEYS))
    if isinstance(value, dict) and value and draw(st.booleans()):
        inner = draw(st.sampled_from(sorted(value)))
        return {**value, inner: draw(with_secret(value[inner], secret))}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(min_value=0, max_value=len(value) - 1))
        return [*value[:index], draw(with_secret(value[index], secret)), *value[index + 1 :]]
    if isinstance(value, dict):
        return {**value, key: secret}
    return {"wrapped": value, key: secret}


@settings(SETTINGS, max_examples=100)
@given(batch=valid_batches(max_runs=3), data=st.data())
def test_values_of_secret_keys_never_leave(
    batch: tuple[list[dict[str, Any]], list[tuple[int, int]]], data: st.DataObject
) -> None:
    """A value under a secret-looking key, at any depth of input, output or metadata, is never exported."""
    runs_sent, _ = batch
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    for run in runs_sent:
        field = data.draw(st.sampled_from(["input", "output", "metadata"]))
        value = run.get(field)
        if field == "metadata" and not isinstance(value, dict):
            value = {}  # metadata that is not an object is an unknown field: see test_hostile
        run[field] = data.draw(with_secret(value, secret))
    runs = parse_batch(orjson.dumps({"runs": runs_sent}), accept_unfinished=False, max_runs=10)
    for span in runs_to_spans(runs, MappingOptions()):
        assert secret.encode() not in span.SerializeToString()
