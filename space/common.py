"""The inputs every tab shares (model and evaluation text) and the one way a tab runs a job on a model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from anatomy.evaluate import EvalSet
from anatomy.load import LoadedModel
from anatomy.progress import ProgressCallback

from . import jobs
from .access import visitor
from .models import CACHE


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


@contextmanager
def model_job(spec: str, request: gr.Request | None, progress: gr.Progress | None,
              eval_args: tuple | None = None, token: gr.OAuthToken | None = None) -> Iterator[Job]:
    """Hold one of the session's job slots and the model's lock for the whole job; Stop (this session's flag)
    cancels through `progress`. `token` is the visitor's sign-in, the only token a public app uses."""
    access = visitor(token)
    access.check_spec(spec)  # before the slot: a refused path costs nothing and waits for nothing
    with jobs.turn(request):
        cancel = jobs.start(request)
        with CACHE.use(spec, cancel, access, on_wait=lambda: waiting(progress)) as loaded:
            eval_set = jobs.eval_set_for(loaded, *eval_args) if eval_args is not None else None
            yield Job(loaded, eval_set, jobs.progress_callback(progress, cancel))


def waiting(progress: gr.Progress | None) -> None:
    """Tell the visitor their job waits for another visitor's job on the same model (the lock, not the queue)."""
    if progress is not None:
        progress(0, desc="waiting for another visitor's job on this model")


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A table as the UI shows it: the same DataFrame, floats rounded for reading."""
    return df.round(digits)


def stop_button() -> gr.Button:
    return gr.Button("Stop", variant="stop", scale=0, min_width=90)


def wire_stop(button: gr.Button, events: list, name: str) -> None:
    """Stop sets the session's flag (the job unwinds and restores) and drops the event from the queue."""
    button.click(jobs.stop, None, None, api_name=f"stop_{name}", cancels=events, queue=False)
