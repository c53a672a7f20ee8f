"""Loss curves: validation loss against steps and against training seconds, one figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure


def curves_figure(history: pd.DataFrame, label_col: str = "config") -> Figure:
    """Mean validation loss per `label_col` (band: +- 1 sd over seeds when there are several)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_steps, ax_time = fig.subplots(1, 2)
    if label_col not in history:
        history = history.assign(**{label_col: "run"})
    for label, runs in history.groupby(label_col, sort=False):
        by_step = runs.groupby("step").agg(val=("val_loss", "mean"), sd=("val_loss", "std"),
                                           seconds=("train_seconds", "mean")).reset_index()
        sd = by_step["sd"].fillna(0)
        ax_steps.plot(by_step["step"], by_step["val"], label=label)
        ax_steps.fill_between(by_step["step"], by_step["val"] - sd, by_step["val"] + sd, alpha=0.2)
        ax_time.plot(by_step["seconds"], by_step["val"], label=label)
        ax_time.fill_between(by_step["seconds"], by_step["val"] - sd, by_step["val"] + sd, alpha=0.2)
    ax_steps.set(xlabel="step", ylabel="validation loss (nats/token)", title="vs steps")
    ax_time.set(xlabel="training seconds (eval excluded)", ylabel="validation loss (nats/token)",
                title="vs wall-clock")
    for ax in (ax_steps, ax_time):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def save_curves(history: pd.DataFrame, path: Path, label_col: str = "config") -> Path:
    curves_figure(history, label_col).savefig(path, dpi=100)
    return path
