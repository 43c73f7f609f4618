"""Start Arize Phoenix with every listener on 127.0.0.1 only (the local trace viewer of the demo).

Runs with the Python of the venv that has ``arize-phoenix`` installed (``.venv-phoenix``)::

    .venv-phoenix/bin/python scripts/phoenix_local.py --port 6006 --grpc-port 4317 --data-dir .demo/phoenix

What it does before handing over to Phoenix's own ``phoenix serve``:

* binds the UI / REST / OTLP-over-HTTP server to 127.0.0.1 (``PHOENIX_HOST``);
* makes the OTLP gRPC server bind 127.0.0.1 too. Phoenix binds it to ``[::]:<grpc port>``, i.e. all
  interfaces, with no setting to change that (``phoenix/server/grpc_server.py``), so this launcher
  wraps ``grpc.aio.Server.add_insecure_port`` / ``add_secure_port`` to rewrite the host part of any
  address to ``127.0.0.1`` before Phoenix starts;
* keeps all of Phoenix's state (its SQLite database) in ``--data-dir`` (``PHOENIX_WORKING_DIR``);
* turns telemetry and every other request to the internet off (``PHOENIX_TELEMETRY_ENABLED=false``,
  ``PHOENIX_ALLOW_EXTERNAL_RESOURCES=false``);
* ignores every other ``PHOENIX_*`` variable of the caller's environment (a database URL, auth,
  TLS, Prometheus, a root path, ...), so the demo's Phoenix is always the same plain local one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
"""The repository root (this file is ``scripts/phoenix_local.py``)."""
LOOPBACK = "127.0.0.1"
"""The only address any Phoenix listener binds."""
DEFAULT_PORT = 6006
DEFAULT_GRPC_PORT = 4317
DEFAULT_DATA_DIR = REPO / ".demo" / "phoenix"


def loopback_address(address: str) -> str:
    """``address`` (``host:port``, ``[v6]:port`` or ``:port``) with its host replaced by 127.0.0.1."""
    _, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"gRPC bind address {address!r} has no port")
    return f"{LOOPBACK}:{port}"


def patch_grpc_binds() -> None:
    """Make every grpc.aio server of this process bind 127.0.0.1, whatever address it asks for."""
    try:
        from grpc.aio import _server
    except ImportError as exc:  # pragma: no cover - grpcio is a dependency of arize-phoenix
        raise SystemExit(f"phoenix_local: cannot import grpc.aio ({exc}); is arize-phoenix installed?") from exc
    server_class: Any = getattr(_server, "Server", None)
    if server_class is None or not hasattr(server_class, "add_insecure_port"):
        raise SystemExit(
            "phoenix_local: grpc.aio._server.Server.add_insecure_port not found: this grpcio version is not "
            "supported by the loopback patch (Phoenix's gRPC port would bind every interface)"
        )

    def wrap(original: Callable[..., int]) -> Callable[..., int]:
        def bind_loopback(self: Any, address: str, *args: Any, **kwargs: Any) -> int:
            return original(self, loopback_address(address), *args, **kwargs)

        bind_loopback.__name__ = original.__name__
        bind_loopback.__doc__ = original.__doc__
        return bind_loopback

    server_class.add_insecure_port = wrap(server_class.add_insecure_port)
    server_class.add_secure_port = wrap(server_class.add_secure_port)


def phoenix_environment(environ: dict[str, str], port: int, grpc_port: int, data_dir: Path) -> dict[str, str]:
    """``environ`` without any ``PHOENIX_*`` variable, plus the demo's Phoenix settings."""
    env = {name: value for name, value in environ.items() if not name.upper().startswith("PHOENIX_")}
    env.update(
        {
            "PHOENIX_HOST": LOOPBACK,
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": str(data_dir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
            "PHOENIX_ENABLE_PROMETHEUS": "false",
            "PHOENIX_ENABLE_AUTH": "false",
            "PHOENIX_LOG_MIGRATIONS": "false",  # not every SQL statement of the first start in the log
        }
    )
    return env


def _port(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port number")
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run Arize Phoenix with every listener on 127.0.0.1.")
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("PHOENIX_PORT", str(DEFAULT_PORT)),  # argparse applies type= to a str default
        help="UI, REST API and OTLP/HTTP port (default: $PHOENIX_PORT or %(default)s)",
    )
    parser.add_argument(
        "--grpc-port",
        type=_port,
        default=os.environ.get("PHOENIX_GRPC_PORT", str(DEFAULT_GRPC_PORT)),  # argparse applies type= to a str default
        help="OTLP/gRPC port (default: $PHOENIX_GRPC_PORT or %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PHOENIX_WORKING_DIR", DEFAULT_DATA_DIR)),
        help="Phoenix's working directory: its SQLite database lives here (default: .demo/phoenix)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Configure the environment, patch gRPC, then run ``phoenix serve`` in this process."""
    args = _parser().parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = phoenix_environment(dict(os.environ), args.port, args.grpc_port, data_dir)
    os.environ.clear()
    os.environ.update(env)
    print(
        f"phoenix_local: starting Phoenix on http://{LOOPBACK}:{args.port} (OTLP/HTTP at /v1/traces), "
        f"OTLP/gRPC on {LOOPBACK}:{args.grpc_port}, data in {data_dir}",
        flush=True,
    )
    patch_grpc_binds()
    try:
        from phoenix.server.main import main as phoenix_main
    except ImportError as exc:
        raise SystemExit(
            f"phoenix_local: cannot import Phoenix ({exc}); run this with the Python of the venv that has "
            "arize-phoenix installed (bash scripts/demo.sh creates .venv-phoenix)"
        ) from exc
    sys.argv = ["phoenix", "serve"]
    phoenix_main()


if __name__ == "__main__":
    main()
