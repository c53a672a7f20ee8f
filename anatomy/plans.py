"""Layer execution plans ("Transformer Layers as Painters", SPEC section 8): run a frozen model's decoder
layers skipped, reordered, repeated or in parallel, without touching a weight, and undo it on exit.

A plan is a list of steps; a step is one layer index or a group of indices that run in parallel on the
same input, their outputs averaged. `apply_plan` swaps the decoder ModuleList for one built from the
plan and puts the original list, config and attention `layer_idx` values back in `finally`.

KV cache: every step gets its own cache slot. Each step is wrapped (`PlanStep`) so that, just before
it runs, the attention modules of its layer are pointed at that step's slot; a repeated layer therefore
shares its weights but not its keys and values, and `generate` with the cache gives the same tokens as
without it. This is chosen over turning the cache off because the latency column must measure real
cached decoding, and because a cache-off model silently breaks for any user who calls `generate` inside
the plan. The text config's `num_hidden_layers` and per-layer lists (`layer_types`, ...) follow the slots.

Parallel groups of Llama-family layers (Llama, SmolLM, Mistral, Qwen2 without sliding windows; nothing
else, since the batched code reimplements exactly their layer) run as
one batched call (`BatchedLlamaGroup`): the group's weights are stacked once on entry, the projections
are batched matmuls over a leading group axis, and attention is one call with the group folded into the
head axis (GQA grouping stays correct because query and key/value heads are folded the same way), whose
keys and values live in the step's single cache slot. Other families fall back to `SequentialGroup`,
which runs the members one after another on the same input (one cache slot each) and averages; the
experiment records which one ran so the latency column is never mistaken for batched execution.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import AnatomyError, shown
from .layers import LayerAdapter, text_config
from .surgery import cache_slots, layer_config_edits, set_cache_slot

Step = tuple[int, ...]

GRAMMAR = """\
plan grammar (0-based layers, steps run left to right):
  plan  := item ("," item)*
  item  := unit ["x" COUNT]          repeat the unit COUNT times
  unit  := span | "[" span ("," span)* "]"
  span  := LAYER | LAYER "-" LAYER   inclusive; a descending span runs in reverse (7-4 = 7,6,5,4)
  [...] is one parallel step: its layers run on the same input and their outputs are averaged.
  A plan has at most 8 steps per layer of the model (240 for 30 layers).
examples: 0-29 (unchanged, 30 layers), 0-12,17-29 (skip 13-16), 0-12,16-13,17-29 (reverse 13-16),
  0-12,15x4,17-29 (repeat layer 15), 0-12,[13-16],17-29 (parallel), 0-3,[4-7]x2,8-29 (looped parallel)"""

_TOKEN = re.compile(r"\s*(?:(\d+)|([\[\],x-]))", re.ASCII)  # ASCII digits only, as users type them
MAX_STEPS_PER_LAYER = 8  # at most 8x the model's layers (GRAMMAR says so): repeats cost compute on a shared machine


@dataclass(frozen=True)
class Plan:
    """The order in which decoder layers run; `steps[i]` is one layer or a parallel group."""

    steps: tuple[Step, ...]

    @classmethod
    def identity(cls, num_layers: int) -> Plan:
        return cls(tuple((i,) for i in range(num_layers)))

    @classmethod
    def from_order(cls, order: Sequence[int | Sequence[int]]) -> Plan:
        return cls(tuple((s,) if isinstance(s, int) else tuple(s) for s in order))

    @property
    def has_parallel(self) -> bool:
        return any(len(step) > 1 for step in self.steps)

    @property
    def layer_calls(self) -> int:
        """Decoder-layer executions per token (a parallel group of k counts k)."""
        return sum(len(step) for step in self.steps)

    def check(self, num_layers: int) -> Plan:
        if not self.steps:
            raise AnatomyError("The plan has no steps: give at least one layer.")
        for step in self.steps:
            if not step or len(set(step)) != len(step):
                raise AnatomyError(f"Parallel group {list(step)} is empty or names a layer twice.")
            for layer in step:
                if not 0 <= layer < num_layers:
                    raise AnatomyError(f"Layer {layer} in plan '{self}' does not exist: layers are "
                                       f"0..{num_layers - 1}.")
        return self

    def __str__(self) -> str:
        """Canonical text in the `--plan` grammar (runs of +-1 become spans, repeats become xN)."""
        units: list[str] = []
        i = 0
        while i < len(self.steps):
            step = self.steps[i]
            if len(step) > 1:
                units.append("[" + ",".join(_spans(sorted(step))) + "]")
                i += 1
                continue
            j = i + 1
            direction = 0
            while j < len(self.steps) and len(self.steps[j]) == 1:
                diff = self.steps[j][0] - self.steps[j - 1][0]
                if abs(diff) != 1 or (direction and diff != direction):
                    break
                direction = diff
                j += 1
            first, last = step[0], self.steps[j - 1][0]
            units.append(str(first) if first == last else f"{first}-{last}")
            i = j
        counted: list[list] = []  # consecutive identical units become unit x count
        for unit in units:
            if counted and counted[-1][0] == unit:
                counted[-1][1] += 1
            else:
                counted.append([unit, 1])
        return ",".join(unit if n == 1 else f"{unit}x{n}" for unit, n in counted)


def _spans(layers: list[int]) -> list[str]:
    spans, start = [], 0
    for k in range(1, len(layers) + 1):
        if k == len(layers) or layers[k] != layers[k - 1] + 1:
            spans.append(str(layers[start]) if start == k - 1 else f"{layers[start]}-{layers[k - 1]}")
            start = k
    return spans


def parse_plan(text: str, num_layers: int) -> Plan:
    """Parse the `--plan` grammar (see GRAMMAR); errors point at the offending token by position."""
    tokens: list[tuple[str, int]] = []
    pos = 0
    text = text or ""
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            at = len(text) - len(text[pos:].lstrip(" \t\n\r\x0b\x0c"))  # the whitespace the pattern skips
            _fail(text, at, f"unexpected character {shown(text[at])}")
        tokens.append((match.group(1) or match.group(2), match.start(1) if match.group(1) else match.start(2)))
        pos = match.end()
    tokens.append(("", len(text)))
    index = 0

    def peek() -> str:
        return tokens[index][0]

    def take(expected: str | None = None, what: str = "") -> str:
        nonlocal index
        token, at = tokens[index]
        if (expected is not None and token != expected) or (expected is None and not token.isdigit()):
            found = f"'{token}'" if token else "the end"
            _fail(text, at, f"expected {what or repr(expected)}, found {found}")
        index += 1
        return token

    def number(what: str) -> int:
        at, digits = tokens[index][1], take(None, what)
        if len(digits) > 6:
            _fail(text, at, f"{digits[:8]}... is not a {what.removeprefix('a ')} this tool can run")
        return int(digits)

    def layer() -> int:
        at = tokens[index][1]
        value = number("a layer number")
        if value >= num_layers:
            _fail(text, at, f"layer {value} does not exist (this model has layers 0..{num_layers - 1})")
        return value

    def span() -> list[int]:
        first = layer()
        if peek() != "-":
            return [first]
        take("-")
        last = layer()
        return list(range(first, last + 1)) if last >= first else list(range(first, last - 1, -1))

    steps: list[Step] = []
    while True:
        at_item = tokens[index][1]
        if peek() == "[":
            at = tokens[index][1]
            take("[")
            group = span()
            while peek() == ",":
                take(",")
                group += span()
            take("]", "']' to close the parallel group")
            if len(set(group)) != len(group):
                _fail(text, at, "a parallel group names a layer twice")
            unit: list[Step] = [tuple(group)]
        else:
            unit = [(layer_,) for layer_ in span()]
        count = 1
        if peek() == "x":
            take("x")
            at = tokens[index][1]
            count = number("a repeat count after 'x'")
            if count < 1:
                _fail(text, at, "a repeat count must be at least 1")
        if len(steps) + len(unit) * count > MAX_STEPS_PER_LAYER * num_layers:
            _fail(text, at_item, f"the plan would run more than {MAX_STEPS_PER_LAYER * num_layers} steps "
                                 f"({MAX_STEPS_PER_LAYER}x this model's {num_layers} layers)")
        steps += unit * count
        if peek() == "":
            break
        take(",", "',' between items")
    return Plan(tuple(steps)).check(num_layers)


def _fail(text: str, at: int, message: str) -> None:
    """One line, whatever the text holds: the position, what precedes it (quoted, cut short), what is wrong."""
    where = "at the start" if at == 0 else f"after {shown(text[max(0, at - 24):at], 32)}"
    raise AnatomyError(f"Bad plan at position {at} ({where}): {message}. Plans are comma-separated spans "
                       "(4 or 4-7; 7-4 runs in reverse), [..] parallel groups and xN repeats, e.g. 0-3,[4-7]x2,8-29 "
                       "(full grammar: python -m anatomy painters --help).")


# ---------------------------------------------------------------------------------------------- execution

class _Proxy(nn.Module):
    """A stand-in for a decoder layer: attributes the decoder reads from its layers (attention_type,
    layer_type, ...) come from the first wrapped layer."""

    def _wrapped(self) -> nn.Module:
        raise NotImplementedError

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._wrapped(), name)


class PlanStep(_Proxy):
    """Runs one decoder layer after pointing its attention at this step's own KV-cache slot."""

    def __init__(self, layer: nn.Module, slot: int):
        super().__init__()
        self.layer = layer
        self.slot = slot
        self._slots = cache_slots(layer)

    def _wrapped(self) -> nn.Module:
        return self.layer

    def forward(self, *args, **kwargs):
        set_cache_slot(self._slots, self.slot)
        return self.layer(*args, **kwargs)


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class SequentialGroup(_Proxy):
    """A parallel group run member by member on the same input, outputs averaged (any architecture); it
    returns what its layers return (a tensor, or a tuple with the mean hidden states first)."""

    batched = False

    def __init__(self, steps: list[PlanStep]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def _wrapped(self) -> nn.Module:
        return self.steps[0]

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        outputs = [step(hidden_states, *args, **kwargs) for step in self.steps]
        mean = torch.stack([_hidden(out) for out in outputs]).mean(dim=0)
        return (mean, *outputs[0][1:]) if isinstance(outputs[0], tuple) else mean


_BATCHABLE = {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"}


def can_batch(layers: Sequence[nn.Module]) -> bool:
    """Llama-family layers with RMSNorm, SwiGLU and no sliding window can be stacked into one call (not
    where a device map spreads them over devices or offloads them: their weights are not all at hand)."""
    devices = {p.device for layer in layers for p in layer.parameters()}
    return len(devices) == 1 and devices != {torch.device("meta")} and all(
        type(layer).__name__ in _BATCHABLE and getattr(layer.self_attn, "sliding_window", None) is None
        and getattr(getattr(layer.self_attn, "config", None), "sliding_window", None) is None
        for layer in layers)


class BatchedLlamaGroup(nn.Module):
    """k Llama-family layers on the same input as one batched call; returns the mean of their outputs.

    Shapes: x (B,T,H); projections are `bmm` over (k, B*T, H); attention runs once on
    (B, k*heads, T, head_dim). The stacked weights are copies made on entry (k layers' worth of memory).
    """

    batched = True

    def __init__(self, layers: Sequence[nn.Module], slot: int):
        super().__init__()
        first = layers[0]
        attn = first.self_attn
        self.slot, self.k, self.head_dim = slot, len(layers), attn.head_dim
        self.eps = first.input_layernorm.variance_epsilon
        self._attn = (attn,)  # a tuple, so the borrowed module is not registered as a submodule
        self.act = first.mlp.act_fn
        self.q_out, self.kv_out = attn.q_proj.out_features, attn.k_proj.out_features
        self.ffn = first.mlp.gate_proj.out_features

        def stack(get) -> torch.Tensor:
            return torch.stack([get(layer).detach() for layer in layers])

        def stack_bias(*modules) -> torch.Tensor | None:
            if getattr(modules[0](first), "bias", None) is None:
                return None
            return stack(lambda ly: torch.cat([m(ly).bias for m in modules])).unsqueeze(1)

        qkv = (lambda ly: ly.self_attn.q_proj, lambda ly: ly.self_attn.k_proj, lambda ly: ly.self_attn.v_proj)
        gu = (lambda ly: ly.mlp.gate_proj, lambda ly: ly.mlp.up_proj)
        with torch.no_grad():
            self.register_buffer("norm1", stack(lambda ly: ly.input_layernorm.weight)[:, None, None], False)
            self.register_buffer("norm2", stack(lambda ly: ly.post_attention_layernorm.weight)[:, None, None], False)
            self.register_buffer("w_qkv", stack(lambda ly: torch.cat([m(ly).weight for m in qkv]).T), False)
            self.register_buffer("b_qkv", stack_bias(*qkv), False)
            self.register_buffer("w_o", stack(lambda ly: ly.self_attn.o_proj.weight.T), False)
            self.register_buffer("b_o", stack_bias(lambda ly: ly.self_attn.o_proj), False)
            self.register_buffer("w_gu", stack(lambda ly: torch.cat([m(ly).weight for m in gu]).T), False)
            self.register_buffer("b_gu", stack_bias(*gu), False)
            self.register_buffer("w_down", stack(lambda ly: ly.mlp.down_proj.weight.T), False)
            self.register_buffer("b_down", stack_bias(lambda ly: ly.mlp.down_proj), False)
        self.attention_type = getattr(first, "attention_type", None)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """LlamaRMSNorm with per-member weights: x (..., H), weight (k,1,1,H) -> (k, ..., H)."""
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return weight * normed

    @staticmethod
    def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (k, N, in) @ weight (k, in, out) [+ bias (k, 1, out)] in one batched call."""
        return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)

    def _heads(self, x: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
        """(k, B*T, n*d) -> (B, k*n, T, d): the group folded into the head axis."""
        return x.view(self.k, batch, seq, -1, self.head_dim).permute(1, 0, 3, 2, 4).flatten(1, 2)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool | None = False,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs) -> torch.Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

        attn = self._attn[0]
        batch, seq, hidden = hidden_states.shape
        k = self.k
        x = self._norm(hidden_states, self.norm1).reshape(k, batch * seq, hidden)
        q, key, value = self._linear(x, self.w_qkv, self.b_qkv).split([self.q_out, self.kv_out, self.kv_out], -1)
        q, key, value = (self._heads(t, batch, seq) for t in (q, key, value))
        cos, sin = position_embeddings
        q, key = apply_rotary_pos_emb(q, key, cos, sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.slot)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
        out, _ = interface(attn, q, key, value, attention_mask, dropout=0.0, scaling=attn.scaling, **kwargs)
        # out: (B, T, k*heads, d) -> (k, B*T, heads*d)
        out = out.reshape(batch, seq, k, -1).permute(2, 0, 1, 3).reshape(k, batch * seq, -1)
        h = hidden_states + self._linear(out, self.w_o, self.b_o).view(k, batch, seq, hidden)
        gate, up = self._linear(self._norm(h, self.norm2).view(k, batch * seq, hidden),
                                self.w_gu, self.b_gu).split(self.ffn, -1)
        h = h + self._linear(self.act(gate) * up, self.w_down, self.b_down).view(k, batch, seq, hidden)
        return h.mean(dim=0)


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    *parents, attr = path.split(".")
    parent = model
    for part in parents:
        parent = getattr(parent, part)
    return parent, attr


def plan_refusal(adapter: LayerAdapter, plan: Plan) -> str | None:
    """Why `plan` cannot run on this model, or None. A parallel group must hold layers of one kind: in a
    hybrid stack a convolution and an attention layer take different masks and caches, so they cannot
    run on the same call's arguments."""
    kinds = adapter.kinds
    for step in plan.steps:
        if len({kinds[i] for i in step}) > 1:
            names = ", ".join(f"{i}: {kinds[i][1] or kinds[i][0]}" for i in step)
            return (f"Plan '{plan}' runs layers of different kinds in parallel ({names}) in this {adapter.family} "
                    "model; they take different masks or caches, so group layers of one kind.")
    return None


@contextmanager
def apply_plan(model: nn.Module, plan: Plan, batched: bool = True) -> Iterator[nn.ModuleList]:
    """Run `model` under `plan` inside the block; weights are never written, everything is undone on exit.

    `batched=False` runs every parallel group member by member (the reference the batched path is
    tested against). Yields the temporary ModuleList of steps.
    """
    adapter = LayerAdapter(model)
    plan.check(adapter.num_layers)
    if refusal := plan_refusal(adapter, plan):
        raise AnatomyError(refusal)
    config = text_config(model)
    original = adapter.layers
    parent, attr = _parent(model, adapter.layers_path)
    saved_idx = [(slot, getattr(*slot)) for layer in original for slot in cache_slots(layer)]
    slot_layers: list[int] = [step[0] for step in plan.steps]  # layer whose type each cache slot takes
    steps: list[nn.Module] = []
    for i, step in enumerate(plan.steps):
        members = [original[j] for j in step]
        if len(step) == 1:
            steps.append(PlanStep(members[0], i))
        elif batched and can_batch(members):
            steps.append(BatchedLlamaGroup(members, i))
        else:
            slots = [i] + list(range(len(slot_layers), len(slot_layers) + len(step) - 1))
            slot_layers += list(step[1:])
            steps.append(SequentialGroup([PlanStep(m, s) for m, s in zip(members, slots)]))
    new = nn.ModuleList(steps)
    edits = layer_config_edits(config, slot_layers)
    saved_config = {key: getattr(config, key) for key in edits}
    try:
        setattr(parent, attr, new)
        for key, value in edits.items():
            setattr(config, key, value)
        yield new
    finally:
        setattr(parent, attr, original)
        for key, value in saved_config.items():
            setattr(config, key, value)
        for slot, index in saved_idx:
            set_cache_slot([slot], index)


# ---------------------------------------------------------------------------------------------- variants

VARIANTS = ("skip", "reverse", "shuffle", "repeat", "parallel", "looped-parallel")


def middle_block(num_layers: int, size: int) -> list[int]:
    """`size` consecutive layers centred in the stack; the first and last layers are never in it."""
    if not 1 <= size <= num_layers - 2:
        raise AnatomyError(f"A middle block of {size} layers does not fit a {num_layers}-layer model "
                           f"(the first and last layers stay): use 1..{num_layers - 2}.")
    start = (num_layers - size) // 2
    return list(range(start, start + size))


def variant_plan(variant: str, num_layers: int, size: int, *, seed: int = 0, loops: int = 2) -> Plan:
    """The plan of one painters variant over the centred middle block of `size` layers.

    shuffle draws a seeded permutation other than the identity (for 2 layers that is the reverse);
    repeat runs the block's middle layer `size` times; looped-parallel applies the parallel block `loops` times.
    """
    block = middle_block(num_layers, size)
    before = [(i,) for i in range(block[0])]
    after = [(i,) for i in range(block[-1] + 1, num_layers)]
    if variant == "skip":
        middle: list[Step] = []
    elif variant == "reverse":
        middle = [(i,) for i in reversed(block)]
    elif variant == "shuffle":
        generator = torch.Generator().manual_seed(seed)
        order = block
        while order == block and size > 1:
            order = [block[i] for i in torch.randperm(size, generator=generator).tolist()]
        middle = [(i,) for i in order]
    elif variant == "repeat":
        middle = [(block[size // 2],)] * size
    elif variant in ("parallel", "looped-parallel"):
        if loops < 1:
            raise AnatomyError(f"loops must be >= 1, got {loops}.")
        middle = [tuple(block)] * (loops if variant == "looped-parallel" else 1)
    else:
        raise AnatomyError(f"Unknown variant '{variant}': use one of {', '.join(VARIANTS)}.")
    return Plan(tuple(before + middle + after))


def export_plan(model: nn.Module, tokenizer, plan: Plan, directory) -> Path:
    """Save a plan without parallel groups as a standard Hugging Face folder (layers copied in plan order,
    `layer_idx` renumbered, config layer count updated), via the shared `surgery` helpers."""
    from .surgery import build_layer_stack, save_model

    if plan.has_parallel:
        raise AnatomyError(f"Plan '{plan}' has parallel groups, which a standard model folder cannot express: "
                           "save a plan made of single layers only.")
    return save_model(build_layer_stack(model, [step[0] for step in plan.steps]), tokenizer, directory)
