"""Weight-space tab: structure, spectra and predictability of the weights (SPEC sections 2, 3 and 9), one
sub-tab per experiment of the library."""

from __future__ import annotations

import gradio as gr

from anatomy.experiments import predictability, spectral, structure

from .common import Shared
from .tab import Tab

TABS = {
    "Structure": Tab(structure.EXPERIMENT, go_label="Run structure",
                     plots={"delta_correlation": "Delta correlation", "pca_path": "PCA path",
                            "cosine_similarity": "Cosine similarity"},
                     intro="Correlation of consecutive layer deltas beside the -0.5 of independent layers and a "
                           "layer-shuffled control; PCA path of the layers; layer-by-layer cosine similarity."),
    "Spectral": Tab(spectral.EXPERIMENT, go_label="Run spectral", table=lambda result: result["components"],
                    plots={"depth_profiles": "Depth profiles", "singular_values": "Singular values"},
                    intro="Singular values, stable rank and the power-law alpha of every weight matrix, by depth."),
    "Predictability": Tab(predictability.EXPERIMENT, go_label="Run predictability", gpu_s=240,
                          table=lambda result: result["summary"],
                          plots={"r2_by_layer": "R^2 by layer", "functional": "PPL with predicted layers"},
                          intro="Ridge regression predicts each layer's weights from the layers before it (R^2, "
                                "cosine); then whole layers are replaced by predictions and the PPL measured."),
}


def build(shared: Shared) -> None:
    for label, tab in TABS.items():
        with gr.Tab(label):
            tab.build(shared)
