"""Delivery against a real OTLP receiver: settle each batch by the backend's answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapter.app import Runtime, build_runtime
from adapter.delivery import run_key
from adapter.otlp import Outcome, parse_retry_after
from adapter.validation import InvalidBatch, load_stored, parse_batch
from config import Settings
from mapping import span_id_bytes
from mapping.values import TRUNCATION_MARK
from tests.batches import body, node_run, workflow_run
from tests.otlp_receiver import GrpcReply, RecordingReceiver, Reply


@contextmanager
def runtime_for(settings: Settings) -> Iterator[Runtime]:
    """The store and the delivery worker, opened but not started: tests drive ``run_once``."""
    runtime = build_runtime(settings)
    runtime.store.open()
    try:
        yield runtime
    finally:
        runtime.delivery.close()
        runtime.store.close()


def _put(runtime: Runtime, n_nodes: int = 1) -> None:
    root = workflow_run(id=str(uuid.uuid4()))
    runs = [root] + [node_run(root) for _ in range(n_nodes)]
    runtime.store.put(body(*runs), len(runs))


def _drain(runtime: Runtime, until: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"not settled: {runtime.store.stats()} {runtime.delivery.counters}"
        if not runtime.delivery.run_once():
            time.sleep(0.02)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_delivered_batches_leave_the_store(
    protocol: str, receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    endpoint = receiver.http_endpoint if protocol == "http/protobuf" else receiver.grpc_endpoint
    with runtime_for(make_settings(otlp_protocol=protocol, otlp_traces_endpoint=endpoint)) as runtime:
        for _ in range(3):
            _put(runtime, n_nodes=2)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        assert receiver.span_count() == 9
        assert runtime.delivery.counters.batches_delivered == 3


def test_retryable_http_answers_are_retried_honouring_retry_after(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    receiver.plan_http([Reply(status=503, headers={"Retry-After": "1"}), Reply(status=429), Reply(status=502)])
    settings = make_settings(otlp_traces_endpoint=receiver.http_endpoint)
    with runtime_for(settings) as runtime:
        _put(runtime)
        started = time.monotonic()
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        assert time.monotonic() - started >= 1.0, "Retry-After: 1 was not honoured"
        assert receiver.span_count() == 2
        assert [r.reply.status for r in receiver.rejected()] == [503, 429, 502]
        assert runtime.delivery.counters.batches_retried == 3


@pytest.mark.parametrize(
    ("reply", "retried"),
    [
        pytest.param(GrpcReply(code=grpc.StatusCode.UNAVAILABLE), True, id="unavailable"),
        pytest.param(GrpcReply(code=grpc.StatusCode.DEADLINE_EXCEEDED), True, id="deadline"),
        pytest.param(
            GrpcReply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay_s=0.3), True, id="exhausted-retryinfo"
        ),
        pytest.param(GrpcReply(code=grpc.StatusCode.RESOURCE_EXHAUSTED), False, id="exhausted-bare"),
        pytest.param(GrpcReply(code=grpc.StatusCode.INVALID_ARGUMENT), False, id="invalid-argument"),
        pytest.param(GrpcReply(code=grpc.StatusCode.PERMISSION_DENIED), False, id="permission-denied"),
    ],
)
def test_grpc_codes_follow_the_otlp_retry_rules(
    reply: GrpcReply, retried: bool, receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    receiver.plan_grpc([reply])
    settings = make_settings(otlp_protocol="grpc", otlp_traces_endpoint=receiver.grpc_endpoint)
    with runtime_for(settings) as runtime:
        _put(runtime)
        runtime.delivery.run_once()
        outcome = runtime.delivery.counters.last_result
        assert outcome is not None
        assert outcome.outcome is (Outcome.RETRY if retried else Outcome.REJECTED)
        if reply.retry_delay_s:
            assert outcome.retry_after == pytest.approx(reply.retry_delay_s)
        if retried:
            _drain(runtime, lambda: runtime.store.stats().batches == 0)
            assert receiver.span_count() == 2
        else:
            assert runtime.store.stats().dead == 1 and receiver.span_count() == 0


def test_rejected_batch_goes_to_dead_letter_and_the_rest_is_delivered(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    receiver.plan_http([Reply(status=400), Reply(status=400)])  # the combined request, then the first batch alone
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint)) as runtime:
        _put(runtime)
        _put(runtime)
        runtime.delivery.run_once()
        stats = runtime.store.stats()
        assert (stats.batches, stats.dead) == (0, 1)
        assert receiver.span_count() == 2
        (dead,) = runtime.store.dead_letters()
        assert dead[3].startswith("http 400")


def test_partial_success_is_not_retried_and_is_counted(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    receiver.plan_http([Reply.partial_success(1, "one span too old")])
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint)) as runtime:
        _put(runtime)
        runtime.delivery.run_once()
        assert runtime.store.stats().batches == 0
        assert runtime.delivery.counters.spans_rejected_partial == 1
        assert len(receiver.requests()) == 1


def test_backend_down_then_up(receiver: RecordingReceiver, make_settings: Callable[..., Settings]) -> None:
    receiver.stop()
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint)) as runtime:
        _put(runtime)
        runtime.delivery.run_once()
        assert runtime.store.stats().batches == 1
        assert runtime.delivery.counters.last_result is not None
        assert runtime.delivery.counters.last_result.status == "connection"
        receiver.start()
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        assert receiver.span_count() == 2


def test_requests_are_split_under_the_size_limit(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    limit = 64 * 1024
    settings = make_settings(otlp_traces_endpoint=receiver.http_endpoint, export_max_request_bytes=limit)
    with runtime_for(settings) as runtime:
        root = workflow_run()
        runs = [root] + [node_run(root, input={"text": "x" * 5000}) for _ in range(60)]
        runtime.store.put(body(*runs), len(runs))
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        sizes = [request.request.ByteSize() for request in receiver.requests()]
        assert len(sizes) > 1 and max(sizes) <= limit
        assert receiver.span_count() == 61


def test_a_span_over_the_request_limit_is_shrunk_to_fit_and_marked(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    limit = 64 * 1024
    settings = make_settings(
        otlp_traces_endpoint=receiver.http_endpoint, export_max_request_bytes=limit, max_attribute_length=200_000
    )
    with runtime_for(settings) as runtime:
        root = workflow_run()
        big = node_run(root, input={"text": "x" * 100_000})
        runtime.store.put(body(root, big), 2)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        [request] = receiver.requests()
        assert request.request.ByteSize() <= limit
        by_id = {record.span_id: record.attributes for record in request.spans()}
        shrunk = by_id[span_id_bytes(big["id"]).hex()]
        assert shrunk["dynamiq.shrunk"] is True
        assert shrunk["input.value"].endswith(TRUNCATION_MARK) and shrunk["input.mime_type"] == "text/plain"
        assert "dynamiq.shrunk" not in by_id[span_id_bytes(root["id"]).hex()]
        assert runtime.delivery.counters.batches_delivered == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_re_sent_runs_are_exported_once_also_across_a_restart(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    root = workflow_run(id=str(uuid.uuid4()))
    first = [root, node_run(root)]
    second = [*first, node_run(root)]  # a reused handler re-sends every earlier run
    settings = make_settings(otlp_traces_endpoint=receiver.http_endpoint)
    with runtime_for(settings) as runtime:
        runtime.store.put(body(*first), 2)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
    with runtime_for(settings) as runtime:  # a new process on the same store
        runtime.store.put(body(*second), 3)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
        assert runtime.delivery.counters.runs_skipped_resent == 2
        assert runtime.delivery.counters.runs_exported == 1
    span_ids = [span.span_id for span in receiver.spans()]
    assert len(span_ids) == len(set(span_ids)) == 3


def test_a_run_whose_state_changed_is_exported_again(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    root = workflow_run(id=str(uuid.uuid4()))
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint)) as runtime:
        runtime.store.put(body(root), 1)
        runtime.store.put(body({**root, "status": "failed", "error": {"message": "late failure"}}), 1)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
    assert receiver.span_count() == 2


def test_dedupe_can_be_turned_off(receiver: RecordingReceiver, make_settings: Callable[..., Settings]) -> None:
    root = workflow_run(id=str(uuid.uuid4()))
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint, dedupe_window=0)) as runtime:
        runtime.store.put(body(root), 1)
        runtime.store.put(body(root), 1)
        _drain(runtime, lambda: runtime.store.stats().batches == 0)
    assert receiver.span_count() == 2


def test_memory_of_delivered_runs_is_bounded(make_settings: Callable[..., Settings]) -> None:
    with runtime_for(make_settings()) as runtime:
        store = runtime.store
        store.put(b"{}", 1)
        (claimed,) = store.claim(1, 30)
        store.ack([claimed.id], [bytes([n]) * 16 for n in range(10)])
        assert store.forget_delivered(older_than_s=3600, keep_at_most=4) == 6
        assert len(store.already_delivered([bytes([n]) * 16 for n in range(10)])) == 4
        assert store.forget_delivered(older_than_s=0, keep_at_most=100) == 4


def test_keys_of_delivered_runs_follow_their_end_times() -> None:
    """The key identifies a run's final state and sorts by its end time (so acks append to the index)."""
    first, later = (
        workflow_run(id=str(uuid.uuid4()), end_time=end) for end in ("2026-06-10T09:15:30Z", "2026-06-10T09:15:31Z")
    )
    same_id_upper = workflow_run(id=first["id"].upper(), end_time=first["end_time"])
    other_state = workflow_run(id=first["id"], end_time=first["end_time"], status="failed")
    unfinished = workflow_run(id=first["id"], end_time=None, status=None)
    key_first, key_later, key_upper, key_failed = (
        run_key(load_stored(body(run))[0]) for run in (first, later, same_id_upper, other_state)
    )
    (unfinished_run,) = parse_batch(body(unfinished), accept_unfinished=True, max_runs=10)
    assert key_upper == key_first, "the id is compared in its canonical form"
    assert len({key_first, key_later, key_failed, run_key(unfinished_run)}) == 4
    assert sorted([key_later, key_first]) == [key_first, key_later]
    end_ns = load_stored(body(first))[0].end_ns
    assert key_first[:8] == end_ns.to_bytes(8, "big")


SDK_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "sdk").glob("*.json"))


@pytest.mark.parametrize(
    "fixture", [path for path in SDK_FIXTURES if path.name != "manifest.json"], ids=lambda p: p.name
)
def test_stored_sdk_bodies_read_back_as_the_runs_ingest_validated(fixture: Path) -> None:
    payload = fixture.read_bytes()
    assert load_stored(payload) == parse_batch(payload, accept_unfinished=True, max_runs=100_000)


@pytest.mark.parametrize(
    ("payload", "details"),
    [
        (b'{"runs": [{"id": 1}]}', "runs[0].id"),
        (b'{"runs": "none"}', "runs"),
        (b"not json", "input"),
        (body(workflow_run(start_time="yesterday")), "runs[0].start_time"),
    ],
)
def test_a_stored_body_that_is_not_a_valid_batch_gives_the_ingest_problems(payload: bytes, details: str) -> None:
    with pytest.raises(InvalidBatch) as caught:
        load_stored(payload)
    assert details in caught.value.details


def test_an_export_round_takes_batches_up_to_the_claim_byte_limit(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    """export_max_claim_bytes bounds what one round maps into memory; a round always takes one batch."""
    root = workflow_run(id=str(uuid.uuid4()))
    payload = body(root, node_run(root))
    settings = make_settings(otlp_traces_endpoint=receiver.http_endpoint, export_max_claim_bytes=2 * len(payload))
    with runtime_for(settings) as runtime:
        for _ in range(5):
            runtime.store.put(payload, 2)
        assert [runtime.delivery.run_once() for _ in range(4)] == [2, 2, 1, 0]
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint, export_max_claim_bytes=1024)) as rt:
        rt.store.put(payload, 2)
        assert len(payload) > 1024
        assert rt.delivery.run_once() == 1, "a batch larger than the limit is still taken, alone"


def test_a_batch_that_fails_to_map_is_dead_lettered_and_its_runs_not_remembered(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapping bug buries its batch only: the runs in it are not remembered as delivered (a replay after
    the fix exports them), and a run it shares with a later batch of the same round is still exported."""
    import adapter.delivery

    real = adapter.delivery.runs_to_span_bytes

    def failing(runs: list[Any], options: Any) -> Any:
        if any(run.name == "explodes" for run in runs):
            raise RuntimeError("a mapping bug")
        return real(runs, options)

    monkeypatch.setattr(adapter.delivery, "runs_to_span_bytes", failing)
    shared = workflow_run(id=str(uuid.uuid4()))
    bad = node_run(shared, name="explodes")
    other = workflow_run(id=str(uuid.uuid4()))
    with runtime_for(make_settings(otlp_traces_endpoint=receiver.http_endpoint)) as runtime:
        store = runtime.store
        buried = store.put(body(shared, bad), 2)
        store.put(body(shared), 1)
        store.put(body(other), 1)
        assert runtime.delivery.run_once() == 3  # one round: all three batches
        assert [row[0] for row in store.dead_letters()] == [buried]
        assert store.stats().batches == 0
        assert {record.attributes["dynamiq.run.id"] for record in receiver.spans()} == {shared["id"], other["id"]}
        keys = {name: run_key(load_stored(body(run))[0]) for name, run in (("shared", shared), ("bad", bad))}
        assert store.already_delivered(list(keys.values())) == {keys["shared"]}
