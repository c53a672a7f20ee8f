"""Training budget from anatomy (SPEC section 6): a step budget per layer from its class and its recovery.

R(l) in [0, 1], steps(l) = round(R(l) x B_max). Rules, first match wins, every number a parameter:
1. anti-layer (final recovered PPL interval below baseline, or the importance D interval below 0): 0;
2. boundary layer (first, last): 0.15-0.2;
3. Redundant that recovers at once (under 1.1x baseline by the first evaluation): 0-0.05;
   Redundant that does not: the Minor range;
4. Minor: 0.3-0.5;  Important (not named by the study; between Minor and Critical): 0.5-0.8;
5. Critical in the output third: 0.8-1.0;  Critical in the input or core thirds: 1.0.
Within a range, R grows with how slowly the layer recovers: slowness = first step under the slowest
threshold / steps trained (1 when not reached). A layer without a recovery row gets the class-only
rule: the upper end of its range (the cautious choice: unknown recovery gets the full range's budget).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .. import plots, report
from ..errors import AnatomyError

COLUMNS = ["layer", "class", "position", "recovery", "rule", "ratio", "steps"]


@dataclass
class BudgetConfig:
    """SPEC section 6's ranges; `b_max` steps a layer; `output_start` the fraction of depth where output begins."""

    b_max: int = 200
    anti: float = 0.0
    boundary: tuple[float, float] = (0.15, 0.2)
    redundant: tuple[float, float] = (0.0, 0.05)
    minor: tuple[float, float] = (0.3, 0.5)
    important: tuple[float, float] = (0.5, 0.8)
    critical_output: tuple[float, float] = (0.8, 1.0)
    critical_core: float = 1.0
    output_start: float = 2 / 3
    at_once_steps: int = 10  # "recovers at once": under the slowest threshold by this step
    boundary_rule: bool = True
    anti_from_importance: bool = True

    def validate(self) -> None:
        if self.b_max < 1:
            raise AnatomyError(f"B_max (--b-max) must be >= 1, got {self.b_max}.")
        for name in ("boundary", "redundant", "minor", "important", "critical_output"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 1:
                raise AnatomyError(f"The {name} range must satisfy 0 <= low <= high <= 1, got {(lo, hi)}.")
        if not 0 <= self.anti <= 1 or not 0 <= self.critical_core <= 1 or not 0 < self.output_start <= 1:
            raise AnatomyError("anti and critical-core ratios must be in [0, 1], output_start in (0, 1].")


def read_run(path: str | Path, table: str) -> tuple[pd.DataFrame, dict]:
    """A run's table (`<table>.csv`) and its results.json (empty if absent); `path` is the folder or the CSV."""
    p = Path(path)
    csv = p / f"{table}.csv" if p.is_dir() else p
    if not csv.is_file():
        raise AnatomyError(f"{csv} not found: pass the run folder of `python -m anatomy {table}` or its {table}.csv.")
    results = csv.parent / "results.json"
    return pd.read_csv(csv), (json.loads(results.read_text()) if results.is_file() else {})


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


def run_budget(importance: pd.DataFrame, recovery: pd.DataFrame | None, config: BudgetConfig | None = None,
               n_layers: int | None = None) -> pd.DataFrame:
    """One row per layer of the importance table; `df.attrs` holds the totals and the unmatched layers."""
    config = config or BudgetConfig()
    config.validate()
    if importance.empty or not {"layer", "class"} <= set(importance.columns):
        raise AnatomyError("The importance table needs 'layer' and 'class' columns: pass an importance run.")
    n_layers = n_layers or int(importance["layer"].max()) + 1
    recs = {} if recovery is None else {int(r["layer"]): r for _, r in recovery.iterrows()}
    rows = []
    for _, row in importance.sort_values("layer").iterrows():
        rec = recs.get(int(row["layer"]))
        position, rule, ratio = layer_ratio(row, rec, n_layers, config)
        cls = "Anti-layer" if rule.startswith("anti") else str(row["class"])
        rows.append({"layer": int(row["layer"]), "class": cls, "position": position, "recovery": _summary(rec),
                     "rule": rule, "ratio": round(float(ratio), 4), "steps": int(round(ratio * config.b_max))})
    df = pd.DataFrame(rows, columns=COLUMNS)
    total, uniform = int(df["steps"].sum()), config.b_max * len(df)
    df.attrs.update(total_steps=total, uniform_steps=uniform, b_max=config.b_max,
                    saved_pct=100 * (1 - total / uniform),
                    not_in_importance=sorted(set(recs) - set(df["layer"])),
                    class_only=df.loc[df["recovery"] == "not measured", "layer"].tolist())
    return df


def budget_json(df: pd.DataFrame) -> dict:
    """The schedule the growth trainer reads (`growth_models.plan.plan_from_budget`).

    `class` is the importance class (Untouched boundary layers are written as Redundant, the role the
    study gave its boundary layers; anti-layers as Anti-layer, which the trainer leaves out).
    """
    layers = [{"layer": int(r.layer), "class": "Redundant" if r["class"] == "Untouched" else r["class"],
               "ratio": float(r.ratio), "steps": int(r.steps), "rule": r.rule} for _, r in df.iterrows()]
    return {"layers": layers, "b_max": int(df.attrs["b_max"]), "total_steps": int(df.attrs["total_steps"]),
            "uniform_steps": int(df.attrs["uniform_steps"])}


def budget_report(df: pd.DataFrame, config: BudgetConfig, sources: dict[str, str]) -> str:
    a = df.attrs
    lines = ["# Training budget from anatomy", "",
             f"- Importance run: `{sources['importance']}`; recovery run: `{sources['recovery']}`",
             f"- Total {a['total_steps']:,} of {a['uniform_steps']:,} uniform steps (B_max {a['b_max']} a layer): "
             f"{a['saved_pct']:.0f}% saved (the study: 2,760 of 6,000, 54%)",
             f"- Rules and ranges: {json.dumps(asdict(config))}",
             "- Layers without a recovery row (class-only rule, upper end of their range): "
             + (", ".join(map(str, a["class_only"])) or "none"),
             "- Recovery layers missing from the importance run (ignored): "
             + (", ".join(map(str, a["not_in_importance"])) or "none"), "",
             report.markdown_table(df), ""]
    return "\n".join(lines)


def write_budget_run(run: report.RunFolder, df: pd.DataFrame, config: BudgetConfig,
                     sources: dict[str, str]) -> tuple[dict, Figure, str]:
    """Table, figure, `budget.json` (the growth trainer's schedule), report and results: the CLI's and the
    app's run folder alike. Returns the schedule, the figure and the report."""
    run.write_table("budget", df)
    schedule = budget_json(df)
    (run.path / "budget.json").write_text(json.dumps(schedule, indent=2), encoding="utf-8")
    run.files.append("budget.json")
    figure = plots.budget_figure(df, config.b_max, f"Training budget: {schedule['total_steps']:,} of "
                                 f"{schedule['uniform_steps']:,} uniform steps")
    run.write_figure("budget", figure)
    markdown = budget_report(df, config, sources)
    run.write_report(markdown)
    run.finish(None, None, config, {k: v for k, v in schedule.items() if k != "layers"})
    return schedule, figure, markdown


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("budget", help="per-layer training budget from importance and recovery "
                                   "(SPEC section 6)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--importance", required=True, help="importance run folder (or its importance.csv)")
    parser.add_argument("--recovery", help="recovery run folder (or recovery.csv); without it: class-only rules")
    parser.add_argument("--out", default="runs/budget", help="run folder to write (default runs/budget)")
    parser.add_argument("--b-max", type=int, default=200, help="steps for a layer with R = 1 (default 200)")
    for name, default in (("boundary", "0.15,0.2"), ("redundant", "0,0.05"), ("minor", "0.3,0.5"),
                          ("important", "0.5,0.8"), ("critical-output", "0.8,1.0")):
        parser.add_argument(f"--{name}", default=default, help=f"R range low,high (default {default})")
    parser.add_argument("--critical-core", type=float, default=1.0, help="R of critical input/core layers (1.0)")
    parser.add_argument("--anti", type=float, default=0.0, help="R of anti-layers (default 0)")
    parser.add_argument("--output-start", type=float, default=2 / 3, help="depth fraction where output layers start")
    parser.add_argument("--at-once-steps", type=int, default=10,
                        help="a redundant layer 'recovers at once' if under the slowest threshold by this step")
    parser.add_argument("--no-boundary-rule", action="store_true", help="treat first/last layers by their class")
    parser.add_argument("--anti-from-recovery-only", action="store_true",
                        help="ignore the importance run's anti-layer flag (D interval below 0)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> None:
    from .. import cli

    rng = lambda flag: cli.parse_floats(getattr(args, flag.replace("-", "_")), 2, f"--{flag}")  # noqa: E731
    config = BudgetConfig(b_max=args.b_max, anti=args.anti, boundary=rng("boundary"), redundant=rng("redundant"),
                          minor=rng("minor"), important=rng("important"), critical_output=rng("critical-output"),
                          critical_core=args.critical_core, output_start=args.output_start,
                          at_once_steps=args.at_once_steps, boundary_rule=not args.no_boundary_rule,
                          anti_from_importance=not args.anti_from_recovery_only)
    importance, imp_results = read_run(args.importance, "importance")
    recovery = read_run(args.recovery, "recovery")[0] if args.recovery else None
    n_layers = (imp_results.get("model") or {}).get("num_layers")
    df = run_budget(importance, recovery, config, n_layers)
    run = report.RunFolder(args.out, "budget")
    schedule, _, _ = write_budget_run(run, df, config, {"importance": str(args.importance),
                                                  "recovery": str(args.recovery or "none")})
    cli.print_summary(run, df.drop(columns=["recovery"]))
    print(f"total {schedule['total_steps']:,} of {schedule['uniform_steps']:,} uniform steps "
          f"({df.attrs['saved_pct']:.0f}% saved)")
