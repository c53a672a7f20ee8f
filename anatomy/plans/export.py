"""A plan as an independent model and as a standard Hugging Face folder.

`plan_copy` copies the non-layer modules and the layers the plan names (a repeated layer becomes separate
copies), never the whole model first, renumbers their KV-cache slots and edits the config as
`apply_plan` does; `save_model` writes any model as a folder that `AutoModelForCausalLM.from_pretrained`
loads. A parallel group has no standard form, so only plans of single steps can be copied.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import AnatomyError
from ..layers import LayerAdapter, text_config
from .execution import cache_slots, layer_config_edits, set_cache_slot, set_stack
from .grammar import Plan


def plan_copy(model: PreTrainedModel, plan: Plan) -> PreTrainedModel:
    """An independent copy of `model` whose layers run in the order of `plan` (single steps only).

    Only the embeddings, head and the layers the plan names are copied (tied weights stay tied); the
    original model is left exactly as it was.
    """
    adapter = LayerAdapter(model)
    plan.check(adapter.num_layers)
    if plan.has_parallel:
        raise AnatomyError(f"Plan '{plan}' has parallel groups, which a standard model folder cannot express: "
                           "save a plan made of single layers only.")
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise AnatomyError("This GPT-2 model scales attention by 1/(layer_idx + 1): renumbered layers would "
                           "compute something else, so its layers cannot be moved or removed safely.")
    order = [step[0] for step in plan.steps]
    original = adapter.layers
    try:
        set_stack(model, adapter.layers_path, nn.ModuleList())
        shell = copy.deepcopy(model)
    finally:
        set_stack(model, adapter.layers_path, original)
    layers = nn.ModuleList(copy.deepcopy(original[i]) for i in order)
    for position, layer in enumerate(layers):
        set_cache_slot(cache_slots(layer), position)
    set_stack(shell, adapter.layers_path, layers)
    for key, value in layer_config_edits(text_config(model), order).items():
        setattr(text_config(shell), key, value)
    _check_rebuilds(shell, order)
    return shell


def _check_rebuilds(shell: PreTrainedModel, order: list[int]) -> None:
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
                           f"with layers {order} would reload with other modules (e.g. {differ[0]}): this "
                           "layer stack cannot be saved as a standard folder.")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str | Path) -> Path:
    """Write a standard Hugging Face folder: model.safetensors, config.json, generation config, tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def export_plan(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, plan: Plan, directory) -> Path:
    """Save a plan without parallel groups as a standard Hugging Face folder (layers copied in plan order,
    `layer_idx` renumbered, config layer count updated)."""
    return save_model(plan_copy(model, plan), tokenizer, directory)
