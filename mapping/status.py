"""Run status -> OTLP status, ``error.type`` and the ``exception`` event."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from mapping.values import Attribute, scrub_text

JUNK_TRACEBACK = "NoneType: None"
"""What ``traceback.format_exc()`` returns outside an ``except`` block: not a stack trace."""

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|[A-Z]\w*))(?::\s?(.*))?$")


@dataclass(frozen=True, slots=True)
class Failure:
    """What is known about why a run (or attempt) failed."""

    message: str
    exception_type: str | None
    stacktrace: str | None


def failure_of(error: Any) -> Failure:
    """Read the SDK's ``{"message", "traceback"}`` error object (or anything else) into a Failure."""
    if isinstance(error, dict):
        message = error.get("message")
        traceback = error.get("traceback")
    else:
        message, traceback = error, None
    message_text = scrub_text(message if isinstance(message, str) else "" if message is None else str(message))
    stacktrace = traceback if isinstance(traceback, str) else None
    if stacktrace is not None and stacktrace.strip() in ("", JUNK_TRACEBACK):
        stacktrace = None
    if stacktrace is not None:
        stacktrace = scrub_text(stacktrace)
    return Failure(message_text, _exception_type(stacktrace), stacktrace)


def _exception_type(stacktrace: str | None) -> str | None:
    """The exception class named on the last ``Type: message`` line of a Python traceback."""
    if not stacktrace:
        return None
    for line in reversed(stacktrace.strip().splitlines()):
        if line.startswith((" ", "\t")):
            continue
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            return match.group(1)
    return None


def status_of(status: str | None, error: Any, ok_on_success: bool) -> tuple[Status, Failure | None]:
    """OTLP status of a run and, for failed or canceled runs, its failure."""
    if status == "failed":
        failure = failure_of(error)
        description = failure.message or failure.exception_type or "failed"
        return Status(code=Status.STATUS_CODE_ERROR, message=description), failure
    if status == "canceled":
        failure = failure_of(error)
        return Status(code=Status.STATUS_CODE_ERROR, message=failure.message or "canceled"), failure
    if status == "succeeded" and ok_on_success:
        return Status(code=Status.STATUS_CODE_OK), None
    return Status(code=Status.STATUS_CODE_UNSET), None


def error_type(status: str | None, failure: Failure | None) -> str | None:
    """``error.type``: the exception class of a failure, ``canceled``, or ``_OTHER``."""
    if status == "canceled":
        return "canceled"
    if status == "failed":
        return (failure.exception_type if failure else None) or "_OTHER"
    return None


def exception_attributes(failure: Failure) -> Iterator[Attribute]:
    """Attributes of the ``exception`` event, after the OpenTelemetry exception conventions."""
    yield "exception.type", failure.exception_type or "_OTHER"
    yield "exception.message", failure.message
    if failure.stacktrace:
        yield "exception.stacktrace", failure.stacktrace
