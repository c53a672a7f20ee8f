"""The atlas in the app: where a results repo (ANATOMY_ATLAS=OWNER/NAME) holds a published run of the chosen
model, the Study tab and each experiment tab offer it ("measured on <date> with <settings>; run it again?"),
and a button shows it in the tab's usual outputs without computing anything.

The repo's file list is read once and kept for a few minutes, shared by every tab (one `list_repo_files`
per visitor token and TTL, not one per tab and model change); a stored run's own results.json is read once
when first offered. Every read waits at most `DEADLINE_S`: an offline app (HF_HUB_OFFLINE), an unreachable
Hub or a slow answer means no offer, at once, with nothing shown (the read goes on in the background, where
huggingface_hub retries a refused connection for about 20 s, and a later choice of model finds its answer). A failure is remembered for `FAILED_TTL_S`, so an offline app does not
retry on every change. Reads carry the visitor's token or none at all (token=False), never the deployer's.
Only a Hub id or `embedded` gets an offer: a local folder's name says nothing about what it holds.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import shutil
import threading
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from huggingface_hub import HfApi, constants, hf_hub_download
from matplotlib.figure import Figure
from matplotlib.image import imread

from anatomy import atlas, hub
from anatomy.errors import AnatomyError, shown
from anatomy.experiment import Result, registry
from anatomy.model_spec import parse_model_spec
from anatomy.report import to_jsonable

from . import jobs, runs
from .access import env_flag, visitor
from .common import Shared, named

ATLAS_ENV = "ANATOMY_ATLAS"
DEADLINE_S = 1.0  # the longest a choice of model waits for the Hub before it goes on without an offer
LIST_TTL_S = 300.0  # a file list read is reused this long: a new push shows within five minutes
FAILED_TTL_S = 60.0  # an unreachable Hub is not asked again for a minute
OFFERED_KINDS = ("hub", "embedded")
MAX_BYTES = 64 * 2**20  # the most a published folder may hold (tables, figures, report) for the app to read it
MAX_REPORT = 100_000  # characters of a published report shown
WAY_OUT = "try again when the Hub answers, or run the experiment here"

log = logging.getLogger("space")
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="atlas")
_GUARD = threading.Lock()
_CACHE: dict[tuple, tuple[float, object]] = {}  # (what, repo, path, token hash) -> (expires, value or None)
_PENDING: dict[tuple, Future] = {}


def atlas_repo() -> str | None:
    """The results repo the deployer set (ANATOMY_ATLAS), if it is a repo id; None: no atlas, no offers."""
    text = os.environ.get(ATLAS_ENV, "").strip()
    if not text:
        return None
    try:
        return hub.check_repo_id(text)
    except AnatomyError:
        log.warning("%s is not OWNER/NAME: the app offers no published results", ATLAS_ENV)
        return None


def offline() -> bool:
    return bool(env_flag("HF_HUB_OFFLINE")) or constants.HF_HUB_OFFLINE


def cached(key: tuple, read, ttl: float, deadline: float):
    """`read()` (a Hub call), its value kept `ttl` seconds; None, at once or at `deadline` (time.monotonic), when
    the value is not known in time or the read failed (then remembered for FAILED_TTL_S)."""
    now = time.monotonic()
    with _GUARD:
        expires, value = _CACHE.get(key, (0.0, None))
        if expires > now:
            return value
        future = _PENDING.get(key)
        if future is None:
            future = _PENDING[key] = _POOL.submit(_read, key, read, ttl)
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        return None


def _read(key: tuple, read, ttl: float):
    try:
        value, keep = read(), ttl
    except Exception as err:  # noqa: BLE001 - an offer is optional: any failure means none
        log.info("atlas read failed (%s)", type(err).__name__)
        value, keep = None, FAILED_TTL_S
    with _GUARD:
        _CACHE[key] = (time.monotonic() + keep, value)
        _PENDING.pop(key, None)
    return value


def forget() -> None:
    """Drop every cached read (a test, or a deployer who just pushed, starts afresh)."""
    with _GUARD:
        _CACHE.clear()


def token_key(token: str | None) -> str:
    """The cache's key for a token: its hash, so the cache holds no token, and one visitor's private reads are
    not served to another."""
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Offer:
    """A published run of the chosen model and an experiment (or the study): where it is and what it measured."""

    repo: str
    path: str  # <model-slug>/<experiment> or <model-slug>/study
    written: str
    settings: str

    @property
    def text(self) -> str:
        url = f"https://huggingface.co/datasets/{self.repo}/tree/main/{self.path}"
        return (f"A published result exists in [{self.repo}]({url}): measured on {escaped(self.written, 40)} "
                f"with {escaped(self.settings)}; run it again?")


def find(spec: str, name: str, token: str | None, public: bool, deadline: float | None = None) -> Offer | None:
    """The offer for the model `spec` and the experiment `name` (or `study`), or None (no atlas, offline, not
    published, not known by `deadline`: by default DEADLINE_S from now)."""
    deadline = time.monotonic() + DEADLINE_S if deadline is None else deadline
    repo = atlas_repo()
    if repo is None or offline():
        return None
    try:
        parsed = parse_model_spec(spec, local=not public)
    except AnatomyError:
        return None
    if parsed.kind not in OFFERED_KINDS:
        return None
    path, who = f"{hub.spec_slug(spec, local=not public)}/{name}", token_key(token)
    files = cached(("files", repo, who), lambda: list_files(repo, token), LIST_TTL_S, deadline) or []
    stored = (sorted(f for f in files if f.startswith(f"{path}/") and f.endswith("/results.json"))
              if name == hub.STUDY else [f for f in files if f == f"{path}/results.json"])
    if not stored:
        return None
    payload = cached(("payload", repo, stored[0], who), lambda: read_json(repo, stored[0], token), LIST_TTL_S,
                     deadline)
    if payload is None:
        return None
    steps = [f.removeprefix(f"{path}/").split("/")[0] for f in stored] if name == hub.STUDY else []
    return Offer(repo, path, str(payload.get("written") or "an unknown date").replace("T", " "),
                 settings(payload, steps))


def list_files(repo: str, token: str | None) -> list[str]:
    """The atlas's file list, read with the visitor's token or none (False: not even an implicit one)."""
    return HfApi(token=token or False).list_repo_files(repo, repo_type=hub.REPO_TYPE)


def read_json(repo: str, path: str, token: str | None) -> dict:
    """One results.json of the atlas (kept in the Hub cache on disk), read as `list_files` reads."""
    return json.loads(Path(hf_hub_download(repo, path, repo_type=hub.REPO_TYPE, token=token or False))
                      .read_text(encoding="utf-8"))


def settings(payload: dict, steps: list[str]) -> str:
    """What a stored run was measured with, in a few words: the model's commit, the text, and the config's
    fields that differ from the experiment's defaults (a study: its steps)."""
    model, eval_set = payload.get("model") or {}, payload.get("eval_set") or {}
    words = []
    if model.get("revision"):
        words.append(f"commit {str(model['revision'])[:10]}")
    if eval_set:
        words.append(f"{eval_set.get('name')} ({eval_set.get('num_texts')} texts, max {eval_set.get('max_length')} "
                     "tokens)")
    if steps:
        words.append("the steps " + ", ".join(steps))
    else:
        experiment = registry().get(payload.get("experiment", ""))
        defaults = to_jsonable(experiment.config()) if experiment is not None else {}
        config = payload.get("config") or {}
        changed = [f"{k}={json.dumps(v)}" for k, v in config.items() if k in defaults and defaults[k] != v]
        words.append(", ".join(changed) if changed else "the default settings")
    return "; ".join(words)


def offers(names: list[str]):
    """The handler that fills every tab's offer when a model is chosen: one (text, button) pair per name."""
    def offer_all(spec: str, oauth_token: gr.OAuthToken | None = None) -> list:
        access = visitor(oauth_token)
        token = oauth_token.token if oauth_token is not None else None
        deadline = time.monotonic() + DEADLINE_S  # one wait for every tab together
        updates = []
        for name in names:
            found = find(spec, name, token, access.public, deadline)
            updates += [gr.update(value=found.text if found else "", visible=found is not None),
                        gr.update(visible=found is not None)]
        return updates
    return offer_all


def fetch(spec: str, name: str, request: gr.Request | None, oauth_token: gr.OAuthToken | None) -> tuple[Path, str]:
    """The published run of `spec` and `name` as a finished run folder of this session (zipped, swept with the
    others), and the words that open its headline; refused in one line when none is known."""
    access = visitor(oauth_token)
    token = oauth_token.token if oauth_token is not None else None
    found = find(spec, name, token, access.public)
    if found is None:
        raise AnatomyError("No published result of this model and experiment is known now: run it here.")
    check_size(found, token)
    with runs.new_run(jobs.session_id(request), name) as run, tempfile.TemporaryDirectory() as tmp:
        stored = atlas.download(found.repo, found.path, tmp, token=token or False, way_out=WAY_OUT)
        try:
            check_published(stored, spec, name, access.public)
        except AnatomyError as err:  # the message names the repo's folder, not this server's scratch folder
            raise AnatomyError(str(err).replace(str(Path(tmp)), found.repo)) from None
        shutil.copytree(stored, run.path, dirs_exist_ok=True)
    return run.path, escaped(f"Published result from {found.repo}, measured on {found.written} (nothing computed "
                             "here). ")


def check_size(found: Offer, token: str | None) -> None:
    """Refuse a published folder larger than MAX_BYTES (read from the file list's sizes, before downloading)."""
    files = HfApi(token=token or False).list_repo_tree(found.repo, path_in_repo=found.path, recursive=True,
                                                       repo_type=hub.REPO_TYPE)
    size = sum(getattr(f, "size", 0) or 0 for f in files)
    if size > MAX_BYTES:
        raise AnatomyError(f"The published result is {size / 2**20:,.0f} MB, more than this app reads "
                           f"({MAX_BYTES / 2**20:,.0f} MB): run the experiment here instead.")


def check_published(folder: Path, spec: str, name: str, public: bool) -> None:
    """A published folder is read only if every run in it is of the experiment and the model it is filed under
    (its results.json says so) and names its tables as plain files beside it (`Result.load` checks them): an
    atlas is anyone's repo, and its results.json is input like any other."""
    runs_ = {step.name: step for step in folder.iterdir() if step.is_dir()} if name == hub.STUDY else {name: folder}
    slug = hub.spec_slug(spec, local=not public)
    for experiment, run in runs_.items():
        result = Result.load(run, experiment)
        if hub.model_slug(result.source.get("model")) != slug:
            raise AnatomyError(f"The published {experiment} run filed under this model measured another model "
                               f"({shown(hub.model_slug(result.source.get('model')))}): it is not shown.")


def escaped(text: str, limit: int = 300) -> str:
    """Text read from a published run, safe to put inside a line of Markdown: cut to `limit` characters, on one
    line, HTML escaped, and the characters that make links, emphasis, code or tables there escaped too."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return re.sub(r"([\\`*_{}\[\]|~])", r"\\\1", html.escape(text, quote=False))


def published_report(text: str) -> str:
    """A published run's report.md or study.md, shown as plain text (a fenced block Markdown does not render:
    a hostile report's links, HTML and images stay text), cut to MAX_REPORT characters."""
    text = text.rstrip() if len(text) <= MAX_REPORT else text[:MAX_REPORT] + "\n... (cut)"
    return "```text\n" + text.replace("`", "'") + "\n```"


def image_figure(path: Path) -> Figure | None:
    """A stored figure (PNG) as a figure gr.Plot shows, at its own size; None where the run has none."""
    if not path.is_file():
        return None
    image = imread(path)
    height, width = image.shape[:2]
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(image)
    axes.axis("off")
    return figure


def offer_row(name: str) -> tuple[gr.Markdown, gr.Button]:
    """A tab's offer, hidden until `offers` finds a published run of the chosen model."""
    with gr.Row():
        text = gr.Markdown(visible=False, elem_id=f"{name}-offer")
        button = gr.Button("Show the published result", visible=False, scale=0, min_width=220)
    return text, button


def wire(shared: Shared, triggers: list) -> None:
    """Every tab's offer refreshed on `triggers` (the page's load, a change of model) by one call."""
    names = [name for name, _, _ in shared.offers]
    outputs = [component for _, text, button in shared.offers for component in (text, button)]
    gr.on(triggers, named(offers(names), "published_offers"), shared.model, outputs, api_name="published_offers",
          queue=False)
