"""The Growth Transformer: a Llama-like decoder with a per-layer SwiGLU width and growable depth.

Flat, relative imports only, so that `save_pretrained` can ship this file beside the weights and
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` works anywhere.

Names follow Llama (`model.layers.{i}.self_attn.q_proj`, `mlp.down_proj`, ...), so tools that know
Llama find every layer and component here too. Layer indices are 0-based everywhere.

`model.model.active_layers` lists the layers that take part in the forward pass (all by default).
The developmental trainer shrinks it so that layers not yet grown are absent, not merely frozen.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_growth import GrowthConfig


class GrowthRMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (no bias), computed in float32 for stability."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class GrowthRotaryEmbedding(nn.Module):
    """RoPE cos/sin tables, computed once per forward and shared by every layer."""

    def __init__(self, config: GrowthConfig) -> None:
        super().__init__()
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: [batch, seq] -> cos, sin: [batch, seq, head_dim]
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class GrowthAttention(nn.Module):
    """Multi-head causal self-attention, 4 x hidden^2 weights without bias, RoPE on q and k."""

    def __init__(self, config: GrowthConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # the KV-cache slot; never shared between two layers
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: Cache | None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        # [b, t, h] -> [b, heads, t, head_dim]
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        if attention_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class GrowthMLP(nn.Module):
    """SwiGLU feed-forward block; its width is the only thing that differs between layers."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GrowthDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). Two RMSNorms, as in the study."""

    def __init__(self, config: GrowthConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = GrowthRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = GrowthAttention(config, layer_idx)
        self.post_attention_layernorm = GrowthRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GrowthMLP(config.hidden_size, config.intermediate_sizes[layer_idx])

    def forward(self, x, position_embeddings, attention_mask, past_key_values) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings, attention_mask, past_key_values)
        return x + self.mlp(self.post_attention_layernorm(x))


class GrowthPreTrainedModel(PreTrainedModel):
    config_class = GrowthConfig
    config: GrowthConfig
    base_model_prefix = "model"
    _no_split_modules = ["GrowthDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for matrices, ones for norm gains: the Llama recipe."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
        elif isinstance(module, GrowthRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, GrowthRotaryEmbedding):
            dim = self.config.head_dim
            module.inv_freq.copy_(1.0 / (self.config.rope_base ** (torch.arange(0, dim, 2).float() / dim)))


class GrowthModel(GrowthPreTrainedModel):
    """Embedding, the decoder layers that are active, final norm. Returns the last hidden state."""

    def __init__(self, config: GrowthConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(GrowthDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = GrowthRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = GrowthRotaryEmbedding(config)
        self.active_layers: list[int] = list(range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [b, t, h]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if not use_cache:
            past_key_values = None
        active = self.active_layers
        past = past_key_values.get_seq_length(active[0]) if past_key_values is not None and active else 0
        b, t = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=x.device).unsqueeze(0).expand(b, -1)
        mask = _attention_mask(attention_mask, b, t, past, x.device)
        position_embeddings = self.rotary_emb(x, position_ids)
        for i in active:
            x = self.layers[i](x, position_embeddings, mask, past_key_values)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), past_key_values=past_key_values)


def _attention_mask(padding: torch.Tensor | None, b: int, t: int, past: int, device) -> torch.Tensor | None:
    """Boolean [b, 1, t, past + t] mask (True = attend), or None when plain causal attention suffices.

    None lets SDPA take its fused causal path during training; a real mask is built only when the
    cache offsets the queries or when a padding mask hides some keys.
    """
    has_padding = padding is not None and not bool(padding.all())
    if past == 0 and not has_padding:
        return None
    q_pos = torch.arange(past, past + t, device=device)[:, None]
    k_pos = torch.arange(past + t, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None].expand(b, 1, t, past + t)
    if has_padding:
        mask = mask & padding[:, None, None, -(past + t):].bool()
        # a fully padded query row would give NaN in SDPA; let it see itself (its output is ignored)
        mask = mask | (~mask.any(-1, keepdim=True) & (k_pos == q_pos))
    return mask


class GrowthForCausalLM(GrowthPreTrainedModel, GenerationMixin):
    """Causal LM head tied to the input embedding; `labels` are shifted inside, as in transformers."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: GrowthConfig) -> None:
        super().__init__(config)
        self.model = GrowthModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # [b, t, vocab]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)


GrowthConfig.register_for_auto_class()
GrowthForCausalLM.register_for_auto_class("AutoModelForCausalLM")
