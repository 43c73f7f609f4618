"""Attribute values: JSON text, redaction of secrets, length caps, and OTLP ``AnyValue`` encoding."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

REDACTED = "[REDACTED]"
"""What replaces the value of a key whose name looks secret."""

TRUNCATION_MARK = "…[truncated]"
"""Appended to a string attribute that was cut to the length limit."""

_KEY_LIKE = re.compile(
    r"\b(sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{8,}|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,})"
)

Primitive = str | bool | int | float
AttrValue = Primitive | list[str] | list[bool] | list[int] | list[float]
Attribute = tuple[str, AttrValue]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def scrub_text(text: str) -> str:
    """Replace key-like strings (``sk-…``, ``Bearer …``, cloud keys) in free text."""
    return _KEY_LIKE.sub(REDACTED, text)


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def _words(name: str) -> tuple[str, ...]:
    return tuple(word for word in _SEPARATORS.split(_CAMEL.sub(r"\1_\2", name).lower()) if word)


@lru_cache(maxsize=4096)
def is_secret_key(name: str, fragments: tuple[str, ...]) -> bool:
    """True when the words of ``name`` contain the words of a fragment, in a row.

    ``api_key``, ``apiKey``, ``X-API-Key`` and ``openai_api_key`` match ``api_key``; ``token``
    matches ``access_token`` but not ``max_tokens``: words are compared whole.
    """
    words = _words(name)
    for fragment in fragments:
        wanted = _words(fragment)
        width = len(wanted)
        if width and any(words[i : i + width] == wanted for i in range(len(words) - width + 1)):
            return True
    return False


def redact(value: Any, fragments: tuple[str, ...]) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if item not in (None, "", [], {}) and is_secret_key(name, fragments):
                out[name] = REDACTED
            else:
                out[name] = redact(item, fragments)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, fragments) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON text of ``value``; anything JSON cannot hold becomes its ``str``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def text_of(value: Any) -> tuple[str, str]:
    """``(text, mime_type)`` of an input or output: strings stay text, the rest becomes JSON."""
    if isinstance(value, str):
        return value, "text/plain"
    return to_json(value), "application/json"


def cap(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters (mark included) and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[: max(limit - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK, True


def _any_value(value: AttrValue) -> AnyValue | None:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, list):
        items = [_any_value(item) for item in value]
        return AnyValue(array_value=ArrayValue(values=[item for item in items if item is not None]))
    return None


def encode_attributes(pairs: Iterable[Attribute], limit: int) -> tuple[list[KeyValue], list[str]]:
    """OTLP key-values of ``pairs`` with strings capped to ``limit``; also the keys that were cut.

    Later pairs with the same key win. A value of an unsupported type is skipped, not fatal.
    """
    merged: dict[str, AttrValue] = {}
    for key, value in pairs:
        merged[key] = value
    out: list[KeyValue] = []
    cut_keys: list[str] = []
    for key, value in merged.items():
        if isinstance(value, str):
            value, was_cut = cap(value, limit)
            if was_cut:
                cut_keys.append(key)
        elif isinstance(value, list) and value and isinstance(value[0], str):
            capped = [cap(item, limit) for item in value]
            if any(was_cut for _, was_cut in capped):
                cut_keys.append(key)
            value = [item for item, _ in capped]
        encoded = _any_value(value)
        if encoded is not None:
            out.append(KeyValue(key=key, value=encoded))
    return out, cut_keys
