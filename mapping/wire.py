"""OTLP attributes written straight to protobuf wire bytes.

A protobuf message is the concatenation of its fields, and a repeated field may follow the others
in any order, so a span's attributes can be appended to its serialised bytes as ``attributes``
fields (``Span.attributes`` is field 9) without building a ``KeyValue`` message for each.
``encode_attribute_map`` gives exactly the bytes of ``values.add_attribute_map`` followed by
``SerializeToString()`` (the same caps, skips and cut keys: ``tests/mapping/test_wire.py``); with it the
compiled mapping and serialisation of a run cost about 18 % less CPU (``docs/performance.md``, round 10).

Wire format used here (field number << 3 | wire type): ``KeyValue`` key 1 (``0x0a``) and value 2
(``0x12``); ``AnyValue`` string 1 (``0x0a``), bool 2 (``0x10``), int 3 (``0x18``), double 4
(``0x21``, little-endian fixed64), array 5 (``0x2a``); ``ArrayValue`` values 1 (``0x0a``).
"""

from __future__ import annotations

import struct
from typing import Any, Final

from mapping.values import INT64_MAX, INT64_MIN, Attributes, cap, cap_items

SPAN_ATTRIBUTES: Final = b"\x4a"
"""Tag of one ``Span.attributes`` entry (field 9, length-delimited)."""

_KEY: Final = b"\x0a"
_VALUE: Final = b"\x12"
_STRING: Final = b"\x0a"
_TRUE: Final = b"\x10\x01"
_FALSE: Final = b"\x10\x00"
_INT: Final = b"\x18"
_DOUBLE: Final = b"\x21"
_ARRAY: Final = b"\x2a"
_ITEM: Final = b"\x0a"
_UINT64: Final = 0xFFFF_FFFF_FFFF_FFFF


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative ``value`` (a negative int64 is passed as its uint64)."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:  # most lengths: two bytes, without the loop
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    return _slow_varint(value)


def delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the varint of the payload's length, the payload."""
    return tag + varint(len(payload)) + payload


def _slow_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE: Final = [bytes((value,)) for value in range(0x80)]
"""Varints of one byte: looked up, not built (every tag-length pair of a short attribute has one)."""

_PREFIXES: dict[str, bytes] = {}
_MAX_PREFIXES: Final = 10_000


def _key_field(key: str) -> bytes:
    """``KeyValue.key`` as a field: cached, attribute keys repeat on every span (bounded: cleared past 10,000)."""
    field = _PREFIXES.get(key)
    if field is None:
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        data = key.encode()
        field = _PREFIXES[key] = delimited(_KEY, data) if data else b""  # proto3: "" is not written
    return field


def _any_value(value: Any) -> bytes | None:
    """The fields of the ``AnyValue`` of ``value``; None for a type OTLP attributes cannot hold."""
    kind = type(value)
    if kind is str:
        return delimited(_STRING, value.encode())
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return _INT + varint(value & _UINT64)
        return delimited(_STRING, str(value).encode())
    if kind is float:
        return _DOUBLE + struct.pack("<d", value)
    if kind is list:
        return _array(value)
    return None


def _array(items: list[Any]) -> bytes:
    if not items:  # an empty list leaves the AnyValue empty, as the message API does
        return b""
    parts: list[bytes] = []
    for item in items:
        encoded = _any_value(item)
        if encoded is not None:
            parts.append(delimited(_ITEM, encoded))
    return delimited(_ARRAY, b"".join(parts))


def encode_attribute_map(attributes: Attributes, limit: int) -> tuple[bytes, list[str]]:
    """``attributes`` as ``Span.attributes`` fields, strings capped to ``limit``, and the keys that were cut.

    The same bytes, in the same order, as ``add_attribute_map(span.attributes, attributes, limit)``
    serialised: a string (also one in a list) longer than ``limit`` ends with the truncation mark, an int
    outside int64 becomes its decimal text, a value of an unsupported type is left out.
    """
    cut_keys: list[str] = []
    parts: list[bytes] = []
    for key, value in attributes.items():
        if type(value) is str:  # most attributes: inline, without the generic writer
            text: str = value
            if len(text) > limit:
                text = cap(text, limit)[0]
                cut_keys.append(key)
            data = text.encode()
            size = len(data)
            any_size = 1 + len(varint(size)) + size
            field = _key_field(key)
            kv_size = len(field) + 1 + len(varint(any_size)) + any_size
            parts += (SPAN_ATTRIBUTES, varint(kv_size), field, _VALUE, varint(any_size), _STRING, varint(size), data)
            continue
        if type(value) is list:
            value, was_cut = cap_items(value, limit)
            if was_cut:
                cut_keys.append(key)
        encoded = _any_value(value)
        if encoded is None:
            continue
        field = _key_field(key)
        # an empty list leaves the value unset: the key alone
        parts.append(delimited(SPAN_ATTRIBUTES, field + delimited(_VALUE, encoded) if encoded else field))
    return b"".join(parts), cut_keys
