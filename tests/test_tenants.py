"""Tenants: keys in every form map to the right tenant; each tenant's batches are exported with its own
resource, headers and endpoint and reach nobody else; per-tenant rate limits; clear config errors."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapter.app import create_app
from adapter.auth import AccessKeys
from adapter.ratelimit import RateLimits
from config import Settings, SettingsError, load_settings
from tests.batches import body, workflow_run
from tests.conftest import ACCESS_KEY
from tests.otlp_receiver import RecordingReceiver
from tests.processes import free_port

JSON = {"Content-Type": "application/json"}
OK = {"message": "ok"}
ACME_KEY = "acme-key-0001"
ACME_KEY_2 = "acme-key-0002"
GLOBEX_KEY = "globex-key-0001"
INITECH_KEYS = ("initech-key-0001", "initech-key-0002")


def auth(key: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {key}"}


def key_file(tmp_path: Path, *keys: str, name: str = "keys") -> Path:
    """A file as a mounted Kubernetes Secret holds it: comments, blank lines, CRLF, no final newline."""
    path = tmp_path / name
    path.write_bytes(("# initech keys\r\n\r\n" + "\r\n".join(f"  {key}  " for key in keys)).encode())
    return path


def tenant_of_rows(settings: Settings) -> list[tuple[str, int]]:
    db = sqlite3.connect(settings.store_path)
    try:
        return [(row[0], row[1]) for row in db.execute("SELECT tenant, runs FROM batches ORDER BY id")]
    finally:
        db.close()


@pytest.fixture
def three_tenants(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """The default tenant plus acme (keys in clear), globex (a digest) and initech (a key file)."""
    keys = key_file(tmp_path, *INITECH_KEYS)

    def build(**overrides: Any) -> Settings:
        tenants: list[dict[str, Any]] = [
            {"name": "acme", "access_keys": [ACME_KEY, ACME_KEY_2]},
            {"name": "globex", "access_key_sha256": [hashlib.sha256(GLOBEX_KEY.encode()).hexdigest().upper()]},
            {"name": "initech", "access_keys_file": str(keys)},
        ]
        for tenant in tenants:
            tenant.update(overrides.pop(str(tenant["name"]), {}))
        return make_settings(tenants=tenants, **overrides)

    return build


# --- keys -> tenant -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "tenant"),
    [
        pytest.param(ACCESS_KEY, "default", id="default-tenant"),
        pytest.param(ACME_KEY, "acme", id="clear"),
        pytest.param(ACME_KEY_2, "acme", id="clear-second"),
        pytest.param(GLOBEX_KEY, "globex", id="sha256-digest-uppercase"),
        pytest.param(INITECH_KEYS[0], "initech", id="file-first"),
        pytest.param(INITECH_KEYS[1], "initech", id="file-last-no-newline"),
    ],
)
def test_each_key_form_maps_to_its_tenant(three_tenants: Callable[..., Settings], key: str, tenant: str) -> None:
    settings = three_tenants(otlp_traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")
    assert AccessKeys.from_settings(settings).tenant_of(f"Bearer {key}") == tenant
    with TestClient(app=create_app(settings)) as client:
        response = client.post("/v1/traces", content=body(workflow_run()), headers=auth(key))
        assert (response.status_code, response.json()) == (200, OK)
    assert tenant_of_rows(settings) == [(tenant, 1)]


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(hashlib.sha256(GLOBEX_KEY.encode()).hexdigest(), id="the-digest-itself"),
        pytest.param("# initech keys", id="comment-line-of-the-file"),
        pytest.param(f"  {INITECH_KEYS[0]}  x", id="file-key-with-junk"),
        pytest.param(ACME_KEY.upper(), id="case-changed"),
    ],
)
def test_near_miss_keys_are_refused(three_tenants: Callable[..., Settings], key: str) -> None:
    settings = three_tenants(otlp_traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")
    with TestClient(app=create_app(settings)) as client:
        response = client.post("/v1/traces", content=body(workflow_run()), headers=auth(key))
    assert response.status_code == 401


def test_only_digests_are_kept_in_memory(three_tenants: Callable[..., Settings]) -> None:
    keys = AccessKeys.from_settings(three_tenants())
    kept = repr(vars(keys))
    for key in (ACCESS_KEY, ACME_KEY, GLOBEX_KEY, *INITECH_KEYS):
        assert key not in kept
    assert len(keys) == 6


# --- export per tenant ----------------------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[tuple[RecordingReceiver, RecordingReceiver]]:
    with RecordingReceiver() as first, RecordingReceiver() as second:
        yield first, second


def test_tenants_reach_only_their_own_backend(
    make_settings: Callable[..., Settings],
    receiver: RecordingReceiver,
    receivers: tuple[RecordingReceiver, RecordingReceiver],
) -> None:
    """acme -> its own HTTP receiver, globex -> its own gRPC receiver, hooli and default -> the shared one."""
    acme_rx, globex_rx = receivers
    settings = make_settings(
        otlp_traces_endpoint=receiver.http_endpoint,
        otlp_headers={"X-Scope-OrgID": "shared", "X-Global": "everyone"},
        service_name="dynamiq-default",
        resource_attributes={"deployment.environment.name": "shared-env", "team": "platform"},
        tenants=[
            {
                "name": "acme",
                "access_keys": [ACME_KEY],
                "otlp_traces_endpoint": acme_rx.http_endpoint,
                "otlp_headers": {"X-Scope-OrgID": "acme"},
                "resource_attributes": {
                    "service.name": "acme-agents",
                    "openinference.project.name": "acme-project",
                    "deployment.environment.name": "acme-prod",
                },
            },
            {
                "name": "globex",
                "access_keys": [GLOBEX_KEY],
                "otlp_protocol": "grpc",
                "otlp_traces_endpoint": globex_rx.grpc_endpoint,
                "otlp_headers": {"X-Scope-OrgID": "globex"},
                "resource_attributes": {"service.name": "globex-svc"},
            },
            {
                "name": "hooli",
                "access_keys": ["hooli-key-0001"],
                "otlp_headers": {"X-Scope-OrgID": "hooli"},
                "resource_attributes": {"service.name": "hooli-svc"},
            },
        ],
    )
    sent = {"default": ACCESS_KEY, "acme": ACME_KEY, "globex": GLOBEX_KEY, "hooli": "hooli-key-0001"}
    with TestClient(app=create_app(settings)) as client:
        for _ in range(2):  # interleaved, so one export request could mix tenants if it were wrong
            for tenant, key in sent.items():
                run = workflow_run(id=str(uuid.uuid4()), name=f"run-of-{tenant}")
                assert client.post("/v1/traces", content=body(run), headers=auth(key)).status_code == 200
        acme_rx.wait_for_spans(2, timeout=15)
        globex_rx.wait_for_spans(2, timeout=15)
        receiver.wait_for_spans(4, timeout=15)
        time.sleep(0.3)  # a stray extra request would arrive now

    def names(rx: RecordingReceiver) -> list[str]:
        return sorted(span.span.name for span in rx.spans())

    assert names(acme_rx) == ["run-of-acme"] * 2
    assert names(globex_rx) == ["run-of-globex"] * 2
    assert names(receiver) == ["run-of-default"] * 2 + ["run-of-hooli"] * 2

    [acme_span, _] = acme_rx.spans()
    assert acme_span.resource_attributes["service.name"] == "acme-agents"
    assert acme_span.resource_attributes["openinference.project.name"] == "acme-project"
    assert acme_span.resource_attributes["deployment.environment.name"] == "acme-prod"
    assert acme_span.resource_attributes["team"] == "platform", "global resource attributes are inherited"
    [globex_span, _] = globex_rx.spans()
    assert globex_span.transport == "grpc"
    assert globex_span.resource_attributes["service.name"] == "globex-svc"
    assert globex_span.resource_attributes["openinference.project.name"] == "globex-svc"
    assert globex_span.resource_attributes["deployment.environment.name"] == "shared-env"

    for request in acme_rx.requests():
        assert (request.headers["x-scope-orgid"], request.headers["x-global"]) == ("acme", "everyone")
    for request in globex_rx.requests():
        assert (request.headers["x-scope-orgid"], request.headers["x-global"]) == ("globex", "everyone")
    expected = {"dynamiq-default": ("shared", "run-of-default"), "hooli-svc": ("hooli", "run-of-hooli")}
    for request in receiver.requests():
        services = {span.resource_attributes["service.name"] for span in request.spans()}
        assert len(services) == 1, "one export request never mixes tenants"
        org, name = expected[services.pop()]
        assert request.headers["x-scope-orgid"] == org
        assert {span.span.name for span in request.spans()} == {name}


def test_a_tenant_backend_down_does_not_hold_back_the_others(
    make_settings: Callable[..., Settings], receiver: RecordingReceiver
) -> None:
    settings = make_settings(
        otlp_traces_endpoint=receiver.http_endpoint,
        tenants=[
            {
                "name": "acme",
                "access_keys": [ACME_KEY],
                "otlp_traces_endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
            }
        ],
    )
    with TestClient(app=create_app(settings)) as client:
        for key, name in ((ACME_KEY, "acme-run"), (ACCESS_KEY, "default-run")):
            run = workflow_run(id=str(uuid.uuid4()), name=name)
            assert client.post("/v1/traces", content=body(run), headers=auth(key)).status_code == 200
        [span] = receiver.wait_for_spans(1, timeout=15)
        assert span.span.name == "default-run"
        store = client.app.state.runtime.store
        deadline = time.monotonic() + 10
        while store.stats().batches > 1 and time.monotonic() < deadline:  # the ack follows the export
            time.sleep(0.02)
        assert store.stats().batches == 1, "acme's batch waits for its backend"


# --- rate limits ----------------------------------------------------------------------------------

RATE_LIMITED = {
    "error": {
        "code": "too_many_requests",
        "message": "Too Many Requests",
        "details": {"runs": "rate limit of tenant 'acme' reached"},
    }
}


def test_rate_limit_gives_429_then_accepts_after_waiting(three_tenants: Callable[..., Settings]) -> None:
    settings = three_tenants(
        otlp_traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
        acme={"rate_limit_runs_per_second": 1, "rate_limit_burst": 2},
    )
    two = body(workflow_run(id="a"), workflow_run(id="b"))
    one = body(workflow_run(id="c"))
    with TestClient(app=create_app(settings)) as client:
        first = client.post("/v1/traces", content=two, headers=auth(ACME_KEY))
        assert (first.status_code, first.json()) == (200, OK)
        refused = client.post("/v1/traces", content=one, headers=auth(ACME_KEY))
        assert (refused.status_code, refused.json()) == (429, RATE_LIMITED)
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2
        for key in (GLOBEX_KEY, INITECH_KEYS[0], ACCESS_KEY):  # the other tenants are not limited by acme
            assert client.post("/v1/traces", content=two, headers=auth(key)).status_code == 200
        time.sleep(retry_after + 0.1)
        again = client.post("/v1/traces", content=one, headers=auth(ACME_KEY))
        assert (again.status_code, again.json()) == (200, OK)
    assert [row for row in tenant_of_rows(settings) if row[0] == "acme"] == [("acme", 2), ("acme", 1)]


def test_default_tenant_rate_limit(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        otlp_traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",
        rate_limit_runs_per_second=0.5,
        rate_limit_burst=1,
    )
    with TestClient(app=create_app(settings)) as client:
        assert client.post("/v1/traces", content=body(workflow_run()), headers=auth(ACCESS_KEY)).status_code == 200
        refused = client.post("/v1/traces", content=body(workflow_run()), headers=auth(ACCESS_KEY))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["details"] == {"runs": "rate limit of tenant 'default' reached"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "steps"),
    [
        # (seconds to advance, runs in the batch, expected Retry-After or None when accepted)
        pytest.param(2, 4, [(0, 4, None), (0, 1, 1), (0.5, 1, None), (0, 1, 1), (10, 4, None)], id="refill"),
        pytest.param(1, 0, [(0, 10, None), (0, 1, 1), (0.5, 1, 1), (0.5, 1, None)], id="burst-defaults-to-10s"),
        pytest.param(1, 2, [(0, 5, None), (0, 1, 4), (3, 1, 1), (1, 1, None)], id="big-batch-leaves-a-debt"),
        pytest.param(0.125, 1, [(0, 1, None), (0, 1, 8), (7, 1, 1), (1, 1, None)], id="slow-rate"),
        pytest.param(1000, 1, [(0, 1, None), (0, 1, 1)], id="retry-after-at-least-1s"),
    ],
)
def test_token_bucket(rate: float, burst: int, steps: list[tuple[float, int, int | None]]) -> None:
    clock = FakeClock()
    limits = RateLimits({"t": (rate, burst), "free": (0, 0)}, clock=clock)
    for index, (advance, runs, expected) in enumerate(steps):
        clock.now += advance
        assert limits.retry_after("t", runs) == expected, f"step {index}"
        assert limits.retry_after("free", 10**6) is None


# --- configuration errors -------------------------------------------------------------------------


def _load(tmp_path: Path, tenants: list[dict[str, Any]], **more: Any) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", access_keys=[ACCESS_KEY], tenants=tenants, **more)


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        pytest.param(
            [{"name": "a", "access_keys": ["k1"]}, {"name": "a", "access_keys": ["k2"]}],
            "tenant names must be unique and not 'default'",
            id="duplicate-names",
        ),
        pytest.param(
            [{"name": "default", "access_keys": ["k1"]}],
            "tenant names must be unique and not 'default'",
            id="reserved-name",
        ),
        pytest.param([{"name": "acme"}], "tenant 'acme' has no access key", id="no-key"),
        pytest.param(
            [{"name": "acme", "access_keys": [], "access_key_sha256": []}],
            "tenant 'acme' has no access key",
            id="empty-key-lists",
        ),
        pytest.param(
            [{"name": "acme", "access_key_sha256": ["abc123"]}],
            "each entry must be 64 hex digits (sha256 of the key)",
            id="digest-too-short",
        ),
        pytest.param(
            [{"name": "acme", "access_key_sha256": ["g" * 64]}],
            "each entry must be 64 hex digits (sha256 of the key)",
            id="digest-not-hex",
        ),
        pytest.param(
            [{"name": "acme", "access_keys_file": "/nonexistent/dynamiq-otel/keys"}],
            "access_keys_file /nonexistent/dynamiq-otel/keys does not exist",
            id="missing-key-file",
        ),
        pytest.param(
            [{"name": "acme corp", "access_keys": ["k"]}],
            "must be 1-64 letters, digits, '_', '.' or '-'",
            id="bad-name",
        ),
        pytest.param(
            [{"name": "acme", "access_keys": ["k"], "otlp_traces_endpoint": "grpc://tempo:4317"}],
            "must be a URL starting with http:// or https://",
            id="bad-endpoint",
        ),
    ],
)
def test_tenant_config_errors_are_clear(tmp_path: Path, tenants: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(tmp_path, tenants)
    text = str(caught.value)
    assert message in text
    assert "tenant" in text
    assert len(text.splitlines()) == 1


def test_tenants_from_the_environment_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMIQ_OTEL_TENANTS", '[{"name": "acme", "access_keys": ["acme-key-0001"]}]')
    settings = load_settings(None, data_dir=tmp_path / "data")
    assert AccessKeys.from_settings(settings).tenant_of(f"Bearer {ACME_KEY}") == "acme"


@pytest.mark.parametrize(
    ("tenants", "wanted"),
    [
        pytest.param(
            [{"name": "acme", "access_keys": ["k"]}, {"name": "globex", "access_key_sha256": ["abc"]}],
            ("tenants[1]", "access_key_sha256"),
            id="bad-digest-of-second-tenant",
        ),
        pytest.param([{"name": "acme", "acces_keys": ["k"]}], ("tenants[0]", "acces_keys"), id="misspelt-field"),
        pytest.param(
            [{"name": "acme", "access_keys": ["k"], "rate_limit_runs_per_second": -1}],
            ("tenants[0]", "rate_limit_runs_per_second"),
            id="negative-rate",
        ),
    ],
)
def test_tenant_config_errors_name_the_tenant_and_field(
    tmp_path: Path, tenants: list[dict[str, Any]], wanted: tuple[str, str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(tmp_path, tenants)
    for part in wanted:
        assert part in str(caught.value)


@pytest.mark.parametrize(
    ("tenants", "default_keys"),
    [
        pytest.param(
            [{"name": "acme", "access_keys": ["shared"]}, {"name": "globex", "access_keys": ["shared"]}],
            [ACCESS_KEY],
            id="two-tenants",
        ),
        pytest.param([{"name": "acme", "access_keys": [ACCESS_KEY]}], [ACCESS_KEY], id="tenant-and-default"),
        pytest.param(
            [
                {"name": "acme", "access_keys": ["shared"]},
                {"name": "globex", "access_key_sha256": [hashlib.sha256(b"shared").hexdigest()]},
            ],
            [ACCESS_KEY],
            id="clear-and-digest",
        ),
    ],
)
def test_a_key_shared_by_two_tenants_is_a_config_error(
    tmp_path: Path, tenants: list[dict[str, Any]], default_keys: list[str]
) -> None:
    with pytest.raises(SettingsError, match="more than one tenant"):
        load_settings(None, data_dir=tmp_path / "data", access_keys=default_keys, tenants=tenants)


def test_a_key_file_without_keys_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-secret"
    empty.write_text("# rotated out\n\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="has no access key"):
        _load(tmp_path, [{"name": "acme", "access_keys_file": str(empty)}])
