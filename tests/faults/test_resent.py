"""Scenario 5: a reused SDK handler re-sends every earlier run; each run is exported exactly once.

``reused_handler.1.json`` holds the 3 runs of workflow run 1; ``reused_handler.2.json`` holds those 3
again (identical: same id, status, end time) plus the 3 runs of workflow run 2. Both fixtures get the
same fresh ids, so the pair stays a pair. The delivered-run memory is on disk: it also holds across a
``kill -9`` between the two posts. The real SDK does the same thing in ``test_real_sdk_...``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from mapping.ids import span_id_bytes
from tests.faults.harness import (
    ACCESS_KEY,
    Ledger,
    ReceiverProcess,
    Service,
    fixture,
    fresh,
    post,
    read_store,
    report,
    wait_until,
)
from tests.processes import run_sdk

pytestmark = pytest.mark.e2e


def _settings(receiver: ReceiverProcess) -> dict[str, object]:
    return {"otlp_traces_endpoint": receiver.http_endpoint, "retry_initial_backoff": 0.2, "retry_max_backoff": 1.0}


@pytest.mark.parametrize("between", ["nothing", "kill-9", "sigterm"])
def test_re_sent_runs_are_exported_once(
    between: str, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    renames: dict[bytes, bytes] = {}
    first = fresh(fixture("reused_handler.1.json"), renames)
    second = fresh(fixture("reused_handler.2.json"), renames)
    assert set(first.run_ids) < set(second.run_ids) and len(set(second.run_ids)) == 6
    receiver_process.start()
    service = make_service(_settings(receiver_process))
    service.start()
    ledger = Ledger()
    with requests.Session() as session:
        ledger.record(first, post(session, service.base_url, first.body))
        receiver_process.wait_for(first.span_ids, timeout=30)
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the first batch to be settled")
        if between == "kill-9":
            service.kill9()
            service.start()
        elif between == "sigterm":
            assert service.terminate()[0] == 0
            service.start()
    with requests.Session() as session:
        ledger.record(second, post(session, service.base_url, second.body))
    assert len(ledger.accepted) == 2, ledger.refused or ledger.unanswered
    receiver_process.wait_for(second.span_ids, timeout=30)
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the second batch to be settled")
    metrics = service.metrics()  # of the process that handled the second batch
    counts = receiver_process.span_counts()
    result = ledger.account(counts)
    skipped = metrics["dynamiq_otel_runs_skipped_resent_total"]
    report(
        f"5 reused handler, {between} between the posts",
        **result.table(),
        runs_posted=9,
        runs_skipped_resent_metric=skipped,
        runs_exported_metric=metrics["dynamiq_otel_runs_exported_total"],
    )

    assert {span: counts[span] for span in second.span_ids} == dict.fromkeys(second.span_ids, 1)
    assert sum(counts.values()) == 6
    assert skipped == 3
    assert metrics["dynamiq_otel_runs_exported_total"] == (3 if between != "nothing" else 6)


def test_real_sdk_reused_handler_runs_are_exported_once(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    receiver_process.start()
    service = make_service(_settings(receiver_process))
    service.start()
    (summary,) = run_sdk(service.base_url, ACCESS_KEY, ["reused_handler"])
    expected = {str(run["id"]) for run in summary["runs"]}
    spans = {span_id_bytes(run_id).hex() for run_id in expected}
    receiver_process.wait_for(spans, timeout=60)
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the batches to be settled")
    counts = receiver_process.span_counts()
    metrics = service.metrics()
    received = metrics['dynamiq_otel_runs_received_total{outcome="accepted",tenant="default"}']
    report(
        "5 reused handler, real SDK",
        runs_in_sdk=len(expected),
        runs_posted_by_sdk=received,
        spans_received=sum(counts.values()),
        runs_skipped_resent_metric=metrics["dynamiq_otel_runs_skipped_resent_total"],
    )

    assert summary["expected_batches"] == 2 and len(expected) == 6
    assert received == 9, "the SDK posts 3 runs, then those 3 again with 3 more"
    assert dict(counts) == dict.fromkeys(spans, 1)
    assert metrics["dynamiq_otel_runs_skipped_resent_total"] == 3


def test_skipped_re_sent_runs_are_counted_once_when_the_export_is_retried(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    renames: dict[bytes, bytes] = {}
    first = fresh(fixture("reused_handler.1.json"), renames)
    second = fresh(fixture("reused_handler.2.json"), renames)
    receiver_process.start()
    service = make_service(_settings(receiver_process))
    service.start()
    with requests.Session() as session:
        assert post(session, service.base_url, first.body).status == 200
        receiver_process.wait_for(first.span_ids, timeout=30)
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the first batch to be settled")
        receiver_process.stop()  # the backend goes away: the second batch is attempted and retried
        assert post(session, service.base_url, second.body).status == 200
    failed = 'dynamiq_otel_export_responses_total{status="connection"}'
    wait_until(lambda: service.metrics().get(failed, 0) >= 3, 20, "three failed attempts")
    receiver_process.start()
    receiver_process.wait_for(second.span_ids, timeout=30)
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 10, "the second batch to be settled")
    counts = receiver_process.span_counts()
    assert dict(counts) == dict.fromkeys(second.span_ids, 1)  # delivery itself is right: each run once
    assert service.metrics()["dynamiq_otel_runs_skipped_resent_total"] == 3
