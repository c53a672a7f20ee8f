"""The Growth Transformer itself: exact parameter counts, KV cache, absent layers."""

from pathlib import Path

import pytest
import torch

from growth_models.configuration_growth import GrowthConfig
from growth_models.modeling_growth import GrowthForCausalLM
from growth_models.plan import default_plan, uniform_width
from growth_models.presets import PRESETS, build_model


@pytest.fixture(scope="module")
def paper_growth():
    return build_model(default_plan(), PRESETS["paper"], 4096, "growth", 0)


def layer_counts(model):
    return [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]


def test_per_layer_parameter_counts_are_the_studys(paper_growth):
    counts = layer_counts(paper_growth)
    by_role = dict(zip(paper_growth.config.layer_roles, counts))
    assert by_role == {"R": 459_264, "M": 655_872, "C": 1_049_088}
    assert paper_growth.config.layer_roles == "R C C R C C R M C C M R".split()
    assert sum(counts) == 9_443_328


def test_whole_model_with_the_real_tokenizer_has_the_count_the_readme_gives(shakespeare):
    """The tokenizer the trainer builds (4,096-entry BPE on the training split), the embedding tied to the head."""
    from anatomy.corpus import load_corpus
    from growth_models.data import train_tokenizer

    preset = PRESETS["paper"]
    tokenizer = train_tokenizer(list(load_corpus().train.values()), preset.vocab_size)
    model = build_model(default_plan(), preset, len(tokenizer), "growth", 0)
    h = preset.hidden
    per_layer = [4 * h * h + 2 * h + 3 * h * w for w in model.config.intermediate_sizes]  # attention, norms, SwiGLU
    total = sum(p.numel() for p in model.parameters())
    assert len(tokenizer) == 4096
    assert total == sum(per_layer) + len(tokenizer) * h + h  # one embedding (tied head) and the final norm
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"{total:,} parameters" in readme


def test_uniform_baseline_matches_within_a_tenth_of_a_percent(paper_growth):
    uniform = build_model(default_plan(), PRESETS["paper"], 4096, "uniform", 0)
    assert uniform_width(default_plan(), 256) == 683
    assert len(set(uniform.config.intermediate_sizes)) == 1
    g, u = sum(layer_counts(paper_growth)), sum(layer_counts(uniform))
    assert u == 12 * 787_200 and abs(u / g - 1) < 1e-3


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = GrowthConfig(vocab_size=97, hidden_size=32, intermediate_sizes=[32, 128, 64, 32],
                       num_attention_heads=2, eos_token_id=0, pad_token_id=0)
    return GrowthForCausalLM(cfg).eval()


def test_tied_embeddings_and_kv_cache_match_the_full_forward():
    m = tiny_model()
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    x = torch.randint(1, 97, (2, 12))
    with torch.no_grad():
        full = m(x, use_cache=False).logits
        first = m(x[:, :7], use_cache=True)
        rest = m(x[:, 7:], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=1e-5)


def test_cached_and_uncached_greedy_generation_agree():
    m = tiny_model(1)
    x = torch.randint(1, 97, (1, 5))
    a = m.generate(x, max_new_tokens=12, do_sample=False, use_cache=True)
    b = m.generate(x, max_new_tokens=12, do_sample=False, use_cache=False)
    assert a.shape == (1, 17) and torch.equal(a, b)


def test_left_padding_gives_the_same_continuation_as_no_padding():
    m = tiny_model(2)
    x = torch.randint(1, 97, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    a = m.generate(padded, attention_mask=mask, max_new_tokens=6, do_sample=False)[:, 9:]
    b = m.generate(x, max_new_tokens=6, do_sample=False)[:, 6:]
    assert torch.equal(a, b)


def test_layers_not_in_active_layers_are_absent_from_the_forward():
    m = tiny_model()
    x = torch.randint(1, 97, (1, 8))
    m.model.active_layers = [1, 2]
    with torch.no_grad():
        before = m(x, use_cache=False).logits
        m.model.layers[0].mlp.down_proj.weight.mul_(100.0)  # an absent layer: no effect
        torch.testing.assert_close(m(x, use_cache=False).logits, before)
        m.model.layers[1].mlp.down_proj.weight.mul_(100.0)  # a present one: changes the output
        assert not torch.allclose(m(x, use_cache=False).logits, before)
    assert m(x, labels=x, use_cache=False).loss.requires_grad
