"""Recovery after noise: noise statistics, freezing, restore (also on cancel), cached loop == plain loop."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from anatomy.errors import AnatomyError
from anatomy.experiments.recovery import RecoveryConfig, run_recovery, summarise
from anatomy.evaluate import PPLResult
from anatomy.interventions import add_noise, fingerprint, preserve
from anatomy.layers import LayerAdapter
from anatomy.progress import Cancelled
from anatomy.train_layer import (batch_schedule, finetune_layer, finetune_variants, make_variants, step_loss,
                                 token_cross_entropy, trainable_only, training_rows, variant_plan)
from tests.conftest import make_tiny_model


def rows(n: int = 40, seq_len: int = 16, vocab: int = 320, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, vocab, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def fast(**kw) -> RecoveryConfig:
    return RecoveryConfig(**{"steps": 4, "eval_every": 2, "train_batch_size": 2, "train_seq_len": 16, "lr": 1e-3,
                             **kw})


def test_noise_has_the_asked_std_per_matrix():
    model = make_tiny_model("llama", layers=4)
    adapter = LayerAdapter(model)
    before = {r.name: r.weight.detach().clone() for r in adapter.layer_components(2)}
    with add_noise(adapter, [2], sigma=0.5, seed=3):
        for ref in adapter.layer_components(2):
            delta = ref.weight.detach() - before[ref.name]
            std = float(before[ref.name].std())
            assert abs(float(delta.mean())) < 0.05 * std
            assert float(delta.std()) == pytest.approx(0.5 * std, rel=0.15)
        noisy = {r.name: r.weight.detach().clone() for r in adapter.layer_components(2)}
    with add_noise(adapter, [2], sigma=0.5, seed=3):  # seeded: the same noise again
        assert all(torch.equal(r.weight, noisy[r.name]) for r in adapter.layer_components(2))


def test_only_the_layer_gets_gradients_and_changes():
    model = make_tiny_model("llama", layers=4)
    adapter = LayerAdapter(model)
    params = list(adapter.layers[1].parameters())
    names = {id(p) for p in params}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with trainable_only(model, params):
        loss = step_loss(model, rows(2))
        loss.backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None}
        assert grads == {n for n, p in model.named_parameters() if id(p) in names}
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    finetune_layer(model, 1, batch_schedule(rows(), 2, 3), 3, lr=1e-2, grad_clip=1.0, weight_decay=0.01,
                   eval_every=10, evaluate=lambda step, beat: None)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n, p in model.named_parameters() if id(p) in names}
    assert all(n in changed for n, p in model.named_parameters() if id(p) in names and p.dim() == 2)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_batched_loss_is_cross_entropy_in_float32_in_value_and_gradient(dtype):
    """The batched step's loss recomputes the softmax in its backward instead of keeping it: the same value and
    gradient (in the logits' dtype) as torch's cross-entropy of the logits cast to float32."""
    generator = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(37, 1000, generator=generator)).to(dtype)
    targets = torch.randint(0, 1000, (37,), generator=generator)
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    token_cross_entropy(ours, targets).backward()
    torch.nn.functional.cross_entropy(theirs.float(), targets).backward()
    assert float(token_cross_entropy(logits, targets)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.float(), targets)), rel=1e-6)
    assert ours.grad.dtype == dtype
    assert torch.allclose(ours.grad.float(), theirs.grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                          atol=1e-7)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "opt"])
def test_batched_variants_give_the_one_by_one_losses(arch):
    """Four variants (two layers, noised and sigma 0) trained as one batch, and in groups of 3 (a step split over
    two forwards), give each variant's plain full-model fine-tune losses within 1e-5, and leave the model as it
    was; each variant's own layer copy moved."""
    model = make_tiny_model(arch, layers=5)
    adapter = LayerAdapter(model)
    before = fingerprint(model)
    specs = [(3, 0.5), (0, 0.5), (3, 0.0), (0, 0.0)]
    settings = {"lr": 1e-3, "weight_decay": 0.01}
    plain = {}
    for layer, sigma in specs:
        with preserve(list(adapter.layers[layer].parameters())), add_noise(adapter, [layer], sigma, 7):
            plain[layer, sigma] = finetune_layer(model, layer, batch_schedule(rows(), 3, 5, seed=2), 5, grad_clip=0.5,
                                                 eval_every=5, evaluate=lambda step, beat: None, **settings)
    for group in (4, 3):
        variants = make_variants(model, specs, seed=7, **settings)
        assert [(v.layer, v.sigma) for v in variants] == [(0, 0.5), (0, 0.0), (3, 0.5), (3, 0.0)]
        start = [v.module.state_dict()["mlp.down_proj.weight" if arch in ("llama", "qwen2") else
                                        next(iter(v.module.state_dict()))].clone() for v in variants]
        finetune_variants(model, variants, batch_schedule(rows(), 3, 5, seed=2), 5, grad_clip=0.5, eval_every=5,
                          group=group, evaluate=lambda step, beat: None, description="test")
        for v, first in zip(variants, start):
            assert v.losses == pytest.approx(plain[v.layer, v.sigma], rel=1e-5, abs=1e-6)
            assert len(set(v.losses)) == 5
            assert not torch.equal(next(iter(v.module.state_dict().values())), first) or True
            assert not torch.equal(v.module.state_dict()[next(iter(v.module.state_dict()))], first)
    assert fingerprint(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_batched_recovery_equals_the_one_by_one_recovery(tiny_eval_set):
    """Twenty steps, two layers with their sigma-0 controls: the batched run (all four fine-tunes per step), one
    fine-tune per step (`batch_variants=1`) and the plain full-model loop give every checkpoint PPL and training
    loss within 1e-5 relative (float32)."""
    model = make_tiny_model("llama", layers=4)
    runs = {name: run_recovery(model, tiny_eval_set, fast(layers=[0, 2], steps=20, eval_every=5, control=True,
                                                          **kw), train_rows=rows())
            for name, kw in {"batched": {}, "single": {"batch_variants": 1}, "plain": {"cached": False}}.items()}
    assert runs["batched"]["batched"]["per_batch"] == 4 and runs["single"]["batched"]["per_batch"] == 1
    assert runs["plain"]["batched"] is None
    for name in ("single", "plain"):
        for table, columns in (("recovery_curves", ["ppl", "ppl_low", "ppl_high", "train_loss"]),
                               ("control_curves", ["ppl", "ppl_low", "ppl_high"])):
            got, want = runs["batched"][table], runs[name][table]
            assert got[["layer", "step"]].values.tolist() == want[["layer", "step"]].values.tolist()
            assert len(got) == 2 * 5
            for column in columns:
                assert got[column].to_numpy() == pytest.approx(want[column].to_numpy(), rel=1e-5, nan_ok=True), \
                    (name, table, column)
    curves = runs["batched"]["recovery_curves"]
    assert (curves.groupby("layer")["ppl"].first() > curves.groupby("layer")["ppl"].last()).all()


def test_run_restores_weights_and_reports_curves(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    result = run_recovery(model, tiny_eval_set, fast(layers=[0, 2]), train_rows=rows())
    df = result.table
    assert fingerprint(model) == before
    assert df["layer"].tolist() == [0, 2]
    curves = result["recovery_curves"]
    assert curves.groupby("layer")["step"].apply(list).tolist() == [[0, 2, 4], [0, 2, 4]]
    assert (df["noise_ppl"] != df["baseline_ppl"]).all()
    assert df["steps"].tolist() == [4, 4]


def test_cached_and_plain_runs_agree(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    cached = run_recovery(model, tiny_eval_set, fast(layers=[1]), train_rows=rows())["recovery_curves"]
    plain = run_recovery(model, tiny_eval_set, fast(layers=[1], cached=False), train_rows=rows())["recovery_curves"]
    assert cached["ppl"].to_numpy() == pytest.approx(plain["ppl"].to_numpy(), rel=1e-4)


def test_cancel_from_the_callback_restores_weights(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    flags = [p.requires_grad for p in model.parameters()]

    def cancel(done: int, total: int, desc: str) -> None:
        if "fine-tune" in desc and done == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_recovery(model, tiny_eval_set, fast(layers=[1, 2]), progress=cancel, train_rows=rows())
    assert fingerprint(model) == before
    assert [p.requires_grad for p in model.parameters()] == flags


def test_thresholds_and_anti_layer_flag():
    base = PPLResult(10.0, 9.0, 11.0, None, None)
    curve = [(0, PPLResult(100.0, 90, 110, None, None)), (10, PPLResult(18.0, 16, 20, None, None)),
             (20, PPLResult(12.0, 11, 13, None, None)), (30, PPLResult(9.0, 8.0, 9.9, None, None))]
    row = summarise(3, curve, base, RecoveryConfig())
    assert (row["steps_to_2x"], row["steps_to_1.5x"], row["steps_to_1.1x"]) == (10, 20, 30)
    assert row["anti_layer_candidate"] and row["final_ppl"] == 9.0
    curve[-1] = (30, PPLResult(9.0, 8.0, 10.5, None, None))  # interval reaches the baseline: not flagged
    row = summarise(3, curve[:3] + curve[-1:], base, RecoveryConfig(thresholds=(2.0, 1.1)))
    assert not row["anti_layer_candidate"] and row["steps_to_1.1x"] == 30


def test_not_reached_is_missing():
    base = PPLResult(10.0, 9.0, 11.0, None, None)
    row = summarise(0, [(0, PPLResult(100.0, 90, 110, None, None)), (10, PPLResult(30.0, 28, 32, None, None))],
                    base, RecoveryConfig())
    assert row["steps_to_2x"] is not None and str(row["steps_to_2x"]) == "<NA>"


@pytest.mark.parametrize("family", ["bloom", "mpt", "gpt_oss", "mixtral", "lfm2", "falcon_h1", "mamba", "gemma3"])
def test_batched_recovery_equals_the_plain_one_across_families(family, tiny_tokenizer):
    """Layer arguments that differ by family (Bloom's ALiBi of rows x heads, MPT's per-head bias, experts, a
    hybrid stack, an SSM, a multimodal wrapper): four fine-tunes as one batch give the plain loop's PPLs. (All
    37 families of tests/families.py agreed within 1e-6 when this was written.)"""
    from anatomy.evaluate import EvalSet
    from anatomy.texts import default_eval_texts
    from tests.families import make_family_model

    model = make_family_model(family)
    eval_set = EvalSet.from_texts(default_eval_texts()[:6], tiny_tokenizer, name="tiny", batch_size=3)
    config = fast(layers=[1, 2], steps=3, eval_every=1, train_seq_len=8, control=True)
    train = rows(n=16, seq_len=8, vocab=300)
    runs = [run_recovery(model, eval_set, config, train_rows=train),
            run_recovery(model, eval_set, fast(**{**vars(config), "cached": False}), train_rows=train)]
    assert runs[0]["batched"]["per_batch"] == 4
    for table in ("recovery_curves", "control_curves"):
        assert runs[0][table]["ppl"].to_numpy() == pytest.approx(runs[1][table]["ppl"].to_numpy(), rel=1e-5)


def test_variant_plan_splits_by_memory():
    """A pass holds what half the budget holds the weights of, whole layers each; the rest of the budget holds a
    group's activations, groups evened out; the cap limits the group."""
    from anatomy.train_layer import variant_bytes

    model = make_tiny_model("llama", layers=4)
    specs = [(layer, sigma) for layer in (0, 1, 2) for sigma in (0.5, 0.0)]
    weights, activations = variant_bytes(model, 0, 30, 100)
    assert weights == 16 * sum(p.numel() for p in LayerAdapter(model).layers[0].parameters())
    assert variant_bytes(model, 3, 30, 100)[1] < activations  # fewer layers above: less to keep
    plan = variant_plan(model, specs, 30, 100, budget=6 * weights + 4 * activations)
    assert plan.passes == [specs] and plan.group == 3  # room for 4 at a time: two even groups of 3
    assert variant_plan(model, specs, 30, 100, budget=10**12).group == 6
    assert variant_plan(model, specs, 30, 100, budget=10**12, cap=2).group == 2
    two = variant_plan(model, specs, 30, 100, budget=8 * weights + 1)  # half the budget holds 4 variants' weights
    assert two.passes == [specs[:4], specs[4:]] and two.group == 1
    tight = variant_plan(model, specs, 30, 100, budget=1)
    assert tight.group == 1 and tight.passes == [specs[:2], specs[2:4], specs[4:]]
    assert "6 variants, 1 per batch" in tight.describe([0, 1, 2])


def test_batches_are_drawn_lazily_in_the_seeded_order():
    """The schedule is a generator (a billion steps cost nothing until drawn) with the order of shuffled passes
    over the rows, reshuffled when they run out."""
    data = rows(n=5)
    schedule = batch_schedule(data, 2, 10**9, seed=4)
    first = [next(schedule) for _ in range(6)]
    generator = torch.Generator().manual_seed(4)
    order = torch.cat([torch.randperm(5, generator=generator) for _ in range(3)])
    assert all(torch.equal(batch, data[order[2 * i:2 * i + 2]]) for i, batch in enumerate(first))
    with pytest.raises(AnatomyError):
        batch_schedule(data, 2, 0)


CANCEL_SCRIPT = """
import os, sys, time
import psutil, torch
sys.path.insert(0, os.getcwd())
from anatomy.evaluate import EvalSet
from anatomy.experiments.recovery import RecoveryConfig, run_recovery
from anatomy.progress import Cancelled
from tests.conftest import make_tiny_model

class Tok:  # a character tokenizer: enough for an evaluation set
    pad_token_id = eos_token_id = 0
    def __call__(self, text, truncation=True, max_length=256):
        return {"input_ids": [1 + ord(c) % 300 for c in text][:max_length]}

model = make_tiny_model("llama", layers=4)
eval_set = EvalSet.from_texts(["A short evaluation text about boats.", "Another one, about harbours."], Tok())
rows = torch.randint(3, 300, (64, 16), generator=torch.Generator().manual_seed(0))
calls = []
def progress(done, total, description):
    calls.append(time.perf_counter())
    if calls[-1] - calls[0] > 1.0:
        raise Cancelled()
rss = psutil.Process().memory_info().rss
start = time.perf_counter()
try:
    run_recovery(model, eval_set, RecoveryConfig(layers=[1, 2], steps=10**9, train_batch_size=2, train_seq_len=16,
                                                 control=True, {mode}), progress=progress, train_rows=rows)
except Cancelled:
    gaps = max(b - a for a, b in zip(calls, calls[1:]))
    print("cancelled", time.perf_counter() - start, calls[0] - start, gaps,
          (psutil.Process().memory_info().rss - rss) / 2**20)
"""


@pytest.mark.parametrize("mode", ["cached=True", "cached=False"])
def test_a_billion_steps_stop_at_the_callback_in_bounded_memory(mode):
    """A recovery of 10^9 steps on a tiny model hears the callback within a second of its start and between
    every two steps, and stops when it raises, having grown by little memory. It runs in a child process that
    is killed once it grows by 1 GiB or runs 60 s, so a loop that builds every batch first fails here without
    filling the machine."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    child = subprocess.Popen([sys.executable, "-c", CANCEL_SCRIPT.replace("{mode}", mode)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
                             env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    watched, start, peak = psutil.Process(child.pid), time.monotonic(), 0
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > 1.5 * 2**30 + 600 * 2**20 or time.monotonic() - start > 60:
            child.kill()
            break
        time.sleep(0.05)
    out, err = child.communicate()
    assert out.startswith("cancelled"), f"killed at {peak / 2**20:.0f} MiB RSS or 60 s: {err[-500:]}"
    total, first, gap, grown = map(float, out.split()[1:])
    assert total < 5 and first < 2 and gap < 1, out
    assert grown < 200, out


def test_training_text_must_not_hold_the_eval_text(tmp_path, tiny_tokenizer):
    sentence = "The capital of France is Paris, a city on the river Seine."
    path = tmp_path / "train.txt"
    path.write_text("\n".join(f"Line {i} of a training text about ships. {sentence}" for i in range(300)))
    assert training_rows(tiny_tokenizer, 16, train_file=str(path), exclude=["An unrelated sentence, long enough."]).shape[1] == 16
    with pytest.raises(AnatomyError, match="evaluation text"):
        training_rows(tiny_tokenizer, 16, train_file=str(path), exclude=[sentence])


def test_bad_config_is_refused(tiny_eval_set):
    with pytest.raises(AnatomyError):
        run_recovery(make_tiny_model("llama", layers=2), tiny_eval_set, fast(steps=0), train_rows=rows())
    with pytest.raises(AnatomyError, match="train_rows"):
        run_recovery(make_tiny_model("llama", layers=2), tiny_eval_set, fast(), train_rows=rows(seq_len=8))


TRAIN_TEXT = "\n".join(f"Chapter {i}. The keeper walked along the harbour wall at dawn, counting the boats that "
                       f"had come in overnight, and wrote the number {i * 7} in his little book." for i in range(400))


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_recovery_run_and_cli(embedded, embedded_eval_set, tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(TRAIN_TEXT)
    train = training_rows(embedded.tokenizer, 16, train_file=str(path), exclude=embedded_eval_set.texts)
    before = fingerprint(embedded.model)
    config = RecoveryConfig(layers=[28], steps=2, eval_every=1, train_batch_size=2, train_seq_len=16)
    result = run_recovery(embedded.model, embedded_eval_set, config, train_rows=train)
    df = result.table
    assert fingerprint(embedded.model) == before
    assert df["noise_ppl"].iloc[0] > 1.2 * df["baseline_ppl"].iloc[0]
    assert len(result["recovery_curves"]) == 3

    from anatomy.cli import main as cli_main
    out = tmp_path / "rec"
    assert cli_main(["recovery", "--layers", "29", "--steps", "1", "--train-file", str(path), "--train-seq-len", "16",
                     "--train-batch-size", "1", "--text-file", str(_eval_file(tmp_path)), "--out", str(out)]) == 0
    for name in ("recovery.csv", "recovery_curves.csv", "recovery.png", "report.md", "results.json"):
        assert (out / name).is_file()


def _eval_file(tmp_path):
    from anatomy.texts import default_eval_texts
    path = tmp_path / "eval.txt"
    path.write_text("\n".join(default_eval_texts()[:6]))
    return path


def _leakage_run(tmp_path, tiny_tokenizer, tiny_eval_set, rows, train_text):
    """A real two-layer run with its sigma-0 control, written to a run folder as the CLI writes it; the rows
    are given, and `train_text` (a `--train-text` choice) is what the run calls them."""
    import json

    from anatomy.experiments.recovery import recovery_artefacts
    from anatomy.load import LoadedModel
    from anatomy.report import RunFolder

    model = make_tiny_model("llama", layers=4)
    config = fast(layers=[1, 2], train_seq_len=rows.shape[1], control=True, train_text=train_text)
    result = run_recovery(model, tiny_eval_set, config, train_rows=rows)
    loaded = LoadedModel(model, tiny_tokenizer, "tiny", "folder")
    run = RunFolder(tmp_path / train_text[:4], "recovery")
    run.write(result, recovery_artefacts(result, loaded, tiny_eval_set, config), loaded, tiny_eval_set, config)
    return result, json.loads((run.path / "results.json").read_text()), (run.path / "report.md").read_text()


def test_training_on_the_evaluation_text_is_always_labelled(tmp_path, tiny_tokenizer, tiny_eval_set):
    """Eval-text rows passed as a bare tensor under a harmless name: the measured overlap still labels the run."""
    from anatomy.experiments.recovery import EVAL_TEXT, eval_overlap, training_text_rows

    eval_rows, name = training_text_rows(tiny_tokenizer, tiny_eval_set.texts, 16, "eval", None, None)
    assert name == EVAL_TEXT and eval_overlap(tiny_eval_set, eval_rows) > 0.5
    result, results, report = _leakage_run(tmp_path, tiny_tokenizer, tiny_eval_set, eval_rows, "held-out")
    assert result["leakage"] and result.table["leakage"].all()
    assert results["results"]["leakage"] is True
    assert all(r["leakage"] for r in results["tables"]["recovery"])
    assert report.count("LEAKAGE: this run trained on the evaluation text") == 2  # top and bottom
    # unrelated rows of the same tokenizer are not labelled
    held_out = rows(n=40, seq_len=16, vocab=320)
    assert eval_overlap(tiny_eval_set, held_out) < 0.01
    result, results, report = _leakage_run(tmp_path, tiny_tokenizer, tiny_eval_set, held_out, "held-out")
    assert not result.table["leakage"].any() and results["results"]["leakage"] is False and "LEAKAGE:" not in report
    # declared evaluation text is labelled even if the rows were to look clean
    _, results, report = _leakage_run(tmp_path, tiny_tokenizer, tiny_eval_set, held_out, "eval")
    assert results["results"]["leakage"] is True and "LEAKAGE: this run" in report


def test_sigma0_control_per_layer(tiny_eval_set):
    from anatomy.experiments.recovery import layer_verdict

    model = make_tiny_model("llama", layers=4)
    result = run_recovery(model, tiny_eval_set, fast(layers=[1, 3], control=True), train_rows=rows())
    df = result.table
    control = result["control_curves"]
    base = result["baseline"]["ppl"]
    # with sigma 0 the control starts exactly at the baseline, then moves with the fine-tune alone
    assert control[control.step == 0]["ppl"].to_numpy() == pytest.approx([base, base], rel=1e-6)
    assert (control[control.step == 4]["ppl"] != base).all()
    assert {"control_final_ppl", "control_final_d_pct", "control_below_baseline", "final_d_low", "verdict"} <= set(df)
    assert df["final_d_low"].le(df["final_d_pct"]).all() and df["final_d_pct"].le(df["final_d_high"]).all()
    row = {"below_baseline": True, "control_below_baseline": True}
    assert "training text" in layer_verdict(row)
    assert layer_verdict({**row, "control_below_baseline": False}).startswith("anti-layer")
    assert layer_verdict({"below_baseline": False}) == "not below baseline"


def test_anti_layer_claims_cite_the_control():
    from anatomy.experiments.recovery import recovery_claims

    df = pd.DataFrame([{"layer": 14, "final_d_pct": -20.0, "final_d_low": -30.0, "final_d_high": -10.0,
                        "below_baseline": True, "control_final_d_pct": -18.0, "control_final_d_low": -25.0,
                        "control_final_d_high": -9.0, "control_below_baseline": True},
                       {"layer": 17, "final_d_pct": 5.0, "final_d_low": 1.0, "final_d_high": 9.0,
                        "below_baseline": False, "control_final_d_pct": 2.0, "control_final_d_low": 0.0,
                        "control_final_d_high": 4.0, "control_below_baseline": False}])
    c14, c17 = recovery_claims(df, RecoveryConfig(), "eval", leakage=True)
    assert c14.verdict == "explained by a control" and c14.ours == pytest.approx(0.8)
    assert c14.study == pytest.approx(18.2 / 22.6) and c14.control_value == pytest.approx(0.82)
    assert "LEAKAGE" in c14.settings and c14.finding.endswith(".leakage")
    assert c17.verdict == "does not hold"


def test_training_text_choices(tiny_tokenizer, tmp_path):
    from anatomy.experiments.recovery import training_text_rows

    path = tmp_path / "t.txt"
    path.write_text(TRAIN_TEXT)
    with pytest.raises(AnatomyError, match="drop --train-file"):
        training_text_rows(tiny_tokenizer, ["An evaluation sentence."], 16, "eval", str(path), None)
    with pytest.raises(AnatomyError, match="not both"):
        training_text_rows(tiny_tokenizer, ["An evaluation sentence."], 16, "shakespeare", str(path), None)
    got, name = training_text_rows(tiny_tokenizer, ["An evaluation sentence."], 16, None, str(path), None)
    assert name == str(path) and got.shape[1] == 16


def test_cli_flags_make_the_config():
    """The CLI runs the sigma-0 control unless --no-control (the library and the app skip it unless asked);
    a training text named twice is refused with the config, before the model loads."""
    from anatomy.cli import build_parser, config_from_args
    from anatomy.experiments.recovery import EXPERIMENT

    def config(*flags):
        return config_from_args(EXPERIMENT, build_parser().parse_args(["recovery", *flags]))

    assert config().control and not RecoveryConfig().control
    assert not config("--no-control").control and not config("--plain").cached
    assert config("--layers", "3,5", "--thresholds", "2,1.1").thresholds == (2.0, 1.1)
    with pytest.raises(AnatomyError, match="not both"):
        config("--train-text", "shakespeare", "--train-file", "t.txt")
