"""The settings schema: every knob of dynamiq-otel, its default and its environment variable.

Sources, highest precedence first:

1. ``DYNAMIQ_OTEL_<NAME>`` environment variables (``DYNAMIQ_OTEL_ACCESS_KEYS``, ``DYNAMIQ_OTEL_DATA_DIR``, …);
2. the standard OpenTelemetry variables (``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``,
   ``OTEL_RESOURCE_ATTRIBUTES``), a signal-specific ``OTEL_EXPORTER_OTLP_TRACES_*`` winning over its
   generic ``OTEL_EXPORTER_OTLP_*`` twin, as the OpenTelemetry specification orders them;
3. the YAML configuration file (keys are the field names below);
4. the defaults below.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from config.otel_env import OtelEnvSource, parse_key_value_list
from config.tenants import DEFAULT_TENANT, TenantSettings
from mapping.model import DEFAULT_REDACT_KEYS

ENV_PREFIX = "DYNAMIQ_OTEL_"
"""Prefix of this service's own environment variables."""

MiB = 1024 * 1024


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _key_value_text(value: Any) -> Any:
    """Accept ``k1=v1,k2=v2`` (the OpenTelemetry format) or JSON text as well as a YAML mapping."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    return parse_key_value_list("", text)


def _split_csv(value: Any) -> Any:
    """Accept ``"a,b"`` (how environment variables carry lists) as well as a YAML list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _check_keys_unique(settings: Settings) -> None:
    """A key may belong to one tenant only: otherwise its batches would silently go to the first."""
    owners: dict[str, set[str]] = {}
    for key in settings.access_keys:
        owners.setdefault(_digest(key.get_secret_value()), set()).add(DEFAULT_TENANT)
    for tenant in settings.tenants:
        keys = [key.get_secret_value() for key in tenant.access_keys] + tenant.file_keys()
        for digest in [_digest(key) for key in keys] + list(tenant.access_key_sha256):
            owners.setdefault(digest, set()).add(tenant.name)
    shared = sorted({", ".join(sorted(names)) for names in owners.values() if len(names) > 1})
    if shared:
        raise ValueError("an access key is given to more than one tenant: " + "; ".join(shared))


class Settings(BaseSettings):
    """All settings. Field names are the YAML keys; ``DYNAMIQ_OTEL_<FIELD>`` is the variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    # --- server ---------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port the HTTP server listens on.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes serving requests, all sharing the store; with export_processes 0 "
        "each also exports in a background thread. On N cores: N workers and N export processes "
        "(docs/performance.md#sizing-a-replica).",
    )
    export_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that only export (map and send batches from the store), started and "
        "restarted by serve. 0: each worker exports in a thread, sharing Python's interpreter lock with "
        "requests. 1 or more: workers only validate and store, so requests answer faster.",
    )
    export_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Niceness export processes add to their own (0-19), so that on busy cores the kernel "
        "runs a waiting request first. 0 keeps serve's priority: a niced process holding the store's write "
        "lock can make requests wait (docs/performance.md).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level of log lines written to standard error."
    )
    request_read_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client may take to send a request's headers, and again its body; a slower "
        "client is disconnected (a stalled body gets 408).",
    )

    # --- authentication -------------------------------------------------------------------
    access_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted access keys (Authorization: Bearer <key>); comma-separated in the variable.",
    )
    tenants: list[TenantSettings] = Field(
        default_factory=list,
        description="Tenants with their own keys, resource attributes, export headers, endpoint and rate "
        "limit (see docs/operations.md); JSON in the variable.",
    )
    rate_limit_runs_per_second: float = Field(
        0, ge=0, description="Runs per second accepted from the default tenant; 0 is no limit."
    )
    rate_limit_burst: int = Field(0, ge=0, description="Runs the default tenant may send at once; default 10 s worth.")
    auth_disabled: bool = Field(
        False, description="Accept batches without any key. For local trials only; logged loudly."
    )

    # --- ingest ---------------------------------------------------------------------------
    max_body_bytes: int = Field(32 * MiB, ge=1024, description="Largest request body accepted; larger ones get 413.")
    max_runs_per_batch: int = Field(20_000, ge=1, description="Most runs one batch may hold; more give 413.")
    max_concurrent_requests: int = Field(
        32,
        ge=1,
        description="Batches one worker process validates and stores at once (counted once the body has "
        "arrived); one more gets 503 with Retry-After: 1 at once instead of queueing.",
    )
    accept_unfinished_runs: bool = Field(
        False,
        description="Accept runs whose end_time/status are null (node time-outs) and close them out "
        "instead of answering 400.",
    )

    # --- durable store --------------------------------------------------------------------
    data_dir: Path = Field(Path("dynamiq-otel-data"), description="Directory of the durable SQLite store.")
    store_max_bytes: int = Field(
        1024 * MiB, ge=MiB, description="Most bytes of accepted batches waiting for export; then 503."
    )
    store_max_batches: int = Field(100_000, ge=1, description="Most batches waiting for export; then 503.")
    store_sync: Literal["full", "normal"] = Field(
        "full",
        description="SQLite synchronous mode: 'full' survives power loss, 'normal' survives a crash "
        "of the process only.",
    )
    store_secure_delete: bool = Field(
        False,
        description="Overwrite the pages of exported batches with zeros (SQLite secure_delete) instead of "
        "leaving them to be reused by the next batches; doubles the bytes written per batch.",
    )

    # --- OTLP export (standard OTEL_EXPORTER_OTLP_* variables) ------------------------------
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field("http/protobuf", description="OTLP transport.")
    otlp_endpoint: str | None = Field(
        None,
        description="Base endpoint for all signals. For http/protobuf '/v1/traces' is appended.",
    )
    otlp_traces_endpoint: str | None = Field(
        None, description="Endpoint for traces, used exactly as given; wins over otlp_endpoint."
    )
    otlp_headers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="Extra headers (gRPC metadata) sent with every export."
    )
    otlp_timeout: int = Field(10_000, ge=1, description="Time limit of one export request, in milliseconds.")
    otlp_compression: Literal["none", "gzip"] = Field("none", description="Compression of export requests.")
    otlp_insecure: bool | None = Field(
        None,
        description="gRPC only: plaintext instead of TLS. Unset: plaintext for http:// endpoints.",
    )
    otlp_certificate: Path | None = Field(
        None, description="PEM file of CA certificates to trust for the backend's TLS certificate."
    )
    otlp_client_key: Path | None = Field(None, description="PEM private key for mutual TLS.")
    otlp_client_certificate: Path | None = Field(None, description="PEM client certificate for mutual TLS.")
    export_max_batches_per_request: int = Field(
        64, ge=1, description="Most stored batches combined into one export request."
    )
    export_max_request_bytes: int = Field(
        4 * MiB,
        ge=64 * 1024,
        description="Largest export request, in bytes (the gRPC receive limit of Collector, Jaeger and Tempo).",
    )
    export_max_claim_bytes: int = Field(
        4 * MiB,
        ge=1024,
        description="Most bytes of stored request bodies taken for one export round (at least one batch); "
        "bounds memory under a backlog.",
    )
    dedupe_window: float = Field(
        86_400.0,
        ge=0,
        description="Seconds a delivered run is remembered so a re-sent copy is not exported again; 0 turns this off.",
    )
    dedupe_max_runs: int = Field(1_000_000, ge=1, description="Most delivered runs remembered (oldest forgotten).")
    ready_export_max_age: float = Field(
        0,
        ge=0,
        description="If > 0, /readyz fails when batches wait and no export succeeded for this many seconds.",
    )
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds an export under way may take to finish at shutdown.")
    retry_initial_backoff: float = Field(
        1.0, gt=0, description="First wait after a retryable export failure, in seconds."
    )
    retry_max_backoff: float = Field(60.0, gt=0, description="Longest wait between export attempts, in seconds.")

    self_tracing: bool = Field(
        False,
        description="Trace the service's own work (ingest, export) to the same backend, as service.name dynamiq-otel.",
    )

    # --- resource ---------------------------------------------------------------------------
    service_name: str = Field("dynamiq", min_length=1, description="The resource's service.name.")
    resource_attributes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="Extra resource attributes (OTEL_RESOURCE_ATTRIBUTES)."
    )
    project_name: str | None = Field(
        None,
        description="openinference.project.name (the Phoenix project); defaults to service_name.",
    )

    # --- mapping ----------------------------------------------------------------------------
    attributes_dynamiq: bool = Field(True, description="Emit the lossless dynamiq.* attributes.")
    attributes_genai: bool = Field(
        True, description="Emit OpenTelemetry GenAI semantic-convention (gen_ai.*) attributes."
    )
    attributes_openinference: bool = Field(
        True, description="Emit OpenInference attributes (Phoenix, Arize, Langfuse)."
    )
    capture_content: bool = Field(
        True, description="Export inputs, outputs and messages. Off: only structure and numbers."
    )
    max_attribute_length: int = Field(
        32_768, ge=64, description="Longest string attribute value, in characters; longer is cut."
    )
    redact_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_REDACT_KEYS),
        description="Key-name fragments whose values are redacted (comma-separated in the variable).",
    )
    status_ok_on_success: bool = Field(
        False, description="Set status OK on succeeded runs (otherwise UNSET, as OTel recommends)."
    )
    span_names: Literal["dynamiq", "semconv"] = Field(
        "dynamiq",
        description="'dynamiq': the node names from your code; 'semconv': '<operation> <name>'.",
    )

    _split_lists = field_validator("access_keys", "redact_keys", mode="before")(_split_csv)
    _key_values = field_validator("otlp_headers", "resource_attributes", mode="before")(_key_value_text)

    @field_validator("otlp_endpoint", "otlp_traces_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be a URL starting with http:// or https://")
        return value

    @field_validator("otlp_headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
        return {name.lower(): header for name, header in value.items()}

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.retry_max_backoff < self.retry_initial_backoff:
            raise ValueError("retry_max_backoff must not be below retry_initial_backoff")
        if (self.otlp_client_key is None) != (self.otlp_client_certificate is None):
            raise ValueError("otlp_client_key and otlp_client_certificate must be set together")
        names = [tenant.name for tenant in self.tenants]
        if len(set(names)) != len(names) or DEFAULT_TENANT in names:
            raise ValueError(f"tenant names must be unique and not {DEFAULT_TENANT!r}")
        _check_keys_unique(self)
        if not self.access_keys and not self.tenants and not self.auth_disabled:
            raise ValueError(
                "no access key configured: set DYNAMIQ_OTEL_ACCESS_KEYS (or access_keys in the config "
                "file); for a local trial only, set auth_disabled: true"
            )
        if self.max_body_bytes > self.store_max_bytes:
            raise ValueError("max_body_bytes must not exceed store_max_bytes (such a batch could never be stored)")
        return self

    @field_validator("otlp_certificate", "otlp_client_key", "otlp_client_certificate")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: arguments, DYNAMIQ_OTEL_*, OTEL_*, YAML file, defaults."""
        return (
            init_settings,
            env_settings,
            OtelEnvSource(settings_cls),
            YamlConfigSettingsSource(settings_cls),
        )

    # --- derived values ---------------------------------------------------------------------
    @property
    def effective_project_name(self) -> str:
        """The Phoenix project name: ``project_name`` or else ``service_name``."""
        return self.project_name or self.service_name

    @property
    def traces_endpoint(self) -> str:
        """The URL export requests go to, after the OpenTelemetry endpoint rules."""
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        if self.otlp_protocol == "grpc":
            return self.otlp_endpoint or "http://localhost:4317"
        base = (self.otlp_endpoint or "http://localhost:4318").rstrip("/")
        return f"{base}/v1/traces"

    @property
    def store_path(self) -> Path:
        """The SQLite database file inside ``data_dir``."""
        return self.data_dir / "queue.sqlite3"
