"""Manipulation tab: zero / clone / blend / low-rank / scale the redundant layers all at once (SPEC section 4).

The same `run_manipulate`, figure and report as `python -m anatomy manipulate`; the layer set comes from the
user's latest importance run (the CLI's `--importance`), an importance map computed now, or typed layers.
"""

from __future__ import annotations

import gradio as gr

from anatomy.cli import parse_floats
from anatomy.errors import AnatomyError
from anatomy.experiments.manipulate import (STRATEGIES, ManipulateConfig, manipulate_artefacts, read_importance,
                                            run_manipulate)
from anatomy.layers import LayerAdapter, parse_layers

from . import jobs, previous
from .common import Shared, model_job, result_components, run_outputs, stop_button, wire_job
from .gpu import gpu

FROM_RUN = "Redundant layers of my latest importance run"
COMPUTE = "Redundant layers of an importance map computed now"
GIVEN = "The layers typed here"
SOURCES = (FROM_RUN, COMPUTE, GIVEN)


@gpu(duration=240)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, source: str, layers: str,
        threshold: float, strategies: list[str], alphas: str, rank: float, state: dict | None,
        request: gr.Request, oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    """Change every chosen layer at once with each strategy and measure PPL; the weights come back after each."""
    if not strategies:
        raise AnatomyError("Choose at least one strategy.")
    importance = read_importance(previous.run_folder(state, "importance", "Importance")) if source == FROM_RUN else None
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        n = LayerAdapter(job.loaded.model).num_layers
        config = ManipulateConfig(layers=parse_layers(layers, n) if source == GIVEN else None,
                                  redundant_threshold=float(threshold), strategies=tuple(strategies),
                                  alphas=parse_floats(alphas, None, "Scale factors"),
                                  rank=int(rank) if rank else None)
        df = run_manipulate(job.loaded.model, job.eval_set, config, importance, progress=job.progress)
    return run_outputs(request, "manipulate", job, config, df, df, manipulate_artefacts(df, job.loaded, job.eval_set),
                       state)


def build(shared: Shared) -> None:
    gr.Markdown("All chosen layers are changed together by each strategy in turn (restored in between): zero; "
                "clone or blend the nearest layers outside the set; low-rank (their singular vectors, the "
                "layer's own singular values); scale by each factor. Compare generations in the Generate tab.")
    with gr.Row():
        source = gr.Radio(list(SOURCES), value=COMPUTE, label="Layer set")
        layers = gr.Textbox("10-12", label="Layers (0-based; used with 'typed here')")
        threshold = gr.Number(10.0, label="Redundant below D (%)")
    with gr.Row():
        strategies = gr.CheckboxGroup(list(STRATEGIES), value=list(STRATEGIES), label="Strategies")
        alphas = gr.Textbox("0,0.1,0.3,0.5,0.7,0.9", label="Scale factors")
        rank = gr.Number(0, precision=0, label="Low-rank: top directions kept (0: all)")
    with gr.Row():
        go, stop = gr.Button("Run manipulation", variant="primary"), stop_button()
    outputs = result_components("manipulate", ["PPL per strategy"])
    wire_job("manipulate", run, [*shared.eval_inputs, source, layers, threshold, strategies, alphas, rank], outputs,
             shared, go, stop)
