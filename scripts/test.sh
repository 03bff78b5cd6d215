#!/usr/bin/env bash
# Sets up (first time only) and runs the whole test suite on the CPU, offline, browser test included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-test.txt
if [ ! -x /usr/bin/chromium ]; then
  # The browser test drives Debian's Chromium through Playwright (never `playwright install`).
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
