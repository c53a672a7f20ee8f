"""The comparison run folder on the tiny preset: every table, figure and the report."""

import json

import pandas as pd
import pytest

from growth_models import compare
from growth_helpers import write_text


@pytest.mark.slow
def test_compare_writes_an_honest_run_folder(tmp_path):
    text = write_text(tmp_path / "verse.txt")
    out = tmp_path / "run"
    assert compare.main(["--preset", "tiny", "--seeds", "2", "--steps", "12", "--out", str(out),
                         "--train-file", str(text)]) == 0
    for name in ("results.json", "runs.csv", "curves.csv", "phases.csv", "spectra.csv", "curves.png",
                 "spectra_growth.png", "spectra_uniform.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["config"].unique()) == ["growth", "growth-50%", "uniform"]
    assert dict(zip(runs["config"], runs["steps"])) == {"growth": 12, "growth-50%": 6, "uniform": 12}
    assert runs.groupby("config")["seed"].nunique().eq(2).all()
    curves = pd.read_csv(out / "curves.csv")
    assert {"step", "val_loss", "train_seconds", "config", "seed"} <= set(curves.columns)
    results = json.loads((out / "results.json").read_text())
    assert len(results["generations"]["prompts"]) == 12
    assert all(len(results["generations"][c]) == 12 for c in ("growth", "growth-50%", "uniform"))
    report = (out / "report.md").read_text()
    assert "±" in report and "## Result" in report and "uniform at same seconds" in report
    assert "growth-50%" in report and "FFN width" in report
    loaded = (out / "models" / "growth" / "model.safetensors").exists()
    assert loaded
