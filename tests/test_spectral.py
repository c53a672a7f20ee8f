"""Spectral experiment: one row per matrix, fused GPT-2 slices, group contrast, run folder on the embedded model."""

import pytest
import torch

from anatomy.experiments.spectral import SpectralConfig, component_summary, layer_alpha, run_spectral
from anatomy.errors import AnatomyError
from anatomy.layers import LayerAdapter
from anatomy.spectra import analyze_matrices, singular_values
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_one_row_per_matrix_matching_the_shared_math(arch):
    model = make_tiny_model(arch)
    adapter = LayerAdapter(model)
    result = run_spectral(model, None, SpectralConfig(min_tail=5))
    df = result.table
    assert len(df) == adapter.num_layers * len(adapter.components)
    ref = adapter.component(3, "self_attn.k_proj")  # a slice of GPT-2's fused c_attn
    expected = analyze_matrices([ref.matrix()], 5)[0]
    row = df[(df.layer == 3) & (df.component == "self_attn.k_proj")].iloc[0]
    assert row["alpha"] == pytest.approx(expected["alpha"]) and row["stable_rank"] == pytest.approx(
        expected["stable_rank"])
    sv = result["singular_values"]
    part = sv[(sv.layer == 3) & (sv.component == "self_attn.k_proj")]["singular_value"].to_numpy()
    torch.testing.assert_close(torch.tensor(part), singular_values([ref.matrix()])[0].float())
    assert set(result["groups"]["group"]) == {"query/key", "value/output", "mlp"}
    assert len(layer_alpha(df)) == adapter.num_layers and len(component_summary(df)) == len(adapter.components)


def test_a_heavy_tail_shows_as_a_lower_alpha():
    model = make_tiny_model("llama")
    ref = LayerAdapter(model).component(2, "mlp.up_proj")
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(ref.matrix(), full_matrices=False)
        heavy = (u * (torch.arange(1, len(s) + 1, dtype=torch.float32) ** -1.5)) @ vh  # power-law spectrum
        ref.assign(heavy * 10)
    df = run_spectral(model, None, SpectralConfig(min_tail=5)).table
    alpha = df.set_index(["layer", "component"])["alpha"]
    assert alpha[(2, "mlp.up_proj")] < alpha.xs("mlp.up_proj", level="component").drop(2).min()


def test_config_is_validated():
    with pytest.raises(AnatomyError):
        run_spectral(make_tiny_model("llama"), None, SpectralConfig(min_tail=1))


@pytest.mark.slow
@pytest.mark.embedded
def test_spectral_cli_on_the_embedded_model(tmp_path, capsys):
    from anatomy.cli import main

    assert main(["spectral", "--out", str(tmp_path)]) == 0
    for name in ("spectral.csv", "groups.csv", "singular_values.csv", "depth_profiles.png", "singular_values.png",
                 "report.md", "results.json"):
        assert (tmp_path / name).exists(), name
    text = (tmp_path / "report.md").read_text()
    assert "210 matrices" in text and "Query/key vs value/output" in text
    printed = capsys.readouterr().out  # the summary per component, then the layers of lowest and highest alpha
    assert "frac_alpha_2_to_6" in printed and "210 matrices; layer mean alpha: lowest layers." in printed
    assert (tmp_path / "components.csv").exists()
