"""Study tab, the landing tab: the anatomy of the default model at once (a finished study ships with the
package), and the full or quick study of any model with progress and Stop.

The shipped study holds tables and results only; its figure is drawn from them when the app starts, so a
visitor sees the anatomy before clicking anything, offline too. The button runs `anatomy.study` exactly as
`python -m anatomy study` (Full: the study's own settings) or `... study --quick` (Quick) does, into this
session's run folder. Locally Full is the default; on a public app Full is the default only where its estimate
(space/limits.py: the experiments' declared work at the loaded model's measured speed) fits the job budget, and
a Full that does not fit is refused in one line naming the local command. The estimate needs the model loaded
and timed, so until a job has loaded it the line beside the choice says the estimate comes when the study
starts (a model's config alone does not give its speed on this hardware).
"""

from __future__ import annotations

import html
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

import anatomy
from anatomy import hub, study, study_report, work
from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet
from anatomy.experiment import Experiment
from anatomy.glossary import glossary_markdown
from anatomy.layers import LayerAdapter
from anatomy.load import LoadedModel
from anatomy.plots import CLASS_COLOURS

from . import jobs, limits, publish, published, runs
from .access import public_mode, visitor
from .common import Plan, Shared, model_job, named, stop_button, wire_stop
from .gpu import gpu, refuse_on_zero_gpu
from .models import CACHE

SHIPPED = Path(anatomy.__file__).parent / "data" / "study-embedded"
FULL, QUICK = "Full", "Quick"
SHOWN = ["finding", "verdict", "ours", "study", "reason", "conditions"]  # a claims.csv before rules v2 lacks the last
WIDTHS = {"finding": 12, "verdict": 10, "ours": 24, "study": 20, "reason": 22, "conditions": 12}  # percent


@dataclass(frozen=True)
class Heading:
    """What a study folder is, read from its study.md: the model as it names it (with its quantisation where
    the report states one) and whether it was the quick study, so its table and figure say both."""

    model: str
    quick: bool

    @property
    def table_label(self) -> str:
        return f"{'QUICK study' if self.quick else 'Study'}: claims of the study, ours beside the study's " \
               f"({self.model})"

    @property
    def figure_title(self) -> str:
        return f"The anatomy of {self.model}" + (" (QUICK study)" if self.quick else "")


def heading(folder: Path) -> Heading:
    """The folder's Heading from its study.md ('# Study of NAME', the shared conditions' 'model M, quantisation
    Q, dtype', and 'QUICK (reduced)' in its settings line); a folder without one is named by its folder."""
    path = folder / "study.md"
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    title = re.search(r"^# Study of (.+)$", text, re.M)
    conditions = re.search(r"\bmodel (.+?), quantisation (.+), \w+ \(study: ", text)  # the weights' dtype last
    model = (f"{conditions[1]}, quantisation {conditions[2]}" if conditions and conditions[2] != "none"
             else conditions[1] if conditions else title[1].strip() if title else folder.name)
    return Heading(model, bool(re.search(r"^- Settings: QUICK \(reduced\)", text, re.M)))


def claims_view(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims the table shows: the SHOWN columns the file has, in that order."""
    return claims[[c for c in SHOWN if c in claims]]


def claims_table(claims: pd.DataFrame, label: str) -> dict:
    """The table's update: its rows, label and column widths (one per column shown)."""
    shown = claims_view(claims)
    return gr.update(value=shown, label=label, visible=True, column_widths=widths(shown))


def widths(shown: pd.DataFrame) -> list[str]:
    """Each shown column's width, the verdict beside its finding and the reason beside the numbers."""
    total = sum(WIDTHS[c] for c in shown)
    return [f"{100 * WIDTHS[c] / total:.0f}%" for c in shown]


def shipped() -> tuple[Figure | None, pd.DataFrame | None, str, str]:
    """The shipped study's figure, claims (the columns its file has: `load_study` adds an older file's missing
    ones empty), table label and one line saying what it is (nothing when absent)."""
    if not (SHIPPED / "claims.csv").is_file():
        return None, None, "", ""
    results, claims = study_report.load_study(SHIPPED)
    views = study_report.layer_views(results)
    note = (SHIPPED / "README.md").read_text(encoding="utf-8") if (SHIPPED / "README.md").is_file() else ""
    says, written = heading(SHIPPED), pd.read_csv(SHIPPED / "claims.csv", nrows=0).columns  # the file's own columns
    return (study_report.glance_figure(views, says.figure_title), claims_view(claims[claims.columns.intersection(
        written, sort=False)]), says.table_label, note)


def plan_of(quick: bool) -> tuple[list[study.Step], dict, Plan]:
    """The study's steps and settings, full or quick, and its plan for the budget (space/common.py Plan):
    recovery's layers placed once the model's depth is known, as `study.conduct` places them, without the steps
    the model cannot run (`conduct` records them refused)."""
    steps, overrides = study.prepare(study.STUDY, quick=quick)

    def plan(loaded: LoadedModel, eval_set: EvalSet | None) -> list[tuple[Experiment, object]]:
        layers, shape = LayerAdapter(loaded.model).num_layers, work.shape_of(loaded.model, eval_set)
        return [(s.experiment, s.config) for s in study.with_recovery_layers(steps, layers, None, quick=quick)
                if study.can_run(s.experiment, s.config, shape)]

    return steps, overrides, plan


def command(spec: str, quick: bool) -> str:
    """The command that runs this study on the visitor's own machine."""
    return f"python -m anatomy study{' --quick' if quick else ''} --model {shlex.quote(spec)}"


@jobs.user_errors
def offer(spec: str, n_sentences: float, custom_text: str, max_length: float,
          oauth_token: gr.OAuthToken | None = None) -> tuple[str, str]:
    """The choice's default and the line beside it: each study's estimate on this machine where the model is
    loaded (locally Full always; public Full where it fits the budget, else Quick). Nothing is loaded here: a
    model not in the cache, or busy with a job, gets its estimate when the study starts."""
    public = public_mode()
    entry = CACHE.loaded(spec)
    if entry is None or not entry.lock.acquire(blocking=False):
        return (QUICK if public else FULL,
                "Full study: the estimate comes when the study starts (it times the model on this machine once "
                "loaded)." + (f" This Space allows {limits.max_seconds():,.0f} s a job." if public else ""))
    try:
        access = visitor(oauth_token)
        access.check_spec(spec)
        if entry.loaded.source == "hub":
            access.authorise(spec)  # a Hub model another visitor loaded: this visitor's token must reach it too
        eval_set = jobs.eval_set_for(entry.loaded, n_sentences, custom_text, max_length)
        estimates = {quick: limits.estimate(entry.loaded, eval_set, plan_of(quick)[2](entry.loaded, eval_set))
                     for quick in (False, True)}
    finally:
        entry.lock.release()
    line = (f"Full study: about {estimates[False].seconds / 60:.1f} min on this machine; "
            f"quick: about {estimates[True].seconds / 60:.1f} min.")
    try:
        limits.check(estimates[False], "The full study", command(spec, False))  # public only: the run's own check
    except AnatomyError as over:
        return QUICK, f"{line} {over}"
    return FULL, line


@gpu(duration=600)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, depth: str, state: dict | None,
        request: gr.Request, oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    """The full or quick study of the chosen model (`depth`: the Radio admits only FULL and QUICK): every
    experiment in turn, one run folder each, one report."""
    refuse_on_zero_gpu("The study (it fine-tunes layers for recovery)")
    quick = depth == QUICK
    steps, overrides, plan = plan_of(quick)
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token, plan=plan,
                   what="This quick study" if quick else "The full study", command=command(spec, quick)) as job:
        with runs.new_run(jobs.session_id(request), "study") as folder:
            position = {"i": 0, "left": ""}

            def step_progress(done: int, total: int, description: str) -> None:
                job.progress(done, total, f"[{position['i'] + 1}/{len(steps)}{position['left']}] {description}")

            def on_step(done: int, total: int, name: str, eta_s: float) -> None:
                position["i"] = done
                position["left"] = f", study about {eta_s / 60:.1f} min left" if eta_s == eta_s else ""

            result, markdown = study.conduct(steps, overrides, job.loaded, job.eval_set, folder.path, quick=quick,
                                             progress=step_progress, on_step=on_step)
    final = folder.path  # renamed from .partial once the study was written whole
    figure = study_report.glance_figure(study_report.layer_views(result.results), heading(final).figure_title)
    return (*outputs(final, figure, markdown), jobs.remember(state, hub.STUDY, runs.archive_of(final)))




def outputs(folder: Path, figure: Figure | None, markdown: str, page: bool = True) -> tuple:
    """The tab's outputs for a finished study folder: its glance, claims (labelled by what the study was),
    report, page (where it has one, and `page`: never a published study's, whose HTML would be served from this
    app's address), study.md and zip."""
    claims = pd.read_csv(folder / "claims.csv", keep_default_na=False)  # as written, verdicts included
    html, md = folder / "study.html", folder / "study.md"
    return figure, claims_table(claims, heading(folder).table_label), markdown, \
        str(html) if page and html.is_file() else None, str(md) if md.is_file() else None, \
        str(runs.archive_of(folder))


@jobs.user_errors
def show_published(spec: str, request: gr.Request, oauth_token: gr.OAuthToken | None = None) -> tuple:
    """The offer's button: the atlas's study of the chosen model, shown as a finished study, nothing computed."""
    folder, says = published.fetch(spec, hub.STUDY, request, oauth_token)
    return (says, *outputs(folder, published.image_figure(folder / "glance.png"),
                           published.published_report((folder / "study.md").read_text(encoding="utf-8",
                                                                                       errors="replace")),
                           page=False))


START_HERE = ("**Start here.** 1. Read the anatomy of the embedded model below: the figure, then the claims "
              "table (each verdict with its reason). 2. Choose a model above (a Hub id, or 'embedded') and open the "
              "**Importance** tab: its map is what every other tab builds on. 3. **Generate** shows what an "
              "alteration does to the model's answers, side by side with the original. Every run can be stopped; "
              "Stop puts back any weights the run changed.")


def legend_html() -> str:
    """The class colours of every figure, as chips with their D ranges (the palette of anatomy.plots)."""
    ranges = {"Redundant": "D < 10%", "Minor": "10-30%", "Important": "30-100%", "Critical": ">= 100%",
              "Anti-layer candidate": "D < 0", "Untouched": "not measured"}
    chips = "".join(f"<span style='display:inline-block;margin:0 12px 4px 0'><span style='display:inline-block;"
                    f"width:12px;height:12px;background:{colour};border:1px solid #555;margin-right:4px;"
                    f"vertical-align:middle'></span>{html.escape(name)} ({ranges[name]})</span>"
                    for name, colour in CLASS_COLOURS.items())
    return f"<div aria-label='layer classes'><b>Layer classes</b> (ablation D): {chips}</div>"


def build(shared: Shared) -> list[gr.components.Component]:
    """The tab; returns what `offer` fills (the choice and its estimate), for the page's own triggers (its load,
    a model loaded on the Model tab) to refresh."""
    figure, claims, label, note = shipped()
    gr.Markdown("Which layers matter, what their weights look like, what survives being changed, and whether the "
                "picture of the study (Wietrzykowski 2026) holds. " + (note or ""))
    gr.Markdown(START_HERE, elem_id="start-here")
    gr.HTML(legend_html(), elem_id="class-legend")
    with gr.Accordion("Glossary: the words of the figures and tables", open=False, elem_id="glossary"):
        gr.Markdown(glossary_markdown())
    offer_, show = published.offer_row(hub.STUDY)
    shared.offers.append((hub.STUDY, offer_, show))
    glance = gr.Plot(figure, label="The anatomy at a glance", visible=figure is not None, elem_id="study-glance")
    table = gr.Dataframe(claims, label=label or "Claims of the study", interactive=False, visible=claims is not None,
                         elem_id="study-claims", wrap=True,
                         column_widths=widths(claims) if claims is not None else None)
    with gr.Row():
        depth = gr.Radio([FULL, QUICK], value=QUICK if public_mode() else FULL, label="Study", scale=0,
                         min_width=160, info="Full: the study's own settings; Quick: --quick's reduced ones")
        estimate = gr.Markdown("Full study: the estimate comes when the study starts (it times the model on this "
                               "machine once loaded).", elem_id="study-estimate")
    with gr.Row():
        go = gr.Button("Run the study on the chosen model", variant="primary")
        stop = stop_button()
    status = gr.Markdown(label="Status", elem_id="study-status")
    with gr.Accordion("Report (study.md)", open=False, visible=False) as report_box:
        report = gr.Markdown(label="Report")
    with gr.Row():
        page = gr.DownloadButton("Download the report (study.html, opens offline)", visible=False)
        md = gr.DownloadButton("Download the report (study.md)", visible=False)
        archive = gr.DownloadButton("Download the study folder (.zip)", visible=False)
    publish_row = publish.build(hub.STUDY, "Study", shared.state, "publish_study")
    outputs_ = [glance, table, report, page, md, archive]
    event = go.click(named(run, "study"), [*shared.eval_inputs, depth, shared.state], [*outputs_, shared.state], api_name="study",
                     concurrency_id="model", show_progress_on=[status])
    shown = [glance, report_box, page, md, archive]
    event.success(lambda: [gr.update(visible=True)] * (len(shown) + 1), None, [*shown, publish_row], queue=False,
                  api_visibility="private")
    stored = show.click(named(show_published, "published_study"), shared.model, [status, *outputs_], api_name="published_study",
                        show_progress_on=[status])
    stored.success(lambda: [gr.update(visible=True)] * len(shown), None, shown, queue=False, api_visibility="private")
    for failed in (event, stored):
        failed.failure(jobs.last_error, None, status, queue=False, api_visibility="private")
    wire_stop(stop, [event], "study", status)
    gr.on([shared.model.change, shared.n_sentences.change, shared.max_length.change], named(offer, "study_offer"), shared.eval_inputs,
          [depth, estimate], api_name="study_offer", queue=False)
    event.success(offer, shared.eval_inputs, [depth, estimate], queue=False, api_visibility="private")
    return [depth, estimate]
