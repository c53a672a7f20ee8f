"""Perplexity: token-weighted, padding excluded, bootstrap intervals; the prefix cache equals the full forward."""

import math

import numpy as np
import pytest
import torch

from anatomy import interventions as iv
from anatomy.errors import AnatomyError
from anatomy.evaluate import (EvalSet, PPLResult, PrefixCache, degradation, one_pass_scores, packing_is_exact, perplexity,
                              token_nll)
from anatomy.layers import LayerAdapter
from anatomy.texts import default_eval_texts, resolve_eval_texts, split_texts
from conftest import make_tiny_model


def test_default_eval_set_has_40_plus_distinct_sentences():
    texts = default_eval_texts()
    assert len(texts) >= 40 and len(set(texts)) == len(texts)
    assert all(len(t.split()) >= 8 for t in texts)


def test_batched_ppl_equals_per_text_token_weighted(tiny_tokenizer):
    """Padding must not leak: batches of mixed lengths give the same PPL as one text at a time."""
    model = make_tiny_model("llama")
    texts = default_eval_texts()[:7]
    batched = perplexity(model, EvalSet.from_texts(texts, tiny_tokenizer, batch_size=4))
    nll, tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        nll += loss * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    assert batched.ppl == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert batched.low <= batched.ppl <= batched.high


def test_packed_rows_hold_every_text_once_with_restarting_positions(tiny_tokenizer):
    texts = default_eval_texts()[:23]
    eval_set = EvalSet.from_texts(texts, tiny_tokenizer, batch_size=len(texts))  # padded: one batch
    assert sum(b.input_ids.numel() for b in eval_set.packed_batches) < sum(b.input_ids.numel()
                                                                          for b in eval_set.batches)
    seen = {}
    for batch in eval_set.packed_batches:
        assert batch.input_ids.shape[0] > 1 and set(batch.model_inputs()) == {"input_ids", "position_ids"}
        for row in range(batch.input_ids.shape[0]):
            for text in batch.owners[row].unique().tolist():
                if text < 0:
                    continue
                at = batch.owners[row] == text
                assert batch.position_ids[row, at].tolist() == list(range(int(at.sum())))
                seen[text] = batch.input_ids[row, at].tolist() + batch.targets[row, at][-1:].tolist()
                assert batch.targets[row, at][:-1].tolist() == seen[text][1:-1]
    assert seen == {i: tiny_tokenizer(t)["input_ids"] for i, t in enumerate(texts)}


def test_prefix_cache_packs_only_models_that_keep_texts_apart(tiny_tokenizer):
    """OPT computes positions from the attention mask, so packed texts would see each other: padded rows."""
    eval_set = EvalSet.from_texts(default_eval_texts()[:9], tiny_tokenizer, batch_size=9)
    llama, opt = make_tiny_model("llama"), make_tiny_model("opt")
    assert packing_is_exact(llama) and not packing_is_exact(opt)
    assert eval_set.packed_batches and PrefixCache(llama, eval_set).batches is eval_set.packed_batches
    assert PrefixCache(opt, eval_set).batches is eval_set.batches


def test_prefix_cache_equals_full_forward(arch, tiny_tokenizer):
    """The full forward runs padded rows; the cache replays packed ones wherever the model allows it."""
    model = make_tiny_model(arch)
    eval_set = EvalSet.from_texts(default_eval_texts()[:9], tiny_tokenizer, batch_size=9)
    cache = PrefixCache(model, eval_set)
    assert (cache.batches is eval_set.packed_batches) == (arch != "opt")
    adapter = LayerAdapter(model)
    full = perplexity(model, eval_set).ppl
    for layer in range(adapter.num_layers):
        assert abs(perplexity(model, eval_set, cache, layer).ppl / full - 1) < 1e-4
    for layer in (0, 3, 5):
        for mode in ("neighbour-mean", "skip", "zero"):
            with iv.ablate(adapter, layer, mode):
                want = perplexity(model, eval_set).ppl
                got = perplexity(model, eval_set, cache, layer).ppl
            assert abs(got / want - 1) < 1e-4, (layer, mode)


@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_blockwise_token_nll_equals_log_softmax(block):
    """The online log-sum-exp over vocabulary blocks gives -log_softmax at the target, whatever the block
    size and wherever a target falls (first, last, a block's edge)."""
    model = make_tiny_model("llama")
    adapter = LayerAdapter(model)
    rows = torch.randn(40, model.config.hidden_size) * 3
    vocab = model.config.vocab_size
    targets = torch.tensor([0, vocab - 1, 6, 7, 8, 63, 64] + list(range(100, 133)))
    want = -torch.log_softmax(adapter.logits(rows), dim=-1).gather(1, targets[:, None]).flatten()
    torch.testing.assert_close(token_nll(adapter, rows, targets, block=block), want)


def test_degradation_interval_is_paired(tiny_eval_set):
    """Texts of very different difficulty, each made exactly e^0.1 times harder: a paired bootstrap sees the
    same ratio in every resample (a zero-width interval); resampling the two runs independently would not."""
    model = make_tiny_model("llama")
    base = perplexity(model, tiny_eval_set)
    tokens = tiny_eval_set.token_counts
    varied = tokens * np.linspace(0.5, 6.0, len(tokens))
    base_nll, harder_nll = PPLResult(0, 0, 0, varied, tokens), PPLResult(0, 0, 0, varied + 0.1 * tokens, tokens)
    for result in (base_nll, harder_nll):
        result.ppl = float(np.exp(result.nll.sum() / tokens.sum()))
    d, low, high = degradation(harder_nll, base_nll, tiny_eval_set)
    assert d == pytest.approx((math.exp(0.1) - 1) * 100)
    assert low == pytest.approx(d) and high == pytest.approx(d)
    with iv.scale(LayerAdapter(model), [2], 0.0):
        worse = perplexity(model, tiny_eval_set)
    d, low, high = degradation(worse, base, tiny_eval_set)
    assert low <= d <= high and d != 0


def test_one_pass_scores_range(tiny_eval_set):
    model = make_tiny_model("gpt2")
    scores = one_pass_scores(PrefixCache(model, tiny_eval_set))
    assert scores["block_influence"].shape == (6,)
    assert np.all((scores["block_influence"] >= 0) & (scores["block_influence"] <= 2))
    assert np.all((scores["angular_distance"] >= 0) & (scores["angular_distance"] <= 1))
    with iv.skip(LayerAdapter(model), [2]):
        skipped = one_pass_scores(PrefixCache(model, tiny_eval_set))
    assert skipped["block_influence"][2] == pytest.approx(0, abs=1e-6)


def test_bad_text_is_refused_with_a_clear_message(tiny_tokenizer, tmp_path):
    with pytest.raises(AnatomyError, match="empty"):
        EvalSet.from_texts(["", "   "], tiny_tokenizer)
    with pytest.raises(AnatomyError, match="too short"):
        EvalSet.from_texts(["a"], tiny_tokenizer)
    with pytest.raises(AnatomyError, match="empty"):
        resolve_eval_texts(texts=["  "])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(AnatomyError, match="empty"):
        resolve_eval_texts(text_file=str(tmp_path / "empty.txt"))
    with pytest.raises(AnatomyError, match="does not exist"):
        resolve_eval_texts(text_file=str(tmp_path / "missing.txt"))


def test_split_texts_paragraphs_or_lines():
    assert split_texts("a b\nc d\n") == ["a b", "c d"]
    assert split_texts("a\nb\n\nc  d\n") == ["a b", "c d"]
