"""OTLP transports: send one serialised ``ExportTraceServiceRequest``, classify the answer.

We build the protobuf request ourselves (``mapping``) and send it with these thin clients rather
than through the SDK's span exporters: the SDK exporters take ``ReadableSpan`` objects (a second,
slower encoding path) and retry internally with sleeps, while delivery here needs the answer
classified and the decision (retry when, dead-letter, ack) made against the durable store. The
classification follows the OTLP specification's retry rules for both transports.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import time
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from urllib.parse import urlsplit

import grpc
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
"""The OTLP/gRPC trace export method."""

RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
"""HTTP statuses the OTLP specification says to retry."""

RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""gRPC codes the OTLP specification says to retry (RESOURCE_EXHAUSTED only with RetryInfo)."""


class Outcome(Enum):
    """What the delivery step must do with the batches of a request."""

    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The classified answer of one export request."""

    outcome: Outcome
    status: str
    detail: str = ""
    retry_after: float | None = None
    rejected_spans: int = 0


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Where and how to send; built from the settings by ``transport_from_settings``."""

    protocol: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    timeout_s: float
    gzip: bool
    insecure: bool | None = None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None


class Transport(Protocol):
    """Sends one request."""

    def send(self, request: bytes) -> ExportResult:
        """Send one serialised ``ExportTraceServiceRequest``."""
        ...

    def close(self) -> None: ...


def _partial(response: ExportTraceServiceResponse, status: str) -> ExportResult:
    rejected = response.partial_success.rejected_spans if response.HasField("partial_success") else 0
    detail = response.partial_success.error_message if rejected or response.HasField("partial_success") else ""
    return ExportResult(Outcome.DELIVERED, status, detail, rejected_spans=rejected)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


class HttpTransport:
    """OTLP/HTTP with binary protobuf."""

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._session = requests.Session()
        self._session.headers.update(dict(config.headers))
        self._session.headers["Content-Type"] = "application/x-protobuf"
        if config.gzip:
            self._session.headers["Content-Encoding"] = "gzip"
        if config.certificate:
            self._session.verify = config.certificate
        if config.client_certificate and config.client_key:
            self._session.cert = (config.client_certificate, config.client_key)

    def send(self, request: bytes) -> ExportResult:
        body = request
        if self._config.gzip:
            body = gzip.compress(body, compresslevel=6)
        try:
            answer = self._session.post(self._config.endpoint, data=body, timeout=self._config.timeout_s)
        except requests.RequestException as exc:
            return ExportResult(Outcome.RETRY, "connection", f"{type(exc).__name__}: {exc}")
        status = f"http {answer.status_code}"
        if 200 <= answer.status_code < 300:
            response = ExportTraceServiceResponse()
            try:
                response.ParseFromString(answer.content)
            except Exception:  # a 2xx whose body is not the response message still means accepted
                return ExportResult(Outcome.DELIVERED, status)
            return _partial(response, status)
        detail = _http_error_detail(answer)
        if answer.status_code in RETRYABLE_HTTP:
            return ExportResult(Outcome.RETRY, status, detail, parse_retry_after(answer.headers.get("Retry-After")))
        return ExportResult(Outcome.REJECTED, status, detail)

    def close(self) -> None:
        self._session.close()


def _http_error_detail(answer: requests.Response) -> str:
    """The backend's reason: the ``google.rpc.Status`` message OTLP/HTTP sends, else readable text."""
    content_type = answer.headers.get("Content-Type", "")
    if "protobuf" in content_type:
        status = status_pb2.Status()
        with contextlib.suppress(Exception):  # not a Status after all: fall through to a safe rendering
            status.ParseFromString(answer.content)
            return str(status.message)[:500]
    text = answer.content[:500].decode("utf-8", "replace")
    return "".join(char if char.isprintable() else " " for char in text).strip()


class GrpcTransport:
    """OTLP/gRPC."""

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        parts = urlsplit(config.endpoint)
        target = parts.netloc or parts.path
        insecure = config.insecure if config.insecure is not None else parts.scheme == "http"
        compression = grpc.Compression.Gzip if config.gzip else grpc.Compression.NoCompression
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if insecure:
            self._channel = grpc.insecure_channel(target, options=options, compression=compression)
        else:
            self._channel = grpc.secure_channel(target, _credentials(config), options=options, compression=compression)
        # No request serialiser: the request arrives serialised (gRPC sends bytes as they are).
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )
        self._metadata = tuple((name.lower(), value) for name, value in config.headers)

    def send(self, request: bytes) -> ExportResult:
        try:
            response = self._export(request, timeout=self._config.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            return _classify_rpc_error(exc)
        return _partial(response, "grpc OK")

    def close(self) -> None:
        self._channel.close()


def _credentials(config: TransportConfig) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(config.certificate),
        private_key=read(config.client_key),
        certificate_chain=read(config.client_certificate),
    )


def _classify_rpc_error(exc: grpc.RpcError) -> ExportResult:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    status = f"grpc {code.name}"
    delay = _retry_info_delay(exc)
    if code in RETRYABLE_GRPC:
        return ExportResult(Outcome.RETRY, status, detail or "", delay)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
        return ExportResult(Outcome.RETRY, status, detail or "", delay)
    return ExportResult(Outcome.REJECTED, status, detail or "")


def _retry_info_delay(exc: grpc.RpcError) -> float | None:
    """The delay of a ``google.rpc.RetryInfo`` in the error's status details, if any."""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def make_transport(config: TransportConfig) -> Transport:
    """The transport for ``config.protocol``."""
    if config.protocol == "grpc":
        return GrpcTransport(config)
    return HttpTransport(config)
