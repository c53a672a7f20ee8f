"""Reading a results repo: what it holds (`atlas`), and one stored run reused instead of recomputed (`--from-hub`).

A stored run is reused only when it measured what the command would measure now: the same model (and, for a
Hub model, the same commit) and dtype, the same evaluation text (its sha256, max_length and seed) and the same
config, and the results it read (its needs: an importance map given or computed) measured what they would
measure now. Otherwise the differences are listed and nothing is computed: `--from-hub` means "reuse or
refuse", and the user drops the flag to compute anew.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from huggingface_hub import HfApi, get_token, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from .claims import RULES_VERSION
from .errors import AnatomyError
from .experiment import Experiment, Result, registry
from .hub import HUB_ERRORS, REPO_TYPE, check_repo_id, folders_in, hub_failure, model_slug, other_kind
from .report import to_jsonable
from .run import need_record

READ_LATER = "try again when the Hub answers, or drop --from-hub to compute the result here"
ATLAS_COLUMNS = ["folder", "model", "experiment", "revision", "date", "rules"]


def reader(token: str | bool | None) -> str | bool | None:
    """The token a read goes with: the one given (the app: its visitor's, or False for none), else the CLI's
    login where there is one."""
    return (get_token() or None) if token is None else token


def repo_files(repo_id: str, token: str | bool | None = None, way_out: str = READ_LATER) -> list[str]:
    """The repo's file list; a missing repo, or a model repo named instead of a results repo, in one line."""
    repo_id = check_repo_id(repo_id)
    api = HfApi(token=reader(token))
    try:
        try:
            return api.list_repo_files(repo_id, repo_type=REPO_TYPE)
        except RepositoryNotFoundError:
            kind = other_kind(api, repo_id)
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"listing {repo_id}", way_out) from None
    what = f"a {kind} repo, not a results (dataset) repo" if kind else "not a dataset repo on the Hub (or private)"
    raise AnatomyError(f"{repo_id} is {what}: give the repo `--push-to-hub` wrote.")


def atlas(repo_id: str) -> pd.DataFrame:
    """One row per stored run (a study's steps each their own): model, experiment, revision, date written, and
    the claims rules it was judged under."""
    files = repo_files(repo_id)
    rows = []
    for name in sorted(f for f in files if f.endswith("/results.json")):
        try:
            payload = json.loads(Path(hf_hub_download(repo_id, name, repo_type=REPO_TYPE, token=get_token() or None))
                                 .read_text(encoding="utf-8"))
        except HUB_ERRORS as err:
            raise hub_failure(err, repo_id, f"reading {name}", READ_LATER) from None
        model = payload.get("model") or {}
        rows.append({"folder": name.removesuffix("/results.json"), "model": model.get("name"),
                     "experiment": payload.get("experiment"), "revision": model.get("revision"),
                     "date": payload.get("written", ""), "rules": rules_label(payload)})
    return pd.DataFrame(rows, columns=ATLAS_COLUMNS)


def rules_label(payload: dict) -> str:
    """The claims rules a stored run was judged under: a results.json from before rules were versioned holds
    version 1's verdicts (`anatomy/claims.py`), marked as older rules."""
    rules = int(payload.get("rules", 1))
    return f"v{rules}" + (" (older rules)" if rules < RULES_VERSION else "")


def download(repo_id: str, path_in_repo: str, into: str | Path, token: str | bool | None = None,
             way_out: str = READ_LATER) -> Path:
    """The stored folder `path_in_repo` downloaded under `into` (a scratch folder: it becomes a run folder
    only once it is found to match); refused if the repo lacks it. `token` as in `reader`."""
    files = repo_files(repo_id, token, way_out)
    if path_in_repo not in folders_in(files):
        held = ", ".join(folders_in(files)) or "nothing yet"
        raise AnatomyError(f"{repo_id} holds no {path_in_repo}/ (it holds: {held}): drop --from-hub to compute it.")
    try:
        snapshot_download(repo_id, repo_type=REPO_TYPE, allow_patterns=[f"{path_in_repo}/*"], local_dir=into,
                          token=reader(token))
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"downloading {path_in_repo}", way_out) from None
    return Path(into) / path_in_repo


def keep(stored: Path, out: str | Path) -> Path:
    """The checked stored folder as the run folder `out`: its files written over those of the same name, as a
    run writes its folder; nothing else in `out` is removed (it may be any folder the user named)."""
    return Path(shutil.copytree(stored, out, dirs_exist_ok=True))


def differences(stored: dict, expected: dict) -> list[str]:
    """What differs between a stored results.json and what the command would run now (None: not checked)."""
    out = []
    for key, want in expected.items():
        have = stored.get(key)
        if want is None or have == want:
            continue
        if isinstance(want, dict) and isinstance(have, dict):  # a config: the fields that differ, by name
            out += [f"{key} {k}: stored {json.dumps(have.get(k))}, asked {json.dumps(want.get(k))}"
                    for k in sorted({*want, *have}) if have.get(k) != want.get(k)]
        else:
            out.append(f"{key}: stored {json.dumps(have)[:80]}, asked {json.dumps(want)[:80]}")
    return out


def stored_key(payload: dict) -> dict:
    """The parts of a results.json that decide its numbers, as `differences` compares them."""
    model, eval_set = payload.get("model") or {}, payload.get("eval_set") or {}
    return {"model": model_slug(model), "revision": model.get("revision"), "dtype": model.get("dtype"),
            "autocast": model.get("autocast") or "off",
            "eval_sha256": eval_set.get("sha256"), "eval_max_length": eval_set.get("max_length"),
            "eval_seed": eval_set.get("seed"),
            "config": payload.get("config")}


def expected_needs(experiment: Experiment, config: object, given: dict[str, Result], base: dict) -> dict:
    """The key each need of a run would have now: a given run's own, or (computed now) the command's model and
    text (`base`) with the config the need is computed with; None where the run would read none. A need this
    config does not read is left out (the config itself is compared)."""
    out: dict[str, dict | None] = {}
    for need in experiment.needs:
        wanted = need.configure(config) if need.configure is not None else None
        if need.configure is not None and wanted is None:
            continue
        if need.experiment in given:
            out[need.experiment] = stored_key(need_record(given[need.experiment]))
        elif need.computable:
            out[need.experiment] = {**base, "config": to_jsonable(wanted or registry()[need.experiment].config())}
        else:
            out[need.experiment] = None
    return out


def need_differences(payload: dict, expected: dict) -> list[str]:
    """What differs between the results a stored run read and those the command would read now; a run stored
    before runs recorded their needs cannot be checked, and is refused."""
    if not expected:
        return []
    stored = payload.get("needs")
    if stored is None:
        return ["the stored run does not record which " + " and ".join(expected) + " result it read"]
    out = []
    for name, want in expected.items():
        have = stored.get(name)
        if (have is None) != (want is None):
            out.append(f"{name}: stored {'none' if have is None else 'one'}, asked {'none' if want is None else 'one'}")
        elif have is not None:
            out += [f"{name}'s {line}" for line in differences(stored_key(have), want)]
    return out
