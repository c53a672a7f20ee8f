"""The session's earlier runs as inputs of a later job (manipulation, pruning and budget read them).

`jobs.remember` keeps each experiment's zip; the run folder beside it is what the CLI would be given
(`--importance runs/importance`), so the app reads it with the same library readers as the CLI.
"""

from __future__ import annotations

from pathlib import Path

from anatomy.errors import AnatomyError

from .runs import inside


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
