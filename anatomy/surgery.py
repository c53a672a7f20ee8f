"""Layer surgery: run, copy or save a model with some of its decoder layers removed or reordered.

A removal or a reorder is a plan of single steps (`anatomy.plans.Plan.from_order`), so this module only
names the order and checks it; the stack is rearranged by `anatomy.plans`, the one place that edits a
layer list, its KV-cache indices and the config's per-layer lists.

- `layer_stack(model, order)`: in place for the block (no weight copied; in-memory evaluation of pruned or
  reordered stacks), everything undone on exit.
- `build_layer_stack(model, order)`: an independent copy with the layers in that order.
- `save_model(model, tokenizer, directory)`: a standard folder (safetensors, config, tokenizer) that
  `AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from transformers import PreTrainedModel

from .errors import AnatomyError
from .layers import LayerAdapter
from .plans import Plan, apply_plan, plan_copy, save_model

__all__ = ["build_layer_stack", "check_order", "kept_layers", "layer_stack", "save_model"]


def check_order(order: Sequence[int], num_layers: int) -> list[int]:
    """Validate a layer order (0-based indices into the current stack; repeats allowed, at least one layer)."""
    order = [int(i) for i in order]
    if not order:
        raise AnatomyError("The layer order is empty: keep at least one layer.")
    bad = [i for i in order if not 0 <= i < num_layers]
    if bad:
        raise AnatomyError(f"Layers {bad} do not exist: this model has layers 0..{num_layers - 1}.")
    return order


def kept_layers(num_layers: int, removed: Sequence[int]) -> list[int]:
    """The order that removes `removed` and keeps every other layer in place."""
    check_order(list(removed) or [0], num_layers)
    keep = [i for i in range(num_layers) if i not in set(removed)]
    if not keep:
        raise AnatomyError(f"Removing {len(set(removed))} of {num_layers} layers leaves none.")
    return keep


def _plan(model: PreTrainedModel, order: Sequence[int]) -> Plan:
    return Plan.from_order(check_order(order, LayerAdapter(model).num_layers))


@contextmanager
def layer_stack(model: PreTrainedModel, order: Sequence[int]) -> Iterator[LayerAdapter]:
    """Run the model with its decoder layers in `order` (e.g. `kept_layers(n, removed)`), in place.

    Every position has its own KV-cache slot (a repeated layer too), so cached generation works; the layer
    list, config and cache indices are restored on exit, whatever happens. Yields an adapter over the new
    stack.
    """
    with apply_plan(model, _plan(model, order)):
        yield LayerAdapter(model)


def build_layer_stack(model: PreTrainedModel, order: Sequence[int]) -> PreTrainedModel:
    """An independent copy of `model` whose layers are `order` (repeats become separate copies); only the
    embeddings, head and the named layers are copied, and the original model is left exactly as it was."""
    return plan_copy(model, _plan(model, order))
