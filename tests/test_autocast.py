"""`--autocast`: float32 weights computed in bfloat16 under torch.autocast, for every run of a model, recorded in
results.json, report.md, study.md and the study's resume key; float16 training gets a gradient scaler."""

from __future__ import annotations

import json

import pytest
import torch

from anatomy import study
from anatomy.errors import AnatomyError
from anatomy.experiment import get
from anatomy.experiments.recovery import RecoveryConfig, run_recovery
from anatomy.interventions import fingerprint
from anatomy.load import LoadedModel, resolve_autocast
from anatomy.report import RunFolder
from anatomy.run import artefacts, execute
from anatomy.train_layer import grad_scaler
from tests.conftest import make_tiny_model

CPU = torch.device("cpu")


def test_autocast_resolves_over_float32_weights_only():
    assert resolve_autocast(None, CPU, torch.float32) is None
    assert resolve_autocast("bfloat16", CPU, torch.float32) is torch.bfloat16
    with pytest.raises(AnatomyError, match="--dtype float32"):
        resolve_autocast("bfloat16", CPU, torch.bfloat16)
    with pytest.raises(AnatomyError, match="Unknown autocast"):
        resolve_autocast("int8", CPU, torch.float32)


def test_every_model_command_and_the_study_take_the_flag():
    from anatomy.cli import build_parser
    from anatomy.experiment import registry

    parser = build_parser()
    for name, experiment in registry().items():
        if experiment.uses_model:
            assert parser.parse_args([name, "--autocast", "bfloat16"]).autocast == "bfloat16"
    assert parser.parse_args(["study", "--autocast", "bfloat16"]).autocast == "bfloat16"
    assert parser.parse_args(["study"]).autocast is None
    with pytest.raises(SystemExit):
        parser.parse_args(["study", "--autocast", "int8"])


def test_the_gradient_scaler_acts_under_float16_autocast_only():
    model = make_tiny_model("llama", layers=2)
    assert not grad_scaler(model).is_enabled()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not grad_scaler(model).is_enabled()
    with torch.autocast("cpu", dtype=torch.float16):
        assert grad_scaler(model).is_enabled()


def test_a_run_under_autocast_computes_in_bfloat16_and_says_so(tmp_path, tiny_tokenizer, tiny_eval_set):
    """The same importance run in float32 and under bfloat16: PPLs close but not equal, weights float32 and
    unchanged, and results.json and report.md say which one each was."""
    model = make_tiny_model("llama", layers=3)
    before = fingerprint(model)
    experiment = get("importance")
    config = experiment.config(mode="zero")
    tables, records = {}, {}
    for name, autocast in (("float32", None), ("bfloat16", torch.bfloat16)):
        loaded = LoadedModel(model, tiny_tokenizer, "tiny", "test", autocast=autocast)
        result = execute(experiment, loaded, tiny_eval_set, config)
        folder = RunFolder(tmp_path / name, "importance")
        folder.write(result, artefacts(experiment, result, loaded, tiny_eval_set, config), loaded, tiny_eval_set,
                     config)
        tables[name] = result.table["ppl"].to_numpy()
        records[name] = (json.loads((folder.path / "results.json").read_text())["model"],
                         (folder.path / "report.md").read_text())
    assert fingerprint(model) == before and next(model.parameters()).dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa; the tiny random model's large weights (std 0.2) amplify that to ~10%
    assert tables["bfloat16"] == pytest.approx(tables["float32"], rel=0.15)
    assert not (tables["bfloat16"] == tables["float32"]).all()
    assert records["float32"][0]["autocast"] is None and "autocast" not in records["float32"][1]
    assert records["bfloat16"][0]["autocast"] == "bfloat16" and records["bfloat16"][0]["dtype"] == "torch.float32"
    assert "computed under torch.autocast in bfloat16" in records["bfloat16"][1]


def test_in_place_edits_take_effect_under_autocast(tiny_eval_set, tiny_tokenizer):
    """A layer zeroed in place inside the run's autocast region moves the PPL as in float32: autocast's cache
    of cast weights, which would keep the unedited cast, is off between edits (each perplexity turns it on for
    itself and empties it when it ends)."""
    from anatomy.evaluate import perplexity
    from anatomy.interventions import zero
    from anatomy.layers import LayerAdapter

    model = make_tiny_model("llama", layers=3)
    ppl = {}
    for name, autocast in (("float32", None), ("bfloat16", torch.bfloat16)):
        with LoadedModel(model, tiny_tokenizer, "tiny", "test", autocast=autocast).compute():
            base = perplexity(model, tiny_eval_set).ppl
            with zero(LayerAdapter(model), [1]):
                ppl[name] = perplexity(model, tiny_eval_set).ppl / base
    assert abs(ppl["float32"] - 1) > 0.05
    assert abs(ppl["bfloat16"] - ppl["float32"]) < 0.25 * abs(ppl["float32"] - 1)


def test_recovery_trains_float32_weights_under_autocast(tiny_eval_set, tiny_tokenizer):
    """The batched fine-tunes under bfloat16 autocast follow the float32 ones (noise and every optimizer step
    seen); the model is restored."""
    model = make_tiny_model("llama", layers=3)
    before = fingerprint(model)
    config = RecoveryConfig(layers=[0, 2], steps=6, eval_every=3, train_batch_size=2, train_seq_len=16, lr=1e-2,
                            control=True)
    rows = torch.randint(3, 320, (40, 16), generator=torch.Generator().manual_seed(1))
    curves = {}
    for name, autocast in (("float32", None), ("bfloat16", torch.bfloat16)):
        with LoadedModel(model, tiny_tokenizer, "tiny", "test", autocast=autocast).compute():
            curves[name] = run_recovery(model, tiny_eval_set, config, train_rows=rows)["recovery_curves"]
    assert fingerprint(model) == before
    moved = {name: (c.groupby("layer")["ppl"].last() / c.groupby("layer")["ppl"].first()).to_numpy()
             for name, c in curves.items()}
    assert (abs(moved["float32"] - 1) > 0.02).all()  # training changes the PPL ...
    assert moved["bfloat16"] == pytest.approx(moved["float32"], rel=0.02)  # ... and as much under bfloat16
    assert curves["bfloat16"]["ppl"].to_numpy() == pytest.approx(curves["float32"]["ppl"].to_numpy(), rel=0.15)


def test_the_study_records_autocast_and_reruns_a_float32_step(tmp_path, tiny_tokenizer, tiny_eval_set):
    model = make_tiny_model("llama", layers=3)
    steps = study.plan(["importance"], {"importance": {"mode": "zero"}})
    plain = LoadedModel(model, tiny_tokenizer, "tiny", "test")
    half = LoadedModel(model, tiny_tokenizer, "tiny", "test", autocast=torch.bfloat16)
    study.run_study(steps, plain, tiny_eval_set, tmp_path)
    assert study.run_study(steps, half, tiny_eval_set, tmp_path).reused == []  # not float32's numbers
    done = study.run_study(steps, half, tiny_eval_set, tmp_path)
    assert done.reused == ["importance"]
    markdown = study.write_report(done, half, tiny_eval_set, tmp_path, {})
    assert "- Compute: weights float32, autocast bfloat16 (torch.autocast)" in markdown
    assert "autocast off" in study.write_report(study.run_study(steps, plain, tiny_eval_set, tmp_path), plain,
                                                tiny_eval_set, tmp_path, {})


def test_a_stored_run_stands_for_a_command_only_with_the_same_autocast():
    """--from-hub: a float32 run (results.json written before the field existed, or with it null) does not
    stand for an --autocast command, and an autocast run does not stand for a float32 one."""
    from anatomy import atlas
    from anatomy.cli import build_parser, expected_key

    parser = build_parser()
    half = expected_key(parser.parse_args(["importance", "--autocast", "bfloat16"]), None)
    plain = expected_key(parser.parse_args(["importance"]), None)
    for model in ({"dtype": "torch.float32"}, {"dtype": "torch.float32", "autocast": None}):
        stored = atlas.stored_key({"model": model})
        assert [d for d in atlas.differences(stored, half) if d.startswith("autocast")]
        assert not [d for d in atlas.differences(stored, plain) if d.startswith("autocast")]
    stored = atlas.stored_key({"model": {"dtype": "torch.float32", "autocast": "bfloat16"}})
    assert [d for d in atlas.differences(stored, plain) if d.startswith("autocast")]
    assert not [d for d in atlas.differences(stored, half) if d.startswith("autocast")]
