"""The structural adapter: the decoder layers, their weight matrices and one naming scheme, for any causal LM.

Nothing here is a list of model layouts. The decoder stack is found as the model's `nn.ModuleList` of
decoder layers (its length is the text config's layer count; multimodal wrappers keep it under their
language model), the final norm as the decoder's module applied after the stack, the head through
`get_output_embeddings`. A layer's *matrices* are all of its parameters with two or more dimensions
(attention, MLP, expert tensors, routers, convolutions, SSM projections), each with the bias that belongs
to it; norms are vectors and never matrices. Layer-level interventions act on exactly these.

Every table names a weight `layers.{i}.{component}` with `i` 0-based. Where a matrix can be recognised
as one of the seven canonical components of docs/SPEC.md it keeps that name, as a *view* into the real
parameter when the architecture fuses it (GPT-2's transposed `c_attn`, NeoX/BLOOM/Falcon
`query_key_value`, Phi-3 and CodeGen `qkv_proj`, MPT `Wqkv`, Phi-3 `gate_up_proj`), so an in-place edit
of `self_attn.q_proj` edits exactly the query slice of the real weight. Every other matrix keeps its own
dotted name (`mlp.experts.gate_up_proj`, `conv.in_proj`, `mixer.in_proj`). Expert tensors are one
component each, aggregated over experts (experts stacked along the output axis of `matrix()`).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from . import offload
from .errors import AnatomyError, shown

COMPONENTS: tuple[str, ...] = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
ATTENTION = COMPONENTS[:4]
MLP = COMPONENTS[4:]

# A slicer maps a real parameter (weight or bias) to the view that is one component, weight as (out, in).
Slicer = Callable[[torch.Tensor, bool], torch.Tensor]

# Names under which decoders keep the norm they apply after the last layer (LFM2 calls it embedding_norm).
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm",
                    "embedding_norm")
# Submodules of a wrapper that hold other stacks (vision or audio towers), never the text decoder.
_TOWERS = ("vision", "visual", "audio", "image", "encoder", "projector")


def _whole(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
    return t


def _transposed(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
    """GPT-2 Conv1D stores (in, out); present it as (out, in) like nn.Linear."""
    return t if is_bias else t.T


def _conv1d_cols(start: int, stop: int) -> Slicer:
    return lambda t, is_bias: t[start:stop] if is_bias else t[:, start:stop].T


def _rows(start: int, stop: int) -> Slicer:
    return lambda t, is_bias: t[start:stop]


def _grouped(groups: int, parts: int, start: int, stop: int) -> Slicer:
    """Rows laid out as `groups` blocks of `parts` equal parts (NeoX/BLOOM per head: [q_h, k_h, v_h]; CodeGen
    per TPU shard: [q, v, k]; Falcon per KV head: [q_1..q_g, k, v]); the view takes parts start..stop-1 of
    every block, so it is strided across the blocks."""
    def view(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
        blocks = t.view(groups, parts, -1, *t.shape[1:])
        return blocks[:, start] if stop == start + 1 else blocks[:, start:stop]
    return view


@dataclass(frozen=True)
class Slot:
    """Where one component lives in a layer: its weight parameter, its bias parameter, the view into them."""

    weight: str  # parameter path inside the layer, e.g. "self_attn.qkv_proj.weight"
    bias: str | None
    slicer: Slicer = _whole


@dataclass(frozen=True)
class ComponentRef:
    """One weight matrix of one layer (and its bias slice), as live views into the model's parameters."""

    layer: int
    component: str
    param_name: str
    weight: torch.Tensor
    bias: torch.Tensor | None

    @property
    def name(self) -> str:
        return f"layers.{self.layer}.{self.component}"

    def tensors(self) -> list[torch.Tensor]:
        """Everything an intervention on this component touches."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def matrix(self) -> torch.Tensor:
        """The weight as a 2-D (out, in) matrix (a copy where the view is strided; experts stacked on rows)."""
        return self.weight.reshape(-1, self.weight.shape[-1])

    def assign(self, matrix: torch.Tensor) -> None:
        """Write a 2-D (out, in) matrix into the live weight."""
        with torch.no_grad():
            self.weight.copy_(matrix.reshape(self.weight.shape))


def _get(root: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def _bias_of(name: str, params: dict[str, nn.Parameter]) -> str | None:
    """The bias that belongs to a matrix: `x.bias` for `x.weight`, `in_proj_bias` for `in_proj_weight`,
    `gate_up_proj_bias` (one row per expert) for a raw expert tensor `gate_up_proj`."""
    owner, _, leaf = name.rpartition(".")
    bias_leaf = leaf[:-len("weight")] + "bias" if leaf.endswith("weight") else leaf + "_bias"
    bias = f"{owner}.{bias_leaf}" if owner else bias_leaf
    return bias if bias in params and params[bias].dim() == params[name].dim() - 1 else None


def layer_matrices(layer: nn.Module) -> dict[str, Slot]:
    """Every parameter of two or more dimensions that is not another one's bias, with its bias, by component
    name (`.weight` dropped)."""
    params = dict(layer.named_parameters())
    slots = {name: Slot(name, _bias_of(name, params)) for name, p in params.items() if p.dim() >= 2}
    biases = {slot.bias for slot in slots.values()}
    return {name.removesuffix(".weight"): slot for name, slot in slots.items() if name not in biases}


def _linear(layer: nn.Module, path: str) -> Slot | None:
    """A Linear-like module at `path` as a whole component (Conv1D presented transposed)."""
    module = _get(layer, path)
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Module) or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    bias = f"{path}.bias" if getattr(module, "bias", None) is not None else None
    return Slot(f"{path}.weight", bias, _transposed if isinstance(module, Conv1D) else _whole)


def _first(layer: nn.Module, base: str, names: tuple[str, ...]) -> Slot | None:
    for name in names:
        slot = _linear(layer, f"{base}.{name}" if base else name)
        if slot is not None:
            return slot
    return None


def _fused(slot: Slot, slicers: dict[str, Slicer]) -> dict[str, Slot]:
    return {name: Slot(slot.weight, slot.bias, slicer) for name, slicer in slicers.items()}


def _attention(layer: nn.Module, config) -> dict[str, Slot]:
    """q, k, v, o of the layer, separate or as views into a fused projection."""
    for base in ("self_attn", "attn.attention", "attn", "attention", "self_attention"):
        attn = _get(layer, base)
        if isinstance(attn, nn.Module) and not isinstance(attn, (nn.Linear, Conv1D)):
            break
    else:
        return {}
    found: dict[str, Slot] = {}
    heads = getattr(attn, "num_heads", None) or config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    q, k, v = (_linear(layer, f"{base}.{n}") for n in ("q_proj", "k_proj", "v_proj"))
    if q and k and v:
        found = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v}
    elif slot := _linear(layer, f"{base}.c_attn"):  # GPT-2: Conv1D (in, 3 * hidden)
        width = attn.c_attn.weight.shape[1] // 3
        found = _fused(slot, {c: _conv1d_cols(i * width, (i + 1) * width) for i, c in enumerate(ATTENTION[:3])})
    elif slot := _linear(layer, f"{base}.query_key_value"):
        if type(attn).__name__.startswith("Falcon") and getattr(config, "new_decoder_architecture", False):
            group = heads // config.num_kv_heads
            spans = ((0, group), (group, group + 1), (group + 1, group + 2))
            found = _fused(slot, {c: _grouped(config.num_kv_heads, group + 2, a, b)
                                  for c, (a, b) in zip(ATTENTION, spans)})
        elif type(attn).__name__.startswith("Falcon") and getattr(config, "multi_query", False):
            q_rows = heads * head_dim
            found = _fused(slot, {ATTENTION[0]: _rows(0, q_rows), ATTENTION[1]: _rows(q_rows, q_rows + head_dim),
                                  ATTENTION[2]: _rows(q_rows + head_dim, q_rows + 2 * head_dim)})
        else:  # NeoX, BLOOM, Falcon without multi-query: [q_h, k_h, v_h] per head
            found = _fused(slot, {c: _grouped(heads, 3, i, i + 1) for i, c in enumerate(ATTENTION[:3])})
    elif slot := _linear(layer, f"{base}.qkv_proj"):
        if type(attn).__name__.startswith("CodeGen"):  # 4 shards of [q, v, k]
            found = _fused(slot, {ATTENTION[0]: _grouped(4, 3, 0, 1), ATTENTION[2]: _grouped(4, 3, 1, 2),
                                  ATTENTION[1]: _grouped(4, 3, 2, 3)})
        else:  # Phi-3: [q, k, v] rows
            q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
            found = _fused(slot, {ATTENTION[0]: _rows(0, q_rows), ATTENTION[1]: _rows(q_rows, q_rows + kv_rows),
                                  ATTENTION[2]: _rows(q_rows + kv_rows, q_rows + 2 * kv_rows)})
    elif slot := _linear(layer, f"{base}.Wqkv"):  # MPT: [q, k, v] rows of equal size
        rows = attn.Wqkv.weight.shape[0] // 3
        found = _fused(slot, {c: _rows(i * rows, (i + 1) * rows) for i, c in enumerate(ATTENTION[:3])})
    out = _first(layer, base, ("o_proj", "out_proj", "dense", "c_proj"))
    return {**found, ATTENTION[3]: out} if found and out else {}


def _mlp(layer: nn.Module) -> dict[str, Slot]:
    """gate, up, down of a dense MLP (SwiGLU or two-matrix), separate or as views into `gate_up_proj`."""
    for base in ("mlp", "feed_forward", "ffn", ""):
        down = _first(layer, base, ("down_proj", "w2", "c_proj", "dense_4h_to_h", "fc2", "fc_out"))
        if down is None:
            continue
        if fused := _linear(layer, f"{base}.gate_up_proj" if base else "gate_up_proj"):
            rows = _get(layer, fused.weight.removesuffix(".weight")).weight.shape[0] // 2
            return {**_fused(fused, {MLP[0]: _rows(0, rows), MLP[1]: _rows(rows, 2 * rows)}), MLP[2]: down}
        up = _first(layer, base, ("up_proj", "w3", "c_fc", "dense_h_to_4h", "fc1", "fc_in"))
        if up is None:
            continue
        gate = _first(layer, base, ("gate_proj", "w1"))
        return {**({MLP[0]: gate} if gate else {}), MLP[1]: up, MLP[2]: down}
    return {}


def _layout(layer: nn.Module, config) -> dict[str, Slot]:
    """component -> slot for one layer: the canonical components found (SPEC order), then every other matrix.

    A fused parameter is exposed through canonical views only when the views cover it exactly once;
    otherwise it keeps its own name, so no element is ever in two components or in none."""
    matrices = layer_matrices(layer)
    canonical = {**_attention(layer, config), **_mlp(layer)}
    params = dict(layer.named_parameters())
    by_param: dict[str, list[Slot]] = {}
    for slot in canonical.values():
        by_param.setdefault(slot.weight, []).append(slot)
    covered = {name for name, slots in by_param.items()
               if sum(s.slicer(params[name], False).numel() for s in slots) == params[name].numel()}
    layout = {c: canonical[c] for c in COMPONENTS if c in canonical and canonical[c].weight in covered}
    layout.update({name: slot for name, slot in matrices.items() if slot.weight not in covered})
    return layout


def text_config(model: nn.Module):
    """The config of the text decoder (the wrapper's own config for plain causal LMs)."""
    return model.config.get_text_config(decoder=True)


def _decoder(model: nn.Module) -> nn.Module | None:
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return decoder if isinstance(decoder, nn.Module) and decoder is not model else None


def find_stack(model: nn.Module) -> tuple[str, nn.ModuleList, nn.Module | None]:
    """(path, ModuleList, decoder) of the decoder layers: the decoder's ModuleList with the config's layer
    count (or its only ModuleList, while a layer plan runs a stack of another length), else the shortest-
    named ModuleList of that length outside any vision or audio tower."""
    count = getattr(text_config(model), "num_hidden_layers", None)
    paths = {id(module): name for name, module in model.named_modules()}
    decoder = _decoder(model)
    if decoder is not None:
        lists = [m for m in decoder.children() if isinstance(m, nn.ModuleList) and len(m) > 0]
        matching = [m for m in lists if len(m) == count]
        chosen = matching if len(matching) == 1 else lists if len(lists) == 1 else []
        if chosen and id(chosen[0]) in paths:
            return paths[id(chosen[0])], chosen[0], decoder
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)
                  and len(m) == count and not any(t in name.lower() for t in _TOWERS)]
    if not candidates:
        raise AnatomyError(f"Could not find the decoder layers of {type(model).__name__}: no list of "
                           f"{count} layers (the config's num_hidden_layers) outside vision/audio towers.")
    name, layers = min(candidates, key=lambda c: (c[0].count("."), len(c[0])))
    return name, layers, decoder


def _kind(layer: nn.Module, matrices: dict[str, Slot], layer_type: str | None) -> Hashable:
    """What a layer is: its class, its config layer type (sliding/full, conv/attention) and its matrices'
    names and shapes. Layers of one kind can stand in for each other in neighbour-mean."""
    params = dict(layer.named_parameters())
    return (type(layer).__name__, layer_type, tuple((n, tuple(params[s.weight].shape)) for n, s in matrices.items()))


# The tuple length each decoder layer returns (0: a bare tensor), learned by a probe; kept while the layer lives.
_OUTPUT_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LayerAdapter:
    """Finds the decoder layers, the final norm, the head and every layer's components and matrices.

    Built fresh whenever needed (it is cheap) so its views always point at the current parameters.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = text_config(model)
        self.layers_path, self.layers, self.decoder = find_stack(model)
        self.family = getattr(self.config, "model_type", type(model).__name__)
        self.final_norm = next((getattr(self.decoder, name) for name in FINAL_NORM_NAMES
                                if isinstance(getattr(self.decoder, name, None), nn.Module)), None)
        self._layouts: dict[int, dict[str, Slot]] = {}
        self._kinds: list[Hashable] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layout(self, layer: int) -> dict[str, Slot]:
        """component -> slot of one layer (cached: the adapter is rebuilt when the stack changes)."""
        if layer not in self._layouts:
            self._layouts[layer] = _layout(self.layers[self.check_layer(layer)], self.config)
        return self._layouts[layer]

    @property
    def all_components(self) -> tuple[str, ...]:
        """Every component of any layer, in order of first appearance."""
        return tuple(dict.fromkeys(c for i in range(self.num_layers) for c in self.layout(i)))

    @property
    def components(self) -> tuple[str, ...]:
        """The components every layer has, with the same shape: those a per-component experiment can stack
        across depth (canonical ones in SPEC order, then the others)."""
        shapes = [{c: tuple(self.component(i, c).weight.shape) for c in self.layout(i)}
                  for i in range(self.num_layers)]
        return tuple(c for c in self.all_components if all(c in s and s[c] == shapes[0][c] for s in shapes))

    def stacked_components(self, experiment: str) -> tuple[str, ...]:
        """`components` for an experiment that compares each component across depth, or a one-line refusal."""
        if not self.components:
            raise AnatomyError(f"{experiment} compares each component across all layers, but no component of this "
                               f"{self.family} model ({type(self.model).__name__}) is in every layer with one shape.")
        return self.components

    def layers_with(self, component: str) -> list[int]:
        """The layers that have `component` (all of them, except in hybrid stacks)."""
        return [i for i in range(self.num_layers) if component in self.layout(i)]

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise AnatomyError(f"Layer {layer} does not exist: this model has layers 0..{self.num_layers - 1}.")
        return layer

    def resolve_layers(self, layers: Sequence[int] | str | None) -> list[int]:
        """The chosen layers (indices, or text such as '0,3,5-8'), each checked; every layer when none are chosen."""
        if isinstance(layers, str):
            return parse_layers(layers, self.num_layers)
        return [self.check_layer(layer) for layer in layers] if layers is not None else list(range(self.num_layers))

    def check_component(self, component: str, layer: int | None = None) -> str:
        known = self.layout(layer) if layer is not None else self.all_components
        if component not in known:
            where = f"layer {layer} of this {self.family} model" if layer is not None else f"this {self.family} model"
            raise AnatomyError(f"Component '{component}' is not in {where}; it has: " + ", ".join(known))
        return component

    def _ref(self, layer: int, component: str, slot: Slot) -> ComponentRef:
        bias = self._storage(layer, slot.bias) if slot.bias else None
        return ComponentRef(layer=layer, component=component, param_name=f"{self.layers_path}.{layer}.{slot.weight}",
                            weight=slot.slicer(self._storage(layer, slot.weight), False),
                            bias=None if bias is None else slot.slicer(bias, True))

    def _storage(self, layer: int, name: str) -> torch.Tensor:
        """The real tensor behind a layer's parameter, also where accelerate offloaded the layer (see offload)."""
        owner, _, leaf = name.rpartition(".")
        return offload.storage(self.layers[layer].get_submodule(owner), leaf)

    def component(self, layer: int, component: str) -> ComponentRef:
        self.check_layer(layer)
        return self._ref(layer, component, self.layout(layer)[self.check_component(component, layer)])

    def layer_components(self, layer: int, components: tuple[str, ...] | None = None) -> list[ComponentRef]:
        """The given components of a layer, or all of its components."""
        return [self.component(layer, c) for c in (components or tuple(self.layout(layer)))]

    def matrices(self, layer: int) -> list[ComponentRef]:
        """Every matrix of the layer as a whole real parameter (with its bias): what layer-level
        interventions act on. For a Llama-family layer these are exactly the seven components."""
        self.check_layer(layer)
        return [self._ref(layer, name, slot) for name, slot in layer_matrices(self.layers[layer]).items()]

    @property
    def kinds(self) -> list[Hashable]:
        """One kind per layer; neighbour-mean replaces a layer only with layers of its own kind."""
        if self._kinds is None:
            types = getattr(self.config, "layer_types", None)
            types = types if types is not None and len(types) == self.num_layers else [None] * self.num_layers
            self._kinds = [_kind(layer, layer_matrices(layer), t) for layer, t in zip(self.layers, types)]
        return self._kinds

    @property
    def uniform(self) -> bool:
        """Whether every layer is of one kind (no hybrid or alternating stack)."""
        return len(set(self.kinds)) == 1

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head applied to the output of the last decoder layer (final norm, projection, LM head)."""
        return self._finish(self.model.get_output_embeddings()(self._head_input(hidden)))

    def head_logit_blocks(self, rows: torch.Tensor, block: int) -> Iterator[tuple[int, torch.Tensor]]:
        """`logits(rows)` for hidden rows [n, hidden], one vocabulary block at a time: (first token id,
        logits [n, block]). A block of a thousand rows by a thousand tokens (4 MB) stays in cache, so
        the projection runs at the BLAS peak (177 against 110-135 GFLOP/s for the whole 49k vocabulary
        at once, measured here) and whatever reduces the block reads it from cache, not from memory."""
        head = self.model.get_output_embeddings()
        hidden = self._head_input(rows)
        if type(head) is not nn.Linear:
            yield 0, self._finish(head(hidden))
            return
        # Under a device map the head may compute on another device than the last layer, or be offloaded.
        # Each block is computed in float32 (bfloat16 keeps 8 bits of mantissa, so a logit near 20 may be off
        # by 0.08), except under --autocast, where F.linear computes in the run's dtype like every matmul.
        device = offload.execution_device(head)
        weight, bias = (offload.storage(head, name, pin=False) for name in ("weight", "bias"))
        weight, bias, hidden = weight.to(device), None if bias is None else bias.to(device), hidden.to(device).float()
        for start in range(0, weight.shape[0], block):
            part = None if bias is None else bias[start:start + block].float()
            yield start, self._finish(F.linear(hidden, weight[start:start + block].float(), part))

    def _head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        project_out = getattr(self.decoder, "project_out", None)  # OPT-350m style
        return hidden if project_out is None else project_out(hidden)

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        """The scalings some heads apply to the logits (Granite, Cohere, Falcon-H1) and Gemma's soft cap."""
        config = self.config
        if getattr(config, "logits_scaling", None):
            logits = logits / config.logits_scaling
        if getattr(config, "logit_scale", None):
            logits = logits * config.logit_scale
        if getattr(config, "lm_head_multiplier", None):
            logits = logits * config.lm_head_multiplier
        cap = getattr(config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def output_form(self, layer: int) -> int:
        """How the layer returns its hidden states: 0 for a bare tensor, else the length of the tuple (or list,
        as openai-gpt's) whose first element they are. Learned for every layer of the stack from one two-token
        forward pass."""
        module = self.layers[self.check_layer(layer)]
        if module not in _OUTPUT_FORMS:
            def hook(layer_module, args, output):
                _OUTPUT_FORMS[layer_module] = len(output) if isinstance(output, (tuple, list)) else 0

            handles = [m.register_forward_hook(hook) for m in self.layers]
            device = self.model.get_input_embeddings().weight.device
            try:
                with torch.no_grad():
                    self.model(input_ids=torch.tensor([[1, 2]], device=device), use_cache=False)
            finally:
                for handle in handles:
                    handle.remove()
        return _OUTPUT_FORMS[module]

    def describe(self) -> list[dict]:
        """One row per component: its name, the real parameter behind it, its shape, the layers that have it,
        whether per-component experiments include it, and how experts are treated."""
        included = set(self.components)
        rows = []
        for component in self.all_components:
            layers = self.layers_with(component)
            ref, slot = self.component(layers[0], component), self.layout(layers[0])[component]
            real = dict(self.layers[layers[0]].named_parameters())[slot.weight]
            experts = real.shape[0] if real.dim() == 3 and "expert" in ref.param_name else 0
            rows.append({"component": component,
                         "parameter": ref.param_name.replace(f".{layers[0]}.", ".{i}.", 1),
                         "shape": tuple(ref.matrix().shape), "bias": ref.bias is not None,
                         "view": slot.slicer is not _whole,
                         "layers": "all" if len(layers) == self.num_layers else ",".join(map(str, layers)),
                         "experts": f"{experts}, aggregated" if experts else "",
                         "included": component in included})
        return rows


_LAYER_TOKEN = re.compile(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?", re.ASCII)


def parse_layers(text: str | None, num_layers: int) -> list[int]:
    """Parse '0,3,5-8' (0-based, inclusive ascending ranges) into layer indices; None, '' or 'all': every layer.

    Only ASCII digits count: Python's int() would also take '1_0' or Arabic-Indic digits, which no user
    means as a layer number."""
    if text is None or text.strip().lower() in {"", "all"}:
        return list(range(num_layers))
    layers: set[int] = set()
    for token in text.split(","):
        match = _LAYER_TOKEN.fullmatch(token)
        if not match:
            raise AnatomyError(f"Bad layer token {shown(token)} in {shown(text)}: use 0-based indices like 0,3,5-8.")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise AnatomyError(f"Range {lo}-{hi} in {shown(text)} runs backwards: write it {hi}-{lo}.")
        if hi >= num_layers:
            raise AnatomyError(f"Layer {hi} in {shown(text)} does not exist: layers are 0..{num_layers - 1}.")
        layers.update(range(lo, hi + 1))
    return sorted(layers)
