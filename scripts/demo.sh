#!/usr/bin/env bash
# Set up, then run the main job: train a small model on scikit-learn's bundled digits, evaluate it,
# predict a few images and write runs/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lightnets demo "$@"
