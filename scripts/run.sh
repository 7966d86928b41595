#!/usr/bin/env bash
# Install the project with its offline extra into ./.venv and run the main job on the offline default.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade "pip>=24"
pip install --quiet -e ".[offline]"
python benchmarks/vme_overhead.py "$@"
