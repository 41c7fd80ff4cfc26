#!/usr/bin/env bash
# Install lightnets and everything it needs into the current Python, CPU torch first.
# torch must be the pinned CPU build: with no torch installed, a bare `torch` requirement would pull the
# CUDA build (gigabytes).  Idempotent: re-running installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[all]"
