"""Interventions tab: scale, noise, zero, neighbour-mean or skip chosen layers, with PPL and degradation."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from anatomy import plots, report
from anatomy.cli import parse_floats
from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet, degradation, perplexity
from anatomy.interventions import BOUNDARY_CONVENTIONS, INTERVENTION_KINDS, intervention
from anatomy.layers import COMPONENTS, LayerAdapter, parse_layers
from anatomy.progress import ProgressCallback, track

from . import jobs
from .common import Shared, model_job, shown, stop_button, wire_stop
from .gpu import gpu

KINDS = tuple(k for k in INTERVENTION_KINDS if k != "none")
SWEPT = {"scale": "alpha", "noise": "sigma"}  # the kinds that take a value, and its name


def sweep(model, eval_set: EvalSet, kind: str, layers: list[int], values: tuple[float, ...] = (0.9,),
          components: list[str] | None = None, seed: int = 0, boundary: str = "one-neighbour",
          progress: ProgressCallback | None = None) -> pd.DataFrame:
    """PPL and D of one intervention per value (alpha for scale, sigma for noise); weights restored after each."""
    if kind not in KINDS:
        raise AnatomyError(f"Unknown intervention '{kind}': use one of {', '.join(KINDS)}.")
    adapter = LayerAdapter(model)
    base = perplexity(model, eval_set)
    rows = []
    for value in track(values if kind in SWEPT else (float("nan"),), f"intervention ({kind})", progress):
        with intervention(adapter, kind, layers, alpha=value, sigma=value, seed=seed, boundary=boundary,
                          components=components or None):
            result = perplexity(model, eval_set)
        d, low, high = degradation(result, base, eval_set)
        rows.append({"intervention": kind, "layers": ",".join(map(str, layers)), "value": value,
                     **result.as_dict(), "degradation_pct": d, "degradation_low": low, "degradation_high": high})
    df = pd.DataFrame(rows)
    df.attrs["baseline"] = base.as_dict()
    return df


def figure(df: pd.DataFrame, kind: str, title: str) -> Figure:
    """D against the swept value; a single point for the kinds that take none."""
    xlabel = SWEPT.get(kind, "(no value)")
    return plots.line_figure(df.fillna({"value": 0.0}), "value", "degradation_pct", title=title, xlabel=xlabel,
                             ylabel="degradation D (%)", logy=bool((df["degradation_pct"] > 0).all()))


@gpu(duration=120)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, kind: str, layers: str,
        values: str, components: list[str], seed: float, boundary: str, state: dict | None,
        request: gr.Request, oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()
        ) -> tuple[Figure, pd.DataFrame, str, str, dict]:
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        chosen = parse_layers(layers, LayerAdapter(job.loaded.model).num_layers)
        numbers = parse_floats(values, None, "Values") if kind in SWEPT else ()
        df = sweep(job.loaded.model, job.eval_set, kind, chosen, numbers, components, int(seed), boundary,
                   job.progress)
    base = df.attrs["baseline"]
    fig = figure(df, kind, f"{kind} of layers {layers}: {job.loaded.name}")
    markdown = (report.header("Interventions", job.loaded, job.eval_set)
                + f"\n- Baseline PPL {base['ppl']:.3f}\n\n" + report.markdown_table(df) + "\n")
    config = {"kind": kind, "layers": chosen, "values": numbers, "components": components, "seed": seed,
              "boundary": boundary}
    artefacts = report.Artefacts({"interventions": df}, {"interventions": fig}, markdown, {"baseline": base})
    archive = jobs.save_run(request, "interventions", job.loaded, job.eval_set, config, artefacts)
    headline = f"Baseline PPL {base['ppl']:.3f}; worst D {df['degradation_pct'].max():.1f}%."
    return fig, shown(df), headline, str(archive), jobs.remember(state, "interventions", df, archive)


def build(shared: Shared) -> None:
    gr.Markdown("Change chosen layers in place, measure PPL and D, restore the weights bit-identically. "
                "Scale takes alphas and noise takes sigmas (x std(W)), comma-separated, one row each.")
    with gr.Row():
        kind = gr.Dropdown(list(KINDS), value="scale", label="Intervention")
        layers = gr.Textbox("10-12", label="Layers (0-based, e.g. 0,3,5-8)")
        values = gr.Textbox("0.9,0.7,0.5", label="Values (alpha for scale, sigma for noise)")
    with gr.Row():
        components = gr.CheckboxGroup(list(COMPONENTS), label="Components (none ticked: all)")
        seed = gr.Number(0, precision=0, label="Noise seed")
        boundary = gr.Dropdown(list(BOUNDARY_CONVENTIONS), value="one-neighbour", label="Boundary (neighbour-mean)")
    with gr.Row():
        go = gr.Button("Run intervention", variant="primary")
        stop = stop_button()
    headline = gr.Markdown()
    plot = gr.Plot(label="Degradation")
    table = gr.Dataframe(label="Interventions table", interactive=False)
    download = gr.DownloadButton("Download the run folder (.zip)")
    event = go.click(run, [*shared.eval_inputs, kind, layers, values, components, seed, boundary, shared.state],
                     [plot, table, headline, download, shared.state], api_name="interventions",
                     concurrency_id="model")
    wire_stop(stop, [event], "interventions")
