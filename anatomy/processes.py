"""Which process this is when `accelerate launch` (torchrun) started several: how many, and whether it is the
main one, the only one that writes and prints.

accelerate's `PartialState` is a singleton that decides once, on its first construction, whether the processes
form a group. A group of CPU processes (gloo) is only seen with `cpu=True`, which it does not infer: here it is
given whenever `accelerate launch --cpu` asked for it or the machine has no GPU, so `accelerate launch
--multi_gpu --num_processes 2` on a CPU machine makes one gloo group instead of two lone processes that each
run everything.
"""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


def state() -> PartialState:
    """accelerate's view of this process (one process, rank 0, when not launched)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def count() -> int:
    """How many processes share the work (1 unless started by `accelerate launch`)."""
    return state().num_processes


def is_main() -> bool:
    """Whether this process writes and prints (the only one, or rank 0 under `accelerate launch`)."""
    return state().is_main_process
