"""``dynamiq-otel``: serve, check-config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from adapter.logs import configure_logging
from config import SettingsError, load_settings, masked

log = logging.getLogger("dynamiq_otel")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamiq-otel", description="Dynamiq traces -> OpenTelemetry (OTLP).")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--config", type=Path, help="YAML configuration file")
    serve.add_argument("--host", help="bind address (overrides the host setting)")
    serve.add_argument("--port", type=int, help="port (overrides the port setting)")
    check = commands.add_parser("check-config", help="validate the configuration and print the effective settings")
    check.add_argument("--config", type=Path, help="YAML configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    overrides = {key: value for key in ("host", "port") if (value := getattr(args, key, None)) is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"dynamiq-otel: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(masked(settings), indent=2, sort_keys=True))
        return 0
    return _serve(settings)


def _serve(settings: object) -> int:
    import uvicorn

    from adapter.app import create_app
    from adapter.protobuf import require_fast_protobuf
    from config import Settings

    assert isinstance(settings, Settings)
    configure_logging(settings.log_level)
    require_fast_protobuf()
    app = create_app(settings)
    log.info(
        "starting",
        extra={
            "listen": f"{settings.host}:{settings.port}",
            "export": f"{settings.otlp_protocol} {settings.traces_endpoint}",
            "store": str(settings.store_path),
        },
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
