#!/usr/bin/env bash
# Install the project with its test extra into ./.venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade "pip>=24"
pip install --quiet -e ".[test]"
python -m pytest -q "$@"
