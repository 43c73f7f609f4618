"""The public error envelope and the one map from failures to HTTP answers.

Every non-200 answer has the body ``{"error": {"code", "message", "details"?}}``, the shape the
Dynamiq collector uses, so a client sees the same thing whatever went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

log = logging.getLogger("dynamiq_otel.errors")

MESSAGES = {
    400: ("bad_request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not_found", "Not Found"),
    405: ("method_not_allowed", "Method Not Allowed"),
    408: ("request_timeout", "Request Timeout"),
    413: ("payload_too_large", "Payload Too Large"),
    415: ("unsupported_media_type", "Unsupported Media Type"),
    429: ("too_many_requests", "Too Many Requests"),
    500: ("internal", "Internal Server Error"),
    503: ("unavailable", "Service Unavailable"),
}
"""HTTP status -> (error code, message) of the envelope."""


class ApiError(Exception):
    """A failure with a place in the public contract."""

    def __init__(
        self,
        status: int,
        details: Mapping[str, str] | None = None,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(MESSAGES[status][1])
        self.status = status
        self.details = dict(details) if details else None
        self.retry_after = retry_after
        self.headers = dict(headers or {})


def envelope(status: int, details: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The error body for ``status``."""
    code, message = MESSAGES.get(status, MESSAGES[500] if status >= 500 else MESSAGES[400])
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = dict(details)
    return {"error": error}


def error_response(
    status: int,
    details: Mapping[str, str] | None = None,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """A JSON response carrying the envelope."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    return Response(envelope(status, details), status_code=status, media_type=MediaType.JSON, headers=all_headers)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    """Exception handler for ApiError."""
    return error_response(exc.status, exc.details, exc.retry_after, exc.headers)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Exception handler for Litestar's own errors (404, 405, …): same envelope."""
    status = exc.status_code if exc.status_code in MESSAGES else (500 if exc.status_code >= 500 else 400)
    allow = {name.lower(): value for name, value in (exc.headers or {}).items()}.get("allow")
    headers = {"Allow": allow} if allow else None
    return error_response(status, headers=headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Last resort: log the bug (without the body) and answer the ``internal`` envelope."""
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return error_response(500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
"""The one mapping from failures to answers, given to the app."""
