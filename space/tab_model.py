"""Model tab: pick a model (embedded, local folder, Hub id checked before download) and see its anatomy."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from anatomy.experiments import norms
from anatomy.layers import LayerAdapter
from anatomy.load import check_hub_model
from anatomy.model_spec import parse_model_spec
from anatomy.run import execute

from .access import visitor
from .common import Shared, model_job, named, shown
from .gpu import gpu
from .jobs import last_error, user_errors
from .models import CACHE


def component_table(adapter: LayerAdapter) -> pd.DataFrame:
    """Which canonical components the model has and the real parameter each one lives in."""
    return pd.DataFrame(adapter.describe())


def summary(loaded, adapter: LayerAdapter, norms_headline: str) -> str:
    rev = f" @ `{loaded.revision[:10]}`" if loaded.revision else ""
    return (f"**{loaded.name}**{rev} ({loaded.source}): {type(loaded.model).__name__}, "
            f"{loaded.num_parameters / 1e6:.1f}M parameters, {adapter.num_layers} layers numbered 0-"
            f"{adapter.num_layers - 1}, components: {', '.join(adapter.components)}. "
            f"Norms: {norms_headline} Cached models: {', '.join(CACHE.specs())}.")


@user_errors
def check(spec: str, request: gr.Request, oauth_token: gr.OAuthToken | None = None) -> str:
    """Hub ids are checked from metadata alone (causal LM, safetensors, fits in memory) before any download,
    with the visitor's own token on a public app."""
    access = visitor(oauth_token)
    parsed = parse_model_spec(spec, local=not access.public)
    if parsed.kind == "embedded":
        return "The embedded SmolLM2-135M-Instruct (offline, no download)."
    if parsed.kind != "hub":
        return f"Local {parsed.kind} `{parsed.path}`: press Load to open it."
    info = check_hub_model(parsed.text, **({"token": access.token or False} if access.public else {}))
    return (f"`{info.repo_id}` @ `{info.revision[:10]}`: {info.model_type}, {info.num_parameters / 1e6:.1f}M "
            "parameters, safetensors, fits in memory. Press Load to download it.")


@gpu(duration=60)
@user_errors
def load(spec: str, request: gr.Request, oauth_token: gr.OAuthToken | None = None
         ) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    with model_job(spec, request, None, token=oauth_token) as job:
        adapter = LayerAdapter(job.loaded.model)
        result = execute(norms.EXPERIMENT, job.loaded, None, norms.NormsConfig())
        return summary(job.loaded, adapter, norms.headline(result)), component_table(adapter), shown(result.table)


def build(shared: Shared, load_button: gr.Button, status: gr.Markdown) -> None:
    """The tables stay hidden until a load fills them and hide again when the model box changes or a load
    fails, so the page never shows empty placeholder tables or the tables of another model; the status line
    under the model box is cleared on a change, then says what the new spec is, and it alone shows progress
    and errors, where the visitor acted."""
    gr.Markdown("Layers are numbered from 0; every table, plot and field uses the names `layers.{i}.{component}`.")
    components = gr.Dataframe(label="Components (canonical name, real parameter, shape (out, in))",
                              interactive=False, visible=False, elem_id="model-components")
    norm_table = gr.Dataframe(label="Frobenius norm of every weight matrix, by layer (`python -m anatomy norms`)",
                              interactive=False, visible=False, elem_id="model-norms")
    tables = [components, norm_table]
    cleared = shared.model.change(lambda: ["", *visibility(tables, False)], None, [status, *tables], queue=False,
                                  api_visibility="private")  # nothing said about the previous model stays
    checked = cleared.then(named(check, "check_model"), shared.model, status, api_name="check_model", queue=False)
    checked.failure(last_error, None, status, queue=False, api_visibility="private")  # offline, not found: said
    event = load_button.click(named(load, "load_model"), shared.model, [status, *tables], api_name="load_model", concurrency_id="model",
                              show_progress_on=[status])
    event.success(lambda: visibility(tables, True), None, tables, queue=False, api_visibility="private")
    event.failure(lambda: visibility(tables, False), None, tables, queue=False, api_visibility="private")
    event.failure(last_error, None, status, queue=False, api_visibility="private")


def visibility(components: list, visible: bool) -> list:
    """The updates that show or hide every one of `components`."""
    return [gr.update(visible=visible)] * len(components)
