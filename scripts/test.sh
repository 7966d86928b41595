#!/usr/bin/env bash
# Install the project with its test extra into ./.venv (and headless Chromium for the browser test), then run the
# whole test suite; the 15 slowest tests are listed at the end of every run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
. scripts/venv.sh test
python -m pytest -q --durations=15 "$@"
