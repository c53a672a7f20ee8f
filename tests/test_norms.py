"""The norms experiment: the Frobenius norms of the real parameters, one row per layer, a run folder from the
command line without any evaluation text, and the README's listing of it, which is the file itself."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

from anatomy import cli, work
from anatomy.experiment import Result, registry
from anatomy.experiments.norms import EXPERIMENT, NormsConfig, headline, run_norms
from tests.conftest import make_tiny_model
from tests.families import make_family_model

ROOT = Path(__file__).resolve().parents[1]
FILES = ["norms.csv", "norms.png", "report.md", "results.json"]


def frobenius(weight: torch.Tensor) -> float:
    return float(torch.linalg.norm(weight.detach()))


def test_the_norms_are_those_of_the_real_parameters_one_row_per_layer():
    model = make_tiny_model("llama", layers=4)
    table = run_norms(model).table
    assert table["layer"].tolist() == [0, 1, 2, 3] and set(table["module"]) == {"LlamaDecoderLayer"}
    layers = model.model.layers
    assert table.loc[1, "self_attn.q_proj"] == pytest.approx(frobenius(layers[1].self_attn.q_proj.weight))
    assert table.loc[3, "mlp.down_proj"] == pytest.approx(frobenius(layers[3].mlp.down_proj.weight))
    relative = run_norms(model, None, NormsConfig(layers="1,3", relative=True)).table
    assert relative["layer"].tolist() == [1, 3]
    down = layers[3].mlp.down_proj.weight  # 32 x 64: the norm over the square root of 2048 entries
    assert relative.loc[1, "mlp.down_proj"] == pytest.approx(frobenius(down) / math.sqrt(2048))


def test_a_fused_matrix_is_read_through_its_slice_and_a_hybrid_layer_lacks_what_it_lacks():
    gpt2 = make_tiny_model("gpt2", layers=3)
    key = gpt2.transformer.h[2].attn.c_attn.weight[:, 32:64]  # GPT-2's fused (in, 3 * hidden) Conv1D: K's columns
    assert run_norms(gpt2).table.loc[2, "self_attn.k_proj"] == pytest.approx(frobenius(key))
    hybrid = run_norms(make_family_model("lfm2")).table  # convolution, attention, convolution, attention
    assert len(hybrid) == 4 and hybrid["self_attn.q_proj"].isna().tolist() == [True, False, True, False]
    matrices = int(hybrid.drop(columns=["layer", "module"]).notna().sum().sum())
    assert matrices < 4 * (hybrid.shape[1] - 2)  # the empty cells are no matrices: the headline counts the others
    assert headline(Result("norms", hybrid)).startswith(f"{matrices} matrices: ")


def readme_listing() -> tuple[str, int, str, list[str]]:
    """The README's listing of norms.py, the line count it states, its command and the files it says it writes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    intro = re.search(r"The whole of `anatomy/experiments/norms.py` \((\d+) lines; `([^`]+)` writes (.*?) to runs/norms"
                      r".*?\n\n```python\n(.*?)```", readme, flags=re.S)
    assert intro, "README.md no longer lists anatomy/experiments/norms.py"
    files = re.findall(r"[a-z]+\.(?:csv|png|md|json)", intro.group(3))
    return intro.group(4), int(intro.group(1)), " ".join(intro.group(2).split()), files


def test_the_readme_lists_the_file_itself():
    listing, lines, _, _ = readme_listing()
    code = (ROOT / "anatomy" / "experiments" / "norms.py").read_text(encoding="utf-8")
    assert listing == code  # paste the file again when it changes
    assert lines == len(code.splitlines())


@pytest.mark.embedded
def test_the_readme_command_writes_its_run_folder_without_any_evaluation_text(tmp_path, monkeypatch, capsys):
    _, _, command, files = readme_listing()
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "anatomy", "norms"] and files == FILES

    def no_text(*args, **kwargs):
        raise AssertionError("norms read an evaluation text")

    monkeypatch.setattr(cli, "eval_set_from_args", no_text)
    monkeypatch.setattr(cli, "resolve_eval_texts", no_text)
    assert cli.main([*argv[3:], "--out", str(tmp_path / "run")]) == 0  # the README's command, on the embedded model
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(FILES)
    out = capsys.readouterr().out
    assert "21 matrices: the largest norm is layers." in out  # layers 0-2 of seven components, the headline
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    assert payload["eval_set"] is None and payload["config"] == {"layers": "0-2", "relative": True}
    back = Result.load(tmp_path / "run", "norms")
    norms = back.table.drop(columns=["layer", "module"])
    assert back.table["layer"].tolist() == [0, 1, 2] and norms.shape == (3, 7) and norms.lt(1).all(None)  # relative
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Frobenius norm / sqrt(size) by layer" in report and "layer | module" in report and "--relative" in report


def test_norms_is_a_registered_weights_only_command():
    assert registry()["norms"] is EXPERIMENT and not EXPERIMENT.uses_eval
    flags = cli.build_parser().parse_args(["norms", "--layers", "1", "--relative"])
    assert cli.config_from_args(EXPERIMENT, flags) == NormsConfig(layers="1", relative=True)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["norms", "--text-file", "x.txt"])  # no evaluation-text flags at all
    shape = work.shape_of(make_tiny_model("llama", layers=4), None)
    assert EXPERIMENT.work(NormsConfig(), shape) == pytest.approx(4 * EXPERIMENT.work(NormsConfig(layers="2"), shape))
