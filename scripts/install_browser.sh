#!/usr/bin/env bash
# Headless Chromium (Debian's package) for the browser test of the MLflow UI (tests/report/test_report.py).
# Idempotent: does nothing when Chromium is already there; needs root or sudo otherwise.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing Chromium (Debian package) for the browser test..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
