"""The one shape every experiment has: declared config fields, the CLI and the tab built from them, the typed
Result written to and read back from a run folder with real wall times, and needs resolved in one place."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from anatomy import cli
from anatomy.errors import AnatomyError
from anatomy.experiment import Artefacts, Experiment, Need, Result, registry
from anatomy.experiments.importance import EXPERIMENT as IMPORTANCE
from anatomy.experiments.importance import ImportanceConfig
from anatomy.load import LoadedModel
from anatomy.options import LAYERS, build_config, floats, option, params
from anatomy.report import RunFolder
from anatomy.run import artefacts, execute, resolve_needs
from tests.conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_field_is_a_flag_with_its_default_in_help(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps help at hyphens otherwise ("one- neighbour")
    experiment = registry()[name]
    sub = subparser(name)
    flags = {s for a in sub._actions for s in a.option_strings}
    help_text = " ".join(sub.format_help().split())
    for param in params(experiment.config):
        if not param.option.cli:
            continue
        assert param.flag in flags, f"{name}: {param.name} has no {param.flag}"
        if not param.is_switch and param.flag not in {"--seed"}:  # --seed is the shared flag
            default = param.option.cli_default if param.option.cli_default is not None else param.default
            assert f"(default: {param.text(default) or 'none'})" in help_text, (name, param.flag)
    for need in experiment.needs:
        assert f"--{need.experiment}" in flags


def test_cli_flags_become_the_config_the_library_takes():
    args = subparser("importance").parse_args(["--mode", "zero", "--layers", "0,3-4", "--thresholds", "5,20,50",
                                               "--no-prefix-cache"])
    config = cli.config_from_args(IMPORTANCE, args)
    assert config == ImportanceConfig(mode="zero", layers="0,3-4", thresholds=(5.0, 20.0, 50.0),
                                      use_prefix_cache=False)
    assert cli.config_from_args(IMPORTANCE, subparser("importance").parse_args([])) == ImportanceConfig()


@pytest.mark.parametrize("argv, message", [
    (["--thresholds", "5,nan,50"], "finite numbers"),
    (["--thresholds", "5,20"], "3 comma-separated numbers"),
    (["--layers", "3-1"], "runs backwards"),
    (["--thresholds", "50,20,100"], "three increasing"),
])
def test_bad_flags_are_one_line_errors_before_any_model_is_loaded(argv, message, capsys):
    assert cli.main(["importance", "--model", "/nonexistent/never/loaded", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@dataclass
class Knobs:
    count: int = option(3, "how many", minimum=1)
    share: float = option(0.5, "a share")
    kind: str = option("a", "which kind", choices=("a", "b"))
    kinds: tuple[str, ...] = option(("a",), "several kinds", choices=("a", "b", "c"), multiple=True)
    fast: bool = option(True, "take the fast path")
    pair: tuple[float, float] = option((1.0, 2.0), "a range", codec=floats(2))
    layers: str | None = option(None, "layers", codec=LAYERS)


def test_fields_parse_ui_and_cli_values_alike():
    ui = build_config(Knobs, {"count": 4.0, "share": 0.25, "kind": "b", "kinds": ["b", "c"], "fast": False,
                              "pair": "0,1", "layers": "all"})
    cli_text = build_config(Knobs, {"count": "4", "share": "0.25", "kind": "b", "kinds": "b,c", "fast": False,
                                    "pair": "0,1", "layers": " all "})
    assert ui == cli_text == Knobs(4, 0.25, "b", ("b", "c"), False, (0.0, 1.0), None)
    assert [p.flag for p in params(Knobs)] == ["--count", "--share", "--kind", "--kinds", "--no-fast", "--pair",
                                               "--layers"]


@pytest.mark.parametrize("values, message", [
    ({"count": 2.5}, "whole number"), ({"count": 0}, ">= 1"), ({"share": "lots"}, "takes a number"),
    ({"kind": "z"}, "one of a, b"), ({"kinds": "a,z"}, "any of a, b, c"), ({"pair": "1"}, "2 comma"),
    ({"layers": "x"}, "Bad layer token"), ({"share": float("inf")}, "finite")])
def test_bad_field_values_are_one_line_errors(values, message):
    with pytest.raises(AnatomyError, match=message) as info:
        build_config(Knobs, values)
    assert "\n" not in str(info.value)


def test_result_round_trips_through_the_run_folder_with_real_timings(tmp_path, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test")
    config = ImportanceConfig(layers="0-2")
    started = time.perf_counter()
    result = execute(IMPORTANCE, loaded, tiny_eval_set, config)
    elapsed = time.perf_counter() - started
    assert 0 < result.timings["run_s"] <= elapsed + 1e-3
    assert result.timings["run_s"] >= result.timings["ablations_s"]
    made = artefacts(IMPORTANCE, result, loaded, tiny_eval_set, config)
    assert "| layers " in made.markdown and "0-2" in made.markdown  # the parameter table, from the fields
    RunFolder(tmp_path / "run", "importance").write(result, made, loaded, tiny_eval_set, config)
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    assert payload["timings"]["total_s"] >= payload["timings"]["run_s"] == result.timings["run_s"]
    back = Result.load(tmp_path / "run", "importance")
    pd.testing.assert_frame_equal(back.table, result.table)
    assert back["baseline"] == pytest.approx(result["baseline"]) and back.source["run"] == str(tmp_path / "run")
    with pytest.raises(AnatomyError, match="not a budget run"):
        Result.load(tmp_path / "run", "budget")
    with pytest.raises(AnatomyError, match="not a finished run folder"):
        Result.load(tmp_path / "nothing-here", "importance")


def test_large_tables_live_in_their_csv_and_small_ones_are_also_inlined(tmp_path):
    big = pd.DataFrame({"layer": range(7_000), "component": ["q_proj"] * 7_000, "sv": [0.5] * 7_000})
    small = pd.DataFrame({"layer": [0, 1], "ppl": [3.0, 4.0]})
    result = Result("spectral", small, tables={"singular_values": big})
    RunFolder(tmp_path / "run", "spectral").write(result, Artefacts({}, "# r"), None, None, ImportanceConfig())
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    assert payload["tables"]["singular_values"] == {"csv": "singular_values.csv", "rows": 7_000}  # 21,000 cells
    assert payload["tables"]["spectral"] == [{"layer": 0, "ppl": 3.0}, {"layer": 1, "ppl": 4.0}]
    (tmp_path / "run" / "spectral.csv").unlink()  # a small table comes back from results.json alone
    back = Result.load(tmp_path / "run", "spectral")
    pd.testing.assert_frame_equal(back.tables["singular_values"], big)
    pd.testing.assert_frame_equal(back.table, small)
    (tmp_path / "run" / "singular_values.csv").unlink()
    with pytest.raises(AnatomyError, match="lacks singular_values.csv, which its results.json names"):
        Result.load(tmp_path / "run", "spectral")


def _reader(calls: list) -> Experiment:
    def run(model, eval_set, config, progress, importance=None, recovery=None):
        calls.append((importance, recovery))
        return Result("reader", pd.DataFrame({"x": [1]}))
    return Experiment(name="reader", title="Reader", summary="reads", config=Knobs, run=run,
                      artefacts=lambda *a: Artefacts({}, ""),
                      needs=(Need("importance", "an importance run"),
                             Need("recovery", "a recovery run", required=False, computable=False)))


def test_needs_come_from_a_result_a_folder_or_are_computed_or_refused(tmp_path):
    importance = Result("importance", pd.DataFrame({"layer": [0, 1], "class": ["Critical", "Minor"]}),
                        scalars={"baseline": {"ppl": 3.0}})
    folder = RunFolder(tmp_path / "imp", "importance")
    folder.write(importance, Artefacts({}, "# r"), None, None, ImportanceConfig())
    reader = _reader([])
    held = resolve_needs(reader, {"importance": importance})
    assert held == {"importance": importance, "recovery": None}
    read = resolve_needs(reader, {"importance": str(tmp_path / "imp")})
    pd.testing.assert_frame_equal(read["importance"].table, importance.table)
    computed = []
    out = resolve_needs(reader, {}, compute=lambda exp: computed.append(exp.name) or importance)
    assert computed == ["importance"] and out["importance"] is importance
    with pytest.raises(AnatomyError, match="Reader needs a importance result: run it first"):
        resolve_needs(reader, {}, missing=lambda need: "run it first")


def test_no_argparse_and_no_cli_imports_outside_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "anatomy").rglob("*.py")
                 if p.name not in {"cli.py", "__main__.py"} and re.search(r"^\s*(import argparse|from \.+ import cli|from \.+cli import)",
                                                      p.read_text(), re.M)]
    assert offenders == []


def test_tab_endpoints_take_the_declared_fields_in_order(monkeypatch):
    import inspect
    from types import SimpleNamespace

    from space.tabs import TABS

    def names() -> list[str]:
        return list(inspect.signature(TABS["Importance"].endpoint([SimpleNamespace(value=None)] * 9)).parameters)
    fields = ["model", "n_sentences", "custom_text", "max_length", "mode", "boundary", "layers", "thresholds", "tasks"]
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("ANATOMY_PUBLIC", "0")
    assert names() == [*fields, "state", "request", "progress"]  # locally no visitor token is read
    monkeypatch.setenv("ANATOMY_PUBLIC", "1")
    assert names() == [*fields, "state", "request", "oauth_token", "progress"]
