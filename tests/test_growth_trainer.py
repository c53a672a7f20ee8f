"""Cloning and the developmental trainer: what trains, what is present, what each phase starts as."""

import pytest
import torch

from growth_models.configuration_growth import GrowthConfig
from growth_models.grow import clone_layer, neuron_norms
from growth_models.modeling_growth import GrowthForCausalLM
from growth_models.plan import default_plan, phase_steps
from growth_models.presets import PRESETS, build_model
from growth_models.trainer import Trainer, TrainConfig


def model_with_widths(widths, seed=0):
    torch.manual_seed(seed)
    return GrowthForCausalLM(GrowthConfig(vocab_size=50, hidden_size=16, intermediate_sizes=widths,
                                          num_attention_heads=2)).eval()


def test_narrower_clone_keeps_the_widest_norm_neurons():
    m = model_with_widths([64, 16])
    src, dst = m.model.layers[0], m.model.layers[1]
    with torch.no_grad():
        src.mlp.up_proj.weight[[3, 40, 7]] *= 20  # make three neurons clearly the widest
    clone_layer(src, dst, noise=0.0)
    keep = torch.sort(torch.argsort(neuron_norms(src), descending=True)[:16]).values
    assert {3, 7, 40} <= set(keep.tolist())
    torch.testing.assert_close(dst.mlp.up_proj.weight, src.mlp.up_proj.weight[keep])
    torch.testing.assert_close(dst.mlp.down_proj.weight, src.mlp.down_proj.weight[:, keep])
    torch.testing.assert_close(dst.self_attn.q_proj.weight, src.self_attn.q_proj.weight)


def test_wider_clone_preserves_the_function_and_ffn_scale_halves_it():
    m = model_with_widths([16, 40, 16])
    x = torch.randn(2, 5, 16)
    clone_layer(m.model.layers[0], m.model.layers[1], noise=0.0)
    torch.testing.assert_close(m.model.layers[1].mlp(x), m.model.layers[0].mlp(x), atol=1e-5, rtol=1e-4)
    clone_layer(m.model.layers[0], m.model.layers[2], noise=0.0, ffn_scale=0.5)
    torch.testing.assert_close(m.model.layers[2].mlp(x), 0.5 * m.model.layers[0].mlp(x), atol=1e-6, rtol=1e-5)


def test_clone_noise_is_small_and_relative():
    m = model_with_widths([16, 16])
    src, dst = m.model.layers
    clone_layer(src, dst, noise=0.01, generator=torch.Generator().manual_seed(0))
    diff = (dst.self_attn.v_proj.weight - src.self_attn.v_proj.weight).std() / src.self_attn.v_proj.weight.std()
    assert 0.005 < diff.item() < 0.02


def tiny_trainer(schedule, steps=18, seed=0, watch=None):
    preset = PRESETS["tiny"]
    plan = default_plan()
    model = build_model(plan, preset, 60, schedule, seed)
    g = torch.Generator().manual_seed(5)
    chunks = (torch.randint(0, 60, (64, 1), generator=g) + torch.arange(16)) % 60  # learnable: counting
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=16, eval_every=6, eval_chunks=8, spectra_every=1 if watch else 0,
                      seed=seed, progress=False)
    return Trainer(model, plan if schedule == "growth" else None, chunks, chunks[:8], cfg, on_spectra=watch)


def test_each_phase_trains_only_its_layers_with_the_others_absent():
    plan = default_plan()
    bounds, total = [], 0
    for n in phase_steps([p.share for p in plan.phases], 18):
        bounds.append((total + 1, total + n))
        total += n
    seen = []

    def watch(step, model):
        snap = {i: model.model.layers[i].mlp.up_proj.weight.detach().clone() for i in range(12)}
        seen.append((step, list(model.model.active_layers), snap))

    trainer = tiny_trainer("growth", watch=watch)
    trainer.fit()
    grown = set()
    for p, (lo, hi) in zip(plan.phases, bounds):
        grown |= set(p.sources)
        trained = set(p.trained_layers(12))
        rows = [s for s in seen if lo <= s[0] <= hi]
        assert rows and all(set(active) == grown for _, active, _ in rows), p.name
        for (_, _, a), (_, _, b) in zip(rows, rows[1:]):
            changed = {i for i in range(12) if not torch.equal(a[i], b[i])}
            assert changed <= trained and changed, (p.name, changed)
    assert [r["phase"] for r in trainer.phase_log] == [p.name for p in plan.phases]
    assert sum(r["steps"] for r in trainer.phase_log) == 18


@pytest.mark.slow
def test_growth_and_uniform_see_the_same_batches_and_tokens():
    a, b = tiny_trainer("growth"), tiny_trainer("uniform")
    assert all(torch.equal(a._batch(), b._batch()) for _ in range(5))
    ha, hb = tiny_trainer("growth").fit(), tiny_trainer("uniform").fit()
    assert ha[-1]["tokens"] == hb[-1]["tokens"] == 18 * 4 * 16
    assert [r["step"] for r in ha] == [r["step"] for r in hb] == [0, 6, 12, 18]


def test_training_lowers_the_validation_loss():
    history = tiny_trainer("uniform", steps=30).fit()
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 0.1


def test_new_optimizer_state_each_phase_keeps_shared_moments():
    """Phase 1 trains the embedding and layer 4; phase 2 the embedding and layer 1."""
    trainer = tiny_trainer("growth")
    layers = trainer.model.model.layers
    emb, frozen, fresh = (trainer.model.model.embed_tokens.weight, layers[4].mlp.up_proj.weight,
                          layers[1].mlp.up_proj.weight)
    old = trainer._optimizer([emb, frozen], None)
    for p in (emb, frozen, fresh):
        p.grad = torch.ones_like(p)
    for _ in range(3):
        old.step()
    moment = old.state[emb]["exp_avg"].clone()
    new = trainer._optimizer([emb, fresh], old)
    assert torch.equal(new.state[emb]["exp_avg"], moment) and float(new.state[emb]["step"]) == 3
    assert frozen not in new.state  # a layer frozen in this phase carries nothing over
    new.step()
    assert float(new.state[emb]["step"]) == 4 and float(new.state[fresh]["step"]) == 1  # fresh moments


@pytest.mark.parametrize("bad", [0, -3])
def test_trainer_rejects_budgets_too_small_for_six_phases(bad):
    with pytest.raises(ValueError, match="steps"):
        tiny_trainer("growth", steps=bad).fit()
