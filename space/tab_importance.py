"""Importance tab: the layer importance map (SPEC section 1) by the library's `run_importance`."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from anatomy.experiments.importance import ImportanceConfig, importance_artefacts, run_importance
from anatomy.interventions import ABLATION_MODES, BOUNDARY_CONVENTIONS
from anatomy.layers import LayerAdapter, parse_layers

from . import jobs
from .common import Shared, model_job, shown, stop_button, wire_stop
from .gpu import gpu


@gpu(duration=180)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, mode: str, boundary: str,
        layers: str, state: dict | None, request: gr.Request, oauth_token: gr.OAuthToken | None = None,
        progress=gr.Progress()
        ) -> tuple[Figure, pd.DataFrame, str, str, dict]:
    """Ablate each chosen layer, measure D, classify; write the same run folder as the CLI."""
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        n = LayerAdapter(job.loaded.model).num_layers
        config = ImportanceConfig(mode=mode, boundary=boundary, layers=parse_layers(layers, n))
        df = run_importance(job.loaded.model, job.eval_set, config, progress=job.progress)
    artefacts = importance_artefacts(df, job.loaded, job.eval_set)
    archive = jobs.save_run(request, "importance", job.loaded, job.eval_set, config, artefacts, df.attrs["timings"])
    base = df.attrs["baseline"]
    counts = df["class"].value_counts()
    headline = (f"Baseline PPL {base['ppl']:.3f} ({base['ppl_low']:.3f}-{base['ppl_high']:.3f}); "
                + ", ".join(f"{c} {counts[c]}" for c in counts.index) + f"; {len(job.eval_set.texts)} texts.")
    return (artefacts.figures["importance"], shown(df.drop(columns=["mode"])), headline, str(archive),
            jobs.remember(state, "importance", df, archive))


def build(shared: Shared) -> None:
    gr.Markdown("Each layer in turn is ablated, the perplexity measured, and the layer classed by its "
                "degradation D: Redundant < 10% <= Minor < 30% <= Important < 100% <= Critical.")
    with gr.Row():
        mode = gr.Dropdown(list(ABLATION_MODES), value="neighbour-mean", label="Ablation")
        boundary = gr.Dropdown(list(BOUNDARY_CONVENTIONS), value="one-neighbour",
                               label="First/last layer (one neighbour, or untouched as in the study)")
        layers = gr.Textbox("all", label="Layers (0-based, e.g. 0,3,5-8 or all)")
    with gr.Row():
        go = gr.Button("Run importance map", variant="primary")
        stop = stop_button()
    headline = gr.Markdown(elem_id="importance-headline")
    plot = gr.Plot(label="Degradation per layer", elem_id="importance-plot")
    table = gr.Dataframe(label="Importance table", interactive=False)
    download = gr.DownloadButton("Download the run folder (.zip)")
    event = go.click(run, [*shared.eval_inputs, mode, boundary, layers, shared.state],
                     [plot, table, headline, download, shared.state], api_name="importance",
                     concurrency_id="model")
    wire_stop(stop, [event], "importance")
