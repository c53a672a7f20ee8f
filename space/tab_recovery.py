"""Recovery tab: noise one layer, fine-tune it alone, watch the PPL come back (SPEC section 5).

A long job (minutes per layer on CPU), so it is refused on ZeroGPU, whose daily quota is minutes.
"""

from __future__ import annotations

import gradio as gr

from anatomy.experiments.recovery import HELD_OUT, RecoveryConfig, recovery_artefacts, run_recovery
from anatomy.layers import LayerAdapter, parse_layers
from anatomy.train_layer import training_rows

from . import jobs
from .common import Shared, model_job, shown, stop_button, wire_stop
from .gpu import gpu, refuse_on_zero_gpu


@gpu(duration=300)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, layers: str, steps: float,
        eval_every: float, sigma: float, lr: float, seed: float, state: dict | None, request: gr.Request,
        oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    refuse_on_zero_gpu("Recovery")
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        config = RecoveryConfig(layers=parse_layers(layers, LayerAdapter(job.loaded.model).num_layers),
                                steps=int(steps), eval_every=int(eval_every), sigma=float(sigma), lr=float(lr),
                                seed=int(seed))
        config.validate()
        rows = training_rows(job.loaded.tokenizer, config.train_seq_len, exclude=job.eval_set.texts)
        df = run_recovery(job.loaded.model, job.eval_set, config, progress=job.progress, train_rows=rows)
    artefacts = recovery_artefacts(df, job.loaded, job.eval_set, config, HELD_OUT, len(rows))
    archive = jobs.save_run(request, "recovery", job.loaded, job.eval_set, config, artefacts, df.attrs["timings"])
    return (artefacts.figures["recovery"], shown(df), artefacts.markdown, str(archive),
            jobs.remember(state, "recovery", df, archive))


def build(shared: Shared) -> None:
    gr.Markdown("Gaussian noise (sigma x std(W)) on each matrix of a layer, every other parameter frozen, AdamW "
                "on held-out modern English, the standard library's docstrings (never the evaluation text), PPL "
                "every few steps. Minutes per layer on a CPU; refused on ZeroGPU Spaces.")
    with gr.Row():
        layers = gr.Textbox("11", label="Layers (0-based)")
        steps = gr.Number(50, precision=0, label="Steps (study: 200)")
        eval_every = gr.Number(10, precision=0, label="Evaluate every")
        sigma = gr.Number(0.5, label="Noise sigma (x std(W))")
        lr = gr.Number(1e-4, label="Learning rate")
        seed = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        go, stop = gr.Button("Run recovery", variant="primary"), stop_button()
    plot = gr.Plot(label="PPL during recovery")
    table = gr.Dataframe(label="Recovery table", interactive=False)
    with gr.Accordion("Report (report.md of the run folder)", open=False):
        markdown = gr.Markdown()
    download = gr.DownloadButton("Download the run folder (.zip)")
    event = go.click(run, [*shared.eval_inputs, layers, steps, eval_every, sigma, lr, seed, shared.state],
                     [plot, table, markdown, download, shared.state], api_name="recovery", concurrency_id="model")
    wire_stop(stop, [event], "recovery")
