"""Layer plans (the painters variants): tiny-model table shape, the built-in tasks through lm-eval, one fast
embedded run."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy.evaluate import perplexity
from anatomy.experiments.plans import PlansConfig, plans_report, run_plans
from anatomy.plans import apply_plan, parse_plan
from anatomy.plots import painters_figures
from anatomy.surgery import layer_stack
from conftest import make_tiny_model

FAST = dict(latency_repeats=1, latency_tokens=2)


def test_tiny_run_has_every_variant_and_a_paired_baseline(tiny_eval_set, tiny_tokenizer):
    model = make_tiny_model("llama", layers=8)
    config = PlansConfig(block_sizes=(2,), plans=["0,[1-3]x2,7"], edge_controls=True, **FAST)
    result = run_plans(model, tiny_eval_set, config, tokenizer=tiny_tokenizer)
    df = result.table
    assert len(df) == 1 + 6 + 2 + 1 and df.iloc[0].variant == "baseline"  # the skip's two controls
    # PPLs against models built without plans: the untouched model, and layers 3-4 really removed
    rows = df.set_index("variant")
    base = perplexity(model, tiny_eval_set).ppl
    with layer_stack(model, [0, 1, 2, 5, 6, 7]):
        skipped = perplexity(model, tiny_eval_set).ppl
    assert rows.loc["skip", "block"] == "3-4"
    assert rows.loc["baseline", "ppl"] == pytest.approx(base, rel=1e-5)
    assert rows.loc["skip", "ppl"] == pytest.approx(skipped, rel=1e-5)
    assert rows.loc["skip", "degradation_pct"] == pytest.approx((skipped / base - 1) * 100, rel=1e-4)
    assert rows.loc["skip-start", "block"] == "1-2" and rows.loc["skip-end", "block"] == "5-6"
    with layer_stack(model, [0, 3, 4, 5, 6, 7]):  # the start control keeps the first layer, as the middle's does
        assert rows.loc["skip-start", "ppl"] == pytest.approx(perplexity(model, tiny_eval_set).ppl, rel=1e-5)
    items = result["task_items"]
    assert len(items) == len(df) * (200 + 124) and set(items["task"]) == {"facts", "arithmetic"}  # lm-eval's items
    per_row = items.groupby(["row", "task"])["correct"].mean().unstack()
    np.testing.assert_allclose(per_row["facts"], df["acc_facts"])  # the accuracies are the items' means
    with apply_plan(model, parse_plan("0,[1-3]x2,7", 8), batched=False):  # member by member, the reference
        custom = perplexity(model, tiny_eval_set).ppl
    assert rows.loc["custom", "ppl"] == pytest.approx(custom, rel=1e-4)
    assert set(df[df.variant.str.contains("parallel")].parallel_execution) == {"batched"}
    looped = df[df.variant == "looped-parallel"]
    assert (looped.layer_calls == 8 + looped.block_size).all()  # the block runs twice
    assert df[["ppl", "decode_ms_per_token", "baseline_decode_ms_per_token", "acc_facts"]].notna().all().all()
    assert "| skip" in plans_report(result, "# t", config)
    assert set(painters_figures(df)) == {"painters_ppl", "painters_latency"}


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_parallel_beats_skip_on_ppl_and_tasks_work(embedded, embedded_eval_set):
    config = PlansConfig(variants=("skip", "parallel"), block_sizes=(4,), **FAST)
    df = run_plans(embedded.model, embedded_eval_set, config, tokenizer=embedded.tokenizer).table.set_index("variant")
    assert df.loc["baseline", "acc_facts"] >= 0.5  # the built-in facts are answerable by the model
    assert df.loc["skip", "ppl"] > df.loc["baseline", "ppl"]
    assert df.loc["parallel", "parallel_execution"] == "batched"


def test_cli_keeps_the_painters_command_and_repeated_plans_and_checks_them_before_loading():
    from anatomy.cli import build_parser, config_from_args
    from anatomy.errors import AnatomyError
    from anatomy.experiment import registry

    parser, plans = build_parser(), registry()["plans"]
    args = parser.parse_args(["painters", "--plan", "0-3", "--plan", "[4-5]x2", "--sequential-parallel", "--no-tasks"])
    assert args.experiment == "plans" and args.out == "runs/plans"
    config = config_from_args(plans, args)
    assert config.plans == ("0-3", "[4-5]x2") and not config.batched and not config.tasks
    assert config.block_sizes == (2, 4, 8) and config.latency_repeats == 5
    with pytest.raises(AnatomyError, match="exactly one --plan"):
        config_from_args(plans, parser.parse_args(["plans", "--plan", "0-3", "--plan", "4", "--save", "out"]))
    with pytest.raises(AnatomyError, match="Bad plan at position 3"):
        config_from_args(plans, parser.parse_args(["plans", "--plan", "0-3]"]))
    with pytest.raises(AnatomyError, match="Nothing to run"):
        config_from_args(plans, parser.parse_args(["plans", "--block-sizes", ""]))


def test_save_writes_the_one_plan_as_a_model_folder(tiny_eval_set, tiny_tokenizer, tmp_path):
    model = make_tiny_model("llama", layers=4)
    config = PlansConfig(variants=(), block_sizes=(), plans=["0,2x2,3"], save=str(tmp_path / "saved"), tasks=False,
                         **FAST)
    result = run_plans(model, tiny_eval_set, config, tokenizer=tiny_tokenizer)
    assert result["saved"] == str(tmp_path / "saved") and list(result.table["variant"]) == ["baseline", "custom"]
    assert "saved as a model folder" in plans_report(result, "# t", config)
    assert (tmp_path / "saved" / "model.safetensors").is_file() and (tmp_path / "saved" / "tokenizer.json").is_file()
