"""The service can trace its own work to the same backend; off by default."""

from __future__ import annotations

from collections.abc import Callable

from litestar.testing import TestClient

from adapter.app import create_app
from config import Settings
from tests.batches import body, workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver

HEADERS = {"Authorization": f"Bearer {ACCESS_KEY}", "Content-Type": "application/json"}


def _post_and_stop(settings: Settings, receiver: RecordingReceiver) -> None:
    with TestClient(app=create_app(settings)) as client:
        assert client.post("/v1/traces", content=body(workflow_run()), headers=HEADERS).status_code == 200
        receiver.wait_until(lambda: any(s.span.name == "Workflow" for s in receiver.spans()), 10, "the run span")
    # the lifespan's end flushed the self-tracing provider


def test_self_tracing_sends_ingest_and_export_spans(
    receiver: RecordingReceiver, make_settings: Callable[..., Settings]
) -> None:
    _post_and_stop(make_settings(otlp_traces_endpoint=receiver.http_endpoint, self_tracing=True), receiver)
    own = [s for s in receiver.spans() if s.resource_attributes.get("service.name") == "dynamiq-otel"]
    assert {"ingest", "export"} <= {s.span.name for s in own}
    ingest = next(s for s in own if s.span.name == "ingest")
    assert ingest.attributes["http.response.status_code"] == 200
    assert ingest.attributes["dynamiq_otel.runs"] == 1


def test_self_tracing_is_off_by_default(receiver: RecordingReceiver, make_settings: Callable[..., Settings]) -> None:
    _post_and_stop(make_settings(otlp_traces_endpoint=receiver.http_endpoint), receiver)
    assert {s.resource_attributes.get("service.name") for s in receiver.spans()} == {"dynamiq"}
