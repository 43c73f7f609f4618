"""Deterministic OpenTelemetry ids from Dynamiq ids.

* Trace id: the 128 bits of ``trace_id`` when it is a UUID (any letter case, with or without
  hyphens) or 32 hex digits, unless those are all zero; otherwise the first 16 bytes of
  SHA-256(``"dynamiq-otel:trace:" + trace_id``).
* Span id: the first 8 bytes of SHA-256(``"dynamiq-otel:span:" + run_id``), where a run id that is
  a UUID is first written in its canonical lower-case hyphenated form, so the same run always has
  the same span id, in whatever batch its parent or child arrives.
* An all-zero result (invalid in OTLP; probability 2^-64) has its last byte set to 1.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from functools import lru_cache

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CACHED = 8192
"""Ids remembered per function: a run's id comes back as its children's parent, its trace id with
every run of the trace, so a batch computes most of them once (a pure cache: same result)."""


def _not_zero(raw: bytes) -> bytes:
    return raw if any(raw) else raw[:-1] + b"\x01"


@lru_cache(maxsize=_CACHED)
def canonical_id(value: str) -> str:
    """The canonical form of a Dynamiq id: lower-case hyphenated when it is a UUID, else itself."""
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


@lru_cache(maxsize=_CACHED)
def trace_id_bytes(trace_id: str) -> bytes:
    """The 16-byte OpenTelemetry trace id of a Dynamiq ``trace_id``."""
    raw: bytes | None = None
    if _HEX32.match(trace_id):
        raw = bytes.fromhex(trace_id)
    else:
        try:
            raw = uuid.UUID(trace_id).bytes
        except ValueError:
            raw = None
    if raw is None or not any(raw):
        raw = hashlib.sha256(f"dynamiq-otel:trace:{trace_id}".encode()).digest()[:16]
    return _not_zero(raw)


@lru_cache(maxsize=_CACHED)
def span_id_bytes(run_id: str) -> bytes:
    """The 8-byte OpenTelemetry span id of a Dynamiq run (or execution) id."""
    digest = hashlib.sha256(f"dynamiq-otel:span:{canonical_id(run_id)}".encode()).digest()
    return _not_zero(digest[:8])
