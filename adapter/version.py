"""The installed version of dynamiq-otel."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The version from the package metadata (``0+unknown`` when run from a bare checkout)."""
    try:
        return version("dynamiq-otel")
    except PackageNotFoundError:
        return "0+unknown"
