"""Running a plan: a frozen model's decoder layers skipped, reordered, repeated or in parallel, in place,
without touching a weight, and everything undone on exit. This is the one place that rearranges a stack:
`anatomy.surgery` runs its removals and reorders through `apply_plan`, and copies through
`anatomy.plans.export`.

Changing the layer list of a Hugging Face model takes three edits beside the ModuleList itself, or
cached generation goes silently wrong (transformers issue 30508): every attention module's KV-cache index
(`layer_idx`) must point at the step's own slot, and the text config's `num_hidden_layers` (the decoder
loop stops there) and every per-layer list (`layer_types`: Qwen2/Gemma pick each layer's mask by list
position; SmolLM3's `no_rope_layers`, GPT-Neo's `attention_layers`) must follow the new order.

KV cache: every step gets its own slot. A layer that runs once is renumbered to its step for the whole
block; a layer that runs several times (a repeat, or in a parallel group and alone) is wrapped
(`PlanStep`) and pointed at the step's slot just before it runs, so it shares its weights but not its keys
and values, and `generate` with the cache gives the same tokens as without it. This is chosen over turning
the cache off because the latency column must measure real cached decoding, and because a cache-off
model silently breaks for any user who calls `generate` inside the plan.

Parallel groups run as one batched call where `can_batch` allows (`BatchedLlamaGroup`), else member by
member (`SequentialGroup`, one cache slot each), their outputs averaged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import AnatomyError
from ..layers import LayerAdapter, _get, text_config
from .batched import BatchedLlamaGroup, can_batch
from .grammar import Plan

CACHE_INDEX = ("layer_idx", "layer_id")  # GPT-Neo's attention calls its cache slot layer_id


def cache_slots(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(submodule, attribute) for every integer index by which the layer's modules address the KV cache."""
    return [(m, name) for m in layer.modules() for name in CACHE_INDEX if isinstance(getattr(m, name, None), int)]


def set_cache_slot(slots: list[tuple[nn.Module, str]], index: int) -> None:
    """Point these cache indices at slot `index`: the one renumbering of `layer_idx` every rearrangement uses."""
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


def set_stack(model: nn.Module, path: str, layers: nn.ModuleList) -> None:
    """Put `layers` where the model keeps its decoder ModuleList (`LayerAdapter.layers_path`)."""
    parent, _, name = path.rpartition(".")
    setattr(_get(model, parent) if parent else model, name, layers)


class _Proxy(nn.Module):
    """A stand-in for a decoder layer: attributes the decoder reads from its layers (attention_type,
    layer_type, ...) come from the first wrapped layer."""

    def _wrapped(self) -> nn.Module:
        raise NotImplementedError

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._wrapped(), name)


class PlanStep(_Proxy):
    """Runs one decoder layer after pointing its attention at this step's own KV-cache slot."""

    def __init__(self, layer: nn.Module, slot: int):
        super().__init__()
        self.layer = layer
        self.slot = slot
        self._slots = cache_slots(layer)

    def _wrapped(self) -> nn.Module:
        return self.layer

    def forward(self, *args, **kwargs):
        set_cache_slot(self._slots, self.slot)
        return self.layer(*args, **kwargs)


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class SequentialGroup(_Proxy):
    """A parallel group run member by member on the same input, outputs averaged (any architecture); it
    returns what its layers return (a tensor, or a tuple with the mean hidden states first)."""

    batched = False

    def __init__(self, steps: list[PlanStep]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def _wrapped(self) -> nn.Module:
        return self.steps[0]

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        outputs = [step(hidden_states, *args, **kwargs) for step in self.steps]
        mean = torch.stack([_hidden(out) for out in outputs]).mean(dim=0)
        return (mean, *outputs[0][1:]) if isinstance(outputs[0], (tuple, list)) else mean


def plan_refusal(adapter: LayerAdapter, plan: Plan) -> str | None:
    """Why `plan` cannot run on this model, or None. A parallel group must hold layers of one kind: in a
    hybrid stack a convolution and an attention layer take different masks and caches, so they cannot
    run on the same call's arguments."""
    kinds = adapter.kinds
    for step in plan.steps:
        if len({kinds[i] for i in step}) > 1:
            names = ", ".join(f"{i}: {kinds[i][1] or kinds[i][0]}" for i in step)
            return (f"Plan '{plan}' runs layers of different kinds in parallel ({names}) in this {adapter.family} "
                    "model; they take different masks or caches, so group layers of one kind.")
    return None


@contextmanager
def apply_plan(model: nn.Module, plan: Plan, batched: bool = True) -> Iterator[nn.ModuleList]:
    """Run `model` under `plan` inside the block; weights are never written, everything is undone on exit.

    `batched=False` runs every parallel group member by member (the reference the batched path is
    tested against). Yields the temporary ModuleList of steps.
    """
    adapter = LayerAdapter(model)
    plan.check(adapter.num_layers)
    if refusal := plan_refusal(adapter, plan):
        raise AnatomyError(refusal)
    config = text_config(model)
    original = adapter.layers
    saved_idx = [(slot, getattr(*slot)) for layer in original for slot in cache_slots(layer)]
    runs = Counter(layer for step in plan.steps for layer in step)
    slot_layers: list[int] = [step[0] for step in plan.steps]  # layer whose type each cache slot takes
    steps: list[nn.Module] = []
    for i, step in enumerate(plan.steps):
        members = [original[j] for j in step]
        if len(step) == 1:
            steps.append(members[0] if runs[step[0]] == 1 else PlanStep(members[0], i))
        elif batched and can_batch(members):
            steps.append(BatchedLlamaGroup(members, i))
        else:
            slots = [i] + list(range(len(slot_layers), len(slot_layers) + len(step) - 1))
            slot_layers += list(step[1:])
            steps.append(SequentialGroup([PlanStep(m, s) for m, s in zip(members, slots)]))
    new = nn.ModuleList(steps)
    edits = layer_config_edits(config, slot_layers)
    saved_config = {key: getattr(config, key) for key in edits}
    try:
        set_stack(model, adapter.layers_path, new)
        for key, value in edits.items():
            setattr(config, key, value)
        for i, step in enumerate(plan.steps):
            if len(step) == 1 and runs[step[0]] == 1:  # runs once: its own slot for the whole block
                set_cache_slot(cache_slots(original[step[0]]), i)
        yield new
    finally:
        set_stack(model, adapter.layers_path, original)
        for key, value in saved_config.items():
            setattr(config, key, value)
        for slot, index in saved_idx:
            set_cache_slot([slot], index)
