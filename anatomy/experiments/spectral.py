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

import argparse
import time
from dataclasses import dataclass

import pandas as pd
from transformers import PreTrainedModel

from .. import plots, report
from ..errors import AnatomyError
from ..evaluate import EvalSet
from ..layers import ATTENTION, MLP, LayerAdapter
from ..load import LoadedModel
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
    """`min_tail`: the fewest eigenvalues a power-law tail may have (stops xmin drifting to the last few)."""

    min_tail: int = DEFAULT_MIN_TAIL
    keep_singular_values: bool = True

    def validate(self) -> None:
        if self.min_tail < 2:
            raise AnatomyError(f"min_tail must be >= 2, got {self.min_tail}.")


def run_spectral(model: PreTrainedModel, eval_set: EvalSet | None = None, config: SpectralConfig | None = None,
                 progress: ProgressCallback | None = None) -> pd.DataFrame:
    """One row per (layer, component) matrix; `df.attrs['singular_values']` holds the long table of spectra.

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
    df.attrs.update(groups=group_contrast(df), min_tail=config.min_tail,
                    timings={"spectra_s": time.perf_counter() - t0},
                    singular_values=pd.concat(spectra, ignore_index=True) if spectra else None)
    return df


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


def spectral_report(df: pd.DataFrame, header: str) -> str:
    groups = df.attrs["groups"]
    by_layer = layer_alpha(df)
    qk = groups.set_index("group")["alpha_mean"]
    lines = [header, "## Spectral anatomy",
             "- alpha: maximum-likelihood power-law exponent of the upper tail of the eigenvalues of W^T W "
             "(squared singular values); xmin chosen by the smallest Kolmogorov-Smirnov distance (Clauset et al. "
             f"2009) among tails of at least {df.attrs['min_tail']} eigenvalues.",
             "- stable rank: ||W||_F^2 / ||W||_2^2.",
             f"- {len(df)} matrices in {df.attrs['timings']['spectra_s']:.1f} s.",
             f"- Layer mean alpha: lowest layers.{_layer_of(by_layer, by_layer.index, True)} ({by_layer.min():.2f}), "
             f"highest layers.{_layer_of(by_layer, by_layer.index, False)} ({by_layer.max():.2f})."]
    if {"query/key", "value/output"} <= set(qk.index):
        lines.append(f"- Query/key vs value/output: mean alpha {qk['query/key']:.2f} vs {qk['value/output']:.2f} "
                     f"({'heavier' if qk['query/key'] < qk['value/output'] else 'lighter'} tails in query/key).")
    lines += ["", "### Groups", report.markdown_table(groups.round(3)), "",
              "### Components", report.markdown_table(component_summary(df).round(3)), "",
              "### Every matrix", report.markdown_table(df.round(4)), ""]
    return "\n".join(lines)


def spectral_artefacts(df: pd.DataFrame, loaded: LoadedModel) -> report.Artefacts:
    """Tables, figures, report and results of a spectral run (the CLI's run folder and the app's)."""
    return report.Artefacts(
        tables={"spectral": df, "groups": df.attrs["groups"], "singular_values": df.attrs["singular_values"]},
        figures={"depth_profiles": plots.spectral_depth_figure(df, f"Spectral depth profiles: {loaded.name}"),
                 "singular_values": plots.singular_values_figure(df.attrs["singular_values"])},
        markdown=spectral_report(df, report.header("Spectral anatomy", loaded, None)),
        results={"groups": df.attrs["groups"], "components": component_summary(df)})


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from .. import cli

    parser = subparsers.add_parser("spectral", help="singular values, stable rank, power-law alpha (SPEC 9)",
                                   description=__doc__)
    cli.add_common_args(parser, out="runs/spectral")
    parser.add_argument("--min-tail", type=int, default=DEFAULT_MIN_TAIL,
                        help=f"fewest eigenvalues in a fitted tail (default {DEFAULT_MIN_TAIL})")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    loaded = cli.load_from_args(args)
    config = SpectralConfig(min_tail=args.min_tail)
    df = run_spectral(loaded.model, None, config)
    run = report.RunFolder(args.out, "spectral")
    run.write(spectral_artefacts(df, loaded), loaded, None, config, df.attrs["timings"])
    cli.print_summary(run, component_summary(df).round(3))
