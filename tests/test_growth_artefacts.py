"""End to end on the tiny preset: CLI -> checkpoint folder -> load-back with nothing of ours -> upload."""

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from growth_models import hub, train
from growth_helpers import write_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("text") / "verse.txt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("ckpt") / "growth"
    rc = train.main(["--schedule", "growth", "--preset", "tiny", "--steps", "18", "--seed", "0",
                     "--out", str(out), "--train-file", str(text_file)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_checkpoint_folder_holds_every_artefact(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_growth.py", "modeling_growth.py", "tokenizer.json",
            "curves.png", "README.md", "growth_plan.json", "history.csv", "phases.csv", "spectra.csv",
            "spectra.png"} <= names
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_growth.GrowthConfig",
                                  "AutoModelForCausalLM": "modeling_growth.GrowthForCausalLM"}
    assert config["layer_roles"] == "R C C R C C R M C C M R".split()
    card = ModelCard.load(checkpoint / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
    assert "growth-transformer" in card.data.tags and card.data.datasets == ["text-file"]
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert set(metrics) == {"loss", "perplexity"}
    assert abs(metrics["perplexity"] - 2.718281828 ** metrics["loss"]) / metrics["perplexity"] < 1e-2


def outside(entries: list[str], repo: str) -> list[str]:
    """`entries` (a sys.path) without the working folder and every entry inside `repo`, compared as resolved
    paths: a prefix test on strings also dropped a virtual environment beside it named `<repo>-venv`."""
    from pathlib import Path  # here, not at the top: the load-back interpreter runs this function's source alone
    root = Path(repo).resolve()
    return [p for p in entries if p not in ("", ".") and not Path(p).resolve().is_relative_to(root)]


def test_outside_drops_the_repository_and_keeps_a_virtual_environment_beside_it(tmp_path):
    repo = tmp_path / "anatomy"
    (repo / "tests").mkdir(parents=True)
    (tmp_path / "link").symlink_to(repo)
    kept = [str(tmp_path / "anatomy-venv" / "lib" / "site-packages"), str(tmp_path / "anatomy2"), "/usr/lib/python3"]
    dropped = ["", ".", str(repo), str(repo / "tests"), str(tmp_path / "link" / "tests"), f"{repo}/../anatomy/x"]
    assert outside([*dropped[:3], kept[0], *dropped[3:], *kept[1:]], str(repo)) == kept


LOAD_BACK = textwrap.dedent(inspect.getsource(outside)) + textwrap.dedent("""
    import sys
    sys.path = outside(sys.path, {repo!r})
    import json, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import growth_models
        raise SystemExit("growth_models is importable; the test would prove nothing")
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained({folder!r}, trust_remote_code=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained({folder!r})
    ids = torch.tensor([tok("Good morrow, my lord").input_ids])
    with torch.no_grad():
        logits = model(ids).logits
    cached = model.generate(ids, max_new_tokens=10, do_sample=False, use_cache=True)
    plain = model.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False)
    torch.save({{"ids": ids, "logits": logits, "cached": cached, "plain": plain,
                "module": type(model).__module__}}, {result!r})
""")


def load_back(folder: Path, tmp_path: Path) -> dict:
    """Load `folder` in a fresh interpreter whose sys.path excludes this repository."""
    result = tmp_path / "result.pt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    code = LOAD_BACK.format(repo=str(REPO), folder=str(folder), result=str(result))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(result)


def in_memory_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from growth_models.modeling_growth import GrowthForCausalLM

    model = GrowthForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
def test_load_back_without_this_repository(checkpoint, tmp_path):
    out = load_back(checkpoint, tmp_path)
    assert out["module"].startswith("transformers_modules")  # the shipped code, not ours
    torch.testing.assert_close(out["logits"], in_memory_logits(checkpoint, out["ids"]), atol=1e-5, rtol=1e-5)
    assert out["cached"].shape[1] == out["ids"].shape[1] + 10
    assert torch.equal(out["cached"], out["plain"])


def test_trained_model_logits_equal_the_saved_ones(tmp_path, text_file):
    """The model in memory right after training, not a reload of it, against the saved folder."""
    preset = train.PRESETS["tiny"]
    data = train.load_data(preset, str(text_file))
    plan = train.load_plan()
    result = train.run_training("uniform", preset, data, plan, preset.train_config(8, 1), spectra=False)
    result.model.save_pretrained(tmp_path / "u")
    ids = data.validation[:2]
    with torch.no_grad():
        expected = result.model(ids).logits
    torch.testing.assert_close(in_memory_logits(tmp_path / "u", ids), expected)


@pytest.mark.slow
def test_push_to_hub_replaces_only_the_http_hop(checkpoint, tmp_path, monkeypatch, capsys):
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw, self.token)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, **kw):
        calls["upload"] = (folder_path, repo_id, kw)
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    url = hub.push_folder(checkpoint, "alice/growth-tiny")
    assert url.endswith("/commit/abc")
    assert calls["create"][0] == "alice/growth-tiny" and calls["create"][1]["exist_ok"] is True
    assert calls["create"][2] == "hf_secret_token_123"
    folder, repo, kw = calls["upload"]
    assert repo == "alice/growth-tiny" and kw["repo_type"] == "model"
    assert "hf_secret_token_123" not in capsys.readouterr().out
    out = load_back(Path(folder), tmp_path)  # what would be uploaded really loads
    assert out["cached"].shape[1] > out["ids"].shape[1]


@pytest.mark.slow
def test_upload_errors_hide_the_token(checkpoint, monkeypatch):
    def boom(self, repo_id, **kw):
        raise RuntimeError(f"401 for token {self.token}")

    monkeypatch.setattr(HfApi, "create_repo", boom)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    with pytest.raises(hub.AnatomyError) as err:
        hub.push_folder(checkpoint, "alice/growth-tiny")
    assert "hf_secret_token_123" not in str(err.value) and "HF_TOKEN" in str(err.value)
    with pytest.raises(hub.AnatomyError, match="USER/REPO"):
        hub.push_folder(checkpoint, "not a repo")


@pytest.mark.parametrize("extra, message", [
    (["--train-file", "/nonexistent/file.txt"], "no such file"),
    (["--budget", "/nonexistent/budget.json"], "no such file"),
])
def test_cli_bad_input_exits_with_a_message(tmp_path, capsys, extra, message, text_file):
    args = ["--schedule", "growth", "--preset", "tiny", "--steps", "6", "--out", str(tmp_path / "o")]
    if "--train-file" not in extra:
        args += ["--train-file", str(text_file)]
    assert train.main(args + extra) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--schedule", "sideways", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        train.main(["--schedule", "growth", "--steps", "0", "--out", str(tmp_path)])
    assert "--steps must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused before any training
        train.main(["--schedule", "growth", "--out", str(tmp_path), "--push-to-hub", "bad repo"])
    assert "expected USER/REPO" in capsys.readouterr().err
