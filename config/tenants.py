"""Tenants: which access keys belong to whom, and how each tenant's traces are exported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_TENANT = "default"
"""The tenant of the top-level ``access_keys`` (and of every batch when authentication is off)."""

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TenantSettings(BaseModel):
    """One tenant. Keys may be given in clear, as SHA-256 digests, or in a file (one key per line)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Tenant name: letters, digits, '_', '.', '-'; shown in logs and metrics.")
    access_keys: list[SecretStr] = Field(default_factory=list, description="Keys in clear.")
    access_key_sha256: list[str] = Field(
        default_factory=list, description="SHA-256 hex digests of keys (so the config holds no key)."
    )
    access_keys_file: Path | None = Field(
        None, description="File with one key per line (e.g. a mounted Kubernetes Secret); read at start."
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Resource attributes of this tenant's spans (service.name, openinference.project.name, "
        "deployment.environment.name, …); win over the global ones.",
    )
    otlp_headers: dict[str, str] = Field(
        default_factory=dict, description="Extra export headers (X-Scope-OrgID, Authorization, …)."
    )
    otlp_traces_endpoint: str | None = Field(None, description="This tenant's own endpoint, used as given.")
    otlp_protocol: Literal["grpc", "http/protobuf"] | None = Field(None, description="Transport for that endpoint.")
    rate_limit_runs_per_second: float = Field(0, ge=0, description="Runs per second accepted; 0 is no limit.")
    rate_limit_burst: int = Field(0, ge=0, description="Runs that may arrive at once; default 10 s worth.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("access_key_sha256")
    @classmethod
    def _check_digests(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not _SHA256.match(digest):
                raise ValueError("each entry must be 64 hex digits (sha256 of the key)")
        return [digest.lower() for digest in value]

    @field_validator("otlp_traces_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be a URL starting with http:// or https://")
        return value or None

    @field_validator("otlp_headers")
    @classmethod
    def _lower_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return {name.lower(): header for name, header in value.items()}

    @model_validator(mode="after")
    def _check_keys(self) -> TenantSettings:
        if self.access_keys_file is not None and not self.access_keys_file.is_file():
            raise ValueError(f"access_keys_file {self.access_keys_file} does not exist")
        if not (self.access_keys or self.access_key_sha256 or self.file_keys()):
            where = f" (access_keys_file {self.access_keys_file} holds none)" if self.access_keys_file else ""
            raise ValueError(f"tenant {self.name!r} has no access key{where}")
        return self

    def file_keys(self) -> list[str]:
        """The keys in ``access_keys_file`` (blank lines and ``#`` comments ignored)."""
        if self.access_keys_file is None:
            return []
        lines = self.access_keys_file.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
