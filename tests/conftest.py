"""Shared fixtures: a clean environment, settings on a temporary store, a recording OTLP receiver."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from tests.otlp_receiver import RecordingReceiver

ACCESS_KEY = "test-access-key-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* or DYNAMIQ_OTEL_* variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "DYNAMIQ_OTEL_")):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    """A real OTLP receiver (gRPC and HTTP) on free loopback ports."""
    with RecordingReceiver() as rx:
        yield rx


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a temporary store, one access key, fast retries; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "access_keys": [ACCESS_KEY],
            "retry_initial_backoff": 0.05,
            "retry_max_backoff": 0.2,
            "otlp_timeout": 5000,
        }
        values.update(overrides)
        return load_settings(None, **values)

    return build
