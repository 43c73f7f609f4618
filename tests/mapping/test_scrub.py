"""Key-like strings in free text (error messages, tracebacks) are scrubbed, with or without the prefilter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapping.values import _KEY_LIKE, KEY_PREFIXES, REDACTED, scrub_text

KEYS = [
    "sk-abcdefgh12345678",
    "sk-proj-abcdefghijklmnop1234",
    "sk-ant-api03-abcdefghijkl",
    "Bearer abcdefghijkl.mnop",
    "Basic dXNlcjpwYXNzd29yZA==",
    "AKIAABCDEFGHIJKLMNOP",
    "AIza" + "B" * 35,
    "ghp_" + "a" * 36,
    "gho_" + "b" * 20,
    "ghu_" + "c" * 20,
    "ghs_" + "d" * 20,
    "ghr_" + "e" * 20,
    "xoxb-1234567890-abcdef",
]


@pytest.mark.parametrize("key", KEYS)
def test_every_kind_of_key_is_scrubbed_in_a_traceback(key: str) -> None:
    text = f'Traceback (most recent call last):\n  File "x.py", line 1\nAuthError: rejected {key} (401)\n'
    scrubbed = scrub_text(text)
    assert key not in scrubbed and REDACTED in scrubbed
    assert scrubbed.startswith("Traceback (most recent call last):") and scrubbed.endswith(" (401)\n")


def test_text_without_a_key_comes_back_as_is() -> None:
    text = "Flow execution failed due to node failures: flaky-llm; through high Basically sk_ ghp- AKIA"
    assert scrub_text(text) is text


_near_misses = st.sampled_from([*KEY_PREFIXES, *KEYS, " ", "-", "_", "\n"])
_pieces = st.lists(st.one_of(_near_misses, st.text(max_size=12), st.from_regex(_KEY_LIKE)), max_size=12)


@settings(max_examples=400, deadline=None)
@given(_pieces)
def test_the_prefilter_never_changes_the_result(pieces: list[str]) -> None:
    # KEY_PREFIXES must name the start of every alternative of the pattern: text the prefilter lets
    # through unchanged must be text the pattern leaves alone.
    text = "".join(pieces)
    assert scrub_text(text) == _KEY_LIKE.sub(REDACTED, text)
