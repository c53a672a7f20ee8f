"""Figures made from the experiments' DataFrames; the CLI report and the app show the very same figures.

Built with `matplotlib.figure.Figure` (not pyplot) so that concurrent app users never share plot state.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CLASS_COLOURS = {"Redundant": "#4c9a2a", "Minor": "#e0b000", "Important": "#e07000", "Critical": "#c0182a",
                 "Anti-layer candidate": "#2a6fc0", "Untouched": "#999999"}


def importance_figure(df: pd.DataFrame, title: str = "Layer importance") -> Figure:
    """Degradation per layer on a log-symmetric axis, bars coloured by class, 95% interval whiskers."""
    fig = Figure(figsize=(max(6.0, 0.32 * len(df) + 2), 4.2))
    ax = fig.add_subplot()
    colours = [CLASS_COLOURS.get(c, "#777777") for c in df["class"]]
    d = df["degradation_pct"].to_numpy(dtype=float)
    err = np.vstack([d - df["degradation_low"].to_numpy(dtype=float),
                     df["degradation_high"].to_numpy(dtype=float) - d]).clip(min=0)
    ax.bar(df["layer"], d, color=colours, yerr=err, capsize=2, ecolor="#333333", linewidth=0)
    ax.set_yscale("symlog", linthresh=10)
    ax.axhline(0, color="black", linewidth=0.8)
    for threshold in (10, 30, 100):
        ax.axhline(threshold, color="#bbbbbb", linewidth=0.6, linestyle="--")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("degradation D (%)")
    ax.set_xticks(df["layer"])
    ax.tick_params(axis="x", labelsize=7)
    mode = df["mode"].iloc[0] if "mode" in df else ""
    ax.set_title(f"{title} ({mode})" if mode else title)
    handles = [matplotlib.patches.Patch(color=CLASS_COLOURS[c], label=c)
               for c in CLASS_COLOURS if c in set(df["class"])]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def line_figure(df: pd.DataFrame, x: str, y: str, group: str | None = None, *, logy: bool = False,
                title: str = "", xlabel: str | None = None, ylabel: str | None = None,
                hlines: dict[str, float] | None = None) -> Figure:
    """Generic line plot of a long table (one line per `group` value), optional labelled horizontal lines."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    groups = df.groupby(group, sort=False) if group else [(None, df)]
    for key, part in groups:
        ax.plot(part[x], part[y], marker="o", markersize=3, label=None if key is None else str(key))
    for label, value in (hlines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=0.8, color="#555555")
        ax.annotate(label, (ax.get_xlim()[0], value), fontsize=7, va="bottom")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    if group:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: np.ndarray, *, title: str, xlabel: str, ylabel: str,
                   xticks: list | None = None, yticks: list | None = None, cmap: str = "viridis") -> Figure:
    """A labelled heatmap with a colour bar (similarity matrices, depth-by-time maps)."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, origin="lower")
    fig.colorbar(image, ax=ax)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, fontsize=7)
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), yticks, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def recovery_figure(curves: pd.DataFrame, baseline: float, thresholds=(2.0, 1.5, 1.1),
                    title: str = "Recovery after noise") -> Figure:
    """PPL against fine-tune step, one line per layer, log PPL axis; the baseline and each threshold drawn."""
    lines = {"baseline": baseline, **{f"{t:g}x baseline": t * baseline for t in thresholds}}
    fig = line_figure(curves.assign(layer=curves["layer"].map(lambda i: f"layers.{i}")), "step", "ppl", "layer",
                      logy=True, title=title, xlabel="fine-tune step", ylabel="PPL (log scale)", hlines=lines)
    fig.axes[0].legend(fontsize=6, ncol=3)
    return fig
