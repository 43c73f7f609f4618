"""Attribute values: JSON text, redaction of secrets, length caps, and OTLP ``AnyValue`` encoding."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

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
Attributes = dict[str, Any]
"""Attributes by key, in the order they were first set: the attribute builders write into one."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MAX_DEPTH = 64
"""Deepest nesting kept in a value; deeper containers become ``TOO_DEEP`` (JSON allows 1024 levels,
orjson writes at most 255 and Python recursion stops near 1000)."""
TOO_DEEP = "[nested too deep]"


KEY_PREFIXES = ("sk-", "Bearer", "Basic", "AKIA", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox")
"""Literal starts of every alternative of ``_KEY_LIKE`` (which is case-sensitive): a text without any of
them holds no key. Checking them (a fast substring search each) costs ~1 µs for a 600-character
traceback; running the pattern over it costs ~16 µs, a tenth of a run's whole mapping."""


def scrub_text(text: str) -> str:
    """Replace key-like strings (``sk-…``, ``Bearer …``, cloud keys) in free text."""
    for prefix in KEY_PREFIXES:
        if prefix in text:
            return _KEY_LIKE.sub(REDACTED, text)
    return text


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


def scrub_error(error: Any) -> Any:
    """An error object (``{"message", "traceback"}`` or text) with key-like strings scrubbed."""
    if isinstance(error, str):
        return scrub_text(error)
    if isinstance(error, dict):
        return {key: scrub_text(item) if isinstance(item, str) else item for key, item in error.items()}
    return error


def redact(value: Any, fragments: tuple[str, ...]) -> Any:
    """``value`` with the values of secret-looking keys replaced by ``REDACTED``, at any depth.

    Containers are copied only along the paths where something was replaced; an untouched value is
    returned as is (the usual case costs one walk and no allocation). Containers nested deeper than
    ``MAX_DEPTH`` are replaced by ``TOO_DEEP``.
    """
    if type(value) not in _CONTAINERS:
        return value
    return _redact(value, fragments, 0, _secret_cache(fragments))[0]


def _redact(value: Any, fragments: tuple[str, ...], depth: int, secret: dict[Any, bool]) -> tuple[Any, bool]:
    kind = type(value)
    if depth >= MAX_DEPTH and kind in _CONTAINERS:
        return TOO_DEEP, True
    if kind is dict:
        return _redact_dict(value, fragments, depth, secret)
    if kind is list or kind is tuple:
        return _redact_items(value, fragments, depth, secret)
    return value, False


# The two walkers take their container typed, so that the compiled build (mypyc) iterates it
# natively instead of through generic method calls.
def _redact_dict(
    value: dict[Any, Any], fragments: tuple[str, ...], depth: int, secret: dict[Any, bool]
) -> tuple[Any, bool]:
    changed: dict[Any, Any] | None = None
    new: Any  # REDACTED or a redacted container: declared, or mypyc would hold it to str
    for key, item in value.items():
        is_secret = secret.get(key)
        if is_secret is None:
            is_secret = secret[key] = type(key) is str and is_secret_key(key, fragments)
        if is_secret and item not in (None, "", [], {}):
            new, did = REDACTED, True
        elif type(item) in _CONTAINERS:
            new, did = _redact(item, fragments, depth + 1, secret)
        else:
            continue
        if did:
            changed = changed if changed is not None else dict(value)
            changed[key] = new
    return (changed, True) if changed is not None else (value, False)


def _redact_items(
    value: list[Any] | tuple[Any, ...], fragments: tuple[str, ...], depth: int, secret: dict[Any, bool]
) -> tuple[Any, bool]:
    items: list[Any] | None = None
    for index, item in enumerate(value):
        if type(item) not in _CONTAINERS:
            continue
        new, did = _redact(item, fragments, depth + 1, secret)
        if did:
            items = items if items is not None else list(value)
            items[index] = new
    return (items, True) if items is not None else (value, False)


_CONTAINERS = frozenset({dict, list, tuple})
_SECRET_CACHES: dict[tuple[str, ...], dict[Any, bool]] = {}


def _secret_cache(fragments: tuple[str, ...]) -> dict[Any, bool]:
    """Key -> is it secret, per fragment list (bounded: cleared past 100,000 distinct keys)."""
    cache = _SECRET_CACHES.get(fragments)
    if cache is None or len(cache) > 100_000:
        cache = _SECRET_CACHES[fragments] = {}
    return cache


def _shallow(value: Any, depth: int = 0) -> Any:
    """``value`` with containers deeper than ``MAX_DEPTH`` replaced by ``TOO_DEEP``."""
    if type(value) in _CONTAINERS and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {key: _shallow(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shallow(item, depth + 1) for item in value]
    return value


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON text of ``value``; anything JSON cannot hold becomes its ``str``."""
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(value, default=str, option=options).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
        return orjson.dumps(_shallow(value), default=str, option=options).decode()


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


def cap_items(items: list[Any], limit: int) -> tuple[list[Any], bool]:
    """``items`` with its strings capped to ``limit`` (copied only when one was cut) and whether one was."""
    out: list[Any] | None = None
    for index, item in enumerate(items):
        if type(item) is str and len(item) > limit:
            out = out if out is not None else list(items)
            out[index] = cap(item, limit)[0]
    return (out, True) if out is not None else (items, False)


def _set_value(target: AnyValue, value: Any) -> bool:
    """Write ``value`` into ``target``; False for a type OTLP attributes cannot hold."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif kind is float:
        target.double_value = value
    elif kind is list:
        values = target.array_value.values
        for item in value:
            if not _set_value(values.add(), item):
                del values[-1]
    else:
        return False
    return True


def add_attributes(
    target: RepeatedCompositeFieldContainer[KeyValue], pairs: Iterable[Attribute], limit: int
) -> list[str]:
    """Append ``pairs`` to an OTLP attribute list, strings capped to ``limit``; return the keys that were cut.

    Later pairs with the same key win. A value of an unsupported type is skipped, not fatal.
    """
    merged: Attributes = {}
    for key, value in pairs:
        merged[key] = value
    return add_attribute_map(target, merged, limit)


def add_attribute_map(
    target: RepeatedCompositeFieldContainer[KeyValue], attributes: Attributes, limit: int
) -> list[str]:
    """Append ``attributes`` to an OTLP attribute list in their order (see ``add_attributes``)."""
    cut_keys: list[str] = []
    add = target.add
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:  # most attributes: set directly, without the generic writer
            if len(value) > limit:
                value = cap(value, limit)[0]
                cut_keys.append(key)
            kv = add()
            kv.key = key
            kv.value.string_value = value
            continue
        if kind is list:
            value, was_cut = cap_items(value, limit)
            if was_cut:
                cut_keys.append(key)
        kv = add()
        kv.key = key
        if not _set_value(kv.value, value):
            del target[-1]
    return cut_keys


def encode_attributes(pairs: Iterable[Attribute], limit: int) -> tuple[list[KeyValue], list[str]]:
    """``pairs`` as a list of OTLP key-values (see ``add_attributes``) and the keys that were cut."""
    holder = Resource()
    cut = add_attributes(holder.attributes, pairs, limit)
    return list(holder.attributes), cut
