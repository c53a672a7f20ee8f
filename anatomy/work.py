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

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .evaluate import EvalSet
from .layers import LayerAdapter, parse_layers

TRAIN_TOKENS = 3.0  # forward tokens per training token: the backward pass costs about twice the forward
DECODE_TOKENS = 20.0  # batched forward tokens per generated token (latency-bound; SmolLM2-135M on a 2-core CPU)


@dataclass(frozen=True)
class Shape:
    """What the estimates know of the model and the evaluation text."""

    num_layers: int
    head_layers: float  # the LM head's work per token, in layers (SmolLM2-135M: about 8 of its 30 layers')
    eval_tokens: int
    prefill_tokens: int = 0  # tokens of the evaluation text's first batch (the layer plans time its prefill)

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


def shape_of(model: nn.Module, eval_set: EvalSet) -> Shape:
    """The model's depth, the LM head's size against one layer's, and the evaluation text's size."""
    adapter = LayerAdapter(model)
    layer = sum(p.numel() for p in adapter.layers[0].parameters())
    head = model.get_output_embeddings()
    first = eval_set.batches[0].attention_mask if eval_set.batches else None
    return Shape(adapter.num_layers, head.weight.numel() / max(layer, 1) if head is not None else 0.0,
                 eval_set.num_tokens, int(first.sum()) if first is not None else 0)


def ablations(shape: Shape, layers: Sequence[int], cached: bool) -> float:
    """The baseline and one changed forward per layer: from the layer on with the prefix cache, else whole."""
    return 1.0 + sum(shape.suffix(layer) if cached else 1.0 for layer in layers)
