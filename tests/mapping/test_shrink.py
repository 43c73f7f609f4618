"""Spans larger than the export request limit are shrunk, marked, and still delivered."""

from __future__ import annotations

from mapping import MappingOptions
from mapping.shrink import SHRUNK, shrink_span
from mapping.values import TRUNCATION_MARK
from tests.batches import workflow_run
from tests.mapping.helpers import attrs, map_runs


def test_small_span_is_untouched() -> None:
    (span,) = map_runs(workflow_run())
    before = span.SerializeToString()
    assert shrink_span(span, 64 * 1024)
    assert span.SerializeToString() == before


def test_large_span_is_cut_at_its_largest_attributes_and_marked() -> None:
    options = MappingOptions(max_attribute_length=1_000_000)
    (span,) = map_runs(workflow_run(input={"a": "x" * 300_000}, output="y" * 200_000), options=options)
    assert span.ByteSize() > 100_000
    assert shrink_span(span, 100_000)
    assert span.ByteSize() <= 100_000
    values = attrs(span)
    assert values[SHRUNK] is True
    assert values["input.value"].endswith(TRUNCATION_MARK)
    assert values["input.mime_type"] == "text/plain"
    assert values["dynamiq.run.id"] == "11d4a6e8-9c2b-4f3a-8e1d-2f6071829301"
