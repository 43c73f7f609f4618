"""Scenario 3: the backend answers 503 / 429 (retried, Retry-After honoured) and 400 (dead-letter).

The service is a real process; the receivers run in the test process (nothing here restarts the
service, so they need not outlive it). Waits are measured on the receiver's clock, between the
arrival of consecutive attempts of the same batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

import grpc
import pytest
import requests

from tests.faults.harness import Ledger, Service, fixture, fresh, post, read_store, report, wait_until
from tests.faults.policy_receiver import PolicyReceiver
from tests.otlp_receiver import GrpcReply, RecordingReceiver

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")
INITIAL_BACKOFF, MAX_BACKOFF = 1.0, 4.0
SLACK = 2.5  # the worker polls every second when idle; the machine is noisy


def _attempts_over_http(make_service: Callable[..., Service]) -> tuple[list[tuple[float, str]], Service]:
    with PolicyReceiver() as receiver:
        receiver.plan([(503, {"Retry-After": "2"}), (429, {"Retry-After": "1"}), (429, {})])
        service = make_service(
            {
                "otlp_traces_endpoint": receiver.endpoint,
                "retry_initial_backoff": INITIAL_BACKOFF,
                "retry_max_backoff": MAX_BACKOFF,
            }
        )
        service.start()
        batch = fresh(TEMPLATE)
        with requests.Session() as session:
            assert post(session, service.base_url, batch.body).status == 200
        wait_until(lambda: set(batch.span_ids) <= receiver.snapshot()[1].keys(), 30, "the batch to arrive")
        logged, counts = receiver.snapshot()
    assert all(entry.span_ids == set(batch.span_ids) for entry in logged), "every attempt carries the batch"
    assert all(counts[span] == 1 for span in batch.span_ids)
    return [(entry.at, f"http {entry.status}") for entry in logged], service


def _attempts_over_grpc(make_service: Callable[..., Service]) -> tuple[list[tuple[float, str]], Service]:
    with RecordingReceiver() as receiver:
        receiver.plan_grpc(
            [
                GrpcReply(code=grpc.StatusCode.UNAVAILABLE, retry_delay_s=2.0),
                GrpcReply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay_s=1.0),
                GrpcReply(code=grpc.StatusCode.UNAVAILABLE),
            ]
        )
        service = make_service(
            {
                "otlp_protocol": "grpc",
                "otlp_traces_endpoint": receiver.grpc_endpoint,
                "retry_initial_backoff": INITIAL_BACKOFF,
                "retry_max_backoff": MAX_BACKOFF,
            }
        )
        service.start()
        batch = fresh(TEMPLATE)
        with requests.Session() as session:
            assert post(session, service.base_url, batch.body).status == 200
        receiver.wait_for_spans(len(batch.span_ids), timeout=30)
        calls = sorted(receiver.rejected() + receiver.requests(), key=lambda call: call.received_at)
        assert sorted(span.span_id for span in receiver.spans()) == sorted(batch.span_ids)
    return [(call.received_at, f"grpc {call.reply.code.name}") for call in calls], service  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_retryable_answers_are_retried_honouring_retry_after(
    transport: str, make_service: Callable[..., Service]
) -> None:
    attempts, service = (_attempts_over_http if transport == "http" else _attempts_over_grpc)(make_service)
    statuses = [status for _, status in attempts]
    gaps = [later - earlier for (earlier, _), (later, _) in pairwise(attempts)]
    metrics = service.metrics()
    report(
        f"3 retryable answers over {transport}",
        attempts=statuses,
        gaps_s=[round(gap, 2) for gap in gaps],
        retries_metric=metrics.get("dynamiq_otel_export_retries_total"),
    )

    if transport == "http":
        assert statuses == ["http 503", "http 429", "http 429", "http 200"]
    else:
        assert statuses == ["grpc UNAVAILABLE", "grpc RESOURCE_EXHAUSTED", "grpc UNAVAILABLE", "grpc OK"]
    # Retry-After / RetryInfo of 2 s and 1 s honoured; then no hint: exponential backoff of the 3rd
    # attempt, initial * 2**2 capped at max (4 s), times jitter in [0.5, 1] -> at least 2 s
    assert 2.0 <= gaps[0] < 2.0 + SLACK, gaps
    assert 1.0 <= gaps[1] < 1.0 + SLACK, gaps
    assert min(INITIAL_BACKOFF * 4, MAX_BACKOFF) * 0.5 <= gaps[2] < MAX_BACKOFF + SLACK, gaps
    assert metrics["dynamiq_otel_export_retries_total"] == 3
    assert read_store(service.store_path).totals == (0, 0)


def test_a_rejected_batch_is_dead_lettered_the_rest_delivered_and_replay_delivers_it(
    make_service: Callable[..., Service],
) -> None:
    ledger = Ledger()
    with PolicyReceiver() as receiver:
        service = make_service(
            {"otlp_traces_endpoint": receiver.endpoint, "retry_initial_backoff": 0.2, "retry_max_backoff": 1.0}
        )
        service.start()
        poison = fresh(TEMPLATE)
        receiver.set_poison(poison.span_ids)  # this batch gets 400 wherever it travels
        receiver.plan([(503, {"Retry-After": "1"})] * 2)  # hold the first claims: batches then travel together
        with requests.Session() as session:
            for batch in [poison] + [fresh(TEMPLATE) for _ in range(5)]:
                ledger.record(batch, post(session, service.base_url, batch.body))
            good = ledger.accepted_span_ids() - set(poison.span_ids)
            wait_until(lambda: good <= receiver.snapshot()[1].keys(), 30, "the other batches")
            wait_until(lambda: read_store(service.store_path).by_state.get("dead") == 1, 10, "the dead letter")
            later = [fresh(TEMPLATE) for _ in range(3)]
            for batch in later:
                ledger.record(batch, post(session, service.base_url, batch.body))
        assert len(ledger.accepted) == 9, ledger.refused or ledger.unanswered
        wait_until(
            lambda: ledger.accepted_span_ids() - set(poison.span_ids) <= receiver.snapshot()[1].keys(),
            30,
            "the later batches",
        )

        listing = service.cli("dead-letter", "list")
        assert listing.returncode == 0, listing.stderr
        rows = [line for line in listing.stdout.splitlines() if re.match(r"^\s+\d+\s", line)]
        assert len(rows) == 1 and re.search(r"\s6\s+http 400: HTTP 400 by policy$", rows[0]), listing.stdout
        assert "1 dead-lettered batch(es)" in listing.stdout
        logged, counts = receiver.snapshot()
        assert not set(poison.span_ids) & counts.keys(), "a rejected batch was counted as delivered"
        rejected_requests = sum(1 for entry in logged if entry.status == 400)
        metrics = service.metrics()
        assert metrics["dynamiq_otel_batches_dead_lettered_total"] == 1
        assert metrics["dynamiq_otel_dead_letter_batches"] == 1

        receiver.set_poison(())  # the backend is fixed
        replay = service.cli("dead-letter", "replay", "--all")
        assert replay.returncode == 0 and "1 batch(es) queued again for export" in replay.stdout, replay
        wait_until(lambda: set(poison.span_ids) <= receiver.snapshot()[1].keys(), 30, "the replayed batch")
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the store to drain")
        logged, counts = receiver.snapshot()
    after = service.cli("dead-letter", "list")
    assert "0 dead-lettered batch(es)" in after.stdout, after.stdout
    result = ledger.account(counts)
    report(
        "3 400 -> dead-letter -> replay",
        **result.table(),
        requests_answered_400=rejected_requests,
        dead_lettered=1,
        replayed=1,
        dead_letter_row=rows[0].strip(),
    )
    assert result.runs_lost == 0 and result.runs_duplicated == 0 and result.unknown_spans == 0
    assert read_store(service.store_path).by_state.get("dead", 0) == 0
