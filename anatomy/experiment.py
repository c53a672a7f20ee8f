"""One declaration per experiment, and the typed result every experiment returns.

An `Experiment` names the experiment, its config class (fields made with `anatomy.options.option`), the
function that runs it, the function that draws its figures and report, and the experiments whose results
it reads (`needs`). The CLI (`anatomy.cli`), the app's tabs (`space.tab`), the run folder
(`anatomy.report`) and the resolution of `needs` (`anatomy.needs`) are all built from these declarations;
`registry()` lists them. Adding an experiment is one module in `anatomy/experiments/` with an `EXPERIMENT`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import AnatomyError, shown


@dataclass
class Result:
    """What an experiment measured: its main table plus named extras, instead of `DataFrame.attrs`.

    `scalars` holds JSON values (numbers, strings, small nested dicts such as a baseline PPL with its
    interval); `tables` further tables; `arrays` numeric arrays. `timings` are the real wall times in seconds
    (`run_s` is set by `anatomy.run.execute` around the whole run). `source` says what a result measured (the
    model, evaluation text and config, and `needs`: what the results it read measured), set by `execute` or
    read back from results.json, and `run`, the folder it was loaded from (`Result.load`), if any.
    """

    experiment: str
    table: pd.DataFrame
    scalars: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        """A scalar, extra table or array by name (the main table is `.table`)."""
        for store in (self.scalars, self.tables, self.arrays):
            if name in store:
                return store[name]
        raise KeyError(f"{self.experiment} result has no '{name}'")

    @property
    def all_tables(self) -> dict[str, pd.DataFrame]:
        """The main table under the experiment's name, then the extras: the run folder's CSV files."""
        return {self.experiment: self.table, **self.tables}

    @classmethod
    def load(cls, path: str | Path, experiment: str | None = None) -> Result:
        """A result back from a run folder (its results.json), as the experiments that need it read it.

        `path` may be the folder, its results.json or its main CSV; `experiment` checks that the folder is a
        run of that experiment. A folder without results.json (an older or a foreign one) is read from its CSV.
        """
        p = Path(path)
        folder = p.parent if p.is_file() else p
        results_json = folder / "results.json"
        if not results_json.is_file():
            name = experiment or p.stem
            csv = p if p.suffix == ".csv" else folder / f"{name}.csv"
            if not csv.is_file():
                raise AnatomyError(f"{shown(str(path))} is not a finished run folder (no results.json, no "
                                   f"{csv.name}): pass the folder written by `python -m anatomy {name}`.")
            return cls(name, pd.read_csv(csv), source={"run": str(folder)})
        payload = json.loads(results_json.read_text(encoding="utf-8"))
        name = payload.get("experiment", "")
        if experiment is not None and name != experiment:
            raise AnatomyError(f"{shown(str(path))} is a {name or 'foreign'} run, not a {experiment} run: pass the "
                               f"folder written by `python -m anatomy {experiment}`.")
        dtypes = payload.get("dtypes", {})
        for key, value in payload.get("tables", {}).items():  # names joined to the folder: plain names only
            plain_name(key, results_json)
            if isinstance(value, dict) and value.get("csv") != f"{key}.csv":
                raise AnatomyError(f"{shown(str(results_json))} names {shown(value.get('csv'))} as the file of its "
                                   f"table {shown(key)}: a table lives in <name>.csv beside results.json.")
        tables = {k: read_table(folder / f"{k}.csv", dtypes.get(k, {})) if (folder / f"{k}.csv").is_file()
                  else missing_table(folder, k) if isinstance(v, dict)
                  else typed(pd.DataFrame.from_records(v), dtypes.get(k, {})) if v else pd.DataFrame()
                  for k, v in payload.get("tables", {}).items()}
        main = payload.get("table", name)
        table = tables.pop(main, pd.DataFrame())
        arrays = {k: np.asarray(v, dtype=float) for k, v in payload.get("arrays", {}).items()}
        return cls(name, table, scalars=payload.get("results", {}), tables=tables, arrays=arrays,
                   timings=payload.get("timings", {}),
                   source={"run": str(folder), "model": payload.get("model"), "config": payload.get("config"),
                           "eval_set": payload.get("eval_set"), "needs": payload.get("needs")})


PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def plain_name(name: object, where: Path) -> str:
    """A table's name from a results.json, which may come from anyone's Hub repo: a plain file name (letters,
    digits, `_`, `.`, `-`; no path, no leading dot), or a one-line refusal. Joined to the run folder unchecked,
    "/etc/passwd" or "../x" would read a file of the server's."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise AnatomyError(f"{shown(str(where))} names a table {shown(str(name))}, which is not a plain file name: "
                           "the run folder is not one this tool wrote.")
    return name


def missing_table(folder: Path, name: str) -> pd.DataFrame:
    """A large table lives in its CSV only (results.json names it): without the file the run is incomplete."""
    raise AnatomyError(f"{shown(str(folder))} lacks {name}.csv, which its results.json names: the run folder is "
                       "incomplete; copy the whole folder, or run the experiment again.")


def read_table(csv: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    """A table from its CSV with the column types it was written with (results.json `dtypes`): a text column
    whose cells are all empty would otherwise come back as floats. CSV cannot tell an empty text from a
    missing one, so text columns come back with empty strings for both. Text columns are read as text, so a
    column of layer lists like "2" stays "2", not 2.0."""
    text = {c for c, t in dtypes.items() if t in ("str", "string", "object")}
    return typed(pd.read_csv(csv, dtype={c: str for c in text} or None), dtypes)


def typed(df: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """`df` with the column types it was written with, where its values allow them."""
    text = {c for c, t in dtypes.items() if t in ("str", "string", "object")}
    for column, dtype in dtypes.items():
        if column not in df.columns:
            continue
        if column in text:
            df[column] = df[column].fillna("").astype(str)
        elif str(df[column].dtype) != dtype:
            try:
                df[column] = df[column].astype(dtype)
            except (TypeError, ValueError):
                pass  # a column with missing values keeps the type that can hold them
    return df


@dataclass
class Artefacts:
    """What a run shows besides its tables: figures (PNG), the report (report.md) and extra files (name ->
    text, such as the budget's `budget.json`). Built once by the experiment's `artefacts` function; written
    by the CLI and shown and zipped by the app alike."""

    figures: dict[str, Figure]
    markdown: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Need:
    """An experiment whose result another one reads. `required`: refuse without it; otherwise the reader
    runs without it (budget without recovery: class-only rules). `computable`: when no run folder or
    session result is given, run it now with its defaults (importance for manipulation). `configure`: the
    needed experiment's config for the reader's config, or None where that config does not read the need
    at all (manipulation of typed layers), so nothing is loaded or computed in vain; absent: always read,
    computed with the needed experiment's defaults (pruning computes importance with its own ablation)."""

    experiment: str
    help: str
    required: bool = True
    computable: bool = True
    configure: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class StudyRole:
    """An experiment's part in the study (`python -m anatomy study`, the app's Study tab), declared beside the
    experiment so that joining the study is one declaration: `order` places it in the study (its needs still
    run first), `settings` are the study's own settings where the command's default differs, `quick` the
    reduced settings of `--quick` (both field name -> raw value, stated in study.md), `views` its per-layer
    columns of the glance figure and the agreement table, `panels` its tables for study.md (title -> table),
    `findings` the rules of the claims table that its results decide (`anatomy/findings.py`; a rule reading
    several experiments sits with the last of them)."""

    order: int
    settings: dict[str, object] = field(default_factory=dict)
    quick: dict[str, object] = field(default_factory=dict)
    views: Callable[[Result], dict[str, pd.Series]] | None = None
    panels: Callable[[Result], dict[str, pd.DataFrame]] | None = None
    findings: tuple[Callable[..., Any], ...] = ()


@dataclass(frozen=True)
class Experiment:
    """The declaration of one experiment: the single source for its CLI command, app tab and run folder.

    `run(model, eval_set, config, progress, **inputs) -> Result`, where `inputs` holds one `Result` (or None)
    per need, under the need's name, and `tokenizer` when `uses_tokenizer`.
    `artefacts(result, loaded, eval_set, config) -> Artefacts` draws the figures and writes the report.
    """

    name: str  # CLI command, app endpoint, run-folder and main-table name
    title: str
    summary: str  # one line: the CLI's command list and the tab's first line
    config: type
    run: Callable[..., Result]
    artefacts: Callable[..., Artefacts]
    needs: tuple[Need, ...] = ()
    uses_model: bool = True
    uses_eval: bool = True
    uses_tokenizer: bool = False
    description: str = ""  # the --help text (the module docstring)
    columns: tuple[str, ...] | Callable[[Result], list[str]] = ()  # the main table's columns the CLI prints
    # (all when empty); a function of the result where they depend on the run (recovery's thresholds)
    printed: Callable[[Result], pd.DataFrame] | None = None  # what the CLI prints instead, where that is a summary
    headline: Callable[[Result], str] | None = None  # one line under the table (CLI) and above it (app)
    aliases: tuple[str, ...] = ()  # further CLI command names (an earlier name that documented commands use)
    check: Callable[[Any, Any], None] | None = None  # (config, model): refuse what this model cannot run (a K
    # above its depth) once it is loaded, before any need is computed
    work: Callable[[Any, Any], float] = lambda config, shape: 1.0  # (config, work.Shape) -> the run's computing
    # in evaluation passes, known before it runs: how a study weighs its steps to come and how a public app
    # budgets a job (tests/test_public_limits.py checks that every experiment declares its own)
    study: StudyRole | None = None  # its part in the study, if it has one

    @property
    def default_out(self) -> str:
        return f"runs/{self.name}"


def registry() -> dict[str, Experiment]:
    """Every experiment declared in `anatomy/experiments/` (a module-level `EXPERIMENT`), by name."""
    from . import experiments

    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{experiments.__name__}.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            found[exp.name] = exp
    return found


def study_experiments() -> dict[str, Experiment]:
    """The experiments of the study, in its order (each declares a `StudyRole`)."""
    roles = {name: exp for name, exp in registry().items() if exp.study is not None}
    return dict(sorted(roles.items(), key=lambda item: item[1].study.order))


def get(name: str) -> Experiment:
    experiments = registry()
    if name not in experiments:
        raise AnatomyError(f"Unknown experiment {shown(name)}: use one of {', '.join(experiments)}.")
    return experiments[name]
