"""The study engine: dependency order, one folder per experiment, reuse of finished runs, rerun on change."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from anatomy import study, study_report, work
from anatomy.errors import AnatomyError
from anatomy.experiment import Artefacts, Experiment, Need, Result
from anatomy.experiments.importance import ImportanceConfig
from anatomy.load import LoadedModel
from tests.conftest import make_tiny_model


def fake(name: str, *needs: str) -> Experiment:
    return Experiment(name=name, title=name, summary=name, config=ImportanceConfig,
                      run=lambda *a, **k: Result(name, pd.DataFrame()), artefacts=lambda *a: Artefacts({}, ""),
                      needs=tuple(Need(n, n) for n in needs))


def test_dependency_order_puts_every_need_first_and_refuses_cycles():
    experiments = {e.name: e for e in (fake("budget", "importance", "recovery"), fake("importance"),
                                       fake("recovery"), fake("manipulate", "importance"))}
    assert study.in_dependency_order(["budget", "manipulate", "recovery", "importance"], experiments) == \
        ["importance", "recovery", "budget", "manipulate"]
    assert study.in_dependency_order(["manipulate"], experiments) == ["manipulate"]  # a need outside the study
    cyclic = {"a": fake("a", "b"), "b": fake("b", "a")}
    with pytest.raises(AnatomyError, match="cycle"):
        study.in_dependency_order(["a", "b"], cyclic)
    with pytest.raises(AnatomyError, match="Unknown experiment 'melt'"):
        study.in_dependency_order(["melt"], experiments)


def test_bad_overrides_fail_before_any_model_is_loaded():
    with pytest.raises(AnatomyError, match="sets bogus of importance"):
        study.plan(["importance"], {"importance": {"bogus": 1}})
    with pytest.raises(AnatomyError, match="one of"):
        study.plan(["importance"], {"importance": {"mode": "melt"}})


def test_a_finished_run_is_reused_and_a_changed_flag_reruns_it(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=3), tiny_tokenizer, "tiny", "test")
    steps = study.plan(["importance"], {"importance": {"mode": "zero"}})
    first = study.run_study(steps, loaded, tiny_eval_set, tmp_path)
    made = (tmp_path / "importance" / "results.json").stat().st_mtime_ns
    again = study.run_study(steps, loaded, tiny_eval_set, tmp_path)
    assert again.reused == ["importance"] and first.reused == []
    assert (tmp_path / "importance" / "results.json").stat().st_mtime_ns == made
    pd.testing.assert_frame_equal(again.results["importance"].table, first.results["importance"].table)
    changed = study.run_study(study.plan(["importance"], {"importance": {"mode": "skip"}}), loaded, tiny_eval_set,
                              tmp_path)
    assert changed.reused == [] and (changed.results["importance"].table["mode"] == "skip").all()
    assert not list(tmp_path.glob("*.partial"))


def test_a_folder_without_its_key_or_results_is_not_finished(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=3), tiny_tokenizer, "tiny", "test")
    steps = study.plan(["importance"], {"importance": {"mode": "zero"}})
    study.run_study(steps, loaded, tiny_eval_set, tmp_path)
    (tmp_path / "importance" / study.KEY_FILE).unlink()  # as if written by hand or by another tool
    assert study.run_study(steps, loaded, tiny_eval_set, tmp_path).reused == []
    (tmp_path / "importance" / "results.json").unlink()  # as if killed before results.json
    assert study.run_study(steps, loaded, tiny_eval_set, tmp_path).reused == []


@pytest.mark.slow
def test_report_is_self_contained_and_two_studies_compare(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test")
    steps = study.plan(["importance"], {"importance": {"mode": "zero"}})
    for name in ("a", "b"):
        done = study.run_study(steps, loaded, tiny_eval_set, tmp_path / name)
        markdown = study.write_report(done, loaded, tiny_eval_set, tmp_path / name, {"importance": {"mode": "zero"}})
        assert "importance mode=zero" in markdown and "## Claims of the study" in markdown
    page = (tmp_path / "a" / "study.html").read_text()
    assert "data:image/png;base64," in page  # the figure inside the file: it opens offline
    assert "<script" not in page and "src='http" not in page and "href=" not in page
    from anatomy import cli
    assert cli.main(["compare-studies", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    compared = (tmp_path / "c" / "compare.md").read_text()
    assert "a verdict" in compared and "b verdict" in compared and "importance range" in compared
    assert "a conditions" in compared and "OLDER RULES" not in compared
    assert (tmp_path / "c" / "maps.png").stat().st_size > 1000
    written = pd.read_csv(tmp_path / "a" / "claims.csv", keep_default_na=False)
    assert list(written.columns) == ["finding", "study", "ours", "verdict", "reason", "conditions", "rules"]
    older = written.drop(columns=["conditions", "rules"]).assign(verdict="reproduced")  # as version 1 wrote it
    older.to_csv(tmp_path / "b" / "claims.csv", index=False)
    assert cli.main(["compare-studies", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    compared = (tmp_path / "c" / "compare.md").read_text()
    assert "b: `" in compared and "(OLDER RULES v1" in compared and "holds (older rules v1)" in compared
    assert cli.main(["compare-studies", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2


def test_the_studys_recovery_layers_follow_relative_depth():
    assert study.study_layers(30, study.STUDY_RECOVERY_LAYERS) == "0,1,3,5,8,10,11,14,17,23,24,27,29"
    assert study.study_layers(12, study.QUICK_RECOVERY_LAYERS) == "4,5,6"
    steps = study.plan(["recovery"], {"recovery": {"steps": 3}})
    assert steps[0].config.control is True  # the command's default, not the library's
    assert study.with_recovery_layers(steps, 30, None, quick=False)[0].config.layers == \
        "0,1,3,5,8,10,11,14,17,23,24,27,29"
    assert study.with_recovery_layers(steps, 30, "all", quick=True)[0].config.layers is None
    assert study.with_recovery_layers(steps, 30, "2,4", quick=True)[0].config.layers == "2,4"


@pytest.mark.slow
def test_an_experiment_this_model_cannot_run_is_stated_and_the_study_goes_on(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test")
    # a random tiny model has no layer outside the redundant set, so manipulation refuses; budget still runs
    steps = study.plan(["importance", "manipulate", "budget"], {"importance": {"thresholds": "1000,2000,3000"}})
    done = study.run_study(steps, loaded, tiny_eval_set, tmp_path)
    assert set(done.refused) == {"manipulate"} and "budget" in done.results
    assert not (tmp_path / "manipulate").exists()
    markdown = study.write_report(done, loaded, tiny_eval_set, tmp_path, {})
    assert "Could not run on this model: manipulate" in markdown
    claims = pd.read_csv(tmp_path / "claims.csv", keep_default_na=False).set_index("finding")
    assert claims.loc["manipulation survivors", "reason"].startswith("manipulate could not run on this model")


def test_a_step_too_big_for_a_shallow_model_counts_no_work_instead_of_failing_the_estimate():
    """The full study's layer plans include an 8-layer block; on a 6-layer model that step is refused when it
    runs, so the study's estimate (and the app's budget) must count it as nothing rather than raise first."""
    steps = study.with_recovery_layers(study.plan(study.STUDY), 6, None, quick=False)
    configs = {s.name: s.config for s in steps}
    shallow, deep = (work.Shape(num_layers=n, head_layers=8.0, eval_tokens=100, prefill_tokens=20) for n in (6, 30))
    plans = next(s for s in steps if s.name == "plans")
    with pytest.raises(AnatomyError, match="block of 8 layers"):
        plans.experiment.work(plans.config, shallow)
    assert not study.can_run(plans.experiment, plans.config, shallow) and study.step_work(plans, configs, shallow) == 0
    assert study.can_run(plans.experiment, plans.config, deep) and study.step_work(plans, configs, deep) > 0
    assert [s.name for s in steps if not study.can_run(s.experiment, s.config, shallow)] == ["plans"]


def test_the_time_left_weighs_the_steps_to_come_by_their_work(tmp_path, tiny_tokenizer, tiny_eval_set):
    """A short step followed by one declared ten times bigger: the estimate after the first is ten times the
    first's wall time, where a mean over steps would say one time."""
    def timed(name: str, seconds: float, passes: float) -> Experiment:
        def run(*args, **kwargs) -> Result:
            time.sleep(seconds)
            return Result(name, pd.DataFrame({"layer": [0]}))
        return Experiment(name=name, title=name, summary=name, config=ImportanceConfig, run=run,
                          artefacts=lambda *a: Artefacts({}, ""), work=lambda config, shape: passes)

    loaded = LoadedModel(make_tiny_model("llama", layers=3), tiny_tokenizer, "tiny", "test")
    steps = [study.Step(timed("short", 0.3, 1.0), ImportanceConfig()), study.Step(timed("long", 0.1, 10.0),
                                                                                  ImportanceConfig())]
    left: list[float] = []
    done = study.run_study(steps, loaded, tiny_eval_set, tmp_path, on_step=lambda d, t, n, eta: left.append(eta))
    assert 2.5 < left[0] < 6 and left[1] == 0.0
    assert done.wall_s["short"] >= 0.3
    again: list[float] = []
    study.run_study(steps, loaded, tiny_eval_set, tmp_path, on_step=lambda d, t, n, eta: again.append(eta))
    assert all(eta != eta for eta in again)  # everything reused: nothing ran to time the rest by


def test_the_full_studys_work_puts_recovery_far_above_the_importance_map():
    """SmolLM2-135M's shape and the default text: recovery's 26 fine-tunes took 137x the map's wall time in
    the full study here (7,016 s against 51 s), the layer plans 7.7x; the estimates must rank them alike."""
    steps = study.with_recovery_layers(study.plan(study.STUDY), 30, None, quick=False)
    configs = {s.name: s.config for s in steps}
    shape = work.Shape(num_layers=30, head_layers=8.0, eval_tokens=783, prefill_tokens=130)
    passes = {s.name: study.step_work(s, configs, shape) for s in steps}
    assert 50 < passes["recovery"] / passes["importance"] < 300
    assert 3 < passes["plans"] / passes["importance"] < 20
    quick = study.with_recovery_layers(study.plan(study.STUDY, study.QUICK), 30, None, quick=True)
    assert study.step_work(next(s for s in quick if s.name == "recovery"), configs, shape) < passes["recovery"] / 20


def test_the_study_is_declared_on_its_experiments(monkeypatch):
    """Order, settings, quick settings, views and claims-table rules all come from the experiments' StudyRole."""
    from anatomy import experiment, findings

    roles = experiment.study_experiments()
    assert tuple(roles) == study.STUDY and study.STUDY[:2] == ("importance", "predictability")
    assert study.QUICK["recovery"] == {"steps": 10, "eval_every": 5} and study.FULL == {
        "importance": {"tasks": "anatomy_arithmetic,anatomy_facts"}, "manipulate": {"count": 9},
        "plans": {"edge_controls": True}}
    assert study.QUICK["manipulate"] == {"count": 9, "alphas": "0.7,0.9"}  # quick settings over the study's own
    rows = findings.findings({}, "gpt2")
    assert len(rows) == sum(len(e.study.findings) for e in roles.values()) + 4  # and the four growth rows

    @findings.finding("a new claim", "the paper's number", "extra")
    def new_rule(results):
        return findings.Verdict("ours", findings.HOLDS, "why")

    extra = Experiment(name="extra", title="Extra", summary="s", config=ImportanceConfig, run=lambda *a: None,
                       artefacts=lambda *a: Artefacts({}, ""),
                       study=experiment.StudyRole(order=10, views=lambda r: {"extra view": r.table["v"]},
                                                  findings=(new_rule,)))
    monkeypatch.setattr(experiment, "registry", lambda original=experiment.registry: {**original(), "extra": extra})
    result = Result("extra", pd.DataFrame({"layer": [0, 1], "v": [1.0, 2.0]}).set_index("layer"))
    assert findings.findings({"extra": result}, "gpt2")[len(rows) - 4].finding == "a new claim"
    assert list(study_report.layer_views({"extra": result})["extra view"]) == [1.0, 2.0]


def test_one_function_runs_a_study_for_the_cli_and_the_app(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test")
    steps, overrides = study.prepare(["importance", "recovery"], quick=True)
    steps = [s for s in steps if s.name == "importance"]  # the map alone: the recovery layers still stated
    done, markdown = study.conduct(steps, overrides, loaded, tiny_eval_set, tmp_path, quick=True)
    assert "importance" in done.results and "- Settings: QUICK (reduced) importance tasks=none; recovery steps=10, eval_every=5" in markdown
    assert "Shared conditions" in markdown and "Holm" in markdown
    claims = pd.read_csv(tmp_path / "claims.csv", keep_default_na=False)
    assert claims["conditions"].str.contains("checkpoints").any() and set(claims["rules"]) == {2}


def test_the_full_studys_map_scores_the_tasks_and_study_md_holds_the_proxy_panel(tmp_path, tiny_tokenizer,
                                                                                  tiny_eval_set):
    assert study.QUICK["importance"]["tasks"] == ""  # --quick leaves the per-layer scoring out
    loaded = LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test")
    settings = {"importance": {"mode": "zero", "tasks": "anatomy_facts"}}
    done = study.run_study(study.plan(["importance"], settings), loaded, tiny_eval_set, tmp_path)
    panel = done.results["importance"]["proxy_panel"]
    assert set(panel["proxy"]) == {"block_influence", "angular_distance", "degradation_pct"}
    assert set(panel["target"]) == {"anatomy_facts_acc_drop"} and (panel["layers"] == 4).all()
    markdown = study.write_report(done, loaded, tiny_eval_set, tmp_path, settings)
    assert "## Proxy panel" in markdown and "| angular_distance" in markdown
    assert "<h2>Proxy panel" in (tmp_path / "study.html").read_text()
