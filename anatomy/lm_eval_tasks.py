"""Task accuracy through lm-evaluation-harness: a model in memory (an intervention, a plan's stack, a pruned
model) or a saved folder, scored as the field scores it, without writing anything.

`score_tasks` wraps the model in lm-eval's `HFLM(pretrained=<model>, tokenizer=..., batch_size=...)` and runs
`simple_evaluate` on the named tasks. Two tasks ship in `anatomy/data/lm_eval_tasks/` and work offline:
`anatomy_facts` and `anatomy_arithmetic` (loglikelihood of the answer, `acc` = the answer is the greedy
continuation; the layer plans' built-in tasks). Any other lm-eval task (mmlu, hellaswag, arc_easy...)
is read from lm-eval's own task folder and the Hub, so it is refused in one line offline (HF_HUB_OFFLINE or
HF_DATASETS_OFFLINE) and on a public app, which offers the shipped tasks only.

Every metric of a task comes back with its stderr (multiple-choice tasks: `acc` and `acc_norm`), and the
per-item scores, so `task_drop` gives the drop between two scorings of the same items with a paired 95%
interval. lm-eval's requests go through the progress callback, which may raise `Cancelled` to stop scoring.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import offload
from .autocast_cache import cached_casts
from .errors import AnatomyError, shown
from .options import Codec, option
from .progress import ProgressCallback

SHIPPED = ("anatomy_arithmetic", "anatomy_facts")
SHIPPED_ITEMS = {"anatomy_arithmetic": "arithmetic.jsonl", "anatomy_facts": "facts.jsonl"}
MAX_TASKS = 16
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
Z95 = 1.959964
CHARS_PER_TOKEN = 1.5  # prompt and answer characters per token (SmolLM2: 1.2 arithmetic, 4.9 facts; 1.54 both)
OTHER_TASK_TOKENS = 200_000  # an lm-eval task of the Hub: of the order of a thousand requests of 200 tokens
BATCH_SIZE = 16  # requests per forward: on a 2-core CPU, 16 scores the shipped tasks in 0.6x the time of 1


def task_folder() -> Path:
    """The folder of the shipped task YAMLs (lm_eval's `--include_path`)."""
    return Path(str(resources.files("anatomy").joinpath("data/lm_eval_tasks")))


def parse_tasks(text: str, where: str) -> tuple[str, ...]:
    """Comma-separated lm-eval task names (empty: none); plain names only, at most MAX_TASKS."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if not TASK_NAME.fullmatch(n)]
    if bad:
        raise AnatomyError(f"{where} takes lm-eval task names like {','.join(SHIPPED)}, got {shown(bad[0])}.")
    if len(names) > MAX_TASKS:
        raise AnatomyError(f"{where} takes at most {MAX_TASKS} tasks, got {len(names)}.")
    return names


TASKS = Codec(parse_tasks, lambda v: ",".join(v))
"""The `--tasks` field: lm-eval task names, comma-separated; empty: no task scoring."""


def tasks_option(what: str, **kwargs: object) -> tuple[str, ...]:
    """The `tasks` field of an experiment's config (CLI `--tasks`, the app's tasks box): opt-in, none by
    default; `what` says what is scored; `kwargs` go to `option` (a `flag` where the field has another name)."""
    return option((), f"lm-eval tasks, comma-separated (e.g. {','.join(SHIPPED)}): {what}",
                  label=f"Tasks (lm-eval names, comma-separated; shipped: {', '.join(SHIPPED)}; empty: none)",
                  codec=TASKS, max_items=MAX_TASKS, **kwargs)


def lm_eval_version() -> str:
    """The installed lm-eval's version, which a run that scored tasks records beside its numbers."""
    from importlib.metadata import version
    return version("lm-eval")


def offline() -> bool:
    """True when the Hub may not be asked (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), where lm-eval's own tasks,
    whose items come from the Hub, cannot load."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def public_app() -> bool:
    """Whether this process serves a public app (space.access decides; a library without the app is not one)."""
    try:
        from space.access import public_mode
    except ImportError:
        return False
    return public_mode()


def check_tasks(tasks: Sequence[str]) -> None:
    """Refuse, in one line and before any work, a task that cannot load here: a non-shipped one offline or on a
    public app."""
    other = [t for t in tasks if t not in SHIPPED]
    if not other:
        return
    if public_app():
        raise AnatomyError(f"Task {shown(other[0])} is not offered on this public app: use {', '.join(SHIPPED)} "
                           "(run locally for any lm-eval task).")
    if offline():
        raise AnatomyError(f"Task {shown(other[0])} needs the Hub, which is off (HF_HUB_OFFLINE): use "
                           f"{', '.join(SHIPPED)}, which ship with the tool.")


def request_tokens(tasks: Sequence[str]) -> int:
    """About how many tokens one scoring of `tasks` runs through the model, for the work estimate: a shipped
    task's prompt and answer characters over CHARS_PER_TOKEN; another task OTHER_TASK_TOKENS."""
    total = 0.0
    for task in tasks:
        if task not in SHIPPED:
            total += OTHER_TASK_TOKENS
            continue
        with open(task_folder() / SHIPPED_ITEMS[task], encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        total += sum(len(r["prompt"]) + len(r["answer"]) for r in rows) / CHARS_PER_TOKEN
    return int(total)


def task_passes(tasks: Sequence[str], passes: Callable[[float], float]) -> float:
    """One scoring of `tasks` in evaluation passes (`passes`: `work.Shape.tokens`, tokens -> passes)."""
    return passes(request_tokens(tasks)) if tasks else 0.0


@dataclass
class TaskScores:
    """What one scoring measured: a row per (task, metric) with value, stderr and item count, each metric's
    per-item scores in lm-eval's document order (for paired drops), and each item's raw answer (for a
    loglikelihood task, [log-probability of the answer, is_greedy]) in the same order."""

    table: pd.DataFrame
    items: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    answers: dict[str, list] = field(default_factory=dict)

    def value(self, task: str, metric: str = "acc") -> float:
        row = self.table[(self.table["task"] == task) & (self.table["metric"] == metric)]
        return float(row["value"].iloc[0]) if len(row) else float("nan")


def _tracked_lm(progress: ProgressCallback | None):
    """HFLM whose forwards report the rows they score to `progress` (a callback that raises stops lm-eval)."""
    from lm_eval.models.huggingface import HFLM

    class TrackedHFLM(HFLM):
        done, total = 0, 0

        def _report(self, rows: int) -> None:
            self.done = min(self.done + rows, self.total)
            if progress is not None:
                progress(self.done, self.total, "lm-eval requests")

        def _counted(self, run, requests):
            """`run(requests)` with the progress at 0 of them before and all of them after."""
            self.done, self.total = 0, len(requests)
            self._report(0)
            out = run(requests, disable_tqdm=True)
            self._report(self.total)
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._counted(super().loglikelihood, requests)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return self._counted(super().generate_until, requests)

        def _model_call(self, inps, *args, **kwargs):
            out = super()._model_call(inps, *args, **kwargs)
            self._report(int(inps.shape[0]))
            return out

    return TrackedHFLM


def score_tasks(model: PreTrainedModel | str | Path, tokenizer: PreTrainedTokenizerBase | None, tasks: Sequence[str],
                batch_size: int = BATCH_SIZE, progress: ProgressCallback | None = None,
                limit: int | None = None, include: Sequence[str | Path] = ()) -> TaskScores:
    """Score `model` (in memory, as it is now: hooks, removed layers and all; or a saved folder) on lm-eval
    `tasks`. Requests are right-padded into batches of `batch_size` without an attention mask, as lm_eval does
    on the command line, so a saved model scored there (default batch size 1) gives the same per-item results
    (float32; tests/test_lm_eval_tasks.py checks it). Nothing is written; lm-eval logs errors only.
    `include`: further folders of task YAMLs (lm_eval's --include_path), whose tasks the caller vouches for, so
    they skip the offline refusal; naming a task outside the shipped ones indexes lm-eval's own (about 40 s)."""
    tasks = list(tasks)
    if not tasks:
        raise AnatomyError("Name at least one task, e.g. anatomy_facts.")
    if not include:
        check_tasks(tasks)
    import lm_eval
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    manager = TaskManager(include_path=[str(task_folder()), *map(str, include)],
                          include_defaults=any(t not in SHIPPED for t in tasks))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise AnatomyError(f"Unknown lm-eval task {shown(unknown[0])}: shipped ones are {', '.join(SHIPPED)}.")
    if isinstance(model, (str, Path)):
        from .load import default_device
        lm = _tracked_lm(progress)(pretrained=str(model), batch_size=batch_size, dtype="float32",
                                   device=str(default_device()))
    else:
        if tokenizer is None:
            raise AnatomyError("Task scoring needs the model's tokenizer.")
        # a copy: HFLM gives a tokenizer without a pad token one, which the caller's must not gain
        lm = _tracked_lm(progress)(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size,
                                   **_autocast_of(model))
    try:
        with _one_process(in_memory=not isinstance(model, (str, Path))), cached_casts():
            out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True,
                                          limit=limit, random_seed=None, numpy_random_seed=None,
                                          torch_random_seed=None)
    except AnatomyError:
        raise
    except (OSError, ConnectionError, ValueError) as err:
        raise AnatomyError(f"lm-eval could not load the tasks {', '.join(tasks)}: {err}".splitlines()[0]) from err
    return _scores(out)


def _autocast_of(model: PreTrainedModel) -> dict[str, torch.dtype]:
    """The caller's autocast for HFLM (`mixed_precision_dtype`): HFLM wraps every forward in its own
    `torch.autocast(enabled=mixed_precision_dtype is not None)`, which without it turns a run's `--autocast` off
    and scores the tasks in float32."""
    device = offload.input_device(model).type
    return {"mixed_precision_dtype": torch.get_autocast_dtype(device)} if torch.is_autocast_enabled(device) else {}


@contextmanager
def _one_process(in_memory: bool) -> Iterator[None]:
    """lm-eval returns results only where LOCAL_RANK is 0 (torchrun's tensor-parallel case). Under `accelerate
    launch` each process scores its own share of a sweep on its own copy of the model in memory, so to lm-eval
    each is a single process: LOCAL_RANK reads 0 for the call."""
    rank = os.environ.get("LOCAL_RANK")
    if not in_memory or rank in (None, "0"):
        yield
        return
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        os.environ["LOCAL_RANK"] = rank


def _scores(out: dict) -> TaskScores:
    """The table and per-item arrays from simple_evaluate's answer."""
    rows, items, answers = [], {}, {}
    for task, metrics in out["results"].items():
        samples = sorted(out.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
        answers[task] = [s["filtered_resps"] for s in samples]
        for key, value in metrics.items():
            metric, _, _ = key.partition(",")
            if metric.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            stderr = metrics.get(key.replace(metric, f"{metric}_stderr", 1))
            per_item = np.array([float(s[metric]) for s in samples if metric in s])
            if not len(per_item):  # a count such as sample_len, not a score of the items
                continue
            items[(task, metric)] = per_item
            rows.append({"task": task, "metric": metric, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"),
                         "n": len(per_item)})
    return TaskScores(pd.DataFrame(rows, columns=["task", "metric", "value", "stderr", "n"]), items, answers)


def task_drop(before: TaskScores, after: TaskScores) -> pd.DataFrame:
    """Per (task, metric): the score before and after with their stderr, and the drop (before - after) with a
    paired 95% interval over the same items (normal approximation of the mean per-item difference)."""
    rows = []
    for (task, metric), first in before.items.items():
        second = after.items.get((task, metric))
        if second is None or len(second) != len(first) or not len(first):
            continue
        diff = first - second
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        drop = float(diff.mean())
        rows.append({"task": task, "metric": metric, "before": before.value(task, metric),
                     "before_stderr": _stderr(before, task, metric), "after": after.value(task, metric),
                     "after_stderr": _stderr(after, task, metric), "drop": drop,
                     "drop_low": drop - Z95 * se, "drop_high": drop + Z95 * se})
    return pd.DataFrame(rows, columns=DROP_COLUMNS)


def task_section(tables: dict[str, pd.DataFrame], what: str) -> list[str]:
    """A report's task section, where a run scored tasks: accuracy with stderr before and after `what`, and the
    drop with its interval (report lines; none without a `tasks` table)."""
    if "tasks" not in tables:
        return []
    from .report import markdown_table
    return [f"### Task accuracy (lm-eval; before = the unchanged model, after = {what}; drop = before - after, "
            "paired 95% interval)", markdown_table(tables["tasks"].round(4)), ""]


def drop_rows(before: TaskScores, after: TaskScores, **keys: object) -> list[dict]:
    """`task_drop` as records, each led by `keys` (the layer, the criterion and K): an experiment's tasks table."""
    return [{**keys, **row} for row in task_drop(before, after).to_dict("records")]


class TaskDrops:
    """The task side of an experiment that changes a model in place: the unchanged model scored once when made,
    then `add` scores the model as it is now (inside the change) against it. Without tasks it does nothing."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, tasks: Sequence[str],
                 progress: ProgressCallback | None = None) -> None:
        if tasks and tokenizer is None:
            raise AnatomyError("--tasks scores the model with its tokenizer: pass tokenizer=.")
        self.model, self.tokenizer, self.tasks, self.progress = model, tokenizer, tuple(tasks), progress
        self.base = score_tasks(model, tokenizer, tasks, progress=progress) if tasks else None
        self.rows: list[dict] = []

    def add(self, **keys: object) -> TaskScores | None:
        """Score the model as it is now; its drop rows, led by `keys`, join the table. Returns the scores."""
        if self.base is None:
            return None
        now = score_tasks(self.model, self.tokenizer, self.tasks, progress=self.progress)
        self.rows.extend(drop_rows(self.base, now, **keys))
        return now

    def add_unchanged(self, **keys: object) -> TaskScores | None:
        """The unchanged model's own rows (before = after, no drop), without scoring it again; its scores."""
        if self.base is not None:
            self.rows.extend(drop_rows(self.base, self.base, **keys))
        return self.base

    def take(self) -> list[dict]:
        """The rows added since the last `take`, removed: what one item of a sweep returns beside its result, so
        that under `accelerate launch` the rows of every process are gathered with the sweep's results."""
        rows, self.rows = self.rows, []
        return rows

    def tables(self, keys: Sequence[str], rows: Sequence[dict] | None = None) -> dict[str, pd.DataFrame]:
        """`{"tasks": table}` for a result's extra tables (empty without tasks); `keys` lead its columns; `rows`:
        the sweep's gathered rows (default: those added here and not taken)."""
        rows = self.rows if rows is None else rows
        return {} if self.base is None else {"tasks": pd.DataFrame(list(rows), columns=[*keys, *DROP_COLUMNS])}


DROP_COLUMNS = ["task", "metric", "before", "before_stderr", "after", "after_stderr", "drop", "drop_low", "drop_high"]


def _stderr(scores: TaskScores, task: str, metric: str) -> float:
    row = scores.table[(scores.table["task"] == task) & (scores.table["metric"] == metric)]
    return float(row["stderr"].iloc[0]) if len(row) else float("nan")
