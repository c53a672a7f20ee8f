"""The dataset card of a results repo: YAML metadata a Hub search can filter on, then what was found.

Built with huggingface_hub's own `DatasetCard`/`DatasetCardData`, so `DatasetCard.load` parses it back. The
metadata names the analysed model and its revision, the evaluation text's name and sha256 and the version of
this package; the body holds the headline (the experiment's, or a study's claims table), links to the figures
and the list of every folder the repo holds after this push.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from huggingface_hub import DatasetCard, DatasetCardData

from . import __version__
from .experiment import Result, registry

LICENSE = "cc-by-4.0"  # measurements anyone may reuse with attribution; the model keeps its own license
TAGS = ["transformer-anatomy", "interpretability", "layer-analysis"]


def card_data(payload: dict, path_in_repo: str) -> DatasetCardData:
    """The YAML metadata of one run (for a study: of one of its steps; they share model and text), tagged with
    the experiment's name or `study`, the last part of `path_in_repo`."""
    model, eval_set = payload.get("model") or {}, payload.get("eval_set") or {}
    return DatasetCardData(
        license=LICENSE, tags=[*TAGS, path_in_repo.rsplit("/", 1)[-1]],
        pretty_name=f"Transformer Anatomy: {model.get('name', 'no model')}",
        analysed_model=model.get("name"), analysed_model_revision=model.get("revision"),
        analysed_model_source=model.get("source"),
        eval_set={"name": eval_set.get("name"), "sha256": eval_set.get("sha256"),
                  "num_texts": eval_set.get("num_texts"), "num_tokens": eval_set.get("num_tokens")},
        anatomy_version=(payload.get("environment") or {}).get("anatomy", __version__), latest=path_in_repo)


def headline(folder: Path, payload: dict) -> str:
    """What the run found, in the words the CLI prints: the experiment's headline, or the claims table."""
    if (folder / "claims.csv").is_file():
        return pd.read_csv(folder / "claims.csv").to_markdown(index=False)
    experiment = registry().get(payload.get("experiment", ""))
    if experiment is not None and experiment.headline is not None:
        return experiment.headline(Result.load(folder, experiment.name))
    return f"See `{payload.get('experiment', 'the run')}.csv` for the table."


def results_card(folder: Path, payload: dict, path_in_repo: str, held: list[str]) -> DatasetCard:
    """The card for the repo after pushing `folder` (`payload`: its results.json, or a study step's) to
    `path_in_repo`; `held`: every folder the repo then holds."""
    model = payload.get("model") or {}
    revision = f" @ `{model['revision']}`" if model.get("revision") else ""
    figures = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")
                     if not any(part.endswith(".partial") for part in p.parts))  # unfinished steps are not pushed
    body = ["# Transformer Anatomy results", "",
            f"Latest push: `{path_in_repo}/`, model `{model.get('name', 'none')}`{revision}, evaluation text "
            f"{(payload.get('eval_set') or {}).get('name', 'none')}.", "",
            "## Headline", "", headline(folder, payload), ""]
    if figures:
        body += ["## Figures", "", *(f"![{f}]({path_in_repo}/{f})" for f in figures), ""]
    body += ["## In this repository", "", "One folder per model and experiment (`results.json` holds every number, "
             "the model revision and the settings):", "", *(f"- `{h}/`" for h in held), "",
             "List them with `python -m anatomy atlas OWNER/NAME`; reuse one with `--from-hub OWNER/NAME`.", ""]
    data = card_data(payload, path_in_repo)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))

