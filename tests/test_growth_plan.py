"""The growth plan: the study's phases, step shares, the budget reader, bad input."""

import json

import pytest

from anatomy.errors import AnatomyError
from growth_models.plan import GrowthPlan, default_plan, load_plan, phase_steps, plan_from_budget


def test_default_plan_is_the_studys():
    plan = default_plan()
    assert [p.name for p in plan.phases] == ["gastrulation", "neurulation", "organogenesis", "growth",
                                            "connective", "maturation"]
    assert [p.share for p in plan.phases] == [30, 20, 20, 12, 6, 15]
    assert plan.phases[0].sources == {4: None, 5: None}
    assert plan.phases[1].sources == {1: 4, 2: 5} and plan.phases[2].sources == {8: 4, 9: 5}
    assert plan.phases[3].sources == {7: 5, 10: 9}
    assert plan.phases[4].ffn_scale == 0.5 and sorted(plan.phases[4].sources) == [0, 3, 6, 11]
    assert plan.widths(256) == [256, 1024, 1024, 256, 1024, 1024, 256, 512, 1024, 1024, 512, 256]


def test_phase_steps_follow_the_shares_and_sum_to_the_budget():
    steps = phase_steps([30, 20, 20, 12, 6, 15], 656)
    assert sum(steps) == 656
    assert steps == [191, 127, 127, 77, 38, 96]  # 656 x share / 103, largest remainder
    assert sum(phase_steps([30, 20, 20, 12, 6, 15], 328)) == 328
    assert min(phase_steps([30, 20, 20, 12, 6, 15], 6)) == 1
    with pytest.raises(AnatomyError, match="--steps 6"):
        phase_steps([1] * 6, 5)


def test_plan_round_trips_through_json():
    plan = default_plan()
    again = GrowthPlan.from_dict(json.loads(plan.to_json()))
    assert again == plan


def test_budget_json_gives_roles_phases_and_leaves_anti_layers_out():
    classes = ["Critical", "Redundant", "Critical", "Critical", "Minor", "Anti-layer", "Critical", "Redundant",
               "Critical", "Important"]
    budget = {"layers": [{"layer": i, "class": c, "ratio": 0.5, "steps": 100 if c != "Redundant" else 10}
                         for i, c in enumerate(classes)], "total_steps": 999}
    plan = plan_from_budget(budget)
    assert plan.roles == ["C", "R", "C", "C", "M", "C", "R", "C", "I"]  # the anti-layer is gone
    names = [p.name for p in plan.phases]
    assert names[0] == "gastrulation" and names[-1] == "maturation"
    first = plan.phases[0]
    assert all(src is None for src in first.sources.values())
    later = [p for p in plan.phases[1:] if p.sources]
    assert all(src is not None for p in later for src in p.sources.values())
    connective = next(p for p in plan.phases if p.name == "connective")
    assert sorted(connective.sources) == [1, 6] and connective.ffn_scale == 0.5
    assert abs(sum(p.share for p in plan.phases) - 1) < 1e-9
    assert plan.phases[-1].share == pytest.approx(0.15)
    assert connective.share < first.share  # fewer budget steps, smaller share


@pytest.mark.parametrize("budget, message", [
    ({}, "non-empty list 'layers'"),
    ({"layers": [{"layer": 0, "class": "Weird", "ratio": 1, "steps": 1}]}, "unknown layer class"),
    ({"layers": [{"layer": 0, "ratio": 1}]}, "bad budget row"),
    ({"layers": [{"layer": 0, "class": "anti-layer", "ratio": 0, "steps": 0}]}, "nothing to grow"),
])
def test_bad_budgets_say_what_is_wrong(budget, message):
    with pytest.raises(AnatomyError, match=message):
        plan_from_budget(budget)


def test_plan_validation_rejects_clones_of_layers_not_grown(tmp_path):
    d = json.loads(default_plan().to_json())
    d["phases"][1]["sources"] = {"1": 8, "2": 5}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    with pytest.raises(AnatomyError, match="not grown yet"):
        load_plan(plan_file=str(path))


def test_load_plan_errors(tmp_path):
    with pytest.raises(AnatomyError, match="no such file"):
        load_plan(budget_file=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnatomyError, match="not valid JSON"):
        load_plan(budget_file=str(bad))
    with pytest.raises(AnatomyError, match="not both"):
        load_plan(str(bad), str(bad))


def test_the_trainer_takes_the_plan_file_as_growth_plan_and_the_old_plan_flag_still_works():
    """`--growth-plan` does not read like the layer-plan grammar of `python -m anatomy plans --plan`."""
    from growth_models.train import parse_args

    base = ["--schedule", "growth", "--out", "ckpt"]
    assert parse_args([*base, "--growth-plan", "g.json"]).growth_plan == "g.json"
    assert parse_args([*base, "--plan", "g.json"]).growth_plan == "g.json"
    assert parse_args(base).growth_plan is None
