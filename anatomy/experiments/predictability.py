"""Weight predictability (SPEC section 2): can a smooth function of depth predict a layer's weights?

For component c and target layer t in 2..N-1 a Ridge regression maps the features of layers 0..t-1,
`[l, l^2, sin(l*pi/N), cos(l*pi/N)]`, to the weights at the same randomly sampled positions (10,000 by
default) and predicts layer t; R^2 and the cosine of predicted vs actual are reported. Then whole layers
are replaced by their predictions (fit on all positions) and PPL is measured: a high R^2 beside a
destroyed model is the study's "R^2-perplexity paradox".

Two readings sit beside the per-position R^2 and explain it. The "R^2 of the weight distribution" sorts
each layer's sampled weights before the same ridge fit: it asks whether the *shape and scale* of a
layer's weight distribution follow depth (they do, closely), not whether weight (i, j) does. And the
cosine similarity of adjacent layers at fixed positions says how much weight (i, j) of layer t-1 tells
about weight (i, j) of layer t: near 0 means no smooth function of depth can predict the weights, so a
high R^2 of the distribution can sit beside a model destroyed by the predicted weights.

Ridge on 4 features has a closed form: with centred features Xc and A = Xc^T Xc + alpha I, the prediction
at x* is ybar + (x* - xbar) A^-1 Xc^T Y, i.e. a fixed weighting `c` of the training layers (c = 1/t +
Xc A^-1 (x* - xbar)). One t-vector serves every position, so fitting all ~900k positions of a matrix is
one matrix-vector product; it equals scikit-learn's `Ridge(alpha, fit_intercept=True)` (tested).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .. import findings, plots, report, work
from ..claims import CONTROL, FAILS, HOLDS, Claim, bootstrap_mean, claims_markdown
from ..errors import AnatomyError, shown
from ..evaluate import EvalSet, PrefixCache, degradation, perplexity
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..interventions import assign
from ..layer_weights import flat_stack
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..options import LAYERS, SEED_MAX, Codec, option
from ..progress import ProgressCallback, track
from ..sweep import sweep

COLUMNS = ["component", "layer", "r2", "cosine", "r2_previous_layer", "r2_distribution", "adjacent_cosine"]
STUDY_MEAN_R2 = {"mlp.gate_proj": 0.909}  # SPEC section 10, Table 2: the headline number


def _one_layer(text: str, where: str) -> int | None:
    text = text.strip()
    if text and not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise AnatomyError(f"{where} takes one 0-based layer number like 5, got {shown(text)}.")
    return int(text) if text else None


ONE_LAYER = Codec(_one_layer, lambda v: "" if v is None else str(v))
"""One layer number; empty: chosen by the run."""


def _layer_selection(text: str, where: str) -> str | None:
    if not text.strip():
        return None
    return LAYERS.parse(text, where) or "all"  # every layer, as typed: refused below layer 2 when it runs


SOME_LAYERS = Codec(_layer_selection, lambda v: "" if v is None else LAYERS.format(v))
"""A layer selection such as 20-28, checked against the model's depth when it runs; empty: chosen by the run."""


@dataclass
class PredictabilityConfig:
    """The study's defaults: 10,000 sampled positions, scikit-learn's default ridge alpha (1.0).

    The functional test replaces `single_layer` (default: the target layer with the highest mean R^2)
    and then `multi_layers` (default: the `multi_count` layers with the highest mean R^2). The paradox
    thresholds (library only) decide what the report calls a high R^2 and a destroyed model.
    """

    positions: int = option(10_000, "sampled weight positions", label="Sampled positions", minimum=1,
                            maximum=10_000_000, public_maximum=100_000)
    ridge_alpha: float = option(1.0, "ridge penalty (sklearn's default)", label="Ridge alpha", minimum=0, maximum=1e12)
    seed: int = option(0, "seed of the sampled positions", ui=False, minimum=0, maximum=SEED_MAX)
    single_layer: int | None = option(None, "layer replaced alone; none: the one with the highest mean R^2",
                                      codec=ONE_LAYER, ui=False)
    multi_layers: str | list[int] | None = option(
        None, "layers replaced together, e.g. 20-28; none: the --multi-count layers with the highest mean R^2",
        codec=SOME_LAYERS, ui=False)
    multi_count: int = option(9, "how many layers to replace together",
                              label="Layers replaced at once (multi-layer test)", minimum=1, maximum=100_000)
    paradox_r2: float = 0.5  # mean R^2 of the replaced layers at or above this counts as "high"
    paradox_degradation: float = 100.0  # D in % at or above this counts as "destroyed"

    def validate(self) -> None:
        if self.positions < 1 or not math.isfinite(self.ridge_alpha) or self.ridge_alpha < 0 or self.multi_count < 1:
            raise AnatomyError("positions and multi_count must be >= 1 and ridge_alpha >= 0 "
                               f"(got {self.positions}, {self.multi_count}, {self.ridge_alpha}).")


def layer_features(layers: np.ndarray | list[int], num_layers: int) -> np.ndarray:
    """The study's features per layer: [l, l^2, sin(l pi / N), cos(l pi / N)]."""
    l = np.asarray(layers, dtype=np.float64)
    return np.stack([l, l**2, np.sin(l * math.pi / num_layers), np.cos(l * math.pi / num_layers)], axis=1)


def ridge_coefficients(x_train: np.ndarray, x_target: np.ndarray, alpha: float) -> np.ndarray:
    """Weights c over training rows with `c @ Y` = Ridge(alpha, fit_intercept=True).fit(x_train, Y).predict(x_target).

    x_train: (t, f); x_target: (k, f). Returns (k, t).
    """
    x_train, x_target = np.atleast_2d(x_train), np.atleast_2d(x_target)
    t, f = x_train.shape
    mean = x_train.mean(axis=0)
    xc = x_train - mean
    solved = np.linalg.solve(xc.T @ xc + alpha * np.eye(f), (x_target - mean).T)  # (f, k)
    return 1.0 / t + (xc @ solved).T


def r2_score(pred: torch.Tensor, actual: torch.Tensor) -> float:
    """Coefficient of determination of `pred` for the values of `actual` (scikit-learn's r2_score)."""
    ss_tot = float(((actual - actual.mean()) ** 2).sum())
    return 1.0 - float(((actual - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


def cosine(pred: torch.Tensor, actual: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(pred.double(), actual.double(), dim=0))


def predict_layer(stack: torch.Tensor, target: int, num_layers: int, alpha: float) -> torch.Tensor:
    """Ridge prediction of row `target` of a (>= target, P) stack from rows 0..target-1."""
    c = ridge_coefficients(layer_features(range(target), num_layers), layer_features([target], num_layers), alpha)
    return torch.from_numpy(c[0]).to(stack.dtype) @ stack[:target]


def distribution_r2(sorted_stack: torch.Tensor, target: int, num_layers: int, alpha: float) -> float:
    """R^2 of the weight distribution: the same ridge on each layer's weights sorted (its quantile function).

    Sorting throws away which weight sits where and keeps only the distribution, so this R^2 is high
    whenever the scale and shape of the weights change smoothly with depth, however unrelated the
    weights at a given position are.
    """
    return r2_score(predict_layer(sorted_stack, target, num_layers, alpha), sorted_stack[target])


def run_predictability(model: PreTrainedModel, eval_set: EvalSet, config: PredictabilityConfig | None = None,
                       progress: ProgressCallback | None = None) -> Result:
    """One row per (component, target layer); extra tables `summary` (per component) and `functional` (the
    replaced layers' PPL); scalars: the baseline PPL, the claims and the paradox thresholds used."""
    config = config or PredictabilityConfig()
    config.validate()
    adapter = LayerAdapter(model)
    n = adapter.num_layers
    if n < 3:
        raise AnatomyError(f"Predicting layer t from layers 0..t-1 needs t >= 2: this model has {n} layers.")
    # a typed selection such as 20-28 becomes its layers, checked against this model's depth
    config = replace(config, multi_layers=adapter.resolve_layers(config.multi_layers) if config.multi_layers else None)
    for layer in [config.single_layer, *(config.multi_layers or [])]:
        if layer is not None and not 2 <= adapter.check_layer(layer):
            raise AnatomyError(f"Layer {layer} cannot be predicted: targets are layers 2..{n - 1}.")
    t0 = time.perf_counter()
    rows, stacks = [], {}
    rng = np.random.default_rng(config.seed)
    for component in track(adapter.stacked_components("predictability"), "predictability (ridge per component)",
                           progress):
        stack = flat_stack(adapter, component)
        positions = np.sort(rng.choice(stack.shape[1], size=min(config.positions, stack.shape[1]), replace=False))
        sampled = stack[:, torch.from_numpy(positions)].double()
        distribution = sampled.sort(dim=1).values
        for t in range(2, n):
            pred, actual = predict_layer(sampled, t, n, config.ridge_alpha), sampled[t]
            rows.append({"component": component, "layer": t, "r2": r2_score(pred, actual),
                         "cosine": cosine(pred, actual), "r2_previous_layer": r2_score(sampled[t - 1], actual),
                         "r2_distribution": distribution_r2(distribution, t, n, config.ridge_alpha),
                         "adjacent_cosine": cosine(stack[t - 1], stack[t])})
        stacks[component] = stack
    df = pd.DataFrame(rows, columns=COLUMNS)
    t_fit = time.perf_counter() - t0
    functional, baseline = functional_test(model, eval_set, adapter, stacks, df, config, progress)
    return Result("predictability", df,
                  scalars={"baseline": baseline.as_dict(), "claims": [c.as_dict() for c in predictability_claims(df)],
                           "paradox": {"r2": config.paradox_r2, "degradation_pct": config.paradox_degradation}},
                  tables={"summary": summarize(df), "functional": functional},
                  timings={"fits_s": t_fit, "functional_s": time.perf_counter() - t0 - t_fit})


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and best R^2 (and where) per component, with the mean cosine and the copy-previous-layer baseline."""
    rows = []
    for component, part in df.groupby("component", sort=False):
        best = part.loc[part["r2"].idxmax()]
        rows.append({"component": component, "mean_r2": part["r2"].mean(), "best_r2": best["r2"],
                     "best_layer": int(best["layer"]), "worst_r2": part["r2"].min(),
                     "mean_cosine": part["cosine"].mean(), "mean_r2_previous_layer": part["r2_previous_layer"].mean(),
                     "mean_r2_distribution": part["r2_distribution"].mean(),
                     "mean_adjacent_cosine": part["adjacent_cosine"].mean()})
    return pd.DataFrame(rows)


def replacement_sets(df: pd.DataFrame, config: PredictabilityConfig) -> dict[str, list[int]]:
    """Which layers the functional test replaces: the most predictable ones unless the config names them."""
    ranked = df.groupby("layer")["r2"].mean().sort_values(ascending=False).index.tolist()
    single = [config.single_layer] if config.single_layer is not None else ranked[:1]
    multi = sorted(config.multi_layers) if config.multi_layers else sorted(ranked[:config.multi_count])
    return {f"{len(single)} layer": single, f"{len(multi)} layers": multi}


def functional_test(model: PreTrainedModel, eval_set: EvalSet, adapter: LayerAdapter,
                    stacks: dict[str, torch.Tensor], df: pd.DataFrame, config: PredictabilityConfig,
                    progress: ProgressCallback | None) -> tuple[pd.DataFrame, object]:
    """Replace whole layers (every component's weight, biases kept) by all-position predictions; PPL each."""
    sets = replacement_sets(df, config)
    cache = PrefixCache(model, eval_set)
    base = perplexity(model, eval_set, cache, adapter.num_layers)
    n = adapter.num_layers
    predictions = {(component, t): predict_layer(stack, t, n, config.ridge_alpha)
                   for t in sorted({t for layers in sets.values() for t in layers})
                   for component, stack in stacks.items()}
    def replaced(named: tuple[str, list[int]]) -> dict:
        name, layers = named
        values = {adapter.component(t, c): predictions[(c, t)].reshape(adapter.component(t, c).matrix().shape)
                  for t in layers for c in stacks}
        full_r2 = [r2_score(predictions[(c, t)], stacks[c][t]) for t in layers for c in stacks]
        with assign(values):
            result = perplexity(model, eval_set, cache, min(layers))
        d, d_low, d_high = degradation(result, base, eval_set)
        sampled = df[df["layer"].isin(layers)]
        return {"replaced": name, "layers": ",".join(map(str, layers)),
                "mean_r2_sampled": sampled["r2"].mean(), "mean_r2_all_positions": float(np.mean(full_r2)),
                "mean_cosine": sampled["cosine"].mean(), **result.as_dict(), "degradation_pct": d,
                "degradation_low": d_low, "degradation_high": d_high}

    rows = sweep(list(sets.items()), replaced, "predictability (replace layers)", progress,
                 label=lambda named: f"{named[0]}: {','.join(map(str, named[1]))}")
    return pd.DataFrame(rows), base


def paradox_statement(functional: pd.DataFrame, baseline: dict, config: PredictabilityConfig) -> str:
    """Says, in numbers, whether high R^2 sits beside a destroyed model (the study's paradox), or why not."""
    lines = []
    for row in functional.itertuples():
        numbers = (f"replacing {row.replaced} ({row.layers}) with predictions of mean R^2 "
                   f"{row.mean_r2_all_positions:.3f} (all positions) moves PPL from {baseline['ppl']:.2f} to "
                   f"{row.ppl:.4g} (D {row.degradation_pct:+.4g}%, 95% CI {row.degradation_low:+.4g} to "
                   f"{row.degradation_high:+.4g}%)")
        high_r2 = row.mean_r2_all_positions >= config.paradox_r2
        destroyed = row.degradation_pct >= config.paradox_degradation
        if high_r2 and destroyed:
            verdict = "the R^2-perplexity paradox occurs"
        elif not high_r2:
            verdict = (f"no paradox: the R^2 itself is below {config.paradox_r2:g}, so the weights are not well "
                       "predicted and a damaged model is what one expects")
        else:
            verdict = f"no paradox: R^2 is high and the model survives (D below {config.paradox_degradation:g}%)"
        lines.append(f"- {numbers}: {verdict}.")
    return "\n".join(lines)


def why_paragraph(df: pd.DataFrame) -> str:
    """One paragraph, in this run's numbers, on why a high R^2 can sit beside a destroyed model."""
    r2, dist, adj = df["r2"].mean(), df["r2_distribution"].mean(), df["adjacent_cosine"].mean()
    return (f"Why a high R^2 can sit beside a destroyed model: over every component and target layer the mean R^2 "
            f"per position is {r2:.3f}, while the R^2 of the weight distribution (each layer's weights sorted "
            f"before the same fit) is {dist:.3f}. Adjacent layers have mean cosine similarity {adj:.4f} at fixed "
            "positions: weight (i, j) of one layer says almost nothing about weight (i, j) of the next, so no "
            "smooth function of depth can predict the weights themselves. What depth does predict is the "
            "distribution (the scale and shape of each layer's weights); an R^2 computed on it, or dominated by "
            "it, is high even when the predicted matrices scramble every position, and the model breaks.")


def predictability_claims(df: pd.DataFrame) -> list[Claim]:
    """The study's mean R^2 (gate_proj 0.909) against ours, with the weight-distribution R^2 as the control."""
    claims = []
    for component, study in STUDY_MEAN_R2.items():
        part = df[df["component"] == component]
        if part.empty:
            continue
        ours, low, high = bootstrap_mean(part["r2"])
        dist, dlow, dhigh = bootstrap_mean(part["r2_distribution"])
        adj = part["adjacent_cosine"].mean()
        if low <= study <= high or ours >= study:
            verdict, why = HOLDS, f"our per-position mean R^2 {ours:.3f} reaches the study's {study}."
        elif dlow <= study <= dhigh or dist >= study:
            verdict = CONTROL
            why = (f"per position our mean R^2 is {ours:.3f} (adjacent-layer cosine {adj:.4f}); the R^2 of the "
                   f"weight distribution is {dist:.3f}, which reaches the study's {study}: its number reads as "
                   "the predictability of the weights' scale, not of the weights.")
        else:
            verdict = FAILS
            why = (f"per position our mean R^2 is {ours:.3f} and the R^2 of the weight distribution {dist:.3f}; "
                   f"neither reaches the study's {study}.")
        claims.append(Claim(
            finding=f"predictability.{component.split('.')[-1]}", statement=f"mean R^2 of {component} is {study}",
            study=study, ours=ours, ours_low=low, ours_high=high,
            interval=f"mean over target layers 2..N-1, 95% bootstrap over layers ({len(part)} layers)",
            control="R^2 of the weight distribution (sorted weights), same ridge", control_value=dist,
            control_low=dlow, control_high=dhigh, verdict=verdict, explanation=why))
    return claims


def predictability_report(result: Result, header: str, config: PredictabilityConfig) -> str:
    df, base, functional = result.table, result["baseline"], result["functional"]
    lines = [header, "## Weight predictability",
             f"- Ridge (alpha {config.ridge_alpha:g}, intercept, unscaled features [l, l^2, sin(l pi/N), "
             f"cos(l pi/N)]) from layers 0..t-1 to {config.positions:,} sampled positions (the same positions "
             "for every target of a component), target layers t = 2..N-1. `mean_r2_previous_layer`: R^2 of simply "
             "copying layer t-1, for scale. `mean_r2_distribution`: the R^2 of the weight distribution (the same fit "
             "on each layer's weights sorted). `mean_adjacent_cosine`: cosine of layers t-1 and t at fixed "
             "positions.",
             f"- Baseline PPL {base['ppl']:.3f} (95% CI {base['ppl_low']:.3f}-{base['ppl_high']:.3f}).", "",
             "### R^2 per component", report.markdown_table(result["summary"].round(4)), "", why_paragraph(df), "",
             claims_markdown(predictability_claims(df)),
             "### Functional test (weights replaced by predictions fit on all positions; biases kept)",
             paradox_statement(functional, base, config), "",
             report.markdown_table(functional.round(4)), "",
             "### Every target", report.markdown_table(df.round(4)), ""]
    return "\n".join(lines)


def predictability_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet,
                             config: PredictabilityConfig) -> Artefacts:
    """Figures and report of a predictability run (the CLI's run folder and the app's)."""
    return Artefacts(
        figures={"r2_by_layer": plots.predictability_figure(result.table, f"Weight predictability: {loaded.title}"),
                 "functional": plots.ppl_rows_figure(result["functional"], "replaced", "Layers replaced by predictions",
                                                     result["baseline"]["ppl"])},
        markdown=predictability_report(result, report.header("Weight predictability", loaded, eval_set), config))


def rounded_summary(result: Result) -> pd.DataFrame:
    """The R^2 per component as the CLI prints it."""
    return result["summary"].round(4)


def headline(result: Result) -> str:
    """Whether the paradox occurs, one line per replaced set, with the thresholds the run used."""
    thresholds = result["paradox"]
    config = PredictabilityConfig(paradox_r2=thresholds["r2"], paradox_degradation=thresholds["degradation_pct"])
    return paradox_statement(result["functional"], result["baseline"], config)


def predictability_work(config: PredictabilityConfig, shape: work.Shape) -> float:
    """The replacement test's baseline and its two replaced sets (the ridge fits cost about one more)."""
    return 4.0


EXPERIMENT = Experiment(
    name="predictability", title="Weight predictability",
    summary="ridge prediction of weights from depth, R^2 and the functional test (SPEC section 2)", description=__doc__,
    config=PredictabilityConfig, run=run_predictability, artefacts=predictability_artefacts, printed=rounded_summary,
    headline=headline, work=predictability_work,
    study=StudyRole(order=2, quick={"positions": 2000}, findings=(
        findings.r2_gate, findings.table_2, findings.one_predicted_layer, findings.paradox)))
