"""Weight manipulation of redundant layers (SPEC section 4): change all of them at once, measure PPL.

Strategies, each applied to every chosen layer together and undone before the next:
- `zero`: weights and biases of every matrix of the layer set to 0;
- `clone`: each layer takes the weights (and biases) of its nearest non-redundant layer of the same kind (a
  tie goes to the lower one; in a hybrid stack an attention layer takes an attention layer's weights);
- `blend`: the nearest non-redundant layer below and above, weighted by 1/distance (one side at the ends);
- `lowrank`: singular vectors from the nearest non-redundant layer, singular values from the layer
  itself, W' = U_n diag(s_l) V_n^T (top `rank` only when a rank is given); biases kept;
- `scale-a`: weights and biases multiplied by a, for every a of the sweep.
The layer set comes from an importance map (rows with D below the threshold, 10% = the class Redundant, or the
lowest-D tenth of the layers when none is below it, said in the report; or, with `count`, the `count` layers of
lowest D, as the study changed 9 layers at once), or is given explicitly.
With `--tasks` (lm-eval task names), the unchanged model and every strategy are scored on those tasks too:
accuracy with its stderr and the drop with its paired 95% interval (the `tasks` table).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import findings, plots, report, work
from ..errors import AnatomyError
from ..evaluate import EvalSet, PrefixCache, degradation, perplexity
from ..experiment import Artefacts, Experiment, Need, Result, StudyRole
from ..interventions import preserve, scale, zero
from ..layers import ComponentRef, LayerAdapter
from ..lm_eval_tasks import TaskDrops, check_tasks, task_passes, task_section, tasks_option
from ..load import LoadedModel
from ..options import LAYERS, Codec, floats, option
from ..progress import ProgressCallback
from ..sweep import sweep
from ..spectra import SVD_THREADS, torch_threads
from .importance import ImportanceConfig

STRATEGIES = ("zero", "clone", "blend", "lowrank", "scale")
COLUMNS = ["strategy", "layers", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high"]


def _typed_layers(text: str, where: str) -> str | None:
    """Layers typed as 0,3,5-8 (or all), checked now for their syntax; empty: none typed, so the layer set
    comes from the importance map."""
    LAYERS.parse(text, where)
    return text.strip() or None


TYPED_LAYERS = Codec(_typed_layers, lambda v: "" if v is None else LAYERS.format(v))


@dataclass
class ManipulateConfig:
    """`layers` overrides the importance map; otherwise layers with D < `redundant_threshold` % are used,
    read from the importance map given, or from one computed with `importance`."""

    layers: str | list[int] | None = option(
        None, "0-based layers to change, e.g. 3,5,17 (overrides the importance map)",
        label="Layers (0-based; used with 'typed here')", codec=TYPED_LAYERS)
    redundant_threshold: float = option(10.0, "layers with ablation D below this % are changed (10 = class "
                                        "Redundant)", label="Redundant below D (%)", minimum=-1e6, maximum=1e9)
    count: int = option(0, "change the COUNT layers of lowest D instead of those under the threshold (the study: "
                        "9; 0: the threshold)", minimum=0, maximum=100_000, ui=False)
    strategies: tuple[str, ...] = option(STRATEGIES, "strategies, each applied to all the layers at once",
                                         label="Strategies", choices=STRATEGIES, multiple=True)
    alphas: tuple[float, ...] = option((0.0, 0.1, 0.3, 0.5, 0.7, 0.9), "scale sweep (the study's)",
                                       label="Scale factors", codec=floats(), minimum=-1000, maximum=1000)
    rank: int = option(0, "low-rank blend: keep the top RANK directions (0: all)",
                       label="Low-rank: top directions kept (0: all)", minimum=0, maximum=1_000_000)
    tasks: tuple[str, ...] = tasks_option("accuracy of the unchanged model and after each strategy")
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)  # the map computed when none is given

    def validate(self) -> None:
        check_tasks(self.tasks)
        if not self.strategies:
            raise AnatomyError("Choose at least one strategy.")
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown:
            raise AnatomyError(f"Unknown strategies {sorted(unknown)}: use some of {', '.join(STRATEGIES)}.")
        if self.rank is not None and self.rank < 0:
            raise AnatomyError(f"rank must be >= 1, or 0 for all directions, got {self.rank}.")


FALLBACK_SHARE = 0.1
"""With no layer under the threshold, the lowest-D tenth of the measured layers is changed (at least one), so
the default shows an effect on a model without Redundant layers; the source sentence says so."""


def redundant_layers(importance: pd.DataFrame, threshold: float) -> list[int]:
    """Layers whose measured ablation D is below `threshold` % (untouched boundary layers never count)."""
    measured = importance[importance["class"] != "Untouched"]
    return sorted(int(layer) for layer in measured.loc[measured["degradation_pct"] < threshold, "layer"])


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


def choose_layers(model: PreTrainedModel, config: ManipulateConfig,
                  importance: Result | None) -> tuple[list[int], str]:
    """The layer set and a sentence saying where it came from."""
    adapter = LayerAdapter(model)
    n = adapter.num_layers
    if config.layers:
        return sorted(adapter.resolve_layers(config.layers)), "given explicitly"
    if importance is None:
        raise AnatomyError("Manipulation needs an importance map to find the redundant layers: give an importance "
                           "result (importance=, --importance RUN) or name the layers (--layers).")
    table = importance.table
    run = importance.source.get("run")
    if run:
        source = f"from the importance run {run}"
    else:
        mode = table["mode"].iloc[0] if len(table) and "mode" in table else "?"
        source = f"from an importance map computed now ({mode}, {importance.scalars.get('boundary', '?')})"
    if len(table) != n:
        raise AnatomyError(f"The importance map has {len(table)} rows but the model has {n} layers.")
    measured = table[table["class"] != "Untouched"].sort_values("degradation_pct")
    if config.count:
        if len(measured) < config.count:
            raise AnatomyError(f"{config.count} layers of lowest D asked, but the importance map measured "
                               f"{len(measured)}: lower --count.")
        layers = sorted(int(layer) for layer in measured["layer"].iloc[:config.count])
        return layers, f"{source}: the {config.count} layers of lowest D"
    layers = redundant_layers(table, config.redundant_threshold)
    if layers:
        return layers, f"{source}: layers with D < {config.redundant_threshold:g}%"
    if measured.empty:
        raise AnatomyError("The importance map measured no layer: name the layers to change.")
    count = max(1, round(len(measured) * FALLBACK_SHARE))
    layers = sorted(int(layer) for layer in measured["layer"].iloc[:count])
    return layers, (f"{source}: no layer has D < {config.redundant_threshold:g}% (the lowest D is "
                    f"{measured['degradation_pct'].iloc[0]:.1f}%), so the {count} layers of lowest D instead (a tenth "
                    "of the measured layers)")


def run_manipulate(model: PreTrainedModel, eval_set: EvalSet, config: ManipulateConfig | None = None,
                   progress: ProgressCallback | None = None, importance: Result | None = None,
                   tokenizer: PreTrainedTokenizerBase | None = None) -> Result:
    """One row per strategy (baseline first); the scalars say which layers, how they were chosen, the
    baseline. `importance` (read only when no layers are named) gives the redundant layers. With
    `config.tasks` (and the `tokenizer`), the `tasks` table holds each strategy's accuracy drop."""
    config = config or ManipulateConfig()
    config.validate()
    t0 = time.perf_counter()
    layers, source = choose_layers(model, config, importance)
    adapter = LayerAdapter(model)
    for layer in layers:
        adapter.check_layer(layer)
    t_choose = time.perf_counter() - t0
    tasks = TaskDrops(model, tokenizer, config.tasks, progress)  # the unchanged model's scores first
    cache = PrefixCache(model, eval_set)
    base = perplexity(model, eval_set, cache, adapter.num_layers)
    runs = [(s, None) for s in config.strategies if s != "scale"]
    runs += [("scale", a) for a in config.alphas] if "scale" in config.strategies else []
    label = ",".join(map(str, layers))
    rows = [{"strategy": "baseline (none)", "layers": "", **base.as_dict(), "degradation_pct": 0.0,
             "degradation_low": 0.0, "degradation_high": 0.0}]
    def changed(run: tuple[str, float | None]) -> dict:
        strategy, alpha = run
        with strategy_context(adapter, layers, strategy, alpha, config.rank or None):
            result = perplexity(model, eval_set, cache, min(layers))
            name = f"scale {alpha:g}" if strategy == "scale" else strategy
            tasks.add(strategy=name)
        d, d_low, d_high = degradation(result, base, eval_set)
        return {"strategy": name, "layers": label, **result.as_dict(), "degradation_pct": d,
                "degradation_low": d_low, "degradation_high": d_high, "task_rows": tasks.take()}

    rows += sweep(runs, changed, "manipulate (strategies)", progress,  # gathered from every process
                  label=lambda run: f"scale {run[1]:g}" if run[0] == "scale" else run[0])
    task_rows = [r for row in rows for r in row.pop("task_rows", [])]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return Result("manipulate", df,
                  scalars={"layers": layers, "source": source, "baseline": base.as_dict(), "rank": config.rank},
                  tables=tasks.tables(["strategy"], task_rows),
                  timings={"choose_layers_s": t_choose, "strategies_s": time.perf_counter() - t0 - t_choose})


def manipulate_report(result: Result, header: str) -> str:
    df = result.table
    usable = df[(df["strategy"] != "baseline (none)") & (df["degradation_pct"] < 30)]
    layers = result["layers"]
    lines = [header, "## Manipulation of redundant layers",
             f"- Layers changed together: {', '.join(f'layers.{i}' for i in layers)} "
             f"({len(layers)}; {result['source']}).",
             "- clone/blend/lowrank use the nearest layers outside the set; low-rank keeps "
             + ("all directions" if not result["rank"] else f"the top {result['rank']} directions") + ".",
             "- Strategies that keep D below 30%: " + (", ".join(usable["strategy"]) if len(usable) else "none") + ".",
             "", report.markdown_table(df.round(4)), "", *task_section(result.tables, "each strategy")]
    return "\n".join(lines)


def manipulate_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet,
                         config: ManipulateConfig) -> Artefacts:
    """Figure and report of a manipulation run (the CLI's run folder and the app's)."""
    return Artefacts(
        figures={"manipulate": plots.ppl_rows_figure(result.table, "strategy", "Redundant layers changed at once",
                                                     result["baseline"]["ppl"])},
        markdown=manipulate_report(result, report.header("Manipulation of redundant layers", loaded, eval_set)))


def headline(result: Result) -> str:
    """Which layers were changed and where the set came from."""
    return f"layers: {result['layers']} ({result['source']})"


def manipulate_work(config: ManipulateConfig, shape: work.Shape) -> float:
    """The baseline and one forward per strategy (per alpha of the scale sweep), each with its task scoring."""
    runs = sum(len(config.alphas) if s == "scale" else 1 for s in config.strategies)
    return (1.0 + runs) * (1.0 + task_passes(config.tasks, shape.tokens))


EXPERIMENT = Experiment(
    name="manipulate", title="Manipulation of redundant layers",
    summary="zero / clone / blend / low-rank / scale the redundant layers all at once (SPEC section 4)",
    description=__doc__, config=ManipulateConfig, run=run_manipulate, artefacts=manipulate_artefacts,
    uses_tokenizer=True, needs=(Need("importance", "an importance run folder to read the Redundant layers from (default: compute the "
                "importance map now)", configure=lambda config: None if config.layers else config.importance),),
    columns=("strategy", "ppl", "ppl_low", "ppl_high", "degradation_pct"), headline=headline, work=manipulate_work,
    study=StudyRole(order=4, settings={"count": findings.STUDY_MANIPULATED}, quick={"alphas": "0.7,0.9"},
                    findings=(findings.manipulation,)))
