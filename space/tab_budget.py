"""Budget tab: a training step budget per layer from this session's importance and recovery runs (SPEC section 6).

The same `run_budget`, table, report and `budget.json` schedule as `python -m anatomy budget --importance ...
--recovery ...`, read from the run folders of the user's latest Importance and Recovery runs. Pure table work
(milliseconds, no model), so it needs neither the model's lock nor a Stop button.
"""

from __future__ import annotations

import gradio as gr

from anatomy.cli import parse_floats
from anatomy.experiments.budget import BudgetConfig, read_run, run_budget, write_budget_run

from . import jobs, previous, runs
from .common import Shared, shown

RANGES = {"boundary": "0.15,0.2", "redundant": "0,0.05", "minor": "0.3,0.5", "important": "0.5,0.8",
          "critical_output": "0.8,1.0"}


@jobs.user_errors
def run(class_only: bool, b_max: float, boundary: str, redundant: str, minor: str, important: str,
        critical_output: str, critical_core: float, at_once_steps: float, boundary_rule: bool,
        anti_from_importance: bool, state: dict | None, request: gr.Request) -> tuple:
    """Budget the latest importance run with the latest recovery run (or by class alone when asked)."""
    ranges = {name: parse_floats(text, 2, f"The {name.replace('_', ' ')} range") for name, text in
              zip(RANGES, (boundary, redundant, minor, important, critical_output))}
    config = BudgetConfig(b_max=int(b_max), critical_core=float(critical_core), at_once_steps=int(at_once_steps),
                          boundary_rule=bool(boundary_rule), anti_from_importance=bool(anti_from_importance), **ranges)
    importance_run = previous.run_folder(state, "importance", "Importance")
    recovery_run = None if class_only else previous.run_folder(
        state, "recovery", "Recovery", ", or tick 'Class-only rules' to budget without it")
    importance, results = read_run(importance_run, "importance")
    recovery = read_run(recovery_run, "recovery")[0] if recovery_run else None
    df = run_budget(importance, recovery, config, (results.get("model") or {}).get("num_layers"))
    with runs.new_run(jobs.session_id(request), "budget") as folder:
        _, figure, markdown = write_budget_run(folder, df, config, {"importance": str(importance_run),
                                                                   "recovery": str(recovery_run or "none")})
    archive = runs.archive_of(folder.path)
    return (figure, shown(df), markdown, str(archive), str(folder.path / "budget.json"),
            jobs.remember(state, "budget", df, archive))


def build(shared: Shared) -> None:
    gr.Markdown("Steps per layer = R x B_max, R from the layer's importance class, its position and how fast it "
                "recovered: anti-layers 0, boundary layers low, redundant layers that recover at once almost "
                "nothing, critical layers the most. Uses your latest Importance and Recovery runs on this page.")
    with gr.Row():
        class_only = gr.Checkbox(False, label="Class-only rules (no recovery run: the top of each class's range)")
        b_max = gr.Number(200, precision=0, label="B_max (steps for R = 1)")
    with gr.Accordion("Rules", open=False):
        with gr.Row():
            ranges = [gr.Textbox(default, label=f"R range of {name.replace('_', ' ')} (low,high)")
                      for name, default in RANGES.items()]
        with gr.Row():
            critical_core = gr.Number(1.0, label="R of critical input/core layers")
            at_once = gr.Number(10, precision=0, label="'Recovers at once' by step")
            boundary_rule = gr.Checkbox(True, label="First/last layers by the boundary rule")
            anti_from_importance = gr.Checkbox(True, label="Anti-layers also from importance (D interval < 0)")
    go = gr.Button("Compute the budget", variant="primary")
    plot = gr.Plot(label="Steps per layer", elem_id="budget-plot")
    table = gr.Dataframe(label="Budget table", interactive=False)
    with gr.Accordion("Report (report.md of the run folder)", open=False):
        markdown = gr.Markdown()
    with gr.Row():
        download = gr.DownloadButton("Download the run folder (.zip)")
        schedule = gr.DownloadButton("Download the schedule (budget.json, for growth_models)")
    go.click(run, [class_only, b_max, *ranges, critical_core, at_once, boundary_rule, anti_from_importance,
                   shared.state], [plot, table, markdown, download, schedule, shared.state], api_name="budget")
