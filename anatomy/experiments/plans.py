"""Layer plans (SPEC section 8, "Transformer Layers as Painters", Sun et al. 2024): skip, reverse, shuffle,
repeat or parallelise a block of middle layers of a frozen model, or run any plan of the grammar below;
PPL with its interval, task accuracy and latency per plan.

Latency is decoding time in ms per generated token (greedy `generate` with the KV cache, batch 1,
median of repeated runs) and prefill time in ms per token (one forward over the first evaluation batch),
each measured interleaved with the unchanged model in the same run, so the speedup column is paired and
robust to a busy machine. Parallel groups run as one batched call for Llama-family layers; the
`parallel_execution` column says when a group had to run member by member instead.

With `edge_controls` (on in the study), every skipped middle block has its control: a block of the same size
skipped at the start (layers 1..k) and at the end (the k layers before the last), the first and last layers staying as they do for the
middle block, so "the middle layers can be skipped" is read against where else k layers can go. 
Task accuracy comes from lm-evaluation-harness: the built-in tasks are the shipped `anatomy_arithmetic` (200
additions) and `anatomy_facts` (124 facts), scored with the plan in place (`acc_arithmetic`, `acc_facts`);
`--tasks` adds any other lm-eval task. The `tasks` table holds every task's accuracy with its stderr and the
drop from the unchanged model with its paired 95% interval; `task_items` holds each plan's answer to each
built-in item (right or wrong): what a paired bootstrap over items resamples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import findings, plots, processes, report, work
from ..autocast_cache import cached_casts
from ..errors import AnatomyError
from ..evaluate import EvalSet, PPLResult, degradation, perplexity
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..layers import LayerAdapter
from ..lm_eval_tasks import SHIPPED, TaskDrops, TaskScores, check_tasks, task_passes, task_section, tasks_option
from ..load import LoadedModel
from ..options import INTS, LINES, OPTIONAL_TEXT, SEED_MAX, option
from ..plans import (GRAMMAR, VARIANTS, Plan, apply_plan, can_batch, export_plan, middle_block, parse_plan,
                     plan_refusal, variant_plan)
from ..progress import ProgressCallback
from ..sweep import sweep

COLUMNS = ["variant", "block_size", "block", "plan", "layer_calls", "parallel_execution", "ppl", "ppl_low",
           "ppl_high", "degradation_pct", "degradation_low", "degradation_high", "decode_ms_per_token",
           "baseline_decode_ms_per_token", "decode_speedup", "prefill_ms_per_token",
           "baseline_prefill_ms_per_token", "prefill_speedup"]


@dataclass
class PlansConfig:
    """Variants over centred middle blocks of each size, plus any user plans (the plan grammar)."""

    variants: tuple[str, ...] = option(VARIANTS, f"comma-separated, from {', '.join(VARIANTS)}", label="Variants",
                                       choices=VARIANTS, multiple=True)
    block_sizes: tuple[int, ...] = option((2, 4, 8), "middle-block sizes, centred",
                                          label="Middle-block sizes (empty: only your plans)", codec=INTS, minimum=1,
                                              maximum=100_000, max_items=16)
    plans: tuple[str, ...] = option((), "a user plan such as 0-3,[4-7]x2,8-29 (grammar in --help; may repeat)",
                                    label="Your plans, one a line, e.g. 0-12,[13-16]x2,17-29", flag="--plan",
                                    codec=LINES, repeat=True, max_items=16)
    edge_controls: bool = option(False, "also skip equal-size blocks at the start and the end beside each skipped "
                                 "middle block (the study does)", ui=False)
    loops: int = option(2, "iterations of looped parallel", label="Loops of looped-parallel", minimum=1, maximum=64,
                        public_maximum=8)
    seed: int = option(0, "seed of the shuffle variant", label="Shuffle seed", minimum=0, maximum=SEED_MAX)
    latency_repeats: int = option(5, "timed runs per row", label="Timed runs per row (CLI: 5)", minimum=1,
                                  maximum=100, public_maximum=5)
    latency_tokens: int = option(16, "generated tokens per decode run", label="Tokens per decode run", minimum=1,
                                 maximum=512, public_maximum=64)
    batched: bool = option(True, "run parallel groups member by member instead of one batched call",
                           label="Parallel groups as one batched call (Llama family)", flag="--sequential-parallel")
    tasks: bool = option(True, f"skip the built-in tasks ({', '.join(SHIPPED)})",
                         label="Built-in fact and arithmetic tasks (lm-eval)")
    lm_eval_tasks: tuple[str, ...] = tasks_option("accuracy of the unchanged model and under each plan, beside the "
                                                  "built-in ones", flag="--tasks")
    save: str | None = option(None, "write the single --plan (no parallel groups) as a Hugging Face model folder",
                              codec=OPTIONAL_TEXT, ui=False)

    def scored_tasks(self) -> tuple[str, ...]:
        """The lm-eval tasks each plan is scored on: the built-in ones (unless `tasks` is off), then `--tasks`."""
        return tuple(dict.fromkeys((*SHIPPED,) * self.tasks + self.lm_eval_tasks))

    def validate(self) -> None:
        check_tasks(self.lm_eval_tasks)
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise AnatomyError(f"Unknown variants {unknown}: use some of {', '.join(VARIANTS)}.")
        if self.latency_repeats < 1 or self.latency_tokens < 1 or self.loops < 1:
            raise AnatomyError("latency_repeats, latency_tokens and loops must be >= 1.")
        if not self.plans and not (self.variants and self.block_sizes):
            raise AnatomyError("Nothing to run: choose variants and block sizes, or type a plan.")
        if self.save and len(self.plans) != 1:
            raise AnatomyError("--save writes one plan: give exactly one --plan.")
        for text in self.plans:  # the grammar now; the layers against the model once it is loaded
            parse_plan(text, 10**6)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def measure_latency(model: PreTrainedModel, plan: Plan, eval_set: EvalSet, config: PlansConfig,
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
    with cached_casts():  # a plan changes which layers run, never a weight
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


def plan_rows(num_layers: int, config: PlansConfig) -> list[tuple[str, int, str, Plan]]:
    """(variant, block size, block text, plan) for every row, the unchanged model first."""
    rows = [("baseline", 0, "", Plan.identity(num_layers))]
    for size in config.block_sizes:
        block = middle_block(num_layers, size)
        for variant in config.variants:
            plan = variant_plan(variant, num_layers, size, seed=config.seed, loops=config.loops)
            rows.append((variant, size, f"{block[0]}-{block[-1]}", plan))
        if config.edge_controls and "skip" in config.variants:
            for name, edge in (("skip-start", range(1, 1 + size)), ("skip-end", range(num_layers - 1 - size,
                                                                                       num_layers - 1))):
                rows.append((name, size, f"{edge[0]}-{edge[-1]}",
                             Plan.from_order([i for i in range(num_layers) if i not in edge])))
    for text in config.plans:
        rows.append(("custom", 0, "", parse_plan(text, num_layers)))
    return rows


def run_plans(model: PreTrainedModel, eval_set: EvalSet, config: PlansConfig | None = None,
              progress: ProgressCallback | None = None, tokenizer: PreTrainedTokenizerBase | None = None) -> Result:
    """One row per (variant, block size) and per user plan; task accuracies need the `tokenizer`. With
    `save`, the one user plan is first written as a model folder (`saved` in the scalars)."""
    config = config or PlansConfig()
    config.validate()
    adapter = LayerAdapter(model)
    layers = list(adapter.layers)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    specs = plan_rows(adapter.num_layers, config)
    saved = ({"saved": str(export_plan(model, tokenizer, parse_plan(config.plans[0], adapter.num_layers), config.save))}
             if config.save and processes.is_main() else {})  # under `accelerate launch`: one process writes it
    # the unchanged model's scores first; without a tokenizer (a bare model), no tasks
    scored = TaskDrops(model, tokenizer, config.scored_tasks() if tokenizer is not None else (), progress)
    t0 = time.perf_counter()

    def measured(spec: tuple[str, int, str, Plan]) -> tuple[dict, PPLResult, dict[str, list[bool]], list[dict]] | str:
        """A plan's row without its degradation (the baseline row comes first and the rows are gathered before
        D is taken), its PPL, its built-in answers and its task rows; or why this model cannot run it."""
        variant, size, block, plan = spec
        if refusal := plan_refusal(adapter, plan):
            return f"{variant} {size}: {refusal}"
        groups = [s for s in plan.steps if len(s) > 1]
        execution = "" if not groups else (
            "batched" if config.batched and all(can_batch([layers[i] for i in g]) for g in groups) else "sequential")
        keys = {"variant": variant, "block_size": size, "plan": str(plan)}
        with apply_plan(model, plan, config.batched):
            result = perplexity(model, eval_set)
            correct = built_in_answers(scored.add_unchanged(**keys) if variant == "baseline" else scored.add(**keys))
        return ({"variant": variant, "block_size": size, "block": block, "plan": str(plan),
                 "layer_calls": plan.layer_calls, "parallel_execution": execution, **result.as_dict(),
                 **{f"acc_{k}": sum(v) / len(v) for k, v in correct.items()},
                 **measure_latency(model, plan, eval_set, config, pad_id)}, result, correct, scored.take())

    measurements = sweep(specs, measured, "plans", progress, label=lambda spec: f"{spec[0]} {spec[1]}: {spec[3]}")
    refused = [m for m in measurements if isinstance(m, str)]
    ran = [m for m in measurements if not isinstance(m, str)]
    base = ran[0][1]  # the unchanged model runs first
    rows, items = [], []
    for index, (row, result, correct, _) in enumerate(ran):
        d, d_low, d_high = degradation(result, base, eval_set)
        rows.append(row | {"degradation_pct": d, "degradation_low": d_low, "degradation_high": d_high})
        items += [{"row": index, "variant": row["variant"], "block_size": row["block_size"], "task": task,
                   "item": item, "correct": right} for task, answers in correct.items()
                  for item, right in enumerate(answers)]
    df = pd.DataFrame(rows)
    df = df[COLUMNS[:12] + [c for c in df.columns if c.startswith("acc_")] + COLUMNS[12:]]
    return Result("plans", df, scalars={"baseline": base.as_dict(), "refused": refused, **saved},
                  tables={**scored.tables(["variant", "block_size", "plan"], [r for m in ran for r in m[3]]),
                          "task_items": pd.DataFrame(items, columns=["row", "variant", "block_size", "task", "item",
                                                                     "correct"])},
                  timings={"plans_s": time.perf_counter() - t0})


def built_in_answers(scores: TaskScores | None) -> dict[str, list[bool]]:
    """Each built-in task's per-item answers (right or wrong, in lm-eval's document order), keyed by the short
    name the `acc_` columns and the findings use (`anatomy_arithmetic` -> `arithmetic`)."""
    if scores is None:
        return {}
    return {task.removeprefix("anatomy_"): [bool(x) for x in scores.items[(task, "acc")]]
            for task in SHIPPED if (task, "acc") in scores.items}


def plans_report(result: Result, header: str, config: PlansConfig) -> str:
    df = result.table
    base = df.iloc[0]
    acc = [c for c in df.columns if c.startswith("acc_")]
    lines = [header, "## Layers as painters: middle blocks and your plans",
             f"- Baseline PPL {base.ppl:.3f} (95% CI {base.ppl_low:.3f}-{base.ppl_high:.3f}); decode "
             f"{base.baseline_decode_ms_per_token:.2f} ms/token, prefill {base.baseline_prefill_ms_per_token:.3f} "
             "ms/token" + (", task accuracy " + ", ".join(f"{c[4:]} {base[c]:.0%}" for c in acc) if acc else ""),
             *(["- Controls: `skip-start` and `skip-end` skip a block of the same size at the start (from layer 1) "
                "and at the end (up to the layer before the last)."] if config.edge_controls else []),
             f"- Middle blocks are centred; shuffle seed {config.seed}; looped parallel runs the block "
             f"{config.loops} times; repeat runs the block's middle layer in place of the whole block.",
             f"- Latency: median of {config.latency_repeats} runs after a warm-up, each interleaved with the "
             f"unchanged model (speedup = baseline / variant, paired); decode = greedy generation of "
             f"{config.latency_tokens} tokens with the KV cache, batch 1; prefill = one forward over the first "
             "evaluation batch. Every step of a plan has its own KV-cache slot.",
             "- Parallel groups: " + ("one batched call per group where the layers are Llama-family, else member by "
                                      "member (see `parallel_execution`)." if config.batched else
                                      "run member by member (--sequential-parallel)."),
             *([f"- Plan `{config.plans[0]}` saved as a model folder: `{result['saved']}`"] if "saved" in result.scalars
               else []), ""]
    if acc:
        lines.append("### Which task degrades first")
        middle = df[(df.block_size > 0) & ~df.variant.isin(["skip-start", "skip-end"])]
        for size, part in middle.groupby("block_size"):
            drops = {c[4:]: float((base[c] - part[c]).mean()) for c in acc}
            lines.append(f"- block of {size}: mean accuracy drop over variants " + ", ".join(
                f"{k} {v:+.0%}" for k, v in drops.items()).replace("+-", "-"))
        lines.append("")
    show = ["variant", "block_size", "block", "layer_calls", "ppl", "ppl_low", "ppl_high", "degradation_pct",
            *acc, "decode_ms_per_token", "decode_speedup", "prefill_ms_per_token", "prefill_speedup"]
    lines += [report.markdown_table(df[show]), "", "Plans (`--plan` grammar):", ""]
    lines += [f"- {r.variant} {r.block_size}: `{r.plan}`" for r in df.itertuples() if r.variant != "baseline"]
    refused = result.scalars.get("refused")
    lines += ["", "Not run on this model:", ""] + [f"- {line}" for line in refused] if refused else []
    lines += ["", *task_section(result.tables, "each plan")] if "tasks" in result.tables else []
    return "\n".join(lines) + "\n"


def plans_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet, config: PlansConfig) -> Artefacts:
    """Figures and report of a layer-plans run (the CLI's run folder and the app's)."""
    return Artefacts(figures=plots.painters_figures(result.table, loaded.title),
                     markdown=plans_report(result, report.header("Layer plans", loaded, eval_set), config))


def headline(result: Result) -> str:
    """The baseline PPL, the plan that degrades it least, and where a saved plan went."""
    base, rows = result["baseline"], result.table.iloc[1:]
    line = f"Baseline PPL {base['ppl']:.3f} ({base['ppl_low']:.3f}-{base['ppl_high']:.3f})"
    if len(rows):
        best = rows.loc[rows["degradation_pct"].idxmin()]
        line += f"; least degraded: {best['variant']} `{best['plan']}`, D {best['degradation_pct']:+.1f}%"
    saved = f" Plan saved as a model folder: {result['saved']}." if "saved" in result.scalars else ""
    return line + "." + saved


def plans_work(config: PlansConfig, shape: work.Shape) -> float:
    """Per plan: its forward, its task scoring, and the timed rounds (one to warm up) of decoding and prefill
    under the plan and the unchanged model; the unchanged model's task scoring once more at the start."""
    timed = shape.tokens(config.latency_tokens * work.DECODE_TOKENS + shape.prefill_tokens)
    scoring = task_passes(config.scored_tasks(), shape.tokens)
    per_plan = 1 + scoring + 2 * (config.latency_repeats + 1) * timed
    return scoring + len(plan_rows(shape.num_layers, config)) * per_plan


EXPERIMENT = Experiment(
    name="plans", aliases=("painters",), title="Layer plans",
    summary="skip/reorder/repeat/parallelise middle layers, or run your own plans (SPEC section 8)",
    description=f"{__doc__}\n{GRAMMAR}", config=PlansConfig, run=run_plans, artefacts=plans_artefacts,
    uses_tokenizer=True, headline=headline, work=plans_work,
    columns=("variant", "block_size", "ppl", "degradation_pct", "decode_ms_per_token", "decode_speedup"),
    study=StudyRole(order=9, settings={"edge_controls": True}, quick={"variants": "skip,reverse,parallel", "block_sizes": "4", "latency_repeats": 1,
                                     "latency_tokens": 4},
                    findings=(findings.painters_middle, findings.painters_reorder, findings.painters_parallel,
                              findings.painters_looped, findings.painters_latency, findings.arithmetic_fragile)))
