"""Weight predictability: the batched closed form equals scikit-learn's Ridge; R^2 rows; functional test."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score as sk_r2

from anatomy.errors import AnatomyError
from anatomy.experiments.predictability import (PredictabilityConfig, distribution_r2, layer_features,
                                                paradox_statement, predict_layer, predictability_claims,
                                                predictability_report, r2_score, ridge_coefficients,
                                                run_predictability)
from anatomy.interventions import fingerprint
from anatomy.layer_weights import flat_stack
from anatomy.layers import LayerAdapter
from anatomy.texts import default_eval_texts
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("alpha", [0.0, 1.0, 25.0])
def test_closed_form_equals_sklearn_ridge(alpha):
    rng = np.random.default_rng(0)
    n, t = 12, 7
    y = rng.normal(size=(t, 50))
    x = layer_features(range(t), n)
    expected = Ridge(alpha=alpha, fit_intercept=True).fit(x, y).predict(layer_features([t, t + 2], n))
    got = ridge_coefficients(x, layer_features([t, t + 2], n), alpha) @ y
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    stack = torch.from_numpy(np.vstack([y, rng.normal(size=(1, 50))]))
    np.testing.assert_allclose(predict_layer(stack, t, n, alpha).numpy(), expected[0], rtol=1e-7, atol=1e-9)
    assert r2_score(torch.from_numpy(expected[0]), stack[t]) == pytest.approx(sk_r2(stack[t].numpy(), expected[0]))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rows_functional_test_and_restore(arch, tiny_eval_set):
    model = make_tiny_model(arch, layers=6)
    adapter = LayerAdapter(model)
    fp = fingerprint(model)
    config = PredictabilityConfig(positions=300, multi_count=3)
    result = run_predictability(model, tiny_eval_set, config)
    df = result.table
    assert fingerprint(model) == fp
    assert len(df) == len(adapter.components) * 4 and set(df["layer"]) == {2, 3, 4, 5}
    assert df["cosine"].between(-1, 1).all()
    # the sampled R^2 of one row equals sklearn's Ridge on the same positions (q_proj draws first from the seed)
    row = df[(df.component == "self_attn.q_proj") & (df.layer == 4)].iloc[0]
    stack = flat_stack(adapter, "self_attn.q_proj").double().numpy()
    positions = np.sort(np.random.default_rng(0).choice(stack.shape[1], size=300, replace=False))
    y = stack[:, positions]
    pred = Ridge(alpha=1.0).fit(layer_features(range(4), 6), y[:4]).predict(layer_features([4], 6))[0]
    assert row["r2"] == pytest.approx(sk_r2(y[4], pred), rel=1e-6)
    # the weight-distribution R^2: sklearn's Ridge and r2_score on the same positions, each layer sorted
    ys = np.sort(y, axis=1)
    pred_sorted = Ridge(alpha=1.0).fit(layer_features(range(4), 6), ys[:4]).predict(layer_features([4], 6))[0]
    assert row["r2_distribution"] == pytest.approx(sk_r2(ys[4], pred_sorted), rel=1e-6)
    assert row["r2_distribution"] != pytest.approx(row["r2"], rel=1e-3)
    full = stack[3] @ stack[4] / np.linalg.norm(stack[3]) / np.linalg.norm(stack[4])
    assert row["adjacent_cosine"] == pytest.approx(full, rel=1e-6)
    functional = result["functional"]
    assert list(functional["replaced"]) == ["1 layer", "3 layers"]
    assert (functional["ppl"] > 0).all() and len(result["summary"]) == len(adapter.components)
    text = predictability_report(result, "# t", config)
    assert "paradox" in text and "Functional test" in text and "R^2 of the weight distribution" in text
    assert {"mean_r2_distribution", "mean_adjacent_cosine"} <= set(result["summary"].columns)


def test_distribution_r2_equals_sklearn_and_separates_scale_from_weights():
    """Independent layers whose scale grows with depth: per position nothing is predictable, the distribution is."""
    rng = np.random.default_rng(1)
    n, p = 12, 4000
    stack = np.stack([rng.normal(scale=0.5 + 0.1 * l, size=p) for l in range(n)])
    ordered = torch.from_numpy(np.sort(stack, axis=1))
    for t in (3, 7, 11):
        expected = Ridge(alpha=1.0).fit(layer_features(range(t), n), ordered[:t].numpy()).predict(
            layer_features([t], n))[0]
        assert distribution_r2(ordered, t, n, 1.0) == pytest.approx(sk_r2(ordered[t].numpy(), expected), rel=1e-9)
        assert distribution_r2(ordered, t, n, 1.0) > 0.9
        per_position = r2_score(predict_layer(torch.from_numpy(stack), t, n, 1.0), torch.from_numpy(stack[t]))
        assert per_position < 0.1


def test_claim_cites_the_distribution_control():
    import pandas as pd
    rows = [{"component": "mlp.gate_proj", "layer": t, "r2": 0.02 + 0.01 * (t % 3), "r2_distribution": 0.97 + 0.001 * t,
             "adjacent_cosine": 0.003} for t in range(2, 30)]
    [claim] = predictability_claims(pd.DataFrame(rows))
    assert claim.verdict == "explained by a control" and claim.study == 0.909
    assert claim.ours_low <= claim.ours <= claim.ours_high < 0.1 and claim.control_value > 0.9
    for r in rows:
        r["r2_distribution"] = 0.3
    assert predictability_claims(pd.DataFrame(rows))[0].verdict == "does not hold"
    for r in rows:
        r["r2"] = 0.95
    assert predictability_claims(pd.DataFrame(rows))[0].verdict == "holds"


def test_paradox_statement_says_both_ways():
    import pandas as pd
    base = {"ppl": 20.0}
    rows = pd.DataFrame([{"replaced": "9 layers", "layers": "1-9", "mean_r2_all_positions": 0.9, "ppl": 1e5,
                          "degradation_pct": 5e5, "degradation_low": 1e5, "degradation_high": 1e6},
                         {"replaced": "1 layer", "layers": "3", "mean_r2_all_positions": 0.1, "ppl": 30.0,
                          "degradation_pct": 50.0, "degradation_low": 10.0, "degradation_high": 90.0}])
    text = paradox_statement(rows, base, PredictabilityConfig())
    assert "paradox occurs" in text and "no paradox: the R^2 itself is below" in text


def test_bad_config_is_refused(tiny_eval_set):
    model = make_tiny_model("llama")
    with pytest.raises(AnatomyError, match="cannot be predicted"):
        run_predictability(model, tiny_eval_set, PredictabilityConfig(single_layer=1))
    with pytest.raises(AnatomyError):
        run_predictability(model, tiny_eval_set, PredictabilityConfig(positions=0))


def test_layer_flags_are_read_as_the_cli_reads_them_and_checked_before_the_fits(tiny_eval_set):
    from anatomy.cli import build_parser, config_from_args
    from anatomy.experiments.predictability import EXPERIMENT

    def parsed(*flags: str) -> PredictabilityConfig:
        return config_from_args(EXPERIMENT, build_parser().parse_args(["predictability", *flags]))

    config = parsed("--single-layer", "3", "--multi-layers", "2-3", "--positions", "100")
    assert (config.single_layer, config.multi_layers, config.seed) == (3, "2-3", 0)
    assert parsed().single_layer is None and parsed().multi_layers is None
    with pytest.raises(AnatomyError, match="one 0-based layer"):
        parsed("--single-layer", "3,4")
    model = make_tiny_model("llama")
    result = run_predictability(model, tiny_eval_set, config)
    assert list(result["functional"]["layers"]) == ["3", "2,3"]
    assert "- replacing 2 layers (2,3)" in EXPERIMENT.headline(result)
    for selection in ("1-2", "all"):  # "all" is every layer, as typed, not the default choice
        with pytest.raises(AnatomyError, match="Layer 0 cannot|Layer 1 cannot"):
            run_predictability(model, tiny_eval_set, parsed("--multi-layers", selection))


@pytest.mark.slow
@pytest.mark.embedded
def test_predictability_cli_on_the_embedded_model(tmp_path, capsys):
    from anatomy.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(default_eval_texts()[:6]))
    assert main(["predictability", "--positions", "2000", "--multi-count", "9", "--text-file", str(texts),
                 "--max-length", "32", "--out", str(tmp_path / "run")]) == 0
    text = (tmp_path / "run" / "report.md").read_text()
    import pandas as pd
    row = pd.read_csv(tmp_path / "run" / "functional.csv").set_index("replaced").loc["9 layers"]
    config = PredictabilityConfig()
    assert row.degradation_pct > 0  # nine layers of predicted weights always cost something
    if row.mean_r2_all_positions < config.paradox_r2:
        verdict = "no paradox: the R^2 itself is below"
    elif row.degradation_pct >= config.paradox_degradation:
        verdict = "the R^2-perplexity paradox occurs"
    else:
        verdict = "no paradox: R^2 is high and the model survives"
    [line] = [line for line in text.splitlines() if line.startswith("- replacing 9 layers")]
    assert verdict in line and f"{row.ppl:.4g}" in line
    printed = capsys.readouterr().out  # the R^2 summary per component, then the paradox statement
    assert "mean_r2_distribution" in printed and line in printed



def test_figure_draws_the_distribution_r2_dashed_in_each_components_colour():
    import pandas as pd

    from anatomy.plots import predictability_figure
    df = pd.DataFrame({"component": ["mlp.gate_proj"] * 3 + ["mlp.up_proj"] * 3, "layer": [1, 2, 3] * 2,
                       "r2": [-0.5, -0.4, -0.6, 0.1, 0.0, -0.2], "r2_distribution": [0.99, 0.98, 0.97, 0.9, 0.8, 0.7]})
    lines = predictability_figure(df).axes[0].get_lines()
    solid = {tuple(line.get_ydata()): line.get_color() for line in lines if line.get_linestyle() == "-"}
    dashed = {tuple(line.get_ydata()): line.get_color() for line in lines if line.get_linestyle() == "--"}
    for component, part in df.groupby("component"):
        colour = solid[tuple(part["r2"])]
        assert dashed[tuple(part["r2_distribution"])] == colour  # the same component, the other reading
