"""EVALUATE: token-weighted perplexity with a bootstrap interval, and the prefix activation cache.

PPL here is `exp(sum of token NLLs / number of predicted tokens)` over all texts (token-weighted, not a
mean of per-text PPLs), each text scored on its own with its special tokens, padding excluded from every
sum. The 95% interval resamples *texts* with replacement; the resample indices are fixed per evaluation
set, so two PPLs on the same set are paired and a ratio's interval (the degradation D) is honest.

The prefix cache records, in one baseline pass, the hidden states entering every decoder layer and the
exact arguments the model passed to each layer. An intervention on layer l leaves everything below l
unchanged, so its PPL needs only layers l..N-1 and the head: on average half the work of a full pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import AnatomyError
from .layers import LayerAdapter

N_BOOTSTRAP = 2000
IGNORE = -100  # target at padding positions
HEAD_CHUNK = 256  # rows of logits alive at once: a few x 50 MB for a 49k vocabulary, and faster than all at once


@dataclass
class Batch:
    """Padded rows of texts without their last token (it predicts nothing and, causally, nothing attends to
    it, so feeding it would only cost time), and the next token at every fed position (-100 on padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    text_index: torch.Tensor  # position of each row in EvalSet.texts


@dataclass
class EvalSet:
    """Tokenised, batched evaluation texts plus the fixed bootstrap resamples over them."""

    texts: list[str]
    name: str
    batches: list[Batch]
    token_counts: np.ndarray  # predicted tokens per text
    bootstrap_indices: np.ndarray = field(repr=False)  # (N_BOOTSTRAP, n_texts)

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, *, name: str = "custom",
                   batch_size: int = 16, max_length: int = 256, device: torch.device | str = "cpu",
                   seed: int = 0) -> EvalSet:
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise AnatomyError("The evaluation text is empty: give at least one sentence.")
        if batch_size < 1 or max_length < 2:
            raise AnatomyError(f"batch_size must be >= 1 and max_length >= 2 (got {batch_size}, {max_length}).")
        encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        for text, ids in zip(texts, encoded):
            if len(ids) < 2:
                raise AnatomyError(f"Evaluation text {text[:40]!r} is too short: each text needs at least "
                                   "2 tokens to predict one.")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths: little padding
        batches = []
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows) - 1
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
            for r, i in enumerate(rows):
                text = torch.tensor(encoded[i])
                ids[r, :len(text) - 1], targets[r, :len(text) - 1] = text[:-1], text[1:]
                mask[r, :len(text) - 1] = 1
            batches.append(Batch(ids.to(device), mask.to(device), targets.to(device), torch.tensor(rows)))
        counts = np.array([len(e) - 1 for e in encoded], dtype=np.int64)
        rng = np.random.default_rng(seed)
        boot = rng.integers(0, len(texts), size=(N_BOOTSTRAP, len(texts)))
        return cls(list(texts), name, batches, counts, boot)

    @property
    def num_tokens(self) -> int:
        return int(self.token_counts.sum())


@dataclass
class PPLResult:
    """A perplexity, its 95% bootstrap interval, and the per-text sums it came from."""

    ppl: float
    low: float
    high: float
    nll: np.ndarray  # summed NLL per text
    tokens: np.ndarray

    def as_dict(self) -> dict:
        return {"ppl": self.ppl, "ppl_low": self.low, "ppl_high": self.high}


def _bootstrap_ppl(nll: np.ndarray, tokens: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.exp(nll[indices].sum(axis=1) / tokens[indices].sum(axis=1))


def ppl_result(nll: np.ndarray, eval_set: EvalSet) -> PPLResult:
    tokens = eval_set.token_counts
    boot = _bootstrap_ppl(nll, tokens, eval_set.bootstrap_indices)
    low, high = np.percentile(boot, [2.5, 97.5])
    return PPLResult(float(np.exp(nll.sum() / tokens.sum())), float(low), float(high), nll, tokens)


def degradation(result: PPLResult, baseline: PPLResult, eval_set: EvalSet) -> tuple[float, float, float]:
    """D = (PPL / PPL_baseline - 1) x 100 %, with a paired bootstrap 95% interval over texts."""
    idx = eval_set.bootstrap_indices
    ratio = _bootstrap_ppl(result.nll, result.tokens, idx) / _bootstrap_ppl(baseline.nll, baseline.tokens, idx)
    low, high = np.percentile(ratio, [2.5, 97.5])
    return (result.ppl / baseline.ppl - 1) * 100, (low - 1) * 100, (high - 1) * 100


def _nll(logits: torch.Tensor, targets: torch.Tensor, vocab_dim: int = -1) -> torch.Tensor:
    """Next-token NLL of each of n positions (log-sum-exp minus the target's logit); `logits` is [n, vocab],
    or [vocab, n] with `vocab_dim=0`."""
    logits = logits.float()
    index = targets[:, None] if vocab_dim == -1 else targets[None, :]
    return torch.logsumexp(logits, dim=vocab_dim) - logits.gather(vocab_dim, index).flatten()


def _per_text(batch: Batch, positions: tuple[torch.Tensor, torch.Tensor], nll: torch.Tensor) -> torch.Tensor:
    """Summed NLL per row of the batch from the NLLs at its predicted `positions` (padding excluded)."""
    return torch.zeros(batch.targets.shape[0], dtype=torch.float64, device=nll.device).index_add_(
        0, positions[0], nll.double())


def head_nll(adapter: LayerAdapter, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed NLL per text from the last decoder layer's output: the head runs only on positions that
    predict a token, in chunks, so the full [batch, length, vocab] logits never exist."""
    positions = (batch.targets != IGNORE).nonzero(as_tuple=True)
    rows, targets = hidden[positions], batch.targets[positions]
    nll = torch.cat([_nll(adapter.vocab_major_logits(rows[s:s + HEAD_CHUNK]), targets[s:s + HEAD_CHUNK], 0)
                     for s in range(0, len(rows), HEAD_CHUNK)])
    return _per_text(batch, positions, nll)


def logits_nll(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed NLL per text from a full forward's logits [batch, length, vocab]."""
    positions = (batch.targets != IGNORE).nonzero(as_tuple=True)
    return _per_text(batch, positions, _nll(logits[positions], batch.targets[positions]))


def _collect(eval_set: EvalSet, per_batch: list[torch.Tensor]) -> np.ndarray:
    nll = np.zeros(len(eval_set.texts))
    for batch, values in zip(eval_set.batches, per_batch):
        nll[batch.text_index.numpy()] = values.double().cpu().numpy()
    if not np.isfinite(nll).all():
        return np.full_like(nll, np.inf)
    return nll


@torch.no_grad()
def perplexity(model: PreTrainedModel, eval_set: EvalSet, cache: PrefixCache | None = None,
               from_layer: int = 0) -> PPLResult:
    """PPL of the model as it is now; with a cache, only layers `from_layer`..N-1 and the head run
    (`from_layer` = N: the head alone, on the recorded baseline output, for the unchanged model)."""
    per_batch = []
    for b, batch in enumerate(eval_set.batches):
        if cache is not None:
            per_batch.append(head_nll(cache.adapter, cache.hidden_from(from_layer, b), batch))
        else:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            per_batch.append(logits_nll(logits, batch))
    return ppl_result(_collect(eval_set, per_batch), eval_set)


class PrefixCache:
    """Hidden states entering every decoder layer, and each layer's call arguments, for every batch.

    Built from one baseline forward pass with pre-hooks, so it works for any architecture whose decoder
    calls its layers in order: replaying layer i with the recorded arguments reproduces the model's own
    forward exactly. The layers are looked up at replay time, so a skipped layer (a `Residual` stand-in)
    or edited weights take effect; the cache itself must be rebuilt only if layers *below* the replay
    start change.
    """

    def __init__(self, model: PreTrainedModel, eval_set: EvalSet, keep_layers: Sequence[int] | None = None):
        """`keep_layers`: keep only the inputs of these layers (others stay None) to save memory; calls are
        always kept for every layer, so `hidden_from(l, ...)` works for each kept `l`. Default: all."""
        self.adapter = LayerAdapter(model)
        n = self.adapter.num_layers
        keep = set(range(n)) if keep_layers is None else set(keep_layers)
        self.inputs: list[list[torch.Tensor]] = []  # [batch][layer] hidden states entering the layer
        self.calls: list[list[tuple[tuple, dict]]] = []  # [batch][layer] (other args, kwargs)
        self.outputs: list[torch.Tensor] = []  # [batch] output of the last layer
        for batch in eval_set.batches:
            inputs: list[torch.Tensor | None] = [None] * n
            calls: list[tuple[tuple, dict] | None] = [None] * n

            def record(index: int):
                def hook(module, args, kwargs):
                    if args:
                        hidden, calls[index] = args[0], (args[1:], dict(kwargs))
                    else:
                        rest = dict(kwargs)
                        hidden, calls[index] = rest.pop("hidden_states"), ((), rest)
                    inputs[index] = hidden if index in keep else None
                return hook

            def keep_output(module, args, output):
                self.outputs.append(output[0] if isinstance(output, tuple) else output)

            handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True)
                       for i, layer in enumerate(self.adapter.layers)]
            handles.append(self.adapter.layers[n - 1].register_forward_hook(keep_output))
            try:
                with torch.no_grad():
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False,
                          logits_to_keep=1)  # the head's work is redone where it is needed
            finally:
                for handle in handles:
                    handle.remove()
            if any(x is None for x in calls):
                raise AnatomyError(f"{type(model).__name__} did not call every decoder layer once; "
                                   "the prefix cache cannot be used with it.")
            self.inputs.append(inputs)
            self.calls.append(calls)
        self.masks = [batch.attention_mask for batch in eval_set.batches]

    def hidden_from(self, layer: int, batch: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Run layers `layer`..N-1 (as they are now) on the cached (or given) input of `layer`; `layer` = N
        gives the recorded output of the last layer."""
        if hidden is None:
            h = self.outputs[batch] if layer == self.adapter.num_layers else self.inputs[batch][layer]
        else:
            h = hidden
        for i in range(layer, self.adapter.num_layers):
            args, kwargs = self.calls[batch][i]
            h = self.adapter.layers[i](h, *args, **kwargs)
            h = h[0] if isinstance(h, tuple) else h
        return h

    def layer_output(self, layer: int, batch: int) -> torch.Tensor:
        """Baseline output of `layer` (the input of the next one)."""
        return self.inputs[batch][layer + 1] if layer + 1 < self.adapter.num_layers else self.outputs[batch]


def one_pass_scores(cache: PrefixCache) -> dict[str, np.ndarray]:
    """Block Influence (1 - cos(input, output)) and angular distance (arccos(cos)/pi) per layer.

    Averaged over every fed token of the evaluation set (padding and each text's unfed last token excluded),
    from the baseline pass alone (Men et al. 2024 "ShortGPT"; Gromov et al. 2024 for the angular distance).
    """
    n = cache.adapter.num_layers
    sums = {"block_influence": np.zeros(n), "angular_distance": np.zeros(n)}
    count = 0
    for b, mask in enumerate(cache.masks):
        keep = mask.bool()
        count += int(keep.sum())
        for layer in range(n):
            cos = F.cosine_similarity(cache.inputs[b][layer][keep].float(),
                                      cache.layer_output(layer, b)[keep].float(), dim=-1).clamp(-1, 1)
            sums["block_influence"][layer] += float((1 - cos).sum())
            sums["angular_distance"][layer] += float((torch.arccos(cos) / torch.pi).sum())
    return {k: v / count for k, v in sums.items()}
