"""Sweeps across processes: under `accelerate launch --num_processes K`, each process runs its share of a
sweep's items (layers, strategies, plans) and every process gets all the results back, in item order.

Every experiment loops over independent items after a shared preparation (the baseline pass, the prefix
cache). Each process does the preparation itself, runs items `rank, rank + K, ...` (strided, so cheap and
dear layers spread evenly), and the rows are gathered to every process; whatever the experiment computes
after its loop (bootstrap intervals, tables, claims) then runs on the same rows as a one-process run and gives
the same numbers. With one process a sweep is the plain loop with its progress bar.

The main process's bar and callback count the items every process finished (an atomic counter in the
launcher's store), and only the main process writes the run folder (`anatomy.cli`); `taken()` tells it which
items each process ran, for results.json. A process that dies makes the launcher stop the others: the
main process turns that into one line (`WorkerLost`) instead of a traceback.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch.distributed as dist
from tqdm.auto import tqdm

from .errors import AnatomyError
from .processes import count as processes, state
from .progress import ProgressCallback, track

T = TypeVar("T")
R = TypeVar("R")
POLL_S = 0.2  # how often the main process, its own share done, reads the others' count

STOPPED = ("the run was stopped: a process of `accelerate launch` died (or the launcher was stopped) before the "
           "run finished; its run folder was not written (a study keeps the steps it finished): run the command "
           "again")


class WorkerLost(AnatomyError):
    """Another process of the run died, or the launcher stopped this one; the run cannot finish."""


_made: list[dict[str, Any]] = []  # the sweeps of this process since the last `taken()` (multi-process only)
_keys = itertools.count()  # one store counter per sweep; every process runs the same sweeps in the same order


def sweep(items: Sequence[T], fn: Callable[[T], R], description: str, progress: ProgressCallback | None = None,
          label: Callable[[T], Any] | None = None) -> list[R]:
    """`[fn(item) for item in items]`, the items shared across the processes; every process gets the whole list.

    `fn` must give the same value for an item whichever process runs it and whatever ran before it there:
    seeds per item, never one generator advanced across items. `label` names an item in results.json (default:
    the item itself where it is a number, else its text)."""
    return sweep_share(items, lambda mine: map(fn, mine), description, progress, label)


def sweep_share(items: Sequence[T], run: Callable[[list[T]], Iterator[R]], description: str,
                progress: ProgressCallback | None = None, label: Callable[[T], Any] | None = None) -> list[R]:
    """As `sweep`, for a loop that prepares something for several items at once (recovery's training cache of
    a group of layers): `run(share)` yields one result per item of `share`, in order."""
    items = list(items)
    k = processes()
    if k == 1:
        return list(track(run(items), description, progress, total=len(items)))
    here = state()
    rank = here.process_index
    shares = [list(range(r, len(items), k)) for r in range(k)]
    names = [label(item) if label else (item if isinstance(item, int) else str(item)) for item in items]
    key = f"anatomy-sweep-{next(_keys)}"
    mine: list[R] = []
    store = dist.distributed_c10d._get_default_store()  # the launcher's key-value store: an atomic counter
    with _Shown(len(items), description, progress, here.is_main_process) as shown:
        for result in run([items[i] for i in shares[rank]]):
            mine.append(result)
            shown.update(_together(store.add, key, 1))
        if here.is_main_process:
            while (done := _together(store.add, key, 0)) < len(items):
                shown.update(done)
                time.sleep(POLL_S)
            shown.update(done)
    gathered: list[list[R] | None] = [None] * k
    _together(dist.all_gather_object, gathered, mine)
    _made.append({"sweep": description, "items": names,
                  "by_process": [[names[i] for i in share] for share in shares]})
    out: list[R | None] = [None] * len(items)
    for share, results in zip(shares, gathered):
        for i, result in zip(share, results or []):
            out[i] = result
    return out  # type: ignore[return-value]


class _Shown:
    """The whole sweep's progress on the main process (a bar and the callback); nothing elsewhere."""

    def __init__(self, total: int, description: str, progress: ProgressCallback | None, main: bool):
        self.total, self.description, self.progress, self.main = total, description, progress, main
        # every finished item drawn (an item takes far longer than drawing the bar), the last one included
        self.bar = tqdm(total=total, desc=f"{description} [{processes()} processes]", leave=False, disable=not main,
                        mininterval=0, miniters=1)
        self.done = 0

    def __enter__(self) -> _Shown:
        if self.main and self.progress is not None:
            self.progress(0, self.total, self.description)
        return self

    def update(self, done: int) -> None:
        if not self.main or done <= self.done:
            return
        self.bar.update(done - self.done)
        self.done = done
        if self.progress is not None:
            self.progress(done, self.total, self.description)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def taken() -> dict[str, Any]:
    """How the work since the last call was made, for results.json: the number of processes and, under
    `accelerate launch`, which items of each sweep every process ran. Clears the record."""
    made = {"count": processes(), **({"sweeps": list(_made)} if _made else {})}
    _made.clear()
    return made


def stop_on_worker_loss() -> None:
    """Under `accelerate launch`, turn the launcher's SIGTERM (sent when another process died) into `WorkerLost`,
    so the run unwinds (weights restored) and ends with one line instead of a bare kill."""
    if processes() > 1:
        signal.signal(signal.SIGTERM, _stopped)


def _stopped(signum: int, frame: object) -> None:
    raise WorkerLost(STOPPED)


def wait_for_everyone() -> None:
    """All processes meet here (nothing to do with one process)."""
    if processes() > 1:
        _together(state().wait_for_everyone)


def _together(call: Callable[..., R], *args: Any) -> R:
    """A call that talks to the other processes; a peer that died makes gloo/NCCL raise, which is `WorkerLost`."""
    try:
        return call(*args)
    except RuntimeError as err:  # torch.distributed.DistError is one
        raise WorkerLost(STOPPED) from err
