"""Execution plans on tiny models: grammar, every variant, cache-on == cache-off generation, batched ==
member-by-member parallel groups, restore on exit, export round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from anatomy.errors import AnatomyError
from anatomy.interventions import fingerprint
from anatomy.layers import LayerAdapter
from anatomy.plans import (VARIANTS, BatchedLlamaGroup, Plan, SequentialGroup, apply_plan, export_plan, middle_block,
                           parse_plan, variant_plan)
from conftest import make_tiny_model

N = 8


@pytest.mark.parametrize("text, steps", [
    ("0-3", [(0,), (1,), (2,), (3,)]),
    ("3-1,5", [(3,), (2,), (1,), (5,)]),
    ("0,[1-3]x2,7", [(0,), (1, 2, 3), (1, 2, 3), (7,)]),
    ("2x3", [(2,), (2,), (2,)]),
    ("[0, 2,4-5]", [(0, 2, 4, 5)]),
    ("1-2x2", [(1,), (2,), (1,), (2,)]),
])
def test_grammar_parses_and_round_trips(text, steps):
    plan = parse_plan(text, N)
    assert list(plan.steps) == steps
    assert parse_plan(str(plan), N) == plan


@pytest.mark.parametrize("text, position, words", [
    ("0-3,[4-7x2", 8, "expected ']'"), ("0-3,,4", 4, "expected a layer number"), ("0-9", 2, "does not exist"),
    ("0,x2", 2, "expected a layer number"), ("0-3;4", 3, "unexpected character ';'"), ("[1,1]", 0, "twice"),
    ("5x0", 2, "at least 1"), ("", 0, "found the end"), ("0 1", 2, "expected ','"),
])
def test_grammar_rejects_with_position(text, position, words):
    with pytest.raises(AnatomyError) as err:
        parse_plan(text, N)
    message = str(err.value)
    assert f"position {position} (" in message and words in message
    assert message.splitlines() == [message]  # one line: the app and the CLI show it as it is
    assert ("at the start" if position == 0 else f"after '{text[:position][-24:]}'") in message


def test_a_plan_longer_than_8_passes_is_refused_before_it_is_built():
    assert len(parse_plan("0-5x8", 6).steps) == 48
    with pytest.raises(AnatomyError, match="more than 48 steps"):
        parse_plan("0-5x8,0", 6)
    with pytest.raises(AnatomyError, match="not a repeat count after 'x' this tool can run"):
        parse_plan("[0-1]x999999999999", 6)  # refused in microseconds, not a trillion-step list


def test_variants_cover_the_middle_block():
    assert middle_block(30, 4) == [13, 14, 15, 16]
    plans = {v: variant_plan(v, N, 4, seed=1) for v in VARIANTS}
    assert str(plans["skip"]) == "0-1,6-7"
    assert str(plans["reverse"]) == "0-1,5-2,6-7"
    assert sorted(s[0] for s in plans["shuffle"].steps[2:6]) == [2, 3, 4, 5] and str(plans["shuffle"]) != "0-7"
    assert str(plans["repeat"]) == "0-1,4x4,6-7"
    assert str(plans["parallel"]) == "0-1,[2-5],6-7"
    assert str(plans["looped-parallel"]) == "0-1,[2-5]x2,6-7" and plans["looped-parallel"].layer_calls == 12
    with pytest.raises(AnatomyError):
        middle_block(N, N - 1)  # the first and last layers always stay


def _generate(model, ids, use_cache):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                          do_sample=False, use_cache=use_cache, pad_token_id=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_variant_generates_the_same_with_and_without_cache(arch):
    model = make_tiny_model(arch, layers=N)
    before = fingerprint(model)
    indices = {id(m): m.layer_idx for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)}
    ids = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    reference = model(input_ids=ids).logits
    plans = [variant_plan(v, N, 4, loops=3) for v in VARIANTS] + [parse_plan("0,[1-3]x2,5-4,4,7", N)]
    for plan in plans:
        with apply_plan(model, plan):
            assert model.config.num_hidden_layers >= len(plan.steps)
            cached, uncached = _generate(model, ids, True), _generate(model, ids, False)
            assert torch.equal(cached, uncached), f"{arch} {plan}"
            assert not torch.allclose(model(input_ids=ids).logits, reference)  # the plan really ran
    assert fingerprint(model) == before
    assert model.config.num_hidden_layers == N and len(LayerAdapter(model).layers) == N
    assert {id(m): m.layer_idx for m in model.modules() if id(m) in indices} == indices
    assert torch.equal(model(input_ids=ids).logits, reference)


@pytest.mark.parametrize("arch, batched", [("llama", True), ("qwen2", True), ("mistral", False), ("gpt2", False)])
def test_parallel_group_is_one_batched_call_that_matches_member_by_member(arch, batched):
    """Mistral's default config has a sliding window, so its group falls back to member by member."""
    model = make_tiny_model(arch, layers=N)
    ids = torch.randint(3, 300, (3, 9), generator=torch.Generator().manual_seed(1))
    plan = parse_plan("0,[1-4]x2,5-7", N)
    with apply_plan(model, plan, batched=True) as steps:
        assert isinstance(steps[1], BatchedLlamaGroup if batched else SequentialGroup)
        fast = model(input_ids=ids).logits
    with apply_plan(model, plan, batched=False) as steps:
        assert isinstance(steps[1], SequentialGroup)
        slow = model(input_ids=ids).logits
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    # the group is the mean of its members' outputs on the same input
    layers = LayerAdapter(model).layers
    hidden = torch.randn(1, 4, 32)
    with apply_plan(model, parse_plan("[2,5]", N), batched=False) as steps:
        kwargs = {"position_ids": torch.arange(4)[None]}
        if arch != "gpt2":
            kwargs["position_embeddings"] = model.model.rotary_emb(hidden, kwargs["position_ids"])
        group = steps[0](hidden, **kwargs)
    single = [layers[i](hidden, **kwargs) for i in (2, 5)]
    single = [s[0] if isinstance(s, tuple) else s for s in single]
    torch.testing.assert_close(group, (single[0] + single[1]) / 2)


def test_plan_is_undone_on_error():
    model = make_tiny_model("llama", layers=N)
    layers = LayerAdapter(model).layers
    with pytest.raises(RuntimeError), apply_plan(model, parse_plan("0,3x3", N)):
        raise RuntimeError("boom")
    assert LayerAdapter(model).layers is layers and model.config.num_hidden_layers == N
    assert [layer.self_attn.layer_idx for layer in layers] == list(range(N))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_export_round_trip(arch, tmp_path, tiny_tokenizer):
    model = make_tiny_model(arch, layers=N)
    plan = parse_plan("0,3-1,2x2,7", N)
    ids = torch.randint(3, 300, (2, 7), generator=torch.Generator().manual_seed(2))
    with apply_plan(model, plan):
        expected = model(input_ids=ids).logits
        expected_tokens = _generate(model, ids, True)
    export_plan(model, tiny_tokenizer, plan, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    assert loaded.config.num_hidden_layers == len(plan.steps)
    torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(_generate(loaded, ids, True), expected_tokens)
    with pytest.raises(AnatomyError, match="parallel"):
        export_plan(model, tiny_tokenizer, parse_plan("0,[1-2]", N), tmp_path / "no")


def test_identity_plan_changes_nothing():
    model = make_tiny_model("llama", layers=N)
    ids = torch.randint(3, 300, (1, 6))
    reference = model(input_ids=ids).logits
    with apply_plan(model, Plan.identity(N)):
        assert torch.equal(model(input_ids=ids).logits, reference)
