"""Fixtures of the fault tests: every process they start is stopped, whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import ReceiverProcess, Service


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[ReceiverProcess]:
    """A standalone recording receiver (NOT started: tests decide when the backend is up)."""
    receiver = ReceiverProcess(tmp_path)
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``make_service(settings)`` -> a Service (NOT started); every one is stopped at the end."""
    services: list[Service] = []

    def build(settings: dict[str, Any], name: str = "service", wrapper: Sequence[str] = ()) -> Service:
        service = Service(tmp_path, settings, name=name, wrapper=wrapper)
        services.append(service)
        return service

    try:
        yield build
    finally:
        for service in services:
            service.stop()
