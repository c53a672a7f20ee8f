"""OFFLOAD: where the weights of a model spread by accelerate really live, so edits and reads reach them.

With `device_map`, accelerate leaves an offloaded module's parameters on the `meta` device and, before every
forward, copies them from a *weights map* to the execution device (`AlignDevicesHook` with `offload=True`).
An in-place edit of the meta parameter would change nothing, silently. `storage()` returns the tensor the
next forward copies from instead:

- CPU offload (a GPU machine whose map sends layers to "cpu"): the weights map holds the real CPU tensors,
  so an edit of the returned tensor is what the next forward computes with.
- Disk offload: the weights map reads a fresh copy from the safetensors file at every forward, so an edit
  could never persist (and the file is the checkpoint itself: it must never be written). The first access
  *pins* a copy in the map's in-memory part, which accelerate consults first; edits of the pinned copy take
  effect, the file stays untouched, and `unpin()` drops the copies once no intervention holds them.
"""

from __future__ import annotations

from collections import Counter

import torch
from accelerate.utils import PrefixedDataset
from torch import nn


def _offload_map(module: nn.Module) -> PrefixedDataset | None:
    hook = getattr(module, "_hf_hook", None)
    weights = getattr(hook, "weights_map", None) if getattr(hook, "offload", False) else None
    return weights if isinstance(weights, PrefixedDataset) else None


def storage(module: nn.Module, name: str, pin: bool = True) -> torch.Tensor | None:
    """The tensor behind `module.<name>` that the forward computes with (None where the module has none).

    `pin=False` reads a disk-offloaded weight without holding a copy in memory (for reading only)."""
    tensor = getattr(module, name, None)
    weights = _offload_map(module)
    if tensor is None or tensor.device.type != "meta" or weights is None:
        return tensor
    loader, key = weights.dataset, weights.prefix + name
    memory = getattr(loader, "state_dict", loader)  # a loader's in-memory part, or a plain dict (cpu_offload)
    if key in memory:
        return memory[key]
    if not pin:
        return loader[key]
    memory[key] = loader[key]
    _pinned(loader).add(key)
    return memory[key]


def _pinned(loader) -> set[str]:
    """The keys `storage()` pinned from disk into this loader's in-memory part (beside CPU-offloaded ones)."""
    if not hasattr(loader, "anatomy_pinned"):
        loader.anatomy_pinned = set()
    return loader.anatomy_pinned


def unpin(model: nn.Module) -> int:
    """Drop the disk-offloaded weights of `model` pinned in memory; returns how many. Call only where no
    intervention is active and no view from `storage()` is kept: the copies equal the file again by then."""
    loaders = {id(w.dataset): w.dataset for w in map(_offload_map, model.modules())
               if w is not None and hasattr(w.dataset, "state_dict")}  # a plain dict pins nothing
    count = 0
    for loader in loaders.values():
        pinned = _pinned(loader)
        for key in pinned:
            loader.state_dict.pop(key)
        count += len(pinned)
        pinned.clear()
    return count


def is_offloaded(module: nn.Module) -> bool:
    """Whether accelerate keeps some of the module's weights off it (CPU or disk offload): such weights can be
    read and edited through `storage()`, but not trained, since the optimizer would see meta placeholders."""
    return any(p.device.type == "meta" for p in module.parameters())


def named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """`named_parameters()` then `named_buffers()`, offloaded ones read from where they live (nothing pinned)."""
    out = []
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        owner, _, leaf = name.rpartition(".")
        out.append((name, storage(model.get_submodule(owner), leaf, pin=False)))
    return out


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its hook's execution device under a device map, else its weights' device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return next(module.parameters()).device


def input_device(model: nn.Module) -> torch.device:
    """Where the token ids go: the input embeddings' execution device (the model's device when not spread)."""
    return execution_device(model.get_input_embeddings())


def placement(model: nn.Module) -> dict[str, int] | None:
    """Modules per device of accelerate's map (`{"cuda:0": 20, "cpu": 7, "disk": 5}`), None without a map."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return None
    return dict(Counter(f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()))
