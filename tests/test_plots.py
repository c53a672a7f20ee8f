"""The figures read right: titles fit, counts get integer ticks, log axes plain numbers, colour scales show the
values, legends and colour bars say what they mean (each checked on the figure object, after drawing it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from anatomy import plots


def drawn(fig):
    """Lay the figure out as savefig does (an Agg canvas) and return its renderer, for measuring."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_a_long_title_is_wrapped_inside_the_figure():
    df = pd.DataFrame({"block_size": [2, 4], "ppl": [20.0, 30.0]})
    title = "PPL by middle-block size: " + "an-organisation-with-a-long-name/and-a-longer-model-name-v2-instruct" * 2
    fig = plots.line_figure(df, "block_size", "ppl", title=title)
    renderer = drawn(fig)
    box = fig.axes[0].title.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and "\n" in fig.axes[0].get_title()


def test_one_block_size_gives_one_integer_tick_and_a_log_axis_plain_numbers():
    df = pd.DataFrame({"block_size": [4, 4], "variant": ["skip", "reverse"], "ppl": [12.0, 14.0]})
    fig = plots.line_figure(df, "block_size", "ppl", "variant", logy=True)
    drawn(fig)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [4.0]  # not 3.80 ... 4.20
    labels = [t.get_text() for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels() if t.get_text()]
    assert labels and not any("10^" in label or "times" in label for label in labels), labels
    steps = plots.line_figure(pd.DataFrame({"step": [0, 10, 20, 30], "ppl": [1.0, 2, 3, 4]}), "step", "ppl")
    drawn(steps)
    assert all(float(t).is_integer() for t in steps.axes[0].get_xticks())


def test_similarity_heatmaps_scale_to_the_values_between_layers():
    m = np.array([[1.0, 0.05, 0.1], [0.05, 1.0, 0.2], [0.1, 0.2, 1.0]])
    fig = plots.similarity_grid_figure({"q_proj": m, "k_proj": m * 0.5 + np.eye(3) * 0.5})
    image = fig.axes[0].images[0]
    assert image.get_clim() == (0.025, 0.2)  # not 0-1, where everything off the diagonal would be black
    assert any(a.get_ylabel().startswith("cosine similarity") for a in fig.axes)


def test_pca_axes_and_spectra_say_what_they_show():
    pca = pd.DataFrame({"component": ["q_proj"] * 3, "layer": [0, 1, 2], "pc1": [0.0, 1, 2], "pc2": [1.0, 0, 1]})
    fig = plots.pca_path_figure(pca)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("PC1", "PC2")
    sv = pd.DataFrame({"component": ["q_proj"] * 6, "layer": [0, 0, 1, 1, 2, 2], "index": [0, 1] * 3,
                       "singular_value": [3.0, 1, 2, 1, 4, 2]})
    spectra = plots.singular_values_figure(sv)
    assert any("layer" in a.get_ylabel() for a in spectra.axes[1:])  # the depth colours have a colour bar
    depth = pd.DataFrame({"component": ["q_proj"] * 3, "layer": [0, 1, 2], "alpha": [3.0, 4, 5],
                          "stable_rank": [10.0, 12, 11]})
    labels = fig_labels(plots.spectral_depth_figure(depth))
    assert any("heavy-tailed" in label for label in labels)  # the grey band is in the legend


def fig_labels(fig) -> list[str]:
    return [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]


def test_the_class_lines_are_labelled_and_the_structure_legend_sits_below_the_bars():
    df = pd.DataFrame({"layer": [0, 1, 2], "degradation_pct": [5.0, 40, 150], "degradation_low": [4.0, 30, 120],
                       "degradation_high": [6.0, 50, 180], "class": ["Redundant", "Important", "Critical"]})
    texts = [t.get_text() for t in plots.importance_figure(df).axes[0].texts]
    assert {"10%: Redundant | Minor", "30%: Minor | Important", "100%: Important | Critical"} <= set(texts)
    corr = pd.DataFrame({"component": ["q_proj", "k_proj"], "delta_corr": [-0.4, -0.5], "shuffled_mean": [-0.5, -0.5],
                         "shuffled_std": [0.02, 0.02]})
    fig = plots.delta_correlation_figure(corr)
    renderer = drawn(fig)
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0 + 1
