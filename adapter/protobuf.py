"""Runtime checks of the two native fast paths: protobuf's upb backend (the pure-Python one is about
ten times slower) and the mapping compiled with mypyc (``DYNAMIQ_OTEL_USE_MYPYC=1`` at install)."""

from __future__ import annotations

import logging

from google.protobuf.internal import api_implementation

log = logging.getLogger("dynamiq_otel")


def protobuf_backend() -> str:
    """``upb``, ``cpp`` or ``python``."""
    return str(api_implementation.Type())


def mapping_build() -> str:
    """``mypyc`` when the mapping runs compiled, ``python`` when it runs from its sources."""
    from mapping import spans

    return "python" if spans.__file__.endswith(".py") else "mypyc"


def require_fast_protobuf() -> None:
    """Warn loudly when protobuf runs on its pure-Python backend."""
    backend = protobuf_backend()
    if backend == "python":
        log.warning(
            "protobuf uses its pure-Python backend (about 10x slower); unset "
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION or install a protobuf wheel for this platform"
        )
