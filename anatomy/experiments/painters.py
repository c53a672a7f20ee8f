"""Layers as painters (SPEC section 8, Sun et al. 2024): skip, reverse, shuffle, repeat or parallelise a
block of middle layers of a frozen model; PPL with its interval, task accuracy and latency per variant.

Latency is decoding time in ms per generated token (greedy `generate` with the KV cache, batch 1,
median of repeated runs) and prefill time in ms per token (one forward over the first evaluation batch),
each measured interleaved with the unchanged model in the same run, so the speedup column is paired and
robust to a busy machine. Parallel groups run as one batched call for Llama-family layers; the
`parallel_execution` column says when a group had to run member by member instead.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import plots, report
from ..errors import AnatomyError
from ..evaluate import EvalSet, degradation, perplexity
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..plans import (GRAMMAR, VARIANTS, Plan, apply_plan, can_batch, export_plan, middle_block, parse_plan,
                     plan_refusal, variant_plan)
from ..progress import ProgressCallback, track
from ..tasks import load_tasks, task_accuracy

COLUMNS = ["variant", "block_size", "block", "plan", "layer_calls", "parallel_execution", "ppl", "ppl_low",
           "ppl_high", "degradation_pct", "degradation_low", "degradation_high", "decode_ms_per_token",
           "baseline_decode_ms_per_token", "decode_speedup", "prefill_ms_per_token",
           "baseline_prefill_ms_per_token", "prefill_speedup"]


@dataclass
class PaintersConfig:
    """Variants over centred middle blocks of each size, plus any user plans (the `--plan` grammar)."""

    variants: tuple[str, ...] = VARIANTS
    block_sizes: tuple[int, ...] = (2, 4, 8)
    loops: int = 2
    seed: int = 0
    plans: list[str] = field(default_factory=list)
    latency_repeats: int = 5
    latency_tokens: int = 16
    batched: bool = True
    tasks: bool = True

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise AnatomyError(f"Unknown variants {unknown}: use some of {', '.join(VARIANTS)}.")
        if self.latency_repeats < 1 or self.latency_tokens < 1 or self.loops < 1:
            raise AnatomyError("latency_repeats, latency_tokens and loops must be >= 1.")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def measure_latency(model: PreTrainedModel, plan: Plan, eval_set: EvalSet, config: PaintersConfig,
                    pad_id: int) -> dict[str, float]:
    """Median decode and prefill ms per token under `plan`, interleaved with the unchanged model."""
    batch = eval_set.batches[0]
    prompt = batch.input_ids[:1, :int(batch.attention_mask[0].sum())]
    tokens = int(batch.attention_mask.sum())
    n = config.latency_tokens

    def decode() -> None:
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, use_cache=True, pad_token_id=pad_id)

    def prefill() -> None:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)

    times: dict[str, list[float]] = {"decode": [], "baseline_decode": [], "prefill": [], "baseline_prefill": []}
    for repeat in range(config.latency_repeats + 1):  # the first round warms up and is dropped
        for prefix, context in (("baseline_", None), ("", plan)):
            if context is None:
                sample = (_timed(decode), _timed(prefill))
            else:
                with apply_plan(model, plan, config.batched):
                    sample = (_timed(decode), _timed(prefill))
            if repeat:
                times[prefix + "decode"].append(sample[0] * 1000 / n)
                times[prefix + "prefill"].append(sample[1] * 1000 / tokens)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"decode_ms_per_token": med["decode"], "baseline_decode_ms_per_token": med["baseline_decode"],
            "decode_speedup": med["baseline_decode"] / med["decode"],
            "prefill_ms_per_token": med["prefill"], "baseline_prefill_ms_per_token": med["baseline_prefill"],
            "prefill_speedup": med["baseline_prefill"] / med["prefill"]}


def painters_plans(num_layers: int, config: PaintersConfig) -> list[tuple[str, int, str, Plan]]:
    """(variant, block size, block text, plan) for every row, the unchanged model first."""
    rows = [("baseline", 0, "", Plan.identity(num_layers))]
    for size in config.block_sizes:
        block = middle_block(num_layers, size)
        for variant in config.variants:
            plan = variant_plan(variant, num_layers, size, seed=config.seed, loops=config.loops)
            rows.append((variant, size, f"{block[0]}-{block[-1]}", plan))
    for text in config.plans:
        rows.append(("custom", 0, "", parse_plan(text, num_layers)))
    return rows


def run_painters(model: PreTrainedModel, eval_set: EvalSet, config: PaintersConfig | None = None,
                 progress: ProgressCallback | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> pd.DataFrame:
    """One row per (variant, block size) and per user plan; task accuracies need the `tokenizer`."""
    config = config or PaintersConfig()
    config.validate()
    adapter = LayerAdapter(model)
    layers = list(adapter.layers)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    tasks = load_tasks(tokenizer) if config.tasks and tokenizer is not None else []
    specs = painters_plans(adapter.num_layers, config)
    t0 = time.perf_counter()
    base = None
    rows, refused = [], []
    for variant, size, block, plan in track(specs, "painters", progress):
        if refusal := plan_refusal(adapter, plan):
            refused.append(f"{variant} {size}: {refusal}")
            continue
        groups = [s for s in plan.steps if len(s) > 1]
        execution = "" if not groups else (
            "batched" if config.batched and all(can_batch([layers[i] for i in g]) for g in groups) else "sequential")
        with apply_plan(model, plan, config.batched):
            result = perplexity(model, eval_set)
            accuracy = task_accuracy(model, tasks, pad_id) if tasks else {}
        if base is None:  # the unchanged model runs first
            base = result
        d, d_low, d_high = degradation(result, base, eval_set)
        rows.append({"variant": variant, "block_size": size, "block": block, "plan": str(plan),
                     "layer_calls": plan.layer_calls, "parallel_execution": execution, **result.as_dict(),
                     "degradation_pct": d, "degradation_low": d_low, "degradation_high": d_high,
                     **{f"acc_{k}": v for k, v in accuracy.items()},
                     **measure_latency(model, plan, eval_set, config, pad_id)})
    df = pd.DataFrame(rows)
    df = df[COLUMNS[:12] + [c for c in df.columns if c.startswith("acc_")] + COLUMNS[12:]]
    df.attrs.update(baseline=base.as_dict(), refused=refused, timings={"painters_s": time.perf_counter() - t0})
    return df


def painters_report(df: pd.DataFrame, header: str, config: PaintersConfig) -> str:
    base = df.iloc[0]
    acc = [c for c in df.columns if c.startswith("acc_")]
    lines = [header, "## Layers as painters",
             f"- Baseline PPL {base.ppl:.3f} (95% CI {base.ppl_low:.3f}-{base.ppl_high:.3f}); decode "
             f"{base.baseline_decode_ms_per_token:.2f} ms/token, prefill {base.baseline_prefill_ms_per_token:.3f} "
             "ms/token" + (", task accuracy " + ", ".join(f"{c[4:]} {base[c]:.0%}" for c in acc) if acc else ""),
             f"- Middle blocks are centred; shuffle seed {config.seed}; looped parallel runs the block "
             f"{config.loops} times; repeat runs the block's middle layer in place of the whole block.",
             f"- Latency: median of {config.latency_repeats} runs after a warm-up, each interleaved with the "
             f"unchanged model (speedup = baseline / variant, paired); decode = greedy generation of "
             f"{config.latency_tokens} tokens with the KV cache, batch 1; prefill = one forward over the first "
             "evaluation batch. Every step of a plan has its own KV-cache slot.",
             "- Parallel groups: " + ("one batched call per group where the layers are Llama-family, else member by "
                                      "member (see `parallel_execution`)." if config.batched else
                                      "run member by member (--sequential-parallel)."), ""]
    if acc:
        lines.append("### Which task degrades first")
        for size, part in df[df.block_size > 0].groupby("block_size"):
            drops = {c[4:]: float((base[c] - part[c]).mean()) for c in acc}
            lines.append(f"- block of {size}: mean accuracy drop over variants " + ", ".join(
                f"{k} {v:+.0%}" for k, v in drops.items()).replace("+-", "-"))
        lines.append("")
    show = ["variant", "block_size", "block", "layer_calls", "ppl", "ppl_low", "ppl_high", "degradation_pct",
            *acc, "decode_ms_per_token", "decode_speedup", "prefill_ms_per_token", "prefill_speedup"]
    lines += [report.markdown_table(df[show]), "", "Plans (`--plan` grammar):", ""]
    lines += [f"- {r.variant} {r.block_size}: `{r.plan}`" for r in df.itertuples() if r.variant != "baseline"]
    lines += ["", "Not run on this model:", ""] + [f"- {line}" for line in df.attrs["refused"]] \
        if df.attrs.get("refused") else []
    return "\n".join(lines) + "\n"


def painters_artefacts(df: pd.DataFrame, loaded: LoadedModel, eval_set: EvalSet,
                       config: PaintersConfig) -> report.Artefacts:
    """Table, figures, report and results of a painters run (the CLI's run folder and the app's)."""
    return report.Artefacts(
        tables={"painters": df}, figures=plots.painters_figures(df, loaded.name),
        markdown=painters_report(df, report.header("Layers as painters", loaded, eval_set), config),
        results={"baseline": df.attrs["baseline"]})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("painters", help="skip/reorder/repeat/parallelise middle layers (SPEC section 8)",
                                   description=__doc__, epilog=GRAMMAR,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser, out="runs/painters")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--block-sizes", default="2,4,8", help="middle-block sizes, centred (default 2,4,8)")
    parser.add_argument("--loops", type=int, default=2, help="iterations of looped parallel (default 2)")
    parser.add_argument("--plan", action="append", default=[],
                        help="a user plan such as 0-3,[4-7]x2,8-29 (grammar below; may repeat)")
    parser.add_argument("--save", help="write the single --plan (no parallel groups) as a Hugging Face model folder")
    parser.add_argument("--latency-repeats", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--latency-tokens", type=int, default=16, help="generated tokens per decode run (default 16)")
    parser.add_argument("--sequential-parallel", action="store_true",
                        help="run parallel groups member by member instead of one batched call")
    parser.add_argument("--no-tasks", action="store_true", help="skip the built-in fact/arithmetic tasks")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    if args.save and len(args.plan) != 1:
        raise AnatomyError("--save writes one plan: give exactly one --plan.")
    loaded, eval_set = cli.load_model_and_eval_set(args)
    n = LayerAdapter(loaded.model).num_layers
    config = PaintersConfig(variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
                            block_sizes=cli.parse_ints(args.block_sizes, "--block-sizes"),
                            loops=args.loops, seed=args.seed, plans=list(args.plan),
                            latency_repeats=args.latency_repeats, latency_tokens=args.latency_tokens,
                            batched=not args.sequential_parallel, tasks=not args.no_tasks)
    if args.save:
        path = export_plan(loaded.model, loaded.tokenizer, parse_plan(args.plan[0], n), args.save)
        print(f"saved plan '{args.plan[0]}' as a model folder: {path}")
    df = run_painters(loaded.model, eval_set, config, tokenizer=loaded.tokenizer)
    run = report.RunFolder(args.out, "painters")
    run.write(painters_artefacts(df, loaded, eval_set, config), loaded, eval_set, config, df.attrs["timings"])
    cli.print_summary(run, df[["variant", "block_size", "ppl", "degradation_pct", "decode_ms_per_token",
                               "decode_speedup"]])
