"""The app's pieces without a server: model cache and locks, Stop, error messages, the generation diff."""

from __future__ import annotations

import logging
import re
import threading
import time

import gradio as gr
import pandas as pd
import pytest

from anatomy.errors import AnatomyError
from anatomy.experiments.interventions import InterventionsConfig, run_interventions
from anatomy.generate import SideBySide, difference_table, side_by_side
from anatomy.interventions import fingerprint, intervention
from anatomy.layers import LayerAdapter
from anatomy.load import EMBEDDED, ONLINE_DEFAULT, HubCheck, LoadedModel
from anatomy.progress import Cancelled
from space import gpu, jobs, models
from space.limits import Deadline
from tests.conftest import make_tiny_model


def _fake_loaded(spec: str) -> LoadedModel:
    return LoadedModel(model=make_tiny_model("llama", layers=2), tokenizer=None, name=spec, source="test")


def test_cache_drops_the_least_recently_used_model_when_count_or_memory_runs_short():
    free = {"bytes": 10_000}
    cache = models.ModelCache(loader=_fake_loaded, max_models=2, estimate=lambda spec: 1_000,
                              available=lambda: free["bytes"])
    a = cache.get("a")
    cache.get("b")
    assert cache.get("a") is a  # cached, and now the most recently used
    cache.get("c")
    assert cache.specs() == ["a", "c"]  # b was the least recently used
    free["bytes"] = 500  # memory short: drop until it fits or nothing idle is left
    cache.get("d")
    assert cache.specs() == ["d"]


def test_cache_never_drops_a_model_a_job_is_using():
    cache = models.ModelCache(loader=_fake_loaded, max_models=1, estimate=lambda spec: 0, available=lambda: 1)
    with cache.use("busy"):
        cache.get("other")
        assert cache.specs() == ["busy", "other"]


def test_a_hub_id_is_looked_up_once_per_load_and_the_loader_gets_that_check(monkeypatch):
    asked, given = [], {}

    def check_hub_model(spec, token=None):
        asked.append(spec)
        return HubCheck(spec, "abc123", 1_000, "llama")

    def loader(spec, hub=None):
        given[spec] = hub
        return _fake_loaded(spec)

    monkeypatch.setattr(models, "check_hub_model", check_hub_model)
    models.ModelCache(loader=loader, available=lambda: 10**12).get("alice/tiny")
    assert asked == ["alice/tiny"] and given["alice/tiny"].revision == "abc123"


def test_model_lock_serialises_jobs_and_stop_works_while_waiting():
    cache = models.ModelCache(loader=_fake_loaded)
    order = []
    cancel = threading.Event()

    def second():
        try:
            with cache.use("m", cancel):
                order.append("second")
        except Cancelled:
            order.append("cancelled")

    with cache.use("m"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("first")
        cancel.set()
        thread.join(5)
    assert order == ["first", "cancelled"]


def test_default_model_is_embedded_offline_and_smollm2_online(monkeypatch):
    """Only the network hop is replaced: the Hub answering or not decides the default model."""
    dialled = []

    class Answering:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def hub_answers(address, timeout):
        dialled.append(address)
        return Answering()

    def hub_unreachable(address, timeout):
        dialled.append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(models.socket, "create_connection", hub_answers)
    assert models.default_model_spec() == ONLINE_DEFAULT and dialled == [("huggingface.co", 443)]
    monkeypatch.setattr(models.socket, "create_connection", hub_unreachable)
    assert models.default_model_spec() == EMBEDDED and len(dialled) == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models.socket, "create_connection", hub_answers)
    assert models.default_model_spec() == EMBEDDED and len(dialled) == 2  # offline mode never dials


def test_progress_callback_raises_cancelled_after_stop_and_weights_come_back():
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    request = gr.Request(session_hash="unit-stop")
    cancel = jobs.start(request)
    callback = jobs.progress_callback(None, Deadline(None, cancel))
    callback(0, 3, "step")  # no Stop yet: nothing happens
    adapter = LayerAdapter(model)
    with pytest.raises(Cancelled):
        with intervention(adapter, "zero", [0, 1, 2]):
            jobs.stop(request)
            callback(1, 3, "step")
    assert fingerprint(model) == before
    assert not jobs.start(request).is_set()  # the next job starts clean


def test_user_errors_turns_every_failure_into_a_short_gr_error(caplog):
    def bad(kind, request=None):
        raise {"anatomy": AnatomyError("Layer 99 does not exist."), "bug": RuntimeError("boom\nsecond line"),
               "stop": Cancelled("after 1 of 3 steps")}[kind]

    wrapped = jobs.user_errors(bad)
    with pytest.raises(gr.Error, match="Layer 99 does not exist"):
        wrapped("anatomy")
    request = gr.Request(session_hash="unit-errors")
    with pytest.raises(gr.Error) as info, caplog.at_level(logging.ERROR, logger="space"):
        wrapped("bug", request)
    error_id = re.fullmatch(r"RuntimeError: boom \(error id ([0-9a-f]{8}): the server log has the details\)",
                            info.value.message).group(1)
    assert [r.getMessage() for r in caplog.records] == [f"job failed [error id {error_id}]"]  # logged once
    assert jobs.last_error(request).startswith("❌ **Error:** RuntimeError: boom (error id")  # kept for the tab
    assert jobs.last_error(request) == gr.update()  # shown once, then the line is left to the next run or Stop
    with pytest.raises(gr.Error, match="weights were restored"):
        wrapped("stop", request)
    assert jobs.last_error(request).startswith("⏹ **Stopped:** Stopped (after 1 of 3 steps)")


def test_eval_set_uses_the_first_n_sentences_or_the_users_lines(tiny_tokenizer):
    loaded = LoadedModel(make_tiny_model("llama", layers=2), tiny_tokenizer, "tiny", "test")
    assert len(jobs.eval_set_for(loaded, 3).texts) == 3
    assert jobs.eval_set_for(loaded, 3, "One text here.\n\nAnother text here.\n").texts == \
        ["One text here.", "Another text here."]
    with pytest.raises(AnatomyError):
        jobs.eval_set_for(loaded, 0)


def test_intervention_sweep_gives_one_row_per_value_and_restores(tiny_tokenizer, tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    df = run_interventions(model, tiny_eval_set, InterventionsConfig("scale", [1, 2], (1.0, 0.5, 0.0))).table
    assert list(df["value"]) == [1.0, 0.5, 0.0]
    assert df["degradation_pct"].iloc[0] == pytest.approx(0.0, abs=1e-6)  # alpha 1 changes nothing
    assert df["degradation_pct"].iloc[2] != pytest.approx(0.0)
    assert len(run_interventions(model, tiny_eval_set, InterventionsConfig("skip", [1])).table) == 1
    assert fingerprint(model) == before
    with pytest.raises(AnatomyError):
        run_interventions(model, tiny_eval_set, InterventionsConfig("melt", [1]))


def test_side_by_side_uses_one_seed_and_marks_differing_tokens(tiny_tokenizer):
    model = make_tiny_model("llama", layers=4)
    adapter = LayerAdapter(model)
    before = fingerprint(model)
    same = side_by_side(model, tiny_tokenizer, "The river", lambda: intervention(adapter, "none", []),
                        max_new_tokens=8, seed=3).ids
    for pair in same.values():
        assert pair["original"] == pair["altered"]  # same model, same seed: same tokens, sampled too
    changed = side_by_side(model, tiny_tokenizer, "The river", lambda: intervention(adapter, "skip", [0, 1, 2]),
                           max_new_tokens=8, seed=3, use_cache_altered=False).ids
    assert changed["greedy"]["original"] == same["greedy"]["original"]
    assert changed["greedy"]["original"] != changed["greedy"]["altered"]
    assert fingerprint(model) == before
    left, right = SideBySide.of(tiny_tokenizer, "The river", False, [],
                                {"greedy": {"original": [5, 6, 7, 8], "altered": [5, 6, 9, 8]}}).marked("greedy")
    assert [label for _, label in left] == [None, None, "differs", None]
    assert [label for _, label in right] == [None, None, "differs", None]
    table = difference_table({"greedy": {"original": [5, 6, 7], "altered": [5, 9]}})
    assert table.loc[0, "first_difference_at"] == 1 and table.loc[0, "tokens_differing"] == 2


def test_zero_gpu_wrapper_is_a_no_op_elsewhere_and_long_jobs_are_refused_there(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def job():
        return 42

    assert gpu.gpu(60)(job) is job
    gpu.refuse_on_zero_gpu("Recovery")  # not on ZeroGPU: allowed
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(AnatomyError, match="ZeroGPU"):
        gpu.refuse_on_zero_gpu("Recovery")


def test_landing_tables_start_hidden_and_only_a_successful_load_shows_them():
    """No empty placeholder tables on the landing tab, and a failed load shows its error once, in the status;
    the tables and status of a previous model go when the model box changes."""
    from space import build_demo
    config = build_demo("embedded").get_config_file()
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    visible = {c["id"]: c["props"].get("visible") for c in config["components"]}
    tables, status = [ids["model-components"], ids["model-norms"]], ids["model-status"]
    assert [visible[t] for t in tables] == [False, False]
    load = next(d for d in config["dependencies"] if d["api_name"] == "load_model")
    assert load["outputs"] == [status, *tables] and load["show_progress_on"] == [status]
    after = sorted((("success" if d["trigger_only_on_success"] else "failure"), d["outputs"])
                   for d in config["dependencies"] if d["trigger_after"] == load["id"])
    # success shows the tables; failure hides them and says its error in the status line until the next load
    assert after == sorted([("success", tables), ("failure", tables), ("failure", [status])])
    check = next(d for d in config["dependencies"] if d["api_name"] == "check_model")
    cleared = next(d for d in config["dependencies"] if d["id"] == check["trigger_after"])
    assert cleared["outputs"] == [status, *tables]  # a new spec first clears what was said about the old one


def study_folder(folder, settings: str, columns: list[str]):
    """A finished study's two files the Study tab reads: study.md (title, shared conditions, settings line) and
    claims.csv with `columns`."""
    folder.mkdir()
    (folder / "study.md").write_text(
        "# Study of embedded (SmolLM2-135M-Instruct.Q4_1.gguf)\n\n- Shared conditions (...): model embedded "
        "(SmolLM2-135M-Instruct.Q4_1.gguf), quantisation GGUF, dequantised on load, float32 (study: SmolLM2-135M "
        "base, unquantised)\n"
        f"- Settings: {settings} (every other setting: the experiment's command default)\n")
    (folder / "claims.csv").write_text(",".join(columns) + "\n" + ",".join(f"{c} 1" for c in columns) + "\n")
    return folder


def test_the_study_tab_labels_a_quick_study_quick_and_shows_the_columns_the_claims_have(tmp_path):
    from space import tab_study
    v2 = ["finding", "study", "ours", "verdict", "reason", "conditions", "rules"]
    quick = tab_study.outputs(study_folder(tmp_path / "quick", "QUICK (reduced) prune ks=3", v2), None, "")
    full = tab_study.outputs(study_folder(tmp_path / "full", "the study's defaults", v2[:5]), None, "")
    table = quick[1]
    assert table["label"].startswith("QUICK study: claims")
    assert "quantisation GGUF, dequantised on load" in table["label"]
    assert list(table["value"].columns) == ["finding", "verdict", "ours", "study", "reason", "conditions"]
    assert list(full[1]["value"].columns) == ["finding", "verdict", "ours", "study", "reason"]  # an older file's
    assert full[1]["label"].startswith("Study: claims") and len(full[1]["column_widths"]) == 5
    assert quick[4].endswith("study.md") and quick[3] is None  # study.md offered; no study.html written here
    assert tab_study.heading(tmp_path / "quick").figure_title.endswith("(QUICK study)")
    assert "QUICK" not in tab_study.heading(tmp_path / "full").figure_title


def test_the_shipped_study_is_labelled_by_what_its_report_says_it_is():
    from space import tab_study
    figure, claims, label, note = tab_study.shipped()
    quick = "- Settings: QUICK (reduced)" in (tab_study.SHIPPED / "study.md").read_text(encoding="utf-8")
    assert label.startswith("QUICK study:" if quick else "Study:") and "SmolLM2-135M-Instruct" in label
    assert figure.axes[0].get_title().endswith("(QUICK study)") == quick
    written = pd.read_csv(tab_study.SHIPPED / "claims.csv", nrows=0).columns
    assert list(claims.columns) == [c for c in tab_study.SHOWN if c in written]  # no empty column of an older file


def test_a_plots_key_the_experiment_does_not_draw_fails_naming_it_and_the_figures_drawn(tmp_path, monkeypatch):
    """A typo in a tab's figure names must stop the run loudly, not show an empty plot: a budget tab whose
    `plots` names 'budgte' refuses its run, naming the typo and the figure the experiment drew ('budget')."""
    import dataclasses
    import shutil
    from pathlib import Path

    from space import runs
    from space.tabs import TABS

    monkeypatch.setattr(runs, "RUNS_ROOT", tmp_path)
    folder = tmp_path / "session" / "importance-1"  # the shipped study's importance run, as a session's run
    shutil.copytree(Path(__file__).parents[1] / "anatomy/data/study-embedded/importance", folder)
    state = jobs.remember(None, "importance", runs.archive_of(folder))
    good = TABS["Budget"]
    config = good.config_class()
    *_, remembered = good.run([], config, state, None, None, None, ticked={"recovery"})  # the table's own names
    assert remembered["budget"]["zip"].endswith(".zip")
    typo = dataclasses.replace(good, plots={"budgte": "Steps per layer"})
    with pytest.raises(LookupError, match=r"figure 'budgte', which the budget experiment did not draw; it draws: "
                                          r"'budget'"):
        typo.run([], config, state, None, None, None, ticked={"recovery"})


def test_a_table_given_as_text_is_read_as_literals_only_and_keeps_only_the_columns_read():
    from space.previous import given_run

    columns = {"layer": "layer", "class": "text", "steps_to_*": "number"}
    shown_by_mcp = ("{'headers': ['layer', 'class', 'steps_to_2x', 'steps_to_1.5x', 'extra'], 'data': "
                    "[[0, 'Minor', nan, 4, 'x'], [1, 'Critical', 2.0, None, {'any': 'thing'}]], 'metadata': None}")
    table = given_run(shown_by_mcp, "recovery", columns).table  # a repr's nan and None: missing values
    assert list(table.columns) == ["layer", "class", "steps_to_2x", "steps_to_1.5x"]  # 'extra' is not read
    assert table["steps_to_2x"].isna().tolist() == [True, False]
    assert table["steps_to_1.5x"].isna().tolist() == [False, True]
    for text, message in (("__import__('os').system('touch /tmp/x')", "is not JSON"), ("[" * 5000, "is not JSON"),
                          ("-" * 150_000 + "1", "is not JSON"), ("[[0, 'Minor']]", "must be a table"),
                          ('{"headers": ["layer", "class"], "data": [[0, "Minor"]]}', "no column 'steps_to_\\*'"),
                          ('{"headers": ["layer", "class", "steps_to_2x"], "data": [[0, "Minor", "soon"]]}',
                           "row 0, column 'steps_to_2x' must be a finite number or null, got '\"soon\"'")):
        with pytest.raises(AnatomyError, match=message):
            given_run(text, "recovery", columns)
    assert given_run("  ", "recovery", columns) is None  # empty: the session's latest run serves
