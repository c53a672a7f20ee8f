"""Configuration of the Growth Transformer: a decoder whose FFN width differs layer by layer.

Kept flat and free of project imports so that the folder works as Hugging Face remote code
(`trust_remote_code=True`) with nothing of Transformer Anatomy installed.
"""

from transformers import PreTrainedConfig


class GrowthConfig(PreTrainedConfig):
    """Llama-like decoder (RMSNorm, SwiGLU, RoPE, tied embeddings) with one FFN width per layer.

    `intermediate_sizes[i]` is the SwiGLU width of layer i (0-based); a uniform model simply
    repeats one width. `layer_roles` records the anatomy role of each layer (R redundant,
    C critical, M minor, ...) so a checkpoint says how it was built; the model does not read it.
    """

    model_type = "growth"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 256,
        intermediate_sizes: list[int] | None = None,
        num_attention_heads: int = 4,
        max_position_embeddings: int = 1024,
        rms_norm_eps: float = 1e-6,
        rope_base: float = 10000.0,
        initializer_range: float = 0.02,
        layer_roles: list[str] | None = None,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | None = 0,
        pad_token_id: int | None = 0,
        **kwargs,
    ) -> None:
        if intermediate_sizes is None:
            intermediate_sizes = [hidden_size * m for m in (1, 4, 4, 1, 4, 4, 1, 2, 4, 4, 2, 1)]
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if layer_roles is not None and len(layer_roles) != len(intermediate_sizes):
            raise ValueError(f"{len(layer_roles)} layer_roles for {len(intermediate_sizes)} layers")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_sizes = [int(w) for w in intermediate_sizes]
        self.num_hidden_layers = len(self.intermediate_sizes)
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_base = rope_base
        self.initializer_range = initializer_range
        self.layer_roles = list(layer_roles) if layer_roles is not None else None
        self.use_cache = use_cache
        kwargs.pop("num_hidden_layers", None)  # derived from intermediate_sizes, never set on its own
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )
