"""Manipulation of redundant layers: each strategy writes what it says, restores, and the set is chosen right."""

import pandas as pd
import pytest
import torch

from anatomy.errors import AnatomyError
from anatomy.experiment import Result
from anatomy.experiments.importance import ImportanceConfig, run_importance
from anatomy.experiments.manipulate import (EXPERIMENT, ManipulateConfig, manipulate_report, non_redundant_neighbours,
                                            redundant_layers, run_manipulate, strategy_context)
from anatomy.interventions import fingerprint
from anatomy.layers import LayerAdapter
from anatomy.run import resolve_needs
from anatomy.texts import default_eval_texts
from tests.conftest import make_tiny_model


def test_neighbours_outside_the_set():
    assert non_redundant_neighbours(3, {2, 3, 4}, [0] * 8) == [(1, 2), (5, 2)]
    assert non_redundant_neighbours(4, {3, 4}, [0] * 8) == [(5, 1), (2, 2)]
    assert non_redundant_neighbours(0, {0}, [0] * 8) == [(1, 1)]
    assert non_redundant_neighbours(2, {2}, ["conv", "attn"] * 4) == [(0, 2), (4, 2)]  # same kind only
    with pytest.raises(AnatomyError):
        non_redundant_neighbours(0, {0, 1}, [0, 0])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_each_strategy_writes_the_expected_weights_and_restores(arch):
    model = make_tiny_model(arch, layers=6)
    adapter = LayerAdapter(model)
    fp = fingerprint(model)
    comp = "self_attn.v_proj"  # for GPT-2 a slice of the fused c_attn
    w = {i: adapter.component(i, comp).matrix().clone() for i in range(6)}
    b = {i: adapter.component(i, comp).bias for i in range(6)}
    bias0 = {i: None if b[i] is None else b[i].clone() for i in range(6)}
    layers = [2, 3]
    with strategy_context(adapter, layers, "clone"):
        torch.testing.assert_close(adapter.component(2, comp).matrix(), w[1])
        torch.testing.assert_close(adapter.component(3, comp).matrix(), w[4])
        if bias0[1] is not None:
            torch.testing.assert_close(adapter.component(2, comp).bias, bias0[1])
    with strategy_context(adapter, layers, "blend"):
        torch.testing.assert_close(adapter.component(2, comp).matrix(), (2 * w[1] + w[4]) / 3)
    with strategy_context(adapter, layers, "lowrank"):
        new = adapter.component(2, comp).matrix()
        torch.testing.assert_close(torch.linalg.svdvals(new), torch.linalg.svdvals(w[2]), rtol=1e-4, atol=1e-4)
        u, _, vh = torch.linalg.svd(w[1], full_matrices=False)
        torch.testing.assert_close(new, (u * torch.linalg.svdvals(w[2])) @ vh, rtol=1e-4, atol=1e-4)
    with strategy_context(adapter, layers, "lowrank", rank=2):
        assert torch.linalg.matrix_rank(adapter.component(2, comp).matrix()) == 2
    with strategy_context(adapter, layers, "scale", alpha=0.5):
        torch.testing.assert_close(adapter.component(3, comp).matrix(), 0.5 * w[3])
    with strategy_context(adapter, layers, "zero"):
        assert float(adapter.component(3, comp).matrix().detach().abs().sum()) == 0
    assert fingerprint(model) == fp


def test_run_gives_one_row_per_strategy_and_restores(tiny_eval_set, tmp_path):
    model = make_tiny_model("gpt2")
    fp = fingerprint(model)
    result = run_manipulate(model, tiny_eval_set, ManipulateConfig(layers=[1, 4], alphas=(0.5, 0.9)))
    df = result.table
    assert list(df["strategy"]) == ["baseline (none)", "zero", "clone", "blend", "lowrank", "scale 0.5", "scale 0.9"]
    assert fingerprint(model) == fp and result["source"] == "given explicitly"
    assert df["ppl"].gt(0).all() and "layers.1, layers.4" in manipulate_report(result, "#")


def test_layer_set_from_an_importance_map(tiny_eval_set, tmp_path):
    table = pd.DataFrame({"layer": range(6), "degradation_pct": [50, 4, 12, 2, 80, 0.0],
                          "class": ["Critical", "Redundant", "Minor", "Redundant", "Critical", "Untouched"]})
    assert redundant_layers(table, 10) == [1, 3] and redundant_layers(table, 15) == [1, 2, 3]
    table.to_csv(tmp_path / "importance.csv", index=False)
    model = make_tiny_model("llama")
    result = run_manipulate(model, tiny_eval_set, ManipulateConfig(strategies=("zero",)),
                            importance=Result.load(tmp_path, "importance"))
    assert result["layers"] == [1, 3] and str(tmp_path) in result["source"]
    config = ManipulateConfig(strategies=("zero",), redundant_threshold=1e9, importance=ImportanceConfig(mode="skip"))
    computed = run_manipulate(model, tiny_eval_set, config, importance=run_importance(model, tiny_eval_set,
                                                                                      config.importance))
    assert computed["layers"] == list(range(6)) and "computed now" in computed["source"]
    lowest = run_manipulate(model, tiny_eval_set, ManipulateConfig(strategies=("zero",), count=3),
                            importance=Result("importance", table))
    assert lowest["layers"] == [1, 2, 3] and "the 3 layers of lowest D" in lowest["source"]  # the untouched one never
    with pytest.raises(AnatomyError, match="lower --count"):
        run_manipulate(model, tiny_eval_set, ManipulateConfig(count=9), importance=Result("importance", table))
    fallback = run_manipulate(model, tiny_eval_set, ManipulateConfig(strategies=("zero",), redundant_threshold=1),
                              importance=Result("importance", table))  # none below 1%: the lowest-D tenth of 5
    assert fallback["layers"] == [3] and "no layer has D < 1% (the lowest D is 2.0%)" in fallback["source"]
    with pytest.raises(AnatomyError, match="importance.csv"):
        Result.load(tmp_path / "missing", "importance")


def test_the_importance_map_is_read_only_without_typed_layers(tmp_path):
    computed = []
    compute = lambda needed, config=None: computed.append(config) or Result("importance", pd.DataFrame())  # noqa: E731
    typed = resolve_needs(EXPERIMENT, {"importance": tmp_path / "missing"}, compute=compute,
                          config=ManipulateConfig(layers="1,4"))
    assert typed == {"importance": None} and computed == []  # neither read nor computed
    config = ManipulateConfig(importance=ImportanceConfig(mode="zero"))
    resolve_needs(EXPERIMENT, {}, compute=compute, config=config)
    assert computed == [config.importance]


def test_the_apps_layer_set_reads_the_typed_layers_only_when_chosen():
    from anatomy.options import build_config
    from space.tabs import ManipulateInputs
    COMPUTE, GIVEN = ManipulateInputs.COMPUTE, ManipulateInputs.GIVEN

    assert build_config(ManipulateInputs, {"layers": "1,4", "source": COMPUTE}).layers is None
    assert build_config(ManipulateInputs, {"layers": "1,4", "source": GIVEN}).layers == "1,4"
    with pytest.raises(AnatomyError, match="Type the layers"):
        build_config(ManipulateInputs, {"layers": " ", "source": GIVEN})


@pytest.mark.slow
@pytest.mark.embedded
def test_manipulate_cli_on_the_embedded_model(tmp_path):
    from anatomy.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(default_eval_texts()[:6]))
    assert main(["manipulate", "--layers", "16,17", "--alphas", "0.9", "--text-file", str(texts), "--max-length", "32",
                 "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "manipulate.csv")
    assert len(table) == 6 and (tmp_path / "manipulate.png").exists()
    assert table.loc[table.strategy == "scale 0.9", "degradation_pct"].iloc[0] < \
        table.loc[table.strategy == "zero", "degradation_pct"].iloc[0]
