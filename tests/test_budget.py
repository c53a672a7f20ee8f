"""Training budget (SPEC section 6): each rule, the totals, the JSON the growth trainer reads, the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from anatomy.cli import main as cli_main
from anatomy.errors import AnatomyError
from anatomy.experiment import Result
from anatomy.experiments.budget import BudgetConfig, budget_json, run_budget
from growth_models.plan import load_plan

N = 12


def importance(classes: dict[int, str], anti: tuple[int, ...] = ()) -> Result:
    return Result("importance", pd.DataFrame([{"layer": i, "class": classes.get(i, "Minor"),
                                               "anti_layer_candidate": i in anti} for i in range(N)]))


def recovery(rows: dict[int, tuple[float | None, bool]], steps: int = 200) -> Result:
    """rows: layer -> (first step under 1.1x or None, anti-layer)."""
    return Result("recovery", pd.DataFrame([{"layer": i, "noise_ppl": 100.0, "steps_to_2x": 10, "steps_to_1.5x": 10,
                                             "steps_to_1.1x": pd.NA if s is None else s, "final_ppl": 20.0,
                                             "final_ratio": 1.0, "anti_layer_candidate": anti, "steps": steps}
                                            for i, (s, anti) in rows.items()]))


def budget(imp: Result, rec: Result | None, config: BudgetConfig | None = None) -> Result:
    """The budget experiment as the CLI and the app run it: no model, the needed results by name."""
    return run_budget(None, None, config, importance=imp, recovery=rec)


def by_layer(result: Result) -> dict[int, tuple[str, float]]:
    return {r.layer: (r.rule, r.ratio) for r in result.table.itertuples()}


def test_each_rule():
    classes = {0: "Critical", 1: "Critical", 5: "Critical", 9: "Critical", 2: "Redundant", 3: "Redundant",
               4: "Important", 11: "Untouched"}
    rec = recovery({2: (10, False), 3: (None, False), 6: (100, False), 7: (50, True), 9: (0, False),
                    4: (None, False)})
    df = by_layer(budget(importance(classes, anti=(8,)), rec))
    assert df[0] == ("boundary, class only", 0.2) and df[11] == ("boundary, class only", 0.2)
    assert df[1] == ("critical input", 1.0) and df[5] == ("critical core", 1.0)
    assert df[9] == ("critical output", 0.8)  # recovered at once: low end of 0.8-1.0
    assert df[2] == ("redundant, recovers at once", pytest.approx(0.0025))
    assert df[3] == ("redundant, slow recovery: minor range", 0.5)
    assert df[6] == ("minor", pytest.approx(0.4))  # half the steps: middle of 0.3-0.5
    assert df[7] == ("anti-layer (recovery)", 0.0) and df[8] == ("anti-layer (importance)", 0.0)
    assert df[4] == ("important", 0.8)
    assert df[10] == ("minor, class only", 0.5)


def test_totals_and_options():
    imp = importance({i: "Critical" for i in range(N)})
    df = budget(imp, None)
    assert df["uniform_steps"] == N * 200
    assert df["total_steps"] == 10 * 200 + 2 * 40
    assert df["class_only"] == list(range(N))
    off = budget(imp, None, BudgetConfig(boundary_rule=False, b_max=100))
    assert off["total_steps"] == N * 100
    imp_anti = importance({}, anti=(3,))
    assert by_layer(budget(imp_anti, None, BudgetConfig(anti_from_importance=False)))[3][0] == "minor, class only"


def test_bad_input_is_refused():
    with pytest.raises(AnatomyError):
        budget(importance({}), None, BudgetConfig(minor=(0.5, 0.3)))
    with pytest.raises(AnatomyError, match="Unknown class"):
        budget(importance({2: "Weird"}), None)


def test_json_round_trips_through_the_growth_trainer(tmp_path):
    classes = {0: "Untouched", 11: "Untouched", 1: "Critical", 4: "Critical", 5: "Critical", 8: "Critical",
               9: "Critical", 2: "Redundant", 3: "Redundant", 6: "Redundant"}
    df = budget(importance(classes, anti=(7,)), recovery({2: (10, False), 3: (20, False)}))
    data = budget_json(df)
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(data))
    back = json.loads(path.read_text())
    assert back["total_steps"] == sum(r["steps"] for r in back["layers"]) and back["uniform_steps"] == 2400
    plan = load_plan(budget_file=str(path))
    assert len(plan.roles) == N - 1  # the anti-layer is left out
    assert plan.roles[0] == "R" and "C" in plan.roles and "M" in plan.roles


def test_cli_writes_table_and_schedule(tmp_path):
    imp_dir, rec_dir, out = tmp_path / "imp", tmp_path / "rec", tmp_path / "budget"
    imp_dir.mkdir()
    rec_dir.mkdir()
    importance({1: "Critical", 2: "Redundant"}).table.to_csv(imp_dir / "importance.csv", index=False)
    recovery({2: (10, False)}).table.to_csv(rec_dir / "recovery.csv", index=False)
    assert cli_main(["budget", "--importance", str(imp_dir), "--recovery", str(rec_dir), "--out", str(out),
                     "--minor", "0.3,0.4"]) == 0
    data = json.loads((out / "budget.json").read_text())
    assert [r["layer"] for r in data["layers"]] == list(range(N))
    assert data["layers"][5]["ratio"] == 0.4
    assert all((out / name).is_file() for name in ("budget.csv", "budget.png", "report.md", "results.json"))
    assert cli_main(["budget", "--importance", str(tmp_path / "nope")]) == 2


def test_an_importance_run_folder_gives_the_depth(tmp_path):
    """A folder written before typed results (results.json without `table`, importance.csv beside it): the
    model's depth comes from its results.json, so layer 11 of a 14-layer model is not a boundary layer."""
    folder = tmp_path / "imp"
    folder.mkdir()
    table = importance({}).table
    table.to_csv(folder / "importance.csv", index=False)
    (folder / "results.json").write_text(json.dumps({
        "experiment": "importance", "model": {"num_layers": 14}, "results": {},
        "tables": {"importance": json.loads(table.to_json(orient="records"))}}))
    out = tmp_path / "budget"
    assert cli_main(["budget", "--importance", str(folder), "--out", str(out)]) == 0
    rules = pd.read_csv(out / "budget.csv").set_index("layer")["rule"]
    assert rules[0] == "boundary, class only" and rules[11] == "minor, class only"
    assert str(folder) in (out / "report.md").read_text()


def test_the_app_may_require_the_optional_recovery_run():
    """Budget without recovery is class-only; a caller that wants recovery (the app, unless 'Class-only' is
    ticked) is refused with its own way out."""
    from anatomy.experiments.budget import EXPERIMENT
    from anatomy.run import resolve_needs

    given = {"importance": importance({})}
    assert resolve_needs(EXPERIMENT, given)["recovery"] is None
    with pytest.raises(AnatomyError, match="needs a recovery result: run it first"):
        resolve_needs(EXPERIMENT, given, require={"recovery"}, missing=lambda need: "run it first")
    with pytest.raises(AnatomyError, match="needs a importance result"):
        resolve_needs(EXPERIMENT, {}, require={"recovery"})
