"""The protobuf runtime check: the pure-Python backend is about ten times slower than upb."""

from __future__ import annotations

import logging

from google.protobuf.internal import api_implementation

log = logging.getLogger("dynamiq_otel")


def protobuf_backend() -> str:
    """``upb``, ``cpp`` or ``python``."""
    return str(api_implementation.Type())


def require_fast_protobuf() -> None:
    """Warn loudly when protobuf runs on its pure-Python backend."""
    backend = protobuf_backend()
    if backend == "python":
        log.warning(
            "protobuf uses its pure-Python backend (about 10x slower); unset "
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION or install a protobuf wheel for this platform"
        )
