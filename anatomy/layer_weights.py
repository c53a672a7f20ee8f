"""Per-component weight stacks across depth: layer l's matrix flattened into row l of an (N, P) matrix.

The structure and predictability experiments both treat the N matrices of one component as N points in
R^P. Everything they need from the whole stack (Pearson correlations of deltas, cosine similarities, PCA)
follows from the N x N Gram matrix, so the big (N, P) stack is built once per component and reduced.
"""

from __future__ import annotations

import torch

from .layers import LayerAdapter


def flat_stack(adapter: LayerAdapter, component: str, layers: list[int] | None = None) -> torch.Tensor:
    """(len(layers), P) float32 CPU copy of the component's weights, each (out, in) matrix flattened row-major."""
    layers = list(range(adapter.num_layers)) if layers is None else layers
    return torch.stack([adapter.component(i, component).matrix().detach().float().cpu().flatten() for i in layers])


def gram_stats(stack: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """Raw Gram `R = W W^T` (float64), row sums `s` and width `P`: the sufficient statistics of the stack."""
    w = stack.double()
    return {"gram": w @ w.T, "sums": w.sum(dim=1), "width": w.shape[1]}


def add_gram_stats(parts: list[dict[str, torch.Tensor | int]]) -> dict[str, torch.Tensor | int]:
    """The statistics of the concatenation of several components (a whole layer as one vector)."""
    return {"gram": sum(p["gram"] for p in parts), "sums": sum(p["sums"] for p in parts),
            "width": sum(p["width"] for p in parts)}


def centered_gram(stats: dict[str, torch.Tensor | int]) -> torch.Tensor:
    """Gram of each layer's vector minus its own mean: the covariances behind Pearson correlations."""
    s = stats["sums"]
    return stats["gram"] - torch.outer(s, s) / stats["width"]


def cosine_matrix(stats: dict[str, torch.Tensor | int]) -> torch.Tensor:
    """Layer-by-layer cosine similarity of the flattened matrices."""
    norms = stats["gram"].diagonal().clamp_min(1e-300).sqrt()
    return stats["gram"] / torch.outer(norms, norms)
