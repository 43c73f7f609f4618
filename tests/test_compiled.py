"""The mapping compiled with mypyc (``DYNAMIQ_OTEL_USE_MYPYC=1``, what the container image ships).

mypyc turns the mapping's type annotations into runtime checks and its classes into native ones, so
the compiled build is a different program from the sources the rest of the suite runs. This test
builds a wheel of a copy of the project the way the image does (``pip wheel`` with build isolation:
a fresh build environment from the package index, as ``pip install .`` makes one), puts the compiled
modules of that wheel next to the copy's sources, and runs every fast test against them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", "__pycache__", "*.pyc", "*.so", "build", "dist", "*.egg-info",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".demo", "bench-results", "dynamiq-otel-data",
)  # fmt: skip

pytestmark = pytest.mark.e2e


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | env
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)


@pytest.mark.timeout(1200)
def test_the_compiled_mapping_passes_every_fast_test(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=SKIP)

    # From a fresh virtual environment, like the image's build stage: with the service's dependencies
    # installed, mypyc would find them there even when the build requirements lack them.
    builder = tmp_path / "builder"
    made = _run([sys.executable, "-m", "venv", str(builder)], tmp_path)
    assert made.returncode == 0, made.stderr
    wheels = tmp_path / "wheels"
    pip = [str(builder / "bin" / "python"), "-m", "pip"]
    command = [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), "."]
    build = _run(command, copy, DYNAMIQ_OTEL_USE_MYPYC="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = wheels.glob("dynamiq_otel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        native = [name for name in archive.namelist() if name.endswith(".so")]
        for name in native:
            archive.extract(name, copy)
    assert any(name.startswith("dynamiq_otel_mapping__mypyc.") for name in native), native
    modules = sorted(path.stem for path in (ROOT / "mapping").glob("*.py"))
    compiled = sorted(path.name.split(".")[0] for path in (copy / "mapping").glob("*.so"))
    assert compiled == modules, "every module of the mapping is compiled"

    probe = "from adapter.protobuf import mapping_build; from mapping import spans; "
    probe += "print(mapping_build(), spans.__file__)"
    which = _run([sys.executable, "-c", probe], copy)
    assert which.returncode == 0, which.stderr
    build_name, spans_file = which.stdout.split()
    assert build_name == "mypyc"
    assert Path(spans_file).parent == copy / "mapping" and spans_file.endswith(".so")

    # The fast tests (everything but e2e) against the compiled copy; the static checks look at the
    # sources, which are the same as here.
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not e2e", "-p", "no:cacheprovider"]
    tests = _run([*command, "--ignore=tests/test_static.py", "tests"], copy)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
