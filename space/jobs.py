"""What every long job in the app shares: the Stop button, the progress bar, and short error messages.

Stop works through the library's own progress callback: each session has a `threading.Event`; the
callback handed to `run_x(..., progress=...)` raises `Cancelled` once it is set, the loop unwinds, and
every intervention context restores the weights on the way out, before the model's lock is released.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pandas as pd

from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet
from anatomy.load import LoadedModel
from anatomy.progress import Cancelled, ProgressCallback
from anatomy.report import Artefacts, RunFolder
from anatomy.texts import DEFAULT_EVAL_NAME, default_eval_texts, resolve_eval_texts

log = logging.getLogger("space")
_CANCEL: dict[str, threading.Event] = {}
_CANCEL_GUARD = threading.Lock()
RUNS_ROOT = Path(tempfile.gettempdir()) / "anatomy-app-runs"


def session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def cancel_event(request: gr.Request | None) -> threading.Event:
    """The session's Stop flag (created on first use)."""
    with _CANCEL_GUARD:
        return _CANCEL.setdefault(session_id(request), threading.Event())


def stop(request: gr.Request) -> None:
    """The Stop button: the running job of this session raises `Cancelled` at its next step."""
    cancel_event(request).set()


def forget_session(request: gr.Request) -> None:
    """Drop a closed session's Stop flag (Blocks.unload)."""
    with _CANCEL_GUARD:
        _CANCEL.pop(session_id(request), None)


def start(request: gr.Request | None) -> threading.Event:
    """A new job of this session: clear an old Stop press and return the flag the job watches."""
    event = cancel_event(request)
    event.clear()
    return event


def progress_callback(progress: gr.Progress | None, cancel: threading.Event) -> ProgressCallback:
    """The library callback: drive the gradio bar and raise `Cancelled` when Stop was pressed."""
    def callback(done: int, total: int, description: str) -> None:
        if cancel.is_set():
            raise Cancelled(f"stopped by the user after {done} of {total} steps")
        if progress is not None:
            progress((done, total), desc=description)
    return callback


def user_errors(fn: Callable) -> Callable:
    """Every failure reaches the user as a short gr.Error (never a stack trace), and the app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled as err:
            raise gr.Error(f"Stopped ({err}); the model's weights were restored.", title="Stopped",
                           print_exception=False) from None
        except AnatomyError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the UI must survive any bug; the log keeps the trace
            log.exception("job failed")
            message = str(err).splitlines()[0][:300] if str(err) else ""
            raise gr.Error(f"{type(err).__name__}: {message}", print_exception=False) from None
    return wrapper


def eval_set_for(loaded: LoadedModel, n_sentences: float, custom_text: str = "", max_length: float = 128,
                 seed: int = 0) -> EvalSet:
    """The evaluation set of a job: the user's text (one text per line or paragraph) or the first n defaults."""
    if custom_text and custom_text.strip():
        texts, name = resolve_eval_texts(texts=custom_text.replace("\r\n", "\n").split("\n"))
    else:
        n = int(n_sentences)
        if n < 1:
            raise AnatomyError("Choose at least 1 evaluation sentence.")
        texts, name = default_eval_texts()[:n], f"{DEFAULT_EVAL_NAME}, first {n}"
    return EvalSet.from_texts(texts, loaded.tokenizer, name=name, batch_size=16, max_length=int(max_length),
                              device=loaded.model.device, seed=seed)


def run_folder(request: gr.Request | None, experiment: str) -> RunFolder:
    """A fresh run folder of this session (the zip download); gradio serves files from the temp dir."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.monotonic_ns() % 10**6:06d}"
    return RunFolder(RUNS_ROOT / session_id(request) / f"{experiment}-{stamp}", experiment)


def remember(state: dict | None, experiment: str, df: pd.DataFrame, zip_path: Path | None = None) -> dict:
    """The session's own results (gr.State): the last table of each experiment and its run zip."""
    state = dict(state or {})
    state[experiment] = {"table": df, "zip": str(zip_path) if zip_path else None}
    return state


def save_run(request: gr.Request | None, experiment: str, loaded: LoadedModel, eval_set: EvalSet | None,
             config: object, artefacts: Artefacts, timings: dict | None = None) -> Path:
    """Write the same run folder as the CLI (tables, figures, report.md, results.json) and return its zip."""
    run = run_folder(request, experiment)
    run.write(artefacts, loaded, eval_set, config, timings)
    return run.zip()
