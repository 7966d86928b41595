#!/usr/bin/env bash
# Install the project with its test extra into ./.venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh test
python -m pytest -q "$@"
