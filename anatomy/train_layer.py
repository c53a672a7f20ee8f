"""Fine-tune one decoder layer alone, with the frozen prefix below it computed once instead of every step.

Layers below l are frozen and unchanged while layer l trains, so the hidden states entering layer l are
a fixed function of the batch. The cached loop records them once per batch (for every layer of a run at
the same time: one forward per training batch, shared by all layer runs) with the evaluator's
`PrefixCache`, then runs forward and backward through layers l..N-1 and the head only. The plain loop
(`cache=None`) is the ordinary full-model step with `labels=`; both give the same losses (tested).

Training rows are fixed-length token chunks of a text that is never the evaluation text (the modern
English prose of the standard library's docstrings by default, Shakespeare on request, via `anatomy.corpus`); every layer run sees the same seeded batch order, so layers are
compared on the same data.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psutil
import torch
import torch.nn.functional as F
from torch import nn

from . import corpus
from .errors import AnatomyError
from .evaluate import Batch, PrefixCache
from .layers import LayerAdapter
from .progress import ProgressCallback, track

# Share of the available memory the cached layer inputs of the training batches may take.
CACHE_MEMORY_SHARE = 0.25


HELD_OUT_TEXTS = {"held-out": corpus.stdlib_documents, "shakespeare": corpus.shakespeare_documents}


def training_rows(tokenizer, seq_len: int, *, train_file: str | None = None, train_dataset: str | None = None,
                  exclude: Sequence[str] = (), text: str = "held-out") -> torch.Tensor:
    """Token rows [n, seq_len] from the training side of the corpus split: `text` (a key of HELD_OUT_TEXTS),
    or a file, or a Hub dataset.

    Refuses a training text that contains any of `exclude` (the evaluation texts) verbatim, so a
    recovered PPL is never measured on text the layer was trained on.
    """
    if train_dataset:
        from .texts import hub_dataset_texts
        docs = {f"doc{i:05d}": t for i, t in enumerate(hub_dataset_texts(train_dataset, limit=100_000))}
    else:
        docs = corpus.load_text_file(train_file) if train_file else None
        if docs is None and text not in HELD_OUT_TEXTS:
            raise AnatomyError(f"Unknown training text {text!r}: choose one of {', '.join(HELD_OUT_TEXTS)}.")
        docs = corpus.text_to_documents(docs) if docs is not None else HELD_OUT_TEXTS[text]()
    train = corpus.split_documents(docs).train
    joined = "\n".join(train.values())
    leaked = [t for t in exclude if len(t.strip()) >= 20 and " ".join(t.split()) in " ".join(joined.split())]
    if leaked:
        raise AnatomyError(f"The training text contains {len(leaked)} evaluation text(s), e.g. {leaked[0][:60]!r}: "
                           "pass a --train-file that does not hold the evaluation text.")
    return corpus.token_chunks(train.values(), tokenizer, seq_len, separator_id=tokenizer.eos_token_id)


def batch_schedule(rows: torch.Tensor, batch_size: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """`steps` batches [batch_size, seq_len] in a seeded shuffled order (reshuffled when the rows run out)."""
    if batch_size < 1 or steps < 1:
        raise AnatomyError(f"batch size and steps must be >= 1 (got {batch_size}, {steps}).")
    generator = torch.Generator().manual_seed(int(seed))
    need = batch_size * steps
    order = torch.cat([torch.randperm(len(rows), generator=generator)
                       for _ in range(-(-need // len(rows)))])[:need]
    return [rows[order[i * batch_size:(i + 1) * batch_size]] for i in range(steps)]


@contextmanager
def trainable_only(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter except `params`, in eval mode (no dropout); flags, mode and grads come back after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for p in params:
            p.grad = None
        model.train(was_training)


def cache_bytes(batches: Sequence[torch.Tensor], hidden_size: int, n_layers: int) -> int:
    """Memory the cached inputs of `n_layers` layers take for all `batches` (float32)."""
    return sum(b.numel() for b in batches) * hidden_size * 4 * n_layers


def layer_groups(layers: Sequence[int], batches: Sequence[torch.Tensor], hidden_size: int,
                 budget: int | None = None) -> list[list[int]]:
    """Split `layers` into groups whose cached inputs fit the memory budget; one prefix pass per group."""
    budget = budget if budget is not None else int(psutil.virtual_memory().available * CACHE_MEMORY_SHARE)
    per_group = max(1, budget // max(1, cache_bytes(batches, hidden_size, 1)))
    return [list(layers[i:i + per_group]) for i in range(0, len(layers), per_group)]


def training_batch(ids: torch.Tensor) -> Batch:
    """A full batch of training rows as the evaluator's `Batch`: every row but its last token fed, the next
    token as target (the last position predicts nothing and nothing attends to it)."""
    fed = ids[:, :-1]
    return Batch(fed, torch.ones_like(fed), ids[:, 1:], torch.arange(len(ids))[:, None].expand_as(fed))


def training_cache(model: nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[int]) -> PrefixCache:
    """Inputs entering `layers` (and every layer's call arguments) for each training batch: one forward each."""
    return PrefixCache(model, types.SimpleNamespace(batches=[training_batch(ids) for ids in batches]),
                       keep_layers=layers)


def step_loss(model: nn.Module, adapter: LayerAdapter, ids: torch.Tensor, layer: int,
              cache: PrefixCache | None = None, batch: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy of a full batch of rows; with a cache only layers layer..N-1 and the head run."""
    if cache is None:
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False).loss
    logits = adapter.logits(cache.hidden_from(layer, batch))
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def finetune_layer(model: nn.Module, layer: int, batches: Sequence[torch.Tensor], *, lr: float,
                   grad_clip: float, weight_decay: float, eval_every: int,
                   evaluate: Callable[[int], None], cache: PrefixCache | None = None,
                   progress: ProgressCallback | None = None) -> list[float]:
    """Train the parameters of decoder layer `layer` alone with a fresh AdamW; return the loss per step.

    `evaluate(step)` runs after noise (step 0), every `eval_every` steps and after the last step. The
    caller restores the weights (see `anatomy.interventions.preserve`); this function restores the
    requires-grad flags, the train/eval mode and the gradients.
    """
    adapter = LayerAdapter(model)
    params = list(adapter.layers[adapter.check_layer(layer)].parameters())
    losses: list[float] = []
    with trainable_only(model, params), torch.enable_grad():  # callers (the app, tests) may run under no_grad
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        evaluate(0)
        for step in track(range(1, len(batches) + 1), f"layers.{layer} fine-tune", progress):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(model, adapter, batches[step - 1], layer, cache, step - 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            if step % eval_every == 0 or step == len(batches):
                evaluate(step)
    return losses
