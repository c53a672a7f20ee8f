"""Task accuracy through lm-evaluation-harness: a model in memory scores as `lm_eval` scores it saved, the shipped
tasks load offline, other tasks are refused offline and on a public app, drops carry a paired interval, and
progress counts lm-eval's requests (a callback that raises stops the scoring)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from huggingface_hub import ModelCard

from anatomy.errors import AnatomyError
from anatomy.hub_model import exports, model_card
from anatomy.experiment import registry
from anatomy.experiments.prune import PruneConfig, run_prune
from anatomy.lm_eval_tasks import (SHIPPED, TaskScores, lm_eval_version, parse_tasks, score_tasks, task_drop,
                                   task_folder)
from anatomy.options import build_config
from anatomy.progress import Cancelled
from anatomy import work
from tests.conftest import make_tiny_model

pytest.importorskip("lm_eval")
TASKS = ("anatomy_arithmetic", "anatomy_facts")


def test_a_pruned_model_scored_in_memory_scores_the_same_saved_through_the_lm_eval_cli(
        tmp_path, tiny_tokenizer, tiny_eval_set, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = make_tiny_model("llama", layers=4)
    result = run_prune(model, tiny_eval_set, PruneConfig(ks=(1,), criteria=("last",), tasks=TASKS,
                                                          save=str(tmp_path / "pruned")), tokenizer=tiny_tokenizer)
    tasks = result["tasks"]
    assert set(tasks["task"]) == set(TASKS) and list(tasks["metric"].unique()) == ["acc"]
    assert (tasks["after_stderr"] >= 0).all() and (tasks["drop_low"] <= tasks["drop_high"]).all()
    in_memory = score_tasks(model, tiny_tokenizer, TASKS)  # the intact model again: the prune restored it
    assert in_memory.value("anatomy_facts") == tasks[tasks["k"] == 0].set_index("task").loc["anatomy_facts", "after"]

    out = tmp_path / "cli"
    cli = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={tmp_path / 'pruned'}",
         "--tasks", ",".join(TASKS), "--include_path", str(task_folder()), "--device", "cpu", "--output_path",
         str(out), "--log_samples"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert cli.returncode == 0, cli.stderr[-2000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    pruned = tasks[tasks["k"] == 1].set_index("task")
    saved = score_tasks(str(tmp_path / "pruned"), None, TASKS)
    for task in TASKS:
        assert results[task]["acc,none"] == pruned.loc[task, "after"] == saved.value(task)
        assert results[task]["acc_stderr,none"] == pytest.approx(pruned.loc[task, "after_stderr"], abs=1e-12)
        samples = [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
        cli_ll = np.array([float(s["filtered_resps"][0][0]) for s in sorted(samples, key=lambda s: s["doc_id"])])
        ours = np.array([float(answer[0][0]) for answer in saved.answers[task]])
        np.testing.assert_allclose(ours, cli_ll, rtol=1e-5)  # the same log-probabilities, item by item

    card = ModelCard(str(model_card(result, exports(result)[0], "alice/pruned")))  # the card as the Hub reads it
    published = {r.dataset_name: r for r in card.data.eval_results if r.metric_type == "acc"}
    for task in TASKS:
        assert published[task].metric_value == results[task]["acc,none"]
        assert published[task].metric_args["stderr"] == pytest.approx(results[task]["acc_stderr,none"], abs=1e-12)
        assert published[task].source_name == f"lm-evaluation-harness {lm_eval_version()}"
    assert f"lm_eval --model hf --model_args pretrained=alice/pruned --tasks {','.join(TASKS)}" in card.text


def test_task_names_are_plain_and_a_hub_task_is_refused_offline_and_on_a_public_app(monkeypatch):
    assert parse_tasks(" anatomy_facts, anatomy_facts,mmlu ", "--tasks") == ("anatomy_facts", "mmlu")
    with pytest.raises(AnatomyError, match="--tasks takes lm-eval task names"):
        parse_tasks("../etc/passwd", "--tasks")
    monkeypatch.setenv("ANATOMY_PUBLIC", "1")
    with pytest.raises(AnatomyError, match="'mmlu' is not offered on this public app"):
        build_config(PruneConfig, {"tasks": "anatomy_facts,mmlu"}, public=True)
    assert build_config(PruneConfig, {"tasks": ",".join(SHIPPED)}, public=True).tasks == SHIPPED
    monkeypatch.setenv("ANATOMY_PUBLIC", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AnatomyError, match="'hellaswag' needs the Hub, which is off"):
        build_config(registry()["importance"].config, {"tasks": "hellaswag"})


def test_the_drop_is_paired_over_the_same_items():
    def scores(values: list[float]) -> TaskScores:
        items = np.array(values)
        table = pd.DataFrame([{"task": "t", "metric": "acc", "value": items.mean(),
                               "stderr": items.std(ddof=1) / np.sqrt(len(items)), "n": len(items)}])
        return TaskScores(table, {("t", "acc"): items})

    before, after = scores([1, 1, 1, 1, 0, 0, 0, 0]), scores([1, 1, 0, 0, 0, 0, 0, 0])
    row = task_drop(before, after).iloc[0]
    assert row["before"] == 0.5 and row["after"] == 0.25 and row["drop"] == 0.25
    assert 0 < row["drop_high"] - row["drop"] == pytest.approx(row["drop"] - row["drop_low"])
    assert task_drop(before, before).iloc[0][["drop", "drop_low", "drop_high"]].tolist() == [0.0, 0.0, 0.0]


def test_progress_counts_the_requests_and_a_raising_callback_stops_scoring(tiny_tokenizer):
    model = make_tiny_model("llama", layers=2)
    seen = []
    score_tasks(model, tiny_tokenizer, ["anatomy_facts"], batch_size=32, progress=lambda d, t, _: seen.append((d, t)))
    assert seen[-1] == (124, 124) and len(seen) >= 6 and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    def stop(done: int, total: int, _: str) -> None:
        if done:
            raise Cancelled

    with pytest.raises(Cancelled):
        score_tasks(model, tiny_tokenizer, ["anatomy_facts"], batch_size=32, progress=stop)


def test_the_work_estimate_counts_the_task_requests(tiny_eval_set):
    shape = work.shape_of(make_tiny_model("llama", layers=4), tiny_eval_set)
    prune = registry()["prune"]
    plain = prune.work(PruneConfig(ks=(1,)), shape)
    facts = prune.work(PruneConfig(ks=(1,), tasks=("anatomy_facts",)), shape)
    both = prune.work(PruneConfig(ks=(1,), tasks=TASKS), shape)
    assert plain < facts < both


def test_importance_interventions_and_manipulate_score_each_change_beside_its_ppl(tiny_tokenizer, tiny_eval_set):
    from anatomy.experiments.importance import ImportanceConfig, run_importance
    from anatomy.experiments.interventions import InterventionsConfig, run_interventions
    from anatomy.experiments.manipulate import ManipulateConfig, run_manipulate

    model = make_tiny_model("llama", layers=3)
    importance = run_importance(model, tiny_eval_set, ImportanceConfig(mode="skip", layers="0,2",
                                                                       tasks=("anatomy_facts",)),
                                tokenizer=tiny_tokenizer)
    assert importance["tasks"]["layer"].tolist() == [0, 2]
    assert importance.table["anatomy_facts_acc_drop"].tolist() == importance["tasks"]["drop"].tolist()
    swept = run_interventions(model, tiny_eval_set, InterventionsConfig(intervention="scale", layers="1",
                                                                        values=(1.0, 0.0), tasks=("anatomy_facts",)),
                              tokenizer=tiny_tokenizer)
    unchanged = swept["tasks"].set_index("value").loc[1.0]
    assert unchanged["drop"] == 0 and unchanged["after"] == unchanged["before"]  # alpha 1 changes nothing
    assert swept["tasks"]["before"].nunique() == 1
    manipulated = run_manipulate(model, tiny_eval_set, ManipulateConfig(layers="1", strategies=("zero", "scale"),
                                                                        alphas=(0.5,), tasks=("anatomy_facts",)),
                                 tokenizer=tiny_tokenizer)
    assert manipulated["tasks"]["strategy"].tolist() == ["zero", "scale 0.5"]
    assert "### Task accuracy" in registry()["manipulate"].artefacts(manipulated, None, None, None).markdown
    with pytest.raises(AnatomyError, match="--tasks scores the model with its tokenizer"):
        run_interventions(model, tiny_eval_set, InterventionsConfig(layers="1", tasks=("anatomy_facts",)))


def test_any_other_lm_eval_task_scores_through_the_same_function_with_all_its_metrics(tmp_path, tiny_tokenizer):
    """The path of mmlu or arc_easy (lm-eval's task index, a multiple-choice task), with a local task in place
    of the Hub's items."""
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"q": f"{a} + 1 =", "choices": [f" {a + 1}", f" {a}"],
                                                               "label": 0}) + "\n" for a in range(10)))
    (tmp_path / "local_choice.yaml").write_text(
        "task: local_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'items.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n")
    scores = score_tasks(make_tiny_model("llama", layers=2), tiny_tokenizer, ["local_choice"], include=[tmp_path])
    assert sorted(scores.table["metric"]) == ["acc", "acc_norm"] and set(scores.table["n"]) == {10}
    assert all(0 <= v <= 1 for v in scores.table["value"]) and (scores.table["stderr"] >= 0).all()


def test_the_proxy_panel_ranks_each_cheap_view_against_the_true_accuracy_drop():
    from anatomy.experiments.importance import proxy_panel

    rng = np.random.default_rng(1)
    drop = rng.random(20)
    table = pd.DataFrame({"layer": range(20), "block_influence": drop + 0.01 * rng.random(20),
                          "angular_distance": rng.random(20), "degradation_pct": -drop, "t_acc_drop": drop})
    panel = proxy_panel(table).set_index("proxy")
    assert panel.loc["block_influence", "spearman"] > 0.99 and panel.loc["degradation_pct", "spearman"] == -1
    random = panel.loc["angular_distance"]
    assert random["spearman_low"] < 0 < random["spearman_high"] and abs(random["spearman"]) < 0.5
    assert proxy_panel(table.head(2)).empty  # two layers rank nothing


def test_scoring_leaves_the_callers_tokenizer_as_it_was(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = None  # HFLM gives such a tokenizer a pad token of its own
    score_tasks(make_tiny_model("llama", layers=2), tokenizer, ["anatomy_facts"], limit=4)
    assert tokenizer.pad_token is None and tokenizer.padding_side == tiny_tokenizer.padding_side


def test_a_run_under_autocast_scores_its_tasks_under_autocast(tiny_tokenizer):
    """lm-eval wraps each forward in its own autocast, off unless told a dtype: under `--autocast bfloat16` the
    tasks are scored in bfloat16 as the rest of the run is, not silently in float32."""
    import torch

    from anatomy.load import LoadedModel

    model = make_tiny_model("llama", layers=2)
    seen: list[torch.dtype] = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for autocast in (None, torch.bfloat16):
        with LoadedModel(model, tiny_tokenizer, "tiny", "test", autocast=autocast).compute():
            score_tasks(model, tiny_tokenizer, ["anatomy_facts"], limit=4)
    assert set(seen[:len(seen) // 2]) == {torch.float32} and set(seen[len(seen) // 2:]) == {torch.bfloat16}


def test_plans_score_their_built_in_tasks_and_any_other_through_lm_eval(tiny_tokenizer, tiny_eval_set):
    from anatomy.experiments.plans import PlansConfig, run_plans

    model = make_tiny_model("llama", layers=4)
    fast = dict(variants=("skip",), block_sizes=(2,), latency_repeats=1, latency_tokens=1)
    result = run_plans(model, tiny_eval_set, PlansConfig(**fast), tokenizer=tiny_tokenizer)
    tasks = result["tasks"].set_index(["variant", "task"])
    assert sorted(tasks.index) == [(v, t) for v in ("baseline", "skip") for t in ("anatomy_arithmetic", "anatomy_facts")]
    assert (tasks.loc["baseline", "drop"] == 0).all()
    table = result.table.set_index("variant")
    for short in ("arithmetic", "facts"):  # the acc_ columns are lm-eval's accuracies of each plan
        assert table.loc["skip", f"acc_{short}"] == pytest.approx(tasks.loc[("skip", f"anatomy_{short}"), "after"])
    items = result["task_items"]
    assert items.groupby("task").size().to_dict() == {"arithmetic": 2 * 200, "facts": 2 * 124}
    only = run_plans(model, tiny_eval_set, PlansConfig(**fast, tasks=False, lm_eval_tasks=("anatomy_facts",)),
                     tokenizer=tiny_tokenizer)
    assert set(only["tasks"]["task"]) == {"anatomy_facts"} and set(only["task_items"]["task"]) == {"facts"}
    assert "acc_arithmetic" not in only.table.columns and "acc_facts" in only.table.columns
    none = run_plans(model, tiny_eval_set, PlansConfig(**fast, tasks=False), tokenizer=tiny_tokenizer)
    assert "tasks" not in none.tables and none["task_items"].empty  # --no-tasks: nothing scored
    assert not any(c.startswith("acc_") for c in none.table.columns)
    assert build_config(PlansConfig, {"lm_eval_tasks": "anatomy_facts"}).lm_eval_tasks == ("anatomy_facts",)
