"""The inputs every tab shares (model and evaluation text) and the one way a tab runs a job on a model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from anatomy.evaluate import EvalSet
from anatomy.load import LoadedModel
from anatomy.progress import ProgressCallback

from . import jobs
from .models import CACHE


@dataclass
class Shared:
    """Components built once above the tabs; each tab passes them as inputs to its listeners."""

    model: gr.Dropdown
    n_sentences: gr.Slider
    custom_text: gr.Textbox
    max_length: gr.Number
    state: gr.State

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
              eval_args: tuple | None = None) -> Iterator[Job]:
    """Hold the model's lock for the whole job; Stop (this session's flag) cancels through `progress`."""
    cancel = jobs.start(request)
    with CACHE.use(spec, cancel) as loaded:
        eval_set = jobs.eval_set_for(loaded, *eval_args) if eval_args is not None else None
        yield Job(loaded, eval_set, jobs.progress_callback(progress, cancel))


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A table as the UI shows it: the same DataFrame, floats rounded for reading."""
    return df.round(digits)


def stop_button() -> gr.Button:
    return gr.Button("Stop", variant="stop", scale=0, min_width=90)


def wire_stop(button: gr.Button, events: list, name: str) -> None:
    """Stop sets the session's flag (the job unwinds and restores) and drops the event from the queue."""
    button.click(jobs.stop, None, None, api_name=f"stop_{name}", cancels=events, queue=False)
