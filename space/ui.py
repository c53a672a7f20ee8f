"""The Blocks: the shared model and evaluation-text inputs above one tab per experiment."""

from __future__ import annotations

import os

import gradio as gr

from anatomy.load import EMBEDDED, ONLINE_DEFAULT

from . import jobs, published, runs, tab_model, tab_study
from .access import on_behalf, public_mode, refuse_implicit_tokens, sign_in_offered
from .common import Shared
from .models import default_model_spec
from .tab import Tab
from .tabs import TABS

# gradio's workers: a job waiting for its turn (space/turns.py) sleeps in one, so they are many; how many jobs
# compute at once is ANATOMY_CONCURRENCY, the turns
WORKERS = int(os.environ.get("ANATOMY_WORKERS", "16"))
TITLE = "Transformer Anatomy"
PHONE_CSS = """
@media (max-width: 700px) {
  #study-glance, #study-claims { overflow-x: auto; }
  #study-glance img { min-width: 820px; }
  #study-claims table { min-width: 900px; }
  .row, .gr-row { flex-wrap: wrap; }
}
"""
"""On a phone the glance figure keeps a readable size and the claims table its column widths, each in a box that
scrolls sideways, and rows of inputs wrap instead of squeezing."""


def build_demo(model_spec: str | None = None) -> gr.Blocks:
    """The whole app; `model_spec` overrides the default (online: SmolLM2-135M, offline: the embedded copy)."""
    spec = model_spec or default_model_spec()
    public = public_mode()
    if public:
        refuse_implicit_tokens()
    max_age_s, _ = runs.limits()
    # gradio keeps its own copy of every zip it serves: expire those with the run folders
    with gr.Blocks(title=TITLE, delete_cache=(3600, int(max_age_s))) as demo:
        gr.Markdown(f"# {TITLE}\nLayer by layer: which layers matter, what their weights look like, and what "
                    "breaks when you change them. Every button runs the same library function as the CLI.")
        with gr.Row(equal_height=True):
            label = ("Model: 'embedded' or a Hub id (owner/name); sign in to open gated models" if public else
                     "Model: 'embedded', a Hub id (owner/name) or a local folder")
            model = gr.Dropdown(sorted({spec, EMBEDDED, ONLINE_DEFAULT}), value=spec, allow_custom_value=True,
                                label=label, scale=4)
            load = gr.Button("Load", scale=0, min_width=90)
            if sign_in_offered():  # the visitor's own token (gr.OAuthToken) for gated models
                gr.LoginButton(scale=0, min_width=180)
        status = gr.Markdown(elem_id="model-status")
        with gr.Accordion("Evaluation text", open=False, elem_id="eval-accordion"):
            with gr.Row():
                n_sentences = gr.Slider(1, 48, value=12, step=1, precision=0, label="Default sentences used (fewer: faster)",
                                        elem_id="n-sentences")
                max_length = gr.Number(128, precision=0, label="Max tokens per text", elem_id="max-length")
            custom_text = gr.Textbox(label="Or your own text (one text per line; replaces the default sentences)",
                                     lines=3)
        shared = Shared(model, n_sentences, custom_text, max_length, gr.State({}))
        with gr.Tabs():
            with gr.Tab("Study"):  # the landing tab: the default model's anatomy before any click
                study_offer = tab_study.build(shared)
            with gr.Tab("Model"):
                tab_model.build(shared, load, status)
            lay_out(TABS, shared)
        published.wire(shared, [demo.load, model.change])
        opened = demo.load(on_behalf(tab_model.check), model, status, api_visibility="private")
        opened.failure(jobs.last_error, None, status, queue=False, api_visibility="private")
        gr.on([demo.load, status.change], tab_study.offer, shared.eval_inputs, study_offer, queue=False,
              api_visibility="private")  # the study's estimate once the page opens or the Model tab loads a model
        demo.unload(jobs.forget_session)
    demo.queue(default_concurrency_limit=WORKERS, max_size=64)
    return demo


def lay_out(tabs: dict[str, Tab | dict], shared: Shared) -> None:
    """One gr.Tab per entry of the table, in its order; an entry that is itself a table holds sub-tabs."""
    for label, entry in tabs.items():
        with gr.Tab(label):
            if isinstance(entry, Tab):
                entry.build(shared)
            else:
                lay_out(entry, shared)


def launch(demo: gr.Blocks, **kwargs):
    """Serve on 0.0.0.0:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise, with the MCP server
    on (every named endpoint a tool at /gradio_api/mcp/; ANATOMY_MCP=0 turns it off)."""
    kwargs.setdefault("mcp_server", os.environ.get("ANATOMY_MCP", "1") != "0")
    kwargs.setdefault("css", PHONE_CSS)
    return demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
                       server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), **kwargs)
