"""Loading settings from a YAML file and the environment, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from config.otel_env import OTEL_VARIABLES, OtelEnvSource
from config.settings import ENV_PREFIX, Settings

MASK = "****"
"""What a secret looks like in printed settings."""

PUBLIC_HEADERS = frozenset({"x-scope-orgid", "x-honeycomb-dataset", "content-type", "user-agent"})
"""Export headers printed in clear by check-config; every other header value is masked."""


class SettingsError(Exception):
    """The configuration is invalid. ``str()`` is one line per problem, each naming the setting."""


def env_names(field: str) -> list[str]:
    """The environment variables that set ``field``, the winning one first."""
    return [f"{ENV_PREFIX}{field.upper()}", *OTEL_VARIABLES.get(field, ())]


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config_file`` (YAML), the environment and ``overrides``.

    Raises:
        SettingsError: the file is missing or malformed, or a value is invalid.
    """
    if config_file is not None:
        _check_yaml_file(config_file)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    OtelEnvSource.problems = []
    lines: list[str] = []
    loaded: Settings | None = None
    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        lines.extend(_describe(exc).splitlines())
    except PydanticSettingsError as exc:  # a variable that pydantic-settings could not decode (JSON)
        lines.append(f"invalid settings: {exc}".replace("\n", " "))
    for field, error in OtelEnvSource.problems:
        lines.insert(0, f"invalid setting {field!r} (environment: {' or '.join(env_names(field))}): {error}")
    if lines or loaded is None:
        raise SettingsError("\n".join(lines))
    return Settings.model_construct(_fields_set=loaded.model_fields_set, **dict(loaded))


def _check_yaml_file(path: Path) -> None:
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if content is not None and not isinstance(content, dict):
        raise SettingsError(f"config file {path} must hold a mapping of setting names to values")


def _place(loc: tuple[int | str, ...]) -> str:
    """``("tenants", 1, "access_key_sha256", 0)`` -> ``tenants[1].access_key_sha256[0]``."""
    text = str(loc[0])
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        place = _place(tuple(error["loc"])) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if not field:
            lines.append(f"invalid settings: {message}")
        elif error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {place!r}: check the spelling against the configuration reference")
        else:
            where = " or ".join(env_names(field))
            lines.append(f"invalid setting {place!r} (environment: {where}): {message}")
    return "\n".join(lines)


BUILD_AND_INTERNAL_VARIABLES = frozenset({"DYNAMIQ_OTEL_SERVE_ARGUMENTS", "DYNAMIQ_OTEL_USE_MYPYC"})
"""``DYNAMIQ_OTEL_*`` variables that are not settings: the serve arguments handed to workers, and
the install-time switch that compiles the mapping (``setup.py``)."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``DYNAMIQ_OTEL_*`` variables that set nothing (most likely a typo)."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | BUILD_AND_INTERNAL_VARIABLES
    return sorted(name for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``MASK``."""
    data = settings.model_dump(mode="json")
    data["access_keys"] = [MASK for _ in settings.access_keys]
    data["otlp_headers"] = _masked_headers(settings.otlp_headers)
    for tenant in data["tenants"]:
        tenant["access_keys"] = [MASK for _ in tenant["access_keys"]]
        tenant["otlp_headers"] = _masked_headers(tenant["otlp_headers"])
    data["traces_endpoint"] = settings.traces_endpoint
    data["effective_project_name"] = settings.effective_project_name
    return data


def _masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value if name.lower() in PUBLIC_HEADERS else MASK for name, value in headers.items()}


def reveal(keys: list[SecretStr]) -> list[str]:
    """The access keys in clear, for the one place that compares them."""
    return [key.get_secret_value() for key in keys]
