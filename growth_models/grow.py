"""Growing a layer: clone a grown layer into an empty slot, with noise and width matching.

Where the FFN widths differ, the clone keeps the source's widest-norm neurons (the neurons that
carry most weight), or, when the target is wider, duplicates them Net2Net-style with the
down-projection split between the copies so the function is unchanged before the noise.
"""

from __future__ import annotations

import torch

from .modeling_growth import GrowthDecoderLayer


def neuron_norms(layer: GrowthDecoderLayer) -> torch.Tensor:
    """L2 norm of each FFN neuron i: its gate row, up row and down column together. Shape [width]."""
    mlp = layer.mlp
    return (mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
            + mlp.down_proj.weight.pow(2).sum(0)).sqrt()


@torch.no_grad()
def clone_layer(src: GrowthDecoderLayer, dst: GrowthDecoderLayer, noise: float = 0.01,
                ffn_scale: float = 1.0, generator: torch.Generator | None = None) -> None:
    """Make `dst` a noisy copy of `src` (in place); `dst` keeps its own width and KV-cache slot.

    noise: std of the added Gaussian noise relative to each matrix's own std.
    ffn_scale: multiplies the FFN output (down_proj), e.g. 0.5 for the study's connective phase.
    """
    for name in ("input_layernorm", "post_attention_layernorm"):
        getattr(dst, name).weight.copy_(getattr(src, name).weight)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        getattr(dst.self_attn, name).weight.copy_(getattr(src.self_attn, name).weight)
    w_src, w_dst = src.mlp.gate_proj.out_features, dst.mlp.gate_proj.out_features
    order = torch.argsort(neuron_norms(src), descending=True)
    if w_dst <= w_src:
        keep = torch.sort(order[:w_dst]).values  # widest-norm neurons, original order
        split = torch.ones(w_dst, dtype=src.mlp.down_proj.weight.dtype, device=keep.device)
    else:  # duplicate the widest neurons; each copy gets 1/(copies) of its down column
        extra = order[torch.arange(w_dst - w_src) % w_src]
        keep = torch.cat([torch.arange(w_src, device=order.device), extra])
        counts = torch.bincount(keep, minlength=w_src).to(src.mlp.down_proj.weight.dtype)
        split = 1.0 / counts[keep]
    dst.mlp.gate_proj.weight.copy_(src.mlp.gate_proj.weight[keep])
    dst.mlp.up_proj.weight.copy_(src.mlp.up_proj.weight[keep])
    dst.mlp.down_proj.weight.copy_(src.mlp.down_proj.weight[:, keep] * split[None, :] * ffn_scale)
    if noise > 0:
        for p in dst.parameters():
            if p.dim() == 2:
                std = p.std()
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype, device="cpu").to(p.device)
                       * (noise * std))
