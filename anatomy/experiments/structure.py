"""Weight structure (SPEC section 3): consecutive-delta correlation, PCA path, layer-by-layer cosine similarity.

For a component, d_l = W_{l+1} - W_l and the study's statistic is the Pearson correlation of (d_l, d_{l+1})
averaged over l. Independent layers of equal variance give exactly -0.5 (d_l and d_{l+1} share W_{l+1}
with opposite signs), so the measured value is shown beside that null and beside a control on the very
same weights with the layer order shuffled: what the statistic gives when depth order carries no
information, whatever the layers' variances. Only an order-driven departure from the shuffled control is
evidence of structure across depth: `p_below` is the one-sided permutation p-value that the real order gives a
more negative correlation (an oscillation) than the shuffled orders, (1 + #{shuffled <= measured}) / (1 +
shuffles), and `p_above` the other side's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from .. import findings, plots, report, work
from ..errors import AnatomyError
from ..evaluate import EvalSet
from ..experiment import Artefacts, Experiment, Result, StudyRole
from ..layer_weights import add_gram_stats, centered_gram, cosine_matrix, flat_stack, gram_stats
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..options import SEED_MAX, option
from ..progress import ProgressCallback, track

NULL_CORRELATION = -0.5
WHOLE_LAYER = "all (concatenated)"
COLUMNS = ["component", "delta_corr", "delta_corr_std", "null_corr", "shuffled_mean", "shuffled_std",
           "order_z", "p_below", "p_above", "pc1_var", "pc2_var", "adjacent_cos", "mean_cos"]


@dataclass
class StructureConfig:
    """`shuffles`: seeded random layer orders for the control (they cost nothing: the Gram matrix is reused);
    the study's permutation tests want at least 1,000."""

    shuffles: int = option(2000, "layer-shuffled control orders", label="Shuffled orders (control)", minimum=2,
                           maximum=100_000, public_maximum=2_000)
    seed: int = option(0, "seed of the shuffled layer orders", label="Seed", minimum=0, maximum=SEED_MAX)

    def validate(self) -> None:
        if self.shuffles < 2:
            raise AnatomyError(f"shuffles must be >= 2 to give a spread, got {self.shuffles}.")


def delta_correlations(cgram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of consecutive deltas for each layer order and position ([S, N] -> [S, N - 2]).

    With G the per-layer-centred Gram matrix and (a, b, c) three consecutive layers of an order,
    cov(d_ab, d_bc) = G_bc - G_bb - G_ac + G_ab and var(d_ab) = G_aa + G_bb - 2 G_ab.
    """
    a, b, c = orders[:, :-2], orders[:, 1:-1], orders[:, 2:]
    g = lambda i, j: cgram[i, j]  # noqa: E731
    cov = g(b, c) - g(b, b) - g(a, c) + g(a, b)
    var_ab = g(a, a) + g(b, b) - 2 * g(a, b)
    var_bc = g(b, b) + g(c, c) - 2 * g(b, c)
    return cov / (var_ab * var_bc).clamp_min(1e-300).sqrt()


def pca_of_layers(gram: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PCA with layers as samples: (explained-variance ratios, [N, 2] coordinates), from the raw Gram matrix.

    Centring the positions across layers is H R H with H = I - 11^T/N; its eigenvectors scaled by
    sqrt(eigenvalue) are the principal-component scores. Signs are fixed so layer 0 scores <= 0.
    """
    n = gram.shape[0]
    h = torch.eye(n, dtype=gram.dtype) - 1.0 / n
    values, vectors = torch.linalg.eigh(h @ gram @ h)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    coords = vectors[:, :2] * values[:2].sqrt()
    coords = coords * torch.where(coords[0] > 0, -1.0, 1.0).to(coords.dtype)
    total = values.sum()
    return (values / total).numpy() if total > 0 else values.numpy(), coords.numpy()


def run_structure(model: PreTrainedModel, eval_set: EvalSet | None = None, config: StructureConfig | None = None,
                  progress: ProgressCallback | None = None) -> Result:
    """One row per component plus the whole layer; extra tables `pca` and `explained_variance`, and the array
    `similarity` ([row, layer, layer]: the cosine matrix of each row's component, in the table's order)."""
    config = config or StructureConfig()
    config.validate()
    adapter = LayerAdapter(model)
    n = adapter.num_layers
    if n < 3:
        raise AnatomyError(f"The delta correlation needs at least 3 layers; this model has {n}.")
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    shuffled = torch.stack([torch.randperm(n, generator=generator) for _ in range(config.shuffles)])
    identity = torch.arange(n)[None]
    stats = {}
    for component in track(adapter.stacked_components("structure"), "structure (per component)", progress):
        stats[component] = gram_stats(flat_stack(adapter, component))
    stats[WHOLE_LAYER] = add_gram_stats(list(stats.values()))
    rows, pca_rows, explained_rows, similarity = [], [], [], []
    for component, st in stats.items():
        cgram = centered_gram(st)
        per_l = delta_correlations(cgram, identity)[0]
        control = delta_correlations(cgram, shuffled).mean(dim=1)
        ratios, coords = pca_of_layers(st["gram"])
        cos = cosine_matrix(st).numpy()
        similarity.append(cos)
        measured = float(per_l.mean())
        below, above = int((control <= measured).sum()), int((control >= measured).sum())
        rows.append({"component": component, "delta_corr": measured, "delta_corr_std": float(per_l.std()),
                     "null_corr": NULL_CORRELATION, "shuffled_mean": float(control.mean()),
                     "shuffled_std": float(control.std()),
                     "order_z": float((measured - control.mean()) / control.std().clamp_min(1e-12)),
                     "p_below": (1 + below) / (1 + config.shuffles), "p_above": (1 + above) / (1 + config.shuffles),
                     "pc1_var": float(ratios[0]), "pc2_var": float(ratios[1]) if n > 1 else float("nan"),
                     "adjacent_cos": float(np.diag(cos, 1).mean()),
                     "mean_cos": float(cos[~np.eye(n, dtype=bool)].mean())})
        pca_rows += [{"component": component, "layer": i, "pc1": coords[i, 0], "pc2": coords[i, 1]} for i in range(n)]
        explained_rows += [{"component": component, "pc": k + 1, "explained_variance_ratio": float(r)}
                           for k, r in enumerate(ratios)]
    return Result("structure", pd.DataFrame(rows, columns=COLUMNS),
                  scalars={"shuffles": config.shuffles},
                  tables={"pca": pd.DataFrame(pca_rows), "explained_variance": pd.DataFrame(explained_rows)},
                  arrays={"similarity": np.stack(similarity)},
                  timings={"structure_s": time.perf_counter() - t0})


def similarity_by_component(result: Result) -> dict[str, np.ndarray]:
    """The layer-by-layer cosine matrix of each component (and of the whole layer), by name."""
    return dict(zip(result.table["component"], result["similarity"]))


def ordered_components(df: pd.DataFrame) -> pd.DataFrame:
    """The components whose layer order matters: the measured correlation more than 3 control sds away."""
    components = df[df["component"] != WHOLE_LAYER]
    return components[components["order_z"].abs() > 3]


def structure_report(result: Result, header: str) -> str:
    df = result.table
    components = df[df["component"] != WHOLE_LAYER]
    ordered = ordered_components(df)
    lines = [header, "## Weight structure",
             f"- Delta correlation: mean over l of Pearson corr(W_l+1 - W_l, W_l+2 - W_l+1). Null for independent "
             f"equal-variance layers: {NULL_CORRELATION}. Control: the same weights in {result['shuffles']} "
             "seeded random layer orders (mean, sd); `order_z` = (measured - control mean) / control sd.",
             f"- Measured range over components: {components['delta_corr'].min():.3f} to "
             f"{components['delta_corr'].max():.3f}; shuffled controls {components['shuffled_mean'].min():.3f} to "
             f"{components['shuffled_mean'].max():.3f}.",
             "- Components whose layer order matters (|order_z| > 3): "
             + (", ".join(f"{r.component} ({r.delta_corr:.3f} vs {r.shuffled_mean:.3f}, z {r.order_z:.1f})"
                          for r in ordered.itertuples()) if len(ordered) else
                "none: the study's -0.5 is what independent layers give, not evidence of an oscillation."),
             "- PCA: layers as samples, positions as features; `pc1_var`, `pc2_var` are explained-variance ratios. "
             "Cosine: `adjacent_cos` between neighbours, `mean_cos` over all pairs.", "",
             report.markdown_table(df.round(4)), ""]
    return "\n".join(lines)


def structure_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet | None,
                        config: StructureConfig) -> Artefacts:
    """Figures and report of a structure run (the CLI's run folder and the app's)."""
    return Artefacts(
        figures={"delta_correlation": plots.delta_correlation_figure(result.table),
                 "pca_path": plots.pca_path_figure(result["pca"]),
                 "cosine_similarity": plots.similarity_grid_figure(similarity_by_component(result))},
        markdown=structure_report(result, report.header("Weight structure", loaded, None)))


def headline(result: Result) -> str:
    """Which components' delta correlation departs from the shuffled control, in one line."""
    ordered = ordered_components(result.table)
    if len(ordered):
        return ("Layer order departs from the layer-shuffled control (|order_z| > 3) for: "
                + ", ".join(ordered["component"]))
    return "No component's delta correlation departs from the layer-shuffled control (|order_z| <= 3)."


def structure_work(config: StructureConfig, shape: work.Shape) -> float:
    """Each component's Gram matrix over the layers (every weight multiplied by one per layer: about
    2 * layers * parameters operations, for the components and the whole layer again) and the shuffled orders."""
    return shape.operations(4.0 * shape.num_layers * shape.parameters + config.shuffles * shape.num_layers ** 3)


EXPERIMENT = Experiment(
    name="structure", title="Weight structure",
    summary="delta correlation vs null and shuffled control, PCA, cosine similarity (SPEC section 3)",
    description=__doc__, config=StructureConfig, run=run_structure, artefacts=structure_artefacts,
    uses_eval=False, columns=("component", "delta_corr", "null_corr", "shuffled_mean", "shuffled_std", "order_z"),
    headline=headline, work=structure_work,
    study=StudyRole(order=3, quick={"shuffles": 1000}, findings=(findings.delta_correlation,)))
