"""The application factory worker processes import (``serve`` with ``workers`` > 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from litestar import Litestar

from adapter.app import create_app
from adapter.cli import SERVE_ARGS_VARIABLE
from adapter.logs import configure_logging
from adapter.server import HeaderDeadlineProtocol
from config import load_settings


def app_from_environment() -> Litestar:
    """Build the app from the config file and overrides the ``serve`` command handed down."""
    arguments = json.loads(os.environ.get(SERVE_ARGS_VARIABLE, "{}"))
    config = arguments.get("config") or None
    settings = load_settings(Path(config) if config else None, **arguments.get("overrides", {}))
    configure_logging(settings.log_level)
    HeaderDeadlineProtocol.deadline_s = settings.request_read_timeout
    return create_app(settings)
