"""Importance map (SPEC section 1): ablate each layer in turn, measure the degradation of PPL, classify.

Beside the ablation, the one-pass scores of the related work (Block Influence, angular distance) come
from the same baseline pass, and the report gives their Spearman correlation with the ablation D.
With `--tasks` (lm-eval task names), every ablated model is also scored on those tasks: the accuracy drop per
layer, with its paired 95% interval, beside D (the `tasks` table; a `<task>_<metric>_drop` column per task),
and the proxy panel: how well Block Influence, angular distance and D rank the layers by that drop (Spearman,
bootstrap interval). Power-law alpha, the spectral view, is prune's `alpha` criterion and not in this panel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import findings, offload, plots, report, work
from ..errors import AnatomyError, shown
from ..evaluate import EvalSet, PrefixCache, degradation, one_pass_scores, perplexity
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..interventions import ABLATION_MODES, BOUNDARY_CONVENTIONS, ablate, neighbours
from ..layers import LayerAdapter
from ..lm_eval_tasks import SHIPPED, TaskDrops, check_tasks, task_passes, task_section, tasks_option
from ..load import LoadedModel
from ..options import LAYERS, floats, option
from ..progress import ProgressCallback
from ..sweep import sweep

COLUMNS = ["layer", "mode", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high", "class", "anti_layer_candidate", "block_influence", "angular_distance", "neighbours"]


@dataclass
class ImportanceConfig:
    """The study's defaults; thresholds are D in percent (Redundant < 10 <= Minor < 30 <= Important < 100)."""

    mode: str = option("neighbour-mean", "how a layer is ablated", label="Ablation", choices=ABLATION_MODES)
    boundary: str = option("one-neighbour", "first/last layer: use their one neighbour, or leave them untouched "
                           "(the study)", label="First/last layer (one neighbour, or untouched as in the study)",
                           choices=BOUNDARY_CONVENTIONS)
    layers: str | list[int] | None = option(None, "0-based layers to ablate, e.g. 0,3,5-8 (all: every layer)",
                                            label="Layers (0-based, e.g. 0,3,5-8 or all)", codec=LAYERS)
    thresholds: tuple[float, float, float] = option(
        (10.0, 30.0, 100.0), "class boundaries on D in % (Redundant<a<=Minor<b<=Important<c<=Critical)",
        label="Class boundaries on D in % (Redundant, Minor, Important)", codec=floats(3), minimum=-1e6, maximum=1e9)
    use_prefix_cache: bool = option(True, "run the full forward for every ablation instead of the prefix cache",
                                    flag="--no-prefix-cache", ui=False)
    tasks: tuple[str, ...] = tasks_option("the accuracy drop of each ablated layer, beside D")

    def validate(self) -> None:
        check_tasks(self.tasks)
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
                   progress: ProgressCallback | None = None,
                   tokenizer: PreTrainedTokenizerBase | None = None) -> Result:
    """One row per layer; the scalars hold the baseline PPL and the correlations with the one-pass scores.
    With `config.tasks` (and the `tokenizer`), the `tasks` table holds each layer's accuracy drop."""
    config = config or ImportanceConfig()
    config.validate()
    tasks = TaskDrops(model, tokenizer, config.tasks, progress)  # the intact model's scores first
    adapter = LayerAdapter(model)
    layers = adapter.resolve_layers(config.layers)
    t0 = time.perf_counter()
    cache = PrefixCache(model, eval_set)
    base = perplexity(model, eval_set, cache, adapter.num_layers)
    scores = one_pass_scores(cache)
    t_base = time.perf_counter() - t0
    if not np.isfinite(base.ppl):
        raise AnatomyError("The baseline PPL is not finite: the model or its dtype is broken for this text.")

    def ablated(layer: int) -> dict:
        sources = neighbours(layer, adapter.kinds, config.boundary) if config.mode == "neighbour-mean" else []
        untouched = config.mode == "neighbour-mean" and not sources
        with ablate(adapter, layer, config.mode, config.boundary):
            result = perplexity(model, eval_set, cache if config.use_prefix_cache else None, layer)
            if not untouched:
                tasks.add(layer=layer)
        offload.unpin(model)  # disk-offloaded layers the ablation touched go back to disk
        d, d_low, d_high = degradation(result, base, eval_set)
        return {"layer": layer, "mode": config.mode, **result.as_dict(), "degradation_pct": d,
                "degradation_low": d_low, "degradation_high": d_high,
                "class": "Untouched" if untouched else classify(d, config.thresholds),
                "anti_layer_candidate": bool(d_high < 0),
                "block_influence": scores["block_influence"][layer],
                "angular_distance": scores["angular_distance"][layer],
                "neighbours": ",".join(map(str, sources)), "task_rows": tasks.take()}

    rows = sweep(layers, ablated, f"importance ({config.mode})", progress)  # gathered from every process
    tables = tasks.tables(["layer"], [r for row in rows for r in row.pop("task_rows")])
    df = pd.DataFrame(rows, columns=COLUMNS)
    if tables:
        df = df.merge(drops_by_layer(tables["tasks"]), on="layer", how="left")
        tables["proxy_panel"] = proxy_panel(df)
    return Result("importance", df, tables=tables,
                  scalars={"baseline": base.as_dict(), "spearman": spearman_with_ablation(df),
                           "boundary": config.boundary, "uniform": adapter.uniform},
                  timings={"baseline_and_cache_s": t_base, "ablations_s": time.perf_counter() - t0 - t_base})


def drops_by_layer(tasks: pd.DataFrame) -> pd.DataFrame:
    """One `<task>_<metric>_drop` column per task and metric, by layer: the main table's task columns."""
    wide = tasks.pivot(index="layer", columns=["task", "metric"], values="drop")
    wide.columns = [f"{task}_{metric}_drop" for task, metric in wide.columns]
    return wide.reset_index()


PROXIES = ("block_influence", "angular_distance", "degradation_pct")  # the cheap views, each higher = more needed


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson on average ranks; NaN where either side is constant)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def proxy_panel(df: pd.DataFrame, draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Which cheap view a user may trust on this model: Spearman's rho between each proxy (Block Influence,
    angular distance, the PPL ablation D) and each task's true accuracy drop over the scored layers, with a 95%
    bootstrap interval over the layers (`draws` resamples; a resample where a side is constant is left out)."""
    targets = [c for c in df.columns if c.endswith("_drop")]
    scored = df.dropna(subset=targets)
    columns = ["proxy", "target", "spearman", "spearman_low", "spearman_high", "layers"]
    if len(scored) < 3:
        return pd.DataFrame(columns=columns)
    picks = np.random.default_rng(seed).integers(0, len(scored), size=(draws, len(scored)))
    rows = []
    for target in targets:
        y = scored[target].to_numpy(dtype=float)
        for proxy in PROXIES:
            x = scored[proxy].to_numpy(dtype=float)
            boot = np.array([spearman(x[i], y[i]) for i in picks])
            low, high = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan)
            rows.append({"proxy": proxy, "target": target, "spearman": spearman(x, y), "spearman_low": float(low),
                         "spearman_high": float(high), "layers": len(scored)})
    return pd.DataFrame(rows, columns=columns)


def spearman_with_ablation(df: pd.DataFrame) -> dict[str, float]:
    """Rank agreement between each one-pass score and the ablation D (NaN with fewer than 3 layers)."""
    scored = df[df["class"] != "Untouched"]
    if len(scored) < 3:
        return {"block_influence": float("nan"), "angular_distance": float("nan")}
    ranks = scored[["block_influence", "angular_distance", "degradation_pct"]].rank()  # Pearson on ranks: no scipy
    return {s: float(ranks[s].corr(ranks["degradation_pct"])) for s in ("block_influence", "angular_distance")}


def importance_report(result: Result, header: str) -> str:
    df = result.table
    base = result["baseline"]
    counts = df["class"].value_counts()
    anti = df.loc[df["anti_layer_candidate"], "layer"].tolist()
    rho = result["spearman"]
    boundary = result["boundary"]
    lines = [header, "## Importance map",
             f"- Ablation: `{df['mode'].iloc[0]}`; boundary convention: `{boundary}` "
             + ("(first/last layer replaced by their one neighbour)" if boundary == "one-neighbour"
                else "(first/last layer left untouched, as in the study: their D is not measured)"),
             *([] if result.scalars.get("uniform", True) or df["mode"].iloc[0] != "neighbour-mean" else
               ["- The layers are not all of one kind (hybrid or alternating stack): neighbour-mean takes the "
                "nearest layers of the same kind, listed in the `neighbours` column."]),
             f"- Baseline PPL {base['ppl']:.3f} (95% CI {base['ppl_low']:.3f}-{base['ppl_high']:.3f})",
             "- Classes: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in
                                       ("Critical", "Important", "Minor", "Redundant", "Untouched") if counts.get(c)),
             "- Anti-layer candidates (upper end of the D interval below 0): "
             + (", ".join(f"layers.{i}" for i in anti) if anti else "none"),
             f"- Spearman correlation with ablation D: Block Influence {rho['block_influence']:.3f}, "
             f"angular distance {rho['angular_distance']:.3f}", "",
             report.markdown_table(df.drop(columns=["mode"]).round(4)), "",
             *task_section(result.tables, "the layer ablated"),
             *(["### Proxy panel (Spearman's rho of each cheap view with the true accuracy drop, over the layers; "
                "95% bootstrap interval over the layers)", report.markdown_table(result["proxy_panel"].round(3)), ""]
               if "proxy_panel" in result.tables else [])]
    return "\n".join(lines)


def importance_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet, config: ImportanceConfig) -> Artefacts:
    """Figure and report of an importance run (the CLI's run folder and the app's)."""
    return Artefacts(
        figures={"importance": plots.importance_figure(result.table, f"Layer importance: {loaded.title}")},
        markdown=importance_report(result, report.header("Layer importance", loaded, eval_set)))


def headline(result: Result) -> str:
    """Baseline PPL and the count of layers per class, in one line."""
    base, counts = result["baseline"], result.table["class"].value_counts()
    return (f"Baseline PPL {base['ppl']:.3f} ({base['ppl_low']:.3f}-{base['ppl_high']:.3f}); "
            + ", ".join(f"{c} {counts[c]}" for c in counts.index) + ".")


def importance_work(config: ImportanceConfig, shape: work.Shape) -> float:
    """The ablations' forwards, and with tasks one scoring of the intact model and of each ablated one."""
    layers = shape.layers(config.layers)
    return (work.ablations(shape, layers, config.use_prefix_cache)
            + (1 + len(layers)) * task_passes(config.tasks, shape.tokens))


def proxy_panels(result: Result) -> dict[str, pd.DataFrame]:
    """The study's panel from the map (the full study scores the shipped tasks per ablated layer; --quick does not):
    which cheap view ranks the layers as their true accuracy drop does."""
    panel = result.tables.get("proxy_panel")
    return {} if panel is None or panel.empty else {
        "Proxy panel: Spearman's rho of each cheap view with each task's accuracy drop over the ablated layers "
        "(95% bootstrap interval over the layers)": panel.round(3)}


def layer_views(result: Result) -> dict[str, pd.Series]:
    """The study's per-layer views from the map: D with its interval, the two similarity views, the class."""
    t = result.table.set_index("layer")
    return {"ablation D (%)": t["degradation_pct"], "D low": t["degradation_low"], "D high": t["degradation_high"],
            "Block Influence": t["block_influence"], "angular distance": t["angular_distance"], "class": t["class"]}


EXPERIMENT = Experiment(
    name="importance", title="Importance map", summary="per-layer ablation importance map (SPEC section 1)",
    description=__doc__, config=ImportanceConfig, run=run_importance, artefacts=importance_artefacts,
    uses_tokenizer=True, columns=("layer", "degradation_pct", "class"), headline=headline, work=importance_work,
    study=StudyRole(order=1, views=layer_views, settings={"tasks": ",".join(SHIPPED)}, quick={"tasks": ""},
                    panels=proxy_panels, findings=(
        findings.importance_range, findings.class_counts, findings.critical_core, findings.critical_core_layers,
        findings.critical_boundary, findings.anti_layers, findings.anti_layer_search, findings.table_1)))
