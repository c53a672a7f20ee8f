"""Layer pruning by criterion (SPEC section 9): choose K layers, remove them, measure PPL.

Criteria (each picks the K layers it rates least needed, in one shot from the intact model):
- `alpha`: highest mean power-law alpha over the layer's matrices (heavy-tailed self-regularisation reads a
  large alpha as a less-trained layer);
- `block_influence`: lowest Block Influence, 1 - cos(layer input, layer output) (ShortGPT);
- `ablation`: lowest degradation D when the layer alone is ablated (skip by default, i.e. removal itself);
- `last`: the last K layers, N-K..N-1 (the heuristic the spectral study compares against).
Removal is real: the layers leave the ModuleList (anatomy.surgery), `layer_idx` renumbered.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import plots, report
from ..errors import AnatomyError
from ..evaluate import EvalSet, degradation, perplexity
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..progress import ProgressCallback, track
from ..surgery import build_layer_stack, kept_layers, layer_stack, save_model
from .importance import ImportanceConfig, run_importance
from .spectral import SpectralConfig, layer_alpha, run_spectral

CRITERIA = ("alpha", "block_influence", "ablation", "last")
COLUMNS = ["criterion", "k", "removed", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high", "params_removed_pct"]


@dataclass
class PruneConfig:
    ks: tuple[int, ...] = (3, 6)
    criteria: tuple[str, ...] = CRITERIA
    importance: ImportanceConfig = field(default_factory=lambda: ImportanceConfig(mode="skip"))

    def validate(self, num_layers: int) -> None:
        unknown = set(self.criteria) - set(CRITERIA)
        if unknown:
            raise AnatomyError(f"Unknown criteria {sorted(unknown)}: use some of {', '.join(CRITERIA)}.")
        bad = [k for k in self.ks if not 1 <= k < num_layers]
        if bad:
            raise AnatomyError(f"K must be between 1 and {num_layers - 1} for this {num_layers}-layer model, got {bad}.")


def layer_scores(model: PreTrainedModel, eval_set: EvalSet, config: PruneConfig,
                 importance: pd.DataFrame | None = None, progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Per layer, the score of every requested criterion; lower = removed first (alpha is negated)."""
    n = LayerAdapter(model).num_layers
    scores = pd.DataFrame({"layer": range(n)})
    if "alpha" in config.criteria:
        scores["alpha"] = -layer_alpha(run_spectral(model, None, SpectralConfig(keep_singular_values=False),
                                                    progress).table).to_numpy()
    if {"block_influence", "ablation"} & set(config.criteria):
        if importance is None:
            importance = run_importance(model, eval_set, config.importance, progress)
        if sorted(importance["layer"]) != list(range(n)):
            raise AnatomyError(f"The importance map must cover every layer 0..{n - 1} to rank them for pruning.")
        ordered = importance.sort_values("layer")
        scores["block_influence"] = ordered["block_influence"].to_numpy()
        # a layer left untouched by the study's boundary convention has no measured D: never pick it
        scores["ablation"] = ordered["degradation_pct"].where(ordered["class"] != "Untouched", float("inf")).to_numpy()
    scores["last"] = -scores["layer"]
    return scores


def choose(scores: pd.DataFrame, criterion: str, k: int) -> list[int]:
    """The k layers with the lowest score for `criterion` (ties: the lower layer first)."""
    return sorted(scores.sort_values([criterion, "layer"], kind="stable")["layer"].head(k).astype(int).tolist())


def run_prune(model: PreTrainedModel, eval_set: EvalSet, config: PruneConfig | None = None,
              importance: pd.DataFrame | None = None, progress: ProgressCallback | None = None) -> pd.DataFrame:
    """One row per (criterion, K) plus the baseline; `df.attrs`: scores per layer, baseline, timings."""
    config = config or PruneConfig()
    adapter = LayerAdapter(model)
    n = adapter.num_layers
    config.validate(n)
    t0 = time.perf_counter()
    scores = layer_scores(model, eval_set, config, importance, progress)
    t_scores = time.perf_counter() - t0
    base = perplexity(model, eval_set)
    layer_params = sum(p.numel() for p in adapter.layers[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    rows = [{"criterion": "baseline (none)", "k": 0, "removed": "", **base.as_dict(), "degradation_pct": 0.0,
             "degradation_low": 0.0, "degradation_high": 0.0, "params_removed_pct": 0.0}]
    runs = [(c, k) for k in config.ks for c in config.criteria]
    for criterion, k in track(runs, "prune (criterion x K)", progress):
        removed = choose(scores, criterion, k)
        with layer_stack(model, kept_layers(n, removed)):
            result = perplexity(model, eval_set)
        d, d_low, d_high = degradation(result, base, eval_set)
        rows.append({"criterion": criterion, "k": k, "removed": ",".join(map(str, removed)), **result.as_dict(),
                     "degradation_pct": d, "degradation_low": d_low, "degradation_high": d_high,
                     "params_removed_pct": 100 * k * layer_params / total})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(scores=scores, baseline=base.as_dict(), ablation_mode=config.importance.mode,
                    timings={"scores_s": t_scores, "pruned_evals_s": time.perf_counter() - t0 - t_scores})
    return df


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """PPL per criterion (rows) and K (columns), with each criterion's ratio to `last` at the same K."""
    pruned = df[df["k"] > 0]
    table = pruned.pivot(index="criterion", columns="k", values="ppl")
    table.columns = [f"ppl_k{k}" for k in table.columns]
    if "last" in table.index:
        for column in list(table.columns):
            table[column.replace("ppl", "last_over")] = table.loc["last", column] / table[column]
    return table.reset_index()


def save_pruned(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, df: pd.DataFrame,
                directory: str | Path) -> list[Path]:
    """A standard HF folder per pruned model: `directory` itself for one row, `directory/<criterion>-k<K>` else."""
    n = LayerAdapter(model).num_layers
    pruned = df[df["k"] > 0]
    folders = []
    for row in pruned.itertuples():
        target = Path(directory) if len(pruned) == 1 else Path(directory) / f"{row.criterion}-k{row.k}"
        copy = build_layer_stack(model, kept_layers(n, [int(i) for i in row.removed.split(",")]))
        folders.append(save_model(copy, tokenizer, target))
        del copy
    return folders


def prune_report(df: pd.DataFrame, header: str) -> str:
    lines = [header, "## Layer pruning",
             "- Criteria: alpha = highest mean power-law alpha first; block_influence = lowest 1 - cos(in, out) "
             f"first; ablation = lowest single-layer D first ({df.attrs['ablation_mode']} ablation); last = layers "
             "N-K..N-1. Layers are removed from the stack (layer_idx renumbered), chosen in one shot.",
             f"- Baseline PPL {df.attrs['baseline']['ppl']:.3f}.", "",
             "### Comparison (PPL; last_over_kK = PPL of `last` / PPL of the criterion: > 1 means better than last)",
             report.markdown_table(comparison_table(df).round(3)), "",
             "### Every run", report.markdown_table(df.round(4)), "",
             "### Layer scores (lower = removed first; alpha and last negated)",
             report.markdown_table(df.attrs["scores"].round(4)), ""]
    return "\n".join(lines)


def prune_artefacts(df: pd.DataFrame, loaded: LoadedModel, eval_set: EvalSet,
                    saved: list[Path] = ()) -> report.Artefacts:
    """Tables, figure, report and results of a pruning run (the CLI's run folder and the app's); `saved`: the
    pruned model folders written, if any."""
    comparison = comparison_table(df)
    labels = df.assign(run=[f"{c} k={k}" if k else c for c, k in zip(df["criterion"], df["k"])])
    return report.Artefacts(
        tables={"prune": df, "comparison": comparison, "scores": df.attrs["scores"]},
        figures={"prune": plots.ppl_rows_figure(labels, "run", f"Pruned models: {loaded.name}",
                                                df.attrs["baseline"]["ppl"])},
        markdown=prune_report(df, report.header("Layer pruning", loaded, eval_set)),
        results={"baseline": df.attrs["baseline"], "comparison": comparison, "saved": [str(p) for p in saved]})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("prune", help="remove K layers chosen by alpha, block influence, ablation or "
                                   "last; compare PPL; save the pruned model (SPEC 9)", description=__doc__)
    cli.add_common_args(parser, out="runs/prune")
    parser.add_argument("-k", default="3,6", help="layers to remove, one or a list (default 3,6)")
    parser.add_argument("--by", default=",".join(CRITERIA),
                        help=f"criteria, comma-separated (default all: {','.join(CRITERIA)})")
    parser.add_argument("--ablation-mode", default="skip", choices=("skip", "neighbour-mean", "zero"),
                        help="single-layer ablation for the ablation criterion (default skip; with --importance: "
                             "that run's mode)")
    parser.add_argument("--importance", help="read block influence and ablation D from this importance run folder")
    parser.add_argument("--save", help="write the pruned model(s) as Hugging Face folder(s) here")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli
    from .manipulate import read_importance

    loaded, eval_set = cli.load_model_and_eval_set(args)
    importance = read_importance(args.importance) if args.importance else None
    # D read from a run was measured with that run's ablation mode: record that one, not the flag's default
    mode = str(importance["mode"].iloc[0]) if importance is not None and "mode" in importance else args.ablation_mode
    config = PruneConfig(ks=cli.parse_ints(args.k, "-k"),
                         criteria=tuple(c.strip() for c in args.by.split(",")),
                         importance=ImportanceConfig(mode=mode))
    df = run_prune(loaded.model, eval_set, config, importance)
    saved = save_pruned(loaded.model, loaded.tokenizer, df, args.save) if args.save else []
    run = report.RunFolder(args.out, "prune")
    run.write(prune_artefacts(df, loaded, eval_set, saved), loaded, eval_set, config, df.attrs["timings"])
    cli.print_summary(run, comparison_table(df).round(3))
    for path in saved:
        print(f"saved pruned model: {path}")
