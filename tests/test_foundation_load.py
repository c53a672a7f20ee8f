"""Model loading: local folders load safely; unusable or unsafe models are refused with a clear message."""

import ctypes
import json
import re

import psutil
import pytest
import torch
from transformers import BertConfig, T5Config

from anatomy.errors import AnatomyError
from anatomy.load import available_memory, check_fits, check_hub_model, is_causal_lm_config, load_model
from anatomy.model_spec import REFUSED, parse_model_spec
from conftest import make_tiny_model


@pytest.fixture
def tiny_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "tiny"
    make_tiny_model("gpt2").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_local_folder_loads_without_remote_code(tiny_folder):
    loaded = load_model(str(tiny_folder))
    assert loaded.source == "folder" and loaded.model.config.model_type == "gpt2"
    assert not loaded.model.training
    assert loaded.tokenizer.pad_token is not None
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_pickle_only_folder_is_refused(tmp_path, tiny_tokenizer):
    folder = tmp_path / "pickled"
    model = make_tiny_model("llama")
    model.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(AnatomyError, match="pickle"):
        load_model(str(folder))


@pytest.mark.parametrize("config", [BertConfig(architectures=["BertForMaskedLM"]), T5Config()])
def test_non_causal_model_is_refused(tmp_path, config):
    assert not is_causal_lm_config(config)
    config.save_pretrained(tmp_path)
    with pytest.raises(AnatomyError, match="not a causal"):
        load_model(str(tmp_path))


def test_bad_specs(tmp_path):
    with pytest.raises(AnatomyError, match="No model"):
        load_model("  ")
    with pytest.raises(AnatomyError, match="config.json"):
        load_model(str(tmp_path))
    with pytest.raises(AnatomyError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(AnatomyError, match="neither"):
        load_model("./no/such/folder")


def test_one_function_says_what_a_spec_names(tiny_folder):
    assert parse_model_spec(" embedded ").kind == "embedded"
    assert parse_model_spec(str(tiny_folder)).kind == "folder"
    assert parse_model_spec("owner/name").kind == "hub"
    for spec in ("a/b/c", "./owner", "owner", str(tiny_folder / "config.json")):
        with pytest.raises(AnatomyError, match="neither"):
            parse_model_spec(spec)
    assert parse_model_spec("owner/name", local=False).kind == "hub"
    for spec in (str(tiny_folder), "", "a/b/c"):  # a public visitor: no path is looked at, existing or not
        with pytest.raises(AnatomyError, match=re.escape(REFUSED)):
            parse_model_spec(spec, local=False)


@pytest.mark.parametrize("spec", ["~no-such-user-here/x", "a" * 400, "/tmp/" + "b" * 400 + ".gguf"])
def test_paths_the_file_system_cannot_look_up_give_one_line(spec):
    with pytest.raises(AnatomyError, match="neither a model folder") as info:
        load_model(spec)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_too_large_is_refused_before_loading():
    with pytest.raises(AnatomyError, match="too large"):
        check_fits(10**13, torch.float32, torch.device("cpu"), "giant")
    check_fits(10, torch.float32, torch.device("cpu"), "tiny")


def test_hub_lookup_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AnatomyError, match="embedded"):
        check_hub_model("someone/some-model")


def test_config_of_saved_folder_is_plain_json(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    assert "auto_map" not in config  # nothing here would need trust_remote_code


def test_memory_this_process_freed_counts_as_available():
    """glibc keeps the heap a process frees; `available_memory` hands it back before it measures, so a recovery
    that runs after other experiments plans its batch of fine-tunes from the memory that is really free."""
    libc = ctypes.CDLL(None)
    if getattr(libc, "malloc_trim", None) is None:
        pytest.skip("not glibc: its allocator's freed heap is not handed back this way")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(4096):  # 256 MiB in 64 KiB blocks (below the mmap threshold: the heap), every page written
        blocks.append(libc.malloc(65536))
        ctypes.memset(blocks[-1], 1, 65536)
    # every other block freed, each between live ones as after an experiment: none joins the heap's top, which
    # glibc would trim by itself
    freed, kept = blocks[::2], blocks[1::2]
    for block in freed:
        libc.free(block)
    held = psutil.Process().memory_info().rss
    available_memory(torch.device("cpu"))
    released = held - psutil.Process().memory_info().rss
    for block in kept:
        libc.free(block)
    assert released > 64 * 2**20  # of the 128 MiB freed
