"""The study's findings checked against a study's results: the study's number, ours with its interval, and a
verdict with its reason in one sentence.

A verdict is `holds` when our interval lies wholly on the claim's side of its threshold, `does not hold`
when it lies wholly on the other side, `inconclusive` when it straddles, and `not comparable` when the
experiment was not run or cannot measure the claim on this model. Every rule is written beside its finding,
so a reader can disagree with a threshold and see what it changes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .claims import Claim
from .experiment import Result

HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE = "holds", "does not hold", "inconclusive", "not comparable"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE)

# the study's Table 1 (docs: protocol section 10): ablation D in % by layer, SmolLM2-135M base, boundary untouched
STUDY_TABLE_1 = (0.0, 2737.1, 186.0, 13.4, 22.7, 8.3, 9.4, 20.3, 2395.6, 378.1, 9870.7, 63419.2, 6.3, 24.4, 5.0,
                 11.1, 20.3, -0.6, 16.9, 2.6, 25.9, 23.5, 27.8, 66.6, 115.2, 23.2, 19.4, 134.8, 211.5, 0.0)
STUDY_FAMILY = ("SmolLM2-135M",)


@dataclass(frozen=True)
class Finding:
    """One row of the claims table."""

    finding: str
    study: str  # the study's number or statement, as published
    ours: str  # our number with its interval
    verdict: str
    reason: str  # one sentence
    missing: str = ""  # the experiment whose absence made it not comparable


def above(value: float, low: float, high: float, threshold: float) -> str:
    """The verdict on 'value > threshold' from its interval."""
    if not all(map(math.isfinite, (low, high))):
        return INCONCLUSIVE
    return HOLDS if low > threshold else FAILS if high <= threshold else INCONCLUSIVE


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (Pearson on average ranks); NaN with fewer than 3 pairs or no spread."""
    x, y = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    keep = x.notna() & y.notna()
    if keep.sum() < 3:
        return math.nan
    return float(x[keep].rank().corr(y[keep].rank()))


def spearman_interval(x: np.ndarray, y: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Spearman's rho and a 95% bootstrap interval over the pairs (layers)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = spearman(x, y)
    if not math.isfinite(rho):
        return rho, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [spearman(x[i], y[i]) for i in rng.integers(0, len(x), (resamples, len(x)))]
    draws = np.array([d for d in draws if math.isfinite(d)])
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (math.nan, math.nan)
    return rho, float(low), float(high)


def missing(name: str, study: str, experiment: str) -> Finding:
    return Finding(name, study, "n/a", NOT_COMPARABLE, f"The {experiment} experiment was not part of this study.",
                   missing=experiment)


Verdict = tuple[str, str, str]  # what a rule measures: (ours, verdict, reason)


def finding(name: str, study: str, *reads: str) -> Callable[[Callable[..., Verdict]], Callable[..., Finding]]:
    """Declares a finding: its row in the claims table, the study's statement, and the experiments its rule
    reads. The rule runs only when all of them are in the results (otherwise the row is `not comparable` and
    names the absent one), so each rule holds just its measurement and its threshold."""
    def declare(rule: Callable[..., Verdict]) -> Callable[..., Finding]:
        @functools.wraps(rule)
        def check(results: Mapping[str, Result], *args: object) -> Finding:
            absent = next((n for n in reads if n not in results), None)
            return missing(name, study, absent) if absent else Finding(name, study, *rule(results, *args))
        return check
    return declare


def not_comparable(why: str) -> Verdict:
    return "n/a", NOT_COMPARABLE, why


@finding("importance range", "D from -0.6% to +63,419%: a few catastrophic layers beside redundant ones", "importance")
def importance_range(results: Mapping[str, Result]) -> Verdict:
    t = results["importance"].table
    t = t[t["class"] != "Untouched"]
    top, bottom = t.loc[t["degradation_pct"].idxmax()], t.loc[t["degradation_pct"].idxmin()]
    ours = (f"D from {bottom['degradation_pct']:+.1f}% (layer {int(bottom['layer'])}) to "
            f"{top['degradation_pct']:+,.0f}% [{top['degradation_low']:,.0f}, {top['degradation_high']:,.0f}] "
            f"(layer {int(top['layer'])})")
    catastrophic = bool((t["degradation_low"] > 1000).any())
    redundant = bool((t["degradation_high"] < 10).any())
    verdict = (HOLDS if catastrophic and redundant else
               FAILS if not (t["degradation_high"] > 1000).any() or not (t["degradation_low"] < 10).any() else
               INCONCLUSIVE)
    reason = ("Rule: some layer's whole D interval above 1000% and some layer's below 10%; "
              f"{'both found' if verdict == HOLDS else 'catastrophic layer ' + ('found' if catastrophic else 'not found') + ', redundant layer ' + ('found' if redundant else 'not found')}.")
    return ours, verdict, reason


@finding("critical core", "critical core L8-L11 (27-37% of depth), the most important layer L11", "importance")
def critical_core(results: Mapping[str, Result]) -> Verdict:
    t = results["importance"].table
    n = int(t["layer"].max()) + 1
    inner = t[(t["layer"] > 0) & (t["layer"] < n - 1) & (t["class"] != "Untouched")]
    top = inner.loc[inner["degradation_pct"].idxmax()]
    depth = int(top["layer"]) / (n - 1)
    band = (8 / 29, 11 / 29)
    rivals = inner[inner["degradation_high"] >= top["degradation_low"]]  # intervals overlapping the top one
    rival_depths = rivals["layer"] / (n - 1)
    inside = (rival_depths >= band[0] - 1e-9) & (rival_depths <= band[1] + 1e-9)
    verdict = HOLDS if inside.all() else FAILS if not inside.any() else INCONCLUSIVE
    ours = f"most important inner layer {int(top['layer'])} ({depth:.0%} of depth), D {top['degradation_pct']:,.0f}%"
    reason = (f"Rule: every inner layer whose D interval reaches the top one's lies at 27-37% of depth; "
              f"those layers: {', '.join(map(str, rivals['layer'].astype(int)))}.")
    return ours, verdict, reason


@finding("anti-layers",
         "anti-layers L14, L17: removing them lowers PPL (L17 D -0.6%) and they recover below baseline",
         "importance")
def anti_layers(results: Mapping[str, Result]) -> Verdict:
    t = results["importance"].table
    below = t.loc[t["degradation_high"] < 0, "layer"].astype(int).tolist()
    straddle = t.loc[(t["degradation_low"] < 0) & (t["degradation_high"] >= 0), "layer"].astype(int).tolist()
    rec = results.get("recovery")
    rec_anti = [] if rec is None or "verdict" not in rec.table else \
        rec.table.loc[rec.table["verdict"].astype(str).str.startswith("anti"), "layer"].astype(int).tolist()
    verdict = HOLDS if below or rec_anti else INCONCLUSIVE if straddle else FAILS
    ours = (f"D interval below 0: {below or 'none'}; straddling 0: {straddle or 'none'}"
            + ("" if rec is None else f"; below baseline after recovery and not in the sigma-0 control: "
                                      f"{rec_anti or 'none'}"))
    reason = "Rule: a layer whose whole D interval is below 0, or which recovers below baseline when its control does not."
    return ours, verdict, reason


@finding("Table 1 rank agreement", "Table 1 (SmolLM2-135M base, boundary untouched)", "importance")
def table_1(results: Mapping[str, Result], model_name: str) -> Verdict:
    t = results["importance"].table.sort_values("layer")
    if not any(f in model_name for f in STUDY_FAMILY) or len(t) != len(STUDY_TABLE_1):
        return not_comparable(f"{model_name} is not the study's model family (SmolLM2-135M, base or instruct).")
    inner = slice(1, len(t) - 1)  # the study left its boundary layers untouched
    rho, low, high = spearman_interval(np.array(STUDY_TABLE_1[inner]), t["degradation_pct"].to_numpy()[inner])
    verdict = above(rho, low, high, 0.5)
    return (f"Spearman {rho:.2f} [{low:.2f}, {high:.2f}] over layers 1-28",
            verdict, "Rule: the rank correlation's interval above 0.5 holds, wholly at or below it does not.")


@finding("R^2 and the paradox",
         "gate_proj R^2 0.909 from depth, yet 9 predicted layers give PPL > 100,000 (the R^2-perplexity paradox)",
         "predictability")
def predictability_paradox(results: Mapping[str, Result]) -> Verdict:
    result = results["predictability"]
    t = result.table
    gate = t[t["component"].astype(str).str.endswith("gate_proj")]
    part = gate if not gate.empty else t
    values = part["r2"].to_numpy(dtype=float)
    draws = np.random.default_rng(0).choice(values, (2000, len(values))).mean(axis=1)
    mean, (low, high) = float(values.mean()), np.percentile(draws, [2.5, 97.5])
    functional = result.tables.get("functional")
    broken = "" if functional is None or functional.empty else \
        f"; replacing {functional['layers'].iloc[-1].count(',') + 1} layers: PPL {functional['ppl'].iloc[-1]:,.0f}"
    ours = f"mean per-position R^2 of {part['component'].iloc[0]} {mean:.3f} [{low:.3f}, {high:.3f}]{broken}"
    verdict = above(mean, low, high, 0.5)
    return (ours, verdict,
            "Rule: depth predicting the weights themselves (mean R^2 interval above 0.5) holds; the weight "
            "distribution's R^2 (in the predictability report) is what stays high.")


@finding("delta correlation", "consecutive weight deltas correlate at -0.50 (read as structure)", "structure")
def delta_correlation(results: Mapping[str, Result]) -> Verdict:
    t = results["structure"].table
    z = t["order_z"].abs()
    ours = (f"mean delta correlation {t['delta_corr'].mean():.3f}; null -0.5; shuffled control "
            f"{t['shuffled_mean'].mean():.3f}; |z| vs shuffled at most {z.max():.1f}")
    verdict = FAILS if (z < 2).all() else HOLDS if (z > 2).all() else INCONCLUSIVE
    reason = ("Rule: structure means the real order differs from the layer-shuffled control (|z| > 2) for every "
              f"component; {int((z > 2).sum())} of {len(z)} do" + (", so -0.5 is what independent layers give."
                                                                    if verdict != HOLDS else "."))
    return ours, verdict, reason


@finding("manipulation survivors",
         "of the redundant layers changed at once, only scale 0.9 survives (+19%); scale 0.7 +5,035%",
         "manipulate")
def manipulation(results: Mapping[str, Result]) -> Verdict:
    result = results["manipulate"]
    t = result.table[~result.table["strategy"].astype(str).str.startswith("baseline")]
    changed = result.scalars.get("layers") or []
    survive = t.loc[t["degradation_high"] < 100, "strategy"].astype(str).tolist()
    maybe = t.loc[(t["degradation_low"] < 100) & (t["degradation_high"] >= 100), "strategy"].astype(str).tolist()
    scale09 = [s for s in t["strategy"].astype(str) if s.replace(" ", "") == "scale0.9"]
    ours = (f"{len(changed)} layer{'s' if len(changed) != 1 else ''} changed ({', '.join(map(str, changed))}); "
            f"D interval under 100%: {', '.join(survive) or 'none'}; straddling: {', '.join(maybe) or 'none'}")
    only = bool(scale09) and survive == scale09 and not maybe
    verdict = HOLDS if only else INCONCLUSIVE if maybe else FAILS
    reason = ("Rule: survives = whole D interval under 100%; holds when scale 0.9 is the only survivor (the study "
              "changed 9 layers: fewer redundant layers make every change milder).")
    return ours, verdict, reason


@finding("recovery vs importance", "recovery speed correlates with importance (Table 5)", "importance", "recovery")
def recovery_vs_importance(results: Mapping[str, Result]) -> Verdict:
    rec, imp = results["recovery"].table, results["importance"].table.set_index("layer")
    d = imp.loc[rec["layer"].astype(int), "degradation_pct"].to_numpy()
    rho, low, high = spearman_interval(d, rec["final_ratio"].to_numpy())
    verdict = above(rho, low, high, 0.0)
    return (f"Spearman(D, final PPL / baseline) {rho:.2f} [{low:.2f}, {high:.2f}] over {len(rec)} layers",
            verdict, "Rule: the interval wholly above 0 holds, wholly at or below 0 does not.")


@finding("hardest layer's recovery",
         "L11 never recovers: 4,323 after noise, 175.9 after 200 steps (7.8x baseline)",
         "recovery")
def hardest_layer(results: Mapping[str, Result]) -> Verdict:
    rec = results["recovery"].table
    worst = rec.loc[rec["final_ratio"].idxmax()]
    base = float(worst["baseline_ppl"])
    low = float(worst["final_ppl_low"]) / base
    high = float(worst["final_ppl_high"]) / base
    verdict = above(float(worst["final_ratio"]), low, high, 2.0)
    return (f"layer {int(worst['layer'])}: final {worst['final_ratio']:.2f}x baseline [{low:.2f}, {high:.2f}] "
            f"after {int(worst['steps'])} steps", verdict,
            "Rule: the hardest layer's final PPL interval wholly above 2x baseline holds.")


@finding("budget saving", "2,760 of 6,000 uniform steps (54% saved)", "budget")
def budget_saving(results: Mapping[str, Result]) -> Verdict:
    t = results["budget"].table
    total, saved = int(t["steps"].sum()), 100 * (1 - t["ratio"].sum() / len(t))  # steps = round(R x B_max)
    verdict = HOLDS if abs(saved - 54) <= 10 else FAILS
    return (f"{total:,} steps, {saved:.0f}% saved against a uniform budget", verdict,
            "Rule: within 10 points of the study's 54% holds (the saving is a rule's output: no interval).")


@finding("alpha-guided pruning", "alpha-guided pruning beats dropping the last k layers by 1.1x to 3.6x", "prune")
def alpha_pruning(results: Mapping[str, Result]) -> Verdict:
    t = results["prune"].table
    t = t[t["k"] > 0]
    if not {"alpha", "last"} <= set(t["criterion"]):
        return not_comparable("The run compared neither alpha nor last.")
    pairs = t.pivot(index="k", columns="criterion", values=["ppl", "ppl_low", "ppl_high"])
    ratios = (pairs["ppl"]["last"] / pairs["ppl"]["alpha"]).round(2).tolist()
    better = (pairs["ppl_high"]["alpha"] < pairs["ppl_low"]["last"]).tolist()
    worse = (pairs["ppl_low"]["alpha"] > pairs["ppl_high"]["last"]).tolist()
    verdict = HOLDS if all(better) else FAILS if all(worse) else INCONCLUSIVE
    return (f"last/alpha PPL at k={list(pairs.index)}: {ratios}", verdict,
            "Rule: alpha's PPL interval wholly below last-k's at every k holds; wholly above does not.")


@finding("alpha depth gradient", "alpha forms a persistent depth gradient", "spectral")
def alpha_depth(results: Mapping[str, Result]) -> Verdict:
    t = results["spectral"].table.dropna(subset=["alpha"])
    per_layer = t.groupby("layer")["alpha"].mean()
    rho, low, high = spearman_interval(per_layer.index.to_numpy(), per_layer.to_numpy())
    verdict = HOLDS if (math.isfinite(low) and (low > 0 or high < 0)) else INCONCLUSIVE if math.isfinite(low) else \
        NOT_COMPARABLE
    return (f"Spearman(layer, mean alpha) {rho:.2f} [{low:.2f}, {high:.2f}]",
            verdict, "Rule: an interval that excludes 0 (either sign) holds; one that contains 0 is inconclusive.")


@finding("query/key vs value/output", "query/key carry the depth dynamics; value/output compress uniformly", "spectral")
def qk_vs_vo(results: Mapping[str, Result]) -> Verdict:
    t = results["spectral"].table.dropna(subset=["alpha"])
    spread = {g: t[t["group"] == g].groupby("layer")["alpha"].mean().std() for g in ("query/key", "value/output")}
    if any(not math.isfinite(v) for v in spread.values()):
        return not_comparable("No query/key or value/output group.")
    ratio = spread["query/key"] / spread["value/output"]
    verdict = HOLDS if ratio > 1.5 else FAILS if ratio < 1 else INCONCLUSIVE
    return (f"depth spread of alpha: query/key {spread['query/key']:.3f}, value/output "
            f"{spread['value/output']:.3f} ({ratio:.2f}x)", verdict,
            "Rule: query/key's spread over depth at least 1.5x value/output's holds, below 1x does not.")


@finding("middle layers skippable", "middle layers can be skipped or run in parallel with graceful loss", "plans")
def painters_middle(results: Mapping[str, Result]) -> Verdict:
    t = results["plans"].table
    rows = t[t["variant"].isin(["skip", "parallel"])]
    if rows.empty:
        return not_comparable("Neither skip nor parallel was run.")
    smallest = rows[rows["block_size"] == rows["block_size"].min()]
    graceful = smallest["degradation_high"] < 100
    ours = ", ".join(f"{r.variant} {int(r.block_size)}: D {r.degradation_pct:+.0f}%" for r in smallest.itertuples())
    verdict = HOLDS if graceful.all() else FAILS if (smallest["degradation_low"] >= 100).all() else INCONCLUSIVE
    return (ours, verdict,
            "Rule: skip and parallel of the smallest middle block with D interval under 100% hold.")


@finding("arithmetic most fragile", "arithmetic is the most fragile ability", "plans")
def arithmetic_fragile(results: Mapping[str, Result]) -> Verdict:
    t = results["plans"].table
    facts, sums = "acc_facts", "acc_arithmetic"
    if not {facts, sums} <= set(t.columns) or t[[facts, sums]].isna().all().any():
        return not_comparable("The run had no task accuracies.")
    base = t[t["variant"] == "baseline"] if (t["variant"] == "baseline").any() else t.iloc[:0]
    if base.empty or float(base[sums].iloc[0]) == 0:
        return not_comparable("The unchanged model answers no arithmetic task, so nothing can be lost.")
    altered = t[t["variant"] != "baseline"]
    drop_facts = float(base[facts].iloc[0]) - altered[facts]
    drop_sums = float(base[sums].iloc[0]) - altered[sums]
    diff = (drop_sums - drop_facts).to_numpy()
    rng = np.random.default_rng(0)
    mean, (low, high) = diff.mean(), np.percentile(rng.choice(diff, (2000, len(diff))).mean(axis=1), [2.5, 97.5])
    return (f"arithmetic loses {mean * 100:+.0f} points more than facts [{low * 100:+.0f}, {high * 100:+.0f}] "
            f"over {len(diff)} altered plans (bootstrap over plans)",
            above(mean, low, high, 0.0), "Rule: the mean extra loss of arithmetic over facts above 0 holds.")


FINDINGS: tuple[Callable[[Mapping[str, Result]], Finding], ...] = (
    importance_range, critical_core, anti_layers, predictability_paradox, delta_correlation, manipulation, recovery_vs_importance,
    hardest_layer, budget_saving, painters_middle, arithmetic_fragile, alpha_depth, qk_vs_vo, alpha_pruning)


def growth_vs_uniform(growth: Sequence[Claim] | None) -> Finding:
    """From a growth comparison run (`python -m growth_models.compare --regime study`): its claim on the ratio
    of validation losses, with the control that gives uniform training the same passes over the data."""
    study = "growth reaches 4.7x lower validation loss than uniform (0.127 vs 0.599)"
    claim = next((c for c in growth or () if c.finding == "growth.val_loss_ratio"), None)
    if claim is None:
        return Finding("growth vs uniform", study, "n/a", NOT_COMPARABLE,
                       "No growth comparison run was given (--growth RUN, written by growth_models.compare "
                       "--regime study).")
    verdict = {"reproduced": HOLDS, "not reproduced": FAILS}.get(claim.verdict, FAILS)
    ours = (f"uniform / growth validation loss {claim.ours:.3f} [{claim.ours_low:.3f}, {claim.ours_high:.3f}]; "
            f"control {claim.control_value:.3f} [{claim.control_low:.3f}, {claim.control_high:.3f}]")
    return Finding("growth vs uniform", study, ours, verdict,
                   f"Its comparison run says '{claim.verdict}': {claim.explanation}")


def findings(results: Mapping[str, Result], model_name: str, refused: Mapping[str, str] | None = None,
             growth: Sequence[Claim] | None = None) -> list[Finding]:
    """Every finding of the study against these results, in the report's order; `refused` gives, for an
    experiment that could not run on this model, its one-line reason, which its findings then state;
    `growth` holds the claims of a growth comparison run when one was given."""
    rows = [*(f(results) for f in FINDINGS), table_1(results, model_name), growth_vs_uniform(growth)]
    refused = refused or {}
    return [dataclasses.replace(r, reason=f"{r.missing} could not run on this model: {refused[r.missing]}")
            if r.missing in refused else r for r in rows]


def findings_table(rows: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([vars(r) for r in rows], columns=["finding", "study", "ours", "verdict", "reason"])
