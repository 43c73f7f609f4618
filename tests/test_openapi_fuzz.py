"""Schemathesis against the service's own OpenAPI document, on a real running process.

The document is fetched from ``/schema/openapi.json`` of the running service; every documented
operation is fuzzed (schema-valid and schema-invalid requests, with and without the access key),
and every answer must be no 5xx and must conform to the documented status codes, content types,
headers and response schemas.

Two checks of schemathesis are left out on purpose, because the service is deliberately more
lenient and more precise than a JSON schema can say:

* ``negative_data_rejection``: the service accepts fields of other types than the schema states
  (``metadata`` that is not an object, ``tags`` as one string, a numeric ``session_id``), as the
  Dynamiq collector does; they are kept as sent.
* ``positive_data_acceptance``: schema-valid runs can still be refused with 400 (an ``end_time``
  before ``start_time``, a time before 1970, a whitespace-only id): rules a JSON schema cannot
  state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapter.app import create_app
from config import Settings
from tests.batches import body, workflow_run
from tests.conftest import ACCESS_KEY
from tests.processes import free_port, running_service

pytestmark = pytest.mark.e2e

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ERROR_STATUSES = ("400", "401", "413", "415", "429", "503")
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
HEADERS = {"Authorization": f"Bearer {ACCESS_KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real service for the module; its exporter points at an unused port (batches stay stored)."""
    tmp_path: Path = tmp_path_factory.mktemp("openapi-fuzz")
    config = {
        "access_keys": [ACCESS_KEY],
        "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
        "max_body_bytes": 64 * 1024,
        "retry_initial_backoff": 0.5,
        "retry_max_backoff": 2,
    }
    with running_service(tmp_path, config) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def document(service: str) -> dict[str, Any]:
    response = requests.get(f"{service}/schema/openapi.json", timeout=10)
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    loaded: dict[str, Any] = response.json()
    return loaded


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(document, node)


# --- the document itself -------------------------------------------------------------------------


def test_document_lists_every_route(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "dynamiq-otel"
    assert set(document["paths"]) == {"/v1/traces", "/healthz", "/readyz", "/metrics"}
    assert set(document["paths"]["/v1/traces"]) == {"post"}


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_document_describes_error_envelope(document: dict[str, Any], status: str) -> None:
    responses = document["paths"]["/v1/traces"]["post"]["responses"]
    schema = responses[status]["content"]["application/json"]["schema"]
    assert schema == {"$ref": ENVELOPE_REF}
    envelope = _resolve(document, schema)
    assert envelope["required"] == ["error"]
    detail = _resolve(document, envelope["properties"]["error"])
    assert set(detail["required"]) == {"code", "message"}
    assert set(detail["properties"]) == {"code", "message", "details"}


def test_document_describes_the_200_answer(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/traces"]["post"]["responses"]
    accepted = _resolve(document, responses["200"]["content"]["application/json"]["schema"])
    assert accepted["properties"]["message"]["type"] == "string"


def test_document_describes_the_request_body(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/traces"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    schema = _resolve(document, body["content"]["application/json"]["schema"])
    assert schema["required"] == ["runs"]
    runs = schema["properties"]["runs"]
    assert runs["type"] == "array" and runs["minItems"] == 1
    run = _resolve(document, runs["items"])
    assert set(run["required"]) == {
        "id", "name", "type", "trace_id", "source_id", "start_time", "end_time", "status",
    }  # fmt: skip
    assert run["properties"]["type"]["enum"] == ["workflow", "flow", "node"]
    assert run["properties"]["status"]["enum"] == ["succeeded", "failed", "skipped", "canceled"]


# --- fuzzing -------------------------------------------------------------------------------------


AUTH_HEADERS = st.sampled_from(
    [
        {"Authorization": f"Bearer {ACCESS_KEY}"},
        {"Authorization": "Bearer not-the-key"},
        {},
    ]
)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_conforms(service: str, document: dict[str, Any], mode: str) -> None:
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 4
    generation_mode = schemathesis.GenerationMode(mode)
    strategy = st.one_of([operation.as_strategy(generation_mode=generation_mode) for operation in operations])
    session = requests.Session()

    @given(case=strategy, auth=AUTH_HEADERS)
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        database=None,
    )
    def check(case: Any, auth: dict[str, str]) -> None:
        response = case.call(base_url=service, session=session, headers=auth, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=auth)
        if case.operation.path == "/v1/traces" and response.status_code != 200:
            error = response.json()["error"]
            assert set(error) <= {"code", "message", "details"}

    check()


def test_valid_batch_conforms(service: str, document: dict[str, Any]) -> None:
    """A hand-made valid batch through schemathesis' own call/validate: 200 and the documented body."""
    schema = schemathesis.openapi.from_dict(document)
    operation = schema["/v1/traces"]["POST"]
    case = operation.Case(body={"runs": [workflow_run()]}, media_type="application/json")
    response = case.call(base_url=service, headers={"Authorization": f"Bearer {ACCESS_KEY}"}, timeout=30)
    case.validate_response(response, checks=CHECKS)
    assert (response.status_code, response.json()) == (200, {"message": "ok"})


def test_readyz_503_conforms_to_the_document(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(store_max_batches=1, otlp_traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")
    with TestClient(app=create_app(settings)) as client:
        served = client.get("/schema/openapi.json").json()
        accepted = client.post("/v1/traces", content=body(workflow_run()), headers=HEADERS)
        assert accepted.status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
    schema = schemathesis.openapi.from_dict(served)
    case = schema["/readyz"]["GET"].Case()
    case.validate_response(response, checks=[check for check in CHECKS if check is not not_a_server_error])
