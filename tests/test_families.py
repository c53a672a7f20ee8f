"""The family matrix: every layer-level experiment on tiny random models of 38 causal-LM families.

Llama-likes, fused QKV (GPT-2, NeoX, Phi-3, BLOOM, Falcon, MPT, CodeGen), parallel blocks (GPT-J, Falcon,
Phi, NeoX, Cohere), MoE (Mixtral, Qwen2/3-MoE, OLMoE, Granite-MoE, GPT-OSS), sliding-window alternation
(Gemma 2/3, GPT-OSS), hybrid stacks (LFM2 conv/attention, Qwen3.5 linear/full attention, Falcon-H1),
a multimodal wrapper (Gemma 3) and SSMs (Mamba, Mamba 2).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from anatomy.evaluate import EvalSet, PrefixCache, perplexity
from anatomy.experiments.importance import ImportanceConfig, run_importance
from anatomy.interventions import INTERVENTION_KINDS, fingerprint, intervention, skip, zero
from anatomy.layers import LayerAdapter
from anatomy.surgery import build_layer_stack, kept_layers, save_model
from anatomy.texts import default_eval_texts
from families import FAMILIES, make_family_model

LAYER = 1  # an attention layer in every hybrid stack of the matrix, with a neighbour on each side


@pytest.fixture(scope="module")
def eval_set(tiny_tokenizer):
    return EvalSet.from_texts(default_eval_texts()[:6], tiny_tokenizer, name="tiny", batch_size=3)


def rel(a: float, b: float) -> float:
    return abs(a / b - 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_importance_map_is_finite_on_every_layer(family, eval_set):
    df = run_importance(make_family_model(family), eval_set).table
    assert list(df["layer"]) == [0, 1, 2, 3]
    assert np.isfinite(df["ppl"]).all() and np.isfinite(df["degradation_pct"]).all()
    assert (df["neighbours"] != "").all()  # every layer of these stacks has a neighbour of its kind


@pytest.mark.parametrize("family", FAMILIES)
def test_interventions_restore_bit_identically_and_the_prefix_cache_matches(family, eval_set):
    model = make_family_model(family)
    adapter = LayerAdapter(model)
    before = fingerprint(model)
    base = perplexity(model, eval_set)
    cache = PrefixCache(model, eval_set)
    assert rel(perplexity(model, eval_set, cache, adapter.num_layers).ppl, base.ppl) < 1e-4
    for kind in INTERVENTION_KINDS[1:]:
        with intervention(adapter, kind, [LAYER], alpha=0.5):
            full = perplexity(model, eval_set)
            cached = perplexity(model, eval_set, cache, LAYER)
        assert fingerprint(model) == before, kind
        assert rel(full.ppl, base.ppl) > 1e-6, f"{kind} changed nothing"
        assert rel(cached.ppl, full.ppl) < 1e-4, kind


def _zero_by_hand(layer: torch.nn.Module) -> None:
    """Every parameter of two or more dimensions and the bias of each module or expert tensor that has one."""
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for module in layer.modules():
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and isinstance(bias, torch.Tensor):
                bias.zero_()
        for name, p in params.items():
            if p.dim() >= 2 or (name.endswith("_bias") and params.get(name[:-5], p).dim() >= 2):
                p.zero_()


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_of_a_layer_equals_zeroing_every_matrix_by_hand(family, eval_set):
    model = make_family_model(family)
    adapter = LayerAdapter(model)
    by_hand = copy.deepcopy(model)
    _zero_by_hand(LayerAdapter(by_hand).layers[LAYER])
    with zero(adapter, [LAYER]):
        zeroed = perplexity(model, eval_set).ppl
    assert rel(zeroed, perplexity(by_hand, eval_set).ppl) < 1e-6
    assert rel(zeroed, perplexity(model, eval_set).ppl) > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_equals_the_saved_model_without_the_layer_which_generates_with_the_cache(family, eval_set, tmp_path):
    model = make_family_model(family)
    adapter = LayerAdapter(model)
    with skip(adapter, [LAYER]):
        skipped = perplexity(model, eval_set).ppl
    save_model(build_layer_stack(model, kept_layers(adapter.num_layers, [LAYER])), None, tmp_path)
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert LayerAdapter(pruned).num_layers == adapter.num_layers - 1
    assert rel(perplexity(pruned, eval_set).ppl, skipped) < 1e-4
    ids = torch.tensor([[1, 5, 9, 22, 40]])
    cached = pruned.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = pruned.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.shape[1] == 10 and torch.equal(cached, uncached)


@pytest.mark.parametrize("family, layer, expected", [("lfm2", 1, [3]), ("lfm2", 2, [0]), ("gemma2", 0, [2]),
                                                     ("qwen3_5", 2, [0]), ("llama", 2, [1, 3])])
def test_neighbour_mean_takes_the_nearest_layers_of_the_same_kind(family, layer, expected, eval_set):
    from anatomy.interventions import neighbours
    adapter = LayerAdapter(make_family_model(family))
    assert neighbours(layer, adapter.kinds, "one-neighbour") == expected
    assert neighbours(layer, adapter.kinds, "untouched") == (expected if len(expected) == 2 else [])


def test_moe_experts_are_matrices_of_the_layer_and_reported_as_aggregated():
    adapter = LayerAdapter(make_family_model("mixtral"))
    names = [ref.component for ref in adapter.matrices(0)]
    assert "mlp.experts.gate_up_proj" in names and "mlp.experts.down_proj" in names and "mlp.gate" in names
    rows = {row["component"]: row for row in adapter.describe()}
    assert rows["mlp.experts.gate_up_proj"]["experts"] == "4, aggregated"
    assert rows["self_attn.q_proj"]["experts"] == "" and all(row["included"] for row in rows.values())


def test_hybrid_components_only_in_some_layers_are_listed_but_not_stacked():
    adapter = LayerAdapter(make_family_model("lfm2"))
    rows = {row["component"]: row for row in adapter.describe()}
    assert rows["conv.in_proj"]["layers"] == "0,2" and not rows["conv.in_proj"]["included"]
    assert rows["self_attn.q_proj"]["layers"] == "1,3"
    assert adapter.components == ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert rows["mlp.gate_proj"]["parameter"] == "model.layers.{i}.feed_forward.w1.weight"


def test_parallel_groups_of_different_kinds_are_refused_and_layer_plans_report_them(eval_set):
    from anatomy.errors import AnatomyError
    from anatomy.experiments.plans import PlansConfig, run_plans
    from anatomy.plans import apply_plan, parse_plan

    model = make_family_model("lfm2")
    before = fingerprint(model)
    with pytest.raises(AnatomyError, match=r"different kinds in parallel \(1: full_attention, 2: conv\)"):
        with apply_plan(model, parse_plan("0,[1-2],3", 4)):
            pass
    with apply_plan(model, parse_plan("0,[1,3],2", 4)):  # two attention layers: one kind
        model(torch.tensor([[1, 5, 9]]))
    result = run_plans(model, eval_set, PlansConfig(block_sizes=(2,), latency_repeats=1, latency_tokens=2, tasks=False))
    df = result.table
    assert fingerprint(model) == before
    assert set(df["variant"]) == {"baseline", "skip", "reverse", "shuffle", "repeat"}
    assert [line.split(":")[0] for line in result["refused"]] == ["parallel 2", "looped-parallel 2"]


def test_spectral_covers_every_matrix_of_a_hybrid_stack():
    from anatomy.experiments.spectral import run_spectral

    df = run_spectral(make_family_model("lfm2")).table
    conv = df[df["component"] == "conv.in_proj"]
    assert list(conv["layer"]) == [0, 2] and set(conv["group"]) == {"other"}
    assert list(df.loc[df["component"] == "self_attn.q_proj", "group"]) == ["query/key"] * 2


def test_spectral_report_survives_matrices_too_small_for_a_fit():
    """A router has as many singular values as experts: no power-law tail, alpha NaN, the report still runs."""
    from anatomy.experiments.spectral import component_summary, run_spectral, spectral_report

    result = run_spectral(make_family_model("mixtral"))
    router = component_summary(result.table).set_index("component").loc["mlp.gate"]
    assert np.isnan(router["alpha_mean"]) and np.isnan(router["alpha_min_layer"])
    assert "- Layer mean alpha: lowest layers." in spectral_report(result, "# header")


def test_report_header_lists_components_and_their_parameters(tiny_tokenizer):
    from anatomy.load import LoadedModel
    from anatomy.report import header

    loaded = LoadedModel(make_family_model("gpt2"), tiny_tokenizer, "tiny-gpt2", "folder")
    text = header("Test", loaded, None)
    assert "`self_attn.q_proj` = `transformer.h.{i}.attn.c_attn.weight` (a view into it)" in text
    assert "`mlp.down_proj` = `transformer.h.{i}.mlp.c_proj.weight`" in text


def test_expert_biases_belong_to_their_expert_tensors():
    adapter = LayerAdapter(make_family_model("gpt_oss"))
    refs = {ref.component: ref for ref in adapter.matrices(0)}
    assert not any(name.endswith("_bias") for name in refs)
    assert refs["mlp.experts.gate_up_proj"].bias.shape == (4, 128)  # one bias row per expert


def test_stacked_experiments_refuse_a_stack_without_a_common_component():
    from anatomy.errors import AnatomyError
    from anatomy.experiments.structure import run_structure

    model = make_family_model("lfm2")
    for layer in LayerAdapter(model).layers:  # without the MLP, conv and attention layers share no matrix
        del layer.feed_forward
    with pytest.raises(AnatomyError, match=r"^structure compares .* lfm2 model \(Lfm2ForCausalLM\)"):
        run_structure(model)


FUSED = [("gpt2", {}), ("gpt_neox", {}), ("bloom", {}), ("phi3", {}), ("mpt", {}), ("codegen", {}),
         ("falcon", {}), ("falcon", {"multi_query": False}),
         ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2})]


@pytest.mark.parametrize("family, overrides", FUSED)
def test_fused_views_are_the_query_key_and_value_the_attention_uses(family, overrides):
    """Zeroing the query view or the key view both make every attention score 0 (uniform attention), so they
    give the same logits; zeroing the value view gives what zeroing the output weight gives. A view holding
    rows of another projection, or of the wrong heads, breaks one of the two equalities."""
    from anatomy.interventions import preserve

    model = make_family_model(family, **overrides)
    adapter = LayerAdapter(model)
    ids = torch.randint(3, 300, (2, 7))

    def logits_with(component: str) -> torch.Tensor:
        with intervention(adapter, "zero", [LAYER], components=[component]):
            return model(ids).logits

    no_query, no_key = logits_with("self_attn.q_proj"), logits_with("self_attn.k_proj")
    torch.testing.assert_close(no_query, no_key)
    assert not torch.allclose(no_query, model(ids).logits, atol=1e-4)
    no_value = logits_with("self_attn.v_proj")
    out_weight = adapter.component(LAYER, "self_attn.o_proj").weight
    with preserve([out_weight]), torch.no_grad():
        out_weight.zero_()
        torch.testing.assert_close(no_value, model(ids).logits)


@pytest.mark.parametrize("family", ["gptj", "mixtral", "lfm2", "mamba", "gemma3"])
def test_downstream_experiments_run_and_leave_the_model_unchanged(family, eval_set, tiny_tokenizer, tmp_path):
    """Tuple-returning layers, experts, a hybrid stack, an SSM and a multimodal wrapper, through every
    model experiment: structure, predictability, manipulation, layer plans, pruning with export, recovery and
    side-by-side generation."""
    from anatomy.experiments import manipulate, plans, predictability, prune, recovery, structure
    from anatomy.generate import side_by_side

    model = make_family_model(family)
    adapter = LayerAdapter(model)
    before = fingerprint(model)
    assert len(structure.run_structure(model).table) == len(adapter.components) + 1
    pred = predictability.run_predictability(model, eval_set, predictability.PredictabilityConfig(
        positions=200, single_layer=2, multi_layers=[2, 3]))
    assert np.isfinite(pred["functional"]["ppl"]).all()
    manip = manipulate.run_manipulate(model, eval_set, manipulate.ManipulateConfig(layers=[1, 2], alphas=(0.5,))).table
    assert set(manip["strategy"]) >= {"zero", "clone", "blend", "lowrank"} and np.isfinite(manip["ppl"]).all()
    paint = plans.run_plans(model, eval_set, plans.PlansConfig(block_sizes=(2,), latency_repeats=1, latency_tokens=2,
                                                               tasks=False))
    assert np.isfinite(paint.table["ppl"]).all() and len(paint.table) + len(paint["refused"]) == 7
    pruned = prune.run_prune(model, eval_set, prune.PruneConfig(ks=(1,), criteria=("block_influence",)),
                             importance=run_importance(model, eval_set, ImportanceConfig(mode="skip"))).table
    folder, = prune.save_pruned(model, tiny_tokenizer, pruned, tmp_path)
    assert LayerAdapter(AutoModelForCausalLM.from_pretrained(folder)).num_layers == 3
    rec = recovery.run_recovery(model, eval_set, recovery.RecoveryConfig(
        layers=[1], steps=2, eval_every=1, train_batch_size=2, train_seq_len=8),
        train_rows=torch.randint(3, 300, (8, 8), generator=torch.Generator().manual_seed(0))).table
    assert np.isfinite(rec["noise_ppl"]).all() and (rec["noise_ppl"] != rec["baseline_ppl"]).all()
    outputs = side_by_side(model, tiny_tokenizer, "The river",
                           lambda: intervention(adapter, "zero", [LAYER]), max_new_tokens=4).ids
    assert all(len(pair["original"]) == 4 for pair in outputs.values())
    assert fingerprint(model) == before


def test_a_stack_its_config_would_rebuild_differently_is_refused():
    """Qwen2-MoE builds a dense MLP at the indices in `mlp_only_layers`: without layer 0, the dense layer
    would move, and the saved folder would reload random modules in place of the kept ones."""
    from anatomy.errors import AnatomyError

    model = make_family_model("qwen2_moe", mlp_only_layers=[1])
    with pytest.raises(AnatomyError, match=r"^Qwen2MoeForCausalLM builds each layer from its position"):
        build_layer_stack(model, [1, 2, 3])
    assert LayerAdapter(build_layer_stack(model, [0, 1, 3])).num_layers == 3  # the dense layer keeps its index
