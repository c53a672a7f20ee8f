"""Generate tab: the original and the altered model side by side, same prompt and seed, differing tokens marked.

It runs the library's `generate` experiment (`anatomy.experiments.generate.side_by_side_of`, what
`python -m anatomy generate` runs) and keeps its own layout: the two sides next to each other per decoding
mode, not the plots-and-table layout of the other tabs. One dropdown chooses an intervention or a layer plan;
with "plan", the layers box holds the plan.
"""

from __future__ import annotations

import gradio as gr

from anatomy.errors import AnatomyError
from anatomy.experiments.generate import EXPERIMENT, GenerateConfig, side_by_side_of
from anatomy.generate import DIFFERS, MODES, SIDES
from anatomy.interventions import INTERVENTION_KINDS
from anatomy.options import build_config, params

from . import jobs, limits
from .access import public_mode
from .common import Shared, model_job, stop_button, wire_stop
from .gpu import gpu
from .tab import input_for

PLAN = "plan"
ALTERATIONS = (*INTERVENTION_KINDS, PLAN)
FIELDS = {p.name: p for p in params(GenerateConfig)}


def config_of(prompt: str, kind: str, layers: str, value: float, seed: float, new_tokens: float,
              chat_template: bool) -> GenerateConfig:
    """The library config from the tab's inputs: with "plan", the layers box holds the plan."""
    values = {"prompt": prompt, "value": value, "seed": seed, "new_tokens": new_tokens,
              "chat_template": chat_template}
    if kind == PLAN:
        if not str(layers or "").strip():
            raise AnatomyError("The plan is empty: type one such as 0-9,[10-13]x2,14-29 in the layers box.")
        values.update(intervention="none", plan=layers)
    else:
        values.update(intervention=kind, layers=layers)
    return build_config(GenerateConfig, values, where=lambda p: repr(p.label), public=public_mode())


@gpu(duration=60)
@jobs.user_errors
def generate(spec: str, prompt: str, kind: str, layers: str, value: float, seed: float, max_new_tokens: float,
        chat_template: bool, request: gr.Request, oauth_token: gr.OAuthToken | None = None,
        progress=gr.Progress()) -> tuple:
    config = config_of(prompt, kind, layers, value, seed, max_new_tokens, chat_template)
    with model_job(spec, request, progress, token=oauth_token, plan=lambda loaded, eval_set: [(EXPERIMENT, config)],
                   what="This generation", command=limits.local_command(EXPERIMENT.name, spec, config)) as job:
        out = side_by_side_of(job.loaded.model, job.loaded.tokenizer, config, job.progress)
    marked = [side for mode in MODES for side in out.marked(mode)]
    return (*marked, out.differences())


def build(shared: Shared) -> None:
    gr.Markdown("The same prompt and seed through the original and the altered model; tokens that differ are "
                "marked. The weights are altered only while the altered side generates, then restored. The "
                "prompt goes through the model's chat template when its tokenizer has one (untick to send it raw).")
    prompt = gr.Textbox(FIELDS["prompt"].default, label=FIELDS["prompt"].label, lines=2)
    with gr.Row():
        kind = gr.Dropdown(list(ALTERATIONS), value=FIELDS["intervention"].default,
                           label="Alteration (an intervention or a layer plan)")
        layers = gr.Textbox(FIELDS["layers"].default, label="Layers (0-based), or a plan such as 0-9,[10-13]x2,14-29")
        value, seed = (input_for(FIELDS[name], FIELDS[name].default) for name in ("value", "seed"))
        max_new = gr.Slider(1, 128, value=FIELDS["new_tokens"].default, step=1, label=FIELDS["new_tokens"].label)
        chat = input_for(FIELDS["chat_template"], FIELDS["chat_template"].default)
    with gr.Row():
        go = gr.Button("Generate side by side", variant="primary")
        stop = stop_button()
    said = gr.Markdown(elem_id="generate-headline")  # a failed run's line, until the next run
    colours = {DIFFERS: "#f4a3a3"}
    outputs = []
    for mode in MODES:
        with gr.Row():
            for side in SIDES:
                outputs.append(gr.HighlightedText(label=f"{side.capitalize()} ({mode})", color_map=colours,
                                                  combine_adjacent=True, show_legend=False,
                                                  show_inline_category=False, elem_id=f"gen-{mode}-{side}"))
    table = gr.Dataframe(label="Differences", interactive=False, visible=False)  # hidden until it holds a result
    event = go.click(generate, [shared.model, prompt, kind, layers, value, seed, max_new, chat], [*outputs, table],
                     api_name="generate", concurrency_id="model")
    event.success(lambda: [gr.update(visible=True), ""], None, [table, said], queue=False, api_visibility="private")
    event.failure(jobs.last_error, None, said, queue=False, api_visibility="private")
    wire_stop(stop, [event], "generate", said)
