"""Settings: sources and their precedence, the OpenTelemetry variables, errors a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from config import MASK, Settings, SettingsError, load_settings, masked

KEY_ENV = {"DYNAMIQ_OTEL_ACCESS_KEYS": "k"}
"""An access key, so that a test about something else is not refused for lack of one."""

PROTOCOL_VARS = "DYNAMIQ_OTEL_OTLP_PROTOCOL or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL"
TIMEOUT_VARS = "DYNAMIQ_OTEL_OTLP_TIMEOUT or OTEL_EXPORTER_OTLP_TRACES_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT"
COMPRESSION_VARS = (
    "DYNAMIQ_OTEL_OTLP_COMPRESSION or OTEL_EXPORTER_OTLP_TRACES_COMPRESSION or OTEL_EXPORTER_OTLP_COMPRESSION"
)
HEADERS_VARS = "DYNAMIQ_OTEL_OTLP_HEADERS or OTEL_EXPORTER_OTLP_TRACES_HEADERS or OTEL_EXPORTER_OTLP_HEADERS"
NO_KEY = (
    "invalid settings: no access key configured: set DYNAMIQ_OTEL_ACCESS_KEYS (or access_keys in the config "
    "file); for a local trial only, set auth_disabled: true"
)


def setenv(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def write_yaml(tmp_path: Path, text: str, name: str = "dynamiq-otel.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(config_file: Path | None = None, **overrides: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(config_file, **overrides)
    return str(caught.value)


# --- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "env", "field", "expected"),
    [
        pytest.param("", {}, "service_name", "dynamiq", id="default"),
        pytest.param("service_name: from-yaml\n", {}, "service_name", "from-yaml", id="yaml-beats-default"),
        pytest.param(
            "service_name: from-yaml\n",
            {"OTEL_SERVICE_NAME": "from-otel"},
            "service_name",
            "from-otel",
            id="otel-beats-yaml",
        ),
        pytest.param(
            "service_name: from-yaml\n",
            {"OTEL_SERVICE_NAME": "from-otel", "DYNAMIQ_OTEL_SERVICE_NAME": "from-dynamiq"},
            "service_name",
            "from-dynamiq",
            id="dynamiq-beats-otel-and-yaml",
        ),
        pytest.param(
            "service_name: from-yaml\n",
            {"DYNAMIQ_OTEL_SERVICE_NAME": "from-dynamiq"},
            "service_name",
            "from-dynamiq",
            id="dynamiq-beats-yaml",
        ),
        pytest.param("", {"OTEL_SERVICE_NAME": "   "}, "service_name", "dynamiq", id="blank-otel-var-ignored"),
        pytest.param("otlp_protocol: grpc\n", {}, "otlp_protocol", "grpc", id="protocol-yaml"),
        pytest.param(
            "otlp_protocol: grpc\n",
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "otlp_protocol",
            "http/protobuf",
            id="protocol-otel-beats-yaml",
        ),
        pytest.param(
            "otlp_protocol: http/protobuf\n",
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "DYNAMIQ_OTEL_OTLP_PROTOCOL": "grpc"},
            "otlp_protocol",
            "grpc",
            id="protocol-dynamiq-beats-otel",
        ),
        pytest.param(
            "otlp_timeout: 1000\n", {"OTEL_EXPORTER_OTLP_TIMEOUT": "2000"}, "otlp_timeout", 2000, id="timeout-otel"
        ),
        pytest.param(
            "otlp_timeout: 1000\n",
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "2000", "DYNAMIQ_OTEL_OTLP_TIMEOUT": "3000"},
            "otlp_timeout",
            3000,
            id="timeout-dynamiq",
        ),
        pytest.param("port: 9000\n", {}, "port", 9000, id="port-yaml"),
        pytest.param("port: 9000\n", {"DYNAMIQ_OTEL_PORT": "9001"}, "port", 9001, id="port-env"),
        pytest.param("access_keys: [from-yaml]\n", {}, "access_keys", ["from-yaml"], id="keys-yaml"),
        pytest.param(
            "access_keys: [from-yaml]\n",
            {"DYNAMIQ_OTEL_ACCESS_KEYS": "from-env"},
            "access_keys",
            ["from-env"],
            id="keys-env-beats-yaml",
        ),
    ],
)
def test_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    yaml_text: str,
    env: dict[str, str],
    field: str,
    expected: Any,
) -> None:
    if "access_keys" not in yaml_text:
        yaml_text += "access_keys: [k]\n"
    setenv(monkeypatch, env)
    settings = load_settings(write_yaml(tmp_path, yaml_text))
    value = getattr(settings, field)
    if field == "access_keys":
        value = [key.get_secret_value() for key in value]
    assert value == expected


def test_overrides_beat_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the command line passes (``--host``, ``--port``) wins over the environment and the file."""
    setenv(monkeypatch, {"DYNAMIQ_OTEL_PORT": "9001", "DYNAMIQ_OTEL_HOST": "10.0.0.1", **KEY_ENV})
    settings = load_settings(write_yaml(tmp_path, "port: 9000\nhost: 10.0.0.2\n"), port=9002, host="127.0.0.1")
    assert (settings.host, settings.port) == ("127.0.0.1", 9002)


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        pytest.param({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_protocol", "grpc", id="protocol-generic"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            "otlp_protocol",
            "http/protobuf",
            id="protocol-traces-wins",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "otlp_protocol",
            "grpc",
            id="protocol-traces-wins-other-way",
        ),
        pytest.param({"OTEL_EXPORTER_OTLP_HEADERS": "a=1"}, "otlp_headers", {"a": "1"}, id="headers-generic"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "c=3"},
            "otlp_headers",
            {"c": "3"},
            id="headers-traces-wins-whole",
        ),
        pytest.param({"OTEL_EXPORTER_OTLP_TIMEOUT": "1500"}, "otlp_timeout", 1500, id="timeout-generic"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "1500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500"},
            "otlp_timeout",
            2500,
            id="timeout-traces-wins",
        ),
        pytest.param({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, "otlp_compression", "gzip", id="compression-generic"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"},
            "otlp_compression",
            "none",
            id="compression-traces-wins",
        ),
        pytest.param({}, "otlp_insecure", None, id="insecure-unset"),
        pytest.param({"OTEL_EXPORTER_OTLP_INSECURE": "true"}, "otlp_insecure", True, id="insecure-generic"),
        pytest.param({"OTEL_EXPORTER_OTLP_INSECURE": "TRUE"}, "otlp_insecure", True, id="insecure-case"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false"},
            "otlp_insecure",
            False,
            id="insecure-traces-wins",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "  ", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
            "otlp_insecure",
            True,
            id="blank-traces-var-falls-back-to-generic",
        ),
    ],
)
def test_traces_variable_beats_generic(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: Any
) -> None:
    setenv(monkeypatch, {**KEY_ENV, **env})
    assert getattr(load_settings(), field) == expected


def test_certificate_variables_traces_beats_generic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca-generic", "ca-traces", "key", "cert")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    setenv(
        monkeypatch,
        {
            **KEY_ENV,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(files["ca-generic"]),
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(files["ca-traces"]),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(files["key"]),
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(files["cert"]),
        },
    )
    settings = load_settings()
    assert (settings.otlp_certificate, settings.otlp_client_key, settings.otlp_client_certificate) == (
        files["ca-traces"],
        files["key"],
        files["cert"],
    )


# --- the traces endpoint ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "http://localhost:4318/v1/traces", id="http-default"),
        pytest.param({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http://localhost:4317", id="grpc-default"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            "http://collector:4318/v1/traces",
            id="http-generic-appended",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/"},
            "https://collector:4318/v1/traces",
            id="http-generic-trailing-slash",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gateway.example/otlp"},
            "https://gateway.example/otlp/v1/traces",
            id="http-generic-with-path",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
            "http://collector:4317",
            id="grpc-generic-as-is",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom/path"},
            "http://collector:4318/custom/path",
            id="http-traces-as-is",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
            },
            "http://traces:4318/v1/traces",
            id="traces-beats-generic",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces:4317"},
            "https://traces:4317",
            id="grpc-traces-as-is",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_OTLP_ENDPOINT": "http://mine:4318"},
            "http://mine:4318/v1/traces",
            id="dynamiq-generic-appended",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, "http://localhost:4318/v1/traces", id="empty-variable-ignored"
        ),
    ],
)
def test_traces_endpoint(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    setenv(monkeypatch, {**KEY_ENV, **env})
    assert load_settings().traces_endpoint == expected


# --- key=value lists: headers and resource attributes ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("a=b", {"a": "b"}, id="one"),
        pytest.param(
            "Authorization=Bearer%20tok,X-Scope-OrgID=tenant-1",
            {"authorization": "Bearer tok", "x-scope-orgid": "tenant-1"},
            id="percent-decoded-names-lowercased",
        ),
        pytest.param(" a = b , c=d ", {"a": "b", "c": "d"}, id="spaces-stripped"),
        pytest.param("a=b%2Cc%3Dd", {"a": "b,c=d"}, id="encoded-comma-and-equals"),
        pytest.param("a=x=y", {"a": "x=y"}, id="equals-in-value"),
        pytest.param("a=1,,b=2,", {"a": "1", "b": "2"}, id="empty-entries-skipped"),
        pytest.param("a=", {"a": ""}, id="empty-value"),
        pytest.param("a=%E2%9C%93", {"a": "\u2713"}, id="utf8-percent"),
    ],
)
def test_otlp_headers_parsing(monkeypatch: pytest.MonkeyPatch, raw: str, expected: dict[str, str]) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_HEADERS": raw})
    assert load_settings().otlp_headers == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            "a=b,c",
            f"invalid setting 'otlp_headers' (environment: {HEADERS_VARS}): "
            "OTEL_EXPORTER_OTLP_HEADERS: entry 'c' is not of the form key=value",
            id="entry-without-equals",
        ),
        pytest.param(
            "=b",
            f"invalid setting 'otlp_headers' (environment: {HEADERS_VARS}): "
            "OTEL_EXPORTER_OTLP_HEADERS: entry '=b' is not of the form key=value",
            id="no-key",
        ),
        pytest.param(
            "bad name=1",
            f"invalid setting 'otlp_headers' (environment: {HEADERS_VARS}): 'bad name' is not a valid header name",
            id="bad-header-name",
        ),
        pytest.param(
            "a%0Ab=1",
            f"invalid setting 'otlp_headers' (environment: {HEADERS_VARS}): 'a\\nb' is not a valid header name",
            id="newline-in-name",
        ),
    ],
)
def test_otlp_headers_bad_entries(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_HEADERS": raw})
    assert load_error() == expected


@pytest.mark.parametrize(
    ("env", "expected_service", "expected_attributes"),
    [
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=ml%20ops"},
            "dynamiq",
            {"deployment.environment": "prod", "team": "ml ops"},
            id="attributes",
        ),
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource,env=dev"},
            "from-resource",
            {"service.name": "from-resource", "env": "dev"},
            id="service-name-from-attributes",
        ),
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource", "OTEL_SERVICE_NAME": "from-variable"},
            "from-variable",
            {"service.name": "from-resource"},
            id="otel-service-name-wins",
        ),
        pytest.param(
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource", "DYNAMIQ_OTEL_SERVICE_NAME": "from-dynamiq"},
            "from-dynamiq",
            {"service.name": "from-resource"},
            id="dynamiq-service-name-wins",
        ),
        pytest.param({"OTEL_RESOURCE_ATTRIBUTES": ""}, "dynamiq", {}, id="empty"),
    ],
)
def test_resource_attributes(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected_service: str,
    expected_attributes: dict[str, str],
) -> None:
    setenv(monkeypatch, {**KEY_ENV, **env})
    settings = load_settings()
    assert (settings.service_name, settings.resource_attributes) == (expected_service, expected_attributes)


def test_resource_attributes_service_name_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource"})
    assert load_settings(write_yaml(tmp_path, "service_name: from-yaml\n")).service_name == "from-resource"


def test_resource_attributes_bad_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_RESOURCE_ATTRIBUTES": "env=dev,oops"})
    assert load_error() == (
        "invalid setting 'resource_attributes' (environment: DYNAMIQ_OTEL_RESOURCE_ATTRIBUTES or "
        "OTEL_RESOURCE_ATTRIBUTES): OTEL_RESOURCE_ATTRIBUTES: entry 'oops' is not of the form key=value"
    )


# --- lists and paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "yaml_text", "expected"),
    [
        pytest.param({"DYNAMIQ_OTEL_ACCESS_KEYS": "a, b"}, "", ["a", "b"], id="env-comma-space"),
        pytest.param({"DYNAMIQ_OTEL_ACCESS_KEYS": " a ,,b, "}, "", ["a", "b"], id="env-empty-parts-dropped"),
        pytest.param({"DYNAMIQ_OTEL_ACCESS_KEYS": "single"}, "", ["single"], id="env-one"),
        pytest.param({}, "access_keys: [a, b]\n", ["a", "b"], id="yaml-list"),
        pytest.param({}, "access_keys: 'a, b'\n", ["a", "b"], id="yaml-comma-string"),
    ],
)
def test_access_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], yaml_text: str, expected: list[str]
) -> None:
    setenv(monkeypatch, env)
    settings = load_settings(write_yaml(tmp_path, yaml_text))
    assert [key.get_secret_value() for key in settings.access_keys] == expected


def test_redact_keys_comma_split(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, {**KEY_ENV, "DYNAMIQ_OTEL_REDACT_KEYS": "token, secret"})
    assert load_settings().redact_keys == ["token", "secret"]


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, {**KEY_ENV, "DYNAMIQ_OTEL_DATA_DIR": str(tmp_path / "state")})
    settings = load_settings(write_yaml(tmp_path, "data_dir: /elsewhere\n"))
    assert (settings.data_dir, settings.store_path) == (tmp_path / "state", tmp_path / "state" / "queue.sqlite3")
    assert not (tmp_path / "state").exists(), "loading settings must not create the store"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    settings = load_settings()
    assert {
        name: getattr(settings, name)
        for name in (
            "host",
            "port",
            "log_level",
            "auth_disabled",
            "max_body_bytes",
            "max_runs_per_batch",
            "accept_unfinished_runs",
            "data_dir",
            "store_sync",
            "otlp_protocol",
            "otlp_timeout",
            "otlp_compression",
            "otlp_insecure",
            "service_name",
            "effective_project_name",
            "traces_endpoint",
            "workers",
            "export_processes",
            "export_nice",
        )
    } == {
        "host": "127.0.0.1",
        "port": 8080,
        "log_level": "info",
        "auth_disabled": False,
        "max_body_bytes": 32 * 1024 * 1024,
        "max_runs_per_batch": 20_000,
        "accept_unfinished_runs": False,
        "data_dir": Path("dynamiq-otel-data"),
        "store_sync": "full",
        "otlp_protocol": "http/protobuf",
        "otlp_timeout": 10_000,
        "otlp_compression": "none",
        "otlp_insecure": None,
        "service_name": "dynamiq",
        "effective_project_name": "dynamiq",
        "traces_endpoint": "http://localhost:4318/v1/traces",
        "workers": 1,
        "export_processes": 0,
        "export_nice": 0,
    }


# --- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "yaml_text", "expected"),
    [
        pytest.param(
            {"DYNAMIQ_OTEL_PORT": "0"},
            "",
            "invalid setting 'port' (environment: DYNAMIQ_OTEL_PORT): Input should be greater than or equal to 1",
            id="port-zero",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_PORT": "eighty"},
            "",
            "invalid setting 'port' (environment: DYNAMIQ_OTEL_PORT): "
            "Input should be a valid integer, unable to parse string as an integer",
            id="port-not-a-number",
        ),
        pytest.param(
            {},
            "port: 70000\n",
            "invalid setting 'port' (environment: DYNAMIQ_OTEL_PORT): Input should be less than or equal to 65535",
            id="port-yaml-too-big",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_LOG_LEVEL": "loud"},
            "",
            "invalid setting 'log_level' (environment: DYNAMIQ_OTEL_LOG_LEVEL): "
            "Input should be 'debug', 'info', 'warning' or 'error'",
            id="log-level",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_AUTH_DISABLED": "maybe"},
            "",
            "invalid setting 'auth_disabled' (environment: DYNAMIQ_OTEL_AUTH_DISABLED): "
            "Input should be a valid boolean, unable to interpret input",
            id="bool",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_MAX_BODY_BYTES": "100"},
            "",
            "invalid setting 'max_body_bytes' (environment: DYNAMIQ_OTEL_MAX_BODY_BYTES): "
            "Input should be greater than or equal to 1024",
            id="max-body-too-small",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_STORE_SYNC": "off"},
            "",
            "invalid setting 'store_sync' (environment: DYNAMIQ_OTEL_STORE_SYNC): Input should be 'full' or 'normal'",
            id="store-sync",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_SERVICE_NAME": ""},
            "",
            "invalid setting 'service_name' (environment: DYNAMIQ_OTEL_SERVICE_NAME or OTEL_SERVICE_NAME): "
            "String should have at least 1 character",
            id="service-name-empty",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "",
            f"invalid setting 'otlp_protocol' (environment: {PROTOCOL_VARS}): "
            "Input should be 'grpc' or 'http/protobuf'",
            id="otel-protocol",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"},
            "",
            f"invalid setting 'otlp_timeout' (environment: {TIMEOUT_VARS}): "
            "Input should be a valid integer, unable to parse string as an integer",
            id="otel-timeout",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"},
            "",
            f"invalid setting 'otlp_compression' (environment: {COMPRESSION_VARS}): Input should be 'none' or 'gzip'",
            id="otel-compression",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
            "",
            "invalid setting 'otlp_endpoint' (environment: DYNAMIQ_OTEL_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT): "
            "must be a URL starting with http:// or https://",
            id="otel-endpoint-no-scheme",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://collector"},
            "",
            "invalid setting 'otlp_traces_endpoint' "
            "(environment: DYNAMIQ_OTEL_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): "
            "must be a URL starting with http:// or https://",
            id="otel-traces-endpoint-scheme",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_INSECURE": "yes"},
            "",
            "invalid setting 'otlp_insecure' (environment: DYNAMIQ_OTEL_OTLP_INSECURE or "
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE or OTEL_EXPORTER_OTLP_INSECURE): "
            "OTEL_EXPORTER_OTLP_INSECURE: must be true or false",
            id="otel-insecure",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_RETRY_INITIAL_BACKOFF": "5", "DYNAMIQ_OTEL_RETRY_MAX_BACKOFF": "1"},
            "",
            "invalid settings: retry_max_backoff must not be below retry_initial_backoff",
            id="backoff-combination",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_PORT": "0", "DYNAMIQ_OTEL_LOG_LEVEL": "loud", "OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"},
            "",
            "invalid setting 'port' (environment: DYNAMIQ_OTEL_PORT): Input should be greater than or equal to 1\n"
            "invalid setting 'log_level' (environment: DYNAMIQ_OTEL_LOG_LEVEL): "
            "Input should be 'debug', 'info', 'warning' or 'error'\n"
            f"invalid setting 'otlp_compression' (environment: {COMPRESSION_VARS}): Input should be 'none' or 'gzip'",
            id="three-problems-three-lines",
        ),
        pytest.param(
            {"DYNAMIQ_OTEL_EXPORT_PROCESSES": "65"},
            "",
            "invalid setting 'export_processes' (environment: DYNAMIQ_OTEL_EXPORT_PROCESSES): "
            "Input should be less than or equal to 64",
            id="export-processes-above-64",
        ),
        pytest.param(
            {},
            "export_nice: 20\n",
            "invalid setting 'export_nice' (environment: DYNAMIQ_OTEL_EXPORT_NICE): "
            "Input should be less than or equal to 19",
            id="export-nice-above-19",
        ),
        pytest.param(
            {},
            "acess_keys: [k]\n",
            "unknown setting 'acess_keys': check the spelling against the configuration reference",
            id="unknown-yaml-key",
        ),
    ],
)
def test_bad_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], yaml_text: str, expected: str
) -> None:
    setenv(monkeypatch, {**KEY_ENV, **env})
    message = load_error(write_yaml(tmp_path, yaml_text))
    assert message == expected


def test_client_key_without_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key)})
    assert load_error() == "invalid settings: otlp_client_key and otlp_client_certificate must be set together"


def test_missing_certificate_names_setting_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.pem"
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(missing)})
    message = load_error()
    assert message.count("\n") == 0
    assert "'otlp_certificate'" in message
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in message
    assert str(missing) in message


def test_bad_otel_variable_reported_with_other_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_INSECURE": "yes", "DYNAMIQ_OTEL_PORT": "0"})
    lines = load_error().splitlines()
    assert len(lines) == 2
    assert any("'otlp_insecure'" in line and "OTEL_EXPORTER_OTLP_INSECURE" in line for line in lines)
    assert any("'port'" in line and "DYNAMIQ_OTEL_PORT" in line for line in lines)


# --- the config file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected_tail"),
    [
        pytest.param("- access_keys\n- k\n", "must hold a mapping of setting names to values", id="list"),
        pytest.param("just a string\n", "must hold a mapping of setting names to values", id="scalar"),
        pytest.param("42\n", "must hold a mapping of setting names to values", id="number"),
    ],
)
def test_yaml_not_a_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, expected_tail: str
) -> None:
    setenv(monkeypatch, KEY_ENV)
    path = write_yaml(tmp_path, yaml_text)
    assert load_error(path) == f"config file {path} {expected_tail}"


def test_yaml_syntax_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    path = write_yaml(tmp_path, "port: [8080\nhost: x\n")
    message = load_error(path)
    assert message.startswith(f"config file {path} is not valid YAML: ")
    assert "\n" not in message


def test_yaml_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"service_name: caf\xe9\n")
    message = load_error(path)
    assert message.startswith(f"config file {path} is not valid YAML: ")
    assert "\n" not in message


def test_empty_yaml_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    assert load_settings(write_yaml(tmp_path, "# nothing here\n")).port == 8080


@pytest.mark.parametrize("name", ["absent.yaml", "a-directory"], ids=["absent", "directory"])
def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    setenv(monkeypatch, KEY_ENV)
    (tmp_path / "a-directory").mkdir()
    path = tmp_path / name
    assert load_error(path) == f"config file {path} does not exist"


def test_yaml_values_of_every_kind(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "access_keys: [k1, k2]\n"
        "otlp_protocol: grpc\n"
        "otlp_endpoint: http://collector:4317\n"
        "otlp_headers: {X-Scope-OrgID: tenant-1}\n"
        "resource_attributes: {deployment.environment.name: production}\n"
        "redact_keys: [token]\n"
        "accept_unfinished_runs: true\n"
        "retry_initial_backoff: 0.5\n",
    )
    settings = load_settings(path)
    assert (
        settings.otlp_protocol,
        settings.traces_endpoint,
        settings.otlp_headers,
        settings.resource_attributes,
        settings.redact_keys,
        settings.accept_unfinished_runs,
        settings.retry_initial_backoff,
    ) == (
        "grpc",
        "http://collector:4317",
        {"x-scope-orgid": "tenant-1"},
        {"deployment.environment.name": "production"},
        ["token"],
        True,
        0.5,
    )


# --- access keys required --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "yaml_text"),
    [
        pytest.param({}, "", id="nothing"),
        pytest.param({"DYNAMIQ_OTEL_ACCESS_KEYS": ""}, "", id="empty-variable"),
        pytest.param({"DYNAMIQ_OTEL_ACCESS_KEYS": " , "}, "", id="only-commas"),
        pytest.param({}, "access_keys: []\n", id="empty-yaml-list"),
        pytest.param({"DYNAMIQ_OTEL_AUTH_DISABLED": "false"}, "", id="auth-explicitly-on"),
    ],
)
def test_no_access_key_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], yaml_text: str
) -> None:
    setenv(monkeypatch, env)
    assert load_error(write_yaml(tmp_path, yaml_text)) == NO_KEY


@pytest.mark.parametrize(
    ("env", "yaml_text"),
    [
        pytest.param({"DYNAMIQ_OTEL_AUTH_DISABLED": "true"}, "", id="env"),
        pytest.param({}, "auth_disabled: true\n", id="yaml"),
    ],
)
def test_auth_disabled_needs_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], yaml_text: str
) -> None:
    setenv(monkeypatch, env)
    settings = load_settings(write_yaml(tmp_path, yaml_text))
    assert (settings.auth_disabled, settings.access_keys) == (True, [])


def test_load_settings_returns_plain_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    assert type(load_settings()) is Settings


# --- masked ------------------------------------------------------------------------------------------


def test_masked_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        {
            "DYNAMIQ_OTEL_ACCESS_KEYS": "first-secret-key,second-secret-key",
            "OTEL_EXPORTER_OTLP_HEADERS": (
                "Authorization=Basic%20c2VjcmV0LWF1dGg=,X-Scope-OrgID=tenant-1,x-api-key=secret-api,"
                "Cookie=session-secret,x-token=secret-token,X-Custom=plain"
            ),
        },
    )
    data = masked(load_settings())
    assert (data["access_keys"], data["otlp_headers"]) == (
        [MASK, MASK],
        {
            "authorization": MASK,
            "x-scope-orgid": "tenant-1",
            "x-api-key": MASK,
            "cookie": MASK,
            "x-token": MASK,
            "x-custom": MASK,  # only known-public headers are shown
        },
    )
    text = json.dumps(data)
    for secret in ("first-secret-key", "second-secret-key", "c2VjcmV0LWF1dGg", "secret-api", "session-secret"):
        assert secret not in text
    assert (data["traces_endpoint"], data["effective_project_name"]) == ("http://localhost:4318/v1/traces", "dynamiq")


def test_masked_is_json_serialisable_with_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, KEY_ENV)
    data = masked(load_settings())
    assert set(data) == set(Settings.model_fields) | {"traces_endpoint", "effective_project_name"}
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("header", ["x-honeycomb-team", "uptrace-dsn"])
def test_masked_hides_vendor_credential_headers(monkeypatch: pytest.MonkeyPatch, header: str) -> None:
    setenv(monkeypatch, {**KEY_ENV, "OTEL_EXPORTER_OTLP_HEADERS": f"{header}=vendor-credential-123"})
    assert masked(load_settings())["otlp_headers"] == {header: MASK}
