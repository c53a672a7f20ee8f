"""Study tab, the landing tab: the anatomy of the default model at once (a finished study ships with the
package), and the quick study of any model with progress and Stop.

The shipped study holds tables and results only; its figure is drawn from them when the app starts, so a
visitor sees the anatomy before clicking anything, offline too. The button runs `anatomy.study` exactly as
`python -m anatomy study --quick` does, into this session's run folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

import anatomy
from anatomy import hub, study, study_report
from anatomy.evaluate import EvalSet
from anatomy.experiment import Experiment
from anatomy.layers import LayerAdapter
from anatomy.load import LoadedModel

from . import jobs, publish, published, runs
from .common import Shared, model_job, stop_button, wire_stop
from .gpu import gpu, refuse_on_zero_gpu

SHIPPED = Path(anatomy.__file__).parent / "data" / "study-embedded"


def shipped() -> tuple[Figure | None, pd.DataFrame | None, str]:
    """The shipped study's figure, claims and one line saying what it is (nothing when it is absent)."""
    if not (SHIPPED / "claims.csv").is_file():
        return None, None, ""
    results, claims = study_report.load_study(SHIPPED)
    views = study_report.layer_views(results)
    note = (SHIPPED / "README.md").read_text(encoding="utf-8") if (SHIPPED / "README.md").is_file() else ""
    figure = study_report.glance_figure(views, "The anatomy of the embedded SmolLM2-135M-Instruct")
    return figure, claims[["finding", "verdict", "ours", "study"]], note


@gpu(duration=600)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, state: dict | None,
        request: gr.Request, oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    """The quick study of the chosen model: every experiment in turn, one run folder each, one report."""
    refuse_on_zero_gpu("The study (it fine-tunes layers for recovery)")
    steps, overrides = study.prepare(study.STUDY, quick=True)

    def plan(loaded: LoadedModel, eval_set: EvalSet | None) -> list[tuple[Experiment, object]]:
        layers = LayerAdapter(loaded.model).num_layers
        return [(s.experiment, s.config) for s in study.with_recovery_layers(steps, layers, None, quick=True)]

    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token, plan=plan,
                   what="This quick study",
                   command=f"python -m anatomy study --quick --model {shlex.quote(spec)}") as job:
        with runs.new_run(jobs.session_id(request), "study") as folder:
            position = {"i": 0, "left": ""}

            def step_progress(done: int, total: int, description: str) -> None:
                job.progress(done, total, f"[{position['i'] + 1}/{len(steps)}{position['left']}] {description}")

            def on_step(done: int, total: int, name: str, eta_s: float) -> None:
                position["i"] = done
                position["left"] = f", study about {eta_s / 60:.1f} min left" if eta_s == eta_s else ""

            result, markdown = study.conduct(steps, overrides, job.loaded, job.eval_set, folder.path, quick=True,
                                             progress=step_progress, on_step=on_step)
    final = folder.path  # renamed from .partial once the study was written whole
    figure = study_report.glance_figure(study_report.layer_views(result.results), f"The anatomy of {job.loaded.title}")
    return (*outputs(final, figure, markdown), jobs.remember(state, hub.STUDY, runs.archive_of(final)))


def outputs(folder: Path, figure: Figure | None, markdown: str, page: bool = True) -> tuple:
    """The tab's outputs for a finished study folder: its glance, claims, report, page (where it has one, and
    `page`: never a published study's, whose HTML would be served from this app's address) and zip."""
    claims = pd.read_csv(folder / "claims.csv", keep_default_na=False)  # as written, verdicts included
    html = folder / "study.html"
    return figure, claims[["finding", "verdict", "ours", "study"]], markdown, \
        str(html) if page and html.is_file() else None, str(runs.archive_of(folder))


@jobs.user_errors
def show_published(spec: str, request: gr.Request, oauth_token: gr.OAuthToken | None = None) -> tuple:
    """The offer's button: the atlas's study of the chosen model, shown as a finished study, nothing computed."""
    folder, says = published.fetch(spec, hub.STUDY, request, oauth_token)
    return (says, *outputs(folder, published.image_figure(folder / "glance.png"),
                           published.published_report((folder / "study.md").read_text(encoding="utf-8",
                                                                                       errors="replace")),
                           page=False))


def build(shared: Shared) -> None:
    figure, claims, note = shipped()
    gr.Markdown("Which layers matter, what their weights look like, what survives being changed, and whether the "
                "picture of the study (Wietrzykowski 2026) holds. " + (note or ""))
    offer, show = published.offer_row(hub.STUDY)
    shared.offers.append((hub.STUDY, offer, show))
    glance = gr.Plot(figure, label="The anatomy at a glance", visible=figure is not None, elem_id="study-glance")
    table = gr.Dataframe(claims, label="Claims of the study: ours beside the study's", interactive=False,
                         visible=claims is not None, elem_id="study-claims", wrap=True,
                         column_widths=["16%", "12%", "40%", "32%"])  # the verdict beside its finding
    with gr.Row():
        go = gr.Button("Run the quick study on the chosen model (minutes on a CPU)", variant="primary")
        stop = stop_button()
    status = gr.Markdown(elem_id="study-status")
    with gr.Accordion("Report (study.md)", open=False, visible=False) as report_box:
        report = gr.Markdown()
    with gr.Row():
        page = gr.DownloadButton("Download the report (study.html, opens offline)", visible=False)
        archive = gr.DownloadButton("Download the study folder (.zip)", visible=False)
    publish_row = publish.build(hub.STUDY, "Study", shared.state, "publish_study")
    outputs_ = [glance, table, report, page, archive]
    event = go.click(run, [*shared.eval_inputs, shared.state], [*outputs_, shared.state], api_name="study",
                     concurrency_id="model", show_progress_on=[status])
    shown = [glance, table, report_box, page, archive]
    event.success(lambda: [gr.update(visible=True)] * (len(shown) + 1), None, [*shown, publish_row], queue=False,
                  api_visibility="private")
    stored = show.click(show_published, shared.model, [status, *outputs_], api_name="published_study",
                        show_progress_on=[status])
    stored.success(lambda: [gr.update(visible=True)] * len(shown), None, shown, queue=False, api_visibility="private")
    for failed in (event, stored):
        failed.failure(jobs.last_error, None, status, queue=False, api_visibility="private")
    wire_stop(stop, [event], "study")
