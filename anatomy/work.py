"""How much computing a run takes, in evaluation passes, known before it runs: the unit in which a study weighs
the steps it has not run yet when it estimates the time left.

One pass is a forward of the whole evaluation text through the whole model. A forward from layer l on (the
prefix cache holds what the layers before it computed) is the share of the model from l on, the LM head
included. A training token costs about three forward tokens (forward and backward). A generated token runs
the whole model for one position, which on a CPU costs about as much as DECODE_TOKENS tokens of a batched
forward. These are estimates within a factor of about two; the study turns them into seconds with the speed
at which its finished steps ran, so what they must get right is how much bigger one step is than another
(recovery's 26 fine-tunes against an importance map's 30 ablations).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .evaluate import EvalSet
from .layers import LayerAdapter, parse_layers

TRAIN_TOKENS = 3.0  # forward tokens per training token: the backward pass costs about twice the forward
DECODE_TOKENS = 20.0  # batched forward tokens per generated token (latency-bound; SmolLM2-135M on a 2-core CPU)
SVD_FLOPS = 4.0  # an m x n SVD (singular values only) costs about this many times m * n * min(m, n) operations
CALIBRATION = (4, 64)  # the batch (rows, tokens) timed once per model to turn passes into seconds
REFERENCE_TOKENS = CALIBRATION[0] * CALIBRATION[1]  # one pass of an experiment that reads no evaluation text


@dataclass(frozen=True)
class Shape:
    """What the estimates know of the model and the evaluation text."""

    num_layers: int
    head_layers: float  # the LM head's work per token, in layers (SmolLM2-135M: about 8 of its 30 layers')
    eval_tokens: int
    prefill_tokens: int = 0  # tokens of the evaluation text's first batch (the layer plans time its prefill)
    parameters: int = 0  # the model's parameters: a pass is about 2 * parameters * eval_tokens operations
    svd_flops: float = 0.0  # the SVDs of every matrix of every layer (the spectral analyses), in operations
    hidden: int = 0  # the width of the hidden states (what the prefix cache stores per token and layer)
    vocab: int = 0  # the LM head's rows (what a batch's logits hold per token)
    layer_parameters: int = 0  # the largest layer's parameters (what a fine-tune trains, with AdamW's state)

    def layers(self, selection: str | Sequence[int] | None) -> list[int]:
        """The layers a config's selection names (every layer when it names none)."""
        return parse_layers(selection, self.num_layers) if selection is None or isinstance(selection, str) \
            else list(selection)

    def suffix(self, layer: int) -> float:
        """A forward from `layer` on, in passes."""
        return (self.num_layers - layer + self.head_layers) / (self.num_layers + self.head_layers)

    def tokens(self, count: float) -> float:
        """`count` tokens of a batched forward through the whole model, in passes."""
        return count / max(self.eval_tokens, 1)

    def operations(self, flops: float) -> float:
        """`flops` operations on the weights (Gram matrices, SVDs), in passes."""
        return flops / max(2.0 * self.parameters * self.eval_tokens, 1.0)

    def generations(self, count: int, new_tokens: int) -> float:
        """`count` generations of `new_tokens` tokens each, in passes."""
        return self.tokens(count * new_tokens * DECODE_TOKENS)


def shape_of(model: nn.Module, eval_set: EvalSet | None) -> Shape:
    """The model's depth, the LM head's size against one layer's, its weights' size and the evaluation text's
    size (an experiment without one counts in passes of REFERENCE_TOKENS tokens, the calibration batch's)."""
    adapter = LayerAdapter(model)
    layer = sum(p.numel() for p in adapter.layers[0].parameters())
    head = model.get_output_embeddings()
    first = eval_set.batches[0].attention_mask if eval_set is not None and eval_set.batches else None
    shapes = [(ref.weight.numel() // ref.weight.shape[-1], ref.weight.shape[-1])  # as ComponentRef.matrix()
              for i in range(adapter.num_layers) for ref in adapter.layer_components(i)]
    svd = sum(SVD_FLOPS * m * n * min(m, n) for m, n in shapes)
    embeddings = model.get_input_embeddings().weight
    return Shape(adapter.num_layers, head.weight.numel() / max(layer, 1) if head is not None else 0.0,
                 eval_set.num_tokens if eval_set is not None else REFERENCE_TOKENS,
                 int(first.sum()) if first is not None else 0, sum(p.numel() for p in model.parameters()), svd,
                 embeddings.shape[-1], head.weight.shape[0] if head is not None else embeddings.shape[0],
                 max(sum(p.numel() for p in block.parameters()) for block in adapter.layers))


def memory_bytes(shape: Shape, batch_tokens: int, cached: bool = True, train_tokens: int = 0) -> int:
    """The memory a job needs beside the weights, in bytes, known before it runs (within a factor of about two):
    the prefix cache (every layer's float32 hidden states of the evaluation text), three float32 copies of one
    batch's logits (the logits, their log-softmax, the gathered rows), and for a fine-tune one layer's weights
    again with their gradient and AdamW's two moments, plus the training batch's logits."""
    cache = (shape.num_layers + 1) * shape.eval_tokens * shape.hidden * 4 if cached else 0
    logits = 3 * max(batch_tokens, train_tokens) * shape.vocab * 4
    training = 4 * shape.layer_parameters * 4 if train_tokens else 0
    return int(cache + logits + training)


_SECONDS_PER_TOKEN: weakref.WeakKeyDictionary[nn.Module, float] = weakref.WeakKeyDictionary()


@torch.no_grad()
def seconds_per_token(model: nn.Module) -> float:
    """Seconds one token of a batched forward takes on this model and hardware: the calibration batch timed once
    per model (after a warm-up forward) and remembered. A small batch runs slower per token than an evaluation
    batch, so the seconds it gives a job err on the long side."""
    if model not in _SECONDS_PER_TOKEN:
        rows, tokens = CALIBRATION
        device = next(model.parameters()).device
        ids = torch.randint(0, max(int(getattr(model.config, "vocab_size", 2) or 2), 2), (rows, tokens),
                            generator=torch.Generator().manual_seed(0)).to(device)
        model(input_ids=ids[:1, :8])
        start = time.perf_counter()
        model(input_ids=ids)
        _SECONDS_PER_TOKEN[model] = (time.perf_counter() - start) / (rows * tokens)
    return _SECONDS_PER_TOKEN[model]


def ablations(shape: Shape, layers: Sequence[int], cached: bool) -> float:
    """The baseline and one changed forward per layer: from the layer on with the prefix cache, else whole."""
    return 1.0 + sum(shape.suffix(layer) if cached else 1.0 for layer in layers)
