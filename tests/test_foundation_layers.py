"""The architecture adapter: layers and components found for every family, fused weights sliced correctly."""

import pytest
import torch

from anatomy.errors import AnatomyError
from anatomy.layers import COMPONENTS, LayerAdapter, parse_layers
from conftest import make_tiny_model

def test_adapter_finds_layers_and_components(arch):
    model = make_tiny_model(arch)
    adapter = LayerAdapter(model)
    assert adapter.family == arch
    assert adapter.num_layers == 6
    gated = arch in ("llama", "mistral", "qwen2", "gemma", "phi3")
    assert adapter.components == (COMPONENTS if gated else tuple(c for c in COMPONENTS if c != "mlp.gate_proj"))
    for ref in adapter.layer_components(3):
        assert ref.name == f"layers.3.{ref.component}"
        assert ref.matrix().dim() == 2
        assert ref.param_name.startswith(adapter.layers_path + ".3.")
    if not gated:
        with pytest.raises(AnatomyError, match="mlp.gate_proj"):
            adapter.component(0, "mlp.gate_proj")


def test_component_views_cover_each_fused_weight_exactly_once(arch):
    """Zeroing all components through the views zeroes every element of every underlying matrix once."""
    model = make_tiny_model(arch)
    adapter = LayerAdapter(model)
    refs = adapter.layer_components(1)
    touched = {id(ref.weight.untyped_storage()) for ref in refs}
    total_view = sum(ref.weight.numel() for ref in refs)
    with torch.no_grad():
        for ref in refs:
            ref.weight.zero_()
    params = [p for n, p in adapter.layers[1].named_parameters() if p.dim() == 2 and id(p.untyped_storage()) in touched]
    assert sum(p.numel() for p in params) == total_view
    assert all(torch.count_nonzero(p) == 0 for p in params)


def test_gpt2_query_is_the_first_third_of_c_attn_transposed():
    model = make_tiny_model("gpt2")
    c_attn = model.transformer.h[2].attn.c_attn.weight  # Conv1D: (in, 3 * hidden)
    q = LayerAdapter(model).component(2, "self_attn.q_proj")
    assert torch.equal(q.weight, c_attn[:, :32].T)
    with torch.no_grad():
        q.weight.fill_(7.0)
    assert torch.all(c_attn[:, :32] == 7.0) and not torch.any(c_attn[:, 32:] == 7.0)


def test_gpt_neox_query_view_feeds_the_query_heads():
    """NeoX interleaves q/k/v per head: the q view must be exactly what the attention splits off as queries."""
    model = make_tiny_model("gpt_neox")
    adapter = LayerAdapter(model)
    layer = adapter.layers[0]
    x = torch.randn(1, 5, 32)
    qkv = layer.attention.query_key_value(x).view(1, 5, 4, 3 * 8)
    queries = qkv[..., :8]  # what GPTNeoXAttention.forward takes as query_states
    ref = adapter.component(0, "self_attn.q_proj")
    manual = torch.einsum("hdi,bti->bthd", ref.weight, x) + ref.bias
    torch.testing.assert_close(manual, queries)


def test_phi3_fused_slices_match_attention_split():
    model = make_tiny_model("phi3")
    adapter = LayerAdapter(model)
    qkv = model.model.layers[0].self_attn.qkv_proj.weight
    q, k, v = (adapter.component(0, c).weight for c in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))
    assert torch.equal(torch.cat([q, k, v]), qkv)
    gate_up = model.model.layers[0].mlp.gate_up_proj.weight
    assert torch.equal(torch.cat([adapter.component(0, "mlp.gate_proj").weight,
                                  adapter.component(0, "mlp.up_proj").weight]), gate_up)


def test_logits_from_last_hidden_match_model(arch):
    model = make_tiny_model(arch)
    adapter = LayerAdapter(model)
    ids = torch.randint(3, 300, (2, 7))
    out = model(ids, output_hidden_states=True)
    seen = {}
    handle = adapter.layers[-1].register_forward_hook(lambda m, a, o: seen.update(h=o[0] if isinstance(o, tuple) else o))
    model(ids)
    handle.remove()
    torch.testing.assert_close(adapter.logits(seen["h"]), out.logits)
    rows = seen["h"].flatten(0, 1)
    blocks = list(adapter.head_logit_blocks(rows, block=7))
    assert [start for start, _ in blocks][:2] == [0, 7]
    torch.testing.assert_close(torch.cat([logits for _, logits in blocks], dim=1), out.logits.flatten(0, 1))


def test_parse_layers():
    assert parse_layers("0,3,5-7", 10) == [0, 3, 5, 6, 7]
    assert parse_layers(None, 3) == [0, 1, 2]
    assert parse_layers("all", 2) == [0, 1]
    with pytest.raises(AnatomyError, match="0..9"):
        parse_layers("10", 10)
    with pytest.raises(AnatomyError, match="'x'"):
        parse_layers("1,x", 10)


def test_bad_layer_index_message():
    adapter = LayerAdapter(make_tiny_model("llama"))
    with pytest.raises(AnatomyError, match="layers 0..5"):
        adapter.component(6, "self_attn.q_proj")
