"""Scenario 7: the backend is down for over two minutes under steady load; memory stays flat.

5 batches/s of a 22.8 KB real SDK batch (6 runs) are posted while nothing listens on the export
port. The service's RSS (``VmRSS`` of the serving process; ``workers: 1`` so the Popen pid serves)
is sampled every 5 s. Accepted batches wait on disk, not in memory: the last sample of the outage
must stay within 1.5x the sample at 30 s. Then the backend comes up and everything must arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.harness import Ledger, Poster, ReceiverProcess, Service, fixture, read_store, report, wait_until

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")
OUTAGE_S = 125.0
RATE = 5.0
SAMPLE_EVERY_S = 5.0


@pytest.mark.timeout(420)
def test_long_outage_under_load_keeps_memory_flat_and_loses_nothing(
    receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    service = make_service(
        {
            "otlp_traces_endpoint": receiver_process.http_endpoint,
            "workers": 1,
            "retry_initial_backoff": 1.0,
            "retry_max_backoff": 10.0,
        }
    )
    service.start()
    ledger = Ledger()
    curve: list[tuple[float, int]] = []
    started = time.monotonic()
    poster = Poster(
        service.base_url, TEMPLATE, ledger, rate=RATE, max_seconds=OUTAGE_S, max_posts=int(OUTAGE_S * RATE) + 10
    ).start()
    try:
        while time.monotonic() - started < OUTAGE_S:
            curve.append((round(time.monotonic() - started), service.rss_kib()))
            time.sleep(SAMPLE_EVERY_S - (time.monotonic() - started) % SAMPLE_EVERY_S)
    finally:
        poster.stop()
    depth = read_store(service.store_path)
    outage_end = time.monotonic() - started
    receiver_process.start()
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=120)
    drained_after = time.monotonic() - started - outage_end
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 30, "the store to drain")
    curve.append((round(time.monotonic() - started), service.rss_kib()))
    result = ledger.account(receiver_process.span_counts())
    at_30 = next(rss for t, rss in curve if t >= 30)
    last_outage = [rss for t, rss in curve if t <= OUTAGE_S][-1]
    print("RSS curve (s, MiB): " + ", ".join(f"{t}:{rss / 1024:.1f}" for t, rss in curve))
    report(
        "7 long outage",
        **result.table(),
        outage_s=round(outage_end),
        rate_per_s=RATE,
        posts_refused=len(ledger.refused),
        posts_unanswered=len(ledger.unanswered),
        store_depth_at_end_of_outage={"batches": depth.totals[0], "bytes": depth.totals[1]},
        delivered_within_s_after_backend_up=round(drained_after, 1),
        rss_mib=[(t, round(rss / 1024, 1)) for t, rss in curve],
    )

    assert outage_end >= 120
    assert result.batches_accepted >= 0.9 * OUTAGE_S * RATE, "the load generator fell behind"
    assert not ledger.refused and not ledger.unanswered
    assert result.runs_lost == 0 and result.runs_duplicated == 0 and result.unknown_spans == 0
    assert last_outage <= 1.5 * at_30, f"RSS grew from {at_30} KiB at 30 s to {last_outage} KiB"
