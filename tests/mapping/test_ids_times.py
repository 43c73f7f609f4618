"""Ids and timestamps: the documented functions, row by row."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapping.ids import span_id_bytes, trace_id_bytes
from mapping.timestamps import _general_ns, parse_timestamp_ns

JUNE_10 = 1_781_082_921 * 10**9  # 2026-06-10T09:15:21Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-06-10T09:15:21Z", JUNE_10, id="zulu"),
        pytest.param("2026-06-10T09:15:21.123456+00:00", JUNE_10 + 123_456_000, id="sdk-microseconds"),
        pytest.param("2026-06-10T09:15:21.000001+00:00", JUNE_10 + 1_000, id="one-microsecond"),
        pytest.param("2026-06-10T09:15:21.123456789Z", JUNE_10 + 123_456_789, id="nanoseconds"),
        pytest.param("2026-06-10T09:15:21.1234567891Z", JUNE_10 + 123_456_789, id="past-nanoseconds-dropped"),
        pytest.param("2026-06-10T11:15:21+02:00", JUNE_10, id="positive-offset"),
        pytest.param("2026-06-10T04:45:21-04:30", JUNE_10, id="negative-offset"),
        pytest.param("2026-06-10T09:15:21", JUNE_10, id="no-offset-is-utc"),
        pytest.param("2026-06-10 09:15:21z", JUNE_10, id="space-and-lower-z"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
        pytest.param("2024-02-29T00:00:00Z", 1_709_164_800 * 10**9, id="leap-day"),
    ],
)
def test_timestamps_are_exact_integer_nanoseconds(text: str, expected: int) -> None:
    assert parse_timestamp_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        "2026-06-10",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-06-10T24:00:00Z",
        "2026-06-10T09:15:60Z",
        "2026-06-10T09:15:21+24:00",
        "2026-06-10T09:15:21+0200",
        "1969-12-31T23:59:59Z",
        "2026-06-10T09:15:21.Z",
        " 2026-06-10T09:15:21Z",
        "2026-06-10T09:15:21,123456+00:00",  # the standard library's parser takes these two
        "2026-06-10T09:15:21:123456+00:00",
        "2026-06-10T09:15:21.12345٣+00:00",
        "2026-06-10T09:15:21.12345Z+00:00",  # the standard library's parser reads a zone in there
        "2026-06-10T09:15:21.123+01+00:00",
        "2026-06-10T09:15:21.1-01:00+00:00",
    ],
)
def test_invalid_timestamps_are_refused(text: str) -> None:
    assert parse_timestamp_ns(text) is None


@pytest.mark.parametrize(
    ("trace_id", "expected_hex"),
    [
        pytest.param("6e7f8091-a2b3-4c5d-8e6f-708192a3b4c5", "6e7f8091a2b34c5d8e6f708192a3b4c5", id="uuid"),
        pytest.param("6E7F8091-A2B3-4C5D-8E6F-708192A3B4C5", "6e7f8091a2b34c5d8e6f708192a3b4c5", id="uuid-upper"),
        pytest.param("6e7f8091a2b34c5d8e6f708192a3b4c5", "6e7f8091a2b34c5d8e6f708192a3b4c5", id="32-hex"),
        pytest.param(
            "checkout-trace-42",
            hashlib.sha256(b"dynamiq-otel:trace:checkout-trace-42").hexdigest()[:32],
            id="free-string-hashed",
        ),
        pytest.param(
            "00000000-0000-0000-0000-000000000000",
            hashlib.sha256(b"dynamiq-otel:trace:00000000-0000-0000-0000-000000000000").hexdigest()[:32],
            id="zero-uuid-hashed",
        ),
    ],
)
def test_trace_id(trace_id: str, expected_hex: str) -> None:
    assert trace_id_bytes(trace_id).hex() == expected_hex


def test_span_id_is_documented_hash_of_canonical_run_id() -> None:
    run_id = "11d4a6e8-9c2b-4f3a-8e1d-2f6071829301"
    expected = hashlib.sha256(f"dynamiq-otel:span:{run_id}".encode()).digest()[:8]
    assert span_id_bytes(run_id) == expected
    assert span_id_bytes(run_id.upper()) == expected
    assert span_id_bytes("11d4a6e89c2b4f3a8e1d2f6071829301") == expected
    assert span_id_bytes("run-7") == hashlib.sha256(b"dynamiq-otel:span:run-7").digest()[:8]
    assert len(span_id_bytes("")) == 8 and any(span_id_bytes(""))


_SHAPE = "0000-00-00T00:00:00.000000+00:00"
"""The SDK's timestamps (``datetime.isoformat()`` of an aware UTC time): a fast path reads this shape."""
_DIGIT_LIKE = "0123456789\u0663\uff13\u00b2 +-.:TtZz,_\x00"  # with Arabic-Indic, fullwidth and superscript digits


@settings(max_examples=3000, deadline=None, database=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    edits=st.lists(
        st.tuples(
            st.sampled_from([4, 7, 10, 13, 16, 19]) | st.integers(min_value=19, max_value=26) | st.integers(0, 31),
            st.sampled_from(_DIGIT_LIKE),
        ),
        max_size=3,
    ),
)
def test_sdk_shape_fast_path_agrees_with_the_general_parser(moment: datetime, edits: list[tuple[int, str]]) -> None:
    """Valid or broken, a text of the SDK's shape gets the same answer as through the regular expression."""
    chars = list(moment.isoformat(timespec="microseconds") + "+00:00")
    for position, char in edits:
        chars[position] = char
    text = "".join(chars)
    assert len(text) == len(_SHAPE)
    assert parse_timestamp_ns(text) == _general_ns(text)
    if not edits and moment.year >= 1970:
        expected = (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
        assert parse_timestamp_ns(text) == (expected if expected <= 2**64 - 1 else None)
