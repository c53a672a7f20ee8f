"""The study's findings checked against a study's results: the paper's claim as it made it, ours with its
interval, the verdict, its reason in one sentence, and the conditions of ours against the paper's.

Verdicts (one vocabulary with `anatomy.claims`): `holds` / `does not hold` when the measurement decides the
claim; `explained by a control` when the number is reproduced or differs and a control or null says why;
`not comparable` when a condition the claim's number depends on differs from the paper's (recovery claims:
the steps trained; manipulation: the number of layers changed; training-dynamics claims: checkpoints over
training) or nothing measured it; `inconclusive` when an interval straddles the threshold or no test rejects
after correction. The statistics convention is `anatomy.inference.CONVENTION`. Conditions every row shares
(the model variant and its quantisation, the dtype, the evaluation text) are stated once in the report's
header and make no row `not comparable` by themselves: none of the claims is about instruction tuning.

The papers, as stored in the repository's shared papers folder: the study (Wietrzykowski 2026, arXiv
2603.19348), "Transformer Layers as Painters" (Sun et al. 2024, its abstract) and the spectral-lifecycle study
(arXiv 2604.22778, a summary). The numbers quoted in each rule's docstring are theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .claims import CONTROL, FAILS, HOLDS, INCONCLUSIVE, NOT_COMPARABLE, RULES_VERSION, VERDICTS, Claim, \
    current_verdict
from .errors import AnatomyError
from .experiment import Result
from .inference import FWER, bootstrap, holm, p_below, permutation_p, spearman, spearman_interval

__all__ = ["CONTROL", "FAILS", "HOLDS", "INCONCLUSIVE", "NOT_COMPARABLE", "RULES_VERSION", "VERDICTS", "Finding", "findings",
           "findings_table", "spearman", "spearman_interval"]

STUDY_DEPTH = 30  # SmolLM2-135M's layers, in which the study's layer numbers are written
STUDY_BASELINE = 22.60  # "Baseline PPL = 22.60" (section 3.1)
STUDY_STEPS = 200  # recovery: "after 200 training steps" (section 4.5)
STUDY_MANIPULATED = 9  # "the 9 identified redundant layers simultaneously" (section 3.5)
# Table 1: ablation D in % by layer, SmolLM2-135M base; L0 and L29 left at 0.0 ("boundary")
STUDY_TABLE_1 = (0.0, 2737.1, 186.0, 13.4, 22.7, 8.3, 9.4, 20.3, 2395.6, 378.1, 9870.7, 63419.2, 6.3, 24.4, 5.0,
                 11.1, 20.3, -0.6, 16.9, 2.6, 25.9, 23.5, 27.8, 66.6, 115.2, 23.2, 19.4, 134.8, 211.5, 0.0)
# Table 1's Category column as printed (L3 at +13.4% is listed Redundant, L14 and L17 are its anti-layers)
STUDY_LISTED = ("Redundant", "Critical", "Critical", "Redundant", "Minor", "Redundant", "Redundant", "Minor",
                "Critical", "Critical", "Critical", "Critical", "Redundant", "Minor", "Redundant", "Minor", "Minor",
                "Redundant", "Minor", "Redundant", "Minor", "Minor", "Minor", "Important", "Critical", "Minor",
                "Minor", "Critical", "Critical", "Redundant")
STUDY_ANTI = (14, 17)
# Table 5: layer -> (PPL after noise, steps to < 2x, < 1.5x, < 1.1x baseline, final PPL after 200 steps)
STUDY_TABLE_5 = {14: (19.4, 0, 0, 0, 18.2), 17: (18.5, 0, 0, 0, 17.6), 5: (21.2, 0, 0, 10, 19.6),
                 23: (26.5, 0, 0, 150, 19.7), 24: (26.8, 0, 0, 110, 19.6), 3: (27.3, 0, 10, 200, 27.3),
                 27: (27.7, 0, 10, 130, 19.8), 0: (38.6, 10, 30, 200, 28.7), 8: (58.4, 10, 30, 200, 35.6),
                 1: (54.7, 20, 200, 200, 49.3), 10: (58.7, 20, 200, 200, 42.2), 11: (4323.4, 200, 200, 200, 175.9),
                 29: (1289.2, 200, 200, 200, 41.5)}
# Table 2: average R^2 per component
STUDY_TABLE_2 = {"mlp.gate_proj": 0.909, "mlp.down_proj": 0.895, "self_attn.q_proj": 0.824,
                 "self_attn.k_proj": 0.745, "mlp.up_proj": 0.716, "self_attn.o_proj": 0.079,
                 "self_attn.v_proj": -0.655}
STUDY_FAMILY = ("SmolLM2-135M",)
CLASS_BANDS = {"Redundant": (-math.inf, 10.0), "Minor": (10.0, 30.0), "Important": (30.0, 100.0),
               "Critical": (100.0, math.inf)}  # section 3.2's thresholds on D (%)
WEAK = 0.3  # |rho| below which a correlation is too weak to "predict" (the rules' equivalence margin)
PREDICTED = 0.5  # an R^2 above which most of the weights' variance is predicted (predictability's paradox_r2)
EDGE = ("skip-start", "skip-end")


@dataclass(frozen=True)
class Finding:
    """One row of the claims table."""

    finding: str
    study: str  # the paper's number or statement, as published
    ours: str  # our number with its interval
    verdict: str  # one of VERDICTS
    reason: str  # one sentence (or two), with the numbers
    conditions: str = ""  # ours against the paper's where it bears on this row, e.g. "10 steps (study: 200)"
    missing: str = ""  # the experiment whose absence made it not comparable

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise AnatomyError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}.")


class Verdict(NamedTuple):
    """What a rule measures."""

    ours: str
    verdict: str
    reason: str
    conditions: str = ""


def above(value: float, low: float, high: float, threshold: float) -> str:
    """The verdict on 'value > threshold' from its interval."""
    if not all(map(math.isfinite, (low, high))):
        return INCONCLUSIVE
    return HOLDS if low > threshold else FAILS if high <= threshold else INCONCLUSIVE


def at_depth(layers: Sequence[int], num_layers: int) -> list[int]:
    """The study's layers of its 30-layer model at the same relative depth (layer / last layer) in a model of
    `num_layers` layers; every rule measures depth this way."""
    return [round(layer / (STUDY_DEPTH - 1) * (num_layers - 1)) for layer in layers]


def missing(name: str, study: str, experiment: str) -> Finding:
    return Finding(name, study, "n/a", NOT_COMPARABLE, f"The {experiment} experiment was not part of this study.",
                   missing=experiment)


def finding(name: str, study: str, *reads: str) -> Callable[[Callable[..., Verdict]], Callable[..., Finding]]:
    """Declares a finding: its row in the claims table, the paper's statement, and the experiments its rule
    reads. The rule runs only when all of them are in the results (otherwise the row is `not comparable` and
    names the absent one), so each rule holds just its measurement and its threshold."""
    def declare(rule: Callable[..., Verdict]) -> Callable[..., Finding]:
        @functools.wraps(rule)
        def check(results: Mapping[str, Result], *args: object) -> Finding:
            absent = next((n for n in reads if n not in results), None)
            return missing(name, study, absent) if absent else Finding(name, study, *rule(results, *args))
        check.finding = name  # type: ignore[attr-defined]
        return check
    return declare


def not_comparable(why: str, ours: str = "n/a", conditions: str = "") -> Verdict:
    return Verdict(ours, NOT_COMPARABLE, why, conditions)


def cell(value: float, low: float, high: float, fmt: str = ".2f") -> str:
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def inner(table: pd.DataFrame) -> pd.DataFrame:
    """The layers the study measured: all but the first and the last, which it left at D 0.0."""
    last = int(table["layer"].max())
    keep = (table["layer"] > 0) & (table["layer"] < last)
    if "class" in table:
        keep &= table["class"] != "Untouched"
    return table[keep]


def depth(results: Mapping[str, Result]) -> int | None:
    """The model's number of layers, from the results that know it."""
    for name in ("importance", "spectral"):
        if name in results and len(results[name].table):
            return int(results[name].table["layer"].max()) + 1
    for result in results.values():
        layers = (result.source.get("model") or {}).get("num_layers")
        if layers:
            return int(layers)
    return None


def family(layers: Sequence[int]) -> str:
    return ", ".join(f"L{layer}" for layer in layers)


def mapped(layers: Sequence[int], n: int) -> str:
    ours = at_depth(layers, n)
    return family(layers) if list(ours) == list(layers) else f"{family(ours)} (the study's {family(layers)})"


# ---------------------------------------------------------------- importance -------------------------------------

@finding("importance range", "D from -0.6% to +63,419% (section 4.1): catastrophic layers beside redundant ones",
         "importance")
def importance_range(results: Mapping[str, Result]) -> Verdict:
    """Over the layers the study measured (L1-L28; it left L0 and L29 at 0.0): some layer's whole D interval
    above 1,000% and some layer's below 10%."""
    t = inner(results["importance"].table)
    top, bottom = t.loc[t["degradation_pct"].idxmax()], t.loc[t["degradation_pct"].idxmin()]
    ours = (f"inner layers: D from {bottom['degradation_pct']:+.1f}% (layer {int(bottom['layer'])}) to "
            f"{top['degradation_pct']:+,.0f}% [{top['degradation_low']:,.0f}, {top['degradation_high']:,.0f}] "
            f"(layer {int(top['layer'])})")
    catastrophic, redundant = bool((t["degradation_low"] > 1000).any()), bool((t["degradation_high"] < 10).any())
    verdict = (HOLDS if catastrophic and redundant else
               FAILS if not (t["degradation_high"] > 1000).any() or not (t["degradation_low"] < 10).any() else
               INCONCLUSIVE)
    return Verdict(ours, verdict, "Rule: some inner layer's whole D interval above 1,000% and some inner layer's "
                   f"below 10%; catastrophic layer {'found' if catastrophic else 'not found'}, redundant layer "
                   f"{'found' if redundant else 'not found'}.", "inner layers only, as the study")


def study_counts() -> dict[str, int]:
    """The study's own thresholds applied to its own Table 1."""
    return {c: sum(lo <= d < hi for d in STUDY_TABLE_1) for c, (lo, hi) in CLASS_BANDS.items()}


@finding("class counts", "Redundant 10 layers, Minor 11, Important 1, Critical 8 (section 4.1)", "importance")
def class_counts(results: Mapping[str, Result]) -> Verdict:
    """Each class's count over the inner layers, L0 and L29 counted Redundant as the study counted them: the
    range from the layers whose D interval lies wholly in the class's band to those whose interval reaches it.
    Holds when every count is decided and equals the study's; does not hold when a study count lies outside
    our range for some class."""
    t = results["importance"].table
    claimed = {"Redundant": 10, "Minor": 11, "Important": 1, "Critical": 8}
    listed = {c: STUDY_LISTED.count(c) for c in claimed}
    own = study_counts()
    why_study = (f"The study contradicts itself: its text says 10/11/1/8, its Table 1 lists "
                 f"{'/'.join(str(listed[c]) for c in claimed)} and its thresholds on its own D give "
                 f"{'/'.join(str(own[c]) for c in claimed)} (L3 at +13.4% is listed Redundant).")
    if len(t) != STUDY_DEPTH:
        return not_comparable(f"Counts of a {STUDY_DEPTH}-layer model; this one has {len(t)}. {why_study}",
                              conditions=f"{len(t)} layers (study: {STUDY_DEPTH})")
    part = inner(t)
    ranges = {}
    for c, (lo, hi) in CLASS_BANDS.items():
        sure = int(((part["degradation_low"] >= lo) & (part["degradation_high"] < hi)).sum())
        reach = int(((part["degradation_high"] >= lo) & (part["degradation_low"] < hi)).sum())
        extra = 2 if c == "Redundant" else 0
        ranges[c] = (sure + extra, reach + extra)
    outside = [c for c, (lo, hi) in ranges.items() if not lo <= claimed[c] <= hi]
    decided = all(lo == hi == claimed[c] for c, (lo, hi) in ranges.items())
    verdict = FAILS if outside else HOLDS if decided else INCONCLUSIVE
    ours = ", ".join(f"{c} {lo}" + (f"-{hi}" if hi != lo else "") for c, (lo, hi) in ranges.items())
    return Verdict(ours, verdict, "Rule: a class's count ranges from the layers whose D interval lies wholly in its "
                   "band to those it reaches; " + (f"outside the study's count: {', '.join(outside)}. "
                                                   if outside else "") + why_study,
                   "inner layers measured, L0 and L29 counted Redundant as the study did")


CORE_BAND = (8 / (STUDY_DEPTH - 1), 11 / (STUDY_DEPTH - 1))  # L8-L11 at relative depth: 27.6% to 37.9%


@finding("critical core: most important layer",
         "the most important inner layer lies in the critical core L8-L11 (L11: +63,419%, section 4.1)", "importance")
def critical_core(results: Mapping[str, Result]) -> Verdict:
    """Depth is relative depth, layer / last layer: L8-L11 of 30 layers is 27.6%-37.9% (8/29, 11/29; the
    "27-37%" quoted before was layer / layers, 8/30-11/30). Every inner layer whose D interval reaches the
    top one's must lie in that band."""
    t = results["importance"].table
    n = int(t["layer"].max()) + 1
    part = inner(t)
    top = part.loc[part["degradation_pct"].idxmax()]
    rivals = part[part["degradation_high"] >= top["degradation_low"]]  # intervals overlapping the top one's
    where = rivals["layer"] / (n - 1)
    inside = (where >= CORE_BAND[0] - 1e-9) & (where <= CORE_BAND[1] + 1e-9)
    verdict = HOLDS if inside.all() else FAILS if not inside.any() else INCONCLUSIVE
    ours = (f"most important inner layer {int(top['layer'])} ({int(top['layer']) / (n - 1):.1%} of depth), "
            f"D {top['degradation_pct']:,.0f}%")
    return Verdict(ours, verdict, "Rule: every inner layer whose D interval reaches the top one's lies at "
                   f"{CORE_BAND[0]:.1%}-{CORE_BAND[1]:.1%} of depth (layer / last layer); those layers: "
                   f"{', '.join(map(str, rivals['layer'].astype(int)))}.")


def all_critical(results: Mapping[str, Result], layers: Sequence[int], study_d: str) -> Verdict:
    """Every one of the study's layers (at relative depth) Critical: its D interval wholly at or above 100%."""
    t = results["importance"].table.set_index("layer")
    n = int(t.index.max()) + 1
    ours_layers = at_depth(layers, n)
    rows = t.loc[ours_layers]
    sure = rows["degradation_low"] >= 100
    below = rows["degradation_high"] < 100
    verdict = HOLDS if sure.all() else FAILS if below.any() else INCONCLUSIVE
    ours = "; ".join(f"L{layer} {cell(r.degradation_pct, r.degradation_low, r.degradation_high, ',.0f')}%"
                     for layer, r in rows.iterrows())
    return Verdict(ours, verdict, f"Rule: each of {mapped(layers, n)} Critical (D interval wholly >= 100%); "
                   f"wholly below 100%: {', '.join(f'L{x}' for x in rows.index[below]) or 'none'}. "
                   f"The study's D: {study_d}.")


@finding("critical core: L8-L11 all Critical", "layers 8-11 form the critical core (section 4.1)", "importance")
def critical_core_layers(results: Mapping[str, Result]) -> Verdict:
    return all_critical(results, (8, 9, 10, 11), "L8 +2,395.6%, L9 +378.1%, L10 +9,870.7%, L11 +63,419.2%")


@finding("critical boundary layers", "L1-L2 input parsers and L24, L27-L28 output layers are Critical (section 4.1)",
         "importance")
def critical_boundary(results: Mapping[str, Result]) -> Verdict:
    return all_critical(results, (1, 2, 24, 27, 28),
                        "L1 +2,737.1%, L2 +186.0%, L24 +115.2%, L27 +134.8%, L28 +211.5%")


def noise_intervals(rec: Result) -> pd.DataFrame:
    """PPL right after noise with its interval over texts (the recovery curve's step 0), by layer."""
    curves = rec.tables.get("recovery_curves")
    if curves is None or curves.empty:
        return pd.DataFrame(columns=["ppl", "ppl_low", "ppl_high"])
    return curves[curves["step"] == 0].set_index("layer")[["ppl", "ppl_low", "ppl_high"]]


def steps_of(rec: Result) -> int:
    return int(rec.table["steps"].max()) if len(rec.table) else 0


def baseline_ppl(rec: Result) -> float:
    return float(rec.table["baseline_ppl"].iloc[0])


@finding("anti-layers L14, L17",
         "L14 and L17 are anti-layers: D +5.0% and -0.6%, PPL right after noise 19.4 and 18.5, final 18.2 and 17.6, "
         "against a 22.60 baseline (Tables 1 and 5)", "importance")
def anti_layers(results: Mapping[str, Result]) -> Verdict:
    """The study's layers with the study's evidence, each a one-sided test that the layer improves the model:
    its D below 0 (ablation), its PPL right after noise below the baseline, and (with the study's 200 steps)
    its final PPL below its sigma-0 control's. p-values from the intervals (normal approximation; the PPL after
    noise has an interval over texts that is not paired with the baseline's, so that test is conservative), Holm over
    all of them; a layer is an anti-layer when one of its tests rejects. Holds when both are; does not hold
    when a layer's every interval lies at or above its threshold."""
    imp = results["importance"].table.set_index("layer")
    n = int(imp.index.max()) + 1
    layers = at_depth(STUDY_ANTI, n)
    tests: list[tuple[int, str, float, bool]] = []  # layer, evidence, p, interval wholly on the other side
    for layer in layers:
        r = imp.loc[layer]
        tests.append((layer, f"D {cell(r.degradation_pct, r.degradation_low, r.degradation_high, '+.1f')}%",
                      p_below(r.degradation_pct, r.degradation_low, r.degradation_high), r.degradation_low >= 0))
    rec, conditions = results.get("recovery"), []
    if rec is None:
        conditions.append("no recovery run: D only")
    else:
        base, noise, table = baseline_ppl(rec), noise_intervals(rec), rec.table.set_index("layer")
        for layer in (x for x in layers if x in noise.index):
            r = noise.loc[layer]
            tests.append((layer, f"noise PPL {cell(r.ppl, r.ppl_low, r.ppl_high, '.1f')} vs {base:.1f}",
                          p_below(r.ppl, r.ppl_low, r.ppl_high, base), r.ppl_low >= base))
        if steps_of(rec) < STUDY_STEPS:
            conditions.append(f"final PPL after {steps_of(rec)} steps not used (study: {STUDY_STEPS})")
        elif "control_final_d_pct" in table:
            for layer in (x for x in layers if x in table.index):
                r = table.loc[layer]
                diff = r.final_d_pct - r.control_final_d_pct
                se = math.hypot(r.final_d_high - r.final_d_low, r.control_final_d_high - r.control_final_d_low) / 3.92
                tests.append((layer, f"final - control D {diff:+.1f} points",
                              p_below(diff, diff - 1.96 * se, diff + 1.96 * se), diff - 1.96 * se >= 0))
        missing_layers = [x for x in layers if x not in noise.index]
        if missing_layers:
            conditions.append(f"recovery did not run {family(missing_layers)}")
    rejected = holm([p for _, _, p, _ in tests])
    anti = {x: any(rej for (layer, _, _, _), rej in zip(tests, rejected) if layer == x) for x in layers}
    refuted = {x: all(other for (layer, _, _, other) in tests if layer == x) for x in layers}
    verdict = HOLDS if all(anti.values()) else FAILS if any(refuted.values()) else INCONCLUSIVE
    ours = "; ".join(f"L{layer} {text} (p {p:.3g})" for layer, text, p, _ in tests)
    return Verdict(ours, verdict, f"Rule: {mapped(STUDY_ANTI, n)}, each an anti-layer when one of its one-sided "
                   f"tests rejects after Holm over {len(tests)} (FWER {FWER}); anti-layers: "
                   f"{family([x for x in layers if anti[x]]) or 'none'}; every interval on the other side: "
                   f"{family([x for x in layers if refuted[x]]) or 'none'}.", "; ".join(conditions))


@finding("anti-layer search", "some layer's removal improves the model (L17: D -0.6%, section 4.1)", "importance")
def anti_layer_search(results: Mapping[str, Result]) -> Verdict:
    """Every inner layer tested for D < 0 (one-sided, normal approximation to its interval), Holm over the
    layers: a search needs the correction that a test of the study's own two layers does not."""
    t = inner(results["importance"].table)
    p = [p_below(r.degradation_pct, r.degradation_low, r.degradation_high) for r in t.itertuples()]
    rejected = holm(p)
    found = t.loc[rejected, "layer"].astype(int).tolist()
    verdict = HOLDS if found else FAILS if (t["degradation_low"] >= 0).all() else INCONCLUSIVE
    best = t.loc[t["degradation_pct"].idxmin()]
    return Verdict(f"D below 0 after Holm over {len(t)} layers: {family(found) or 'none'}; lowest D "
                   f"{best['degradation_pct']:+.1f}% (layer {int(best['layer'])}, p {min(p):.3g})", verdict,
                   "Rule: a layer whose one-sided test of D < 0 rejects after Holm over the inner layers holds; "
                   "every D interval at or above 0 does not.")


@finding("Table 1 rank agreement", "Table 1 (SmolLM2-135M base, boundary untouched)", "importance")
def table_1(results: Mapping[str, Result], model_name: str) -> Verdict:
    t = results["importance"].table.sort_values("layer")
    if not any(f in model_name for f in STUDY_FAMILY) or len(t) != len(STUDY_TABLE_1):
        return not_comparable(f"{model_name} is not the study's model family (SmolLM2-135M, base or instruct).",
                              conditions=f"{model_name} (study: SmolLM2-135M)")
    part = slice(1, len(t) - 1)  # the study left its boundary layers untouched
    rho, low, high = spearman_interval(np.array(STUDY_TABLE_1[part]), t["degradation_pct"].to_numpy()[part])
    return Verdict(f"Spearman {cell(rho, low, high)} over layers 1-28", above(rho, low, high, 0.5),
                   "Rule: the rank correlation's interval above 0.5 holds, wholly at or below it does not.")


# ---------------------------------------------------------------- predictability ---------------------------------

def component_means(t: pd.DataFrame, column: str) -> pd.Series:
    return t.groupby("component")[column].mean()


@finding("R^2 of gate_proj", "gate_proj R^2 0.909 (Table 2; abstract: R^2 = 0.91, strong mathematical regularity)",
         "predictability")
def r2_gate(results: Mapping[str, Result]) -> Verdict:
    """Per-position R^2 (the weights themselves) with the R^2 of the weight distribution (sorted weights) as
    the control: holds when the per-position interval lies above 0.5; explained by a control when it does not
    and the distribution's R^2 does."""
    t = results["predictability"].table
    gate = t[t["component"].astype(str).str.endswith("gate_proj")]
    part = gate if not gate.empty else t
    ours = bootstrap(part["r2"])
    dist = bootstrap(part["r2_distribution"])
    verdict = HOLDS if ours[1] > PREDICTED else INCONCLUSIVE if ours[2] > PREDICTED else \
        CONTROL if dist[1] > PREDICTED else FAILS
    lowest = component_means(t, "r2_distribution")
    return Verdict(f"per-position R^2 {cell(*ours, '.3f')}; distribution R^2 {cell(*dist, '.3f')}", verdict,
                   f"Rule: per-position R^2 interval above {PREDICTED} holds; below it with the distribution's above, "
                   f"the control explains the study's number (the weights' scale is predicted, not the weights). The "
                   f"distribution R^2 is at least {lowest.min():.3f} for all {len(lowest)} components, while the "
                   "study's Table 2 has v_proj -0.655 and o_proj 0.079: a hypothesis that fits its headline, not "
                   "its table.")


@finding("Table 2 pattern", "per component: gate 0.909, down 0.895, q 0.824, k 0.745, up 0.716, o 0.079, v -0.655 "
         "(Table 2)", "predictability")
def table_2(results: Mapping[str, Result]) -> Verdict:
    """The order of the seven components' mean per-position R^2 against Table 2's (Spearman, one-sided
    permutation tests each way)."""
    t = results["predictability"].table
    ours = component_means(t, "r2")
    dist = component_means(t, "r2_distribution")
    names = [c for c in STUDY_TABLE_2 if c in ours.index]
    if len(names) < 5:
        return not_comparable(f"Only {len(names)} of Table 2's components were measured.")
    x, y = np.array([STUDY_TABLE_2[c] for c in names]), ours[names].to_numpy()
    rho, p_up, p_down = spearman(x, y), permutation_p(x, y, "greater"), permutation_p(x, y, "less")
    verdict = HOLDS if p_up <= FWER else FAILS if p_down <= FWER else INCONCLUSIVE
    return Verdict(f"Spearman with Table 2 over {len(names)} components: per position {rho:.2f} (p {p_up:.3f}); "
                   f"distribution R^2 {spearman(x, dist[names].to_numpy()):.2f}", verdict,
                   f"Rule: a one-sided permutation test of a positive rank correlation rejecting at {FWER} holds, "
                   "one of a negative one does not; v_proj and o_proj are Table 2's outliers.")


def functional_rows(results: Mapping[str, Result]) -> pd.DataFrame:
    table = results["predictability"].tables.get("functional")
    if table is None or table.empty:
        return pd.DataFrame()
    return table.assign(count=table["layers"].astype(str).str.count(",") + 1)


@finding("one predicted layer", "replacing 1 layer: PPL 26.22 (+16%), acceptable (section 4.2)", "predictability")
def one_predicted_layer(results: Mapping[str, Result]) -> Verdict:
    """At most Minor by the study's own thresholds (D < 30%), as its +16% is."""
    rows = functional_rows(results)
    one = rows[rows["count"] == 1] if len(rows) else rows
    if one.empty:
        return not_comparable("The predictability run replaced no single layer.")
    r = one.iloc[0]
    verdict = HOLDS if r.degradation_high < 30 else FAILS if r.degradation_low >= 30 else INCONCLUSIVE
    return Verdict(f"layer {r.layers} predicted: PPL {r.ppl:.2f}, D {cell(r.degradation_pct, r.degradation_low, r.degradation_high, '+.0f')}%",
                   verdict, "Rule: D interval wholly under 30% (the study's Minor) holds, wholly at or above does "
                   f"not; the replaced layer's per-position R^2 is {r.mean_r2_all_positions:.3f}.",
                   f"layer {r.layers} replaced (study: unnamed)")


@finding("R^2-perplexity paradox", "R^2 0.91 yet replacing 9+ layers gives PPL > 100,000 (section 4.2)",
         "predictability")
def paradox(results: Mapping[str, Result]) -> Verdict:
    """The paradox needs well-predicted weights: when the replaced layers' per-position R^2 is below 0.5 the
    control explains the failure (the predicted matrices are not the weights, and a broken model is expected);
    otherwise the PPL interval against 100,000 decides."""
    rows = functional_rows(results)
    if rows.empty:
        return not_comparable("The predictability run replaced no layers.")
    r = rows.sort_values("count").iloc[-1]
    ours = (f"{r['count']} layers predicted: PPL {cell(r.ppl, r.ppl_low, r.ppl_high, ',.0f')}; their per-position "
            f"R^2 {r.mean_r2_all_positions:.3f}")
    conditions = f"{r['count']} layers replaced (study: 9+)"
    if r["count"] < STUDY_MANIPULATED:
        return not_comparable("Fewer layers replaced than the study's 9.", ours, conditions)
    if r.mean_r2_all_positions < PREDICTED:
        return Verdict(ours, CONTROL, f"The replaced layers' per-position R^2 {r.mean_r2_all_positions:.3f} is below "
                       f"{PREDICTED}: the predicted weights are not the weights, so the model breaking is expected, "
                       "not a paradox; the study's high R^2 is the weight distribution's (row R^2 of gate_proj).",
                       conditions)
    verdict = HOLDS if r.ppl_low > 1e5 else FAILS if r.ppl_high <= 1e5 else INCONCLUSIVE
    return Verdict(ours, verdict, "Rule: with well-predicted weights, a PPL interval wholly above 100,000 holds.",
                   conditions)


# ---------------------------------------------------------------- structure --------------------------------------

@finding("delta correlation", "inter-layer delta correlation about -0.50 for all seven components, an oscillation "
         "(Table 3: -0.497 to -0.505)", "structure")
def delta_correlation(results: Mapping[str, Result]) -> Verdict:
    """Independent layers of equal variance give exactly -0.5. Per component, the one-sided permutation p that
    the real order is more negative than the layer-shuffled orders; Holm over the seven. Holds when every
    component departs; explained by the control when the values are near -0.5 and not every one departs."""
    result = results["structure"]
    t = result.table[~result.table["component"].astype(str).str.startswith("all")]
    p = t["p_below"].to_numpy() if "p_below" in t else stats.norm.cdf(t["order_z"].to_numpy())
    rejected = np.array(holm(p))
    shuffles = int(result.scalars.get("shuffles", 0))
    near = ((t["delta_corr"] + 0.5).abs() <= 0.05).all()
    departs = t.loc[rejected, "component"].astype(str).tolist()
    ours = (f"delta correlation {t['delta_corr'].min():.3f} to {t['delta_corr'].max():.3f}; shuffled control "
            f"{t['shuffled_mean'].min():.3f} to {t['shuffled_mean'].max():.3f}; more negative than the control after "
            f"Holm: " + (", ".join(f"{c} ({d - s:+.4f}, p {q:.4f})" for c, d, s, q in
                                   zip(t["component"], t["delta_corr"], t["shuffled_mean"], p) if c in departs)
                         or "none"))
    conditions = f"{shuffles} shuffled orders" if shuffles else ""
    if shuffles and shuffles < 1000:
        return Verdict(ours, INCONCLUSIVE, f"{shuffles} shuffled orders: the convention's permutation tests need "
                       "at least 1,000.", conditions)
    if not near:
        return Verdict(ours, FAILS, "Rule: every component within 0.05 of -0.50 reproduces the number; some is not.",
                       conditions)
    if rejected.all():
        return Verdict(ours, HOLDS, "Every component departs from the layer-shuffled control towards an oscillation.",
                       conditions)
    gap = (t["delta_corr"] - t["shuffled_mean"]).abs()[rejected].max() if departs else 0.0
    return Verdict(ours, CONTROL, f"-0.5 is what independent layers give, and the shuffled orders give it too: "
                   f"{len(t) - len(departs)} of {len(t)} components do not depart from the control"
                   + (f"; {', '.join(departs)} do, by at most {gap:.3f}, short of an oscillation of every component"
                      if departs else "") + ".", conditions)


# ---------------------------------------------------------------- manipulation -----------------------------------

@finding("manipulation survivors", "of 5 strategies on the 9 redundant layers at once, only scale 0.9 preserves "
         "quality (Table 4: +19%; scale 0.7 +5,035%; the rest > +170,000%)", "manipulate")
def manipulation(results: Mapping[str, Result]) -> Verdict:
    """Survives = whole D interval under 100% (not Critical); holds when scale 0.9 survives and every other
    strategy's interval lies at or above 100%. With fewer layers changed than the study's 9, not comparable:
    fewer layers make every change milder."""
    result = results["manipulate"]
    t = result.table[~result.table["strategy"].astype(str).str.startswith("baseline")]
    changed = result.scalars.get("layers") or []
    is09 = t["strategy"].astype(str).str.replace(" ", "") == "scale0.9"
    survive = t.loc[t["degradation_high"] < 100, "strategy"].astype(str).tolist()
    ours = (f"{len(changed)} layer{'s' if len(changed) != 1 else ''} changed ({', '.join(map(str, changed))}); "
            "D: " + ", ".join(f"{r.strategy} {r.degradation_pct:+,.0f}%" for r in t.itertuples())
            + f"; interval under 100%: {', '.join(survive) or 'none'}")
    conditions = f"{len(changed)} layer{'s' if len(changed) != 1 else ''} changed (study: {STUDY_MANIPULATED})"
    if result.scalars.get("source"):
        conditions += f", {str(result.scalars['source']).split(': ')[-1]}"
    contradiction = ("The study contradicts itself: its abstract gives scale 0.9 +49%, Table 4 +19%; and Table 4, "
                     "captioned '9 redundant layers', marks zero, clone, blend and low-rank '(2 layers)'.")
    if len(changed) < STUDY_MANIPULATED:
        return not_comparable(f"Fewer layers changed than the study's {STUDY_MANIPULATED}. " + contradiction, ours,
                              conditions)
    if not is09.any():
        return not_comparable("Scale 0.9 was not run. " + contradiction, ours, conditions)
    s09, rest = t[is09].iloc[0], t[~is09]
    verdict = (HOLDS if s09.degradation_high < 100 and (rest["degradation_low"] >= 100).all() else
               FAILS if s09.degradation_low >= 100 or (rest["degradation_high"] < 100).any() else INCONCLUSIVE)
    return Verdict(ours, verdict, "Rule: scale 0.9's D interval under 100% and every other strategy's at or above "
                   "it holds. " + contradiction, conditions)


# ---------------------------------------------------------------- recovery ---------------------------------------

def steps_column(table: pd.DataFrame, threshold: float) -> str | None:
    name = f"steps_to_{threshold:g}x"
    return name if name in table else None


def speed_measures(rec: pd.DataFrame) -> dict[str, np.ndarray]:
    """Recovery speed, larger = slower: steps to each threshold (never reached: one past the steps trained),
    and the share of the noise damage left unrecovered (layers the noise hurt only)."""
    steps = rec["steps"].astype(float)
    out = {c.removeprefix("steps_to_"): rec[c].astype("Float64").fillna(steps + 1).to_numpy(dtype=float)
           for c in rec.columns if c.startswith("steps_to_")}
    damage = rec["noise_ppl"] - rec["baseline_ppl"]
    share = ((rec["noise_ppl"] - rec["final_ppl"]) / damage).where(damage > 0)
    out["damage recovered (negated)"] = -share.to_numpy(dtype=float)
    return out


@finding("recovery vs importance", "recovery speed from perturbation strongly correlates with layer importance "
         "(abstract; Table 5)", "importance", "recovery")
def recovery_vs_importance(results: Mapping[str, Result]) -> Verdict:
    """Speed (steps to 2x/1.5x/1.1x baseline) and the share of the noise damage recovered against D, each a
    one-sided permutation test of Spearman's rho, Holm over the family: holds when one rejects, does not hold
    when every bootstrap interval lies at or below 0. Not the final ratio: D and the damage both measure
    sensitivity, so a final ratio follows D whatever the speed."""
    rec_result = results["recovery"]
    rec, imp = rec_result.table, results["importance"].table.set_index("layer")
    d = imp.loc[rec["layer"].astype(int), "degradation_pct"].to_numpy()
    measures = speed_measures(rec)
    p = [permutation_p(d, v, "greater") for v in measures.values()]
    cis = [spearman_interval(d, v) for v in measures.values()]
    rejected = holm(p)
    verdict = HOLDS if any(rejected) else FAILS if all(c[2] <= 0 for c in cis if math.isfinite(c[2])) else \
        INCONCLUSIVE
    noise = spearman_interval(d, rec["noise_ppl"].to_numpy())
    study_inner = [x for x in STUDY_TABLE_5 if 0 < x < STUDY_DEPTH - 1]
    own = [spearman([STUDY_TABLE_1[x] for x in ls], [STUDY_TABLE_5[x][0] for x in ls])
           for ls in (study_inner, list(STUDY_TABLE_5))]
    ours = "; ".join(f"rho(D, {k}) {cell(*c)}, p {q:.3f}" for k, c, q in zip(measures, cis, p)) + \
        f"; rho(D, PPL after noise) {cell(*noise)}; {len(rec)} layers"
    steps = steps_of(rec_result)
    conditions = f"{steps} steps (study: {STUDY_STEPS}), {len(rec)} layers (study: 13)"
    why = (f"D and the noise damage both measure sensitivity: on the study's own Tables 1 and 5 Spearman(D, PPL after "
           f"noise) is {own[0]:.2f} over its {len(study_inner)} inner layers and {own[1]:.2f} over all 13 (L0 and L29 "
           "at D 0), so speed is read as steps and the share of the damage recovered.")
    if steps < STUDY_STEPS:
        return not_comparable(f"Speed to the study's thresholds needs its {STUDY_STEPS} steps. " + why, ours,
                              conditions)
    return Verdict(ours, verdict, f"Rule: one of {len(p)} one-sided permutation tests rejecting after Holm holds; "
                   "every interval at or below 0 does not. " + why, conditions)


@finding("hardest layer's recovery", "L11 never recovers: 4,323 after noise, 175.9 after 200 steps (7.8x baseline; "
         "Table 5)", "recovery")
def hardest_layer(results: Mapping[str, Result]) -> Verdict:
    """The hardest layer named and compared with L11 at relative depth: holds when L11's final PPL interval
    lies above 2x baseline and above every other layer's; below 200 steps not comparable."""
    rec_result = results["recovery"]
    rec = rec_result.table.set_index("layer")
    n = depth(results) or STUDY_DEPTH
    l11 = at_depth([11], n)[0]
    base = float(rec["baseline_ppl"].iloc[0])
    worst = int(rec["final_ratio"].idxmax())
    w = rec.loc[worst]
    steps = steps_of(rec_result)
    ours = (f"layer {worst}: final {cell(w.final_ratio, w.final_ppl_low / base, w.final_ppl_high / base)}x baseline "
            f"after {steps} steps (L11 at relative depth: layer {l11})")
    conditions = f"{steps} steps (study: {STUDY_STEPS})"
    if steps < STUDY_STEPS:
        return not_comparable(f"Whether a layer ever recovers needs the study's {STUDY_STEPS} steps.", ours,
                              conditions)
    if l11 not in rec.index:
        return not_comparable(f"Recovery did not run layer {l11}.", ours, conditions)
    r, others = rec.loc[l11], rec.drop(index=l11)
    verdict = (FAILS if r.final_ppl_high <= 2 * base or (others["final_ppl_low"] > r.final_ppl_high).any() else
               HOLDS if r.final_ppl_low > 2 * base and (others["final_ppl_high"] < r.final_ppl_low).all() else
               INCONCLUSIVE)
    return Verdict(ours, verdict, f"Rule: layer {l11}'s final interval above 2x baseline and above every other "
                   "layer's holds; at or below 2x, or below another layer's, does not.", conditions)


def noise_rows(results: Mapping[str, Result], layers: Sequence[int]) -> tuple[pd.DataFrame, list[int], float]:
    rec = results["recovery"]
    n = depth(results) or STUDY_DEPTH
    ours = at_depth(layers, n)
    noise = noise_intervals(rec)
    return noise.loc[[x for x in ours if x in noise.index]], [x for x in ours if x not in noise.index], \
        baseline_ppl(rec)


@finding("L23/L24 recover at once", "L23 and L24, Critical by ablation, recover instantly from noise: PPL 26.5 and "
         "26.8 after noise, 0 steps to < 1.5x (Table 5)", "recovery")
def recover_at_once(results: Mapping[str, Result]) -> Verdict:
    """PPL right after noise under 1.5x baseline (the study's 0 steps to < 1.5x): a step-0 measurement, so the
    steps trained do not bear on it."""
    rows, absent, base = noise_rows(results, (23, 24))
    if absent:
        return not_comparable(f"Recovery did not run {family(absent)}.",
                              conditions=f"recovery layers without {family(absent)}")
    verdict = HOLDS if (rows["ppl_high"] < 1.5 * base).all() else FAILS if (rows["ppl_low"] >= 1.5 * base).any() \
        else INCONCLUSIVE
    return Verdict("; ".join(f"L{x} after noise {cell(r.ppl / base, r.ppl_low / base, r.ppl_high / base)}x baseline"
                             for x, r in rows.iterrows()), verdict,
                   "Rule: each PPL-after-noise interval wholly under 1.5x baseline holds; one wholly at or above "
                   "does not.")


@finding("L3 never converges", "L3 shows no convergence over 200 steps: 27.3 after noise and after training "
         "(Table 5)", "recovery")
def never_converges(results: Mapping[str, Result]) -> Verdict:
    """Not under 1.1x baseline by the study's 200 steps, its final interval above 1.1x."""
    rec_result = results["recovery"]
    rec = rec_result.table.set_index("layer")
    n = depth(results) or STUDY_DEPTH
    l3 = at_depth([3], n)[0]
    steps = steps_of(rec_result)
    conditions = f"{steps} steps (study: {STUDY_STEPS})"
    if l3 not in rec.index:
        return not_comparable(f"Recovery did not run layer {l3}.", conditions=conditions)
    r = rec.loc[l3]
    base = float(r.baseline_ppl)
    column = steps_column(rec, 1.1)
    reached = column is not None and not pd.isna(r[column])
    ours = (f"layer {l3}: {'under' if reached else 'not under'} 1.1x by step {r[column] if reached else steps}; "
            f"final {cell(r.final_ratio, r.final_ppl_low / base, r.final_ppl_high / base)}x")
    if steps < STUDY_STEPS:
        return not_comparable(f"Never converging is a claim about {STUDY_STEPS} steps.", ours, conditions)
    verdict = FAILS if reached else HOLDS if r.final_ppl_low > 1.1 * base else INCONCLUSIVE
    return Verdict(ours, verdict, "Rule: never under 1.1x with the final interval above it holds; reaching 1.1x "
                   "does not.", conditions)


@finding("noise improves PPL (H4)", "H4: the model performs better with random weights in L14 and L17: PPL 19.4 and "
         "18.5 after noise against 22.60 (Table 5)", "recovery")
def noise_improves(results: Mapping[str, Result]) -> Verdict:
    """PPL right after noise (interval over texts) below the baseline PPL, at L14 and L17 by relative depth."""
    rows, absent, base = noise_rows(results, STUDY_ANTI)
    if absent:
        return not_comparable(f"Recovery did not run {family(absent)}.",
                              conditions=f"recovery layers without {family(absent)}")
    verdict = HOLDS if (rows["ppl_high"] < base).all() else FAILS if (rows["ppl_low"] >= base).any() else \
        INCONCLUSIVE
    return Verdict("; ".join(f"L{x} after noise {cell(r.ppl, r.ppl_low, r.ppl_high, '.1f')}" for x, r in
                             rows.iterrows()) + f" vs baseline {base:.1f}", verdict,
                   "Rule: both intervals wholly below the baseline hold; one wholly at or above it does not.")


# ---------------------------------------------------------------- budget -----------------------------------------

def study_budget(collapse: str | None = None) -> int:
    """Total steps of the budget rules (anatomy/experiments/budget.py) on the study's own classes (Table 1) and
    recovery (Table 5); `collapse` "low"/"high" puts every range at its end."""
    from .experiments.budget import RANGES, BudgetConfig, run_budget

    config = BudgetConfig()
    if collapse:
        config = dataclasses.replace(config, **{r: (getattr(config, r)[collapse == "high"],) * 2 for r in RANGES})
    importance = Result("importance", pd.DataFrame({
        "layer": range(STUDY_DEPTH), "class": STUDY_LISTED, "degradation_pct": STUDY_TABLE_1,
        "anti_layer_candidate": [x in STUDY_ANTI for x in range(STUDY_DEPTH)]}))
    recovery = Result("recovery", pd.DataFrame([
        {"layer": x, "noise_ppl": v[0], "steps_to_2x": v[1], "steps_to_1.5x": v[2],
         "steps_to_1.1x": v[3] if v[3] < STUDY_STEPS else pd.NA, "final_ppl": v[4],
         "final_ratio": v[4] / STUDY_BASELINE, "steps": STUDY_STEPS, "anti_layer_candidate": v[4] < STUDY_BASELINE}
        for x, v in STUDY_TABLE_5.items()]))
    return int(run_budget(None, None, config, importance=importance, recovery=recovery).table["steps"].sum())


# Table 10: (layers, R range) per group; B_max 200 steps a layer
STUDY_TABLE_10 = (((14, 17), (0.0, 0.0)), ((3, 5, 6, 12, 19), (0.0, 0.05)),
                  ((4, 7, 13, 15, 16, 18, 20, 21, 22, 25, 26), (0.3, 0.5)), ((23, 24, 27, 28), (0.8, 1.0)),
                  ((1, 2, 8, 9, 10, 11), (1.0, 1.0)), ((0, 29), (0.15, 0.2)))


@finding("budget saving", "2,760 of 6,000 uniform steps, a 54% reduction (Table 10)")
def budget_saving(results: Mapping[str, Result]) -> Verdict:
    """Descriptive: arithmetic on class counts and recovery steps, not a measurement. Holds when 2,760 lies
    within what Table 10's own ranges give; the budget rules here (SPEC section 6) on the study's classes and
    recovery, and on this model, are reported beside."""
    ends = [sum(len(layers) * r[end] * 200 for layers, r in STUDY_TABLE_10) for end in (0, 1)]
    budget = results.get("budget")
    here = "not run" if budget is None else (f"{int(budget.table['steps'].sum()):,} of {200 * len(budget.table):,} "
                                             f"({100 * (1 - budget.table['ratio'].mean()):.0f}% saved)")
    return Verdict(f"Table 10's ranges: {ends[0]:,.0f}-{ends[1]:,.0f} steps; the rules here on the study's classes: "
                   f"{study_budget():,} ({study_budget('low'):,}-{study_budget('high'):,}); on this model: {here}",
                   HOLDS if ends[0] <= 2760 <= ends[1] else FAILS,
                   "Descriptive: the saving is arithmetic on class counts and recovery steps; 2,760 follows from "
                   "Table 10's ranges. The rules here differ where they read Table 1 literally: L23 is Important "
                   "(0.5-0.8) and L3, slow to recover, gets the Minor range.")


# ---------------------------------------------------------------- layer plans (Painters) -------------------------

def plan_rows(results: Mapping[str, Result], variants: Sequence[str]) -> tuple[pd.DataFrame, int] | None:
    """The rows of `variants` at the smallest block size that has them all."""
    t = results["plans"].table
    for size in sorted(t.loc[t["block_size"] > 0, "block_size"].unique()):
        rows = t[(t["block_size"] == size) & t["variant"].isin(variants)]
        if set(variants) <= set(rows["variant"]):
            return rows.set_index("variant"), int(size)
    return None


def plan_cell(r: pd.Series) -> str:
    acc = ", ".join(f"{c[4:]} {r[c]:.0%}" for c in r.index if c.startswith("acc_") and pd.notna(r[c]))
    return f"D {r.degradation_pct:+,.0f}% [{r.degradation_low:+,.0f}, {r.degradation_high:+,.0f}]" + \
        (f" ({acc})" if acc else "")


def below_all(rows: pd.DataFrame, tested: Sequence[str], against: Sequence[str]) -> str:
    """Every tested row's D interval wholly below every comparison row's: holds; wholly above one: does not."""
    lower = all(rows.loc[a, "degradation_high"] < rows.loc[b, "degradation_low"] for a in tested for b in against)
    higher = any(rows.loc[a, "degradation_low"] > rows.loc[b, "degradation_high"] for a in tested for b in against)
    return HOLDS if lower else FAILS if higher else INCONCLUSIVE


def plan_versus(results: Mapping[str, Result], tested: Sequence[str], against: Sequence[str], missing: str,
                rule: str) -> Verdict:
    """The `tested` plans against the `against` ones at the smallest block size that has them all, judged by
    `below_all`; `not comparable` (saying `missing`) when none has them all."""
    found = plan_rows(results, (*against, *tested)) if tested else None
    if found is None:
        return not_comparable(missing)
    rows, size = found
    return Verdict("; ".join(f"{v} {size}: {plan_cell(rows.loc[v])}" for v in (*against, *tested)),
                   below_all(rows, tested, against), rule)


@finding("middle layers skippable", "lower and final layers differ from middle layers; skipping middle layers "
         "degrades gracefully (Painters, abstract)", "plans")
def painters_middle(results: Mapping[str, Result]) -> Verdict:
    """Skipping the middle block against its control, an equal block skipped at the start and at the end:
    holds when the middle's D interval lies below both; task accuracy beside D."""
    found = plan_rows(results, ("skip", *EDGE))
    if found is None:
        return not_comparable("The plans run has no skip with its start and end controls (run it with "
                              "--edge-controls, as the study does).")
    rows, size = found
    ours = "; ".join(f"{v} {size}: {plan_cell(rows.loc[v])}" for v in ("skip", *EDGE))
    return Verdict(ours, below_all(rows, ["skip"], EDGE), "Rule: the middle block's D interval wholly below both "
                   "controls' holds, wholly above one does not.")


@finding("reordering middle layers", "running middle layers in an order other than trained is robust (Painters, "
         "abstract)", "plans")
def painters_reorder(results: Mapping[str, Result]) -> Verdict:
    """If order matters little, running the block's layers in another order keeps more than skipping them:
    reverse (and shuffle, when run) against skip of the same block."""
    t = results["plans"].table
    tested = [v for v in ("reverse", "shuffle") if v in set(t["variant"])]
    return plan_versus(results, tested, ["skip"], "Neither reverse nor shuffle was run beside skip.",
                       "Rule: every reordering's D interval wholly below skipping the same block holds, wholly above "
                       "does not.")


@finding("parallel middle layers", "running middle layers in parallel is robust (Painters, abstract)", "plans")
def painters_parallel(results: Mapping[str, Result]) -> Verdict:
    """The block's layers run in parallel against skipping them."""
    return plan_versus(results, ["parallel"], ["skip"], "Parallel was not run beside skip.",
                       "Rule: parallel's D interval wholly below skipping the same block holds, wholly above does not.")


@finding("looped parallel", "iterating the parallel block (looped parallel) improves on one parallel pass (Painters; "
         "not in the abstract stored with the papers)", "plans")
def painters_looped(results: Mapping[str, Result]) -> Verdict:
    return plan_versus(results, ["looped-parallel"], ["parallel"], "Looped parallel was not run beside parallel.",
                       "Rule: looped parallel's D interval wholly below parallel's holds, wholly above does not.")


@finding("latency", "frozen models may gracefully trade accuracy for latency by skipping layers or running them in "
         "parallel (Painters, abstract)", "plans")
def painters_latency(results: Mapping[str, Result]) -> Verdict:
    """Decode speedup (paired with the unchanged model, median of the timed runs) of skip and parallel: holds
    when both are at least 1.05x, does not hold when neither is above 1.0x; fewer than 3 timed runs give no
    spread and are inconclusive."""
    found = plan_rows(results, ("skip", "parallel"))
    if found is None:
        return not_comparable("Skip and parallel were not both run.")
    rows, size = found
    repeats = int((results["plans"].source.get("config") or {}).get("latency_repeats") or 0)
    speed = rows.loc[["skip", "parallel"], "decode_speedup"].astype(float)
    ours = f"decode speedup of {size} layers: skip {speed['skip']:.2f}x, parallel {speed['parallel']:.2f}x " \
        f"({plan_cell(rows.loc['skip'])})"
    conditions = f"{repeats or '?'} timed runs (CLI default: 5), on this run's device"
    if repeats < 3:
        return Verdict(ours, INCONCLUSIVE, "Fewer than 3 timed runs: a median without spread on a shared machine.",
                       conditions)
    verdict = HOLDS if (speed >= 1.05).all() else FAILS if (speed <= 1.0).all() else INCONCLUSIVE
    return Verdict(ours, verdict, "Rule: both speedups at least 1.05x hold, neither above 1.0x does not.", conditions)


@finding("arithmetic most fragile", "arithmetic is the most fragile ability (Painters; not in the abstract stored "
         "with the papers)", "plans")
def arithmetic_fragile(results: Mapping[str, Result]) -> Verdict:
    """How much more arithmetic loses than facts over the altered middle plans, absolute (points) and relative
    (share of the unchanged model's accuracy), with a paired bootstrap over task items (each item's baseline
    and altered answers resampled together). Holds when both intervals lie above 0."""
    result = results["plans"]
    items = result.tables.get("task_items")
    if items is None or items.empty or not {"facts", "arithmetic"} <= set(items["task"]):
        return not_comparable("The run kept no per-item task answers (no tasks, or a run from before they were kept).")
    answers = {task: part.pivot(index="row", columns="item", values="correct").astype(float)
               for task, part in items.groupby("task")}
    variants = items.drop_duplicates("row").set_index("row")["variant"]
    altered = [r for r, v in variants.items() if v not in ("baseline", "custom", *EDGE)]
    base = variants.index[variants == "baseline"]
    if base.empty or not altered:
        return not_comparable("No unchanged row or no altered middle plan.")
    a, f = (answers[k].to_numpy() for k in ("arithmetic", "facts"))
    rows = {r: i for i, r in enumerate(answers["arithmetic"].index)}
    b, alt = rows[base[0]], [rows[r] for r in altered]
    if a[b].mean() == 0:
        return not_comparable("The unchanged model answers no arithmetic item, so nothing can be lost.")

    def gaps(ia: np.ndarray, i_f: np.ndarray) -> tuple[float, float]:
        da, df = (a[b, ia].mean() - a[alt][:, ia].mean()), (f[b, i_f].mean() - f[alt][:, i_f].mean())
        ra = da / a[b, ia].mean() if a[b, ia].mean() else math.nan
        rf = df / f[b, i_f].mean() if f[b, i_f].mean() else math.nan
        return da - df, ra - rf

    rng = np.random.default_rng(0)
    point = gaps(np.arange(a.shape[1]), np.arange(f.shape[1]))
    draws = np.array([gaps(rng.integers(0, a.shape[1], a.shape[1]), rng.integers(0, f.shape[1], f.shape[1]))
                      for _ in range(2000)])
    lows, highs = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    verdict = HOLDS if (lows > 0).all() else FAILS if (highs < 0).all() else INCONCLUSIVE
    return Verdict(f"arithmetic loses {point[0] * 100:+.0f} points more than facts [{lows[0] * 100:+.0f}, "
                   f"{highs[0] * 100:+.0f}], {point[1] * 100:+.0f}% more of its accuracy [{lows[1] * 100:+.0f}, "
                   f"{highs[1] * 100:+.0f}] over {len(alt)} altered plans", verdict,
                   f"Rule: paired bootstrap over task items ({a.shape[1]} sums, {f.shape[1]} facts); both the absolute "
                   "and the relative extra loss above 0 hold, both below 0 do not.")


# ---------------------------------------------------------------- spectral ---------------------------------------

DYNAMICS = "final checkpoint only (study: checkpoints over training)"


def alpha_by_layer(results: Mapping[str, Result]) -> pd.Series:
    t = results["spectral"].table.dropna(subset=["alpha"])
    return t.groupby("layer")["alpha"].mean()


def quadratic(points: np.ndarray) -> float:
    """The curvature of alpha over relative depth (< 0: an inverted U)."""
    return float(np.polyfit(points[:, 0], points[:, 1], 2)[0]) if len(np.unique(points[:, 0])) > 2 else math.nan


@finding("alpha depth gradient (final state)", "the power-law exponent alpha develops a permanent depth gradient, "
         "an inverted U in deeper models (spectral study)", "spectral")
def alpha_depth(results: Mapping[str, Result]) -> Verdict:
    """The shape of alpha over depth in the released weights: monotone (Spearman's interval excludes 0) or an
    inverted U (the quadratic's curvature interval below 0, its vertex inside the stack). Does not hold when
    rho lies within +-0.3 and the curvature's interval contains 0."""
    per_layer = alpha_by_layer(results)
    if len(per_layer) < 4:
        return not_comparable("Fewer than 4 layers have an alpha.", conditions=DYNAMICS)
    x = per_layer.index.to_numpy(dtype=float) / max(1, per_layer.index.max())
    points = np.column_stack([x, per_layer.to_numpy()])
    rho, low, high = spearman_interval(x, points[:, 1])
    curve = bootstrap(points, quadratic)
    curvature, slope = np.polyfit(x, points[:, 1], 2)[:2]
    vertex = -slope / (2 * curvature) if curvature else math.nan
    monotone = low > 0 or high < 0
    inverted_u = curve[2] < 0 and 0 < vertex < 1
    verdict = HOLDS if monotone or inverted_u else FAILS if (-WEAK < low and high < WEAK and curve[1] <= 0 <= curve[2]) \
        else INCONCLUSIVE
    return Verdict(f"Spearman(depth, alpha) {cell(rho, low, high)}; curvature {cell(*curve)}, vertex at "
                   f"{vertex:.0%} of depth", verdict,
                   f"Rule: a monotone gradient or an inverted U holds; rho within +-{WEAK} with no curvature does not.",
                   DYNAMICS)


def needs_checkpoints(results: Mapping[str, Result]) -> Verdict:
    """The rule of every training-dynamics claim: it is about how weights change over training, and a released
    model is one checkpoint."""
    return not_comparable("A claim about training checkpoints; a released model has one.", conditions=DYNAMICS)


alpha_persists = finding("alpha gradient persists over training", "the alpha depth gradient is permanent: it forms "
                         "and persists over training (spectral study)")(needs_checkpoints)
compression_waves = finding("compression waves", "stable-rank compression propagates as a wave from early to late "
                            "layers, peaks early and reverses (spectral study)")(needs_checkpoints)


def stable_rank_spread(points: np.ndarray) -> float:
    """Coefficient of variation over layers of query/key's stable rank over value/output's (paired rows)."""
    cv = points.std(axis=0) / np.abs(points.mean(axis=0))
    return float(cv[0] / cv[1]) if cv[1] > 0 else math.nan


@finding("query/key vs value/output (final state)", "value/output projections compress uniformly; query/key carry "
         "the depth-dependent dynamics (spectral study: stable rank)", "spectral")
def qk_vs_vo(results: Mapping[str, Result]) -> Verdict:
    """Stable rank over depth in the released weights: query/key's spread (coefficient of variation over
    layers) over value/output's, bootstrap over layers; holds above 1, does not hold below 1."""
    t = results["spectral"].table
    if "stable_rank" not in t or not {"query/key", "value/output"} <= set(t["group"]):
        return not_comparable("No stable rank of the query/key and value/output groups.", conditions=DYNAMICS)
    groups = t.groupby(["layer", "group"])["stable_rank"].mean().unstack()[["query/key", "value/output"]].dropna()
    ratio = bootstrap(groups.to_numpy(), stable_rank_spread)
    return Verdict(f"stable-rank spread over depth, query/key / value/output: {cell(*ratio)} over {len(groups)} "
                   "layers", above(*ratio, 1.0), "Rule: the ratio's interval above 1 holds, at or below 1 does not.",
                   DYNAMICS)


qk_vs_vo_dynamics = finding("query/key vs value/output over training", "query/key exhibit the full depth-dependent "
                            "dynamics during training (spectral study)")(needs_checkpoints)


@finding("alpha predicts importance", "the alpha exponent predicts layer importance, with significant correlation "
         "(spectral study)", "spectral", "importance")
def alpha_importance(results: Mapping[str, Result]) -> Verdict:
    """Spearman(mean alpha, ablation D) over the inner layers, two-sided permutation test; does not hold when
    the bootstrap interval lies within +-0.3."""
    alpha = alpha_by_layer(results)
    imp = inner(results["importance"].table).set_index("layer")["degradation_pct"]
    both = pd.concat([alpha, imp], axis=1, join="inner").dropna()
    x, y = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
    rho, low, high = spearman_interval(x, y)
    p = permutation_p(x, y, "two-sided")
    verdict = HOLDS if p <= FWER else FAILS if -WEAK < low and high < WEAK else INCONCLUSIVE
    return Verdict(f"Spearman(alpha, D) {cell(rho, low, high)}, permutation p {p:.3f}, {len(both)} layers", verdict,
                   f"Rule: p <= {FWER} holds; an interval within +-{WEAK} does not.")


def prune_pairs(results: Mapping[str, Result]) -> pd.DataFrame:
    t = results["prune"].table
    return t[t["k"] > 0].pivot(index="k", columns="criterion", values=["ppl", "ppl_low", "ppl_high"])


@finding("alpha-guided pruning", "spectral-guided pruning outperforms removing the last layers by 1.1x to 3.6x "
         "(spectral study)", "prune")
def alpha_pruning(results: Mapping[str, Result]) -> Verdict:
    """Alpha's PPL interval below last-k's at every k holds; the gap (last / alpha) against the claimed
    1.1x-3.6x and Block Influence and ablation beside it."""
    pairs = prune_pairs(results)
    if not {"alpha", "last"} <= set(pairs["ppl"].columns):
        return not_comparable("The run compared neither alpha nor last.")
    ppl = pairs["ppl"]
    gap = (ppl["last"] / ppl["alpha"]).round(2).tolist()
    better = (pairs["ppl_high"]["alpha"] < pairs["ppl_low"]["last"]).tolist()
    worse = (pairs["ppl_low"]["alpha"] > pairs["ppl_high"]["last"]).tolist()
    verdict = HOLDS if all(better) else FAILS if all(worse) else INCONCLUSIVE
    others = [c for c in ("block_influence", "ablation") if c in ppl]
    where = "inside" if all(1.1 <= g <= 3.6 for g in gap) else "outside"
    beaten = [c for c in others if (ppl[c] < ppl["alpha"]).all()]
    return Verdict(f"last / alpha PPL at k={list(pairs.index)}: {gap}; " + "; ".join(
        f"last / {c}: {(ppl['last'] / ppl[c]).round(2).tolist()}" for c in others), verdict,
        f"Rule: alpha's PPL interval wholly below last-k's at every k holds; the gap is {where} the claimed "
        f"1.1x-3.6x; lower PPL than alpha at every k: {', '.join(beaten) or 'none'}.")


@finding("worst-vs-best pruning gap", "worst-vs-best gaps reach up to 23.7x across GPT-2 and Pythia models (spectral "
         "study)", "prune")
def pruning_gap(results: Mapping[str, Result]) -> Verdict:
    ppl = prune_pairs(results)["ppl"]
    gap = (ppl.max(axis=1) / ppl.min(axis=1)).round(2).tolist()
    return not_comparable("A maximum over GPT-2 and Pythia models, none of which is this one.",
                          f"worst / best criterion PPL at k={list(ppl.index)}: {gap}", "another model family")


def declared() -> list[Callable[..., Finding]]:
    """The rules of the study's experiments, in the study's order (each experiment's `StudyRole.findings`)."""
    from .experiment import study_experiments

    return [rule for experiment in study_experiments().values() for rule in experiment.study.findings]


# ---------------------------------------------------------------- growth -----------------------------------------

GROWTH_RUN = "growth comparison run (--growth RUN, written by growth_models.compare --regime study)"
STEPS_CONTRADICTION = ("The study contradicts itself: Table 8 gives uniform 656 steps for about 11 epochs, while "
                       "growth's six phases add up to 103 epochs (30+20+20+12+6+15, Table 7) in the same 656 steps.")


def growth_row(name: str, study: str, key: str, growth: Sequence[Claim] | None, note: str = "") -> Finding:
    claim = next((c for c in growth or () if c.finding == key), None)
    if claim is None:
        why = f"No {GROWTH_RUN} was given." if growth is None else \
            f"The growth run has no '{key}' claim (written before it was added: run it again)."
        return Finding(name, study, "n/a", NOT_COMPARABLE, (why + " " + note).strip())
    control = "" if not math.isfinite(claim.control_value) else \
        f"; control {cell(claim.control_value, claim.control_low, claim.control_high, '.3f')}"
    older = "" if claim.rules == RULES_VERSION else f" (older rules v{claim.rules})"
    return Finding(name, study, f"uniform / growth validation loss {cell(claim.ours, claim.ours_low, claim.ours_high, '.3f')}"
                   + control, current_verdict(claim.verdict), f"{claim.explanation}{older} {note}".strip(),
                   claim.settings)


def same_passes(growth: Sequence[Claim] | None) -> Finding:
    """The literal-epochs claim's control as its own row: uniform given as many passes over the data as growth's
    most-trained layers, against growth; above 1, growth is better even then."""
    name, study = ("growth vs uniform (same passes)", "growth's gain comes from allocating the budget, not from more "
                   "passes over the data: its core layers see about 95 effective epochs, uniform about 11 (section 4.6.2)")
    claim = next((c for c in growth or () if c.finding == "growth.val_loss_ratio"), None)
    if claim is None or not math.isfinite(claim.control_value):
        return Finding(name, study, "n/a", NOT_COMPARABLE, f"No {GROWTH_RUN} was given.")
    verdict = above(claim.control_value, claim.control_low, claim.control_high, 1.0)
    return Finding(name, study, f"same-passes uniform / growth validation loss "
                   f"{cell(claim.control_value, claim.control_low, claim.control_high, '.3f')}", verdict,
                   "Rule: the ratio's interval above 1 holds (growth beats uniform given the same passes), at or "
                   "below 1 does not.", claim.settings)


def growth_findings(growth: Sequence[Claim] | None) -> list[Finding]:
    """The growth rows, from a growth comparison run: the study's literal epochs (with the same-passes control),
    the equal-steps ratio (the study's stated condition) and growth at half its budget against uniform."""
    return [
        growth_row("growth vs uniform (equal steps)", "4.7x lower validation loss than uniform (0.127 vs 0.599) in "
                   "the same number of training steps (abstract; Table 8)", "growth.val_loss_ratio.equal_steps", growth,
                   STEPS_CONTRADICTION),
        growth_row("growth vs uniform (literal epochs)", "4.7x lower validation loss, uniform at about 11 epochs "
                   "(section 4.6.4; Table 8)", "growth.val_loss_ratio", growth),
        same_passes(growth),
        growth_row("growth at 50% budget", "growth at half the budget (416 steps) reaches 0.279 against uniform's "
                   "0.599 at 656 steps: 2.1x (Table 8)", "growth.val_loss_ratio.half_budget", growth)]


def findings(results: Mapping[str, Result], model_name: str, refused: Mapping[str, str] | None = None,
             growth: Sequence[Claim] | None = None) -> list[Finding]:
    """Every finding of the papers against these results, in the report's order; `refused` gives, for an
    experiment that could not run on this model, its one-line reason, which its findings then state;
    `growth` holds the claims of a growth comparison run when one was given."""
    rows = [*(rule(results, model_name) if rule is table_1 else rule(results) for rule in declared()),
            *growth_findings(growth)]
    refused = refused or {}
    return [dataclasses.replace(r, reason=f"{r.missing} could not run on this model: {refused[r.missing]}")
            if r.missing in refused else r for r in rows]


COLUMNS = ["finding", "study", "ours", "verdict", "reason", "conditions", "rules"]


def findings_table(rows: list[Finding]) -> pd.DataFrame:
    """claims.csv: one row per finding, with the rules version that judged it."""
    return pd.DataFrame([{**{k: getattr(r, k) for k in COLUMNS[:-1]}, "rules": RULES_VERSION} for r in rows],
                        columns=COLUMNS)
