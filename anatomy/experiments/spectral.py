"""Spectral anatomy (SPEC section 9): singular values, stable rank and power-law alpha of every weight matrix.

Every component of every layer that has it is analysed (in a hybrid stack, the convolution or SSM matrices
of their layers too); an expert tensor is one matrix with the experts stacked along its rows.

alpha is the exponent of a continuous power law p(x) ~ x^-alpha fitted by maximum likelihood to the
upper tail of the eigenvalues of W^T W (the squared singular values), with xmin chosen by the
Kolmogorov-Smirnov criterion of Clauset, Shalizi & Newman (2009) among candidates that leave at least
`min_tail` eigenvalues in the tail (anatomy/spectra.py). Heavy-tailed-self-regularisation reading
(WeightWatcher): alpha between 2 and 6 marks a trained matrix, larger alpha a less-trained one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from transformers import PreTrainedModel

from .. import findings, plots, report, work
from ..errors import AnatomyError
from ..evaluate import EvalSet
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..layers import ATTENTION, MLP, LayerAdapter
from ..load import LoadedModel
from ..options import option
from ..progress import ProgressCallback, track
from ..spectra import DEFAULT_MIN_TAIL, analyze_singular_values, singular_values

COLUMNS = ["layer", "component", "group", "rows", "cols", "alpha", "xmin", "ks_distance", "n_tail", "n_eigs",
           "stable_rank", "spectral_norm", "frobenius_norm"]
# The contrast the related study draws: attention scores (W_Q, W_K) vs the value path (W_V, W_O) vs the MLP.
GROUPS = {ATTENTION[0]: "query/key", ATTENTION[1]: "query/key", ATTENTION[2]: "value/output",
          ATTENTION[3]: "value/output", **{c: "mlp" for c in MLP}}
OTHER = "other"  # any matrix outside the seven canonical components (experts, routers, convolutions, SSM)


@dataclass
class SpectralConfig:
    """`min_tail` stops xmin drifting to the last few eigenvalues; `keep_singular_values` (library only) can be
    turned off by a caller that needs only the fits (pruning by alpha)."""

    min_tail: int = option(DEFAULT_MIN_TAIL, "fewest eigenvalues in a fitted tail",
                           label="Fewest eigenvalues in a power-law tail", minimum=2, maximum=1_000_000)
    keep_singular_values: bool = True

    def validate(self) -> None:
        if self.min_tail < 2:
            raise AnatomyError(f"min_tail must be >= 2, got {self.min_tail}.")


def run_spectral(model: PreTrainedModel, eval_set: EvalSet | None = None, config: SpectralConfig | None = None,
                 progress: ProgressCallback | None = None) -> Result:
    """One row per (layer, component) matrix; extra tables `groups` (the contrast of component groups),
    `components` (`component_summary`) and, kept by default, `singular_values` (the long table of spectra).

    The eval set is not used (weights only); it is accepted so every experiment has the same signature.
    Matrices of one shape share one batched SVD and one batched fit; the progress steps are components.
    """
    config = config or SpectralConfig()
    config.validate()
    adapter = LayerAdapter(model)
    t0 = time.perf_counter()
    rows, spectra = [], []
    for component in track(adapter.all_components, "spectral (per component)", progress):
        refs = [adapter.component(layer, component) for layer in adapter.layers_with(component)]
        matrices = [ref.matrix() for ref in refs]
        svals = singular_values(matrices)
        fits = analyze_singular_values(svals, [tuple(m.shape) for m in matrices], config.min_tail)
        rows += [{"layer": ref.layer, "component": component, "group": GROUPS.get(component, OTHER), **fit}
                 for ref, fit in zip(refs, fits)]
        if config.keep_singular_values:
            spectra += [pd.DataFrame({"layer": ref.layer, "component": component, "index": range(len(s)),
                                      "singular_value": s.float().numpy()}) for ref, s in zip(refs, svals)]
    df = pd.DataFrame(rows)[COLUMNS].sort_values(["layer", "component"], kind="stable", ignore_index=True)
    tables = {"groups": group_contrast(df), "components": component_summary(df)}
    if spectra:
        tables["singular_values"] = pd.concat(spectra, ignore_index=True)
    return Result("spectral", df, scalars={"min_tail": config.min_tail}, tables=tables,
                  timings={"spectra_s": time.perf_counter() - t0})


def group_contrast(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and range of alpha and stable rank per component group (query/key, value/output, mlp)."""
    stats = df.groupby("group", sort=False).agg(
        matrices=("alpha", "size"), alpha_mean=("alpha", "mean"), alpha_std=("alpha", "std"),
        alpha_median=("alpha", "median"), alpha_min=("alpha", "min"), alpha_max=("alpha", "max"),
        stable_rank_mean=("stable_rank", "mean"), stable_rank_std=("stable_rank", "std"))
    return stats.reset_index()


def _layer_of(alpha: pd.Series, layers: pd.Series, lowest: bool) -> float:
    """The layer with the lowest (highest) alpha; NaN where no matrix had a tail long enough for a fit
    (a router has as many singular values as experts, a short convolution as many as its kernel)."""
    fitted = alpha.dropna()
    if fitted.empty:
        return float("nan")
    return int(layers[fitted.idxmin() if lowest else fitted.idxmax()])


def component_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per component: mean alpha, the layers with the lowest and highest alpha, mean stable rank."""
    rows = []
    for component, part in df.groupby("component", sort=False):
        rows.append({"component": component, "alpha_mean": part["alpha"].mean(), "alpha_std": part["alpha"].std(),
                     "alpha_min_layer": _layer_of(part["alpha"], part["layer"], lowest=True),
                     "alpha_max_layer": _layer_of(part["alpha"], part["layer"], lowest=False),
                     "stable_rank_mean": part["stable_rank"].mean(),
                     "frac_alpha_2_to_6": float(part["alpha"].between(2, 6).mean())})
    return pd.DataFrame(rows)


def layer_alpha(df: pd.DataFrame) -> pd.Series:
    """Mean alpha of each layer's matrices: the pruning criterion (a large alpha reads as less trained)."""
    return df.groupby("layer")["alpha"].mean()


def alpha_extremes(df: pd.DataFrame) -> str:
    """The layers with the lowest and highest mean alpha, with their values."""
    by_layer = layer_alpha(df)
    return (f"lowest layers.{_layer_of(by_layer, by_layer.index, True)} ({by_layer.min():.2f}), "
            f"highest layers.{_layer_of(by_layer, by_layer.index, False)} ({by_layer.max():.2f})")


def spectral_report(result: Result, header: str) -> str:
    df, groups = result.table, result["groups"]
    qk = groups.set_index("group")["alpha_mean"]
    lines = [header, "## Spectral anatomy",
             "- alpha: maximum-likelihood power-law exponent of the upper tail of the eigenvalues of W^T W "
             "(squared singular values); xmin chosen by the smallest Kolmogorov-Smirnov distance (Clauset et al. "
             f"2009) among tails of at least {result['min_tail']} eigenvalues.",
             "- stable rank: ||W||_F^2 / ||W||_2^2.",
             f"- {len(df)} matrices in {result.timings['spectra_s']:.1f} s.",
             f"- Layer mean alpha: {alpha_extremes(df)}."]
    if {"query/key", "value/output"} <= set(qk.index):
        lines.append(f"- Query/key vs value/output: mean alpha {qk['query/key']:.2f} vs {qk['value/output']:.2f} "
                     f"({'heavier' if qk['query/key'] < qk['value/output'] else 'lighter'} tails in query/key).")
    lines += ["", "### Groups", report.markdown_table(groups.round(3)), "",
              "### Components", report.markdown_table(result["components"].round(3)), "",
              "### Every matrix", report.markdown_table(df.round(4)), ""]
    return "\n".join(lines)


def spectral_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet | None,
                       config: SpectralConfig) -> Artefacts:
    """Figures and report of a spectral run (the CLI's run folder and the app's)."""
    figures = {"depth_profiles": plots.spectral_depth_figure(result.table, f"Spectral depth profiles: {loaded.title}")}
    if "singular_values" in result.tables:
        figures["singular_values"] = plots.singular_values_figure(result["singular_values"])
    return Artefacts(figures=figures, markdown=spectral_report(result, report.header("Spectral anatomy", loaded, None)))


def rounded_components(result: Result) -> pd.DataFrame:
    """The per-component summary as the CLI prints it and the app shows it."""
    return result["components"].round(3)


def headline(result: Result) -> str:
    """The depth extremes of alpha, in one line."""
    return f"{len(result.table)} matrices; layer mean alpha: {alpha_extremes(result.table)}."


def spectral_work(config: SpectralConfig, shape: work.Shape) -> float:
    """The singular values of every matrix of every layer."""
    return shape.operations(shape.svd_flops)


def layer_views(result: Result) -> dict[str, pd.Series]:
    """Alpha and stable rank per layer (means over the layer's matrices)."""
    t = result.table
    return {"alpha": t.groupby("layer")["alpha"].mean(), "stable rank": t.groupby("layer")["stable_rank"].mean()}


EXPERIMENT = Experiment(
    name="spectral", title="Spectral anatomy", summary="singular values, stable rank, power-law alpha (SPEC section 9)",
    description=__doc__, config=SpectralConfig, run=run_spectral, artefacts=spectral_artefacts, uses_eval=False,
    printed=rounded_components, headline=headline, work=spectral_work,
    study=StudyRole(order=5, views=layer_views, findings=(
        findings.alpha_depth, findings.alpha_persists, findings.compression_waves, findings.qk_vs_vo,
        findings.qk_vs_vo_dynamics, findings.alpha_importance)))
