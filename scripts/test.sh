#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds the virtual environments it needs, then runs
# pytest over everything (unit, contract, mapping golden files, static checks, end to end).
#   .venv          the service and its test tools         (pip install -e ".[test]")
#   .venv-sdk      the real Dynamiq SDK, used as a client (tests/sdk/requirements.txt)
#   .venv-phoenix  Arize Phoenix, the local trace viewer  (scripts/demo.sh builds the same)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

venv() {  # venv DIR: create DIR with an up-to-date pip unless it exists
  if [ ! -x "$1/bin/python" ]; then
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install --quiet --upgrade pip
  fi
}

echo "== installing the service and test tools (.venv)"
venv .venv
.venv/bin/python -m pip install --quiet -e ".[test]"

echo "== installing the Dynamiq SDK client (.venv-sdk)"
venv .venv-sdk
.venv-sdk/bin/python -m pip install --quiet -r tests/sdk/requirements.txt

if [ -f scripts/phoenix-requirements.txt ]; then
  echo "== installing Arize Phoenix (.venv-phoenix)"
  venv .venv-phoenix
  .venv-phoenix/bin/python -m pip install --quiet -r scripts/phoenix-requirements.txt
fi

echo "== running the tests (the environments took ${SECONDS} s to install)"
exec .venv/bin/python -m pytest "$@"
