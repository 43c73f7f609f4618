#!/usr/bin/env bash
# The one command: see a Dynamiq trace in a real UI (Arize Phoenix), served by dynamiq-otel.
#
#   bash scripts/demo.sh                 # start Phoenix + dynamiq-otel, post sample traces, Ctrl-C to stop
#   bash scripts/demo.sh --check         # the same, non-interactively: verify in Phoenix, PASS/FAIL, stop
#   bash scripts/demo.sh --keep-data     # keep Phoenix's and the service's data from the last run
#   bash scripts/demo.sh --help          # every option of scripts/demo.py
#
# Needs only Python >= 3.11 with its venv module and pip (no root, no Docker). The first run creates
#   .venv          the project (pip install -e .)
#   .venv-phoenix  Arize Phoenix from PyPI, in its own venv (its dependencies are not the service's)
# and later runs reuse them unless they are missing or outdated, so they start in seconds.
# Set PYTHON=/path/to/python3.11 to choose the interpreter that creates the venvs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Tested with arize-phoenix 20.26.1 (REST GET /v1/projects/{id}/spans; the gRPC bind patch of phoenix_local.py).
# scripts/phoenix-requirements.txt, when it exists, wins: scripts/test.sh installs .venv-phoenix from it.
PHOENIX_REQUIREMENT="arize-phoenix>=20.26,<21"
PHOENIX_REQUIREMENTS_FILE="scripts/phoenix-requirements.txt"
PROJECT_VENV=".venv"
PHOENIX_VENV=".venv-phoenix"
STAMP_NAME=".dynamiq-otel-demo.stamp"

say() { printf 'demo.sh: %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# venv_usable DIR: its python runs and has pip.
venv_usable() {
    [ -x "$1/bin/python" ] && "$1/bin/python" -c 'import pip' >/dev/null 2>&1
}

create_venv() {
    local dir="$1" python
    python="$(find_python)" || die "no Python >= 3.11 found (tried \$PYTHON, python3.11, python3.12, python3.13, python3)"
    say "creating $dir with $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    if ! "$python" -m venv --clear "$dir"; then
        die "'$python -m venv $dir' failed. On Debian/Ubuntu the venv module is a separate package: \
apt-get install python3-venv (or python3.11-venv), then run this again."
    fi
}

# pip_install DIR LOG ARGS...: install quietly; on failure show the end of the log.
pip_install() {
    local dir="$1" log="$2"
    shift 2
    mkdir -p "$(dirname "$log")"
    if ! "$dir/bin/python" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "pip install $* into $dir failed (full log: $log)"
    fi
}

project_fingerprint() {
    # The project venv is outdated when pyproject.toml (its dependencies) or the interpreter changed.
    { cat pyproject.toml; "$PROJECT_VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

ensure_project_venv() {
    venv_usable "$PROJECT_VENV" || create_venv "$PROJECT_VENV"
    local stamp="$PROJECT_VENV/$STAMP_NAME" fingerprint
    fingerprint="$(project_fingerprint)"
    if [ -x "$PROJECT_VENV/bin/dynamiq-otel" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$fingerprint" ]; then
        return 0
    fi
    say "installing dynamiq-otel into $PROJECT_VENV (pip install -e .)"
    pip_install "$PROJECT_VENV" .demo/pip-project.log -e .
    echo "$fingerprint" >"$stamp"
}

phoenix_fingerprint() {
    # The Phoenix venv is outdated when the requirement (or the requirements file) changed.
    if [ -f "$PHOENIX_REQUIREMENTS_FILE" ]; then cat "$PHOENIX_REQUIREMENTS_FILE"; else echo "$PHOENIX_REQUIREMENT"; fi |
        sha256sum | cut -d' ' -f1
}

phoenix_satisfied() {
    # The last install of this requirement finished (stamp) and the installed arize-phoenix matches it.
    [ "$(cat "$PHOENIX_VENV/$STAMP_NAME" 2>/dev/null)" = "$(phoenix_fingerprint)" ] || return 1
    local requirement="$PHOENIX_REQUIREMENT"
    [ -f "$PHOENIX_REQUIREMENTS_FILE" ] && requirement="arize-phoenix"  # pip checked the file's own pins
    "$PHOENIX_VENV/bin/python" - "$requirement" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

requirement = Requirement(sys.argv[1])
try:
    installed = version(requirement.name)
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if requirement.specifier.contains(installed, prereleases=True) else 1)
EOF
}

ensure_phoenix_venv() {
    venv_usable "$PHOENIX_VENV" || create_venv "$PHOENIX_VENV"
    phoenix_satisfied && return 0
    rm -f "$PHOENIX_VENV/$STAMP_NAME"
    if [ -f "$PHOENIX_REQUIREMENTS_FILE" ]; then
        say "installing Arize Phoenix into $PHOENIX_VENV from $PHOENIX_REQUIREMENTS_FILE (one time; about a minute)"
        pip_install "$PHOENIX_VENV" .demo/pip-phoenix.log -r "$PHOENIX_REQUIREMENTS_FILE"
    else
        say "installing $PHOENIX_REQUIREMENT into $PHOENIX_VENV (one time; about a minute)"
        pip_install "$PHOENIX_VENV" .demo/pip-phoenix.log "$PHOENIX_REQUIREMENT"
    fi
    phoenix_fingerprint >"$PHOENIX_VENV/$STAMP_NAME"
}

mkdir -p .demo
ensure_project_venv
ensure_phoenix_venv
exec "$PROJECT_VENV/bin/python" scripts/demo.py "$@"
