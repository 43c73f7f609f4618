"""The translator's input: a validated Dynamiq run, and the options that steer the translation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RUN_TYPES = ("workflow", "flow", "node")
"""The run types the Dynamiq collector accepts."""

RUN_STATUSES = ("succeeded", "failed", "skipped", "canceled")
"""The final statuses the Dynamiq collector accepts."""

DEFAULT_REDACT_KEYS = (
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "access_key",
    "private_key",
    "credential",
    "credentials",
    "cookie",
)
"""Key names whose values are redacted, compared word by word (``token`` matches ``access_token``,
not ``max_tokens``; ``api_key`` matches ``apiKey`` and ``X-API-Key``)."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs an object.__setattr__ per field, per run
class Run:
    """One Dynamiq run, as validated by the ingest step.

    The validated fields are typed; every other field of the SDK's run is carried unchanged, as JSON
    decodes it (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``): the translation
    reads objects as ``dict`` only. ``end_ns`` and ``status`` are None only for an unfinished run
    accepted on purpose.
    """

    id: str
    name: str
    type: str
    trace_id: str
    source_id: str
    start_ns: int
    end_ns: int | None
    status: str | None
    session_id: str | None = None
    parent_run_id: str | None = None
    input: Any = None
    output: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    error: Any = None
    executions: tuple[Any, ...] = ()
    tags: tuple[Any, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """Everything the translation depends on besides the runs. Built from the settings by the adapter."""

    dynamiq_attributes: bool = True
    genai_attributes: bool = True
    openinference_attributes: bool = True
    capture_content: bool = True
    max_attribute_length: int = 32_768
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    status_ok_on_success: bool = False
    semconv_span_names: bool = False
