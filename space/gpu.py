"""ZeroGPU support: `@gpu(...)` is `spaces.GPU` on a ZeroGPU Space and a no-op everywhere else.

Free accounts host Gradio Spaces on ZeroGPU, where a GPU is attached only while a decorated function
runs and the daily quota is counted in minutes; so long jobs (recovery fine-tunes) are refused there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from anatomy.errors import AnatomyError

F = TypeVar("F", bound=Callable)


def on_zero_gpu() -> bool:
    """True on a ZeroGPU Space (the platform sets SPACES_ZERO_GPU); read at call time so tests can set it."""
    return "SPACES_ZERO_GPU" in os.environ


def gpu(duration: int = 120) -> Callable[[F], F]:
    """Ask ZeroGPU for a GPU for `duration` seconds around the decorated function; elsewhere change nothing."""
    if on_zero_gpu():
        import spaces  # only importable usefully on Spaces; it patches CUDA there

        return spaces.GPU(duration=duration)
    return lambda fn: fn


def refuse_on_zero_gpu(what: str) -> None:
    """Stop a job that would exhaust ZeroGPU's daily quota, with a message that says where it can run."""
    if on_zero_gpu():
        raise AnatomyError(f"{what} takes too long for ZeroGPU's daily quota, so this Space refuses it: run the app "
                           "locally (`python app.py`), on a T4 Space, or use the CLI (`python -m anatomy ...`).")
