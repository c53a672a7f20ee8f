"""Verdict logic of the study's findings on constructed results: each rule gives each verdict it can give."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anatomy import findings as f
from anatomy.claims import Claim
from anatomy.experiment import Result
from anatomy.inference import holm, p_below, permutation_p


def importance(d: list[float], half_width: float = 1.0) -> Result:
    n = len(d)
    return Result("importance", pd.DataFrame({
        "layer": range(n), "degradation_pct": d, "degradation_low": [x - half_width for x in d],
        "degradation_high": [x + half_width for x in d],
        "class": ["Critical" if x >= 100 else "Redundant" if x < 10 else "Minor" for x in d]}))


def thirty(**at: float) -> list[float]:
    """D of a 30-layer model: 50% everywhere but the layers named L<k>."""
    d = [50.0] * 30
    for name, value in at.items():
        d[int(name[1:])] = value
    return d


def recovery(layers: dict[int, dict], steps: int = 200, base: float = 20.0) -> Result:
    rows, curves = [], []
    for layer, v in layers.items():
        noise = v.get("noise", 30.0)
        rows.append({"layer": layer, "baseline_ppl": base, "noise_ppl": noise, "steps": steps,
                     "steps_to_2x": v.get("to2", 0), "steps_to_1.5x": v.get("to15", 0),
                     "steps_to_1.1x": v.get("to11", pd.NA), "final_ppl": v.get("final", 25.0),
                     "final_ppl_low": v.get("final", 25.0) * 0.95, "final_ppl_high": v.get("final", 25.0) * 1.05,
                     "final_ratio": v.get("final", 25.0) / base})
        half = v.get("noise_half", 1.0)
        curves.append({"layer": layer, "step": 0, "ppl": noise, "ppl_low": noise - half, "ppl_high": noise + half})
    table = pd.DataFrame(rows)
    table["steps_to_1.1x"] = table["steps_to_1.1x"].astype("Int64")
    return Result("recovery", table, tables={"recovery_curves": pd.DataFrame(curves)})


@pytest.mark.parametrize("value, low, high, verdict", [
    (1.0, 0.6, 1.4, f.HOLDS), (0.1, -0.2, 0.4, f.INCONCLUSIVE), (-0.5, -0.9, -0.1, f.FAILS),
    (0.5, float("nan"), 1.0, f.INCONCLUSIVE)])
def test_an_interval_decides_the_verdict(value, low, high, verdict):
    assert f.above(value, low, high, 0.0) == verdict


def test_the_statistics_convention():
    assert holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.001 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05
    assert holm([0.001, 0.03, 0.04]) == [True, False, False]  # 0.03 > 0.025 stops the step-down
    assert p_below(-2.0, -3.96, -0.04) == pytest.approx(0.0228, abs=1e-3)  # z = -2
    x = np.arange(12.0)
    assert permutation_p(x, x, "greater") < 0.01 < permutation_p(x, -x, "greater")


def test_importance_range_reads_the_inner_layers():
    wide = {"importance": importance([0, 5000, 3, 50, 12000, 0])}
    assert f.importance_range(wide).verdict == f.HOLDS
    assert f.importance_range({"importance": importance([99999, 50, 60, 55, 70, 0])}).verdict == f.FAILS
    assert f.importance_range({}).verdict == f.NOT_COMPARABLE


def test_class_counts_against_the_study():
    d = [5.0] * 8 + [20.0] * 11 + [50.0] + [500.0] * 8  # the study's 10/11/1/8 with L0 and L29 added as Redundant
    decided = {"importance": importance([0.0, *d, 0.0], half_width=0.5)}
    assert f.class_counts(decided).verdict == f.HOLDS
    assert f.class_counts({"importance": importance([0.0] + [500.0] * 28 + [0.0])}).verdict == f.FAILS
    d[0] = 9.8  # its interval reaches the Minor band: the count is a range
    assert f.class_counts({"importance": importance([0.0, *d, 0.0], half_width=0.5)}).verdict == f.INCONCLUSIVE
    assert "10/11/1/8" in f.class_counts(decided).reason and "8/12/1/9" in f.class_counts(decided).reason


def test_critical_core_by_relative_depth():
    d = thirty(L10=9000, L20=50)
    assert f.critical_core({"importance": importance(d)}).verdict == f.HOLDS
    d = thirty(L20=9000)
    assert f.critical_core({"importance": importance(d)}).verdict == f.FAILS
    d = thirty(L10=9000, L20=8999.5)  # intervals overlap: one top layer in the band, one outside
    assert f.critical_core({"importance": importance(d)}).verdict == f.INCONCLUSIVE
    assert "37.9%" in f.critical_core({"importance": importance(d)}).reason


def test_the_critical_layers_are_the_studys_at_relative_depth():
    core = {"L8": 500, "L9": 500, "L10": 500, "L11": 500}
    assert f.critical_core_layers({"importance": importance(thirty(**core))}).verdict == f.HOLDS
    assert f.critical_core_layers({"importance": importance(thirty(**{**core, "L9": 20}))}).verdict == f.FAILS
    assert f.critical_core_layers({"importance": importance(thirty(**{**core, "L9": 100}))}).verdict == f.INCONCLUSIVE
    edge = {"L1": 900, "L2": 900, "L24": 900, "L27": 900, "L28": 900}
    assert f.critical_boundary({"importance": importance(thirty(**edge))}).verdict == f.HOLDS
    # a 59-layer model: L11 of 30 sits at layer 22
    deeper = [50.0] * 59
    for layer in f.at_depth((8, 9, 10, 11), 59):
        deeper[layer] = 500.0
    assert f.critical_core_layers({"importance": importance(deeper)}).verdict == f.HOLDS


def test_anti_layers_test_the_studys_two_layers_with_its_evidence():
    assert f.anti_layers({"importance": importance(thirty(L14=-5, L17=-5))}).verdict == f.HOLDS
    assert f.anti_layers({"importance": importance(thirty(L14=5, L17=-5))}).verdict == f.FAILS
    assert f.anti_layers({"importance": importance(thirty(L14=0.2, L17=-5))}).verdict == f.INCONCLUSIVE
    # D straddles 0 for both, but the PPL right after noise is clearly below the baseline for both
    rec = recovery({14: {"noise": 15.0}, 17: {"noise": 16.0}}, steps=10)
    row = f.anti_layers({"importance": importance(thirty(L14=0.2, L17=0.2)), "recovery": rec})
    assert row.verdict == f.HOLDS and "not used" in row.conditions  # 10 steps: the final PPL is left out


def test_the_anti_layer_search_corrects_for_the_layers():
    assert f.anti_layer_search({"importance": importance(thirty(L17=-10))}).verdict == f.HOLDS
    assert f.anti_layer_search({"importance": importance(thirty())}).verdict == f.FAILS
    # one layer at z = -2 (p 0.023): significant alone, not after Holm over 28 layers
    d = thirty(L17=-1.02)
    assert p_below(-1.02, -2.02, -0.02) < 0.05
    assert f.anti_layer_search({"importance": importance(d)}).verdict == f.INCONCLUSIVE


def predictability(r2: float, dist: float, functional: list[dict] | None = None, spread: float = 0.05) -> Result:
    rows = [{"component": c, "layer": layer, "r2": r2 + spread * np.sin(layer) + 0.01 * i,
             "r2_distribution": dist + spread * np.cos(layer)}
            for i, c in enumerate(f.STUDY_TABLE_2) for layer in range(2, 30)]
    return Result("predictability", pd.DataFrame(rows),
                  tables={"functional": pd.DataFrame(functional or [])})


def test_r2_of_gate_proj_with_its_distribution_control():
    assert f.r2_gate({"predictability": predictability(0.9, 0.99)}).verdict == f.HOLDS
    assert f.r2_gate({"predictability": predictability(-1.2, 0.99)}).verdict == f.CONTROL
    assert f.r2_gate({"predictability": predictability(-1.2, 0.1)}).verdict == f.FAILS
    assert f.r2_gate({"predictability": predictability(0.5, 0.99)}).verdict == f.INCONCLUSIVE
    assert "v_proj -0.655" in f.r2_gate({"predictability": predictability(-1.2, 0.99)}).reason


def test_table_2_pattern_by_rank():
    rows = [{"component": c, "layer": 2, "r2": v, "r2_distribution": 0.9} for c, v in f.STUDY_TABLE_2.items()]
    same = Result("predictability", pd.DataFrame(rows))
    assert f.table_2({"predictability": same}).verdict == f.HOLDS
    flipped = Result("predictability", pd.DataFrame([{**r, "r2": -r["r2"]} for r in rows]))
    assert f.table_2({"predictability": flipped}).verdict == f.FAILS


def functional(count: int, r2: float, ppl: float, d: float, half: float) -> dict:
    return {"replaced": f"{count} layers", "layers": ",".join(map(str, range(count))), "mean_r2_all_positions": r2,
            "ppl": ppl, "ppl_low": ppl * 0.8, "ppl_high": ppl * 1.2, "degradation_pct": d,
            "degradation_low": d - half, "degradation_high": d + half}


def test_one_predicted_layer_and_the_paradox():
    good = predictability(0.9, 0.99, [functional(1, 0.9, 26.0, 16, 5), functional(9, 0.9, 5e5, 2e6, 1e5)])
    assert f.one_predicted_layer({"predictability": good}).verdict == f.HOLDS
    assert f.paradox({"predictability": good}).verdict == f.HOLDS
    bad = predictability(-1.0, 0.99, [functional(1, -0.4, 66.0, 171, 60), functional(9, -0.4, 3e4, 1e5, 5e4)])
    assert f.one_predicted_layer({"predictability": bad}).verdict == f.FAILS
    assert f.paradox({"predictability": bad}).verdict == f.CONTROL
    few = predictability(0.9, 0.99, [functional(3, 0.9, 5e5, 2e6, 1e5)])
    assert f.paradox({"predictability": few}).verdict == f.NOT_COMPARABLE


def structure(delta: list[float], p: list[float], shuffles: int = 2000) -> dict:
    return {"structure": Result("structure", pd.DataFrame({
        "component": [f"c{i}" for i in range(len(delta))], "delta_corr": delta, "shuffled_mean": -0.5,
        "order_z": 0.0, "p_below": p}), scalars={"shuffles": shuffles})}


def test_delta_correlation_with_permutation_tests_and_holm():
    assert f.delta_correlation(structure([-0.5] * 7, [0.0005] * 7)).verdict == f.HOLDS
    row = f.delta_correlation(structure([-0.5] * 5 + [-0.515, -0.51], [0.5] * 5 + [0.0005, 0.001]))
    assert row.verdict == f.CONTROL and "c5" in row.ours and "c6" in row.ours and "5 of 7" in row.reason
    assert f.delta_correlation(structure([-0.3] * 7, [0.5] * 7)).verdict == f.FAILS
    assert f.delta_correlation(structure([-0.5] * 7, [0.5] * 7, shuffles=50)).verdict == f.INCONCLUSIVE


def manipulate(layers: int, survivors: set[str]) -> dict:
    names = ["zero", "clone", "blend", "lowrank", "scale 0.7", "scale 0.9"]
    d = [19.0 if s in survivors else 5000.0 for s in names]
    table = pd.DataFrame({"strategy": ["baseline (none)", *names], "degradation_pct": [0, *d],
                          "degradation_low": [0, *(x * 0.8 for x in d)], "degradation_high": [0, *(x * 1.2 for x in d)]})
    return {"manipulate": Result("manipulate", table, scalars={"layers": list(range(layers)),
                                                               "source": "x: the 9 layers of lowest D"})}


def test_manipulation_changes_the_studys_nine_layers():
    assert f.manipulation(manipulate(9, {"scale 0.9"})).verdict == f.HOLDS
    assert f.manipulation(manipulate(9, {"scale 0.9", "scale 0.7"})).verdict == f.FAILS
    row = f.manipulation(manipulate(1, {"scale 0.9"}))
    assert row.verdict == f.NOT_COMPARABLE and row.conditions.startswith("1 layer changed (study: 9)")
    assert "+49%" in row.reason


def speed(d: np.ndarray, slow: np.ndarray, steps: int) -> dict:
    layers = {i: {"noise": 40.0, "to2": int(s), "to15": int(s), "to11": int(s), "final": 40 - 19 * (1 - s / 300)}
              for i, s in enumerate(slow)}
    return {"importance": importance(list(d)), "recovery": recovery(layers, steps)}


def test_recovery_speed_follows_importance():
    d = np.linspace(0, 1000, 13)
    assert f.recovery_vs_importance(speed(d, np.linspace(0, 190, 13), 200)).verdict == f.HOLDS
    assert f.recovery_vs_importance(speed(d, np.linspace(190, 0, 13), 200)).verdict == f.FAILS
    row = f.recovery_vs_importance(speed(d, np.linspace(0, 190, 13), 10))
    assert row.verdict == f.NOT_COMPARABLE and "10 steps (study: 200)" in row.conditions
    assert "0.96" in row.reason and "0.57" in row.reason  # the study's own numbers


def test_the_hardest_layer_is_compared_with_l11():
    hard = {11: {"final": 150.0}, 14: {"final": 20.0}, 3: {"final": 30.0}}
    assert f.hardest_layer({"recovery": recovery(hard)}).verdict == f.HOLDS
    other = {11: {"final": 30.0}, 14: {"final": 150.0}}
    assert f.hardest_layer({"recovery": recovery(other)}).verdict == f.FAILS
    row = f.hardest_layer({"recovery": recovery(hard, steps=10)})
    assert row.verdict == f.NOT_COMPARABLE and row.ours.startswith("layer 11")


def test_recovering_at_once_never_converging_and_h4():
    fast = recovery({23: {"noise": 22.0}, 24: {"noise": 23.0}}, steps=10)
    assert f.recover_at_once({"recovery": fast}).verdict == f.HOLDS  # a step-0 measurement: 10 steps suffice
    assert f.recover_at_once({"recovery": recovery({23: {"noise": 50.0}, 24: {"noise": 23.0}})}).verdict == f.FAILS
    assert f.recover_at_once({"recovery": recovery({11: {}})}).verdict == f.NOT_COMPARABLE
    never = recovery({3: {"to11": pd.NA, "final": 27.0}})
    assert f.never_converges({"recovery": never}).verdict == f.HOLDS
    assert f.never_converges({"recovery": recovery({3: {"to11": 50, "final": 21.0}})}).verdict == f.FAILS
    assert f.never_converges({"recovery": recovery({3: {"final": 27.0}}, steps=10)}).verdict == f.NOT_COMPARABLE
    assert f.noise_improves({"recovery": recovery({14: {"noise": 17.0}, 17: {"noise": 16.0}})}).verdict == f.HOLDS
    assert f.noise_improves({"recovery": recovery({14: {"noise": 30.0}, 17: {"noise": 16.0}})}).verdict == f.FAILS
    assert f.noise_improves({"recovery": recovery({14: {"noise": 19.5}, 17: {"noise": 16.0}})}).verdict == \
        f.INCONCLUSIVE


def test_the_budget_is_arithmetic_on_the_studys_classes():
    row = f.budget_saving({})
    assert row.verdict == f.HOLDS and "2,560-3,230" in row.ours and "on this model: not run" in row.ours
    assert f.study_budget("low") <= f.study_budget() <= f.study_budget("high")


def plans(d: dict[str, float], repeats: int = 5, speedup: float = 1.2) -> dict:
    rows = [{"variant": "baseline", "block_size": 0, "degradation_pct": 0.0, "degradation_low": 0.0,
             "degradation_high": 0.0, "decode_speedup": 1.0}]
    rows += [{"variant": v, "block_size": 4, "degradation_pct": x, "degradation_low": x * 0.9,
              "degradation_high": x * 1.1, "decode_speedup": speedup} for v, x in d.items()]
    return {"plans": Result("plans", pd.DataFrame(rows), source={"config": {"latency_repeats": repeats}})}


def test_painters_rows_against_their_controls():
    assert f.painters_middle(plans({"skip": 20, "skip-start": 500, "skip-end": 300})).verdict == f.HOLDS
    assert f.painters_middle(plans({"skip": 600, "skip-start": 500, "skip-end": 300})).verdict == f.FAILS
    assert f.painters_middle(plans({"skip": 20})).verdict == f.NOT_COMPARABLE
    assert f.painters_reorder(plans({"skip": 60, "reverse": 20})).verdict == f.HOLDS
    assert f.painters_reorder(plans({"skip": 20, "reverse": 60})).verdict == f.FAILS
    assert f.painters_parallel(plans({"skip": 60, "parallel": 20})).verdict == f.HOLDS
    assert f.painters_looped(plans({"parallel": 60, "looped-parallel": 20})).verdict == f.HOLDS
    assert f.painters_looped(plans({"parallel": 60})).verdict == f.NOT_COMPARABLE
    assert f.painters_latency(plans({"skip": 60, "parallel": 20})).verdict == f.HOLDS
    assert f.painters_latency(plans({"skip": 60, "parallel": 20}, speedup=0.9)).verdict == f.FAILS
    assert f.painters_latency(plans({"skip": 60, "parallel": 20}, repeats=1)).verdict == f.INCONCLUSIVE


def task_items(base: tuple[int, int], altered: list[tuple[int, int]], n: int = 30) -> dict:
    """(right arithmetic, right facts) of the unchanged model and of each altered plan."""
    items = []
    for row, (sums, facts) in enumerate([base, *altered]):
        variant = "baseline" if row == 0 else "skip"
        items += [{"row": row, "variant": variant, "task": "arithmetic", "item": i, "correct": i < sums}
                  for i in range(n)]
        items += [{"row": row, "variant": variant, "task": "facts", "item": i, "correct": i < facts}
                  for i in range(n)]
    return {"plans": Result("plans", pd.DataFrame({"variant": ["baseline"]}),
                            tables={"task_items": pd.DataFrame(items)})}


def test_arithmetic_fragility_by_a_paired_bootstrap_over_items():
    row = f.arithmetic_fragile(task_items((20, 20), [(2, 19), (4, 18)]))
    assert row.verdict == f.HOLDS and "over 2 altered plans" in row.ours
    assert f.arithmetic_fragile(task_items((20, 20), [(19, 2), (18, 4)])).verdict == f.FAILS
    assert f.arithmetic_fragile(task_items((0, 20), [(0, 2)])).verdict == f.NOT_COMPARABLE
    assert f.arithmetic_fragile({"plans": Result("plans", pd.DataFrame())}).verdict == f.NOT_COMPARABLE


def spectral(alpha: list[float], qk: list[float] | None = None, vo: list[float] | None = None) -> dict:
    rows = [{"layer": i, "group": "query/key", "alpha": a, "stable_rank": (qk or [10.0] * len(alpha))[i]}
            for i, a in enumerate(alpha)]
    rows += [{"layer": i, "group": "value/output", "alpha": a, "stable_rank": (vo or [10.0] * len(alpha))[i]}
             for i, a in enumerate(alpha)]
    return {"spectral": Result("spectral", pd.DataFrame(rows))}


def test_alpha_shape_and_the_dynamics_rows():
    x = np.linspace(0, 1, 30)
    assert f.alpha_depth(spectral(list(3 + 2 * x))).verdict == f.HOLDS  # monotone
    assert f.alpha_depth(spectral(list(3 + 4 * x * (1 - x)))).verdict == f.HOLDS  # inverted U
    flat = list(4 + 0.01 * np.random.default_rng(1).standard_normal(150))  # 150 layers: an interval within +-0.3
    assert f.alpha_depth(spectral(flat)).verdict == f.FAILS
    assert "final checkpoint only" in f.alpha_depth(spectral(flat)).conditions
    for row in (f.alpha_persists({}), f.compression_waves({}), f.qk_vs_vo_dynamics({})):
        assert row.verdict == f.NOT_COMPARABLE and "checkpoints" in row.conditions


def test_query_key_against_value_output_by_stable_rank():
    rng = np.random.default_rng(0)
    wide, narrow = list(10 + 5 * rng.standard_normal(30)), list(10 + 0.5 * rng.standard_normal(30))
    assert f.qk_vs_vo(spectral([4.0] * 30, wide, narrow)).verdict == f.HOLDS
    assert f.qk_vs_vo(spectral([4.0] * 30, narrow, wide)).verdict == f.FAILS


def test_alpha_predicts_importance():
    d = np.linspace(10, 1000, 30)
    both = {**spectral(list(np.linspace(2, 6, 30))), "importance": importance(list(d))}
    assert f.alpha_importance(both).verdict == f.HOLDS
    rng = np.random.default_rng(2)
    unrelated = {**spectral(list(rng.uniform(2, 6, 150))), "importance": importance(list(rng.uniform(10, 1000, 150)))}
    assert f.alpha_importance(unrelated).verdict == f.FAILS


def prune(ppl: dict[str, float]) -> dict:
    rows = [{"criterion": c, "k": 3, "ppl": p, "ppl_low": p * 0.9, "ppl_high": p * 1.1} for c, p in ppl.items()]
    return {"prune": Result("prune", pd.DataFrame(rows))}


def test_alpha_pruning_and_its_gap():
    row = f.alpha_pruning(prune({"alpha": 40, "last": 1300, "block_influence": 38, "ablation": 30}))
    assert row.verdict == f.HOLDS and "outside the claimed 1.1x-3.6x" in row.reason and "ablation" in row.reason
    assert f.alpha_pruning(prune({"alpha": 1300, "last": 40})).verdict == f.FAILS
    assert f.alpha_pruning(prune({"alpha": 40, "last": 44})).verdict == f.INCONCLUSIVE
    assert f.pruning_gap(prune({"alpha": 40, "last": 1300})).verdict == f.NOT_COMPARABLE


def test_table_1_is_compared_only_for_the_study_family():
    imp = importance(list(f.STUDY_TABLE_1), half_width=0.1)
    assert f.table_1({"importance": imp}, "HuggingFaceTB/SmolLM2-135M").verdict == f.HOLDS
    assert f.table_1({"importance": imp}, "gpt2").verdict == f.NOT_COMPARABLE


def test_growth_rows_read_the_comparison_runs_claims():
    literal = Claim("growth.val_loss_ratio", "growth 4.7x", 4.72, 1.416, 1.381, 1.451, "t over 3 seeds",
                    "uniform given the same passes", 0.904, 0.857, 0.950, "explained by a control",
                    "uniform given growth's passes beats growth.")
    equal = Claim("growth.val_loss_ratio.equal_steps", "4.7x", 4.72, 0.8, 0.7, 0.9, "t", "none", math.nan, math.nan,
                  math.nan, "does not hold", "uniform ends lower.")
    rows = {r.finding: r for r in f.growth_findings([literal, equal])}
    assert rows["growth vs uniform (literal epochs)"].verdict == f.CONTROL
    assert "1.416 [1.381, 1.451]" in rows["growth vs uniform (literal epochs)"].ours
    assert rows["growth vs uniform (equal steps)"].verdict == f.FAILS
    assert "656 steps" in rows["growth vs uniform (equal steps)"].reason
    assert rows["growth vs uniform (same passes)"].verdict == f.FAILS  # 0.904 [0.857, 0.950]: uniform wins
    assert "0.904 [0.857, 0.950]" in rows["growth vs uniform (same passes)"].ours
    older = {r.finding: r for r in f.growth_findings([literal])}  # a run written before the equal-steps claim
    assert older["growth vs uniform (equal steps)"].verdict == f.NOT_COMPARABLE
    assert all(r.verdict == f.NOT_COMPARABLE for r in f.growth_findings(None))


def test_every_finding_answers_on_an_empty_study():
    rows = f.findings({}, "gpt2")
    assert len(rows) >= 24 and {r.verdict for r in rows} <= {f.NOT_COMPARABLE, f.HOLDS}  # budget: arithmetic
    assert list(f.findings_table(rows).columns) == ["finding", "study", "ours", "verdict", "reason", "conditions",
                                                    "rules"]
    assert len({r.finding for r in rows}) == len(rows)
    with pytest.raises(Exception, match="not one of"):
        f.Finding("x", "y", "z", "reproduced", "r")
