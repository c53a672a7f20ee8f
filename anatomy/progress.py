"""Progress for every long loop: a tqdm bar in the terminal, and a callback the app uses to show and cancel.

The callback gets `(done, total, description)` after each step. Raising from it (the app raises
`Cancelled` when the user presses Stop) unwinds the loop, and every intervention context restores the
weights on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from .processes import is_main

T = TypeVar("T")
ProgressCallback = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a running experiment cleanly."""


def track(items: Iterable[T], description: str, callback: ProgressCallback | None = None,
          total: int | None = None) -> Iterator[T]:
    """Iterate with a tqdm bar (ETA included) and report each finished step to `callback`."""
    items = list(items) if total is None else items
    total = len(items) if total is None else total
    if callback is not None:
        callback(0, total, description)
    # under `accelerate launch` only the main process draws bars: the others' would interleave with its own
    with tqdm(items, desc=description, total=total, leave=False, disable=not is_main()) as bar:
        for done, item in enumerate(bar, start=1):
            yield item
            if callback is not None:
                callback(done, total, description)
