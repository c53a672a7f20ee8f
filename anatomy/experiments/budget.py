"""Training budget from anatomy (SPEC section 6): a step budget per layer from its class and its recovery.

R(l) in [0, 1], steps(l) = round(R(l) x B_max). Rules, first match wins; every R and range is a flag below,
its default SPEC section 6's value:
1. anti-layer (final recovered PPL interval below baseline, or the importance D interval below 0): --anti;
2. boundary layer (first, last): --boundary;
3. Redundant that recovers at once (under the slowest threshold by step --at-once-steps): --redundant;
   Redundant that does not: the Minor range;
4. Minor: --minor;  Important (not named by the study; between Minor and Critical): --important;
5. Critical in the output layers (from --output-start of the depth): --critical-output;
   Critical in the input or core layers: --critical-core.
Within a range, R grows with how slowly the layer recovers: slowness = first step under the slowest
threshold / steps trained (1 when not reached). A layer without a recovery row gets the class-only
rule: the upper end of its range (the cautious choice: unknown recovery gets the full range's budget).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from .. import findings, plots, report
from ..errors import AnatomyError
from ..experiment import Artefacts, Experiment, Need, Result, StudyRole
from ..options import floats, option
from ..progress import ProgressCallback

COLUMNS = ["layer", "class", "position", "recovery", "rule", "ratio", "steps"]
RANGES = ("boundary", "redundant", "minor", "important", "critical_output")  # the rules' R ranges (low, high)


def r_range(default: tuple[float, float], of: str) -> tuple[float, float]:
    """A rule's R range: a config field typed low,high on the CLI and in the app."""
    return option(default, f"R range low,high of {of}", label=f"R range of {of} (low,high)", codec=floats(2),
                  minimum=0, maximum=1)


@dataclass
class BudgetConfig:
    """SPEC section 6's ranges; `b_max` steps a layer; `output_start` the fraction of depth where output begins."""

    b_max: int = option(200, "steps for a layer with R = 1", label="B_max (steps for R = 1)", minimum=1,
                        maximum=1_000_000)
    boundary: tuple[float, float] = r_range((0.15, 0.2), "boundary layers")
    redundant: tuple[float, float] = r_range((0.0, 0.05), "redundant layers")
    minor: tuple[float, float] = r_range((0.3, 0.5), "minor layers")
    important: tuple[float, float] = r_range((0.5, 0.8), "important layers")
    critical_output: tuple[float, float] = r_range((0.8, 1.0), "critical output layers")
    critical_core: float = option(1.0, "R of critical input/core layers", label="R of critical input/core layers",
                                  minimum=0, maximum=1)
    at_once_steps: int = option(10, "a redundant layer 'recovers at once' if under the slowest threshold by this "
                                "step", label="'Recovers at once' by step", minimum=0, maximum=1_000_000)
    boundary_rule: bool = option(True, "treat first/last layers by their class", flag="--no-boundary-rule",
                                 label="First/last layers by the boundary rule")
    anti_from_importance: bool = option(True, "ignore the importance run's anti-layer flag (D interval below 0)",
                                        flag="--anti-from-recovery-only",
                                        label="Anti-layers also from importance (D interval < 0)")
    anti: float = option(0.0, "R of anti-layers", ui=False, minimum=0, maximum=1)
    output_start: float = option(2 / 3, "depth fraction where output layers start", ui=False, minimum=0, maximum=1)

    def validate(self) -> None:
        if self.b_max < 1:
            raise AnatomyError(f"B_max (--b-max) must be >= 1, got {self.b_max}.")
        for name in RANGES:
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 1:
                raise AnatomyError(f"The {name} range must satisfy 0 <= low <= high <= 1, got {(lo, hi)}.")
        if not 0 <= self.anti <= 1 or not 0 <= self.critical_core <= 1 or not 0 < self.output_start <= 1:
            raise AnatomyError("anti and critical-core ratios must be in [0, 1], output_start in (0, 1].")


def _slowness(rec: pd.Series | None) -> float | None:
    """Share of the trained steps the layer needed to get under the slowest threshold (1 if never)."""
    if rec is None:
        return None
    cols = sorted((c for c in rec.index if c.startswith("steps_to_")), key=lambda c: float(c[9:-1]))
    if not cols:
        raise AnatomyError("The recovery table has no steps_to_<t>x columns: pass a recovery run folder.")
    first = rec[cols[0]]  # the smallest threshold is the slowest to reach
    return 1.0 if pd.isna(first) else min(1.0, float(first) / max(1.0, float(rec["steps"])))


def _summary(rec: pd.Series | None) -> str:
    if rec is None:
        return "not measured"
    cols = [c for c in rec.index if c.startswith("steps_to_")]
    reach = ", ".join(f"{c[9:]}@{'-' if pd.isna(rec[c]) else int(rec[c])}" for c in cols)
    return f"noise {rec['noise_ppl']:.4g} -> {rec['final_ppl']:.4g} ({rec['final_ratio']:.2f}x); {reach}"


def layer_ratio(row: pd.Series, rec: pd.Series | None, n_layers: int, config: BudgetConfig) -> tuple[str, str, float]:
    """(position, rule, R) for one layer of the importance table."""
    layer = int(row["layer"])
    position = ("boundary" if layer in (0, n_layers - 1) else
                "output" if layer >= config.output_start * n_layers else
                "input" if layer < n_layers / 3 else "core")
    anti_rec = rec is not None and bool(rec["anti_layer_candidate"])
    anti_imp = config.anti_from_importance and bool(row.get("anti_layer_candidate", False))
    if anti_rec or anti_imp:
        return position, "anti-layer (" + ("recovery" if anti_rec else "importance") + ")", config.anti
    s = _slowness(rec)
    pick = lambda lo_hi: lo_hi[1] if s is None else lo_hi[0] + (lo_hi[1] - lo_hi[0]) * s  # noqa: E731
    suffix = "" if s is not None else ", class only"
    cls = str(row["class"])
    if config.boundary_rule and position == "boundary":
        return position, "boundary" + suffix, pick(config.boundary)
    if cls in ("Redundant", "Untouched"):
        at_once = s is not None and s * float(rec["steps"]) <= config.at_once_steps
        if at_once or s is None:
            return position, ("redundant, recovers at once" if at_once else "redundant" + suffix), pick(config.redundant)
        return position, "redundant, slow recovery: minor range", pick(config.minor)
    if cls == "Minor":
        return position, "minor" + suffix, pick(config.minor)
    if cls == "Important":
        return position, "important" + suffix, pick(config.important)
    if cls == "Critical":
        if position == "output":
            return position, "critical output" + suffix, pick(config.critical_output)
        return position, f"critical {position}", config.critical_core
    raise AnatomyError(f"Unknown class '{cls}' for layer {layer} in the importance table.")


def run_budget(model: None, eval_set: None, config: BudgetConfig | None = None,
               progress: ProgressCallback | None = None, *,
               importance: Result, recovery: Result | None = None) -> Result:
    """One row per layer of the importance table, by class alone where the recovery run has no row (or there
    is none). The depth comes from the importance run's model when it was read from a run folder."""
    config = config or BudgetConfig()
    config.validate()
    table = importance.table
    if table.empty or not {"layer", "class"} <= set(table.columns):
        raise AnatomyError("The importance table needs 'layer' and 'class' columns: pass an importance run.")
    n_layers = (importance.source.get("model") or {}).get("num_layers") or int(table["layer"].max()) + 1
    recs = {} if recovery is None else {int(r["layer"]): r for _, r in recovery.table.iterrows()}
    rows = []
    for _, row in table.sort_values("layer").iterrows():
        rec = recs.get(int(row["layer"]))
        position, rule, ratio = layer_ratio(row, rec, n_layers, config)
        cls = "Anti-layer" if rule.startswith("anti") else str(row["class"])
        rows.append({"layer": int(row["layer"]), "class": cls, "position": position, "recovery": _summary(rec),
                     "rule": rule, "ratio": round(float(ratio), 4), "steps": int(round(ratio * config.b_max))})
    df = pd.DataFrame(rows, columns=COLUMNS)
    total, uniform = int(df["steps"].sum()), config.b_max * len(df)
    return Result("budget", df, scalars={
        "b_max": config.b_max, "total_steps": total, "uniform_steps": uniform, "saved_pct": 100 * (1 - total / uniform),
        "not_in_importance": sorted(set(recs) - set(df["layer"])),
        "class_only": df.loc[df["recovery"] == "not measured", "layer"].tolist(),
        "importance_run": run_of(importance), "recovery_run": run_of(recovery)})


def run_of(result: Result | None) -> str:
    """Where a needed result came from, as the report names it."""
    if result is None:
        return "none"
    return result.source.get("run") or "given in memory"


def budget_json(result: Result) -> dict:
    """The schedule the growth trainer reads (`growth_models.plan.plan_from_budget`).

    `class` is the importance class (Untouched boundary layers are written as Redundant, the role the
    study gave its boundary layers; anti-layers as Anti-layer, which the trainer leaves out).
    """
    layers = [{"layer": int(r.layer), "class": "Redundant" if r["class"] == "Untouched" else r["class"],
               "ratio": float(r.ratio), "steps": int(r.steps), "rule": r.rule} for _, r in result.table.iterrows()]
    return {"layers": layers, "b_max": int(result["b_max"]), "total_steps": int(result["total_steps"]),
            "uniform_steps": int(result["uniform_steps"])}


def budget_report(result: Result) -> str:
    lines = ["# Training budget from anatomy", "",
             f"- Importance run: `{result['importance_run']}`; recovery run: `{result['recovery_run']}`",
             f"- {totals(result)}; B_max {result['b_max']} a layer (the study: 2,760 of 6,000 steps, 54% saved)",
             "- Layers without a recovery row (class-only rule, upper end of their range): "
             + (", ".join(map(str, result["class_only"])) or "none"),
             "- Recovery layers missing from the importance run (ignored): "
             + (", ".join(map(str, result["not_in_importance"])) or "none"), "",
             report.markdown_table(result.table), ""]
    return "\n".join(lines)


def totals(result: Result) -> str:
    """The budget against the uniform one, in one line (the CLI's and the app's headline)."""
    return (f"Total {result['total_steps']:,} of {result['uniform_steps']:,} uniform steps "
            f"({result['saved_pct']:.0f}% saved)")


def budget_artefacts(result: Result, loaded: None, eval_set: None, config: BudgetConfig) -> Artefacts:
    """Figure, report and `budget.json` (the growth trainer's schedule): the CLI's and the app's run folder."""
    figure = plots.budget_figure(result.table, config.b_max, f"Training budget: {result['total_steps']:,} of "
                                 f"{result['uniform_steps']:,} uniform steps")
    return Artefacts(figures={"budget": figure}, markdown=budget_report(result),
                     files={"budget.json": json.dumps(budget_json(result), indent=2)})


def layer_views(result: Result) -> dict[str, pd.Series]:
    t = result.table.set_index("layer")
    return {"budget R(l)": t["ratio"], "budget class": t["class"]}


EXPERIMENT = Experiment(
    name="budget", title="Training budget", summary="per-layer training budget from importance and recovery "
    "(SPEC section 6)", description=__doc__, config=BudgetConfig, run=run_budget, artefacts=budget_artefacts,
    needs=(Need("importance", "importance run folder (or its importance.csv)", computable=False),
           Need("recovery", "recovery run folder (or recovery.csv); without it: class-only rules", required=False,
                computable=False)),
    uses_model=False, uses_eval=False, columns=("layer", "class", "position", "rule", "ratio", "steps"),
    headline=totals, work=lambda config, shape: 0.0,  # arithmetic on two tables: no model
    study=StudyRole(order=8, views=layer_views, findings=(findings.budget_saving,)))
