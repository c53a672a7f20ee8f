"""Spectral dynamics during training: stable rank and power-law alpha per layer and component.

Every K steps the trainer hands the model to a `SpectralLog`, which measures the 7 matrices of
each grown layer with the shared `anatomy.spectra` code. `heatmaps()` draws depth (layer) by
time (step) maps per component, so a wave of compression moving through depth would show as a
diagonal band. Layers not yet grown are blank.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure

from anatomy.layers import COMPONENTS
from anatomy.spectra import analyze_matrices


class SpectralLog:
    """Collects one row per (step, layer, component); `table()` is a DataFrame of them."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    @torch.no_grad()
    def __call__(self, step: int, model) -> None:
        names, mats = [], []
        for layer in model.model.active_layers:
            block = model.model.layers[layer]
            for comp in COMPONENTS:
                names.append((layer, comp))
                mats.append(block.get_submodule(comp).weight)
        for (layer, comp), stats in zip(names, analyze_matrices(mats)):
            self.rows.append({"step": step, "layer": layer, "component": comp,
                              "stable_rank": stats["stable_rank"], "alpha": stats["alpha"]})

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["step", "layer", "component", "stable_rank", "alpha"])


def heatmaps(table: pd.DataFrame, n_layers: int, title: str = "") -> Figure:
    """Two rows (stable rank, alpha) x 7 components of layer-by-step heatmaps; blank = not grown."""
    fig = Figure(figsize=(3.0 * len(COMPONENTS), 6.5), layout="constrained")
    axes = fig.subplots(2, len(COMPONENTS), squeeze=False)
    steps = sorted(table["step"].unique()) if len(table) else [0]
    for r, metric in enumerate(("stable_rank", "alpha")):
        for c, comp in enumerate(COMPONENTS):
            ax = axes[r][c]
            sub = table[table["component"] == comp]
            grid = (sub.pivot_table(index="layer", columns="step", values=metric)
                    .reindex(index=range(n_layers), columns=steps))
            im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", origin="lower", cmap="viridis",
                           extent=(-0.5, len(steps) - 0.5, -0.5, n_layers - 0.5), interpolation="nearest")
            ticks = list(range(0, len(steps), max(1, len(steps) // 4)))
            ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
            ax.set_title(f"{comp}\n{metric}", fontsize=8)
            if c == 0:
                ax.set_ylabel("layer (0-based)")
            if r == 1:
                ax.set_xlabel("step")
            fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def save_heatmaps(table: pd.DataFrame, n_layers: int, path: Path, title: str = "") -> Path:
    heatmaps(table, n_layers, title).savefig(path, dpi=90)
    return path
