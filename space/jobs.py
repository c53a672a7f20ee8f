"""What every long job in the app shares: the Stop button, the progress bar, and short error messages.

Stop works through the library's own progress callback: each session has a `threading.Event`; the
callback handed to `run_x(..., progress=...)` raises `Cancelled` once it is set, the loop unwinds, and
every intervention context restores the weights on the way out, before the model's lock is released.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet
from anatomy.load import LoadedModel
from anatomy.progress import Cancelled, ProgressCallback
from anatomy.experiment import Artefacts, Result
from anatomy.texts import (DEFAULT_EVAL_NAME, EvalTextOptions, build_eval_set, default_eval_texts,
                           resolve_eval_texts)

from . import runs
from .access import public_mode
from .limits import Deadline, OverTime

log = logging.getLogger("space")
_CANCEL: dict[str, threading.Event] = {}
_CANCEL_GUARD = threading.Lock()


def session_id(request: gr.Request | None) -> str:
    """The session's key for its Stop flag and its run folders: a hash of the session hash, which the client
    chooses (an absolute path, `..`, NUL or a megabyte of text would otherwise become a path)."""
    raw = getattr(request, "session_hash", None)
    if raw is None:
        return "local"
    return hashlib.sha256(str(raw).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def cancel_event(request: gr.Request | None) -> threading.Event:
    """The session's Stop flag (created on first use)."""
    with _CANCEL_GUARD:
        return _CANCEL.setdefault(session_id(request), threading.Event())


STOPPED = ("**Stopped.** The run ends at its next layer or step and puts back every weight it changed: the model "
           "is as it was for the next run.")


def stop(request: gr.Request) -> str:
    """The Stop button: the running job of this session raises `Cancelled` at its next step; the line that
    confirms it (the tab's status shows it)."""
    cancel_event(request).set()
    return STOPPED


def forget_session(request: gr.Request) -> None:
    """Drop a closed session's Stop flag (Blocks.unload)."""
    with _CANCEL_GUARD:
        _CANCEL.pop(session_id(request), None)


def start(request: gr.Request | None) -> threading.Event:
    """A new job of this session: clear an old Stop press and return the flag the job watches."""
    event = cancel_event(request)
    event.clear()
    return event


def progress_callback(progress: gr.Progress | None, deadline: Deadline) -> ProgressCallback:
    """The library callback: drive the gradio bar, and end the job when Stop was pressed or its time is up."""
    def callback(done: int, total: int, description: str) -> None:
        try:
            deadline.check()
        except Cancelled as err:
            raise type(err)(f"{err} after {done} of {total} steps") from None
        if progress is not None:
            progress((done, total), desc=description)
    return callback


_LAST_ERROR: dict[str, str] = {}  # session -> the message of its latest failed job, for the tab to keep showing


def user_errors(fn: Callable) -> Callable:
    """Every failure reaches the user as a short gr.Error (never a stack trace), and the app keeps serving.
    The message is also kept for the session (`last_error`), so the tab can show it where the visitor pressed
    Go until the next run: the toast alone vanishes after seconds. An unexpected failure logs its traceback
    once, under an id the visitor sees."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            raise remembered(request, str(err.message), err.title) from None
        except OverTime as err:
            raise remembered(request, one_line(f"Over time: {err}. The model's weights were restored."),
                             "Over time") from None
        except Cancelled as err:
            raise remembered(request, f"Stopped ({err}); the model's weights were restored.", "Stopped") from None
        except AnatomyError as err:
            raise remembered(request, one_line(str(err))) from None
        except Exception as err:  # noqa: BLE001 - the UI must survive any bug; the log keeps the trace
            error_id = secrets.token_hex(4)
            log.exception("job failed [error id %s]", error_id)
            message = one_line(str(err).splitlines()[0] if str(err) else "", 300)
            raise remembered(request, f"{type(err).__name__}: {message} (error id {error_id}: the server log has "
                                      "the details)") from None
    return wrapper


def remembered(request: gr.Request | None, message: str, title: str = "Error") -> gr.Error:
    """The toast for `message`, after keeping it as the session's latest error."""
    with _CANCEL_GUARD:
        _LAST_ERROR[session_id(request)] = message
    return gr.Error(message, title=title, print_exception=False)


def last_error(request: gr.Request) -> str | dict:
    """The tab's line for the session's latest failed job (an event's `.failure`): it stays until the next run
    fills the same place. Without one (a job Stop cancelled before it said anything), the line is left as it
    is, so the Stop confirmation already there is not wiped by the cancelled event's failure."""
    with _CANCEL_GUARD:
        message = _LAST_ERROR.pop(session_id(request), "")
    stopped = message.startswith(("Stopped", "Over time"))
    return f"{'⏹' if stopped else '❌'} **{'Stopped' if stopped else 'Error'}:** {message}" if message else gr.update()


def one_line(message: str, limit: int = 600) -> str:
    """A message on one line of bounded length: messages quote the visitor's input, which may hold newlines
    or a megabyte of text."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit - 3] + "..."


def eval_sizes(n_sentences: float, custom_text: str | None, max_length: float) -> EvalTextOptions:
    """The evaluation text's inputs within their declared ranges (the public ones on a public app), checked
    before a job takes its turn: a megabyte of text or 10^6 tokens a row is refused, not tokenised."""
    if not isinstance(custom_text, (str, type(None))):
        raise AnatomyError("Your own text must be text.")
    return EvalTextOptions.checked(public_mode(), n_sentences=n_sentences, max_length=max_length,
                                   characters=max(1, len(custom_text or "")))


def eval_set_for(loaded: LoadedModel, n_sentences: float, custom_text: str = "", max_length: float = 128,
                 seed: int = 0) -> EvalSet:
    """The evaluation set of a job: the user's text (one text per line or paragraph) or the first n defaults."""
    sizes = eval_sizes(n_sentences, custom_text, max_length)
    if custom_text and custom_text.strip():
        texts, name = resolve_eval_texts(texts=custom_text.replace("\r\n", "\n").split("\n"))
    else:
        texts, name = default_eval_texts()[:sizes.n_sentences], f"{DEFAULT_EVAL_NAME}, first {sizes.n_sentences}"
    return build_eval_set(texts, name, loaded.model, loaded.tokenizer, sizes, seed=seed, public=public_mode())


def remember(state: dict | None, experiment: str, zip_path: Path) -> dict:
    """The session's own results (gr.State): the zip of its latest run of each experiment, whose folder
    beside it is what a later experiment that needs it reads (`previous.run_folder`)."""
    state = dict(state or {})
    state[experiment] = {"zip": str(zip_path)}
    return state


def save_run(request: gr.Request | None, experiment: str, loaded: LoadedModel | None, eval_set: EvalSet | None,
             config: object, result: Result, made: Artefacts) -> Path:
    """Write the same run folder as the CLI (tables, figures, report.md, results.json) and return its zip."""
    with runs.new_run(session_id(request), experiment) as run:
        run.write(result, made, loaded, eval_set, config)
    return runs.archive_of(run.path)
