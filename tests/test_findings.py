"""Verdict logic of the study's findings on synthetic results: holds, does not hold, inconclusive, not comparable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anatomy import findings as f
from anatomy.experiment import Result


def importance(d: list[float], half_width: float = 1.0) -> Result:
    n = len(d)
    return Result("importance", pd.DataFrame({
        "layer": range(n), "degradation_pct": d, "degradation_low": [x - half_width for x in d],
        "degradation_high": [x + half_width for x in d],
        "class": ["Critical" if x >= 100 else "Redundant" if x < 10 else "Minor" for x in d]}))


@pytest.mark.parametrize("value, low, high, verdict", [
    (1.0, 0.6, 1.4, f.HOLDS), (0.1, -0.2, 0.4, f.INCONCLUSIVE), (-0.5, -0.9, -0.1, f.FAILS),
    (0.5, float("nan"), 1.0, f.INCONCLUSIVE)])
def test_an_interval_decides_the_verdict(value, low, high, verdict):
    assert f.above(value, low, high, 0.0) == verdict


def test_importance_range_and_anti_layers():
    wide = {"importance": importance([5000, 3, 50, -20, 12000, 40])}
    assert f.importance_range(wide).verdict == f.HOLDS
    assert f.anti_layers(wide).verdict == f.HOLDS and "[3]" in f.anti_layers(wide).ours
    flat = {"importance": importance([50, 60, 55, 70, 65, 52])}
    assert f.importance_range(flat).verdict == f.FAILS
    assert f.anti_layers(flat).verdict == f.FAILS
    straddling = {"importance": importance([50, 0.5, 55, 70, 65, 52])}
    assert f.anti_layers(straddling).verdict == f.INCONCLUSIVE
    assert f.importance_range({}).verdict == f.NOT_COMPARABLE


def test_critical_core_by_relative_depth():
    d = [0] * 30
    d[10], d[20] = 9000, 50
    assert f.critical_core({"importance": importance(d)}).verdict == f.HOLDS
    d[10], d[20] = 50, 9000
    assert f.critical_core({"importance": importance(d)}).verdict == f.FAILS
    d[10] = 8999.5  # intervals overlap: one top layer in the band, one outside
    assert f.critical_core({"importance": importance(d)}).verdict == f.INCONCLUSIVE


def test_recovery_follows_importance_with_an_interval():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 1000, 13)
    imp = importance(list(d))
    def rec(ratio):
        return Result("recovery", pd.DataFrame({"layer": range(13), "final_ratio": ratio}))
    assert f.recovery_vs_importance({"importance": imp, "recovery": rec(d / 100 + 1)}).verdict == f.HOLDS
    assert f.recovery_vs_importance({"importance": imp, "recovery": rec(-d)}).verdict == f.FAILS
    noise = rng.uniform(1, 2, 13)
    assert f.recovery_vs_importance({"importance": imp, "recovery": rec(noise)}).verdict in (f.INCONCLUSIVE, f.FAILS)


def test_table_1_is_compared_only_for_the_study_family():
    imp = importance(list(f.STUDY_TABLE_1), half_width=0.1)
    assert f.table_1({"importance": imp}, "HuggingFaceTB/SmolLM2-135M").verdict == f.HOLDS
    assert f.table_1({"importance": imp}, "gpt2").verdict == f.NOT_COMPARABLE


def test_delta_correlation_against_the_shuffled_control():
    def structure(z):
        return {"structure": Result("structure", pd.DataFrame({"delta_corr": [-0.5] * len(z), "shuffled_mean": -0.5,
                                                                "order_z": z}))}
    assert f.delta_correlation(structure([0.3, -1.0, 0.8])).verdict == f.FAILS
    assert f.delta_correlation(structure([5.0, -4.0, 3.1])).verdict == f.HOLDS
    assert f.delta_correlation(structure([5.0, 0.1])).verdict == f.INCONCLUSIVE


def test_every_finding_answers_on_an_empty_study():
    rows = f.findings({}, "gpt2")
    assert len(rows) == len(f.FINDINGS) + 2 and {r.verdict for r in rows} == {f.NOT_COMPARABLE}
    assert list(f.findings_table(rows).columns) == ["finding", "study", "ours", "verdict", "reason"]


def test_arithmetic_fragility_has_a_real_bootstrap_interval():
    table = pd.DataFrame({"variant": ["baseline", "skip", "reverse", "parallel", "repeat"],
                          "acc_facts": [0.7, 0.5, 0.4, 0.6, 0.1], "acc_arithmetic": [0.3, 0.0, 0.0, 0.05, 0.0]})
    row = f.arithmetic_fragile({"plans": Result("plans", table)})
    low, high = (float(x) for x in row.ours.split("[")[1].split("]")[0].split(","))
    assert low < high  # resampled, not one draw repeated
    assert row.verdict == f.INCONCLUSIVE  # facts lose more on 'repeat', arithmetic on the rest


def test_manipulation_ignores_the_unchanged_row_and_names_the_layers():
    table = pd.DataFrame({"strategy": ["baseline (none)", "zero", "scale 0.9"], "degradation_pct": [0, 500, 19],
                          "degradation_low": [0, 400, 15], "degradation_high": [0, 600, 23]})
    row = f.manipulation({"manipulate": Result("manipulate", table, scalars={"layers": [3, 5]})})
    assert row.verdict == f.HOLDS and "2 layers changed (3, 5)" in row.ours and "baseline" not in row.ours


def test_growth_vs_uniform_reads_the_comparison_runs_claim():
    from anatomy.claims import Claim
    claim = Claim("growth.val_loss_ratio", "growth 4.7x", 4.72, 1.416, 1.381, 1.451, "t over 3 seeds",
                  "uniform given the same passes", 0.904, 0.857, 0.950, "explained by the control",
                  "uniform given growth's passes beats growth.")
    row = f.growth_vs_uniform([claim])
    assert row.verdict == f.FAILS and "1.416 [1.381, 1.451]" in row.ours and "explained by the control" in row.reason
    assert f.growth_vs_uniform(None).verdict == f.NOT_COMPARABLE
    assert len(f.findings({}, "gpt2", growth=[claim])) == len(f.FINDINGS) + 2
