"""Scenario 6: a 1.6 MB SDK batch and a batch of 2,000 runs, exported under ``export_max_request_bytes``.

The limit is lowered to 1 MiB so that splitting is visible, and ``max_attribute_length`` raised to
2,000,000 characters so that the ~0.54 MB output string of ``large.1.json`` really makes its spans
bigger than one request may be: they must be shrunk (``dynamiq.shrunk``), not sent oversize.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import requests

from tests.faults.harness import Ledger, Service, fixture, fresh, many_runs_batch, post, read_store, report, wait_until
from tests.faults.policy_receiver import PolicyReceiver
from tests.otlp_receiver import RecordingReceiver

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024


def test_large_batches_are_exported_in_requests_under_the_limit(make_service: Callable[..., Service]) -> None:
    large = fresh(fixture("large.1.json"))
    many = many_runs_batch(fixture("linear.1.json"), 2000)
    assert len(large.body) > 1_500_000 and len(many.run_ids) == 2000
    ledger = Ledger()
    with RecordingReceiver() as receiver:
        service = make_service(
            {
                "otlp_traces_endpoint": receiver.http_endpoint,
                "export_max_request_bytes": LIMIT,
                "max_attribute_length": 2_000_000,
            }
        )
        service.start()
        with requests.Session() as session:
            for batch in (large, many):
                ledger.record(batch, post(session, service.base_url, batch.body, timeout=60))
        assert len(ledger.accepted) == 2, ledger.refused or ledger.unanswered
        receiver.wait_until(lambda: receiver.span_count() >= 2003, timeout=60, what="2,003 spans")
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 20, "the store to drain")
        requests_seen = receiver.requests()
        rejected = receiver.rejected()
        spans = receiver.spans()
    counts = Counter(span.span_id for span in spans)
    result = ledger.account(counts)
    sizes = [request.body_size for request in requests_seen]
    large_requests = [r for r in requests_seen if {s.span_id for s in r.spans()} & set(large.span_ids)]
    shrunk = [s for s in spans if s.span_id in large.span_ids and s.attributes.get("dynamiq.shrunk") is True]
    report(
        "6 large batches",
        **result.table(),
        body_bytes={"large": len(large.body), "2000 runs": len(many.body)},
        export_requests=len(sizes),
        largest_request=max(sizes),
        limit=LIMIT,
        requests_for_large=len(large_requests),
        large_spans_shrunk=len(shrunk),
    )

    assert not rejected
    assert result.runs_lost == 0 and result.runs_duplicated == 0 and result.unknown_spans == 0
    assert max(sizes) <= LIMIT, sizes
    assert len(sizes) >= 6, f"6 MB of spans cannot travel in {len(sizes)} requests of 1 MiB"
    assert len(large_requests) >= 2, "the three ~0.5 MB+ spans of the large batch do not fit one request"
    assert shrunk, "spans over the request limit must be shrunk"


def test_a_failure_mid_claim_resends_the_requests_already_accepted(make_service: Callable[..., Service]) -> None:
    """A claim split into several requests is settled as a whole: when request 2 gets 503, the whole
    claim is retried and request 1's spans arrive twice. At-least-once; counted here, not hidden."""
    many = many_runs_batch(fixture("linear.1.json"), 2000)
    ledger = Ledger()
    with PolicyReceiver() as receiver:
        receiver.plan([(200, {}), (503, {"Retry-After": "1"})])
        service = make_service({"otlp_traces_endpoint": receiver.endpoint, "export_max_request_bytes": LIMIT})
        service.start()
        with requests.Session() as session:
            ledger.record(many, post(session, service.base_url, many.body, timeout=60))
        wait_until(lambda: set(many.span_ids) <= receiver.snapshot()[1].keys(), 60, "2,000 spans")
        wait_until(lambda: read_store(service.store_path).totals == (0, 0), 20, "the store to drain")
        logged, counts = receiver.snapshot()
    result = ledger.account(counts)
    first = logged[0].span_ids
    report(
        "6 failure in the middle of a split claim",
        **result.table(),
        requests=[entry.status for entry in logged],
        spans_in_first_request=len(first),
    )
    assert [entry.status for entry in logged[:2]] == [200, 503]
    assert result.runs_lost == 0 and result.unknown_spans == 0
    assert result.duplicated_ids == first, "exactly the spans of the request accepted before the failure repeat"
