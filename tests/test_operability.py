"""Operability: probes, Prometheus metrics (names, labels, values) and structured logs."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from adapter.app import begin_shutdown, create_app
from adapter.store import Store, StoreUnavailable
from config import Settings
from tests.batches import body, node_run, workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver, Reply
from tests.processes import free_port, running_service

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {ACCESS_KEY}"}
HEADERS = {**AUTH, "Content-Type": "application/json"}
ACME_KEY = "acme-key-0001"
ACME = {"Authorization": f"Bearer {ACME_KEY}", "Content-Type": "application/json"}
READY = {"status": "ready"}


def unavailable(details: dict[str, str]) -> dict[str, Any]:
    return {"error": {"code": "unavailable", "message": "Service Unavailable", "details": details}}


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def sized_body(size: int) -> bytes:
    """A valid one-run body of exactly ``size`` bytes."""
    base = body(workflow_run(input={"pad": ""}))
    return body(workflow_run(input={"pad": "x" * (size - len(base))}))


@pytest.fixture
def offline(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"

    def build(**overrides: Any) -> Settings:
        return make_settings(otlp_traces_endpoint=endpoint, **overrides)

    return build


# --- probes ---------------------------------------------------------------------------------------


def test_readyz_ready_normally(offline: Callable[..., Settings]) -> None:
    with TestClient(app=create_app(offline(ready_export_max_age=0.01))) as client:
        time.sleep(0.05)  # older than ready_export_max_age, but nothing waits: still ready
        for path, expected in (("/readyz", READY), ("/healthz", {"status": "ok"})):
            response = client.get(path)
            assert (response.status_code, response.json()) == (200, expected)
            assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("limits", "payload"),
    [
        pytest.param({"store_max_batches": 1}, body(workflow_run()), id="batches"),
        pytest.param(
            {"store_max_bytes": 1 << 20, "max_body_bytes": 1 << 20},
            sized_body(1 << 20),
            id="bytes",
        ),
    ],
)
def test_readyz_503_when_the_store_is_at_its_limit(
    offline: Callable[..., Settings], limits: dict[str, int], payload: bytes
) -> None:
    settings = offline(**limits)
    with TestClient(app=create_app(settings)) as client:
        assert client.post("/v1/traces", content=payload, headers=HEADERS).status_code == 200
        stats = client.app.state.runtime.store.stats()
        assert stats.batches >= settings.store_max_batches or stats.bytes >= settings.store_max_bytes
        response = client.get("/readyz")
        assert (response.status_code, response.json()) == (
            503,
            unavailable({"store": f"full ({stats.batches} batches, {stats.bytes} bytes waiting)"}),
        )
        assert response.headers["retry-after"] == "5"
        assert client.get("/healthz").status_code == 200


def test_readyz_503_when_exports_fail_while_batches_wait(
    make_settings: Callable[..., Settings], receiver: RecordingReceiver
) -> None:
    receiver.stop()  # the backend is down
    settings = make_settings(otlp_traces_endpoint=receiver.http_endpoint, ready_export_max_age=0.3)
    with TestClient(app=create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200, "nothing waits yet"
        assert client.post("/v1/traces", content=body(workflow_run()), headers=HEADERS).status_code == 200
        wait_for(lambda: client.get("/readyz").status_code == 503, what="/readyz to fail")
        response = client.get("/readyz")
        assert response.json() == unavailable({"exporter": "no export succeeded in the last 0.3s"})
        assert response.headers["retry-after"] == "5"
        assert client.get("/healthz").status_code == 200
        receiver.start()  # the backend is back: the batch is exported, the service is ready again
        wait_for(lambda: client.get("/readyz").status_code == 200, what="/readyz to recover")
        assert receiver.span_count() == 1


def test_readyz_counts_exports_of_other_processes(offline: Callable[..., Settings]) -> None:
    """With export_processes, a worker exports nothing itself: an ack in the shared store is what counts."""
    settings = offline(export_processes=1, ready_export_max_age=0.3)
    with TestClient(app=create_app(settings)) as client:
        runtime = client.app.state.runtime
        assert runtime.delivery is None, "the worker runs no export loop of its own"
        assert client.post("/v1/traces", content=body(workflow_run()), headers=HEADERS).status_code == 200
        assert client.post("/v1/traces", content=body(workflow_run(id="w2")), headers=HEADERS).status_code == 200
        wait_for(lambda: client.get("/readyz").status_code == 503, what="/readyz to fail")
        assert client.get("/readyz").json() == unavailable({"exporter": "no export succeeded in the last 0.3s"})
        assert runtime.store.stats().batches == 2, "nothing was exported by the worker"
        exporter = Store(settings.store_path, max_bytes=settings.store_max_bytes, max_batches=10)
        try:  # an export process delivers one batch
            exporter.ack([exporter.claim(1, 60)[0].id])
        finally:
            exporter.close()
        assert client.get("/readyz").status_code == 200


def test_readyz_503_while_stopping(offline: Callable[..., Settings]) -> None:
    app = create_app(offline())
    with TestClient(app=app) as client:
        begin_shutdown(app)
        response = client.get("/readyz")
        assert (response.status_code, response.json()) == (503, unavailable({"service": "shutting down"}))
        assert client.get("/healthz").status_code == 200


def test_readyz_503_when_the_store_cannot_be_written(
    offline: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(app=create_app(offline())) as client:
        store = client.app.state.runtime.store

        def fail() -> None:
            raise StoreUnavailable("disk I/O error")

        monkeypatch.setattr(store, "check_writable", fail)
        response = client.get("/readyz")
        assert (response.status_code, response.json()) == (503, unavailable({"store": "not writable: disk I/O error"}))
        assert client.get("/healthz").status_code == 200


# --- metrics --------------------------------------------------------------------------------------


def documented_metrics() -> dict[str, str]:
    """Metric family name -> type, from the table in docs/operations.md (counters end in ``_total``)."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(dynamiq_otel_[a-z_]+)` \| (counter|gauge|histogram) \|", text, re.MULTILINE)
    assert rows, "no metrics table in docs/operations.md"
    for name, kind in rows:
        assert name.endswith("_total") == (kind == "counter"), name
    return {name.removesuffix("_total"): kind for name, kind in rows}


def test_documented_metrics_match_the_code() -> None:
    """The table lists exactly the metrics adapter/metrics.py defines, with their help texts."""
    source = (ROOT / "adapter" / "metrics.py").read_text(encoding="utf-8")
    defined = set(re.findall(r'f"\{PREFIX\}_([a-z_]+)"', source))
    assert {name.removeprefix("dynamiq_otel_") for name in documented_metrics()} == defined


def scrape(client: TestClient[Any]) -> dict[str, Any]:
    """``{family name: family}`` of one scrape; also checks the content type."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    """Sum of the samples named ``sample`` (default: the family's own) whose labels include ``labels``."""
    wanted = sample or family
    found = [
        s.value
        for s in families[family].samples
        if s.name == wanted and all(s.labels.get(key) == label for key, label in labels.items())
    ]
    return float(sum(found))


def test_every_documented_metric_is_exposed_with_its_type(offline: Callable[..., Settings]) -> None:
    documented = documented_metrics()
    with TestClient(app=create_app(offline())) as client:
        families = scrape(client)
    exposed = {
        name: family.type
        for name, family in families.items()
        if name.startswith("dynamiq_otel_") and not name.endswith("_created")  # the client's creation times
    }
    assert exposed == documented


def test_store_gauges_while_batches_wait(offline: Callable[..., Settings]) -> None:
    first, second = body(workflow_run()), body(workflow_run(id=str(uuid.uuid4())))
    with TestClient(app=create_app(offline())) as client:
        for payload in (first, second):
            assert client.post("/v1/traces", content=payload, headers=HEADERS).status_code == 200
        time.sleep(0.05)
        families = scrape(client)
    assert value(families, "dynamiq_otel_store_batches") == 2
    assert value(families, "dynamiq_otel_store_bytes") == len(first) + len(second)
    assert value(families, "dynamiq_otel_store_oldest_age_seconds") > 0
    assert value(families, "dynamiq_otel_dead_letter_batches") == 0


@pytest.fixture
def traffic(make_settings: Callable[..., Settings], receiver: RecordingReceiver) -> Iterator[dict[str, Any]]:
    """A service after known traffic: accepted, refused, retried, partially rejected, re-sent, dead.

    default: batch A (2 runs) -> 503, retried -> 200 with 1 span rejected (partial success);
             batch A again -> its 2 runs are skipped as re-sent (no export request);
    acme:    batch C (1 run) -> 400 from the backend -> dead-lettered;
    refused: 401 (no key), 415, 400 and 413 (default), 400 and 429 (acme).
    """
    settings = make_settings(
        otlp_traces_endpoint=receiver.http_endpoint,
        max_runs_per_batch=3,
        tenants=[{"name": "acme", "access_keys": [ACME_KEY], "rate_limit_runs_per_second": 0.001,
                  "rate_limit_burst": 1}],
    )  # fmt: skip
    root = workflow_run(id=str(uuid.uuid4()))
    batch_a = body(root, node_run(root))
    with TestClient(app=create_app(settings)) as client:
        runtime = client.app.state.runtime
        store, counters = runtime.store, runtime.delivery.counters

        receiver.plan_http([Reply(status=503), Reply.partial_success(1, "one span too old")])
        assert client.post("/v1/traces", content=batch_a, headers=HEADERS).status_code == 200
        wait_for(lambda: store.stats().batches == 0, what="batch A delivered")
        assert client.post("/v1/traces", content=batch_a, headers=HEADERS).status_code == 200
        wait_for(lambda: counters.runs_skipped_resent == 2 and store.stats().batches == 0, what="A skipped")

        receiver.plan_http([Reply(status=400)])
        late = body(workflow_run(id=str(uuid.uuid4())))
        assert client.post("/v1/traces", content=late, headers=ACME).status_code == 200
        wait_for(lambda: store.stats().dead == 1, what="batch C dead-lettered")

        refused = [
            (415, {**AUTH, "Content-Type": "text/plain"}, body(workflow_run())),
            (401, {"Content-Type": "application/json"}, body(workflow_run())),
            (400, HEADERS, b"{}"),
            (413, HEADERS, body(*[workflow_run(id=f"r{i}") for i in range(4)])),
            (400, ACME, b"not json"),
            (429, ACME, body(workflow_run(id="late"))),
        ]
        for status, headers, payload in refused:
            assert client.post("/v1/traces", content=payload, headers=headers).status_code == status
        yield {"families": scrape(client), "receiver": receiver}


def test_ingest_counters(traffic: dict[str, Any]) -> None:
    families = traffic["families"]
    batches = "dynamiq_otel_batches_received"
    total = f"{batches}_total"
    assert value(families, batches, total, outcome="accepted", reason="ok", tenant="default") == 2
    assert value(families, batches, total, outcome="accepted", reason="ok", tenant="acme") == 1
    for reason, count in (("unsupported_media_type", 1), ("unauthorized", 1), ("bad_request", 2),
                          ("payload_too_large", 1), ("rate_limited", 1)):  # fmt: skip
        assert value(families, batches, total, outcome="rejected", reason=reason) == count, reason
    assert value(families, batches, total, outcome="rejected", reason="unauthorized", tenant="unknown") == 1
    runs = "dynamiq_otel_runs_received"
    assert value(families, runs, f"{runs}_total", outcome="accepted", tenant="default") == 4
    assert value(families, runs, f"{runs}_total", outcome="accepted", tenant="acme") == 1


def test_refused_batches_are_counted_by_tenant(traffic: dict[str, Any]) -> None:
    families = traffic["families"]
    total = "dynamiq_otel_batches_received_total"
    assert value(families, "dynamiq_otel_batches_received", total, reason="rate_limited", tenant="acme") == 1
    assert value(families, "dynamiq_otel_batches_received", total, reason="bad_request", tenant="acme") == 1
    assert value(families, "dynamiq_otel_batches_received", total, reason="bad_request", tenant="default") == 1
    runs = "dynamiq_otel_runs_received"
    assert value(families, runs, f"{runs}_total", outcome="rejected", tenant="acme") == 1  # the 429 batch


def test_export_counters_and_histograms(traffic: dict[str, Any]) -> None:
    families = traffic["families"]

    def total(name: str, **labels: str) -> float:
        return value(families, name, f"{name}_total", **labels)

    assert total("dynamiq_otel_runs_exported") == 2
    assert total("dynamiq_otel_spans_exported") == 2
    assert total("dynamiq_otel_spans_rejected_by_backend") == 1
    assert total("dynamiq_otel_runs_skipped_resent") == 2
    assert total("dynamiq_otel_export_retries") == 1
    assert total("dynamiq_otel_batches_dead_lettered") == 1
    assert total("dynamiq_otel_export_responses", status="http 503") == 1
    assert total("dynamiq_otel_export_responses", status="http 200") == 1
    assert total("dynamiq_otel_export_responses", status="http 400") == 1
    assert total("dynamiq_otel_export_responses") == 3
    for histogram in ("dynamiq_otel_export_duration_seconds", "dynamiq_otel_export_request_size_bytes"):
        assert value(families, histogram, f"{histogram}_count") == 3
        assert value(families, histogram, f"{histogram}_sum") > 0
        buckets = [s for s in families[histogram].samples if s.name == f"{histogram}_bucket"]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf" and counts[-1] == 3
    rx = traffic["receiver"]
    sent = sum(request.body_size for request in rx.requests() + rx.rejected())
    size = "dynamiq_otel_export_request_size_bytes"
    assert value(families, size, f"{size}_sum") == sent


def test_store_gauges_after_export(traffic: dict[str, Any]) -> None:
    families = traffic["families"]
    assert value(families, "dynamiq_otel_store_batches") == 0
    assert value(families, "dynamiq_otel_store_bytes") == 0
    assert value(families, "dynamiq_otel_store_oldest_age_seconds") == 0
    assert value(families, "dynamiq_otel_dead_letter_batches") == 1


# --- logs from a real process ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_log(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Log lines of a real service after accepted and refused batches (X-Request-ID rid-<status>)."""
    tmp_path = tmp_path_factory.mktemp("logs")
    config = {
        "access_keys": [ACCESS_KEY],
        "tenants": [{"name": "acme", "access_keys": [ACME_KEY], "rate_limit_runs_per_second": 0.001,
                     "rate_limit_burst": 1}],
        "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
        "max_runs_per_batch": 3,
        "retry_initial_backoff": 5,
        "retry_max_backoff": 10,
    }  # fmt: skip
    requests_made = [
        ("rid-200", ACME, body(workflow_run())),
        ("rid-401", {"Content-Type": "application/json"}, body(workflow_run())),
        ("rid-415", {"Authorization": f"Bearer {ACME_KEY}", "Content-Type": "text/plain"}, body(workflow_run())),
        ("rid-400", ACME, body(workflow_run(type="agent", status="done"))),
        ("rid-413", ACME, body(*[workflow_run(id=f"r{i}") for i in range(4)])),
        ("rid-429", ACME, body(workflow_run(id="a"), workflow_run(id="b"))),
        (None, HEADERS, b"not json"),
    ]
    with running_service(tmp_path, config) as base_url:
        for request_id, headers, payload in requests_made:
            extra = {"X-Request-ID": request_id} if request_id else {}
            answer = requests.post(f"{base_url}/v1/traces", data=payload, headers={**headers, **extra}, timeout=10)
            assert request_id is None or answer.status_code == int(request_id[4:])
    lines = (tmp_path / "service.log").read_text(encoding="utf-8").splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            entries.append(line)  # test_every_log_line_is_one_json_object reports it
    return entries


@pytest.mark.e2e
def test_every_log_line_is_one_json_object(service_log: list[Any]) -> None:
    assert service_log
    for entry in service_log:
        assert isinstance(entry, dict), f"not a JSON object: {entry!r}"
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        assert entry["level"] in ("debug", "info", "warning", "error", "critical")
    starting = [entry for entry in service_log if entry["message"] == "starting"]
    assert len(starting) == 1
    assert {"listen", "workers", "export_processes", "export", "store", "mapping"} <= set(starting[0])
    assert starting[0]["mapping"] in ("python", "mypyc")


@pytest.mark.e2e
def test_refused_batches_are_logged_with_request_id_and_status(service_log: list[dict[str, Any]]) -> None:
    refused = [entry for entry in service_log if isinstance(entry, dict) and entry["message"] == "batch refused"]
    by_id = {entry["request_id"]: entry for entry in refused}
    assert set(by_id) >= {"rid-401", "rid-415", "rid-400", "rid-413", "rid-429"}
    assert "rid-200" not in by_id, "accepted batches are logged at debug level only"
    for request_id, entry in by_id.items():
        if request_id.startswith("rid-"):
            assert entry["status"] == int(request_id[4:])
            assert entry["level"] == "info"
            assert {"tenant", "runs", "problems"} <= set(entry)
    assert by_id["rid-400"]["problems"] == 2
    generated = [entry for request_id, entry in by_id.items() if not request_id.startswith("rid-")]
    assert len(generated) == 1 and re.fullmatch(r"[0-9a-f]{32}", generated[0]["request_id"])
    assert by_id["rid-401"]["tenant"] is None


@pytest.mark.e2e
def test_refused_batches_are_logged_with_tenant_and_runs(service_log: list[dict[str, Any]]) -> None:
    by_id = {e["request_id"]: e for e in service_log if isinstance(e, dict) and e["message"] == "batch refused"}
    assert by_id["rid-415"]["tenant"] == "acme"
    assert by_id["rid-400"]["tenant"] == "acme"
    assert (by_id["rid-429"]["tenant"], by_id["rid-429"]["runs"]) == ("acme", 2)
