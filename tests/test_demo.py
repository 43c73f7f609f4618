"""The README's first command, run non-interactively: ``scripts/demo.py --check`` with a real Phoenix.

It starts Arize Phoenix (from ``.venv-phoenix``, which ``bash scripts/demo.sh`` creates) and
``dynamiq-otel serve`` on loopback ports, posts the sample Dynamiq batches, and passes only when
Phoenix's REST API shows every run as one span with the right parent, and no listener of either
process is outside 127.0.0.1. Its data, logs and config go to a temporary directory, so a demo
running in ``.demo`` at the same time is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PHOENIX_PYTHON = REPO / ".venv-phoenix" / "bin" / "python"
DEMO = REPO / "scripts" / "demo.py"


def _require_phoenix() -> None:
    """Skip without ``.venv-phoenix`` on a developer's machine; fail in CI, where it must exist."""
    if PHOENIX_PYTHON.exists():
        return
    message = (
        ".venv-phoenix does not exist: run `bash scripts/demo.sh --check` once "
        "(it installs Arize Phoenix from PyPI into .venv-phoenix)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must create it before the tests run")
    pytest.skip(message)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_demo_check_passes(tmp_path: Path) -> None:
    _require_phoenix()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DYNAMIQ_OTEL_"))}
    result = subprocess.run(
        [sys.executable, str(DEMO), "--check", "--timeout", "60", "--demo-dir", str(tmp_path / "demo")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, report
    assert "PASS:" in result.stdout, report
