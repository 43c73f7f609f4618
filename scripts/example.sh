#!/usr/bin/env bash
# Run a real Dynamiq workflow through the running demo (bash scripts/demo.sh) and print the URL of
# its trace in Phoenix. Builds .venv-sdk with the Dynamiq SDK the first time (a few minutes).
# Arguments go to examples/run_workflow.py (e.g. --base-url, --phoenix-url, --llm-url).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv-sdk/bin/python ]; then
  "$PYTHON" -m venv .venv-sdk
  .venv-sdk/bin/python -m pip install --quiet --upgrade pip
fi
.venv-sdk/bin/python -m pip install --quiet -r tests/sdk/requirements.txt
exec .venv-sdk/bin/python examples/run_workflow.py "$@"
