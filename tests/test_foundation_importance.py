"""The importance map on tiny models and through the CLI: rows, classes, conventions, run folder."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from anatomy import interventions as iv
from anatomy.errors import AnatomyError
from anatomy.evaluate import perplexity
from anatomy.experiments.importance import COLUMNS, ImportanceConfig, classify, run_importance
from conftest import make_tiny_model


def test_classify_thresholds():
    assert [classify(d) for d in (-5, 9.9, 10, 29.9, 30, 99.9, 100, 5000)] == [
        "Redundant", "Redundant", "Minor", "Minor", "Important", "Important", "Critical", "Critical"]
    assert classify(15, (20, 40, 80)) == "Redundant"


@pytest.mark.parametrize("mode", ["neighbour-mean", "skip", "zero"])
def test_map_rows_and_restore(arch, mode, tiny_eval_set):
    model = make_tiny_model(arch)
    before = iv.fingerprint(model)
    result = run_importance(model, tiny_eval_set, ImportanceConfig(mode=mode))
    df = result.table
    assert list(df.columns) == COLUMNS and list(df["layer"]) == list(range(6))
    assert df["degradation_pct"].notna().all()
    assert (df["degradation_low"] <= df["degradation_pct"] + 1e-9).all()
    assert (df["degradation_pct"] <= df["degradation_high"] + 1e-9).all()
    assert df["anti_layer_candidate"].equals(df["degradation_high"] < 0)
    assert iv.fingerprint(model) == before
    assert result["baseline"]["ppl"] == pytest.approx(perplexity(model, tiny_eval_set).ppl)


def test_prefix_cache_gives_the_same_map(tiny_eval_set):
    model = make_tiny_model("qwen2")
    fast = run_importance(model, tiny_eval_set, ImportanceConfig()).table
    slow = run_importance(model, tiny_eval_set, ImportanceConfig(use_prefix_cache=False)).table
    assert ((fast["ppl"] / slow["ppl"] - 1).abs() < 1e-4).all()


def test_untouched_boundary_convention(tiny_eval_set):
    result = run_importance(make_tiny_model("llama"), tiny_eval_set, ImportanceConfig(boundary="untouched"))
    df = result.table
    assert list(df.loc[df["class"] == "Untouched", "layer"]) == [0, 5]
    assert df.loc[[0, 5], "degradation_pct"].abs().max() == pytest.approx(0, abs=1e-9)
    assert result["boundary"] == "untouched"


def test_progress_callback_and_cancel_restore(tiny_eval_set):
    model = make_tiny_model("llama")
    before = iv.fingerprint(model)
    seen = []

    def callback(done, total, desc):
        seen.append((done, total))
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_importance(model, tiny_eval_set, ImportanceConfig(), progress=callback)
    assert seen == [(0, 6), (1, 6), (2, 6)]
    assert iv.fingerprint(model) == before


def test_bad_config_is_refused(tiny_eval_set):
    model = make_tiny_model("llama")
    with pytest.raises(AnatomyError, match="mode"):
        run_importance(model, tiny_eval_set, ImportanceConfig(mode="melt"))
    with pytest.raises(AnatomyError, match="thresholds"):
        run_importance(model, tiny_eval_set, ImportanceConfig(thresholds=(50, 30, 100)))
    with pytest.raises(AnatomyError, match="layers 0..5"):
        run_importance(model, tiny_eval_set, ImportanceConfig(layers=[9]))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "anatomy", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.slow
def test_cli_writes_run_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "model"
    make_tiny_model("gpt2").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["The cat sat on the warm mat near the door.", "Rain fell on the quiet town all day.",
                                "A library lends books to its members."]))
    out = tmp_path / "run"
    proc = _cli("importance", "--model", str(folder), "--text-file", str(texts), "--out", str(out),
                "--mode", "zero", "--layers", "1-3")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"importance.csv", "importance.png", "report.md", "results.json"}
    table = pd.read_csv(out / "importance.csv")
    assert list(table["layer"]) == [1, 2, 3] and set(table["mode"]) == {"zero"}
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["source"] == "folder" and results["config"]["mode"] == "zero"
    assert results["eval_set"]["num_texts"] == 3
    assert results["environment"]["transformers"]
    assert len(results["tables"]["importance"]) == 3
    assert "Spearman" in (out / "report.md").read_text()


@pytest.mark.slow
def test_cli_errors_are_one_line_messages(tmp_path):
    proc = _cli("importance", "--model", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: GGUF file")
    assert "Traceback" not in proc.stderr
    help_text = _cli("importance", "--help").stdout
    assert "--boundary" in help_text and "--text-file" in help_text
