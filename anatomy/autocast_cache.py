"""Autocast's cache of cast weights, on only where no weight changes.

A run under `--autocast` computes in `torch.autocast` with its cache off (`LoadedModel.compute`): the cache keeps
the first low-precision copy of each weight until the outermost autocast region ends, so an intervention's
in-place edit, or an optimizer step, would go unseen. With the cache off every forward casts every weight again;
for one 40-token forward that is a small cost, but for decoding (one token a forward) the cast is most of the
work, and the layer plans' decode timing ran slower under autocast than in float32 because of it.

`cached_casts()` marks a stretch in which the caller changes no weight (one perplexity, one task scoring, the
timed decoding of a plan): inside it the cache is on, and it is emptied on both sides, so no cast made inside
outlives it and none made before is reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cached_casts() -> Iterator[None]:
    """Within: autocast keeps each weight's cast (the caller changes no weight here). Outside an autocast region,
    or inside one whose cache is already on (the caller's own `torch.autocast`, or an enclosing `cached_casts`),
    it changes nothing."""
    if not any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda")) or torch.is_autocast_cache_enabled():
        yield
        return
    torch.clear_autocast_cache()
    torch.set_autocast_cache_enabled(True)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(False)
        torch.clear_autocast_cache()
