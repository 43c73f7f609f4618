"""The ingest contract's validation: a request body -> validated runs, or every problem found.

Rules (``docs/api.md`` has the table): the body is a JSON object with a non-empty ``runs`` list;
each run needs non-blank string ``id``, ``name``, ``trace_id`` and ``source_id``, a ``type`` of
workflow/flow/node, RFC 3339 ``start_time`` and ``end_time`` (end not before start; no offset means
UTC) and a ``status`` of succeeded/failed/skipped/canceled. Blank means missing, null, or an empty or
whitespace-only string. Every other field is kept as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from mapping import RUN_STATUSES, RUN_TYPES, Run, parse_timestamp_ns

BLANK = "cannot be blank"
MAX_DETAILS = 1000
"""At most this many problems are listed; the rest are counted under ``more``."""

UNFINISHED_HINT = (
    "cannot be blank (unfinished runs are accepted when the setting accept_unfinished_runs / "
    "DYNAMIQ_OTEL_ACCEPT_UNFINISHED_RUNS is true)"
)
_REQUIRED_STRINGS = ("id", "name", "trace_id", "source_id")
_OPTIONAL_STRINGS = ("session_id", "parent_run_id")
_KNOWN = frozenset(
    {
        *_REQUIRED_STRINGS,
        *_OPTIONAL_STRINGS,
        "type",
        "start_time",
        "end_time",
        "status",
        "input",
        "output",
        "metadata",
        "error",
        "executions",
        "tags",
    }
)


class InvalidBatch(Exception):
    """The batch breaks the contract; ``details`` maps field paths to messages."""

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__(f"{len(details)} problem(s)")
        self.details = details


class TooManyRuns(Exception):
    """The batch holds more runs than ``max_runs_per_batch``."""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def parse_batch(body: bytes, *, accept_unfinished: bool, max_runs: int) -> list[Run]:
    """Parse and validate a request body.

    Raises:
        InvalidBatch: with every problem, keyed ``input``, ``runs`` or ``runs[i].field``.
        TooManyRuns: the batch is over ``max_runs``.
    """
    if not body.strip():
        raise InvalidBatch({"input": BLANK})
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBatch({"input": "must be valid JSON"}) from None
    if not isinstance(document, dict):
        raise InvalidBatch({"input": "must be a JSON object"})
    runs = document.get("runs")
    if runs == [] or _blank(runs):
        raise InvalidBatch({"runs": BLANK})
    if not isinstance(runs, list):
        raise InvalidBatch({"runs": "must be a list"})
    if len(runs) > max_runs:
        raise TooManyRuns(len(runs))
    problems: dict[str, str] = {}
    parsed: list[Run] = []
    for index, raw in enumerate(runs):
        run = _parse_run(raw, f"runs[{index}]", accept_unfinished, problems)
        if run is not None:
            parsed.append(run)
    if problems:
        raise InvalidBatch(_capped(problems))
    return parsed


def load_stored(body: bytes) -> list[Run]:
    """The runs of a stored batch, which ``parse_batch`` accepted at ingest.

    Every run goes through the one-pass check of valid runs only (unfinished runs allowed), with no
    per-field checks to fall back on: a body that does not pass it whole is handed to ``parse_batch``,
    so it raises ``InvalidBatch`` with the problems, as at ingest.
    """
    try:
        candidates = [_valid_run(raw, accept_unfinished=True) for raw in orjson.loads(body)["runs"]]
    except (KeyError, TypeError, ValueError):
        candidates = []
    runs = [run for run in candidates if run is not None]
    if runs and len(runs) == len(candidates):
        return runs
    return parse_batch(body, accept_unfinished=True, max_runs=1 << 62)


def _capped(problems: dict[str, str]) -> dict[str, str]:
    if len(problems) <= MAX_DETAILS:
        return problems
    kept = dict(list(problems.items())[:MAX_DETAILS])
    kept["more"] = f"{len(problems) - MAX_DETAILS} more problems not listed"
    return kept


def _parse_run(raw: Any, path: str, accept_unfinished: bool, problems: dict[str, str]) -> Run | None:
    run = _valid_run(raw, accept_unfinished)
    if run is not None:
        return run
    return _checked_run(raw, path, accept_unfinished, problems)


def _valid_run(raw: Any, accept_unfinished: bool) -> Run | None:
    """The run when every rule holds (the usual case, checked in one pass); None to look closer."""
    if type(raw) is not dict:
        return None
    get = raw.get
    run_id, name, trace_id, source_id = get("id"), get("name"), get("trace_id"), get("source_id")
    for value in (run_id, name, trace_id, source_id):
        if type(value) is not str or not value.strip():
            return None
    run_type, status, start_text, end_text = get("type"), get("status"), get("start_time"), get("end_time")
    if run_type not in RUN_TYPES or type(start_text) is not str:
        return None
    if status not in RUN_STATUSES and not (status is None and accept_unfinished):
        return None
    start_ns = parse_timestamp_ns(start_text)
    if end_text is None:
        end_ns = None
        if not accept_unfinished:
            return None
    else:
        end_ns = parse_timestamp_ns(end_text) if type(end_text) is str else None
        if end_ns is None:
            return None
    if start_ns is None or (end_ns is not None and end_ns < start_ns):
        return None
    optional: dict[str, str | None] = {}
    for key in _OPTIONAL_STRINGS:
        value = get(key)
        if value is None or (type(value) is str and not value.strip()):
            optional[key] = None
        elif type(value) in (str, int, float):
            optional[key] = str(value)
        else:
            return None
    strings = {"id": run_id, "name": name, "trace_id": trace_id, "source_id": source_id}
    return _build_run(raw, strings, optional, run_type, start_ns, end_ns, status)


def _checked_run(raw: Any, path: str, accept_unfinished: bool, problems: dict[str, str]) -> Run | None:
    if not isinstance(raw, dict):
        problems[path] = "must be an object"
        return None
    before = len(problems)
    strings = {name: _required_string(raw, name, path, problems) for name in _REQUIRED_STRINGS}
    optional = {name: _optional_string(raw, name, path, problems) for name in _OPTIONAL_STRINGS}
    run_type = _choice(raw, "type", RUN_TYPES, path, problems, allow_null=False)
    start_ns = _timestamp(raw, "start_time", path, problems, allow_null=False)
    end_ns = _timestamp(raw, "end_time", path, problems, allow_null=accept_unfinished)
    status = _choice(raw, "status", RUN_STATUSES, path, problems, allow_null=accept_unfinished)
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        problems[f"{path}.end_time"] = "must not be before start_time"
    if len(problems) > before:
        return None
    assert start_ns is not None and run_type is not None
    return _build_run(raw, strings, optional, run_type, start_ns, end_ns, status)


def _build_run(
    raw: Mapping[str, Any],
    strings: Mapping[str, str | None],
    optional: Mapping[str, str | None],
    run_type: str,
    start_ns: int,
    end_ns: int | None,
    status: str | None,
) -> Run:
    extra = {key: value for key, value in raw.items() if key not in _KNOWN}
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        extra["metadata"], metadata = metadata, None
    executions = raw.get("executions")
    if executions is not None and not isinstance(executions, list):
        extra["executions"], executions = executions, None
    tags = raw.get("tags")
    if isinstance(tags, str):
        tags = [tags]
    elif tags is not None and not isinstance(tags, list):
        extra["tags"], tags = tags, None
    return Run(
        id=str(strings["id"]),
        name=str(strings["name"]),
        type=run_type,
        trace_id=str(strings["trace_id"]),
        source_id=str(strings["source_id"]),
        start_ns=start_ns,
        end_ns=end_ns,
        status=status,
        session_id=optional["session_id"],
        parent_run_id=optional["parent_run_id"],
        input=raw.get("input"),
        output=raw.get("output"),
        metadata=metadata or {},
        error=raw.get("error"),
        executions=tuple(executions or ()),
        tags=tuple(tags or ()),
        extra=extra,
    )


def _required_string(raw: Mapping[str, Any], name: str, path: str, problems: dict[str, str]) -> str | None:
    value = raw.get(name)
    if _blank(value):
        problems[f"{path}.{name}"] = BLANK
        return None
    if not isinstance(value, str):
        problems[f"{path}.{name}"] = "must be a string"
        return None
    return value


def _optional_string(raw: Mapping[str, Any], name: str, path: str, problems: dict[str, str]) -> str | None:
    value = raw.get(name)
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems[f"{path}.{name}"] = "must be a string"
        return None
    return str(value)


def _choice(
    raw: Mapping[str, Any],
    name: str,
    allowed: tuple[str, ...],
    path: str,
    problems: dict[str, str],
    allow_null: bool,
) -> str | None:
    value = raw.get(name)
    if value is None and allow_null:
        return None
    if _blank(value):
        problems[f"{path}.{name}"] = UNFINISHED_HINT if value is None and name == "status" else BLANK
        return None
    if value not in allowed:
        problems[f"{path}.{name}"] = "must be one of: " + ", ".join(allowed)
        return None
    return str(value)


def _timestamp(raw: Mapping[str, Any], name: str, path: str, problems: dict[str, str], allow_null: bool) -> int | None:
    value = raw.get(name)
    if value is None and allow_null:
        return None
    if _blank(value):
        problems[f"{path}.{name}"] = UNFINISHED_HINT if value is None and name == "end_time" else BLANK
        return None
    parsed = parse_timestamp_ns(value) if isinstance(value, str) else None
    if parsed is None:
        problems[f"{path}.{name}"] = "must be a valid RFC 3339 timestamp"
    return parsed
