"""Models that ship their own code: that code never runs, and the user gets one line, not a traceback.

Every custom-code file written here creates a marker file when Python imports it, so `trust_remote_code=True`
creeping into any loader (folder, Hub, CLI) makes these tests fail.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anatomy import load
from anatomy.errors import AnatomyError
from anatomy.load import check_hub_model, load_model, refuse_custom_code
from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
AUTO_MAP = {"AutoConfig": "configuration_marker.MarkerConfig",
            "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM"}


def _write_marker_code(folder: Path, marker: Path) -> None:
    """configuration_marker.py and modeling_marker.py that leave `marker` behind when imported."""
    touch = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (folder / "configuration_marker.py").write_text(
        touch + "from transformers import LlamaConfig\n\n"
        "class MarkerConfig(LlamaConfig):\n    model_type = 'marker-lm'\n")
    (folder / "modeling_marker.py").write_text(
        touch + "from transformers import LlamaForCausalLM\n"
        "from .configuration_marker import MarkerConfig\n\n"
        "class MarkerForCausalLM(LlamaForCausalLM):\n    config_class = MarkerConfig\n")


def _patch_config(folder: Path, **fields) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "custom-code-ran"


@pytest.fixture
def llama_folder(tmp_path, tiny_tokenizer, marker) -> Path:
    """A tiny Llama saved as a standard folder, with marker code beside it."""
    folder = tmp_path / "model"
    make_tiny_model("llama", layers=2).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    _write_marker_code(folder, marker)
    return folder


@pytest.fixture
def custom_folder(llama_folder) -> Path:
    """A folder whose model type only its own code defines."""
    _patch_config(llama_folder, model_type="marker-lm", architectures=["MarkerForCausalLM"], auto_map=AUTO_MAP)
    return llama_folder


def test_marker_code_really_writes_the_marker(custom_folder, marker):
    """The trap works: importing the shipped code (as trust_remote_code=True would) leaves the marker."""
    from transformers import AutoConfig

    AutoConfig.from_pretrained(custom_folder, trust_remote_code=True)
    assert marker.exists()


def test_custom_model_type_is_refused_in_one_line(custom_folder, marker):
    with pytest.raises(AnatomyError, match="needs custom code") as caught:
        load_model(str(custom_folder))
    assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.slow
def test_cli_prints_one_line_and_never_runs_the_code(custom_folder, marker, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "anatomy", "importance", "--model", str(custom_folder),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs custom code" in errors[0], result.stderr
    assert not marker.exists() and not out.exists()


def test_known_model_type_with_auto_map_loads_the_library_class(llama_folder, marker):
    """Like Phi-3 on the Hub: an auto_map beside a model type transformers knows is ignored, never imported."""
    _patch_config(llama_folder, auto_map=AUTO_MAP)
    loaded = load_model(str(llama_folder))
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def test_custom_tokenizer_code_is_refused(llama_folder, marker):
    path = llama_folder / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text())
    tokenizer_config.update(tokenizer_class="MarkerTokenizer",
                            auto_map={"AutoTokenizer": ["tokenization_marker.MarkerTokenizer", None]})
    path.write_text(json.dumps(tokenizer_config))
    (llama_folder / "tokenization_marker.py").write_text(f"open({str(marker)!r}, 'a').write('tok')\n")
    with pytest.raises(AnatomyError, match="tokenizer .* needs custom code"):
        load_model(str(llama_folder))
    assert not marker.exists()


@pytest.mark.parametrize("config", [[], "llama", None, {}, {"model_type": 7}, {"model_type": "x" * 10_000}])
def test_malformed_configs_get_one_line(config):
    with pytest.raises(AnatomyError) as caught:
        refuse_custom_code(config, "m")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


class _Sibling:
    def __init__(self, name: str, size: int = 100):
        self.rfilename, self.size = name, size


class _Info:
    def __init__(self, folder: Path):
        self.sha = "0" * 40
        self.siblings = [_Sibling(p.name, p.stat().st_size) for p in folder.iterdir()]
        self.safetensors = None
        self.card_data = None  # as a real ModelInfo without a model card


@pytest.fixture
def fake_hub(monkeypatch):
    """Serve one folder as the Hub repo 'owner/custom': only the HTTP hop is replaced."""
    from huggingface_hub import HfApi
    import huggingface_hub

    def serve(folder: Path) -> None:
        monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: _Info(folder))
        monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                            lambda repo_id, filename, **kw: str(folder / filename))
    return serve


def test_hub_model_with_custom_code_is_refused_from_its_config(custom_folder, marker, fake_hub):
    fake_hub(custom_folder)
    with pytest.raises(AnatomyError, match="'owner/custom' needs custom code"):
        check_hub_model("owner/custom")
    assert not marker.exists()


def test_hub_model_with_known_type_passes_the_check(llama_folder, marker, fake_hub):
    _patch_config(llama_folder, auto_map=AUTO_MAP)
    fake_hub(llama_folder)
    assert check_hub_model("owner/custom").model_type == "llama"
    assert not marker.exists()


def test_hub_config_download_failure_is_one_line(llama_folder, fake_hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    fake_hub(llama_folder)
    for failure in (OSError("Connection reset by peer"), EntryNotFoundError("404 config.json")):
        def fail(repo_id, filename, _failure=failure, **kw):
            raise _failure
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
        with pytest.raises(AnatomyError, match="Could not download config.json") as caught:
            check_hub_model("owner/custom")
        assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ embedded cache

@pytest.fixture
def fake_embedded(monkeypatch, tmp_path, tiny_tokenizer):
    """The embedded loader with the 25 s GGUF dequantisation replaced by a tiny model (cache under tmp_path)."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("TRANSFORMER_ANATOMY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(load, "embedded_gguf_path", lambda: gguf)
    calls = []

    def fake_gguf(path, dtype):
        calls.append(path)
        return make_tiny_model("llama", layers=2), tiny_tokenizer
    monkeypatch.setattr(load, "_load_gguf", fake_gguf)
    return load._embedded_cache_folder(gguf, load.torch.float32), calls


def test_first_load_caches_and_leaves_no_tmp(fake_embedded):
    folder, calls = fake_embedded
    load._load_embedded(load.torch.float32)
    load._load_embedded(load.torch.float32)
    assert len(calls) == 1  # the second load read the cache
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_lost_race_keeps_the_winners_folder(fake_embedded, tmp_path):
    folder, _ = fake_embedded
    load._load_embedded(load.torch.float32)
    winner = (folder / "model.safetensors").stat().st_mtime_ns
    tmp = folder.with_name(folder.name + ".tmp1")
    shutil.copytree(folder, tmp)
    load._publish(tmp, folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == winner


def test_incomplete_cache_folder_is_replaced(fake_embedded):
    folder, calls = fake_embedded
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a half folder, say from an older version
    load._load_embedded(load.torch.float32)
    assert load._is_complete(folder) and len(calls) == 1


def test_stale_tmp_folders_are_removed(fake_embedded):
    folder, _ = fake_embedded
    dead = folder.with_name(folder.name + ".tmp999999999")  # no such pid
    alive = folder.with_name(folder.name + f".tmp{os.getppid()}")  # a running process, maybe still writing
    dead.mkdir(parents=True)
    alive.mkdir()
    load._load_embedded(load.torch.float32)
    assert not dead.exists() and alive.exists()


def test_cache_failure_is_logged_not_hidden(fake_embedded, monkeypatch, caplog):
    folder, _ = fake_embedded
    from transformers import PreTrainedModel

    def full_disk(self, path, **kw):
        Path(path).mkdir(parents=True)
        (Path(path) / "partial").write_text("x")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    with caplog.at_level(logging.WARNING, logger="anatomy.load"):
        model, _ = load._load_embedded(load.torch.float32)
    assert model is not None
    assert "No space left on device" in caplog.text
    assert not folder.exists() and list(folder.parent.iterdir()) == []
