"""Attributes written straight to wire bytes (``mapping.wire``) against the protobuf message API.

``runs_to_span_bytes`` is what export sends and ``runs_to_spans`` what the golden files pin: over
every captured SDK batch and option set, each span's bytes must parse back to the message span.
Below that, ``encode_attribute_map`` must give byte for byte what ``add_attribute_map`` +
``SerializeToString()`` give, for any attribute dict: the caps at their edge, ints past int64,
floats, nested and empty lists, unsupported values, the empty key, any unicode.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from adapter.validation import parse_batch
from mapping import MappingOptions, runs_to_span_bytes, runs_to_spans, wire
from mapping.spans import TRUNCATED
from mapping.values import TRUNCATION_MARK, add_attribute_map
from mapping.wire import encode_attribute_map, varint
from tests.batches import workflow_run
from tests.mapping.helpers import attrs, map_runs

SDK = Path(__file__).resolve().parent.parent / "fixtures" / "sdk"
BATCHES = sorted(path.name for path in SDK.glob("*.json") if path.name != "manifest.json")
OPTIONS = {
    "defaults": MappingOptions(),
    "short-cap": MappingOptions(max_attribute_length=64),
    "dynamiq-only": MappingOptions(genai_attributes=False, openinference_attributes=False),
    "no-content": MappingOptions(capture_content=False),
    "semconv-ok": MappingOptions(status_ok_on_success=True, semconv_span_names=True),
    "no-attributes": MappingOptions(dynamiq_attributes=False, genai_attributes=False, openinference_attributes=False),
}


def _message_bytes(attributes: dict[str, Any], limit: int) -> tuple[bytes, list[str]]:
    span = Span()
    cut = add_attribute_map(span.attributes, attributes, limit)
    return span.SerializeToString(), cut


@pytest.mark.parametrize("option_set", sorted(OPTIONS))
@pytest.mark.parametrize("name", BATCHES)
def test_span_bytes_parse_back_to_the_spans_of_every_sdk_batch(name: str, option_set: str) -> None:
    runs = parse_batch((SDK / name).read_bytes(), accept_unfinished=True, max_runs=100_000)
    options = OPTIONS[option_set]
    spans = runs_to_spans(runs, options)
    encoded = runs_to_span_bytes(runs, options)
    assert len(encoded) == len(spans) >= len(runs)
    for data, span in zip(encoded, spans, strict=True):
        assert Span.FromString(data) == span
        assert len(data) == span.ByteSize(), "the same fields, only in another order"


def test_cut_attributes_are_listed_in_the_bytes_as_in_the_message() -> None:
    root = workflow_run(input={"text": "x" * 500})
    options = MappingOptions(max_attribute_length=100)
    runs = parse_batch(orjson.dumps({"runs": [root]}), accept_unfinished=True, max_runs=10)
    [data] = runs_to_span_bytes(runs, options)
    span = Span.FromString(data)
    assert [span] == map_runs(root, options=options)
    cut = attrs(span)[TRUNCATED]
    assert cut == ["input.value"]
    assert attrs(span)["input.value"].endswith(TRUNCATION_MARK) and len(attrs(span)["input.value"]) == 100


_TEXT = st.text(max_size=80)
_SCALARS = st.one_of(
    _TEXT,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
_UNSUPPORTED = st.one_of(st.none(), st.dictionaries(_TEXT, _TEXT, max_size=2), st.tuples(_TEXT), st.binary(max_size=4))
_VALUES = st.recursive(st.one_of(_SCALARS, _UNSUPPORTED), lambda inner: st.lists(inner, max_size=5), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(attributes=st.dictionaries(_TEXT, _VALUES, max_size=8), limit=st.integers(min_value=0, max_value=90))
@example(attributes={"k": "x" * 64}, limit=64)  # at the cap: kept
@example(attributes={"k": "x" * 65}, limit=64)  # one past: cut
@example(attributes={"k": ["x" * 64, "y" * 65, 1]}, limit=64)  # a list item one past: cut, the key listed once
@example(attributes={"k": [], "": "", "n": [[], [None]], "i": 2**63, "j": -(2**63)}, limit=64)
@example(attributes={"k": "é" * 70, "l": "\U0001f600" * 3}, limit=64)  # multibyte: cut by characters
@example(attributes={"k": "a" * 20_000}, limit=30_000)  # a value length past the two-byte varint table
def test_encoded_attributes_are_the_bytes_of_the_message_api(attributes: dict[str, Any], limit: int) -> None:
    assert encode_attribute_map(attributes, limit) == _message_bytes(attributes, limit)


@given(st.integers(min_value=0, max_value=2**64 - 1))
@example(0)
@example(127)
@example(128)
@example(2**14 - 1)
@example(2**14)
@example(2**64 - 1)
def test_varints_are_protobufs(value: int) -> None:
    assert varint(value) == _VarintBytes(value)


def test_a_lone_surrogate_fails_as_it_does_in_the_message_api() -> None:
    # orjson rejects lone surrogates in JSON, so the mapping never sees one; if it did, both paths
    # raise the same error (delivery dead-letters a batch that fails to map).
    for attributes in ({"k": "\ud800"}, {"\udfff": 1}):
        with pytest.raises(UnicodeEncodeError):
            _message_bytes(attributes, 64)
        with pytest.raises(UnicodeEncodeError):
            encode_attribute_map(attributes, 64)


def test_the_key_cache_stays_bounded_and_correct() -> None:
    for n in range(25_000):
        attributes = {f"key.{n}": n}
        assert encode_attribute_map(attributes, 64) == _message_bytes(attributes, 64)
    assert len(wire._PREFIXES) <= 10_000


def test_doubles_keep_their_exact_bits() -> None:
    for value in (0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308):
        data, _ = encode_attribute_map({"d": value}, 64)
        decoded = Span.FromString(data).attributes[0].value.double_value
        assert math.copysign(1, decoded) == math.copysign(1, value)
        assert decoded == value or (math.isnan(decoded) and math.isnan(value))
