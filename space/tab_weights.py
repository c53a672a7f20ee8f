"""Weight-space tab: structure, spectra and predictability of the weights (SPEC sections 2, 3 and 9).

Each sub-tab calls the experiment's `run_x` and shows its `x_artefacts`, the run folder the CLI writes.
"""

from __future__ import annotations

import gradio as gr

from anatomy.experiments.predictability import PredictabilityConfig, predictability_artefacts, run_predictability
from anatomy.experiments.spectral import SpectralConfig, component_summary, run_spectral, spectral_artefacts
from anatomy.experiments.structure import StructureConfig, run_structure, structure_artefacts

from . import jobs
from .common import Shared, model_job, result_components, run_outputs, stop_button, wire_job
from .gpu import gpu


@gpu(duration=120)
@jobs.user_errors
def structure(spec: str, shuffles: float, seed: float, state: dict | None, request: gr.Request,
              oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    with model_job(spec, request, progress, token=oauth_token) as job:
        config = StructureConfig(shuffles=int(shuffles), seed=int(seed))
        df = run_structure(job.loaded.model, None, config, progress=job.progress)
    return run_outputs(request, "structure", job, config, df, df, structure_artefacts(df, job.loaded), state)


@gpu(duration=120)
@jobs.user_errors
def spectral(spec: str, min_tail: float, state: dict | None, request: gr.Request,
             oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    with model_job(spec, request, progress, token=oauth_token) as job:
        config = SpectralConfig(min_tail=int(min_tail))
        df = run_spectral(job.loaded.model, None, config, progress=job.progress)
    return run_outputs(request, "spectral", job, config, df, component_summary(df),
                       spectral_artefacts(df, job.loaded), state)


@gpu(duration=240)
@jobs.user_errors
def predictability(spec: str, n_sentences: float, custom_text: str, max_length: float, positions: float,
                   ridge_alpha: float, multi_count: float, state: dict | None, request: gr.Request,
                   oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        config = PredictabilityConfig(positions=int(positions), ridge_alpha=float(ridge_alpha),
                                      multi_count=int(multi_count))
        df = run_predictability(job.loaded.model, job.eval_set, config, progress=job.progress)
    return run_outputs(request, "predictability", job, config, df, df.attrs["summary"],
                       predictability_artefacts(df, job.loaded, job.eval_set, config), state)


def build(shared: Shared) -> None:
    with gr.Tab("Structure"):
        gr.Markdown("Correlation of consecutive layer deltas beside the -0.5 of independent layers and a "
                    "layer-shuffled control; PCA path of the layers; layer-by-layer cosine similarity.")
        with gr.Row():
            shuffles = gr.Number(200, precision=0, label="Shuffled orders (control)")
            seed = gr.Number(0, precision=0, label="Seed")
        with gr.Row():
            go, stop = gr.Button("Run structure", variant="primary"), stop_button()
        outputs = result_components("structure", ["Delta correlation", "PCA path", "Cosine similarity"])
        wire_job("structure", structure, [shared.model, shuffles, seed], outputs, shared, go, stop)
    with gr.Tab("Spectral"):
        gr.Markdown("Singular values, stable rank and the power-law alpha of every weight matrix, by depth.")
        min_tail = gr.Number(SpectralConfig().min_tail, precision=0, label="Fewest eigenvalues in a power-law tail")
        with gr.Row():
            go, stop = gr.Button("Run spectral", variant="primary"), stop_button()
        outputs = result_components("spectral", ["Depth profiles", "Singular values"])
        wire_job("spectral", spectral, [shared.model, min_tail], outputs, shared, go, stop)
    with gr.Tab("Predictability"):
        gr.Markdown("Ridge regression predicts each layer's weights from the layers before it (R^2, cosine); "
                    "then whole layers are replaced by predictions and the PPL measured.")
        with gr.Row():
            positions = gr.Number(10_000, precision=0, label="Sampled positions")
            ridge_alpha = gr.Number(1.0, label="Ridge alpha")
            multi_count = gr.Number(9, precision=0, label="Layers replaced at once (multi-layer test)")
        with gr.Row():
            go, stop = gr.Button("Run predictability", variant="primary"), stop_button()
        outputs = result_components("predictability", ["R^2 by layer", "PPL with predicted layers"])
        wire_job("predictability", predictability, [*shared.eval_inputs, positions, ridge_alpha, multi_count], outputs,
                 shared, go, stop)
