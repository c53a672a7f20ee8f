"""The inputs every tab shares (model and evaluation text) and the one way a tab runs a job on a model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from anatomy.evaluate import EvalSet
from anatomy.experiment import Experiment
from anatomy.load import LoadedModel
from anatomy.progress import ProgressCallback

from . import jobs, limits
from .access import on_behalf, visitor
from .models import CACHE
from .turns import TURNS, Visitor, address_of, visitor_name


@dataclass
class Shared:
    """Components built once above the tabs; each tab passes them as inputs to its listeners."""

    model: gr.Dropdown
    n_sentences: gr.Slider
    custom_text: gr.Textbox
    max_length: gr.Number
    state: gr.State
    offers: list[tuple[str, gr.Markdown, gr.Button]] = field(default_factory=list)  # each tab's offer of a
    # published run (space/published.py): its experiment (or `study`), the text and the button to show it

    @property
    def eval_inputs(self) -> list[gr.components.Component]:
        return [self.model, self.n_sentences, self.custom_text, self.max_length]


@dataclass
class Job:
    loaded: LoadedModel
    eval_set: EvalSet | None
    progress: ProgressCallback
    estimate: limits.Estimate | None = None


# what a job will run, for its budget: (experiment, config) pairs of the loaded model and evaluation set
Plan = Callable[[LoadedModel, EvalSet | None], Sequence[tuple[Experiment, object]]]


@contextmanager
def model_job(spec: str, request: gr.Request | None, progress: gr.Progress | None,
              eval_args: tuple | None = None, token: gr.OAuthToken | None = None, plan: Plan | None = None,
              what: str = "This job", command: str = "python -m anatomy --help") -> Iterator[Job]:
    """Admit the visitor, wait for a turn and the model's lock, check the job's budget, and run the job under
    its hard limit; Stop (this session's flag) and the limit end it through `progress` and the layers' hooks.
    `token` is the visitor's sign-in, the only token a public app uses. `plan` lists what the job will run
    (its budget: see space/limits.py); `what` names it and `command` runs it locally, in the messages that end or
    refuse it."""
    access = visitor(token)
    access.check_spec(spec)  # before the line: a refused path costs nothing and waits for nothing
    if eval_args is not None:
        jobs.eval_sizes(*eval_args)  # a bad size is refused before the line too
    who = Visitor(jobs.session_id(request), visitor_name(access.token) if access.public else None,
                  address_of(request))
    with TURNS.admitted(who) as ticket:
        cancel = jobs.start(request)
        entry = CACHE.entry(spec, access)
        TURNS.wait(ticket, entry.lock, cancel, tell=lambda ahead: waiting(progress, ahead))
        loaded = entry.loaded
        eval_set = jobs.eval_set_for(loaded, *eval_args) if eval_args is not None else None
        estimate = limits.estimate(loaded, eval_set, plan(loaded, eval_set)) if plan is not None else None
        if estimate is not None:
            limits.check(estimate, what, command)
        seconds = limits.hard_limit(estimate.seconds if estimate else 0.0) if access.public else None
        deadline = limits.Deadline(seconds, cancel, command)
        with deadline.on_layers(loaded):
            yield Job(loaded, eval_set, jobs.progress_callback(progress, deadline), estimate)


def waiting(progress: gr.Progress | None, ahead: int) -> None:
    """Tell the visitor how many jobs are ahead of theirs (running, or waiting since before it)."""
    if progress is not None:
        progress(0, desc=f"waiting for your turn: {ahead} job{'s' if ahead != 1 else ''} ahead of yours")


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A table as the UI shows it: the same DataFrame, floats rounded for reading."""
    return df.round(digits)


def stop_button() -> gr.Button:
    return gr.Button("Stop", variant="stop", scale=0, min_width=90)


def named(fn: Callable, name: str) -> Callable:
    """`fn` as the endpoint `name`: under that name, which gradio gives the MCP tool (it names a tool after its
    function), and with the visitor's token among its parameters only where the app takes one (`on_behalf`)."""
    fn = on_behalf(fn)
    fn.__name__ = name
    return fn


def wire_stop(button: gr.Button, events: list, name: str, says: gr.Markdown | None = None) -> None:
    """Stop sets the session's flag (the job unwinds and restores) and drops the event from the queue; `says`,
    the tab's status line, confirms it."""
    def stop(request: gr.Request) -> str:
        return jobs.stop(request)
    button.click(named(stop, f"stop_{name}"), None, says, api_name=f"stop_{name}", cancels=events, queue=False)
