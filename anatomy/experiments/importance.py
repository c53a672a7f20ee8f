"""Importance map (SPEC section 1): ablate each layer in turn, measure the degradation of PPL, classify.

Beside the ablation, the one-pass scores of the related work (Block Influence, angular distance) come
from the same baseline pass, and the report gives their Spearman correlation with the ablation D.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedModel

from .. import offload, plots, report
from ..errors import AnatomyError, shown
from ..evaluate import EvalSet, PrefixCache, degradation, one_pass_scores, perplexity
from ..interventions import ABLATION_MODES, BOUNDARY_CONVENTIONS, ablate, neighbours
from ..layers import LayerAdapter, parse_layers
from ..load import LoadedModel
from ..progress import ProgressCallback, track

COLUMNS = ["layer", "mode", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high", "class", "anti_layer_candidate", "block_influence", "angular_distance", "neighbours"]


@dataclass
class ImportanceConfig:
    """The study's defaults; thresholds are D in percent (Redundant < 10 <= Minor < 30 <= Important < 100)."""

    mode: str = "neighbour-mean"
    boundary: str = "one-neighbour"
    layers: list[int] | None = None  # None: every layer
    thresholds: tuple[float, float, float] = (10.0, 30.0, 100.0)
    use_prefix_cache: bool = True

    def validate(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise AnatomyError(f"Unknown mode '{self.mode}': use one of {', '.join(ABLATION_MODES)}.")
        if self.boundary not in BOUNDARY_CONVENTIONS:
            raise AnatomyError(f"Unknown boundary '{self.boundary}': use one of {', '.join(BOUNDARY_CONVENTIONS)}.")
        thresholds = tuple(self.thresholds)
        if len(thresholds) != 3 or not all(map(math.isfinite, thresholds)) or list(thresholds) != sorted(thresholds):
            raise AnatomyError(f"Class thresholds are three increasing finite D values in % (Redundant, Minor, "
                               f"Important bounds, default 10,30,100), got {shown(thresholds)}.")


def classify(d: float, thresholds: tuple[float, float, float] = (10.0, 30.0, 100.0)) -> str:
    redundant, minor, important = thresholds
    if d < redundant:
        return "Redundant"
    if d < minor:
        return "Minor"
    return "Important" if d < important else "Critical"


def run_importance(model: PreTrainedModel, eval_set: EvalSet, config: ImportanceConfig | None = None,
                   progress: ProgressCallback | None = None) -> pd.DataFrame:
    """One row per layer; `df.attrs` holds the baseline PPL, the correlations and the timings."""
    config = config or ImportanceConfig()
    config.validate()
    adapter = LayerAdapter(model)
    layers = adapter.resolve_layers(config.layers)
    t0 = time.perf_counter()
    cache = PrefixCache(model, eval_set)
    base = perplexity(model, eval_set, cache, adapter.num_layers)
    scores = one_pass_scores(cache)
    t_base = time.perf_counter() - t0
    if not np.isfinite(base.ppl):
        raise AnatomyError("The baseline PPL is not finite: the model or its dtype is broken for this text.")
    rows = []
    for layer in track(layers, f"importance ({config.mode})", progress):
        sources = neighbours(layer, adapter.kinds, config.boundary) if config.mode == "neighbour-mean" else []
        untouched = config.mode == "neighbour-mean" and not sources
        with ablate(adapter, layer, config.mode, config.boundary):
            result = perplexity(model, eval_set, cache if config.use_prefix_cache else None, layer)
        offload.unpin(model)  # disk-offloaded layers the ablation touched go back to disk
        d, d_low, d_high = degradation(result, base, eval_set)
        rows.append({"layer": layer, "mode": config.mode, **result.as_dict(), "degradation_pct": d,
                     "degradation_low": d_low, "degradation_high": d_high,
                     "class": "Untouched" if untouched else classify(d, config.thresholds),
                     "anti_layer_candidate": bool(d_high < 0),
                     "block_influence": scores["block_influence"][layer],
                     "angular_distance": scores["angular_distance"][layer],
                     "neighbours": ",".join(map(str, sources))})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(baseline=base.as_dict(), boundary=config.boundary, uniform=adapter.uniform,
                    spearman=spearman_with_ablation(df),
                    timings={"baseline_and_cache_s": t_base, "ablations_s": time.perf_counter() - t0 - t_base})
    return df


def spearman_with_ablation(df: pd.DataFrame) -> dict[str, float]:
    """Rank agreement between each one-pass score and the ablation D (NaN with fewer than 3 layers)."""
    scored = df[df["class"] != "Untouched"]
    if len(scored) < 3:
        return {"block_influence": float("nan"), "angular_distance": float("nan")}
    ranks = scored[["block_influence", "angular_distance", "degradation_pct"]].rank()  # Pearson on ranks: no scipy
    return {s: float(ranks[s].corr(ranks["degradation_pct"])) for s in ("block_influence", "angular_distance")}


def importance_report(df: pd.DataFrame, header: str) -> str:
    base = df.attrs["baseline"]
    counts = df["class"].value_counts()
    anti = df.loc[df["anti_layer_candidate"], "layer"].tolist()
    rho = df.attrs["spearman"]
    boundary = df.attrs["boundary"]
    lines = [header, "## Importance map",
             f"- Ablation: `{df['mode'].iloc[0]}`; boundary convention: `{boundary}` "
             + ("(first/last layer replaced by their one neighbour)" if boundary == "one-neighbour"
                else "(first/last layer left untouched, as in the study: their D is not measured)"),
             *([] if df.attrs.get("uniform", True) or df["mode"].iloc[0] != "neighbour-mean" else
               ["- The layers are not all of one kind (hybrid or alternating stack): neighbour-mean takes the "
                "nearest layers of the same kind, listed in the `neighbours` column."]),
             f"- Baseline PPL {base['ppl']:.3f} (95% CI {base['ppl_low']:.3f}-{base['ppl_high']:.3f})",
             "- Classes: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in
                                       ("Critical", "Important", "Minor", "Redundant", "Untouched") if counts.get(c)),
             "- Anti-layer candidates (upper end of the D interval below 0): "
             + (", ".join(f"layers.{i}" for i in anti) if anti else "none"),
             f"- Spearman correlation with ablation D: Block Influence {rho['block_influence']:.3f}, "
             f"angular distance {rho['angular_distance']:.3f}", "",
             report.markdown_table(df.drop(columns=["mode"]).round(4)), ""]
    return "\n".join(lines)


def importance_artefacts(df: pd.DataFrame, loaded: LoadedModel, eval_set: EvalSet) -> report.Artefacts:
    """Table, figure, report and results of an importance run (the CLI's run folder and the app's)."""
    return report.Artefacts(
        tables={"importance": df},
        figures={"importance": plots.importance_figure(df, f"Layer importance: {loaded.name}")},
        markdown=importance_report(df, report.header("Layer importance", loaded, eval_set)),
        results={"baseline": df.attrs["baseline"], "spearman": df.attrs["spearman"]})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("importance", help="per-layer ablation importance map (SPEC section 1)",
                                   description=__doc__)
    cli.add_common_args(parser, out="runs/importance")
    parser.add_argument("--mode", choices=ABLATION_MODES, default="neighbour-mean",
                        help="how a layer is ablated (default: neighbour-mean)")
    parser.add_argument("--boundary", choices=BOUNDARY_CONVENTIONS, default="one-neighbour",
                        help="first/last layer: use their one neighbour (default) or leave them untouched (study)")
    parser.add_argument("--layers", help="0-based layers to ablate, e.g. 0,3,5-8 (default: all)")
    parser.add_argument("--thresholds", default="10,30,100",
                        help="class boundaries on D in %% (Redundant<a<=Minor<b<=Important<c<=Critical)")
    parser.add_argument("--no-prefix-cache", action="store_true", help="run the full forward for every ablation")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    loaded, eval_set = cli.load_model_and_eval_set(args)
    config = ImportanceConfig(mode=args.mode, boundary=args.boundary,
                              layers=parse_layers(args.layers, LayerAdapter(loaded.model).num_layers)
                              if args.layers else None,
                              thresholds=cli.parse_floats(args.thresholds, 3, "--thresholds"),
                              use_prefix_cache=not args.no_prefix_cache)
    df = run_importance(loaded.model, eval_set, config)
    run = report.RunFolder(args.out, "importance")
    run.write(importance_artefacts(df, loaded, eval_set), loaded, eval_set, config, df.attrs["timings"])
    cli.print_summary(run, df[["layer", "degradation_pct", "class"]])
