#!/usr/bin/env bash
# Creates .venv (reusing a torch already on the machine, e.g. a GPU box's CUDA build) and installs
# the requirements. Idempotent: a second call only checks. Usage: bash scripts/setup.sh [requirements file]
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv --system-site-packages .venv
fi
py=.venv/bin/python
stamp=".venv/.installed-$(cat requirements.txt "$req" | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0
if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install -q torch
  else
    # A plain `torch` would pull a CUDA build of several GB onto a machine without a GPU.
    "$py" -m pip install -q torch==2.13.0 || "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$py" -m pip install -q -r "$req"
touch "$stamp"
