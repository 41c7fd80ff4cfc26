#!/usr/bin/env bash
# Set up, then run the whole test suite: the normal tests, then the tests marked slow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m pytest -m "not slow" "$@"
# exit status 5 = no tests collected (no slow tests selected); anything else non-zero is a failure
set +e
"$PY" -m pytest -m slow "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
