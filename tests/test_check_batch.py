"""``check_batch`` (ingest's quick verdict) agrees with ``parse_batch`` on every body.

Ingest stores the body as sent, and the export reads it back with ``parse_batch``'s rules
(``load_stored``): a body the quick check accepted but ``parse_batch`` refuses would be accepted and then
never delivered. So the two must give the same run count, or raise the same exception with the same
details, for valid bodies, for bodies with a broken field, and for JSON that msgspec and orjson judge
differently (invalid UTF-8 in skipped content, numbers beyond a float's range, deep nesting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.validation import InvalidBatch, TooManyRuns, _quick_count, check_batch, parse_batch
from tests.batches import body, node_run, workflow_run
from tests.test_properties import SETTINGS, any_bodies

SDK = Path(__file__).parent / "fixtures" / "sdk"
VALID = body(workflow_run(input={"note": "PLACEHOLDER"}))
"""A valid one-run batch; ``PLACEHOLDER`` (inside a string in the run's input) is replaced by test text."""


def verdict(check: Any, payload: bytes, *, unfinished: bool = False, max_runs: int = 100) -> tuple[Any, ...]:
    """What a check says of a body: ("ok", runs), ("invalid", details) or ("too many", runs)."""
    try:
        result = check(payload, accept_unfinished=unfinished, max_runs=max_runs)
    except InvalidBatch as exc:
        return ("invalid", exc.details)
    except TooManyRuns as exc:
        return ("too many", exc.args)
    return ("ok", result if isinstance(result, int) else len(result))


def assert_same_verdict(payload: bytes, **options: Any) -> tuple[Any, ...]:
    quick = verdict(check_batch, payload, **options)
    assert quick == verdict(parse_batch, payload, **options)
    return quick


def spliced(raw_value: bytes) -> bytes:
    """The valid batch with ``raw_value`` as the value of the run's input (raw JSON text, valid or not)."""
    payload = VALID.replace(b'{"note":"PLACEHOLDER"}', raw_value)
    assert raw_value in payload and b"PLACEHOLDER" not in payload
    return payload


# Each case: raw JSON text put where a value goes, and whether orjson (so parse_batch) takes it.
SKIPPED_CONTENT = [
    pytest.param(b'"\xff\xfe"', False, id="invalid-utf8"),
    pytest.param(b'"\xc0\xaf"', False, id="overlong-utf8"),
    pytest.param(b'"\xed\xa0\x80"', False, id="utf8-encoded-surrogate"),
    pytest.param(b'"\xf4\x90\x80\x80"', False, id="utf8-beyond-10ffff"),
    pytest.param(b'{"\xff": 1}', False, id="invalid-utf8-key"),
    pytest.param(b'"\xef\xbf\xbf caf\xc3\xa9 \xf0\x9f\x99\x82"', True, id="valid-utf8"),
    pytest.param(b'"\\ud800"', False, id="lone-surrogate-escape"),
    pytest.param(b'"\\ud83d\\ude42"', True, id="surrogate-pair-escape"),
    pytest.param(b'"\\q"', False, id="bad-escape"),
    pytest.param(b'"a\x01b"', False, id="control-character"),
    pytest.param(b'"a\x7fb"', True, id="del-character"),
    pytest.param(b"1e309", False, id="float-overflow"),
    pytest.param(b"-1E+309", False, id="float-overflow-signed"),
    pytest.param(b"[1.5e0000309]", False, id="float-overflow-padded-exponent"),
    pytest.param(b"1" + b"0" * 400, False, id="integer-of-401-digits"),
    pytest.param(b"1" + b"0" * 250 + b"e99", False, id="long-mantissa-overflow"),
    pytest.param(b"1e308", True, id="float-near-max"),
    pytest.param(b"1e-400", True, id="float-underflow"),
    pytest.param(b"123456789012345678901234567890", True, id="integer-beyond-64-bits"),
    pytest.param(b'"5e123 in text"', True, id="exponent-like-text"),
    pytest.param(b'"1e999"', True, id="overflow-in-a-string"),
    pytest.param(b"NaN", False, id="nan"),
    pytest.param(b"-Infinity", False, id="infinity"),
    pytest.param(b"01", False, id="leading-zero"),
    pytest.param(b"1.", False, id="bare-dot"),
    pytest.param(b"[1,]", False, id="trailing-comma"),
    pytest.param(b"[" * 1100 + b"]" * 1100, False, id="nested-1100-deep"),
    pytest.param(b"[" * 1000 + b"]" * 1000, True, id="nested-1000-deep"),
]


@pytest.mark.parametrize(("raw_value", "orjson_takes"), SKIPPED_CONTENT)
def test_skipped_content_gets_parse_batch_verdict(raw_value: bytes, orjson_takes: bool) -> None:
    payload = spliced(raw_value)
    expected = ("ok", 1) if orjson_takes else ("invalid", {"input": "must be valid JSON"})
    assert assert_same_verdict(payload) == expected
    # also as a field msgspec skips unread, at the top level and inside a run
    assert assert_same_verdict(payload.replace(b'{"runs":', b'{"extra":' + raw_value + b',"runs":')) == expected
    assert assert_same_verdict(payload.replace(b'"name":', b'"custom":' + raw_value + b',"name":')) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("session_id", 1e300, id="session-id-float"),
        pytest.param("session_id", 12, id="session-id-int"),
        pytest.param("session_id", True, id="session-id-bool"),
        pytest.param("parent_run_id", [1], id="parent-list"),
        pytest.param("id", "  ", id="blank-id"),
        pytest.param("name", 5, id="name-number"),
        pytest.param("type", "Node", id="type-case"),
        pytest.param("status", None, id="status-null"),
        pytest.param("end_time", None, id="end-null"),
        pytest.param("end_time", "2026-06-10T09:15:20+00:00", id="end-before-start"),
        pytest.param("start_time", "2026-06-10 09:15:21", id="start-space-no-offset"),
        pytest.param("start_time", "2026-02-30T00:00:00Z", id="start-no-such-day"),
        pytest.param("metadata", "not an object", id="metadata-text"),
        pytest.param("tags", "one-tag", id="tags-text"),
    ],
)
@pytest.mark.parametrize("unfinished", [False, True])
def test_each_rule_gets_parse_batch_verdict(field: str, value: Any, unfinished: bool) -> None:
    parent = workflow_run()
    payload = body(parent, node_run(parent, **{field: value}))
    assert_same_verdict(payload, unfinished=unfinished)


def test_duplicate_keys_count_as_orjson_reads_them() -> None:
    """orjson keeps the last of repeated keys; so must the quick check, escaped key names included."""
    good = body(workflow_run())
    late_blank = good.replace(b'"name":"Workflow"', b'"name":"Workflow","n\\u0061me":"  "')
    late_fix = good.replace(b'"name":"Workflow"', b'"name":"","name":"Workflow"')
    assert assert_same_verdict(late_blank) == ("invalid", {"runs[0].name": "cannot be blank"})
    assert assert_same_verdict(late_fix) == ("ok", 1)
    assert assert_same_verdict(b'{"runs": [], "runs": ' + good[len(b'{"runs":') : -1] + b"}") == ("ok", 1)


def test_run_limit_is_the_same() -> None:
    parent = workflow_run()
    payload = body(parent, *(node_run(parent) for _ in range(4)))
    assert assert_same_verdict(payload, max_runs=5) == ("ok", 5)
    assert assert_same_verdict(payload, max_runs=4) == ("too many", (5,))


@pytest.mark.parametrize("name", sorted(path.name for path in SDK.glob("*.json") if path.name != "manifest.json"))
def test_sdk_batches_take_the_quick_path(name: str) -> None:
    """Real SDK bodies are decided by the quick check itself, not handed to ``parse_batch``."""
    payload = (SDK / name).read_bytes()
    runs = len(orjson.loads(payload)["runs"])
    unfinished = name.startswith("unfinished")
    assert _quick_count(payload, unfinished, 100_000) == runs
    assert assert_same_verdict(payload, unfinished=unfinished, max_runs=100_000) == ("ok", runs)


def test_false_alarms_still_accept() -> None:
    """Text that looks like a huge number, or a long digit run in a string, costs the slow path only."""
    for text in (b": 5e123", b"0" * 300):
        payload = VALID.replace(b"PLACEHOLDER", text)
        assert _quick_count(payload, False, 10) is None
        assert assert_same_verdict(payload) == ("ok", 1)


HOSTILE = [case.values[0] for case in SKIPPED_CONTENT] + [b"\x00", b'"', b"\\", b",", b"]", b"}", b"\xc3", b"\t"]


@settings(SETTINGS, max_examples=300)
@given(
    payload=any_bodies(),
    splice=st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(HOSTILE)), max_size=2),
    unfinished=st.booleans(),
    max_runs=st.sampled_from([1, 3, 100]),
)
def test_any_body_gets_parse_batch_verdict(
    payload: bytes, splice: list[tuple[int, bytes]], unfinished: bool, max_runs: int
) -> None:
    for position, token in splice:
        at = position % (len(payload) + 1)
        payload = payload[:at] + token + payload[at:]
    assert_same_verdict(payload, unfinished=unfinished, max_runs=max_runs)
