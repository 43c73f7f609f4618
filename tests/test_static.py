"""Static checks run with the suite: lint, format, strict types, and docs in step with the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(BIN / "ruff"), "check", "."], id="ruff-check"),
        pytest.param([str(BIN / "ruff"), "format", "--check", "adapter", "mapping", "config"], id="ruff-format"),
        pytest.param([str(BIN / "mypy")], id="mypy-strict"),
        pytest.param([sys.executable, "scripts/gen_config_docs.py", "--check"], id="config-docs-fresh"),
    ],
)
def test_static(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
