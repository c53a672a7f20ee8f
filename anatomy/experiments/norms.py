"""Frobenius norm of every layer's matrices: the smallest complete experiment, and the Model tab's table.

Weights only (no evaluation text). One row per layer, one column per component; a component a layer lacks
(in a hybrid stack) is left empty. `--relative` divides each norm by the square root of the matrix's size:
the root mean square of its entries, comparable across components of different shapes.
"""

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .. import plots, report, work
from ..evaluate import EvalSet
from ..experiment import Artefacts, Experiment, Result
from ..layers import LayerAdapter
from ..load import LoadedModel
from ..options import LAYERS, option
from ..progress import ProgressCallback, track


@dataclass
class NormsConfig:
    """`relative` puts matrices of different shapes on one scale (the root mean square of their entries)."""

    layers: str | None = option(None, "0-based layers, e.g. 0,3,5-8 (all: every layer)", label="Layers", codec=LAYERS)
    relative: bool = option(False, "divide by the square root of the matrix size", label="Relative norms")


@torch.no_grad()
def run_norms(model: nn.Module, eval_set: EvalSet | None = None, config: NormsConfig | None = None,
              progress: ProgressCallback | None = None) -> Result:
    """One row per chosen layer: its module's class, then each component's norm (no `eval_set`: weights only)."""
    config = config or NormsConfig()
    adapter = LayerAdapter(model)
    rows = [{"layer": layer, "module": type(adapter.layers[layer]).__name__,
             **{ref.component: float(ref.weight.float().norm()) / (ref.weight.numel() ** 0.5 if config.relative else 1)
                for ref in adapter.layer_components(layer)}}
            for layer in track(adapter.resolve_layers(config.layers), "norms", progress)]
    return Result("norms", pd.DataFrame(rows))


def by_matrix(result: Result) -> pd.DataFrame:
    """The table long: one row per (layer, component) matrix, for the figure and the headline."""
    return result.table.melt(["layer", "module"], var_name="component", value_name="norm").dropna()


def headline(result: Result) -> str:
    """The largest and the smallest matrix, in one line."""
    rows = by_matrix(result)
    top, low = rows.loc[rows["norm"].idxmax()], rows.loc[rows["norm"].idxmin()]
    return (f"{len(rows)} matrices: the largest norm is layers.{top.layer}.{top.component} ({top.norm:.4g}), "
            f"the smallest layers.{low.layer}.{low.component} ({low.norm:.4g}).")


def norms_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet | None, config: NormsConfig) -> Artefacts:
    """The norms by depth, one line per component (legend beside the axes, off the lines), and the table."""
    unit = "Frobenius norm / sqrt(size)" if config.relative else "Frobenius norm"
    figure = plots.line_figure(by_matrix(result), "layer", "norm", "component", title="Norm by layer", ylabel=unit)
    figure.axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return Artefacts({"norms": figure}, "\n".join([report.header("Norms", loaded, None), f"## {unit} by layer", "",
                                                   f"- {headline(result)}", "", report.markdown_table(result.table)]))


def norms_work(config: NormsConfig, shape: work.Shape) -> float:
    """Every weight of the chosen layers read once: a square and an add each."""
    return shape.operations(2.0 * shape.parameters * len(shape.layers(config.layers)) / max(shape.num_layers, 1))


EXPERIMENT = Experiment(name="norms", title="Norms", summary="Frobenius norm of every matrix by layer",
                        description=__doc__, config=NormsConfig, run=run_norms, artefacts=norms_artefacts,
                        uses_eval=False, headline=headline, work=norms_work)
