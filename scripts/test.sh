#!/usr/bin/env bash
# Installs everything (Python package, JS toolchain, Debian's Chromium) and runs the whole test suite on the newest
# transformers pyproject allows, then the engine's tests on the oldest (scripts/test-oldest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build
scripts/setup.sh "test"
npm run typecheck
npm test
# pytest exits 5 when it collects nothing: that must fail, and does, since set -e sees any non-zero code.
.venv/bin/python -m pytest -q "$@"
# The other end of the supported transformers range: the engine's tests on the oldest release pyproject allows.
scripts/test-oldest.sh
