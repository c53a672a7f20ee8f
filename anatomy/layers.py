"""The architecture adapter: one naming scheme for the decoder layers and weight matrices of any causal LM.

Every table, plot, CLI flag and message names a weight `layers.{i}.{component}` with `i` 0-based and
`component` one of the seven names of SPEC.md. Architectures that fuse matrices (GPT-2's transposed
`c_attn` Conv1D, GPT-NeoX's head-interleaved `query_key_value`, Phi-3's `qkv_proj`/`gate_up_proj`) are
exposed as *views* into the fused parameter, so an in-place edit of `self_attn.q_proj` edits exactly the
query slice of the real weight and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


def _whole(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
    return t


def _transposed(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
    """GPT-2 Conv1D stores (in, out); present it as (out, in) like nn.Linear."""
    return t if is_bias else t.T


def _conv1d_cols(start: int, stop: int) -> Slicer:
    return lambda t, is_bias: t[start:stop] if is_bias else t[:, start:stop].T


def _rows(start: int, stop: int) -> Slicer:
    return lambda t, is_bias: t[start:stop]


def _neox_part(part: int, heads: int, head_dim: int) -> Slicer:
    """GPT-NeoX interleaves per head: rows are [q_h, k_h, v_h] for each head h, so a part is strided."""
    def view(t: torch.Tensor, is_bias: bool) -> torch.Tensor:
        return t.view(heads, 3, head_dim, *t.shape[1:])[:, part]
    return view


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
        """The weight as a 2-D (out, in) matrix (a copy where the view is strided across heads)."""
        return self.weight.reshape(-1, self.weight.shape[-1])

    def assign(self, matrix: torch.Tensor) -> None:
        """Write a 2-D (out, in) matrix into the live weight."""
        with torch.no_grad():
            self.weight.copy_(matrix.reshape(self.weight.shape))


def _layout(model: nn.Module, layer: nn.Module) -> tuple[str, dict[str, tuple[str, Slicer]]]:
    """Recognise the layer by the submodules it has; return (family, component -> (module path, slicer))."""
    config = model.config
    has = lambda path: _get(layer, path) is not None  # noqa: E731
    if has("self_attn.q_proj") and has("self_attn.o_proj"):
        mlp = {c: (c, _whole) for c in MLP if has(c)}
        return "llama", {**{c: (c, _whole) for c in ATTENTION}, **mlp}
    if has("self_attn.q_proj") and has("self_attn.out_proj") and has("fc1"):
        attn = {c: (c, _whole) for c in ATTENTION[:3]}
        return "opt", {**attn, "self_attn.o_proj": ("self_attn.out_proj", _whole),
                       "mlp.up_proj": ("fc1", _whole), "mlp.down_proj": ("fc2", _whole)}
    if has("self_attn.qkv_proj"):
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        q = config.num_attention_heads * head_dim
        kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * head_dim
        ffn = config.intermediate_size
        return "phi3", {
            "self_attn.q_proj": ("self_attn.qkv_proj", _rows(0, q)),
            "self_attn.k_proj": ("self_attn.qkv_proj", _rows(q, q + kv)),
            "self_attn.v_proj": ("self_attn.qkv_proj", _rows(q + kv, q + 2 * kv)),
            "self_attn.o_proj": ("self_attn.o_proj", _whole),
            "mlp.gate_proj": ("mlp.gate_up_proj", _rows(0, ffn)),
            "mlp.up_proj": ("mlp.gate_up_proj", _rows(ffn, 2 * ffn)),
            "mlp.down_proj": ("mlp.down_proj", _whole),
        }
    if has("attn.c_attn"):
        h = config.hidden_size
        return "gpt2", {
            "self_attn.q_proj": ("attn.c_attn", _conv1d_cols(0, h)),
            "self_attn.k_proj": ("attn.c_attn", _conv1d_cols(h, 2 * h)),
            "self_attn.v_proj": ("attn.c_attn", _conv1d_cols(2 * h, 3 * h)),
            "self_attn.o_proj": ("attn.c_proj", _transposed),
            "mlp.up_proj": ("mlp.c_fc", _transposed),
            "mlp.down_proj": ("mlp.c_proj", _transposed),
        }
    if has("attention.query_key_value"):
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads
        return "gpt_neox", {
            "self_attn.q_proj": ("attention.query_key_value", _neox_part(0, heads, head_dim)),
            "self_attn.k_proj": ("attention.query_key_value", _neox_part(1, heads, head_dim)),
            "self_attn.v_proj": ("attention.query_key_value", _neox_part(2, heads, head_dim)),
            "self_attn.o_proj": ("attention.dense", _whole),
            "mlp.up_proj": ("mlp.dense_h_to_4h", _whole),
            "mlp.down_proj": ("mlp.dense_4h_to_h", _whole),
        }
    raise AnatomyError(f"Architecture {type(model).__name__} is not supported by the layer adapter "
                       "(supported: Llama/SmolLM/Mistral/Qwen2/Gemma, Phi-3, GPT-2, GPT-NeoX, OPT).")


def _get(root: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


# Where each family keeps its decoder stack and final norm, relative to the *ForCausalLM model.
_STACKS = (("model.layers", "model.norm"), ("transformer.h", "transformer.ln_f"),
           ("model.decoder.layers", "model.decoder.final_layer_norm"),
           ("gpt_neox.layers", "gpt_neox.final_layer_norm"))


class LayerAdapter:
    """Finds the decoder layers, the final norm and the seven components of a causal LM.

    Built fresh whenever needed (it is cheap) so its views always point at the current parameters.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        for layers_path, norm_path in _STACKS:
            layers = _get(model, layers_path)
            if isinstance(layers, nn.ModuleList) and len(layers) > 0:
                self.layers_path, self.layers, self.final_norm = layers_path, layers, _get(model, norm_path)
                break
        else:
            raise AnatomyError(f"Could not find the decoder layers of {type(model).__name__}; supported layouts: "
                               + ", ".join(p for p, _ in _STACKS))
        self.family, self._layout = _layout(model, self.layers[0])

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def components(self) -> tuple[str, ...]:
        """The canonical components this model has, in SPEC order (a GPT-2 MLP has no gate)."""
        return tuple(c for c in COMPONENTS if c in self._layout)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise AnatomyError(f"Layer {layer} does not exist: this model has layers 0..{self.num_layers - 1}.")
        return layer

    def resolve_layers(self, layers: list[int] | None) -> list[int]:
        """The chosen layers, each checked, or every layer when none are chosen."""
        return [self.check_layer(layer) for layer in layers] if layers is not None else list(range(self.num_layers))

    def check_component(self, component: str) -> str:
        if component not in self._layout:
            raise AnatomyError(f"Component '{component}' is not in this {self.family} model; it has: "
                               + ", ".join(self.components))
        return component

    def component(self, layer: int, component: str) -> ComponentRef:
        self.check_layer(layer)
        path, slicer = self._layout[self.check_component(component)]
        module = _get(self.layers[layer], path)
        bias = offload.storage(module, "bias")  # the real tensors, also where accelerate offloaded the layer
        return ComponentRef(layer=layer, component=component,
                            param_name=f"{self.layers_path}.{layer}.{path}.weight",
                            weight=slicer(offload.storage(module, "weight"), False),
                            bias=None if bias is None else slicer(bias, True))

    def layer_components(self, layer: int, components: tuple[str, ...] | None = None) -> list[ComponentRef]:
        return [self.component(layer, c) for c in (components or self.components)]

    def iter_components(self, components: tuple[str, ...] | None = None) -> Iterator[ComponentRef]:
        for layer in range(self.num_layers):
            yield from self.layer_components(layer, components)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head applied to the output of the last decoder layer (final norm, projection, LM head)."""
        return self._softcap(self.model.get_output_embeddings()(self._head_input(hidden)))

    def head_logit_blocks(self, rows: torch.Tensor, block: int) -> Iterator[tuple[int, torch.Tensor]]:
        """`logits(rows)` for hidden rows [n, hidden], one vocabulary block at a time: (first token id,
        logits [n, block]). A block of a thousand rows by a thousand tokens (4 MB) stays in cache, so
        the projection runs at the BLAS peak (177 against 110-135 GFLOP/s for the whole 49k vocabulary
        at once, measured here) and whatever reduces the block reads it from cache, not from memory."""
        head = self.model.get_output_embeddings()
        hidden = self._head_input(rows)
        if type(head) is not nn.Linear:
            yield 0, self._softcap(head(hidden))
            return
        # Under a device map the head may compute on another device than the last layer, or be offloaded.
        # Each block is computed in float32: bfloat16 keeps 8 bits of mantissa, so a logit near 20 may be off
        # by 0.08.
        device = offload.execution_device(head)
        weight, bias = (offload.storage(head, name, pin=False) for name in ("weight", "bias"))
        weight, bias, hidden = weight.to(device), None if bias is None else bias.to(device), hidden.to(device).float()
        for start in range(0, weight.shape[0], block):
            part = None if bias is None else bias[start:start + block].float()
            yield start, self._softcap(F.linear(hidden, weight[start:start + block].float(), part))

    def _head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        project_out = _get(self.model, "model.decoder.project_out")  # OPT-350m style
        return hidden if project_out is None else project_out(hidden)

    def _softcap(self, logits: torch.Tensor) -> torch.Tensor:
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def describe(self) -> list[dict]:
        """One row per component: canonical name, the real parameter it lives in, its shape."""
        rows = []
        for ref in self.layer_components(0):
            rows.append({"component": ref.component, "parameter": ref.param_name.replace(".0.", ".{i}.", 1),
                         "shape": tuple(ref.matrix().shape), "bias": ref.bias is not None})
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
