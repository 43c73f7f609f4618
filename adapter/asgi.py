"""The application factory worker processes import (``serve`` with ``workers`` > 1)."""

from __future__ import annotations

import os

from litestar import Litestar

from adapter.app import create_app
from adapter.cli import SERVE_ARGS_VARIABLE, settings_from
from adapter.logs import configure_logging
from adapter.server import HeaderDeadlineProtocol


def app_from_environment() -> Litestar:
    """Build the app from the config file and overrides the ``serve`` command handed down."""
    settings = settings_from(os.environ.get(SERVE_ARGS_VARIABLE, ""))
    configure_logging(settings.log_level)
    HeaderDeadlineProtocol.deadline_s = settings.request_read_timeout
    return create_app(settings)
