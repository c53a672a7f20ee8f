"""Publishing a model a run exported (`prune --save`, `plans --save`) as a Hub model repo with a ModelCard.

The card is written from the run's results.json, so it states what was measured, not what was intended: the
base model and its revision (`base_model` links the repo to it on the Hub), what was changed (the layers
removed or the plan), PPL before and after with their 95% intervals on the run's evaluation text, the same
numbers as `model-index` metrics, and for pruning the mergekit passthrough YAML that builds the same model.
A run with `--tasks` adds each task's accuracy after the edit to `model-index` (task, metric, value, stderr
and the lm-eval version that measured it) and the `lm_eval` command that scores the pushed model again.
The folder itself is a standard transformers folder: it loads with `AutoModelForCausalLM` alone. As with
results (anatomy/hub_paths.py), the card names a local base model or text file by its name only.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .errors import AnatomyError, shown
from .experiment import Result
from .hub import HUB_ERRORS, check_repo_id, hub_failure, later, run_results, token_or_refuse, upload
from .hub_paths import local_paths, name_only

PUSH_MODEL = "push-model"
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"  # what scored a card's task results


@dataclass(frozen=True)
class Export:
    """One model folder a run wrote, what was done to the base model, and its PPL afterwards."""

    folder: Path
    change: str
    after: dict  # ppl, ppl_low, ppl_high
    mergekit: str | None = None
    tasks: tuple[dict, ...] = ()  # the run's tasks rows of this model (task, metric, after, after_stderr...)


def kept_ranges(num_layers: int, removed: list[int]) -> list[tuple[int, int]]:
    """The kept layers as half-open [start, end) ranges, as mergekit's `layer_range` reads them."""
    ranges, start = [], None
    for layer in range(num_layers + 1):
        kept = layer < num_layers and layer not in removed
        if kept and start is None:
            start = layer
        elif not kept and start is not None:
            ranges.append((start, layer))
            start = None
    return ranges


def mergekit_yaml(base: str, num_layers: int, removed: list[int], dtype: str) -> str:
    """The passthrough merge that removes `removed` from `base`: one slice per run of kept layers."""
    slices = "".join(f"  - sources:\n      - model: {base}\n        layer_range: [{a}, {b}]\n"
                     for a, b in kept_ranges(num_layers, removed))
    return f"slices:\n{slices}merge_method: passthrough\ndtype: {dtype.removeprefix('torch.')}\n"


def exports(result: Result) -> list[Export]:
    """The model folders a prune or plans run saved, each with its change and PPL (in the order written)."""
    model = result.source.get("model") or {}
    if result.experiment == "prune":
        rows = result.table[result.table["k"] > 0]
        tasks = result.tables.get("tasks")

        def task_rows(criterion: str, k: int) -> tuple[dict, ...]:
            if tasks is None:
                return ()
            return tuple(tasks[(tasks["criterion"] == criterion) & (tasks["k"] == k)].to_dict("records"))

        return [Export(Path(folder), f"removed layers {row.removed} (criterion {row.criterion}, K={row.k}); the "
                                     "remaining layers keep their order",
                       {"ppl": row.ppl, "ppl_low": row.ppl_low, "ppl_high": row.ppl_high},
                       mergekit_yaml(model.get("name", "BASE"), int(model.get("num_layers", 0)),
                                     [int(i) for i in str(row.removed).split(",")], str(model.get("dtype", "float32"))),
                       task_rows(row.criterion, row.k))
                for folder, row in zip(result.scalars.get("saved", []), rows.itertuples())]
    if result.experiment == "plans" and result.scalars.get("saved"):
        row = result.table[result.table["variant"] == "custom"].iloc[0]
        return [Export(Path(result.scalars["saved"]), f"layer plan {row.plan} (layers numbered from 0, run in this "
                                                      "order)", {k: row[k] for k in ("ppl", "ppl_low", "ppl_high")})]
    return []


def choose(result: Result, folder: str | None) -> Export:
    """The export to push: the only one, or the one whose folder is `folder`."""
    saved = exports(result)
    run = shown(result.source.get("run"))
    if not saved:
        raise AnatomyError(f"The run in {run} saved no model: run prune or plans with --save DIR, then push that run.")
    found = [e for e in saved if folder is None or e.folder.resolve() == Path(folder).resolve()]
    if len(found) != 1:
        raise AnatomyError(f"The run in {run} saved {', '.join(str(e.folder) for e in saved)}: name one with --folder.")
    if not (found[0].folder / "config.json").is_file():
        raise AnatomyError(f"The saved model {shown(str(found[0].folder))} is gone (no config.json): run the "
                           "experiment again with --save.")
    return found[0]


def model_card(result: Result, export: Export, repo_id: str, base_license: str | None = None) -> ModelCard:
    """The card of an exported model: metadata the Hub links and ranks on, then what changed and what it cost.
    `base_license`: the base model's, which an edited copy of its weights keeps."""
    model, eval_set = result.source.get("model") or {}, result.source.get("eval_set") or {}
    before, after = result.scalars["baseline"], export.after
    base = model.get("name") if model.get("source") == "hub" else None
    metric = [EvalResult(task_type="text-generation", dataset_type="text", dataset_name=str(eval_set.get("name")),
                         dataset_revision=eval_set.get("sha256"), metric_type="perplexity", metric_name="PPL",
                         metric_value=float(after["ppl"]))]
    version = result.scalars.get("lm_eval_version", "unknown")
    metric += [EvalResult(task_type="text-generation", task_name=row["task"], dataset_type=row["task"],
                          dataset_name=row["task"], metric_type=row["metric"],
                          metric_name=f"{row['metric']} (stderr {row['after_stderr']:.4f})",
                          metric_value=float(row["after"]), metric_args={"stderr": float(row["after_stderr"])},
                          source_name=f"lm-evaluation-harness {version}", source_url=LM_EVAL_URL)
               for row in export.tasks]
    data = ModelCardData(license=base_license, base_model=base, base_model_revision=model.get("revision"),
                         library_name="transformers", pipeline_tag="text-generation",
                         tags=["transformer-anatomy", result.experiment], model_name=repo_id.split("/")[1],
                         eval_results=metric)

    def ppl(values: dict) -> str:
        return f"{values['ppl']:.3f} [{values['ppl_low']:.3f}, {values['ppl_high']:.3f}]"

    body = [f"# {repo_id.split('/')[1]}", "",
            f"`{model.get('name')}`" + (f" @ `{model['revision']}`" if model.get("revision") else "")
            + f" with {export.change}. Made by `python -m anatomy {result.experiment}` (Transformer Anatomy).", "",
            "## Perplexity", "",
            f"On the evaluation text {eval_set.get('name')} ({eval_set.get('num_texts')} texts, sha256 "
            f"`{eval_set.get('sha256')}`); 95% bootstrap intervals over the texts.", "",
            "| model | PPL [95% interval] |", "|:--|:--|", f"| before | {ppl(before)} |",
            f"| after | {ppl(after)} |", ""]
    if export.tasks:
        names = ",".join(dict.fromkeys(row["task"] for row in export.tasks))
        body += ["## Task accuracy", "", f"lm-evaluation-harness {version}, zero-shot; before = the base model, "
                 "drop = before - after with its paired 95% interval over the same items.", "",
                 "| task | metric | before ± stderr | after ± stderr | drop [95% interval] |",
                 "|:--|:--|:--|:--|:--|",
                 *[f"| {r['task']} | {r['metric']} | {r['before']:.4f} ± {r['before_stderr']:.4f} | {r['after']:.4f} "
                   f"± {r['after_stderr']:.4f} | {r['drop']:.4f} [{r['drop_low']:.4f}, {r['drop_high']:.4f}] |"
                   for r in export.tasks], "",
                 "Scored again by lm-eval itself (the `anatomy_*` tasks ship in Transformer Anatomy's "
                 "`anatomy/data/lm_eval_tasks`):", "", "```",
                 f"lm_eval --model hf --model_args pretrained={repo_id} --tasks {names} "
                 "--include_path anatomy/data/lm_eval_tasks", "```", ""]
    if export.mergekit:
        body += ["## The same model with mergekit", "", "```yaml", export.mergekit.rstrip(), "```", ""]
    body += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
             f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def push_model(run: str | Path, repo_id: str, folder: str | None = None, token: str | None = None) -> str:
    """Upload the model `run` saved (or its `folder`) to the model repo `repo_id` with its card; `token` as in
    `hub.token_or_refuse`."""
    result = Result.load(run)
    export = choose(result, folder)
    repo_id = check_repo_id(repo_id, run, PUSH_MODEL)
    way_out = later(run, repo_id, PUSH_MODEL)
    api = HfApi(token=token_or_refuse(repo_id, run, PUSH_MODEL, token))
    base = result.source.get("model") or {}
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        card_data = (api.model_info(base["name"], revision=base.get("revision")).card_data
                     if base.get("source") == "hub" else None)
    except HUB_ERRORS as err:
        raise hub_failure(err, repo_id, f"creating {repo_id}", way_out) from None
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(export.folder, tmp, dirs_exist_ok=True)
        card = model_card(result, export, repo_id, getattr(card_data, "license", None))
        card.save(Path(tmp) / "README.md")
        name_only(Path(tmp), local_paths(run_results(Path(result.source["run"]))))  # the base model, text: by name
        return upload(api, tmp, repo_id, "model", f"Upload {export.change.split(' (')[0]}", way_out)
