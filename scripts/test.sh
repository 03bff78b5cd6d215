#!/usr/bin/env bash
# Sets up (first time only) and runs the whole test suite on the CPU, offline, browser and real-vLLM tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-test.txt
if [ ! -x /usr/bin/chromium ]; then
  # The browser test drives Debian's Chromium through Playwright (never `playwright install`).
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi
# A real vLLM (CPU) for tests/test_vllm*.py, built once per machine outside the clone and reused after that.
bash scripts/setup-vllm.sh >/dev/null || echo "test.sh: the vLLM build failed: the vLLM tests will say so" >&2
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
