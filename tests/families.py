"""Tiny random models of the causal-LM families of transformers: each family's default config, shrunk.

Every family is built from `AutoConfig.for_model(model_type)` with the sizes below (only those the config
has), so the test matrix exercises each family's real modules, fused layouts and layer outputs.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

# Llama-likes, fused QKV, parallel blocks, MoE, sliding-window alternation, hybrid stacks, a multimodal
# wrapper and SSMs.
FAMILIES = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite",
    "stablelm", "starcoder2", "cohere", "smollm3",
    "gpt2", "gpt_neox", "phi3", "bloom", "falcon", "mpt", "codegen", "gptj", "phi", "gpt_neo", "opt", "openai-gpt",
    "mixtral", "qwen3_moe", "qwen2_moe", "olmoe", "granitemoe", "gpt_oss",
    "lfm2", "qwen3_5", "falcon_h1", "gemma3", "mamba", "mamba2",
)

SIZES = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    vocab_size=320, max_position_embeddings=256, n_inner=64, ffn_dim=64, ffn_hidden_size=64, rotary_dim=4,
    word_embed_proj_dim=32, sliding_window=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    num_experts=4, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    state_size=8, time_step_rank=4, num_heads=4, n_groups=1, expand=2, chunk_size=8, block_multiple_of=8,
    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
    mamba_d_ssm=64, mamba_n_heads=8, mamba_d_head=8, mamba_d_state=8, mamba_chunk_size=8,
)

# What a family needs beyond the sizes: alternating layer kinds for 4 layers, a tiny vision tower.
EXTRA = {
    "lfm2": dict(layer_types=["conv", "full_attention", "conv", "full_attention"]),
    "qwen3_5": dict(layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"]),
    "gemma3_text": dict(layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
    "gpt_neo": dict(attention_types=[[["global", "local"], 2]], window_size=4),
    "mamba2": dict(head_dim=16),
    "gemma3": dict(vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, image_size=16, patch_size=8), mm_tokens_per_image=4),
}


def family_config(model_type: str, layers: int = 4, **overrides):
    """The family's default config with the tiny sizes; a multimodal wrapper gets them in its text config."""
    base = AutoConfig.for_model(model_type)
    text = base.get_text_config(decoder=True)
    known = set(text.to_dict()) | set(getattr(text, "attribute_map", {}))
    sizes = {k: v for k, v in {**SIZES, "num_hidden_layers": layers}.items() if k in known}
    extra = {**EXTRA.get(model_type, {}), **overrides}
    if text is base:
        return AutoConfig.for_model(model_type, **{**sizes, **extra})
    text_extra = {k: extra.pop(k) for k in list(extra) if k in known}
    return AutoConfig.for_model(model_type, text_config={**sizes, **text_extra}, **extra)


def make_family_model(model_type: str, layers: int = 4, seed: int = 0, **overrides) -> PreTrainedModel:
    """A random model of the family whose projections are large enough that an ablation changes the PPL."""
    torch.manual_seed(seed)
    config = family_config(model_type, layers, **overrides)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if p.dim() == 3 and "expert" in name:
                p.normal_(0, 0.2)
    return model.eval()
