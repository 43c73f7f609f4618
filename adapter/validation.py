"""The ingest contract's validation: a request body -> validated runs, or every problem found.

Rules (``docs/api.md`` has the table): the body is a JSON object with a non-empty ``runs`` list;
each run needs non-blank string ``id``, ``name``, ``trace_id`` and ``source_id``, a ``type`` of
workflow/flow/node, RFC 3339 ``start_time`` and ``end_time`` (end not before start; no offset means
UTC) and a ``status`` of succeeded/failed/skipped/canceled. Blank means missing, null, or an empty or
whitespace-only string. Every other field is kept as sent.

Two entry points share the rules: ``parse_batch`` builds the runs (the export's read-back, ``load_stored``,
and every body that fails), ``check_batch`` only counts the runs of a valid body, which is all ingest needs
before the body is stored as sent. ``check_batch`` decodes the ten fields the rules read and skips the
content (input, output, metadata, ...) unread, at a fraction of the cost; whatever it is not sure of goes to
``parse_batch``, so the verdict and the error body are the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
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


def check_batch(body: bytes, *, accept_unfinished: bool, max_runs: int) -> int:
    """The number of runs in a body that ``parse_batch`` accepts; its exceptions otherwise.

    Ingest stores the body as sent and needs only the verdict and the count: the fields the rules read are
    decoded, the rest is skipped. Anything the quick check does not clearly accept is handed to
    ``parse_batch``, so the problems reported are its own.
    """
    count = _quick_count(body, accept_unfinished, max_runs)
    if count is not None:
        return count
    return len(parse_batch(body, accept_unfinished=accept_unfinished, max_runs=max_runs))


class _Head(msgspec.Struct, gc=False):
    """The fields of a run that the rules read; msgspec skips every other one, checking its syntax only."""

    id: Any = None
    name: Any = None
    trace_id: Any = None
    source_id: Any = None
    type: Any = None
    status: Any = None
    start_time: Any = None
    end_time: Any = None
    session_id: Any = None
    parent_run_id: Any = None


class _Heads(msgspec.Struct, gc=False):
    runs: list[_Head]


_HEADS = msgspec.json.Decoder(_Heads)
_NUMBER_MASK = bytes.maketrans(b"0123456789E", b"0000000000e")
_LONG_DIGITS = b"0" * 200
_BEFORE_NUMBER = frozenset(b" \t\n\r:,[")
_MANTISSA = frozenset(b"0.")


def _quick_count(body: bytes, accept_unfinished: bool, max_runs: int) -> int | None:
    """The run count when the body is valid and the one-pass check is sure of it, else None."""
    try:
        heads = _HEADS.decode(body).runs
    except (msgspec.DecodeError, RecursionError):
        return None
    if not heads or len(heads) > max_runs or not _orjson_takes_skipped(body):
        return None
    for head in heads:
        fields = _valid_fields(
            head.id,
            head.name,
            head.trace_id,
            head.source_id,
            head.type,
            head.status,
            head.start_time,
            head.end_time,
            head.session_id,
            head.parent_run_id,
            accept_unfinished,
        )
        if fields is None:
            return None
    return len(heads)


def _orjson_takes_skipped(body: bytes) -> bool:
    """False when the parts msgspec skipped might hold what orjson refuses (so ``parse_batch`` decides).

    msgspec checks the grammar of what it skips (escapes, control characters, number syntax) but not
    UTF-8, and does not convert skipped numbers; orjson refuses invalid UTF-8 and numbers beyond a float's
    range (``1e309``, integers of 310 digits). Such a number has an exponent of three or more digits or a
    run of at least 200 digits. False alarms (``5e123`` in text) only cost the slow path.
    """
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError:
            return False
    masked = body.translate(_NUMBER_MASK, b"+")  # digits as 0, E as e, no + (only exponents have one)
    if _LONG_DIGITS in masked:
        return False
    at = masked.find(b"0e000")
    while at != -1:
        if _is_number_start(masked, at):
            return False
        at = masked.find(b"0e000", at + 1)
    return True


def _is_number_start(masked: bytes, last_digit: int) -> bool:
    """Whether the digits ending at ``last_digit`` may begin a JSON number rather than sit inside a word."""
    at = last_digit
    lowest = max(0, last_digit - 64)
    while at > lowest and masked[at - 1] in _MANTISSA:
        at -= 1
    if at == lowest:
        return True  # a mantissa of 64 characters or more, or the body's start: assume the worst
    if masked[at - 1] == 0x2D:  # a minus sign
        at -= 1
    return at == 0 or masked[at - 1] in _BEFORE_NUMBER


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
    run_type, status = get("type"), get("status")
    fields = _valid_fields(
        run_id,
        name,
        trace_id,
        source_id,
        run_type,
        status,
        get("start_time"),
        get("end_time"),
        get("session_id"),
        get("parent_run_id"),
        accept_unfinished,
    )
    if fields is None:
        return None
    start_ns, end_ns, session_id, parent_run_id = fields
    strings = {"id": run_id, "name": name, "trace_id": trace_id, "source_id": source_id}
    optional = {"session_id": session_id, "parent_run_id": parent_run_id}
    return _build_run(raw, strings, optional, str(run_type), start_ns, end_ns, status)


def _valid_fields(
    run_id: Any,
    name: Any,
    trace_id: Any,
    source_id: Any,
    run_type: Any,
    status: Any,
    start_text: Any,
    end_text: Any,
    session_id: Any,
    parent_run_id: Any,
    accept_unfinished: bool,
) -> tuple[int, int | None, str | None, str | None] | None:
    """Start and end ns, session and parent id when every rule holds for these values; None otherwise."""
    for value in (run_id, name, trace_id, source_id):
        if type(value) is not str or not value.strip():
            return None
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
    optional: list[str | None] = []
    for value in (session_id, parent_run_id):
        if value is None or (type(value) is str and not value.strip()):
            optional.append(None)
        elif type(value) in (str, int, float):
            optional.append(str(value))
        else:
            return None
    return start_ns, end_ns, optional[0], optional[1]


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
