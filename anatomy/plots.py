"""Figures made from the experiments' DataFrames; the CLI report and the app show the very same figures.

Built on `matplotlib.figure.Figure` (not pyplot) so that concurrent app users never share plot state;
matplotlib's text layout (its mathtext parser above all) is still shared and not thread-safe, and the app
lays out and renders figures from several threads at once (gradio renders them in its own workers), so
each figure here comes from `figure()`, whose layout and savefig take one process-wide lock.
"""

from __future__ import annotations

import functools
import textwrap
import threading
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_RENDER_LOCK = threading.RLock()


def _locked(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _RENDER_LOCK:
            return method(*args, **kwargs)
    return wrapper


def figure(**kwargs) -> Figure:
    """A plain matplotlib Figure (what gradio's Plot expects) whose tight_layout and savefig hold one
    process-wide lock, so figures laid out and rendered in different threads never share the parser at once."""
    fig = Figure(**kwargs)
    fig.tight_layout = _locked(fig.tight_layout)
    fig.savefig = _locked(fig.savefig)
    return fig


def fitted_title(target, text: str, width_in: float, size: float = 12.0) -> None:
    """A title (of an axes, or a figure's suptitle) wrapped to the figure's width, so a long model name is never
    cut off: about 0.62 em per character over the 80% of the width an axes' title is centred on."""
    chars = max(20, int(0.8 * width_in * 72 / (size * 0.62)))
    wrapped = textwrap.fill(text, chars)
    if isinstance(target, Figure):
        target.suptitle(wrapped, fontsize=size)
    else:
        target.set_title(wrapped, fontsize=size)


def plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (12, 20, 30), not 1.2x10^1, major and minor alike."""
    axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))


CLASS_COLOURS = {"Redundant": "#009E73", "Minor": "#F0E442", "Important": "#E69F00", "Critical": "#D55E00",
                 "Anti-layer candidate": "#0072B2", "Untouched": "#999999"}
"""The Okabe-Ito colours, told apart with the common colour-vision deficiencies; warm = harder to lose."""


def importance_figure(df: pd.DataFrame, title: str = "Layer importance") -> Figure:
    """Degradation per layer on a log-symmetric axis, bars coloured by class, 95% interval whiskers."""
    fig = figure(figsize=(max(6.0, 0.32 * len(df) + 2), 4.2))
    ax = fig.add_subplot()
    colours = [CLASS_COLOURS.get(c, "#777777") for c in df["class"]]
    d = df["degradation_pct"].to_numpy(dtype=float)
    err = np.vstack([d - df["degradation_low"].to_numpy(dtype=float),
                     df["degradation_high"].to_numpy(dtype=float) - d]).clip(min=0)
    ax.bar(df["layer"], d, color=colours, yerr=err, capsize=2, ecolor="#333333", linewidth=0)
    ax.set_yscale("symlog", linthresh=10)
    ax.axhline(0, color="black", linewidth=0.8)
    for threshold, name in ((10, "Redundant | Minor"), (30, "Minor | Important"), (100, "Important | Critical")):
        ax.axhline(threshold, color="#bbbbbb", linewidth=0.6, linestyle="--")
        ax.annotate(f"{threshold}%: {name}", (1.0, threshold), xycoords=("axes fraction", "data"), fontsize=6,
                    ha="right", va="bottom", color="#555555")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("degradation D (%)")
    ax.set_xticks(df["layer"])
    ax.tick_params(axis="x", labelsize=7)
    mode = df["mode"].iloc[0] if "mode" in df else ""
    fitted_title(ax, f"{title} ({mode})" if mode else title, fig.get_figwidth())
    handles = [matplotlib.patches.Patch(color=CLASS_COLOURS[c], label=c)
               for c in CLASS_COLOURS if c in set(df["class"])]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def line_figure(df: pd.DataFrame, x: str, y: str, group: str | None = None, *, logy: bool = False,
                title: str = "", xlabel: str | None = None, ylabel: str | None = None,
                hlines: dict[str, float] | None = None) -> Figure:
    """Generic line plot of a long table (one line per `group` value), optional labelled horizontal lines."""
    fig = figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    groups = df.groupby(group, sort=False) if group else [(None, df)]
    for key, part in groups:
        ax.plot(part[x], part[y], marker="o", markersize=3, label=None if key is None else str(key))
    for label, value in (hlines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=0.8, color="#555555")
        ax.annotate(label, (ax.get_xlim()[0], value), fontsize=7, va="bottom")
    if logy:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    xs = pd.to_numeric(df[x], errors="coerce").dropna()
    if len(xs) and (xs == xs.round()).all():  # counts (steps, layers, block sizes): integer ticks only
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if xs.nunique() == 1:  # one value: one tick, not 3.80-4.20
            ax.set_xticks([float(xs.iloc[0])])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    fitted_title(ax, title, fig.get_figwidth())
    if group:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def recovery_figure(curves: pd.DataFrame, baseline: float, thresholds=(2.0, 1.5, 1.1),
                    title: str = "Recovery after noise") -> Figure:
    """PPL against fine-tune step, one line per layer coloured by depth (a qualitative palette repeats after
    10 layers), log PPL axis; the baseline and each threshold drawn."""
    lines = {"baseline": baseline, **{f"{t:g}x baseline": t * baseline for t in thresholds}}
    fig = line_figure(curves.assign(layer=curves["layer"].map(lambda i: f"layers.{i}")), "step", "ppl", "layer",
                      logy=True, title=title, xlabel="fine-tune step", ylabel="PPL (log scale)", hlines=lines)
    ax = fig.axes[0]
    depth = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, curves["layer"].nunique()))  # dark = shallow
    for line, colour in zip(ax.get_lines(), depth):  # the layer lines come first, then the thresholds
        line.set_color(colour)
    ax.legend(fontsize=6, ncol=3)
    return fig


def _component_grid(count: int, width: float = 3.2, height: float = 2.8) -> tuple[Figure, list]:
    """A figure with one small axes per component (up to 4 a row)."""
    cols = min(4, max(1, count))
    rows = -(-count // cols)
    fig = figure(figsize=(width * cols, height * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(count)]


def spectral_depth_figure(df: pd.DataFrame, title: str = "Spectral depth profiles") -> Figure:
    """Power-law alpha and stable rank against depth, one line per component (spectral experiment)."""
    fig = figure(figsize=(12, 4.2))
    for i, (column, label) in enumerate((("alpha", "power-law alpha of W^T W tail"), ("stable_rank", "stable rank"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for component, part in df.groupby("component", sort=False):
            ax.plot(part["layer"], part[column], marker="o", markersize=3, label=component)
        if column == "alpha":
            ax.axhspan(2, 6, color="#dddddd", alpha=0.5, linewidth=0,
                       label="alpha 2-6: the heavy-tailed range of well-trained matrices (HT-SR)")
        ax.set_xlabel("layer (0-based)")
        ax.set_ylabel(label)
    fig.axes[0].legend(fontsize=7, ncol=2)
    fitted_title(fig, title, fig.get_figwidth())
    fig.tight_layout()
    return fig


def singular_values_figure(sv: pd.DataFrame, title: str = "Singular values by depth") -> Figure:
    """Log-log singular value spectra per component, coloured from the first (dark) to the last layer (light)."""
    components = list(dict.fromkeys(sv["component"]))
    fig, axes = _component_grid(len(components))
    cmap = matplotlib.colormaps["viridis"]
    last = max(int(sv["layer"].max()), 1)
    for ax, component in zip(axes, components):
        for layer, part in sv[sv["component"] == component].groupby("layer"):
            ax.loglog(part["index"] + 1, part["singular_value"], color=cmap(layer / last), linewidth=0.7)
        ax.set_title(component, fontsize=8)
        ax.set_xlabel("rank", fontsize=7)
    fitted_title(fig, title, fig.get_figwidth())
    fig.tight_layout()
    depth = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, last), cmap)
    fig.colorbar(depth, ax=axes, label="layer (dark: first, light: last)")
    return fig


def delta_correlation_figure(df: pd.DataFrame, title: str = "Consecutive-delta correlation") -> Figure:
    """Measured correlation of consecutive layer deltas per component, beside the shuffled control and -0.5."""
    fig = figure(figsize=(8, 4))
    ax = fig.add_subplot()
    x = np.arange(len(df))
    ax.bar(x - 0.2, df["delta_corr"], width=0.4, label="layer order", color="#2a6fc0")
    ax.bar(x + 0.2, df["shuffled_mean"], width=0.4, yerr=df["shuffled_std"], capsize=3,
           label="layers shuffled (mean, sd)", color="#bbbbbb")
    ax.axhline(-0.5, color="#c0182a", linestyle="--", linewidth=1, label="null -0.5 (independent, equal variance)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, df["component"], rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("mean corr(d_l, d_l+1)")
    fitted_title(ax, title, fig.get_figwidth())
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)  # below the bars
    fig.tight_layout()
    return fig


def pca_path_figure(pca: pd.DataFrame, title: str = "PCA path through layer order") -> Figure:
    """Each component's layers projected on their first two principal components, joined in layer order."""
    components = list(dict.fromkeys(pca["component"]))
    fig, axes = _component_grid(len(components))
    for ax, component in zip(axes, components):
        part = pca[pca["component"] == component]
        ax.plot(part["pc1"], part["pc2"], color="#999999", linewidth=0.7)
        points = ax.scatter(part["pc1"], part["pc2"], c=part["layer"], cmap="viridis", s=14, zorder=3)
        for _, row in part.iloc[[0, -1]].iterrows():
            ax.annotate(str(int(row["layer"])), (row["pc1"], row["pc2"]), fontsize=7)
        ax.set_title(component, fontsize=8)
        ax.set_xlabel("PC1", fontsize=7)
        ax.set_ylabel("PC2", fontsize=7)
    fig.colorbar(points, ax=axes, label="layer")
    fitted_title(fig, title, fig.get_figwidth())
    return fig


def similarity_grid_figure(matrices: dict[str, np.ndarray], title: str = "Layer-by-layer cosine similarity") -> Figure:
    """One layer x layer cosine-similarity heatmap per component, on a shared colour scale spanning the values
    between different layers (the diagonal, always 1, saturates): on a 0-1 scale weights of similarity near 0
    would all be black."""
    fig, axes = _component_grid(len(matrices))
    between = np.concatenate([m[~np.eye(len(m), dtype=bool)] for m in matrices.values()])
    low, high = (float(between.min()), float(between.max())) if between.size else (0.0, 1.0)
    for ax, (component, matrix) in zip(axes, matrices.items()):
        image = ax.imshow(matrix, origin="lower", cmap="magma", vmin=low, vmax=max(high, low + 1e-6))
        ax.set_title(component, fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
    fig.colorbar(image, ax=axes, label="cosine similarity (between layers)")
    fitted_title(fig, title, fig.get_figwidth())
    return fig


def predictability_figure(df: pd.DataFrame, title: str = "Weight predictability") -> Figure:
    """Ridge R^2 per target layer and component (solid), and beside it, dashed in the same colour, the R^2 of
    the weight distribution (the same fit on sorted weights): the two readings of "predictable" side by side,
    so a high dashed line over a low solid one shows at a glance that the scale is predictable, not the weights.
    The axis is cut at -1: R^2 has no lower bound."""
    fig = line_figure(df, "layer", "r2", "component", title=title, xlabel="target layer (0-based)",
                      ylabel="R^2 (solid: predicted weights)", hlines={"R^2 = 0": 0.0})
    ax = fig.axes[0]
    if "r2_distribution" in df:
        groups = df.groupby("component", sort=False)
        for line, (_, part) in zip(ax.get_lines()[:groups.ngroups], groups):
            ax.plot(part["layer"], part["r2_distribution"], linestyle="--", linewidth=0.9, color=line.get_color())
        ax.plot([], [], linestyle="--", color="#555555", label="dashed: R^2 of the weight distribution")
        ax.legend(fontsize=7, ncol=2)
    ax.set_ylim(max(-1.0, float(df["r2"].min()) - 0.05), 1.02)
    return fig


def ppl_rows_figure(df: pd.DataFrame, label: str, title: str, baseline: float | None = None) -> Figure:
    """One horizontal bar per row (strategy, criterion...) with its PPL and 95% interval, log scale."""
    fig = figure(figsize=(7, 0.35 * len(df) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(df))
    ppl = df["ppl"].to_numpy(dtype=float)
    err = np.vstack([ppl - df["ppl_low"].to_numpy(dtype=float), df["ppl_high"].to_numpy(dtype=float) - ppl])
    ax.barh(y, ppl, xerr=np.nan_to_num(err.clip(min=0), posinf=0), color="#2a6fc0", capsize=2)
    if baseline is not None:
        ax.axvline(baseline, color="#c0182a", linestyle="--", linewidth=1, label=f"baseline {baseline:.2f}")
        ax.legend(fontsize=7)
    ax.set_yticks(y, df[label], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("PPL (log scale, 95% interval)")
    fitted_title(ax, title, fig.get_figwidth())
    fig.tight_layout()
    return fig


def painters_figures(df: pd.DataFrame, model_name: str = "") -> dict[str, Figure]:
    """Painters: PPL and decode latency against the number of middle layers affected, one line per variant,
    the unchanged model as a dashed line (user plans, block size 0, are left out)."""
    base = df[df["variant"] == "baseline"].iloc[0]
    sweep = df[df["block_size"] > 0]
    suffix = f": {model_name}" if model_name else ""
    return {
        "painters_ppl": line_figure(sweep, "block_size", "ppl", "variant", logy=True,
                                    title=f"PPL by middle-block size{suffix}", xlabel="middle layers affected",
                                    ylabel="PPL (log)", hlines={"baseline": float(base["ppl"])}),
        "painters_latency": line_figure(sweep, "block_size", "decode_ms_per_token", "variant",
                                        title=f"Decode latency by middle-block size{suffix}",
                                        xlabel="middle layers affected", ylabel="ms per generated token",
                                        hlines={"baseline": float(base["baseline_decode_ms_per_token"])}),
    }


def budget_figure(df: pd.DataFrame, b_max: int, title: str = "Training budget") -> Figure:
    """Fine-tune steps per layer, bars coloured by importance class, B_max drawn for scale."""
    fig = figure(figsize=(max(6.0, 0.32 * len(df) + 2), 4.2))
    ax = fig.add_subplot()
    ax.bar(df["layer"], df["steps"], color=[CLASS_COLOURS.get(c, "#777777") for c in df["class"]], linewidth=0)
    ax.axhline(b_max, color="#555555", linewidth=0.8, linestyle="--")
    ax.annotate(f"B_max {b_max}", (df["layer"].min(), b_max), fontsize=7, va="bottom")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("fine-tune steps")
    ax.set_xticks(df["layer"])
    ax.tick_params(axis="x", labelsize=7)
    fitted_title(ax, title, fig.get_figwidth())
    handles = [matplotlib.patches.Patch(color=CLASS_COLOURS[c], label=c)
               for c in CLASS_COLOURS if c in set(df["class"])]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
