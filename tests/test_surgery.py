"""Layer surgery: in-place stacks restore, copies match, saved folders load back and generate with the cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from anatomy.errors import AnatomyError
from anatomy.interventions import fingerprint, skip
from anatomy.layers import LayerAdapter
from anatomy.surgery import build_layer_stack, check_order, kept_layers, layer_stack, save_model
from tests.conftest import make_tiny_model

IDS = torch.tensor([[5, 17, 42, 99, 7, 63, 12, 250]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def greedy(model, cache: bool, ids=IDS[:, :4]):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=cache, pad_token_id=0)


def test_removal_in_place_equals_skipping_and_restores(arch):
    model = make_tiny_model(arch)
    before, fp = logits(model), fingerprint(model)
    adapter = LayerAdapter(model)
    with skip(adapter, [1, 4]):
        skipped = logits(model)
    with layer_stack(model, kept_layers(6, [1, 4])) as stack:
        assert stack.num_layers == 4 and model.config.num_hidden_layers == 4
        idx = [m.layer_idx for layer in stack.layers for m in layer.modules() if hasattr(m, "layer_idx")]
        assert sorted(set(idx)) == [0, 1, 2, 3]
        torch.testing.assert_close(logits(model), skipped)
        assert torch.equal(greedy(model, True), greedy(model, False))
    assert LayerAdapter(model).num_layers == 6 and model.config.num_hidden_layers == 6
    assert fingerprint(model) == fp
    torch.testing.assert_close(logits(model), before)


def test_layer_types_follow_the_order():
    model = make_tiny_model("qwen2")
    model.config.layer_types = [f"t{i}" for i in range(6)]
    with layer_stack(model, [5, 0, 2]):
        assert model.config.layer_types == ["t5", "t0", "t2"]
    copy = build_layer_stack(model, [5, 0, 2])
    assert copy.config.layer_types == ["t5", "t0", "t2"]
    assert model.config.layer_types == [f"t{i}" for i in range(6)]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_saved_pruned_model_loads_back_and_generates_with_cache(arch, tmp_path, tiny_tokenizer):
    model = make_tiny_model(arch)
    fp = fingerprint(model)
    order = kept_layers(6, [0, 3])
    pruned = build_layer_stack(model, order)
    assert fingerprint(model) == fp and LayerAdapter(model).num_layers == 6
    with layer_stack(model, order):
        expected = logits(model)
    torch.testing.assert_close(logits(pruned), expected)
    folder = save_model(pruned, tiny_tokenizer, tmp_path / "pruned")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 4
    torch.testing.assert_close(logits(loaded), expected)
    assert torch.equal(greedy(loaded, True), greedy(loaded, False))


def test_repeated_layers_become_separate_copies():
    model = make_tiny_model("llama")
    stacked = build_layer_stack(model, [0, 1, 1, 2])
    layers = LayerAdapter(stacked).layers
    assert layers[1] is not layers[2]
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    assert torch.equal(layers[1].mlp.up_proj.weight, layers[2].mlp.up_proj.weight)
    assert torch.equal(greedy(stacked, True), greedy(stacked, False))


def test_bad_orders_are_refused():
    with pytest.raises(AnatomyError, match="do not exist"):
        check_order([0, 9], 6)
    with pytest.raises(AnatomyError, match="empty"):
        check_order([], 6)
    with pytest.raises(AnatomyError, match="leaves none"):
        kept_layers(3, [0, 1, 2])


def test_a_repeated_layer_in_place_has_its_own_cache_slot():
    """A reorder is a plan: a layer that runs twice gets a KV-cache slot per position, so the cache works."""
    model = make_tiny_model("llama")
    with layer_stack(model, [0, 1, 1, 2]):
        assert model.config.num_hidden_layers == 4
        assert torch.equal(greedy(model, True), greedy(model, False))
    assert [layer.self_attn.layer_idx for layer in LayerAdapter(model).layers] == list(range(6))
