"""``dynamiq-otel``: serve, check-config, dead-letter list|replay|purge."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from adapter.logs import configure_logging
from config import Settings, SettingsError, load_settings, masked
from config.loading import unknown_variables

log = logging.getLogger("dynamiq_otel")

SERVE_ARGS_VARIABLE = "DYNAMIQ_OTEL_SERVE_ARGUMENTS"
"""How ``serve`` hands its config file and overrides to worker processes (internal)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamiq-otel", description="Dynamiq traces -> OpenTelemetry (OTLP).")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--config", type=Path, help="YAML configuration file")
    serve.add_argument("--host", help="bind address (overrides the host setting)")
    serve.add_argument("--port", type=int, help="port (overrides the port setting)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides the workers setting)")
    check = commands.add_parser("check-config", help="validate the configuration and print the effective settings")
    check.add_argument("--config", type=Path, help="YAML configuration file")
    dead = commands.add_parser("dead-letter", help="batches the backend rejected for good")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("--config", type=Path, help="YAML configuration file (for data_dir)")
    dead.add_argument("--id", type=int, action="append", dest="ids", help="only this batch id (repeatable)")
    dead.add_argument("--all", action="store_true", help="replay or purge every dead-lettered batch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    overrides = {key: value for key in ("host", "port", "workers") if (value := getattr(args, key, None)) is not None}
    if args.command == "dead-letter":
        overrides["auth_disabled"] = True  # the store is all this command needs; no key is involved
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"dynamiq-otel: {exc}", file=sys.stderr)
        return 2
    for name in unknown_variables(os.environ):
        print(f"dynamiq-otel: warning: unknown variable {name} is ignored", file=sys.stderr)
    if args.command == "check-config":
        print(json.dumps(masked(settings), indent=2, sort_keys=True))
        return 0
    if args.command == "dead-letter":
        return _dead_letter(settings, args.action, args.ids, args.all)
    return _serve(settings, args.config, overrides)


def _dead_letter(settings: Settings, action: str, ids: list[int] | None, every: bool) -> int:
    from adapter.store import Store

    if not settings.store_path.exists():
        print(f"dynamiq-otel: no store at {settings.store_path}", file=sys.stderr)
        return 2
    store = Store(
        settings.store_path,
        max_bytes=settings.store_max_bytes,
        max_batches=settings.store_max_batches,
        sync=settings.store_sync,
        secure_delete=settings.store_secure_delete,  # a purge then zeroes what it deletes, too
    )
    store.open()
    try:
        if action == "list":
            rows = store.dead_letters()
            print(f"{'id':>8}  {'received (UTC)':<26}  {'runs':>5}  last error")
            for batch_id, received_ns, runs, error in rows:
                received = datetime.fromtimestamp(received_ns / 1e9, UTC).isoformat(timespec="seconds")
                print(f"{batch_id:>8}  {received:<26}  {runs:>5}  {error[:120]}")
            print(f"{len(rows)} dead-lettered batch(es)")
            return 0
        if not ids and not every:
            print(f"dynamiq-otel: dead-letter {action} needs --id N or --all", file=sys.stderr)
            return 2
        done = store.replay(ids) if action == "replay" else store.purge_dead(ids)
        verb = "queued again for export" if action == "replay" else "deleted"
        print(f"{done} batch(es) {verb}")
        return 0
    finally:
        store.close()


def serve_arguments(config_file: Path | None, overrides: dict[str, Any]) -> str:
    """The config file and command-line overrides, as handed to worker and export processes."""
    return json.dumps({"config": str(config_file or ""), "overrides": overrides})


def settings_from(arguments: str) -> Settings:
    """The settings a worker or export process loads from ``serve_arguments``' text."""
    parsed = json.loads(arguments or "{}")
    config = parsed.get("config") or None
    return load_settings(Path(config) if config else None, **parsed.get("overrides", {}))


def _serve(settings: Settings, config_file: Path | None, overrides: dict[str, Any]) -> int:
    import uvicorn

    from adapter.protobuf import mapping_build, require_fast_protobuf

    configure_logging(settings.log_level)
    require_fast_protobuf()
    log.info(
        "starting",
        extra={
            "listen": f"{settings.host}:{settings.port}",
            "workers": settings.workers,
            "export_processes": settings.export_processes,
            "export": f"{settings.otlp_protocol} {settings.traces_endpoint}",
            "store": str(settings.store_path),
            "mapping": mapping_build(),
        },
    )
    from adapter.server import PROTOCOL, HeaderDeadlineProtocol

    HeaderDeadlineProtocol.deadline_s = settings.request_read_timeout
    common: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_config": None, "http": PROTOCOL,
                              "timeout_graceful_shutdown": int(settings.shutdown_grace) + 5}  # fmt: skip
    arguments = serve_arguments(config_file, overrides)
    if settings.workers > 1 or settings.export_processes:
        _prepare_multiprocess_metrics(settings)  # before the metrics module is imported in this process
    exporters = None
    if settings.export_processes:
        from adapter.exporter import ExportProcesses

        exporters = ExportProcesses(settings.export_processes, arguments)
        exporters.start()
    try:
        if settings.workers > 1:
            os.environ[SERVE_ARGS_VARIABLE] = arguments
            uvicorn.run("adapter.asgi:app_from_environment", factory=True, workers=settings.workers, **common)
        else:
            _serve_here(settings, common)
    finally:
        if exporters is not None:  # after the workers: every request that got a 200 is in the store
            exporters.stop(settings.shutdown_grace)
    return 0


def _serve_here(settings: Settings, common: dict[str, Any]) -> None:
    import uvicorn

    from adapter.app import begin_shutdown, create_app

    app = create_app(settings)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            begin_shutdown(app)  # batches arriving while we drain get 503 + Retry-After
            super().handle_exit(sig, frame)
            # SIGTERM is the normal way to stop a service: after a clean drain, exit 0 instead of
            # letting uvicorn re-raise the signal (SIGINT is still re-raised, as Ctrl-C expects).
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    _Server(uvicorn.Config(app, **common)).run()


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    directory = settings.data_dir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


if __name__ == "__main__":
    raise SystemExit(main())
