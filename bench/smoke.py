"""The tiny random model that every bench's `--smoke` mode runs on: the bench's own code path, in seconds.

A smoke run checks that a bench still runs and prints its lines (tests/test_benches.py runs each one); its
numbers measure nothing. The model is the tests' tiny random Llama (hidden 32) with their 320-token BPE,
saved as a model folder, so it loads through `load_model` like any local model.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tests.conftest import build_tiny_tokenizer, make_tiny_model

SMOKE_HELP = "a few seconds on a tiny random model: checks the bench runs, measures nothing"


@functools.cache
def tiny_model_folder(layers: int = 4) -> str:
    """A folder holding a random `layers`-layer Llama and its tokenizer, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    make_tiny_model("llama", layers=layers).save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
    return str(folder)
