"""One batched call for a parallel group of Llama-family layers (Llama, SmolLM, Mistral, Qwen2 without
sliding windows; nothing else, since the code below reimplements exactly their layer).

The group's weights are stacked once on entry, the projections are batched matmuls over a leading group
axis, and attention is one call with the group folded into the head axis (GQA grouping stays correct
because query and key/value heads are folded the same way), whose keys and values live in the step's
single cache slot. `anatomy.plans.execution` falls back to running the members one by one where
`can_batch` says no, and the plans experiment records which one ran, so its latency column is never
mistaken for batched execution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_BATCHABLE = {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"}


def can_batch(layers: Sequence[nn.Module]) -> bool:
    """Llama-family layers with RMSNorm, SwiGLU and no sliding window can be stacked into one call (not
    where a device map spreads them over devices or offloads them: their weights are not all at hand)."""
    devices = {p.device for layer in layers for p in layer.parameters()}
    return len(devices) == 1 and devices != {torch.device("meta")} and all(
        type(layer).__name__ in _BATCHABLE and getattr(layer.self_attn, "sliding_window", None) is None
        and getattr(getattr(layer.self_attn, "config", None), "sliding_window", None) is None
        for layer in layers)


class BatchedLlamaGroup(nn.Module):
    """k Llama-family layers on the same input as one batched call; returns the mean of their outputs.

    Shapes: x (B,T,H); projections are `bmm` over (k, B*T, H); attention runs once on
    (B, k*heads, T, head_dim). The stacked weights are copies made on entry (k layers' worth of memory).
    """

    batched = True

    def __init__(self, layers: Sequence[nn.Module], slot: int):
        super().__init__()
        first = layers[0]
        attn = first.self_attn
        self.slot, self.k, self.head_dim = slot, len(layers), attn.head_dim
        self.eps = first.input_layernorm.variance_epsilon
        self._attn = (attn,)  # a tuple, so the borrowed module is not registered as a submodule
        self.act = first.mlp.act_fn
        self.q_out, self.kv_out = attn.q_proj.out_features, attn.k_proj.out_features
        self.ffn = first.mlp.gate_proj.out_features

        def stack(get) -> torch.Tensor:
            return torch.stack([get(layer).detach() for layer in layers])

        def stack_bias(*modules) -> torch.Tensor | None:
            if getattr(modules[0](first), "bias", None) is None:
                return None
            return stack(lambda ly: torch.cat([m(ly).bias for m in modules])).unsqueeze(1)

        qkv = (lambda ly: ly.self_attn.q_proj, lambda ly: ly.self_attn.k_proj, lambda ly: ly.self_attn.v_proj)
        gu = (lambda ly: ly.mlp.gate_proj, lambda ly: ly.mlp.up_proj)
        with torch.no_grad():
            self.register_buffer("norm1", stack(lambda ly: ly.input_layernorm.weight)[:, None, None], False)
            self.register_buffer("norm2", stack(lambda ly: ly.post_attention_layernorm.weight)[:, None, None], False)
            self.register_buffer("w_qkv", stack(lambda ly: torch.cat([m(ly).weight for m in qkv]).T), False)
            self.register_buffer("b_qkv", stack_bias(*qkv), False)
            self.register_buffer("w_o", stack(lambda ly: ly.self_attn.o_proj.weight.T), False)
            self.register_buffer("b_o", stack_bias(lambda ly: ly.self_attn.o_proj), False)
            self.register_buffer("w_gu", stack(lambda ly: torch.cat([m(ly).weight for m in gu]).T), False)
            self.register_buffer("b_gu", stack_bias(*gu), False)
            self.register_buffer("w_down", stack(lambda ly: ly.mlp.down_proj.weight.T), False)
            self.register_buffer("b_down", stack_bias(lambda ly: ly.mlp.down_proj), False)
        self.attention_type = getattr(first, "attention_type", None)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """LlamaRMSNorm with per-member weights: x (..., H), weight (k,1,1,H) -> (k, ..., H)."""
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return weight * normed

    @staticmethod
    def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (k, N, in) @ weight (k, in, out) [+ bias (k, 1, out)] in one batched call."""
        return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)

    def _heads(self, x: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
        """(k, B*T, n*d) -> (B, k*n, T, d): the group folded into the head axis."""
        return x.view(self.k, batch, seq, -1, self.head_dim).permute(1, 0, 3, 2, 4).flatten(1, 2)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool | None = False,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs) -> torch.Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

        attn = self._attn[0]
        batch, seq, hidden = hidden_states.shape
        k = self.k
        x = self._norm(hidden_states, self.norm1).reshape(k, batch * seq, hidden)
        q, key, value = self._linear(x, self.w_qkv, self.b_qkv).split([self.q_out, self.kv_out, self.kv_out], -1)
        q, key, value = (self._heads(t, batch, seq) for t in (q, key, value))
        cos, sin = position_embeddings
        q, key = apply_rotary_pos_emb(q, key, cos, sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.slot)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
        out, _ = interface(attn, q, key, value, attention_mask, dropout=0.0, scaling=attn.scaling, **kwargs)
        # out: (B, T, k*heads, d) -> (k, B*T, heads*d)
        out = out.reshape(batch, seq, k, -1).permute(2, 0, 1, 3).reshape(k, batch * seq, -1)
        h = hidden_states + self._linear(out, self.w_o, self.b_o).view(k, batch, seq, hidden)
        gate, up = self._linear(self._norm(h, self.norm2).view(k, batch * seq, hidden),
                                self.w_gu, self.b_gu).split(self.ffn, -1)
        h = h + self._linear(self.act(gate) * up, self.w_down, self.b_down).view(k, batch, seq, hidden)
        return h.mean(dim=0)
