"""Layer surgery: run, copy or save a model whose decoder stack is a chosen list of its layers.

Changing the layer list of a Hugging Face model takes three edits beside the ModuleList itself, or
cached generation goes silently wrong (transformers issue 30508): every attention module's
`layer_idx` (the KV cache slot) must be renumbered to the layer's new position, and the text config's
`num_hidden_layers` (the decoder loop stops there) and every per-layer list (`layer_types`: Qwen2/Gemma
pick each layer's mask by list position; SmolLM3's `no_rope_layers`, GPT-Neo's `attention_layers`)
must follow the new order.

- `layer_stack(model, order)`: a context manager that makes those edits in place and undoes them on
  exit; no weight is copied, so it suits in-memory evaluation of pruned or reordered stacks.
- `build_layer_stack(model, order)`: an independent copy with the layers in that order; it copies only
  the non-layer modules and the kept layers, never the whole model first.
- `save_model(model, tokenizer, directory)`: a standard folder (safetensors, config, tokenizer) that
  `AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import AnatomyError
from .layers import LayerAdapter, _get, text_config


def _set_stack(model: nn.Module, path: str, layers: nn.ModuleList) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(model, parent) if parent else model, name, layers)


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


CACHE_INDEX = ("layer_idx", "layer_id")  # GPT-Neo's attention calls its cache slot layer_id


def cache_slots(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(submodule, attribute) for every integer index by which the layer's modules address the KV cache."""
    return [(m, name) for m in layer.modules() for name in CACHE_INDEX if isinstance(getattr(m, name, None), int)]


def set_cache_slot(slots: list[tuple[nn.Module, str]], index: int) -> None:
    for module, name in slots:
        setattr(module, name, index)


def layer_config_edits(config, order: Sequence[int]) -> dict[str, object]:
    """The text-config attributes that must follow a new layer order: the layer count and every list with
    one entry per layer (properties derived from them, such as Mamba's `layer_types`, follow by themselves)."""
    count = config.num_hidden_layers
    edits: dict[str, object] = {"num_hidden_layers": len(order)}
    for key, value in vars(config).items():
        if (isinstance(value, list) and len(value) == count and not key.startswith("_")
                and not isinstance(getattr(type(config), key, None), property)):
            edits[key] = [value[i] for i in order]
    if "attention_layers" in edits and hasattr(config, "attention_types"):  # GPT-Neo rebuilds it from these
        edits["attention_types"] = [[edits["attention_layers"], 1]]
    return edits


@contextmanager
def layer_stack(model: PreTrainedModel, order: Sequence[int]) -> Iterator[LayerAdapter]:
    """Run the model with its decoder layers in `order` (e.g. `kept_layers(n, removed)`), in place.

    Renumbers `layer_idx` (when no layer repeats: a repeated module cannot hold two indices, so generate
    with `use_cache=False` then) and updates the config; everything is restored on exit, whatever happens.
    Yields an adapter over the new stack.
    """
    adapter = LayerAdapter(model)
    order = check_order(order, adapter.num_layers)
    original = adapter.layers
    config = text_config(model)
    saved_config = {key: getattr(config, key) for key in layer_config_edits(config, order)}
    saved_idx = [(slot, getattr(*slot)) for layer in original for slot in cache_slots(layer)]
    try:
        _set_stack(model, adapter.layers_path, nn.ModuleList([original[i] for i in order]))
        for key, value in layer_config_edits(config, order).items():
            setattr(config, key, value)
        if len(set(order)) == len(order):
            for position, i in enumerate(order):
                set_cache_slot(cache_slots(original[i]), position)
        yield LayerAdapter(model)
    finally:
        _set_stack(model, adapter.layers_path, original)
        for key, value in saved_config.items():
            setattr(config, key, value)
        for slot, idx in saved_idx:
            set_cache_slot([slot], idx)


def build_layer_stack(model: PreTrainedModel, order: Sequence[int]) -> PreTrainedModel:
    """An independent copy of `model` whose layers are `order` (repeats become separate copies).

    Only the embeddings, head and the layers named in `order` are copied (tied weights stay tied);
    the original model is left exactly as it was.
    """
    adapter = LayerAdapter(model)
    order = check_order(order, adapter.num_layers)
    original = adapter.layers
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise AnatomyError("This GPT-2 model scales attention by 1/(layer_idx + 1): renumbered layers would "
                           "compute something else, so its layers cannot be moved or removed safely.")
    try:
        _set_stack(model, adapter.layers_path, nn.ModuleList())
        shell = copy.deepcopy(model)
    finally:
        _set_stack(model, adapter.layers_path, original)
    layers = nn.ModuleList(copy.deepcopy(original[i]) for i in order)
    for position, layer in enumerate(layers):
        set_cache_slot(cache_slots(layer), position)
    _set_stack(shell, adapter.layers_path, layers)
    for key, value in layer_config_edits(text_config(model), order).items():
        setattr(text_config(shell), key, value)
    _check_rebuilds(shell, order)
    return shell


def _check_rebuilds(shell: PreTrainedModel, order: Sequence[int]) -> None:
    """Refuse a stack that its own config would rebuild differently: some families decide a layer's
    structure from its position (Qwen2-MoE's `mlp_only_layers`, a sparse step), so a saved folder would
    load other modules than the kept ones, randomly initialised, without an error."""
    with torch.device("meta"):
        fresh = type(shell)(shell.config)

    def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in module.state_dict().items() if v.is_floating_point()}

    expected, actual = shapes(fresh), shapes(shell)
    if expected != actual:
        differ = sorted(set(expected) ^ set(actual)) or sorted(k for k in expected if expected[k] != actual[k])
        raise AnatomyError(f"{type(shell).__name__} builds each layer from its position in the config, so a model "
                           f"with layers {list(order)} would reload with other modules (e.g. {differ[0]}): this "
                           "layer stack cannot be saved as a standard folder.")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str | Path) -> Path:
    """Write a standard Hugging Face folder: model.safetensors, config.json, generation config, tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
