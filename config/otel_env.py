"""The standard OpenTelemetry environment variables, read with the specification's precedence."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

_OTLP = "OTEL_EXPORTER_OTLP_"
_TRACES = "OTEL_EXPORTER_OTLP_TRACES_"

OTEL_VARIABLES: dict[str, tuple[str, ...]] = {
    "otlp_protocol": (f"{_TRACES}PROTOCOL", f"{_OTLP}PROTOCOL"),
    "otlp_endpoint": (f"{_OTLP}ENDPOINT",),
    "otlp_traces_endpoint": (f"{_TRACES}ENDPOINT",),
    "otlp_headers": (f"{_TRACES}HEADERS", f"{_OTLP}HEADERS"),
    "otlp_timeout": (f"{_TRACES}TIMEOUT", f"{_OTLP}TIMEOUT"),
    "otlp_compression": (f"{_TRACES}COMPRESSION", f"{_OTLP}COMPRESSION"),
    "otlp_insecure": (f"{_TRACES}INSECURE", f"{_OTLP}INSECURE"),
    "otlp_certificate": (f"{_TRACES}CERTIFICATE", f"{_OTLP}CERTIFICATE"),
    "otlp_client_key": (f"{_TRACES}CLIENT_KEY", f"{_OTLP}CLIENT_KEY"),
    "otlp_client_certificate": (f"{_TRACES}CLIENT_CERTIFICATE", f"{_OTLP}CLIENT_CERTIFICATE"),
    "service_name": ("OTEL_SERVICE_NAME",),
    "resource_attributes": ("OTEL_RESOURCE_ATTRIBUTES",),
}
"""Setting name -> the standard variables that set it, the winning one first."""


class OtelVariableError(ValueError):
    """A standard OpenTelemetry variable could not be parsed."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}" if variable else problem)
        self.variable = variable


def parse_key_value_list(variable: str, raw: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``k1=v1,k2=v2`` format of OTLP headers and resource attributes.

    Values are percent-decoded, as the OpenTelemetry specification requires.
    """
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OtelVariableError(variable, f"entry {item.strip()!r} is not of the form key=value")
        result[unquote(key.strip())] = unquote(value.strip())
    return result


def read_otel_environment(
    environ: Mapping[str, str], problems: list[tuple[str, OtelVariableError]] | None = None
) -> dict[str, Any]:
    """Return the settings that the standard variables in ``environ`` set.

    A variable that cannot be parsed is left out and, when ``problems`` is given, recorded there as
    ``(setting, error)``; without ``problems`` it raises.
    """
    found: dict[str, Any] = {}
    for field, variables in OTEL_VARIABLES.items():
        for variable in variables:
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                found[field] = _parse(field, variable, raw.strip())
            except OtelVariableError as exc:
                if problems is None:
                    raise
                problems.append((field, exc))
            break
    resource = found.get("resource_attributes", {})
    if "service_name" not in found and "service.name" in resource:
        found["service_name"] = resource["service.name"]
    return found


def _parse(field: str, variable: str, raw: str) -> Any:
    if field in ("otlp_headers", "resource_attributes"):
        return parse_key_value_list(variable, raw)
    if field == "otlp_insecure":
        if raw.lower() not in ("true", "false"):
            raise OtelVariableError(variable, "must be true or false")
        return raw.lower() == "true"
    return raw


class OtelEnvSource(PydanticBaseSettingsSource):
    """pydantic-settings source for the ``OTEL_*`` variables listed in ``OTEL_VARIABLES``.

    Variables that cannot be parsed are collected in ``problems`` (reported with the other
    problems by ``load_settings``) instead of stopping at the first.
    """

    problems: list[tuple[str, OtelVariableError]] = []

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads all variables at once

    def __call__(self) -> dict[str, Any]:
        return read_otel_environment(os.environ, OtelEnvSource.problems)
