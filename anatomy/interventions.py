"""INTERVENE: small composable context managers that edit a model in place and always restore it.

Each one snapshots exactly the tensors it is about to touch, edits them in place (no deepcopy of the
model: a 7B model has no room for a second copy) and copies the snapshot back in a `finally`, so the
weights come back bit-identical on normal exit, on an exception and on KeyboardInterrupt/cancel.
Stack them with `contextlib.ExitStack` or nested `with` blocks; they restore in reverse order.

Without a choice of components, an edit acts on every matrix of the layer (`LayerAdapter.matrices`:
attention, MLP, experts, routers, convolutions, SSM projections); with one, on those components' views.
Replacement edits (neighbour mean, zero, scale, assign) act on a matrix's weight and bias together,
since the bias is part of what it computes; noise acts on weight matrices only, as in the study.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from . import offload
from .errors import AnatomyError, shown
from .layers import ComponentRef, LayerAdapter

BOUNDARY_CONVENTIONS = ("one-neighbour", "untouched")
ABLATION_MODES = ("neighbour-mean", "skip", "zero")


@contextmanager
def preserve(tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Snapshot `tensors` and copy the snapshot back on exit, whatever happens inside."""
    tensors = list(tensors)
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, copy in zip(tensors, saved):
                tensor.copy_(copy)


def _refs(adapter: LayerAdapter, layers: Sequence[int], components: Sequence[str] | None) -> list[ComponentRef]:
    """The chosen components of each layer, or every matrix of each layer when none are chosen."""
    if not layers:
        raise AnatomyError("No layers chosen for the intervention.")
    if components:
        return [ref for layer in layers for ref in adapter.layer_components(layer, tuple(components))]
    return [ref for layer in layers for ref in adapter.matrices(layer)]


def _all_tensors(refs: Sequence[ComponentRef]) -> list[torch.Tensor]:
    return [t for ref in refs for t in ref.tensors()]


@contextmanager
def zero(adapter: LayerAdapter, layers: Sequence[int], components: Sequence[str] | None = None) -> Iterator[None]:
    """Set the chosen components of `layers` to zero."""
    refs = _refs(adapter, layers, components)
    with preserve(_all_tensors(refs)):
        with torch.no_grad():
            for tensor in _all_tensors(refs):
                tensor.zero_()
        yield


@contextmanager
def scale(adapter: LayerAdapter, layers: Sequence[int], alpha: float,
          components: Sequence[str] | None = None) -> Iterator[None]:
    """Multiply the chosen components of `layers` by `alpha`."""
    if not math.isfinite(alpha):
        raise AnatomyError(f"The scale alpha must be a finite number, got {alpha}.")
    refs = _refs(adapter, layers, components)
    with preserve(_all_tensors(refs)):
        with torch.no_grad():
            for tensor in _all_tensors(refs):
                tensor.mul_(float(alpha))
        yield


@contextmanager
def add_noise(adapter: LayerAdapter, layers: Sequence[int], sigma: float = 0.5, seed: int = 0,
              components: Sequence[str] | None = None) -> Iterator[None]:
    """Add Gaussian noise with std `sigma * std(W)` to each chosen weight matrix (seeded, reproducible)."""
    if not math.isfinite(sigma) or sigma < 0:
        raise AnatomyError(f"Noise sigma must be a finite number >= 0, got {sigma}.")
    if not 0 <= int(seed) < 2**63:
        raise AnatomyError(f"The noise seed must be between 0 and 2^63 - 1, got {shown(seed)}.")
    refs = _refs(adapter, layers, components)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with preserve(ref.weight for ref in refs):
        with torch.no_grad():
            for ref in refs:
                noise = torch.randn(ref.weight.shape, generator=generator, dtype=torch.float32)
                ref.weight.add_((noise * sigma * ref.weight.float().std().cpu()).to(ref.weight))
        yield


def neighbours(layer: int, kinds: Sequence[Hashable], boundary: str = "one-neighbour") -> list[int]:
    """The layers whose mean replaces `layer` (SPEC section 1): the nearest layer of the same kind below
    and above (l-1 and l+1 in a uniform stack; in a hybrid or alternating one, the nearest attention,
    convolution, sliding or global layer like it). Empty means "leave it untouched"."""
    if boundary not in BOUNDARY_CONVENTIONS:
        raise AnatomyError(f"Unknown boundary convention '{boundary}': use one of {', '.join(BOUNDARY_CONVENTIONS)}.")
    below = next((n for n in range(layer - 1, -1, -1) if kinds[n] == kinds[layer]), None)
    above = next((n for n in range(layer + 1, len(kinds)) if kinds[n] == kinds[layer]), None)
    found = [n for n in (below, above) if n is not None]
    return found if len(found) == 2 or boundary == "one-neighbour" else []


@contextmanager
def neighbour_mean(adapter: LayerAdapter, layer: int, boundary: str = "one-neighbour",
                   components: Sequence[str] | None = None) -> Iterator[None]:
    """Replace each matrix (or chosen component) of `layer` by the mean of the same one, matched by name
    and shape, in its neighbours (`neighbours`: l-1 and l+1 where the stack is uniform).

    A boundary layer has one neighbour: by default it takes that neighbour's weights; with the
    study's `untouched` convention it is left as it is (the study then reported D = 0 for it).
    """
    sources = neighbours(adapter.check_layer(layer), adapter.kinds, boundary)
    targets = _refs(adapter, [layer], components)
    with preserve(_all_tensors(targets)):
        with torch.no_grad():
            by_source = [{ref.component: ref for ref in _refs(adapter, [s], components)} for s in sources]
            for target in targets if sources else []:
                parts = [found[target.component].tensors() for found in by_source]
                for i, tensor in enumerate(target.tensors()):
                    tensor.copy_(torch.stack([p[i].to(tensor.device) for p in parts]).mean(dim=0))
        yield


@contextmanager
def assign(refs_to_values: dict[ComponentRef, torch.Tensor]) -> Iterator[None]:
    """Write given (out, in) matrices into component weights, e.g. predicted or blended weights."""
    refs = list(refs_to_values)
    with preserve(ref.weight for ref in refs):
        for ref in refs:
            ref.assign(refs_to_values[ref])
        yield


class Residual(nn.Module):
    """Stands in for a decoder layer and returns its input: the layer is skipped, the residual stream flows on.

    It returns what the layer would: the bare tensor, or a tuple of that length with the hidden states
    first (GPT-J, BLOOM, Falcon, MPT, Falcon-H1 layers return tuples). It touches no cache, and any
    attribute the decoder reads from its layers (attention_type, layer_type, ...) comes from the original.
    """

    def __init__(self, layer: nn.Module, form: int):
        super().__init__()
        self.skipped = layer
        self.form = form

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.skipped, name)

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,) + (None,) * (self.form - 1) if self.form else hidden


@contextmanager
def skip(adapter: LayerAdapter, layers: Sequence[int]) -> Iterator[None]:
    """Run the model with `layers` replaced by the identity; the original modules go back on exit."""
    forms = {layer: adapter.output_form(layer) for layer in layers}
    originals = {layer: adapter.layers[layer] for layer in layers}
    try:
        for layer, module in originals.items():
            adapter.layers[layer] = Residual(module, forms[layer])
        yield
    finally:
        for layer, module in originals.items():
            adapter.layers[layer] = module


@contextmanager
def ablate(adapter: LayerAdapter, layer: int, mode: str = "neighbour-mean",
           boundary: str = "one-neighbour") -> Iterator[None]:
    """The importance map's ablation of one layer, by mode (SPEC section 1)."""
    if mode == "neighbour-mean":
        context = neighbour_mean(adapter, layer, boundary)
    elif mode == "skip":
        context = skip(adapter, [layer])
    elif mode == "zero":
        context = zero(adapter, [layer])
    else:
        raise AnatomyError(f"Unknown ablation mode '{mode}': use one of {', '.join(ABLATION_MODES)}.")
    with context:
        yield


INTERVENTION_KINDS = ("none", "zero", "scale", "noise", "neighbour-mean", "skip")


@contextmanager
def intervention(adapter: LayerAdapter, kind: str, layers: Sequence[int], *, alpha: float = 0.9,
                 sigma: float = 0.5, seed: int = 0, boundary: str = "one-neighbour",
                 components: Sequence[str] | None = None) -> Iterator[None]:
    """One named intervention on a set of layers, for callers that choose by name (the CLI and the app)."""
    with ExitStack() as stack:
        if kind == "zero":
            stack.enter_context(zero(adapter, layers, components))
        elif kind == "scale":
            stack.enter_context(scale(adapter, layers, alpha, components))
        elif kind == "noise":
            stack.enter_context(add_noise(adapter, layers, sigma, seed, components))
        elif kind == "neighbour-mean":
            for layer in layers:
                stack.enter_context(neighbour_mean(adapter, layer, boundary, components))
        elif kind == "skip":
            stack.enter_context(skip(adapter, layers))
        elif kind != "none":
            raise AnatomyError(f"Unknown intervention '{kind}': use one of {', '.join(INTERVENTION_KINDS)}.")
        yield


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in order: equal fingerprints mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in offload.named_tensors(model):  # offloaded weights from where they live
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
