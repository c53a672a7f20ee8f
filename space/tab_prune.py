"""Pruning tab: remove K layers chosen by alpha, block influence, ablation or last; compare PPL (SPEC section 9).

The same `run_prune`, tables, figure and report as `python -m anatomy prune`. Removal happens inside
`layer_stack`, which puts the layers back before the model's lock is released. Saving the pruned model
(the CLI's `--save`) is left to the CLI: a model folder is too large for a download button.
"""

from __future__ import annotations

import gradio as gr

from anatomy.cli import parse_ints
from anatomy.errors import AnatomyError
from anatomy.experiments.importance import ImportanceConfig
from anatomy.experiments.manipulate import read_importance
from anatomy.experiments.prune import CRITERIA, PruneConfig, prune_artefacts, run_prune
from anatomy.interventions import ABLATION_MODES

from . import jobs, previous
from .common import Shared, model_job, result_components, run_outputs, stop_button, wire_job
from .gpu import gpu

FROM_RUN = "Block influence and D of my latest importance run"
COMPUTE = "An importance map computed now"
SOURCES = (COMPUTE, FROM_RUN)


@gpu(duration=240)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, ks: str, criteria: list[str],
        ablation: str, source: str, state: dict | None, request: gr.Request,
        oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    """Rank the layers by each criterion, remove the K lowest, measure PPL; the layers come back after each."""
    if not criteria:
        raise AnatomyError("Choose at least one criterion.")
    importance = read_importance(previous.run_folder(state, "importance", "Importance")) if source == FROM_RUN else None
    if importance is not None:  # the run's own ablation is the one its D measured
        ablation = str(importance["mode"].iloc[0])
    config = PruneConfig(ks=parse_ints(ks, "Layers removed (K)"),
                         criteria=tuple(criteria), importance=ImportanceConfig(mode=ablation))
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        df = run_prune(job.loaded.model, job.eval_set, config, importance, progress=job.progress)
    return run_outputs(request, "prune", job, config, df, df, prune_artefacts(df, job.loaded, job.eval_set), state)


def build(shared: Shared) -> None:
    gr.Markdown("Each criterion ranks the layers once on the intact model; the K it rates least needed leave the "
                "stack (layer_idx renumbered) and the PPL is measured. alpha = highest mean power-law alpha, "
                "block_influence = lowest 1 - cos(in, out), ablation = lowest single-layer D, last = the last K. "
                "To generate with a pruned model, give the Generate tab a plan that leaves those layers out.")
    with gr.Row():
        ks = gr.Textbox("3,6", label="Layers removed (K, one or a list)")
        criteria = gr.CheckboxGroup(list(CRITERIA), value=list(CRITERIA), label="Criteria")
        ablation = gr.Dropdown(list(ABLATION_MODES), value="skip",
                               label="Ablation for the ablation criterion (computed now)")
        source = gr.Radio(list(SOURCES), value=COMPUTE, label="Block influence and ablation D from")
    with gr.Row():
        go, stop = gr.Button("Run pruning", variant="primary"), stop_button()
    outputs = result_components("prune", ["PPL per pruned model"])
    wire_job("prune", run, [*shared.eval_inputs, ks, criteria, ablation, source], outputs, shared, go, stop)
