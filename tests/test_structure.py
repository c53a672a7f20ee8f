"""Weight structure: Gram-based statistics equal the direct ones; the -0.5 null; run folder on the embedded model."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from anatomy.errors import AnatomyError
from anatomy.experiments.structure import (WHOLE_LAYER, StructureConfig, delta_correlations, pca_of_layers,
                                           run_structure, similarity_by_component, structure_report)
from anatomy.layer_weights import centered_gram, flat_stack, gram_stats
from anatomy.layers import LayerAdapter
from tests.conftest import make_tiny_model


def direct_delta_corr(w: np.ndarray) -> float:
    d = np.diff(w, axis=0)
    return float(np.mean([np.corrcoef(d[i], d[i + 1])[0, 1] for i in range(len(d) - 1)]))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gram_statistics_equal_direct_computation(arch):
    model = make_tiny_model(arch, layers=7)
    adapter = LayerAdapter(model)
    result = run_structure(model, None, StructureConfig(shuffles=5))
    df = result.table
    assert list(df["component"]) == [*adapter.components, WHOLE_LAYER]
    for component in ("self_attn.v_proj", "mlp.down_proj"):  # v_proj: a slice of GPT-2's fused c_attn
        w = flat_stack(adapter, component).double().numpy()
        row = df.set_index("component").loc[component]
        assert row["delta_corr"] == pytest.approx(direct_delta_corr(w), abs=1e-9)
        ratios, coords = pca_of_layers(gram_stats(torch.from_numpy(w))["gram"])
        reference = PCA(n_components=3).fit(w)
        np.testing.assert_allclose(ratios[:3], reference.explained_variance_ratio_, atol=1e-9)
        np.testing.assert_allclose(np.abs(coords), np.abs(reference.transform(w)[:, :2]), atol=1e-6)
        cos = similarity_by_component(result)[component]
        assert cos[1, 4] == pytest.approx(w[1] @ w[4] / np.linalg.norm(w[1]) / np.linalg.norm(w[4]))
    whole = np.concatenate([flat_stack(adapter, c).double().numpy() for c in adapter.components], axis=1)
    assert df.set_index("component").loc[WHOLE_LAYER, "delta_corr"] == pytest.approx(direct_delta_corr(whole))


def test_independent_layers_give_the_null_and_smooth_layers_do_not():
    g = torch.Generator().manual_seed(0)
    iid = torch.randn(12, 20000, generator=g, dtype=torch.float64)
    orders = torch.stack([torch.arange(12), torch.randperm(12, generator=g)])
    corr = delta_correlations(centered_gram(gram_stats(iid)), orders).mean(dim=1)
    assert torch.allclose(corr, torch.tensor([-0.5, -0.5], dtype=torch.float64), atol=0.02)
    walk = iid.cumsum(dim=0)  # a random walk across depth: independent increments, correlation 0 in order
    cg = centered_gram(gram_stats(walk))
    assert abs(float(delta_correlations(cg, orders[:1]).mean())) < 0.05
    assert float(delta_correlations(cg, orders[1:]).mean()) < -0.2


def test_permutation_p_values_count_the_shuffled_orders():
    result = run_structure(make_tiny_model("llama", layers=7), None, StructureConfig(shuffles=19))
    df = result.table
    assert ((df["p_below"] * 20).round(9) % 1 == 0).all() and (df["p_below"] >= 1 / 20).all()
    assert (df["p_below"] + df["p_above"] >= 1).all()  # every order is counted on one side or both
    assert (df[["p_below", "p_above"]] <= 1).all().all()


def test_report_and_validation():
    model = make_tiny_model("llama")
    result = run_structure(model, None, StructureConfig(shuffles=4))
    df = result.table
    assert len(result["pca"]) == 6 * len(df) and "null for independent" in structure_report(result, "#").lower()
    with pytest.raises(AnatomyError):
        run_structure(model, None, StructureConfig(shuffles=1))


def test_run_folder_keeps_the_cosine_matrices(tmp_path, tiny_tokenizer):
    """results.json holds each component's cosine matrix, and the result read back draws the same figure."""
    from anatomy.experiment import Result
    from anatomy.experiments.structure import EXPERIMENT
    from anatomy.load import LoadedModel
    from anatomy.report import RunFolder
    from anatomy.run import artefacts

    loaded = LoadedModel(make_tiny_model("llama"), tiny_tokenizer, "tiny", "test")
    config = StructureConfig(shuffles=4)
    result = run_structure(loaded.model, None, config)
    RunFolder(tmp_path, "structure").write(result, artefacts(EXPERIMENT, result, loaded, None, config), loaded, None,
                                           config)
    back = Result.load(tmp_path, "structure")
    assert list(similarity_by_component(back)) == [*LayerAdapter(loaded.model).components, WHOLE_LAYER]
    np.testing.assert_allclose(back["similarity"], result["similarity"])
    assert "control" in EXPERIMENT.headline(back)


@pytest.mark.slow
@pytest.mark.embedded
def test_structure_cli_on_the_embedded_model(tmp_path):
    from anatomy.cli import main

    assert main(["structure", "--shuffles", "20", "--out", str(tmp_path)]) == 0
    for name in ("structure.csv", "pca.csv", "delta_correlation.png", "pca_path.png", "cosine_similarity.png",
                 "report.md", "results.json"):
        assert (tmp_path / name).exists(), name
