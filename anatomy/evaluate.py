"""EVALUATE: token-weighted perplexity with a bootstrap interval, and the prefix activation cache.

PPL here is `exp(sum of token NLLs / number of predicted tokens)` over all texts (token-weighted, not a
mean of per-text PPLs), each text scored on its own with its special tokens, padding excluded from every
sum. The 95% interval resamples *texts* with replacement; the resample indices are fixed per evaluation
set, so two PPLs on the same set are paired and a ratio's interval (the degradation D) is honest.

The prefix cache records, in one baseline pass, the hidden states entering every decoder layer and the
exact arguments the model passed to each layer. An intervention on layer l leaves everything below l
unchanged, so its PPL needs only layers l..N-1 and the head: on average half the work of a full pass.
It replays texts packed several to a row where the model keeps them apart (no padding slots), and runs
the head on cache-sized vocabulary blocks with an online log-sum-exp (the logits never exist whole).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import offload
from .autocast_cache import cached_casts
from .errors import AnatomyError
from .layers import LayerAdapter

N_BOOTSTRAP = 2000
IGNORE = -100  # target at padding positions
HEAD_ROWS = 1024  # hidden rows per head call: batches are pooled up to this, since the head is faster on many rows
PACK_WIDTH = 128  # widest packed row unless a text is longer: attention's cost grows with the square of it
PACK_BATCH_TOKENS = 2048  # slots per packed batch: enough rows for the BLAS peak, little activation memory
VOCAB_BLOCK = 1024  # tokens per block of logits: [1024 rows, 1024 tokens] of float32 is 4 MB and stays in cache


@dataclass
class Batch:
    """Rows of texts without their last token (it predicts nothing and, causally, nothing attends to it,
    so feeding it would only cost time), and the next token at every fed position (-100 on padding).

    Padded rows hold one text each. Packed rows hold several texts back to back, with position ids that
    restart at every text: from those, transformers builds a block-diagonal causal mask, so each text
    sees only itself, exactly as in a row of its own, and almost no slot is padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 at fed tokens, 0 at padding
    targets: torch.Tensor
    owners: torch.Tensor  # index in EvalSet.texts of the text at each position (-1 at padding)
    position_ids: torch.Tensor | None = None  # packed rows only

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward (packed rows: position ids and no mask)."""
        if self.position_ids is None:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return {"input_ids": self.input_ids, "position_ids": self.position_ids}


def _rows_batch(rows: list[list[int]], encoded: list[list[int]], pad: int, packed: bool,
                device: torch.device | str) -> Batch:
    """One batch from rows of text indices, each text fed without its last token."""
    width = max(sum(len(encoded[i]) - 1 for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    owners = torch.full((len(rows), width), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            text, stop = torch.tensor(encoded[i]), start + len(encoded[i]) - 1
            ids[r, start:stop], targets[r, start:stop] = text[:-1], text[1:]
            mask[r, start:stop], owners[r, start:stop] = 1, i
            positions[r, start:stop] = torch.arange(stop - start)
            start = stop
        positions[r, start:] = torch.arange(width - start)  # trailing padding: a segment of its own
    return Batch(ids.to(device), mask.to(device), targets.to(device), owners.to(device),
                 positions.to(device) if packed else None)


def _balance(lengths: list[int], rows: int) -> list[list[int]]:
    """Longest text first into the row with the fewest tokens so far: rows of nearly equal length."""
    heap = [(0, r) for r in range(rows)]
    out: list[list[int]] = [[] for _ in range(rows)]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        used, r = heapq.heappop(heap)
        out[r].append(i)
        heapq.heappush(heap, (used + lengths[i], r))
    return [row for row in out if row]


def _slots(batches: list[Batch]) -> int:
    return sum(batch.input_ids.numel() for batch in batches)


def packed_rows(lengths: list[int]) -> list[list[int]]:
    """Texts (by fed length) in rows, with the fewest slots (rows x longest row) among row counts that
    keep rows near PACK_WIDTH tokens or below: attention costs the square of a row's width."""
    total, longest = sum(lengths), max(lengths)
    counts = {-(-total // int(w)) for w in np.linspace(max(longest, PACK_WIDTH), longest, 16)}
    options = [_balance(lengths, r) for r in sorted(counts)]
    return min(options, key=lambda rows: len(rows) * max(sum(lengths[i] for i in row) for row in rows))


@dataclass
class EvalSet:
    """Tokenised evaluation texts in two layouts, plus the fixed bootstrap resamples over them.

    `batches` pad each text to its batch's longest and work with any model; `packed_batches` put several
    texts in a row, which needs a model that keeps them apart (see `packing_is_exact`): the prefix cache
    uses them when it can. They are left empty where they would not have fewer slots than `batches`."""

    texts: list[str]
    name: str
    batches: list[Batch]
    packed_batches: list[Batch]
    token_counts: np.ndarray  # predicted tokens per text
    bootstrap_indices: np.ndarray = field(repr=False)  # (N_BOOTSTRAP, n_texts)
    max_length: int | None = None  # tokens kept per text, and the resampling seed: with the texts, what decides
    seed: int | None = None  # the PPL and its interval (recorded in results.json; --from-hub compares them)

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
        batches = [_rows_batch([[i] for i in order[s:s + batch_size]], encoded, pad, False, device)
                   for s in range(0, len(order), batch_size)]
        counts = np.array([len(e) - 1 for e in encoded], dtype=np.int64)
        rows = packed_rows(counts.tolist())
        per_batch = max(1, PACK_BATCH_TOKENS // max(sum(counts[i] for i in row) for row in rows))
        packed = [_rows_batch(rows[s:s + per_batch], encoded, pad, True, device)
                  for s in range(0, len(rows), per_batch)]
        if _slots(packed) >= _slots(batches):  # e.g. a few long texts: padding wastes less than packing
            packed = []
        rng = np.random.default_rng(seed)
        boot = rng.integers(0, len(texts), size=(N_BOOTSTRAP, len(texts)))
        return cls(list(texts), name, batches, packed, counts, boot, max_length=max_length, seed=seed)

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


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token NLL of each of n positions from their logits [n, vocab]."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[:, None]).flatten()


def token_nll(adapter: LayerAdapter, rows: torch.Tensor, targets: torch.Tensor,
              block: int = VOCAB_BLOCK) -> torch.Tensor:
    """Next-token NLL of each hidden row [n, hidden] (output of the last decoder layer) for its target.

    The log-sum-exp over the vocabulary is accumulated one block of logits at a time (running maximum,
    rescaled running sum), so the [n, vocab] logits never exist and every block is reduced while it is
    still in cache: about 35% faster than the head followed by `logsumexp` on a 49k vocabulary.
    """
    running_max = total = target_logit = None
    for start, logits in adapter.head_logit_blocks(rows, block):
        logits = logits.float()
        if running_max is None:  # on the head's device, which a device map may set apart from the rows'
            targets = targets.to(logits.device)
            running_max = torch.full((rows.shape[0],), -torch.inf, device=logits.device)
            total, target_logit = torch.zeros_like(running_max), torch.zeros_like(running_max)
        inside = ((targets >= start) & (targets < start + logits.shape[1])).nonzero(as_tuple=True)[0]
        target_logit[inside] = logits[inside, targets[inside] - start]
        new_max = torch.maximum(running_max, logits.amax(dim=1))
        total = total * torch.exp(running_max - new_max) + logits.sub_(new_max[:, None]).exp_().sum(dim=1)
        running_max = new_max
    return running_max + total.log() - target_logit


def _predicted(batch: Batch) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Positions that predict a token (padding excluded), their targets, and the text each belongs to."""
    positions = (batch.targets != IGNORE).nonzero(as_tuple=True)
    return positions, batch.targets[positions], batch.owners[positions]


def _per_text(eval_set: EvalSet, nll: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """Token NLLs summed per text of the evaluation set."""
    return torch.zeros(len(eval_set.texts), dtype=torch.float64).index_add_(0, owners.cpu(), nll.double().cpu())


def _finite(nll: torch.Tensor) -> np.ndarray:
    nll = nll.numpy()
    return nll if np.isfinite(nll).all() else np.full_like(nll, np.inf)


class TextNLL:
    """Token NLLs summed per text from last-layer outputs given batch by batch; the head runs on rows pooled up
    to HEAD_ROWS (it is faster on many rows), the last batch flushing what is left."""

    def __init__(self, adapter: LayerAdapter, eval_set: EvalSet, batches: int):
        self.adapter, self.eval_set, self.left = adapter, eval_set, batches
        self.nll = torch.zeros(len(eval_set.texts), dtype=torch.float64)
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, hidden: torch.Tensor, batch: Batch) -> None:
        """The output of the last decoder layer [rows, width, hidden] for `batch`."""
        positions, targets, owners = _predicted(batch)
        self.pending.append((hidden[tuple(p.to(hidden.device) for p in positions)], targets, owners))
        self.left -= 1
        if sum(len(p[1]) for p in self.pending) >= HEAD_ROWS or self.left == 0:
            rows, targets, owners = (torch.cat(parts) for parts in zip(*self.pending))
            for s in range(0, len(rows), HEAD_ROWS):
                chunk = slice(s, s + HEAD_ROWS)
                self.nll += _per_text(self.eval_set, token_nll(self.adapter, rows[chunk], targets[chunk]),
                                      owners[chunk])
            self.pending = []

    def result(self) -> PPLResult:
        return ppl_result(_finite(self.nll), self.eval_set)


@torch.no_grad()
def perplexity(model: PreTrainedModel, eval_set: EvalSet, cache: PrefixCache | None = None,
               from_layer: int = 0, beat: Callable[[], None] | None = None) -> PPLResult:
    """PPL of the model as it is now; with a cache, only layers `from_layer`..N-1 and the head run
    (`from_layer` = N: the head alone, on the recorded baseline output, for the unchanged model). `beat()`
    after each batch: a long evaluation lets a progress callback stop it."""
    with cached_casts():  # one cast of each weight for all the batches (`beat` reports; it edits no weight)
        if cache is None:
            nll = torch.zeros(len(eval_set.texts), dtype=torch.float64)
            for batch in eval_set.batches:
                logits = model(**batch.model_inputs(), use_cache=False).logits
                positions, targets, owners = _predicted(batch)
                nll += _per_text(eval_set, _nll(logits[positions], targets), owners)
                if beat is not None:
                    beat()
            return ppl_result(_finite(nll), eval_set)
        total = TextNLL(cache.adapter, eval_set, len(cache.batches))
        for b, batch in enumerate(cache.batches):
            total.add(cache.hidden_from(from_layer, b), batch)  # on the last layer's device under a device map
            if beat is not None:
                beat()
        return total.result()


@torch.no_grad()
def packing_is_exact(model: PreTrainedModel) -> bool:
    """Whether the model keeps texts packed in one row apart, checked on two short texts: the second must
    give the same logits packed behind the first as alone. transformers derives the block-diagonal mask
    from restarting position ids for most decoder families; a model that does not would let the second
    text attend to the first, and fails this check, as does one whose forward takes no position ids."""
    device = offload.input_device(model)
    ids = torch.arange(10, 19, device=device) % model.get_input_embeddings().weight.shape[0]
    positions = torch.cat([torch.arange(5), torch.arange(4)]).to(device)
    try:
        packed = model(input_ids=ids[None], position_ids=positions[None], use_cache=False).logits[0, 5:].float()
    except TypeError:  # unexpected keyword argument
        return False
    alone = model(input_ids=ids[None, 5:], use_cache=False).logits[0].float()
    return bool((packed - alone).abs().max() <= 1e-3 * alone.abs().max())


def replay_batches(model: PreTrainedModel, eval_set: EvalSet) -> list[Batch]:
    """The rows to run `model` on: the packed ones where it keeps packed texts apart, the padded otherwise
    (also for a plain namespace of `batches`, as the training loop passes)."""
    packed = getattr(eval_set, "packed_batches", None)
    return packed if packed and packing_is_exact(model) else eval_set.batches


class PrefixCache:
    """Hidden states entering every decoder layer, and each layer's call arguments, for every batch.

    Built from one baseline forward pass with pre-hooks, so it works for any architecture whose decoder
    calls its layers in order: replaying layer i with the recorded arguments reproduces the model's own
    forward exactly. The layers are looked up at replay time, so a skipped layer (a `Residual` stand-in)
    or edited weights take effect; the cache itself must be rebuilt only if layers *below* the replay
    start change.
    """

    def __init__(self, model: PreTrainedModel, eval_set: EvalSet, keep_layers: Sequence[int] | None = None,
                 beat: Callable[[], None] | None = None):
        """`keep_layers`: keep only the inputs of these layers (others stay None) to save memory; calls are
        always kept for every layer, so `hidden_from(l, ...)` works for each kept `l`. Default: all.
        `beat()` after each batch's forward, so a progress callback can stop a long build.
        The cache replays the evaluation set's packed rows where the model keeps packed texts apart
        (`packing_is_exact`), its padded rows otherwise; `batches` says which, for `perplexity`."""
        self.adapter = LayerAdapter(model)
        self.batches = replay_batches(model, eval_set)
        n = self.adapter.num_layers
        keep = set(range(n)) if keep_layers is None else set(keep_layers)
        self.inputs: list[list[torch.Tensor]] = []  # [batch][layer] hidden states entering the layer
        self.calls: list[list[tuple[tuple, dict]]] = []  # [batch][layer] (other args, kwargs)
        self.outputs: list[torch.Tensor] = []  # [batch] output of the last layer
        for batch in self.batches:
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
                self.outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

            handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True)
                       for i, layer in enumerate(self.adapter.layers)]
            handles.append(self.adapter.layers[n - 1].register_forward_hook(keep_output))
            try:
                with torch.no_grad():
                    model(**batch.model_inputs(), use_cache=False,
                          logits_to_keep=1)  # the head's work is redone where it is needed
            finally:
                for handle in handles:
                    handle.remove()
            if any(x is None for x in calls):
                raise AnatomyError(f"{type(model).__name__} did not call every decoder layer once; "
                                   "the prefix cache cannot be used with it.")
            self.inputs.append(inputs)
            self.calls.append(calls)
            if beat is not None:
                beat()
        self.masks = [batch.attention_mask for batch in self.batches]

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
            h = h[0] if isinstance(h, (tuple, list)) else h
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
            inputs = cache.inputs[b][layer]  # layers may live on different devices
            here = keep.to(inputs.device)
            output = cache.layer_output(layer, b).to(inputs.device)
            cos = F.cosine_similarity(inputs[here].float(), output[here].float(), dim=-1).clamp(-1, 1)
            sums["block_influence"][layer] += float((1 - cos).sum())
            sums["angular_distance"][layer] += float((torch.arccos(cos) / torch.pi).sum())
    return {k: v / count for k, v in sums.items()}
