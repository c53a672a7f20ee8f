"""The study regime: per-layer accounting against counted gradient updates, epoch batches, and a tiny run."""

import json

import pandas as pd
import pytest

from anatomy.claims import VERDICTS
from growth_models import compare
from growth_models.accounting import SHARED, layer_accounting
from growth_models.facts import fact_sentences, fact_split
from growth_models.plan import default_plan
from growth_models.presets import PRESETS, build_model
from growth_models.study_regime import core_epochs, fact_data, study_configs
from growth_models.trainer import Trainer

PHASE_STEPS = (3, 2, 2, 1, 1, 2)  # gastrulation .. maturation


@pytest.fixture(scope="module")
def tiny_data():
    return fact_data(PRESETS["tiny"])


def train_counting(schedule: str, data, phase_steps: tuple[int, ...]):
    """Train on the tiny preset while hooks count every gradient each layer's q_proj and the embedding receive."""
    preset, plan = PRESETS["tiny"], default_plan()
    model = build_model(plan, preset, len(data.tokenizer), schedule, seed=0)
    counted = {i: 0 for i in range(plan.n_layers)} | {SHARED: 0}

    def counter(key):
        def hook(_):
            counted[key] += 1
        return hook

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.q_proj.weight.register_post_accumulate_grad_hook(counter(i))
    model.model.embed_tokens.weight.register_post_accumulate_grad_hook(counter(SHARED))
    cfg = preset.train_config(sum(phase_steps), 0, phase_steps=phase_steps, epochs=True, count_flops=True,
                              spectra_every=0, progress=False, eval_every=1000)
    trainer = Trainer(model, plan if schedule == "growth" else None, data.train, data.validation, cfg)
    trainer.fit()
    log = pd.DataFrame(trainer.phase_log)
    account = layer_accounting(log, plan if schedule == "growth" else None, plan.n_layers, data.train.numel())
    return account, counted, log


@pytest.mark.slow
def test_growth_accounting_matches_the_gradients_each_layer_received(tiny_data):
    account, counted, log = train_counting("growth", tiny_data, PHASE_STEPS)
    by = account.set_index("part")
    # the plan by hand: L4/L5 gastrulation + maturation, L1/L2 and L8/L9 their phase + maturation, ...
    expected = {4: 5, 5: 5, 1: 4, 2: 4, 8: 4, 9: 4, 7: 3, 10: 3, 0: 3, 3: 3, 6: 3, 11: 3}
    assert {i: int(by.loc[f"layers.{i}", "updates"]) for i in range(12)} == expected
    assert {i: counted[i] for i in range(12)} == expected  # hooks: what autograd really did
    assert by.loc[SHARED, "updates"] == counted[SHARED] == sum(PHASE_STEPS)  # shared parameters train every step
    tokens_per_step = 4 * 32  # tiny preset: batch 4 x 32 tokens
    assert (account["tokens_trained"] == account["updates"] * tokens_per_step).all()
    assert by.loc["layers.4", "tokens_forward"] == sum(PHASE_STEPS) * tokens_per_step  # active from the start
    assert by.loc["layers.0", "tokens_forward"] == 3 * tokens_per_step  # grown in the fifth phase
    n = tiny_data.train.numel()
    # layers.1 is cloned from layers.4 after gastrulation: it starts with layers.4's 3 steps of training
    assert by.loc["layers.1", "epochs_effective"] == pytest.approx((3 + 4) * tokens_per_step / n)
    assert by.loc["layers.4", "epochs_effective"] == pytest.approx(by.loc["layers.4", "epochs_trained"])
    flops_per_step = log["flops"] / log["steps"]
    assert flops_per_step.iloc[0] > 0 and flops_per_step.iloc[-1] > 2 * flops_per_step.iloc[0]  # 2 vs 12 layers


def test_uniform_accounting_and_epoch_batches(tiny_data):
    account, counted, _ = train_counting("uniform", tiny_data, (7,))
    assert (account["updates"] == 7).all() and all(v == 7 for v in counted.values())
    cfg = PRESETS["tiny"].train_config(4, 0, epochs=True)
    model = build_model(default_plan(), PRESETS["tiny"], len(tiny_data.tokenizer), "uniform", seed=0)
    trainer = Trainer(model, None, tiny_data.train, tiny_data.validation, cfg)
    rows = len(tiny_data.train)
    first, second = trainer._indices(rows), trainer._indices(rows)
    assert sorted(first.tolist()) == list(range(rows)) == sorted(second.tolist())  # each pass sees every row once
    assert first.tolist() != second.tolist()  # reshuffled


def test_study_configurations():
    plan = default_plan()
    assert core_epochs(plan) == 45  # gastrulation 30 + maturation 15
    configs = dict((name, steps) for name, _, steps in study_configs(plan, rows=100, batch_size=10))
    growth = configs["growth (phase epochs)"]
    assert growth == (300, 200, 200, 120, 60, 150)  # 30/20/20/12/6/15 epochs of 10 steps
    assert configs["uniform (the study's 11 epochs)"] == (110,)
    assert configs["uniform (same passes as growth core)"] == (450,)
    assert configs["uniform (equal steps)"] == (sum(growth),)
    assert configs["growth (half the phase epochs)"] == (150, 100, 100, 60, 30, 75)  # every phase's epochs halved


def test_fact_sentences_split_by_sentence():
    sentences = fact_sentences()
    assert 300 <= len(sentences) == len(set(sentences)) and "The capital of France is Paris." in sentences
    split = fact_split()
    sides = [set(split.train), set(split.validation), set(split.test)]
    assert sum(map(len, sides)) == len(sentences) and not (sides[0] & sides[1]) and not (sides[0] & sides[2])
    assert split == fact_split()


@pytest.mark.slow
def test_study_regime_run_on_the_tiny_preset(tmp_path):
    out = tmp_path / "study"
    assert compare.main(["--regime", "study", "--preset", "tiny", "--seeds", "1", "--epoch-scale", "0.005",
                         "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 and runs["config"].nunique() == 5
    growth = runs[runs.config == "growth (phase epochs)"].iloc[0]
    assert growth["updates_max"] > growth["updates_min"] and growth["flops"] > 0
    assert (runs[runs.schedule == "uniform"]["updates_min"] == runs[runs.schedule == "uniform"]["updates_max"]).all()
    assert (out / "layers.csv").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    claim, equal, half, memorised = results["claims"]
    assert equal["finding"] == "growth.val_loss_ratio.equal_steps" and equal["verdict"] in VERDICTS
    assert half["finding"] == "growth.val_loss_ratio.half_budget" and half["study"] == pytest.approx(0.599 / 0.279)
    assert results["rules"] >= 2
    assert claim["verdict"] in VERDICTS and claim["study"] == pytest.approx(0.599 / 0.127)
    assert memorised["finding"] == "growth.val_loss" and memorised["verdict"] in VERDICTS
    assert "REDUCED" in claim["settings"] and "REDUCED" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        compare.main(["--regime", "study", "--steps", "100", "--out", str(tmp_path / "x")])


def test_claims_follow_the_numbers():
    from growth_models.study_regime import (EQUAL_STEPS, GROWTH, GROWTH_HALF, UNIFORM_STUDY, equal_steps_claim,
                                            growth_claim, half_budget_claim, memorisation_claim)

    control = "uniform (same passes as growth core)"

    def runs(growth, uniform, same_passes, train_set, half=3.0):
        rows = []
        for seed, jitter in enumerate((0.0, 0.01, -0.01)):
            for name, val in ((GROWTH, growth), (UNIFORM_STUDY, uniform), (control, same_passes), (EQUAL_STEPS, 3.0),
                              (GROWTH_HALF, half)):
                rows.append({"config": name, "seed": seed, "val_loss": val + jitter, "train_set_loss": train_set})
        return pd.DataFrame(rows)

    assert growth_claim(runs(3.0, 4.2, 2.7, 0.2), control, "").verdict == "explained by a control"
    assert growth_claim(runs(2.0, 4.2, 3.0, 0.2), control, "").verdict == "holds"
    assert growth_claim(runs(4.0, 4.0, 3.0, 0.2), control, "").verdict == "does not hold"
    assert memorisation_claim(runs(3.0, 4.2, 2.7, 0.15), "").verdict == "explained by a control"
    assert memorisation_claim(runs(3.0, 4.2, 2.7, 2.5), "").verdict == "does not hold"
    assert memorisation_claim(runs(0.12, 4.2, 2.7, 0.1), "").verdict == "holds"
    assert equal_steps_claim(runs(2.0, 4.2, 2.7, 0.1), "").verdict == "holds"  # uniform at equal steps: 3.0
    assert equal_steps_claim(runs(4.0, 4.2, 2.7, 0.1), "").verdict == "does not hold"
    assert half_budget_claim(runs(2.0, 4.2, 2.7, 0.1, half=3.0), "").verdict == "holds"  # 4.2 / 3.0 = 1.4
    assert half_budget_claim(runs(2.0, 4.2, 2.7, 0.1, half=4.5), "").verdict == "does not hold"
