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
# Chromium renders report.html in tests/evaluation/test_report_browser.py.  Installed from Debian when missing and apt-get
# is usable (root, or sudo without a password); anywhere else that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup.sh: could not install chromium with apt-get; tests/evaluation/test_report_browser.py will skip" >&2
  else
    echo "setup.sh: no apt-get (or no root) to install chromium; tests/evaluation/test_report_browser.py will skip" >&2
  fi
fi
# The pinned CPU torch must have survived every install above (no CUDA build, no nvidia-* wheels).
"$PY" - <<'PYEOF'
import importlib.metadata as md
import sys

import torch

nvidia = sorted({d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").lower().startswith("nvidia")})
if not torch.__version__.startswith("2.13.0") or "+cpu" not in torch.__version__ or nvidia:
    sys.exit(f"setup.sh: expected torch 2.13.0+cpu and no nvidia packages, found torch {torch.__version__}, {nvidia}")
PYEOF
