"""One tab builder for every experiment: inputs from the config's declared fields, the same layout and the
same callback for all of them.

`space/tabs.py` declares one `Tab(EXPERIMENT, ...)` per tab: which figures to show under which labels, how
long a ZeroGPU slot to ask for, and optionally its own extra outputs. The builder lays out the inputs by field
type (a choice is a dropdown, several choices checkboxes, a switch a checkbox, a number a number box, the
rest a textbox with the CLI's text form), then Go and Stop, then the outputs: a headline, the figures, the
table, the report and the run folder's zip, and once a run succeeds a row to publish it to the visitor's own
Hub repo (space/publish.py). Outputs stay hidden until they hold something, so a failed run shows its one
error message where the user pressed Go and nothing else. The callback turns the inputs into the config
object with the CLI's own parser, resolves the experiment's needs from this session's runs (or computes
them), and writes the CLI's run folder. Where the deployer's atlas holds a published run of the chosen model
(space/published.py), an offer above the inputs shows it in the same outputs without computing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from anatomy.errors import AnatomyError
from anatomy.experiment import Experiment, Need, Result, registry
from anatomy.options import LINES, Param, build_config, params
from anatomy.run import artefacts, compute_with, execute, resolve_needs

from . import jobs, limits, previous, publish, published, runs
from .access import public_mode, takes_visitor_tokens
from .common import Shared, model_job, named, shown, stop_button, wire_stop
from .gpu import gpu

PER_ROW = 4


@dataclass
class Tab:
    """The app's view of one declared experiment; `build(shared)` lays it out and wires its endpoint."""

    experiment: Experiment
    intro: str
    plots: dict[str, str]  # figure name -> label, in the order shown
    gpu_s: int = 120  # ZeroGPU slot length asked for
    go_label: str = ""
    table: Callable[[Result], pd.DataFrame] | None = None  # what the table shows (default: the main table)
    downloads: dict[str, str] = field(default_factory=dict)  # extra file of the run folder -> button label
    ui_defaults: dict[str, object] = field(default_factory=dict)  # field -> the app's default, where cheaper
    before_run: Callable[[object], None] | None = None  # a check of the config before any work (ZeroGPU limits)
    notes: dict[str, str] = field(default_factory=dict)  # closed accordions under the inputs: title -> markdown
    aliases: tuple[str, ...] = ()  # former endpoint names, each still served (with stop_<alias>) for old clients
    # optional need -> label of a checkbox to run without it (budget by class only); unticked, the session's
    # latest run of it is required, so a missing run is said rather than silently done without
    without: dict[str, str] = field(default_factory=dict)
    config: type | None = None  # the app's config: a subclass of the experiment's adding UI-only choices
    # need -> the columns this experiment reads of its table, by kind (space/previous.py KINDS): an optional
    # input takes that table as JSON, for API clients without a session of their own (plain HTTP, MCP tools)
    table_inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    from_session: Callable[[object], bool] | None = None  # True: the needs are the session's runs (refused when
    # there is none), False: computed now; absent: the session's runs where it has them

    @property
    def config_class(self) -> type:
        return self.config or self.experiment.config

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def endpoint_name(self) -> str:
        return self.name

    def description(self) -> str:
        """The endpoint's description on the API page and for MCP clients: the declaration's summary and its
        fields with their help (the CLI's words)."""
        tables = [f"{need}: optional, the table /{need} returned, as JSON ({{\"headers\": [...], \"data\": [[...]]}}, "
                  f"or a list of row objects; the text an MCP result shows it as is read too) with the columns "
                  f"{', '.join(columns)}, read instead of this session's latest {need} run"
                  for need, columns in self.table_inputs.items()]
        fields = "; ".join([*[f"{p.name}: {p.option.help}" for p in self.fields()], *tables])
        return f"{self.experiment.title}: {self.experiment.summary}." + (f" Inputs: {fields}." if fields else "")

    def fields(self) -> list[Param]:
        return [p for p in params(self.config_class) if p.option.ui]

    def build(self, shared: Shared) -> None:
        exp = self.experiment
        gr.Markdown(self.intro)
        offer, show = published.offer_row(self.name)
        shared.offers.append((self.name, offer, show))
        inputs = [*self.shared_inputs(shared), *[gr.Checkbox(False, label=label) for label in self.without.values()],
                  *self.field_inputs(), *self.table_boxes()]
        for title, text in self.notes.items():
            with gr.Accordion(title, open=False):
                gr.Markdown(text)
        if exp.needs and self.from_session is None:
            gr.Markdown(needs_note(exp.needs))
        with gr.Row():
            go = gr.Button(self.go_label or f"Run {exp.title.lower()}", variant="primary")
            stop = stop_button() if exp.uses_model else None  # work without a model takes milliseconds
        headline = gr.Markdown(label="Headline", elem_id=f"{self.name}-headline")  # empty until a run; progress and
        # errors show here
        plots = [gr.Plot(label=label, visible=False, elem_id=f"{self.name}-plot" + (f"-{i}" if i else ""))
                 for i, label in enumerate(self.plots.values())]
        table = gr.Dataframe(label="Table", interactive=False, visible=False, elem_id=f"{self.name}-table")
        with gr.Accordion("Report (report.md of the run folder)", open=False, visible=False) as report_box:
            report = gr.Markdown(label="Report")
        with gr.Row():
            download = gr.DownloadButton("Download the run folder (.zip)", visible=False)
            files = [gr.DownloadButton(label, visible=False) for label in self.downloads.values()]
        publish_row = publish.build(self.name, exp.title, shared.state, f"publish_{self.endpoint_name}")
        outputs = [headline, *plots, table, report, download, *files]
        handler = self.endpoint(inputs)
        event = go.click(handler, [*inputs, shared.state], [*outputs, shared.state], api_name=self.endpoint_name,
                         api_description=self.description(), concurrency_id="model" if exp.uses_model else None,
                         show_progress_on=[headline])
        twins = [gr.Button(visible=False).click(
            twin_of(handler, alias), [*inputs, shared.state], [*outputs, shared.state], api_name=alias,
            api_description=f"The same as /{self.endpoint_name}, under its former name (kept for existing clients).",
            concurrency_id="model" if exp.uses_model else None, show_progress_on=[headline]) for alias in self.aliases]
        hidden = [*plots, table, report_box, download, *files]
        event.success(lambda: [gr.update(visible=True)] * (len(hidden) + 1), None, [*hidden, publish_row],
                      queue=False, api_visibility="private")
        for failing in (event, *twins):
            failing.failure(jobs.last_error, None, headline, queue=False, api_visibility="private")
        stored = show.click(self.show_published(), shared.model, outputs, api_name=f"published_{self.endpoint_name}",
                            show_progress_on=[headline])
        stored.success(lambda: [gr.update(visible=True)] * len(hidden), None, hidden, queue=False,
                       api_visibility="private")
        stored.failure(jobs.last_error, None, headline, queue=False, api_visibility="private")
        if stop is not None:
            wire_stop(stop, [event], self.endpoint_name, headline)
            for alias, twin in zip(self.aliases, twins):
                wire_stop(gr.Button(visible=False), [twin], alias, headline)

    def shared_inputs(self, shared: Shared) -> list:
        if not self.experiment.uses_model:
            return []
        return shared.eval_inputs if self.experiment.uses_eval else [shared.model]

    def field_inputs(self) -> list:
        components = []
        fields = self.fields()
        for start in range(0, len(fields), PER_ROW):
            with gr.Row():
                components += [input_for(p, self.ui_defaults.get(p.name, p.default)) for p in fields[start:start + PER_ROW]]
        return components

    def table_boxes(self) -> list:
        """A textbox per need an API caller may give as a table (`table_inputs`), in a closed accordion: a visitor
        of the page has the session's runs."""
        if not self.table_inputs:
            return []
        with gr.Accordion("Runs given as tables in JSON (for API clients)", open=False):
            return [gr.Textbox("", lines=2, label=f"Your {need_tab(need)} run: its table as JSON, as /{need} "
                                                  "returns it (empty: your latest run on this page)")
                    for need in self.table_inputs]

    def endpoint(self, inputs: list) -> Callable:
        """The event handler: positional inputs in layout order (shared, the `without` checkboxes, the fields, the
        needs given as tables), then the session state; gradio reads the request, the visitor's token (where the
        app takes one, `takes_visitor_tokens`, and the job loads a model) and the progress tracker from the
        signature built here, and each input's default (the component's value: optional on the API page)."""
        names = [p.name for p in self.fields()]
        skips, tables = list(self.without), list(self.table_inputs)
        shared_n = len(inputs) - len(skips) - len(names) - len(tables)
        fields_at = shared_n + len(skips)
        reads_hub = self.experiment.uses_model and takes_visitor_tokens()  # a job without a model reads no Hub
        special = ["state", "request", *(["oauth_token"] if reads_hub else []), "progress"]
        tab = self

        @gpu(duration=self.gpu_s)
        @jobs.user_errors
        def handler(*args):
            values, extra = args[:-len(special)], dict(zip(special, args[-len(special):]))
            ticked = {need for need, tick in zip(skips, values[shared_n:]) if tick}
            config = build_config(tab.config_class, dict(zip(names, values[fields_at:fields_at + len(names)])),
                                  where=lambda p: repr(p.label), public=public_mode())
            sent = {need: result for need, text in zip(tables, values[fields_at + len(names):])
                    if (result := previous.given_run(text, need, tab.table_inputs[need])) is not None}
            for need in sorted(ticked & set(sent)):
                raise AnatomyError(f"You gave a {need} run and ticked '{tab.without[need]}': untick it, or leave "
                                   "the run empty.")
            if tab.before_run is not None:
                tab.before_run(config)
            return tab.run(values[:shared_n], config, extra["state"], extra["request"], extra.get("oauth_token"),
                           extra["progress"], ticked, sent)

        shared_names = ["model", "n_sentences", "custom_text", "max_length"][:shared_n]
        positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=component.value)
                      for n, component in zip([*shared_names, *[f"without_{need}" for need in skips], *names, *tables],
                                              inputs)]
        annotations = {"request": gr.Request, "oauth_token": gr.OAuthToken | None}
        defaults = {"state": None, "request": None, "oauth_token": None, "progress": gr.Progress()}
        handler.__signature__ = inspect.Signature([*positional, *[
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name],
                              annotation=annotations.get(name, inspect.Parameter.empty)) for name in special]])
        handler.__annotations__ = {name: annotations[name] for name in special if name in annotations}
        handler.__name__ = self.endpoint_name
        return handler

    def run(self, shared_values: list, config: object, state: dict | None, request: gr.Request | None,
            oauth_token: gr.OAuthToken | None, progress: gr.Progress | None, ticked: Collection[str] = (),
            sent: Mapping[str, Result] | None = None) -> tuple:
        """`ticked`: the optional needs the user chose to do without (their `without` checkboxes); `sent`: needs
        an API caller gave as tables (`table_inputs`), read instead of the session's runs."""
        exp, sent = self.experiment, dict(sent or {})
        chosen = None if self.from_session is None else self.from_session(config)
        given = {**{need.experiment: previous.run_folder(state, need.experiment, need_tab(need.experiment))
                    for need in exp.needs if need.experiment not in {*ticked, *sent}
                    and (chosen or (chosen is None and previous.has_run(state, need.experiment)))}, **sent}
        require = set(self.without) - ticked

        def missing(need: Need) -> str:
            hint = f"run the {need_tab(need.experiment)} tab first (the app uses your latest run of it)"
            if need.experiment in self.table_inputs:
                hint += f", or give its table as JSON in '{need.experiment}' (API)"
            return hint + (f", or tick '{self.without[need.experiment]}'" if need.experiment in self.without else "")
        if exp.uses_model:
            spec, *eval_args = shared_values
            with model_job(spec, request, progress, tuple(eval_args) if exp.uses_eval else None, token=oauth_token,
                           plan=lambda loaded, eval_set: self.plan(config, given, ticked),
                           what=f"This {exp.title.lower()} run", command=limits.local_command(exp.name, spec, config)
                           ) as job:
                if exp.check is not None:
                    exp.check(config, job.loaded.model)
                inputs = resolve_needs(exp, given, compute=compute_with(job.loaded, job.eval_set, job.progress),
                                       missing=missing, require=require, config=config)
                result = execute(exp, job.loaded, job.eval_set, config, job.progress, inputs)
            loaded, eval_set = job.loaded, job.eval_set
        else:
            inputs = resolve_needs(exp, given, missing=missing, require=require, config=config)
            result = execute(exp, None, None, config, None, inputs)
            loaded = eval_set = None
        made = artefacts(exp, result, loaded, eval_set, config)
        self.check_plots(made.figures)
        archive = jobs.save_run(request, exp.name, loaded, eval_set, config, result, made)
        return (*self.outputs(result, made.figures, made.markdown, archive), jobs.remember(state, exp.name, archive))

    def check_plots(self, figures: dict) -> None:
        """Refuse a `plots` key the run's artefacts did not draw: a typo in the table would otherwise show an
        empty plot without a word. Checked at each run, not when the app is built: an experiment names its
        figures only in its `artefacts` function, from the result (spectral draws singular values only when it
        kept them)."""
        unknown = [name for name in self.plots if name not in figures]
        if unknown:
            raise LookupError(f"The {self.name} tab shows figure {', '.join(map(repr, unknown))}, which the "
                              f"{self.name} experiment did not draw; it draws: "
                              f"{', '.join(map(repr, figures)) or 'no figure'}.")

    def plan(self, config: object, given: Collection[str], ticked: Collection[str]) -> list[tuple[Experiment, object]]:
        """What a run computes, for its budget: the experiment, and each need that no session run gives and that
        its config reads (computed with the need's defaults, or the config its `configure` gives)."""
        experiments, steps = registry(), [(self.experiment, config)]
        for need in self.experiment.needs:
            if need.experiment in given or need.experiment in ticked or not need.computable:
                continue
            wanted = need.configure(config) if need.configure is not None else experiments[need.experiment].config()
            if wanted is not None:
                steps.append((experiments[need.experiment], wanted))
        return steps

    def outputs(self, result: Result, figures: dict, markdown: str, archive: Path, says: str = "") -> tuple:
        """The tab's outputs for a run folder (its zip `archive`) and its `result`; `says` opens the headline."""
        folder = archive.with_suffix("")
        table = self.table(result) if self.table else result.table
        headline = says + (self.experiment.headline(result) if self.experiment.headline else "")
        return (headline, *[figures.get(name) for name in self.plots], shown(table), markdown, str(archive),
                *[str(folder / name) if (folder / name).is_file() else None for name in self.downloads])

    def show_published(self) -> Callable:
        """The offer's button: the atlas's run of the chosen model, in this tab's outputs, nothing computed."""
        tab = self

        @jobs.user_errors
        def show(spec: str, request: gr.Request, oauth_token: gr.OAuthToken | None = None) -> tuple:
            folder, says = published.fetch(spec, tab.name, request, oauth_token)
            result = Result.load(folder, tab.name)
            figures = {name: published.image_figure(folder / f"{name}.png") for name in tab.plots}
            markdown = published.published_report((folder / "report.md").read_text(encoding="utf-8", errors="replace")
                                                  if (folder / "report.md").is_file() else "")
            return tab.outputs(result, figures, markdown, runs.archive_of(folder), says)
        return named(show, f"published_{self.endpoint_name}")


def twin_of(handler: Callable, name: str) -> Callable:
    """`handler` as a distinct function named `name`: an alias endpoint's own MCP tool (gradio names a tool after
    its function), with the handler's signature (`functools.wraps` leads `inspect.signature` to it)."""
    return named(functools.wraps(handler)(lambda *args: handler(*args)), name)


def input_for(param: Param, default: object) -> gr.components.Component:
    """The input a field gets, by its type: the same values the CLI flag takes."""
    opt, label = param.option, param.label
    if opt.multiple:
        return gr.CheckboxGroup(list(opt.choices or ()), value=list(default), label=label)
    if param.is_switch:
        return gr.Checkbox(bool(default), label=label)
    if opt.choices:
        return gr.Dropdown(list(opt.choices), value=default, label=label)
    if opt.codec is None and isinstance(param.default, (int, float)):
        return gr.Number(default, precision=0 if isinstance(param.default, int) else None, label=label)
    if opt.codec is LINES:  # one item a line
        return gr.Textbox("\n".join(default), lines=2, label=label)
    return gr.Textbox(param.text(default), label=label)


TAB_OF = {"importance": "Importance", "recovery": "Recovery"}


def need_tab(need: str) -> str:
    """The tab a visitor runs to give an experiment the result of `need`."""
    return TAB_OF.get(need, need.capitalize())


def needs_note(needs: tuple[Need, ...]) -> str:
    parts = []
    for need in needs:
        how = ("computed now with its defaults if you have not run it" if need.computable else
               "required" if need.required else "optional")
        parts.append(f"your latest **{need_tab(need.experiment)}** run ({how})")
    return "Uses " + "; ".join(parts) + "."
