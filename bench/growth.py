"""Training speed of the growth trainer against a plain PyTorch loop, and per phase.

    python bench/growth.py [--preset paper] [--steps 20] [--rounds 2]
    python bench/growth.py --smoke        # seconds: the tiny preset, 2 steps, one round

Both sides train the same model (same init) on the same batches with the same AdamW settings
and gradient clipping; the trainer's time is its whole `fit()` (accelerate prepare, phase
set-up, its two forced evaluations on one chunk), measured from outside. Rounds alternate
plain / trainer so that drifting machine load hits both; the median of each side is used.
`ratio:` is measured in process CPU time, which other jobs sharing the cores do not inflate
(on a busy 2-core machine wall-clock rounds of the same loop varied by 30%); the wall-clock
ratio is printed beside it.
Random tokens: speed does not depend on what the text says, so no corpus download is needed.
Prints `ratio: <trainer tokens/s / plain tokens/s>` (target >= 0.9) and tokens/s per phase.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from growth_models.plan import default_plan  # noqa: E402
from growth_models.presets import PRESETS, build_model  # noqa: E402
from growth_models.trainer import Trainer, TrainConfig  # noqa: E402
from bench.smoke import SMOKE_HELP  # noqa: E402


def plain_loop(model, chunks: torch.Tensor, cfg: TrainConfig) -> tuple[float, float]:
    """The loop everyone writes: sample, forward, backward, clip, step. Returns tokens per wall
    second and per CPU second."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(cfg.steps):
        x = chunks[torch.randint(len(chunks), (cfg.batch_size,), generator=gen)]
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)


def trainer_run(model, chunks: torch.Tensor, cfg: TrainConfig, plan=None) -> tuple[float, float, Trainer]:
    """The growth trainer's whole `fit()`: tokens per wall second and per CPU second."""
    trainer = Trainer(model, plan, chunks, chunks[:1], cfg)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit()
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu), trainer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round (uniform schedule)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--phase-steps", type=int, default=120, help="total steps of the per-phase growth run")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} (the tiny preset)")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.steps, args.rounds, args.phase_steps = "tiny", 2, 1, 12
    preset = PRESETS[args.preset]
    plan = default_plan()
    chunks = torch.randint(0, preset.vocab_size, (512, preset.seq_len), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=args.steps, batch_size=preset.batch_size, seq_len=preset.seq_len, lr=preset.lr,
                      eval_every=10**9, eval_chunks=1, spectra_every=0, progress=False)
    print(f"preset {args.preset}: batch {cfg.batch_size} x seq {cfg.seq_len}, {args.steps} steps a round, "
          f"{torch.get_num_threads()} torch threads")
    warm = build_model(plan, preset, preset.vocab_size, "uniform", 0)
    plain_loop(warm, chunks, TrainConfig(steps=3, batch_size=cfg.batch_size, seq_len=cfg.seq_len))
    plain, ours = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(build_model(plan, preset, preset.vocab_size, "uniform", 0), chunks, cfg))
        ours.append(trainer_run(build_model(plan, preset, preset.vocab_size, "uniform", 0), chunks, cfg)[:2])
        print(f"round {r}: plain {plain[-1][0]:,.0f} tokens/s wall, {plain[-1][1]:,.0f} tokens/CPU-s | "
              f"trainer {ours[-1][0]:,.0f} tokens/s wall, {ours[-1][1]:,.0f} tokens/CPU-s")
    pw, pc = (statistics.median(x[i] for x in plain) for i in (0, 1))
    tw, tc = (statistics.median(x[i] for x in ours) for i in (0, 1))
    print(f"plain loop: {pw:,.0f} tokens/s wall, {pc:,.0f} tokens/CPU-s")
    print(f"growth trainer (uniform schedule): {tw:,.0f} tokens/s wall, {tc:,.0f} tokens/CPU-s")
    print(f"wall-clock ratio: {tw / pw:.3f}")
    print(f"ratio: {tc / pc:.3f}")
    p = pc
    phase_cfg = TrainConfig(steps=args.phase_steps, batch_size=cfg.batch_size, seq_len=cfg.seq_len, lr=cfg.lr,
                            eval_every=10**9, eval_chunks=1, spectra_every=0, progress=False)
    *_, trainer = trainer_run(build_model(plan, preset, preset.vocab_size, "growth", 0), chunks, phase_cfg, plan)
    print("growth schedule, speed per phase (optimiser steps only; vs plain = per CPU second):")
    print(f"{'phase':<14} {'layers':<26} {'steps':>5} {'tokens/s':>9} {'tokens/CPU-s':>12} {'vs plain':>8}")
    for row in trainer.phase_log:
        per_cpu = row["tokens"] / row["cpu_seconds"]
        print(f"{row['phase']:<14} {row['layers']:<26} {row['steps']:>5} {row['tokens_per_s']:>9,.0f} "
              f"{per_cpu:>12,.0f} {per_cpu / p:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
