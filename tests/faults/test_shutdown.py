"""Scenario 8: SIGTERM under load.

While a load generator posts, the service gets SIGTERM: it must stop accepting (a post answered
during the drain gets 503 ``unavailable`` with Retry-After, or finds the port closed), exit 0 within
``shutdown_grace`` + a few seconds, and every batch it answered 200 must arrive after a restart.
``backend=up``: exports complete during the drain. ``backend=hanging``: the export under way at
SIGTERM never finishes, so the service leaves it in flight on disk after ``shutdown_grace`` and the
restarted service sends it again (orphan reclaim).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.harness import (
    Answer,
    BlackHole,
    Ledger,
    Poster,
    ReceiverProcess,
    Service,
    fixture,
    read_store,
    report,
    wait_until,
)

pytestmark = pytest.mark.e2e

TEMPLATE = fixture("agent_tools.1.json")
GRACE_S = 3.0
EXIT_WITHIN_S = GRACE_S + 5.0


@pytest.mark.parametrize("backend", ["up", "hanging"])
def test_sigterm_under_load_drains_exits_0_and_loses_nothing(
    backend: str, receiver_process: ReceiverProcess, make_service: Callable[..., Service]
) -> None:
    hole = BlackHole(receiver_process.http_port) if backend == "hanging" else None
    if hole is None:
        receiver_process.start()
    service = make_service(
        {
            "otlp_traces_endpoint": receiver_process.http_endpoint,
            "shutdown_grace": GRACE_S,
            "otlp_timeout": 10_000,
            "retry_initial_backoff": 0.2,
            "retry_max_backoff": 1.0,
        }
    )
    service.start()
    ledger = Ledger()
    after_term: list[Answer] = []
    term_sent = 0.0

    def watch(answer: Answer) -> None:
        if term_sent and answer.at >= term_sent:
            after_term.append(answer)

    poster = Poster(service.base_url, TEMPLATE, ledger, max_seconds=12.0, max_posts=5000, on_answer=watch)
    try:
        poster.start()
        time.sleep(3.0)
        accepted_before = len(ledger.accepted)
        term_sent = time.monotonic()
        code, took = service.terminate(timeout=60)
        at_exit = read_store(service.store_path)
        time.sleep(1.0)  # the poster meets the stopped service
        if hole is not None:
            hole.close()
            receiver_process.start()
        service.start()
        time.sleep(1.0)
    finally:
        poster.stop()
        if hole is not None:
            hole.close()
    receiver_process.wait_for(ledger.accepted_span_ids(), timeout=120)
    wait_until(lambda: read_store(service.store_path).totals == (0, 0), 30, "the store to drain")
    result = ledger.account(receiver_process.span_counts())
    during = [a for a in after_term if a.at - term_sent <= took]
    kinds = {"200": 0, "503 unavailable": 0, "no answer": 0, "other": 0}
    for answer in after_term:
        if answer.status == 200:
            kinds["200"] += 1
        elif answer.status == 503 and answer.code == "unavailable" and answer.retry_after:
            kinds["503 unavailable"] += 1
        elif answer.status is None:
            kinds["no answer"] += 1
        else:
            kinds["other"] += 1
    left_behind = "export still under way at shutdown" in service.log_path.read_text()
    report(
        f"8 SIGTERM under load, backend {backend}",
        **result.table(),
        exit_code=code,
        exit_s=round(took, 2),
        accepted_before_term=accepted_before,
        answers_after_term=kinds,
        answered_during_drain=len(during),
        batches_in_flight_at_exit=at_exit.by_state.get("inflight", 0),
        left_in_flight_logged=left_behind,
    )

    assert code == 0, service.log_tail()
    assert took <= EXIT_WITHIN_S, f"took {took:.1f}s to exit"
    assert accepted_before > 20
    assert kinds["other"] == 0, [a for a in after_term if a.status not in (200, 503, None)]
    assert not [a for a in during if a.status == 200 and a.at - term_sent > 0.5], "accepted long after SIGTERM"
    assert at_exit.consistent
    assert result.runs_lost == 0 and result.unknown_spans == 0
    assert result.duplicated_ids <= at_exit.inflight_span_ids
    if backend == "hanging":
        assert left_behind and at_exit.by_state.get("inflight", 0) > 0
