#!/usr/bin/env bash
# The README's test command (and what .ci/run calls): install the project with its test extra into ./.venv (and
# headless Chromium for the browser test), then the linter, the fast tier (plain `pytest`) and the end-to-end tier
# (tests marked e2e: they start Ray, MLflow, subprocesses or studies). Extra arguments go to both pytest runs; the
# 15 slowest tests of each tier are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh
. scripts/venv.sh test
echo "== ruff" >&2
ruff check .
echo "== fast tier" >&2
python -m pytest -q --durations=15 "$@"
echo "== end-to-end tier" >&2
python -m pytest -q -m e2e --durations=15 "$@"
