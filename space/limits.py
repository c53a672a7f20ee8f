"""Every job's budget, known before it starts, and the hard limit that ends it.

The budget: the experiment's declared work in evaluation passes (`anatomy/work.py`), with the needs it will
compute, turned into seconds by the speed of the loaded model on this hardware (a calibration batch timed
once per model), so one ANATOMY_PUBLIC_MAX_S (default 300) serves a T4 and a free CPU Space alike; and the
memory the job needs beside the weights (the prefix cache, a batch's logits, a fine-tune's optimizer state)
against the free memory. On a public app a job over either is refused in one line that names the command
that runs it on the visitor's own machine; locally nothing is refused.

The hard limit: a public job is ended once it runs past twice its estimate (at least a minute, at most twice
the budget), and any job once Stop is pressed:
the deadline is checked at every step the experiment reports and before every decoder layer's forward (a
forward pre-hook), so a job ends within one layer's forward, restoring the weights as it unwinds. What runs
outside the model's layers and cannot be interrupted in a thread (a chat template's Jinja) runs in a
subprocess of its own (`anatomy/chat.py`).
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from anatomy import work
from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet
from anatomy.experiment import Experiment
from anatomy.layers import LayerAdapter
from anatomy.load import LoadedModel
from anatomy.options import params
from anatomy.progress import Cancelled

from .access import public_mode

DEFAULT_MAX_S = 300.0
MEMORY_SHARE = 0.8  # of the free memory a job may plan to use (the rest: other jobs' activations, the server)


def max_seconds() -> float:
    """ANATOMY_PUBLIC_MAX_S: the most seconds a public job may be estimated to take (default 300)."""
    return float(os.environ.get("ANATOMY_PUBLIC_MAX_S", str(DEFAULT_MAX_S)))


def hard_limit(estimate_s: float) -> float:
    """How long a public job may run before it is ended: twice its estimate (the estimates are good within a
    factor of about two), at least a minute, at most twice the budget."""
    return min(2 * max_seconds(), max(60.0, 2 * estimate_s))


@dataclass(frozen=True)
class Estimate:
    """A job's work in passes, its seconds at this model's measured speed, and its memory beside the weights."""

    passes: float
    seconds: float
    memory: int


def estimate(loaded: LoadedModel, eval_set: EvalSet | None, steps: Sequence[tuple[Experiment, object]]) -> Estimate:
    """The estimate of running every (experiment, config) of `steps` (an experiment and the needs it computes,
    or a study's steps) on `loaded` with `eval_set`."""
    shape = work.shape_of(loaded.model, eval_set)
    passes = sum(experiment.work(config, shape) for experiment, config in steps)
    seconds = passes * shape.eval_tokens * work.seconds_per_token(loaded.model)
    batch = max((b.input_ids.numel() for b in eval_set.batches), default=0) if eval_set is not None \
        else work.REFERENCE_TOKENS
    train = max((getattr(c, "train_batch_size", 0) * getattr(c, "train_seq_len", 0) for _, c in steps), default=0)
    memory = work.memory_bytes(shape, batch, cached=eval_set is not None, train_tokens=train)
    return Estimate(passes, seconds, memory)


def check(estimate_: Estimate, what: str, command: str) -> None:
    """On a public app, refuse a job over the time budget or the free memory, naming the local command."""
    if not public_mode():
        return
    limit = max_seconds()
    if estimate_.seconds > limit:
        raise AnatomyError(f"{what} would take about {estimate_.seconds:,.0f} s here ({estimate_.passes:,.1f} "
                           f"evaluation passes), over this Space's {limit:,.0f} s a job: ask for less (fewer layers, "
                           f"steps or texts), or run it on your own machine: {command}")
    free = psutil.virtual_memory().available
    if estimate_.memory > MEMORY_SHARE * free:
        raise AnatomyError(f"{what} would need about {estimate_.memory / 2**30:.1f} GiB beside the model's weights, "
                           f"more than this Space has free ({free / 2**30:.1f} GiB): use fewer or shorter texts, or "
                           f"run it on your own machine: {command}")


def local_command(name: str, spec: str, config: object | None = None) -> str:
    """The CLI command that runs the same job locally: the model, and every field that differs from its default."""
    parts = ["python", "-m", "anatomy", name, "--model", spec]
    for param in params(type(config)) if config is not None else []:
        value = getattr(config, param.name)
        if not param.option.cli or value == param.default:
            continue
        parts += [param.flag] if param.is_switch else [param.flag, param.text(value)]
    return shlex.join(parts)


class OverTime(Cancelled):
    """A job ended at its hard limit (its weights restored on the way out, as after Stop)."""


class Deadline:
    """The moment a job must end by (None: never) and its Stop flag, checked by the job's thread alone."""

    def __init__(self, seconds: float | None, cancel: threading.Event, command: str = ""):
        self.seconds, self.cancel, self.command = seconds, cancel, command
        self.at = None if seconds is None else time.monotonic() + seconds
        self.thread = threading.get_ident()

    def check(self) -> None:
        """Raise `Cancelled` after Stop, `OverTime` past the deadline; nothing in another thread (a model's
        layers are shared, and another visitor's job may run them after this one ends)."""
        if threading.get_ident() != self.thread:
            return
        if self.cancel.is_set():
            raise Cancelled("stopped by the user")
        if self.at is not None and time.monotonic() > self.at:
            raise OverTime(f"ended at this Space's limit of {self.seconds:,.0f} s for this job; run it on your own "
                           f"machine for longer: {self.command}")

    @contextmanager
    def on_layers(self, loaded: LoadedModel) -> Iterator[None]:
        """Check before every decoder layer's forward for the whole job."""
        handles = [layer.register_forward_pre_hook(lambda module, args: self.check())
                   for layer in LayerAdapter(loaded.model).layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
