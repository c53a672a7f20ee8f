"""Model and run sizes: `paper` (the study's model), `small` (hidden 64) and `tiny` (same code path, seconds)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .configuration_growth import GrowthConfig
from .modeling_growth import GrowthForCausalLM
from .plan import GrowthPlan, uniform_width
from .trainer import TrainConfig


@dataclass(frozen=True)
class Preset:
    """Everything size-related; the schedule and the plan are chosen separately."""

    hidden: int
    heads: int
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    eval_every: int
    eval_chunks: int
    spectra_every: int
    max_train_chars: int | None = None  # None: the whole training split

    def train_config(self, steps: int | None = None, seed: int = 0, **overrides) -> TrainConfig:
        cfg = TrainConfig(steps=steps or self.steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=self.lr,
                          eval_every=self.eval_every, eval_chunks=self.eval_chunks,
                          spectra_every=self.spectra_every, seed=seed)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


PRESETS = {
    # hidden 256 and the role widths are the study's; batch 4 x 64 tokens is sized so that the
    # 3-seed comparison (9 runs) fits in about an hour on 2 CPU cores shared with other jobs.
    "paper": Preset(hidden=256, heads=4, vocab_size=4096, seq_len=64, batch_size=4, steps=656, lr=1e-3,
                    eval_every=41, eval_chunks=64, spectra_every=82),
    # the study regime's measured preset: the study's 12 layers and role widths at hidden 64 (x1/x2/x4 of 64),
    # small enough for 3 seeds of ~100 epochs of the factual sentences on 2 shared CPU cores
    "small": Preset(hidden=64, heads=2, vocab_size=512, seq_len=32, batch_size=8, steps=656, lr=2e-3,
                    eval_every=41, eval_chunks=64, spectra_every=0),
    "tiny": Preset(hidden=32, heads=2, vocab_size=300, seq_len=32, batch_size=4, steps=24, lr=3e-3,
                   eval_every=6, eval_chunks=8, spectra_every=6, max_train_chars=60_000),
}


def build_model(plan: GrowthPlan, preset: Preset, vocab_size: int, schedule: str, seed: int) -> GrowthForCausalLM:
    """A fresh model: per-role widths for `growth`, one matched width for `uniform`."""
    import torch

    if schedule == "growth":
        widths, roles = plan.widths(preset.hidden), list(plan.roles)
    else:
        widths, roles = [uniform_width(plan, preset.hidden)] * plan.n_layers, ["U"] * plan.n_layers
    torch.manual_seed(seed)
    cfg = GrowthConfig(vocab_size=vocab_size, hidden_size=preset.hidden, intermediate_sizes=widths,
                       num_attention_heads=preset.heads, max_position_embeddings=max(1024, preset.seq_len),
                       layer_roles=roles, eos_token_id=0, pad_token_id=0)
    return GrowthForCausalLM(cfg)
