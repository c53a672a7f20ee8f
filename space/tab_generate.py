"""Generate tab: the original and the altered model side by side, same prompt and seed, differing tokens marked.

It runs the library's `generate` experiment (`anatomy.experiments.generate.side_by_side_of`, what
`python -m anatomy generate` runs) through the same endpoint as every tab (`Tab.endpoint`: the declared fields,
labelled and optional, in order) and keeps its own layout: the two sides next to each other per decoding mode,
not the plots-and-table layout of the other tabs. One dropdown chooses an intervention or a layer plan; with
"plan", the layers box holds the plan.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import gradio as gr

from anatomy.errors import AnatomyError
from anatomy.experiment import Result
from anatomy.experiments.generate import EXPERIMENT, GenerateConfig, side_by_side_of
from anatomy.generate import DIFFERS, MODES, SIDES
from anatomy.interventions import INTERVENTION_KINDS
from anatomy.options import option, params

from . import jobs, limits
from .common import Shared, model_job, stop_button, wire_stop
from .tab import Tab, input_for

PLAN = "plan"
ALTERATIONS = (*INTERVENTION_KINDS, PLAN)
FIELDS = {p.name: p for p in params(GenerateConfig)}
LAYERS_LABEL = "Layers (0-based), or a plan such as 0-9,[10-13]x2,14-29"


@dataclass
class GenerateInputs(GenerateConfig):
    """The generate config as the tab asks for it: one dropdown picks an intervention or "plan", and with "plan"
    the layers box holds the plan (the CLI's --plan), so the plan has no box of its own."""

    intervention: str = option(FIELDS["intervention"].default, "what the altered side does to the layers: an "
                               "intervention, or 'plan' to run the layer plan typed in the layers box",
                               label="Alteration (an intervention or a layer plan)", choices=ALTERATIONS)
    layers: str = option(FIELDS["layers"].text(FIELDS["layers"].default), "0-based layers the intervention "
                         "changes, e.g. 0,3,5-8; with 'plan', the plan, e.g. 0-9,[10-13]x2,14-29",
                         label=LAYERS_LABEL)
    plan: str | None = option(None, FIELDS["plan"].option.help, ui=False)

    def __post_init__(self) -> None:
        """The layers box read as the alteration says: a plan, or a layer selection (the experiment's fields)."""
        where = repr(LAYERS_LABEL)
        if self.intervention != PLAN:
            self.layers = FIELDS["layers"].parse(self.layers, where)
            return
        if not str(self.layers or "").strip():
            raise AnatomyError("The plan is empty: type one such as 0-9,[10-13]x2,14-29 in the layers box.")
        self.intervention, self.plan = "none", FIELDS["plan"].parse(self.layers, where)
        self.layers = FIELDS["layers"].default


class GenerateTab(Tab):
    """The Generate tab: the common endpoint, its own layout and outputs (four generations and their diff)."""

    def build(self, shared: Shared) -> None:
        gr.Markdown(self.intro)
        fields = {p.name: p for p in self.fields()}
        prompt = gr.Textbox(fields["prompt"].default, label=fields["prompt"].label, lines=2)
        with gr.Row():
            row = [input_for(p, p.default) for name, p in fields.items() if name not in ("prompt", "new_tokens",
                                                                                          "chat_template")]
            new_tokens = gr.Slider(1, 128, value=fields["new_tokens"].default, step=1, label=fields["new_tokens"].label)
            chat = input_for(fields["chat_template"], fields["chat_template"].default)
        inputs = [shared.model, prompt, *row, new_tokens, chat]
        with gr.Row():
            go = gr.Button(self.go_label, variant="primary")
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
        event = go.click(self.endpoint(inputs), [*inputs, shared.state], [*outputs, table, shared.state],
                         api_name=self.endpoint_name, api_description=self.description(), concurrency_id="model")
        event.success(lambda: [gr.update(visible=True), ""], None, [table, said], queue=False, api_visibility="private")
        event.failure(jobs.last_error, None, said, queue=False, api_visibility="private")
        wire_stop(stop, [event], self.endpoint_name, said)

    def run(self, shared_values: list, config: GenerateInputs, state: dict | None, request: gr.Request | None,
            oauth_token: gr.OAuthToken | None, progress: gr.Progress | None, ticked: Collection[str] = (),
            sent: Mapping[str, Result] | None = None) -> tuple:
        """The four generations (special tokens such as <|im_end|> stripped) and where they differ; nothing is
        measured or saved, so the session's runs are as they were."""
        spec, = shared_values
        with model_job(spec, request, progress, token=oauth_token, plan=lambda loaded, eval_set: [(EXPERIMENT, config)],
                       what="This generation", command=limits.local_command(EXPERIMENT.name, spec, config)) as job:
            out = side_by_side_of(job.loaded.model, job.loaded.tokenizer, config, job.progress)
        return (*[side for mode in MODES for side in out.marked(mode)], out.differences(), state)


TAB = GenerateTab(EXPERIMENT, config=GenerateInputs, plots={}, gpu_s=60, go_label="Generate side by side",
                  intro="The same prompt and seed through the original and the altered model; tokens that differ "
                        "are marked. The weights are altered only while the altered side generates, then restored. "
                        "The prompt goes through the model's chat template when its tokenizer has one (untick to "
                        "send it raw).")
