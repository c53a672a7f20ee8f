"""Large models: dtype auto, accelerate's device map (CPU and disk offload), the memory check before any
download, and quantised checkpoints refused before loading."""

import json

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.hf_api import ModelInfo
from safetensors.torch import load_file

from anatomy import cli, offload
from anatomy.errors import AnatomyError
from anatomy.evaluate import EvalSet, PrefixCache, perplexity
from anatomy.experiments.importance import ImportanceConfig, run_importance
from anatomy.experiments.recovery import RecoveryConfig, run_recovery
from anatomy.interventions import fingerprint, intervention
from anatomy.layers import LayerAdapter
from anatomy.load import Placement, check_hub_model, config_parameters, load_model, resolve_dtype
from anatomy.plans import apply_plan, parse_plan
from anatomy.report import RunFolder
from anatomy.surgery import build_layer_stack, save_model
from anatomy.texts import default_eval_texts
from conftest import make_tiny_model

# 6 layers of 32x32 attention and 32x64 MLP in float32 are ~30 KB each; the embeddings are ~40 KB. 200 KB of
# "CPU" holds the embeddings and three layers: accelerate sends the other three, the norm and the head to disk.
CPU_LIMIT = "200KB"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def tiny_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "tiny-llama"
    make_tiny_model("llama", layers=6).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def spread(tiny_folder, tmp_path):
    """The tiny Llama spread by accelerate over the CPU and the disk."""
    placement = Placement("auto", {"cpu": CPU_LIMIT}, str(tmp_path / "offload"))
    return load_model(str(tiny_folder), dtype="auto", placement=placement)


def _eval_set(loaded):
    return EvalSet.from_texts(default_eval_texts()[:12], loaded.tokenizer, name="tiny", batch_size=5,
                              device=offload.input_device(loaded.model))


def test_device_map_puts_layers_on_two_devices(spread):
    devices = {spread.model.hf_device_map.get(f"model.layers.{i}") for i in range(6)}
    assert devices == {"cpu", "disk"}
    assert offload.placement(spread.model)["disk"] >= 3
    offloaded = spread.model.model.layers[5].self_attn.q_proj.weight
    assert offloaded.device.type == "meta"  # accelerate keeps the real weight on disk


@pytest.mark.parametrize("mode", ["neighbour-mean", "zero", "skip"])
def test_importance_map_with_disk_offload_equals_plain_load(tiny_folder, spread, mode):
    plain = load_model(str(tiny_folder))
    before = fingerprint(spread.model)
    expected = run_importance(plain.model, _eval_set(plain), ImportanceConfig(mode=mode)).table
    got = run_importance(spread.model, _eval_set(spread), ImportanceConfig(mode=mode)).table
    assert ((got["ppl"] - expected["ppl"]).abs() / expected["ppl"]).max() < 1e-5
    # Ablations must change the PPL on the offloaded layers too, not edit a meta placeholder.
    assert (got["degradation_pct"].abs() > 0.01).all()
    assert fingerprint(spread.model) == before == fingerprint(plain.model)
    assert offload.unpin(spread.model) == 0  # every pinned copy was released after its ablation


def test_interventions_on_offloaded_layers_restore_and_match(tiny_folder, spread):
    plain = load_model(str(tiny_folder))
    results = []
    for loaded in (plain, spread):
        eval_set = _eval_set(loaded)
        adapter, cache = LayerAdapter(loaded.model), PrefixCache(loaded.model, eval_set)
        with intervention(adapter, "neighbour-mean", [2, 3, 4]), intervention(adapter, "noise", [5], sigma=0.3):
            results.append((perplexity(loaded.model, eval_set, cache, 2).ppl, perplexity(loaded.model, eval_set).ppl))
    (plain_cached, plain_full), (spread_cached, spread_full) = results
    assert abs(spread_cached / plain_cached - 1) < 1e-5 and abs(spread_full / plain_full - 1) < 1e-5
    assert abs(spread_cached / spread_full - 1) < 1e-4  # prefix cache equals the full forward across devices
    assert abs(plain_full / perplexity(plain.model, _eval_set(plain)).ppl - 1) > 1e-3  # the edits did something
    assert fingerprint(spread.model) == fingerprint(plain.model)


def test_run_folder_records_dtype_device_map_and_quantisation(spread, tmp_path):
    run = RunFolder(tmp_path / "run", "importance")
    model = json.loads(run.finish(spread, None, {}, {}).read_text())["model"]
    assert model["dtype"] == "torch.float32" and model["quantisation"] == "none"
    assert model["device_map"]["disk"] >= 3 and model["device_map"]["cpu"] >= 2


def test_dtype_auto_is_float32_on_cpu_and_half_on_gpus():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(AnatomyError, match="Unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    if torch.cuda.is_available():
        major = torch.cuda.get_device_capability()[0]
        assert resolve_dtype("auto", torch.device("cuda")) == (torch.bfloat16 if major >= 8 else torch.float16)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A made-up Hub repository: its metadata replaces the HTTP call, its config.json sits in the Hub cache at
    the commit the metadata names (where huggingface_hub looks first), and it has no weights at all."""
    def install(num_params: int, config_extra: dict | None = None):
        config = make_tiny_model("llama", layers=2).config
        config.architectures = ["LlamaForCausalLM"]
        described, _ = config_parameters(config)  # the vocabulary grown until the config describes num_params
        config.vocab_size += (num_params - described) // (config.hidden_size * (1 + (not config.tie_word_embeddings)))
        for key, value in (config_extra or {}).items():
            setattr(config, key, value)
        config.save_pretrained(tmp_path / "hub" / "models--someone--big" / "snapshots" / SHA)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(HfApi, "model_info", lambda self, *a, **k: ModelInfo(
            id="someone/big", sha=SHA, siblings=[{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}],
            safetensors={"parameters": {"BF16": num_params}, "total": num_params},
            cardData={"base_model": "someone/big-base"}))
    return install


def test_memory_check_counts_the_dtype_before_download(fake_hub):
    free = Placement("auto", {"cpu": "10GiB"}).free_bytes(torch.device("cpu"))["cpu"]
    fake_hub(int(free / 2 / 1.3 * 0.9))  # fits in 2 bytes a weight, not in 4
    with pytest.raises(AnatomyError, match=r"too large.*in float32.*cpu 10\.0 GiB"):
        check_hub_model("someone/big", dtype=torch.float32, placement=Placement("auto", {"cpu": "10GiB"}))
    check = check_hub_model("someone/big", dtype=torch.bfloat16, placement=Placement("auto", {"cpu": "10GiB"}))
    assert check.num_parameters == int(free / 2 / 1.3 * 0.9)


def test_quantised_hub_model_is_refused_before_download(fake_hub):
    fake_hub(10**6, {"quantization_config": {"quant_method": "gptq", "bits": 4}})
    with pytest.raises(AnatomyError, match="gptq-quantised.*load 'someone/big-base' instead"):
        check_hub_model("someone/big")


@pytest.mark.parametrize("method", ["bitsandbytes", "awq", "compressed-tensors", "fp8"])
def test_quantised_folder_is_refused(tiny_folder, method):
    config = json.loads((tiny_folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": method}
    (tiny_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AnatomyError, match=f"{method}-quantised.*unquantised model"):
        load_model(str(tiny_folder))


def test_cli_flags_reach_the_loader(tiny_folder, tmp_path):
    args = cli.build_parser().parse_args(
        ["importance", "--model", str(tiny_folder), "--dtype", "auto", "--device-map", "auto",
         "--max-memory", f"cpu={CPU_LIMIT}", "--offload-folder", str(tmp_path / "off")])
    loaded = cli.load_from_args(args)
    assert offload.placement(loaded.model)["disk"] >= 3
    bad = cli.build_parser().parse_args(["importance", "--max-memory", "cpu=lots", "--device-map", "auto"])
    with pytest.raises(AnatomyError, match="device=size"):
        cli.placement_from_args(bad)
    lone = cli.build_parser().parse_args(["importance", "--offload-folder", "x"])
    with pytest.raises(AnatomyError, match="--device-map auto"):
        cli.placement_from_args(lone)
    with pytest.raises(AnatomyError, match="GGUF"):
        load_model("embedded", placement=Placement("auto"))


def test_cpu_offloaded_layers_are_edited_in_their_weights_map(tiny_folder):
    """What a GPU machine does with layers its map sends to "cpu": parameters on meta, the real ones in
    accelerate's weights map, copied to the execution device at each forward (here the CPU itself)."""
    from accelerate import cpu_offload

    plain, offloaded = load_model(str(tiny_folder)), load_model(str(tiny_folder))
    for layer in (1, 2):
        cpu_offload(offloaded.model.model.layers[layer], execution_device=torch.device("cpu"))
    assert offloaded.model.model.layers[2].mlp.up_proj.weight.device.type == "meta"
    expected = run_importance(plain.model, _eval_set(plain), ImportanceConfig(layers=[0, 1, 2, 3])).table
    got = run_importance(offloaded.model, _eval_set(offloaded), ImportanceConfig(layers=[0, 1, 2, 3])).table
    assert ((got["ppl"] - expected["ppl"]).abs() / expected["ppl"]).max() < 1e-5
    assert fingerprint(offloaded.model) == fingerprint(plain.model)


def test_parallel_plan_group_over_offloaded_layers(tiny_folder, spread):
    """A parallel group whose layers sit on CPU and disk cannot stack their weights: it runs member by
    member and gives the PPL of the batched group on the plain load."""
    plain = load_model(str(tiny_folder))
    plan = parse_plan("0-1,[2-4],5", 6)
    results = []
    for loaded in (plain, spread):
        with apply_plan(loaded.model, plan) as steps:
            results.append((perplexity(loaded.model, _eval_set(loaded)).ppl, steps[2].batched))
    (plain_ppl, plain_batched), (spread_ppl, spread_batched) = results
    assert plain_batched and not spread_batched
    assert abs(spread_ppl / plain_ppl - 1) < 1e-4


def test_recovery_refuses_offloaded_layers_before_training(spread):
    rows = torch.zeros((4, RecoveryConfig().train_seq_len), dtype=torch.long)
    with pytest.raises(AnatomyError, match=r"offloads layers 3, 4, 5.*cannot be trained"):
        run_recovery(spread.model, _eval_set(spread), RecoveryConfig(), train_rows=rows)


def test_pruned_export_of_a_spread_model_equals_the_plain_one(tiny_folder, spread, tmp_path):
    """Offloaded layers are written from where accelerate keeps them; the export loads back and generates."""
    plain = load_model(str(tiny_folder))
    folders = [save_model(build_layer_stack(loaded.model, [0, 1, 3, 5]), loaded.tokenizer, tmp_path / name)
               for name, loaded in (("plain", plain), ("spread", spread))]
    expected, got = (load_file(folder / "model.safetensors") for folder in folders)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    reloaded = load_model(str(folders[1]))
    assert reloaded.model.config.num_hidden_layers == 4
    ids = torch.tensor([[5, 6, 7, 8]])
    cached = reloaded.model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    assert torch.equal(cached, reloaded.model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False))
