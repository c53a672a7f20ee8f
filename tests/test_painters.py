"""The painters experiment: tiny-model table shape and the built-in tasks; one fast embedded run."""

from __future__ import annotations

import pytest

from anatomy.experiments.painters import PaintersConfig, painters_report, run_painters
from anatomy.plots import painters_figures
from anatomy.tasks import load_tasks, task_accuracy
from conftest import make_tiny_model

FAST = dict(latency_repeats=1, latency_tokens=2)


def test_tiny_run_has_every_variant_and_a_paired_baseline(tiny_eval_set, tiny_tokenizer):
    model = make_tiny_model("llama", layers=8)
    config = PaintersConfig(block_sizes=(2,), plans=["0,[1-3]x2,7"], **FAST)
    df = run_painters(model, tiny_eval_set, config, tokenizer=tiny_tokenizer)
    assert len(df) == 1 + 6 + 1 and df.iloc[0].variant == "baseline" and df.iloc[0].degradation_pct == 0
    assert set(df[df.variant.str.contains("parallel")].parallel_execution) == {"batched"}
    looped = df[df.variant == "looped-parallel"]
    assert (looped.layer_calls == 8 + looped.block_size).all()  # the block runs twice
    assert df[["ppl", "decode_ms_per_token", "baseline_decode_ms_per_token", "acc_facts"]].notna().all().all()
    assert "| skip" in painters_report(df, "# t", config)
    assert set(painters_figures(df)) == {"painters_ppl", "painters_latency"}


def test_tasks_are_scored_on_every_answer_token(tiny_tokenizer):
    tasks = load_tasks(tiny_tokenizer)
    assert {t.name for t in tasks} == {"facts", "arithmetic"} and all(len(t.prompts) == 30 for t in tasks)
    scores = task_accuracy(make_tiny_model("gpt2", layers=2), tasks)
    assert all(0 <= v <= 1 for v in scores.values())


@pytest.mark.embedded
def test_embedded_parallel_beats_skip_on_ppl_and_tasks_work(embedded, embedded_eval_set):
    config = PaintersConfig(variants=("skip", "parallel"), block_sizes=(4,), **FAST)
    df = run_painters(embedded.model, embedded_eval_set, config, tokenizer=embedded.tokenizer).set_index("variant")
    assert df.loc["baseline", "acc_facts"] >= 0.5  # the built-in facts are answerable by the model
    assert df.loc["skip", "ppl"] > df.loc["baseline", "ppl"]
    assert df.loc["parallel", "parallel_execution"] == "batched"
