"""The earlier runs a later job reads (manipulation, pruning and budget read them): the session's own, or one
an API caller gives as its table in JSON.

`jobs.remember` keeps each experiment's zip; the run folder beside it is what the CLI would be given
(`--importance runs/importance`), so the app reads it with the same library readers as the CLI. A client
without a session of its own has no such run (a plain HTTP call), or another's: gradio's MCP server makes
every agent's tool calls through one client, so their session's latest run is whichever agent's ran last.
Such a client sends the table the needed experiment's endpoint returned, hostile input like any other
(`given_run`), never a path.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from anatomy.errors import AnatomyError, shown
from anatomy.experiment import Result

from .jobs import one_line
from .runs import inside

MAX_CHARS = 1_000_000  # a 100-layer importance table as JSON is about 40,000 characters
MAX_LITERAL_CHARS = 200_000  # the Python form is parsed into a syntax tree first: kept smaller
MAX_ROWS, MAX_COLUMNS, MAX_TEXT = 4096, 256, 100
MAX_LAYER = 100_000


def run_folder(state: dict | None, experiment: str, tab: str, hint: str = "") -> Path:
    """The folder of this session's latest `experiment` run; a message naming the tab to run when there is none."""
    archive = ((state or {}).get(experiment) or {}).get("zip")
    folder = inside(Path(archive).with_suffix("")) if archive else None
    if folder is None or not folder.is_dir():
        raise AnatomyError(f"No {experiment} result in this session yet: run the {tab} tab first "
                           f"(the app uses your latest run of it){hint}.")
    return folder


def has_run(state: dict | None, experiment: str) -> bool:
    """Whether this session has run `experiment` (its folder is then read by `run_folder`)."""
    return bool(((state or {}).get(experiment) or {}).get("zip"))


def _number(value: object) -> float | None:
    """A finite number, NaN for a missing one (JSON null: a threshold never reached), None when not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isnan(value) or math.isfinite(value) else None


def _layer(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() and 0 <= number <= MAX_LAYER else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


# a column's kind -> (its reader: the value, or None when the value is not of that kind; what it must be)
KINDS: dict[str, tuple[Callable[[object], object], str]] = {
    "layer": (_layer, f"a layer number (a whole number from 0 to {MAX_LAYER:,})"),
    "number": (_number, "a finite number or null"),
    "text": (_text, f"text of at most {MAX_TEXT} characters"),
    "flag": (_flag, "true or false"),
}


def _rows(payload: object, where: str, endpoint: str) -> tuple[list[str], list[list]]:
    """(headers, rows) of a table sent as {"headers": [...], "data": [[...], ...]} (what a table output returns
    to an API client) or as a list of row objects (pandas' `to_json(orient="records")`)."""
    if isinstance(payload, dict) and isinstance(payload.get("headers"), list) and isinstance(payload.get("data"), list):
        headers, rows = payload["headers"], payload["data"]
        if not all(isinstance(row, list) and len(row) == len(headers) for row in rows):
            raise AnatomyError(f"{where}: every row of 'data' must be a list of {len(headers)} values, one per header.")
    elif isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
        headers = list(dict.fromkeys(key for row in payload for key in row))
        rows = [[row.get(key) for key in headers] for row in payload]
    else:
        raise AnatomyError(f"{where} must be a table: {{\"headers\": [...], \"data\": [[...], ...]}} as {endpoint} "
                           "returns it, or a list of row objects.")
    if not all(isinstance(h, str) and len(h) <= MAX_TEXT for h in headers) or len(headers) > MAX_COLUMNS:
        raise AnatomyError(f"{where}: the headers must be at most {MAX_COLUMNS} column names (text).")
    if not 0 < len(rows) <= MAX_ROWS:
        raise AnatomyError(f"{where} must have 1 to {MAX_ROWS:,} rows, got {len(rows):,}.")
    return headers, rows


class _NaNs(ast.NodeTransformer):
    """A Python table's `nan` (a float NaN as repr writes it) read as a missing value, like JSON's null."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Constant(None) if node.id == "nan" else node


def table_payload(text: str, where: str) -> object:
    """The JSON of a table, or the Python form of the same value that an MCP tool's result shows (gradio writes
    a table output there as a dict's repr: single quotes, True, None, nan), read as literals only: never run."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        failure = err
    if len(text) <= MAX_LITERAL_CHARS and text.lstrip().startswith(("{", "[")):
        try:  # the parser refuses deep nesting in one SyntaxError (too many nested parentheses)
            return ast.literal_eval(_NaNs().visit(ast.parse(text, mode="eval")))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    raise AnatomyError(one_line(f"{where} is not JSON ({failure}).", 300))


def quoted(value: object) -> str:
    """A sent value inside a message: a scalar as it was sent, a list or object by its kind alone (its text may
    nest as deep as JSON allows)."""
    return shown(json.dumps(value)) if isinstance(value, (str, int, float, bool, type(None))) else \
        f"a JSON {'list' if isinstance(value, list) else 'object'}"


def given_run(text: object, need: str, columns: Mapping[str, str]) -> Result | None:
    """The `need` run an API caller gave as its table in JSON, or None when the input is empty (the session's
    latest run then serves). `columns` are the columns the reader uses, by kind (`KINDS`; a name ending in '*'
    stands for every column it begins, at least one); only those are kept, each value checked, so what reaches
    the experiment is a table of plain numbers, flags and short texts with unique layers, whatever was sent."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    where, endpoint = f"The {need} run given as JSON ('{need}')", f"/{need}"
    if not isinstance(text, str):
        raise AnatomyError(f"{where} must be text: the table as JSON.")
    if len(text) > MAX_CHARS:
        raise AnatomyError(f"{where} has {len(text):,} characters; at most {MAX_CHARS:,}.")
    headers, rows = _rows(table_payload(text, where), where, endpoint)
    table = {}
    for name, kind in columns.items():
        matches = [h for h in headers if h.startswith(name[:-1])] if name.endswith("*") else \
            [name] if name in headers else []
        if not matches:
            raise AnatomyError(f"{where} has no column {shown(name)}; it needs {', '.join(columns)} (as {endpoint} "
                               f"returns them), got {shown(', '.join(headers))}.")
        read, must = KINDS[kind]
        for column in matches:
            index = headers.index(column)
            values = [read(row[index]) for row in rows]
            bad = next((i for i, value in enumerate(values) if value is None), None)
            if bad is not None:
                raise AnatomyError(f"{where}: row {bad}, column {shown(column)} must be {must}, got "
                                   f"{quoted(rows[bad][index])}.")
            table[column] = values
    layers = [v for name, kind in columns.items() if kind == "layer" for v in table[name]]
    if len(set(layers)) != len(layers):
        raise AnatomyError(f"{where} names a layer twice: one row per layer.")
    return Result(need, pd.DataFrame(table), source={"run": f"{need} table given as JSON"})
