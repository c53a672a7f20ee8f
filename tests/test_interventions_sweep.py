"""The interventions sweep (`anatomy.experiments.interventions`): each row is the PPL of the model changed by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from anatomy.cli import main
from anatomy.errors import AnatomyError
from anatomy.evaluate import perplexity
from anatomy.experiment import Result
from anatomy.experiments.interventions import COLUMNS, InterventionsConfig, run_interventions
from anatomy.interventions import fingerprint
from anatomy.options import build_config
from anatomy.texts import default_eval_texts
from tests.conftest import make_tiny_model


def scaled_by_hand(model: nn.Module, layers: list[int], alpha: float) -> nn.Module:
    """A copy whose chosen layers have every linear weight multiplied by `alpha` (a Llama layer's seven matrices)."""
    altered = copy.deepcopy(model)
    with torch.no_grad():
        for i in layers:
            for module in altered.model.layers[i].modules():
                if isinstance(module, nn.Linear):
                    module.weight.mul_(alpha)
    return altered


def test_each_row_is_the_ppl_of_the_model_scaled_by_hand(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    result = run_interventions(model, tiny_eval_set, InterventionsConfig(layers="1-2", values=(1.0, 0.5)))
    df = result.table
    assert list(df.columns) == COLUMNS and list(df["value"]) == [1.0, 0.5] and set(df["layers"]) == {"1,2"}
    assert result["baseline"]["ppl"] == perplexity(model, tiny_eval_set).ppl
    for value, ppl in zip(df["value"], df["ppl"]):
        assert ppl == pytest.approx(perplexity(scaled_by_hand(model, [1, 2], value), tiny_eval_set).ppl, rel=1e-6)
    assert fingerprint(model) == before


def test_skip_is_the_model_without_the_layer(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    df = run_interventions(model, tiny_eval_set, InterventionsConfig(intervention="skip", layers="2")).table
    assert len(df) == 1 and df["value"].isna().all()  # skip takes no value: one row
    without = copy.deepcopy(model)
    del without.model.layers[2]
    assert df["ppl"].iloc[0] == pytest.approx(perplexity(without, tiny_eval_set).ppl, rel=1e-6)


def test_bad_configs_are_refused_before_any_work():
    with pytest.raises(AnatomyError, match="comma-separated"):
        build_config(InterventionsConfig, {"values": "a,b"})
    with pytest.raises(AnatomyError, match="scale needs at least one alpha"):
        build_config(InterventionsConfig, {"intervention": "scale", "values": ""})
    assert build_config(InterventionsConfig, {"intervention": "zero", "values": ""}).swept != ()  # one row, no value
    with pytest.raises(AnatomyError, match="takes one of"):
        build_config(InterventionsConfig, {"intervention": "none"})


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_sweep_equals_the_ppl_of_the_layers_scaled_by_hand(embedded, embedded_eval_set):
    model = embedded.model
    before = fingerprint(model)
    df = run_interventions(model, embedded_eval_set, InterventionsConfig(layers="10-12", values=(1.0, 0.5))).table
    assert df["degradation_pct"].iloc[0] == pytest.approx(0.0, abs=1e-9)  # alpha 1 changes nothing
    linears = [m for i in (10, 11, 12) for m in model.model.layers[i].modules() if isinstance(m, nn.Linear)]
    saved = [m.weight.detach().clone() for m in linears]
    try:
        with torch.no_grad():
            for m in linears:
                m.weight.mul_(0.5)
        by_hand = perplexity(model, embedded_eval_set).ppl
    finally:
        with torch.no_grad():
            for m, w in zip(linears, saved):
                m.weight.copy_(w)
    assert df["ppl"].iloc[1] == pytest.approx(by_hand, rel=1e-6) and df["degradation_pct"].iloc[1] > 10
    assert fingerprint(model) == before


@pytest.mark.embedded
def test_cli_writes_a_run_folder_that_loads_back(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(default_eval_texts()[:4]))
    out = tmp_path / "run"
    assert main(["interventions", "--intervention", "noise", "--layers", "3", "--values", "0.1,0.2", "--seed", "3",
                 "--text-file", str(texts), "--max-length", "32", "--out", str(out)]) == 0
    loaded = Result.load(out, "interventions")
    assert list(loaded.table["value"]) == [0.1, 0.2] and loaded["baseline"]["ppl"] > 1
    assert (out / "interventions.png").is_file() and "--values" in (out / "report.md").read_text()
    assert loaded.source["config"]["seed"] == 3 and loaded.timings["run_s"] > 0
