"""Publishing a finished run folder or study folder to a Hub dataset repo, one folder per model and experiment.

A results repo holds `<model-slug>/<experiment>/` (a study: `<model-slug>/study/`) and a dataset card at its
root; every push is one commit that adds or replaces its own folder and the card, never the other folders,
so one repo gathers the runs of many models. Everything that can be refused (the repo id, the token, a repo
of the wrong type, an unreachable Hub) is refused by `check_target` before a model is loaded, and every
refusal is one line that says how to push the folder later. The token is handed to huggingface_hub only:
the CLI's (HF_TOKEN or the stored login) unless a caller passes one, as the app passes its visitor's.
The uploaded copy names local files by their names only (anatomy/hub_paths.py).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import httpx2 as httpx
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .errors import AnatomyError, shown
from .hub_card import results_card
from .hub_paths import local_paths, name_only
from .model_spec import parse_model_spec

REPO_TYPE = "dataset"
STUDY = "study"
HUB_ERRORS = (HfHubHTTPError, httpx.TransportError, OSError)  # what a Hub call raises that is not our bug
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def later(folder: str | Path | None, repo_id: str, command: str = "push") -> str:
    """The way out every refusal ends with: the folder stays, and this command (`push`, `push-model`) pushes it;
    before a run (its folder not written yet) nothing is lost, and the run can go ahead without the push."""
    run = "RUN" if folder is None else str(folder)
    push_later = f"`python -m anatomy {command} {run} {repo_id}`"
    if folder is not None and not (Path(folder) / "results.json").is_file() and not is_study(Path(folder)):
        return f"nothing was computed; run without --push-to-hub and publish the folder later with {push_later}"
    return f"the results stay on disk; push them later with {push_later}"


def check_repo_id(repo_id: str, folder: str | Path | None = None, command: str = "push") -> str:
    """`repo_id` if it is OWNER/NAME as the Hub spells repo ids (no URL, no `datasets/` prefix, no `..`)."""
    text = (repo_id or "").strip()
    if not REPO_ID.fullmatch(text) or ".." in text or text.endswith(".git"):
        raise AnatomyError(f"{shown(repo_id)} is not a Hub repo id: give OWNER/NAME, e.g. alice/anatomy-results "
                           f"(no URL, no 'datasets/' prefix); {later(folder, 'OWNER/NAME', command)}.")
    return text


def token_or_refuse(repo_id: str, folder: str | Path | None = None, command: str = "push",
                    token: str | None = None) -> str:
    """The write token: `token` where the caller has one (the app: its visitor's, so the server's own login is
    never asked), else `HF_TOKEN`, else the stored login (`hf auth login`). Never printed or logged."""
    token = token or get_token()
    if not token:
        raise AnatomyError(f"No Hugging Face token: set HF_TOKEN to a write token or run `hf auth login`; "
                           f"{later(folder, repo_id, command)}.")
    return token


def hub_failure(err: Exception, repo_id: str, doing: str, way_out: str) -> AnatomyError:
    """One line for a Hub error, built from its kind and status only (an error's text may quote headers);
    `way_out` ends it: how to push later (`later`), or what to do instead of reading."""
    if isinstance(err, httpx.TransportError):
        return AnatomyError(f"The Hub is unreachable ({type(err).__name__}) while {doing}; {way_out}.")
    if not isinstance(err, HfHubHTTPError):  # the local disk: its own words name the path, not the token
        return AnatomyError(f"{type(err).__name__} while {doing}: {getattr(err, 'strerror', None) or err}; {way_out}.")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return AnatomyError(f"The Hub refused the token for {repo_id} (HTTP {status}) while {doing}: use a token of "
                            f"its owner, with write access to push; {way_out}.")
    return AnatomyError(f"The Hub refused {doing} ({type(err).__name__}, HTTP {status}); {way_out}.")


def other_kind(api: HfApi, repo_id: str) -> str | None:
    """What `repo_id` is where it is no dataset: `model`, `space`, or None where nothing has that id."""
    return next((kind for kind in ("model", "space") if api.repo_exists(repo_id, repo_type=kind)), None)


def check_target(repo_id: str, folder: str | Path | None = None, token: str | None = None,
                 way_out: str | None = None) -> str:
    """Everything about a push that can be refused before a model is loaded; returns the checked repo id.
    `token` and `way_out` as in `push`.

    A repo id that exists as a model or Space but not as a dataset is refused: the user most likely named
    their model repo, and results pushed there would land in a second repo of the same name.
    """
    repo_id = check_repo_id(repo_id, folder)
    way_out = way_out or later(folder, repo_id)
    api = HfApi(token=token_or_refuse(repo_id, folder, token=token))
    try:
        if api.repo_exists(repo_id, repo_type=REPO_TYPE):
            return repo_id
        other = other_kind(api, repo_id)
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"looking up {repo_id}", way_out) from None
    if other is not None:
        raise AnatomyError(f"{repo_id} is a {other} repo; results go to a dataset repo: give another name, e.g. "
                           f"{repo_id}-anatomy; {way_out}.")
    return repo_id


def is_study(folder: Path) -> bool:
    return (folder / "study.md").is_file() and not (folder / "results.json").is_file()


def run_results(folder: Path) -> list[dict]:
    """The results.json payloads of a run folder (one) or of a study folder's finished steps (one each)."""
    paths = ([folder / "results.json"] if not is_study(folder) else
             sorted(p for p in folder.glob("*/results.json") if not p.parent.name.endswith(".partial")))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def filed_model(payload: dict) -> dict | None:
    """The model a run is filed under: its own, else (a budget run, which reads tables, not a model) the model
    of the first result it read that had one."""
    needs = [record.get("model") for record in (payload.get("needs") or {}).values() if record]
    return payload.get("model") or next((model for model in needs if model), None)


def spec_slug(spec: str, local: bool = True) -> str:
    """The repo folder of the model a model spec names (`--model`, the app's model box), as a push spells it."""
    parsed = parse_model_spec(spec, local)
    return model_slug({"source": parsed.kind, "name": spec.strip() if parsed.kind == "hub" else str(parsed.path)})


def model_slug(model: dict | None) -> str:
    """The repo folder of a model: a Hub id with `--` for `/` (as the Hub's cache spells it), `embedded`, or
    the name of a local folder or GGUF file (its path is the publisher's, not the model's)."""
    if not model:
        return "no-model"
    source, name = model.get("source"), str(model.get("name", ""))
    text = ("embedded" if source == "embedded" else name.replace("/", "--") if source == "hub" else
            Path(name).stem if source == "gguf" else Path(name).name)
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "model"


def target_path(folder: Path) -> str:
    """Where a folder goes in the repo: `<model-slug>/<experiment>` or `<model-slug>/study`."""
    payloads = run_results(folder)
    if not payloads:
        raise AnatomyError(f"{shown(str(folder))} is not a finished run or study folder (no results.json, no "
                           "study.md): pass the folder an experiment or `python -m anatomy study` wrote.")
    name = STUDY if is_study(folder) else payloads[0]["experiment"]
    return f"{model_slug(filed_model(payloads[0]))}/{name}"


def push(folder: str | Path, repo_id: str, token: str | None = None, way_out: str | None = None) -> str:
    """Upload the run or study `folder` and the repo's card in one commit; returns the commit URL. `token`: as
    in `token_or_refuse`; `way_out` ends every refusal (default: the `push` command that publishes it later)."""
    folder = Path(folder)
    path_in_repo = target_path(folder)
    repo_id = check_repo_id(repo_id, folder)
    way_out = way_out or later(folder, repo_id)
    api = HfApi(token=token_or_refuse(repo_id, folder, token=token))
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, exist_ok=True)
        held = api.list_repo_files(repo_id, repo_type=REPO_TYPE)
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"creating {repo_id}", way_out) from None
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / path_in_repo
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("*.partial", "*.zip"))  # unfinished
        # study steps and the app's downloads are not results
        name_only(staged, local_paths(run_results(folder)))
        payload = run_results(staged)[0]
        card = results_card(staged, {**payload, "model": filed_model(payload)}, path_in_repo,
                            sorted({*folders_in(held), path_in_repo}))
        card.save(Path(tmp) / "README.md")
        return upload(api, tmp, repo_id, REPO_TYPE, f"Add {path_in_repo}", way_out)


def upload(api: HfApi, staged: str | Path, repo_id: str, repo_type: str, message: str, way_out: str) -> str:
    """One commit of the `staged` folder; returns its URL. The Hub's refusal of a card's YAML (a ValueError
    quoting the Hub's own reasons) is one line like any other refusal, ended by `way_out`."""
    try:
        info = api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type=repo_type, commit_message=message)
    except ValueError as err:
        if not str(err).startswith("Invalid metadata"):
            raise
        reasons = "; ".join(line.strip("- ") for line in str(err).splitlines()[1:]) or str(err)
        raise AnatomyError(f"The Hub refused the card of {repo_id}: {reasons}; {way_out}.") from None
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"pushing to {repo_id}", way_out) from None
    return str(getattr(info, "commit_url", info))


def folders_in(files: list[str]) -> list[str]:
    """The run and study folders a repo holds, from its file list: `<slug>/<experiment>` with a results.json,
    `<slug>/study` for the steps of a study."""
    found = set()
    for name in files:
        parts = name.split("/")
        if parts[-1] != "results.json" or len(parts) < 3:
            continue
        found.add("/".join(parts[:2]))
    return sorted(found)

