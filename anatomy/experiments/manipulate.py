"""Weight manipulation of redundant layers (SPEC section 4): change all of them at once, measure PPL.

Strategies, each applied to every chosen layer together and undone before the next:
- `zero`: weights and biases of every matrix of the layer set to 0;
- `clone`: each layer takes the weights (and biases) of its nearest non-redundant layer of the same kind (a
  tie goes to the lower one; in a hybrid stack an attention layer takes an attention layer's weights);
- `blend`: the nearest non-redundant layer below and above, weighted by 1/distance (one side at the ends);
- `lowrank`: singular vectors from the nearest non-redundant layer, singular values from the layer
  itself, W' = U_n diag(s_l) V_n^T (top `rank` only when a rank is given); biases kept;
- `scale-a`: weights and biases multiplied by a, for every a of the sweep.
The layer set comes from an importance map (rows with D below the threshold, 10% = the class Redundant),
or is given explicitly.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from transformers import PreTrainedModel

from .. import plots, report
from ..errors import AnatomyError
from ..evaluate import EvalSet, PrefixCache, degradation, perplexity
from ..interventions import preserve, scale, zero
from ..layers import ComponentRef, LayerAdapter, parse_layers
from ..load import LoadedModel
from ..progress import ProgressCallback, track
from ..spectra import SVD_THREADS, torch_threads
from .importance import ImportanceConfig, run_importance

STRATEGIES = ("zero", "clone", "blend", "lowrank", "scale")
COLUMNS = ["strategy", "layers", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high"]


@dataclass
class ManipulateConfig:
    """`layers` overrides the importance map; otherwise layers with D < `redundant_threshold` % are used."""

    layers: list[int] | None = None
    redundant_threshold: float = 10.0
    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    strategies: tuple[str, ...] = STRATEGIES
    rank: int | None = None  # low-rank blend: keep the top `rank` directions (None: all)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)

    def validate(self) -> None:
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown:
            raise AnatomyError(f"Unknown strategies {sorted(unknown)}: use some of {', '.join(STRATEGIES)}.")
        if self.rank is not None and self.rank < 1:
            raise AnatomyError(f"rank must be >= 1, got {self.rank}.")


def redundant_layers(importance: pd.DataFrame, threshold: float) -> list[int]:
    """Layers whose measured ablation D is below `threshold` % (untouched boundary layers never count)."""
    measured = importance[importance["class"] != "Untouched"]
    return sorted(int(layer) for layer in measured.loc[measured["degradation_pct"] < threshold, "layer"])


def read_importance(run: str | Path) -> pd.DataFrame:
    """The importance table of a run folder written by `python -m anatomy importance`."""
    path = Path(run) / "importance.csv"
    if not path.is_file():
        raise AnatomyError(f"No importance.csv in '{run}': give a folder written by `python -m anatomy importance`.")
    table = pd.read_csv(path)
    table.attrs["run"] = str(run)
    return table


def non_redundant_neighbours(layer: int, chosen: set[int], kinds: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(neighbour, distance) for the nearest layer of the same kind outside `chosen` below and above `layer`
    (nearest first); `kinds` has one entry per layer (`LayerAdapter.kinds`)."""
    same = [n for n in range(len(kinds)) if kinds[n] == kinds[layer] and n not in chosen]
    below = max((n for n in same if n < layer), default=None)
    above = min((n for n in same if n > layer), default=None)
    found = [(n, abs(n - layer)) for n in (below, above) if n is not None]
    if not found:
        raise AnatomyError(f"Every layer of the kind of layer {layer} is in the set: clone, blend and low-rank "
                           "need a layer of the same kind outside it.")
    return sorted(found, key=lambda pair: pair[1])


def _targets(adapter: LayerAdapter, layers: list[int], strategy: str,
             rank: int | None) -> dict[ComponentRef, tuple[torch.Tensor, torch.Tensor | None]]:
    """New (weight matrix, bias or None to keep) for every component of `layers` under one strategy."""
    chosen, values, svd_cache = set(layers), {}, {}
    for layer in layers:
        pairs = non_redundant_neighbours(layer, chosen, adapter.kinds)
        for ref in adapter.layer_components(layer):
            if strategy == "clone":
                source = adapter.component(pairs[0][0], ref.component)
                values[ref] = (source.matrix().clone(), None if ref.bias is None else source.bias.clone())
            elif strategy == "blend":
                weights = torch.tensor([1.0 / d for _, d in pairs])
                weights = weights / weights.sum()
                sources = [adapter.component(n, ref.component) for n, _ in pairs]
                values[ref] = (sum(w * s.matrix() for w, s in zip(weights, sources)),
                               None if ref.bias is None else sum(w * s.bias for w, s in zip(weights, sources)))
            elif strategy == "lowrank":
                key = (pairs[0][0], ref.component)
                if key not in svd_cache:
                    with torch_threads(SVD_THREADS):
                        svd_cache[key] = torch.linalg.svd(adapter.component(*key).matrix().float(),
                                                          full_matrices=False)
                u, _, vh = svd_cache[key]
                with torch_threads(SVD_THREADS):
                    s = torch.linalg.svdvals(ref.matrix().float())
                k = len(s) if rank is None else min(rank, len(s))
                values[ref] = (((u[:, :k] * s[:k]) @ vh[:k]).to(ref.weight.dtype), None)
    return values


@contextmanager
def replaced(values: dict[ComponentRef, tuple[torch.Tensor, torch.Tensor | None]]) -> Iterator[None]:
    """Write new weights (and biases where given) into components; restore everything on exit."""
    tensors = [t for ref in values for t in ref.tensors()]
    with preserve(tensors), torch.no_grad():
        for ref, (matrix, bias) in values.items():
            ref.assign(matrix)
            if bias is not None:
                ref.bias.copy_(bias)
        yield


@contextmanager
def strategy_context(adapter: LayerAdapter, layers: list[int], strategy: str, alpha: float | None = None,
                     rank: int | None = None) -> Iterator[None]:
    """One manipulation of all `layers` at once (see the module docstring), restored on exit."""
    if strategy == "zero":
        context = zero(adapter, layers)
    elif strategy == "scale":
        context = scale(adapter, layers, float(alpha))
    elif strategy in ("clone", "blend", "lowrank"):
        context = replaced(_targets(adapter, layers, strategy, rank))
    else:
        raise AnatomyError(f"Unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}.")
    with context:
        yield


def choose_layers(model: PreTrainedModel, eval_set: EvalSet, config: ManipulateConfig,
                  importance: pd.DataFrame | None, progress: ProgressCallback | None) -> tuple[list[int], str]:
    """The layer set and a sentence saying where it came from."""
    n = LayerAdapter(model).num_layers
    if config.layers:
        return sorted(config.layers), "given explicitly"
    if importance is None:
        importance = run_importance(model, eval_set, config.importance, progress)
        source = f"from an importance map computed now ({config.importance.mode}, {config.importance.boundary})"
    else:
        source = f"from the importance run {importance.attrs.get('run', '(given as a table)')}"
    if len(importance) != n:
        raise AnatomyError(f"The importance map has {len(importance)} rows but the model has {n} layers.")
    layers = redundant_layers(importance, config.redundant_threshold)
    if not layers:
        raise AnatomyError(f"No layer has D < {config.redundant_threshold:g}%: raise the redundant threshold "
                           f"(--redundant-threshold; the lowest D is {importance['degradation_pct'].min():.1f}%) "
                           "or name the layers (--layers).")
    return layers, f"{source}: layers with D < {config.redundant_threshold:g}%"


def run_manipulate(model: PreTrainedModel, eval_set: EvalSet, config: ManipulateConfig | None = None,
                   importance: pd.DataFrame | None = None, progress: ProgressCallback | None = None) -> pd.DataFrame:
    """One row per strategy (baseline first); `df.attrs`: layers, how they were chosen, baseline, timings."""
    config = config or ManipulateConfig()
    config.validate()
    t0 = time.perf_counter()
    layers, source = choose_layers(model, eval_set, config, importance, progress)
    adapter = LayerAdapter(model)
    for layer in layers:
        adapter.check_layer(layer)
    t_choose = time.perf_counter() - t0
    cache = PrefixCache(model, eval_set)
    base = perplexity(model, eval_set, cache, adapter.num_layers)
    runs = [(s, None) for s in config.strategies if s != "scale"]
    runs += [("scale", a) for a in config.alphas] if "scale" in config.strategies else []
    label = ",".join(map(str, layers))
    rows = [{"strategy": "baseline (none)", "layers": "", **base.as_dict(), "degradation_pct": 0.0,
             "degradation_low": 0.0, "degradation_high": 0.0}]
    for strategy, alpha in track(runs, "manipulate (strategies)", progress):
        with strategy_context(adapter, layers, strategy, alpha, config.rank):
            result = perplexity(model, eval_set, cache, min(layers))
        d, d_low, d_high = degradation(result, base, eval_set)
        name = f"scale {alpha:g}" if strategy == "scale" else strategy
        rows.append({"strategy": name, "layers": label, **result.as_dict(), "degradation_pct": d,
                     "degradation_low": d_low, "degradation_high": d_high})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(layers=layers, source=source, baseline=base.as_dict(), rank=config.rank,
                    timings={"choose_layers_s": t_choose, "strategies_s": time.perf_counter() - t0 - t_choose})
    return df


def manipulate_report(df: pd.DataFrame, header: str) -> str:
    usable = df[(df["strategy"] != "baseline (none)") & (df["degradation_pct"] < 30)]
    lines = [header, "## Manipulation of redundant layers",
             f"- Layers changed together: {', '.join(f'layers.{i}' for i in df.attrs['layers'])} "
             f"({len(df.attrs['layers'])}; {df.attrs['source']}).",
             "- clone/blend/lowrank use the nearest layers outside the set; low-rank keeps "
             + ("all directions" if df.attrs["rank"] is None else f"the top {df.attrs['rank']} directions") + ".",
             "- Strategies that keep D below 30%: " + (", ".join(usable["strategy"]) if len(usable) else "none") + ".",
             "", report.markdown_table(df.round(4)), ""]
    return "\n".join(lines)


def manipulate_artefacts(df: pd.DataFrame, loaded: LoadedModel, eval_set: EvalSet) -> report.Artefacts:
    """Table, figure, report and results of a manipulation run (the CLI's run folder and the app's)."""
    base = df.attrs["baseline"]
    return report.Artefacts(
        tables={"manipulate": df},
        figures={"manipulate": plots.ppl_rows_figure(df, "strategy", "Redundant layers changed at once", base["ppl"])},
        markdown=manipulate_report(df, report.header("Manipulation of redundant layers", loaded, eval_set)),
        results={"layers": df.attrs["layers"], "source": df.attrs["source"], "baseline": base})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("manipulate", help="zero / clone / blend / low-rank / scale the redundant "
                                   "layers all at once (SPEC 4)", description=__doc__)
    cli.add_common_args(parser, out="runs/manipulate")
    parser.add_argument("--importance", help="an importance run folder to read the Redundant layers from "
                                             "(default: compute the importance map now)")
    parser.add_argument("--redundant-threshold", type=float, default=10.0,
                        help="layers with ablation D below this %% are changed (default 10 = class Redundant)")
    parser.add_argument("--layers", help="0-based layers to change, e.g. 3,5,17 (overrides the importance map)")
    parser.add_argument("--alphas", default="0,0.1,0.3,0.5,0.7,0.9", help="scale sweep (default the study's)")
    parser.add_argument("--rank", type=int, help="low-rank blend: keep the top RANK directions (default all)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    loaded, eval_set = cli.load_model_and_eval_set(args)
    n = LayerAdapter(loaded.model).num_layers
    config = ManipulateConfig(layers=parse_layers(args.layers, n) if args.layers else None,
                              redundant_threshold=args.redundant_threshold, rank=args.rank,
                              alphas=cli.parse_floats(args.alphas, None, "--alphas"))
    importance = read_importance(args.importance) if args.importance and not args.layers else None
    df = run_manipulate(loaded.model, eval_set, config, importance)
    run = report.RunFolder(args.out, "manipulate")
    run.write(manipulate_artefacts(df, loaded, eval_set), loaded, eval_set, config, df.attrs["timings"])
    cli.print_summary(run, df[["strategy", "ppl", "ppl_low", "ppl_high", "degradation_pct"]])
    print(f"layers: {df.attrs['layers']} ({df.attrs['source']})")
