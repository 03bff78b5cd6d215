#!/usr/bin/env bash
# Sets up (first time only) and runs the app: `bash scripts/app.sh` opens the dashboard,
# `bash scripts/app.sh --preset tiny` runs headless. Any app.py flag works.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python app.py "$@"
