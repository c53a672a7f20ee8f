"""Side-by-side generation: the same prompt and seed through the original and the altered model, greedy and
sampled, and where the new tokens differ.

The alteration (an intervention on layers, or a layer plan) is entered only around the altered
generations, so the weights are the original ones for the rest of the run. A chat model answers a prompt
sent through its tokenizer's chat template; given raw, an Instruct model continues the text instead (the
embedded SmolLM2-135M-Instruct runs on from "The capital of France is" into unrelated dates), so the template
is used by default wherever the tokenizer has one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import chat
from .autocast_cache import cached_casts
from .errors import AnatomyError
from .interventions import intervention
from .layers import LayerAdapter
from .options import LAYERS
from .plans import apply_plan, parse_plan
from .progress import ProgressCallback

MODES = {"greedy": {"do_sample": False},
         "sampled": {"do_sample": True, "temperature": 0.8, "top_p": 0.95}}
SIDES = ("original", "altered")
DIFFERS = "differs"
MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class Alteration:
    """What the altered side changes: an intervention on layers (`value` is scale's alpha or noise's sigma),
    or, when `plan` is given, a layer plan such as 0-12,15x4,17-29 instead."""

    intervention: str = "none"
    layers: str | list[int] | None = None  # 0-based selection; None: every layer
    value: float = 0.5
    seed: int = 0
    plan: str | None = None

    def on(self, model: PreTrainedModel) -> tuple[Callable[[], AbstractContextManager], bool]:
        """The context that alters `model`, and whether the altered side may use the KV cache: skip removes
        layers the cache is indexed by, while a plan gives every step its own cache slot."""
        adapter = LayerAdapter(model)
        if self.plan is not None:
            plan = parse_plan(self.plan, adapter.num_layers)
            return (lambda: apply_plan(model, plan)), True
        layers = adapter.resolve_layers(self.layers) if self.intervention != "none" else []
        return (lambda: intervention(adapter, self.intervention, layers, alpha=self.value, sigma=self.value,
                                     seed=self.seed)), self.intervention != "skip"

    def describe(self) -> str:
        if self.plan is not None:
            return f"layer plan {self.plan}"
        if self.intervention == "none":
            return "none (both sides are the original model)"
        layers = "every layer" if self.layers is None else f"layers {LAYERS.format(self.layers)}"
        value = {"scale": f", alpha {self.value:g}", "noise": f", sigma {self.value:g}, seed {self.seed}"}
        return f"{self.intervention} of {layers}{value.get(self.intervention, '')}"


@dataclass
class SideBySide:
    """Both sides' new tokens for each decoding mode, and the prompt exactly as the models saw it."""

    prompt: str
    chat_template: bool  # whether the prompt went through the tokenizer's chat template
    input_ids: list[int]
    ids: dict[str, dict[str, list[int]]]  # mode -> side -> new token ids
    tokens: dict[str, dict[str, list[str]]]  # the same, each token decoded alone (for marking differences)
    texts: dict[str, dict[str, str]]  # the same, decoded whole

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool, input_ids: list[int],
           ids: dict[str, dict[str, list[int]]]) -> SideBySide:
        """The result with every side decoded, token by token and whole."""
        def text(tokens: list[int]) -> str:  # special tokens (<|im_end|>) are markers, not words: not shown
            return tokenizer.decode(tokens, skip_special_tokens=True)
        return cls(prompt, chat_template, input_ids, ids,
                   {mode: {side: [text([t]) for t in new] for side, new in pair.items()} for mode, pair in ids.items()},
                   {mode: {side: text(new) for side, new in pair.items()} for mode, pair in ids.items()})

    def marked(self, mode: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
        """(token, label) for both sides: tokens outside the longest common blocks are labelled DIFFERS."""
        original, altered = self.ids[mode]["original"], self.ids[mode]["altered"]
        names = self.tokens[mode]
        sides: tuple[list, list] = ([], [])
        matcher = difflib.SequenceMatcher(a=original, b=altered, autojunk=False)
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            label = None if tag == "equal" else DIFFERS
            sides[0].extend((token, label) for token in names["original"][a0:a1])
            sides[1].extend((token, label) for token in names["altered"][b0:b1])
        return sides

    def differences(self) -> pd.DataFrame:
        """Per mode: token counts, tokens differing position by position, and the first differing position."""
        return difference_table(self.ids)

    def table(self) -> pd.DataFrame:
        """One row per mode and side: the generated text and its token ids (space-separated)."""
        return pd.DataFrame([{"mode": mode, "side": side, "tokens": len(ids), "text": self.texts[mode][side],
                              "token_ids": " ".join(map(str, ids))}
                             for mode, pair in self.ids.items() for side, ids in pair.items()],
                            columns=["mode", "side", "tokens", "text", "token_ids"])


def difference_table(ids: dict[str, dict[str, list[int]]]) -> pd.DataFrame:
    rows = []
    for mode, pair in ids.items():
        a, b = pair["original"], pair["altered"]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                     None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"mode": mode, "tokens_original": len(a), "tokens_altered": len(b),
                     "tokens_differing": sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b)),
                     "first_difference_at": first})
    return pd.DataFrame(rows, columns=["mode", "tokens_original", "tokens_altered", "tokens_differing",
                                       "first_difference_at"])


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_inputs(tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool = True
                  ) -> tuple[dict[str, torch.Tensor], bool]:
    """The model inputs for `prompt` and whether the chat template made them: the prompt as the user's turn
    followed by the assistant's opening, when `chat_template` is on and the tokenizer has a template."""
    if not prompt or not prompt.strip():
        raise AnatomyError("The prompt is empty: type a few words for the models to continue.")
    if chat_template and has_chat_template(tokenizer):
        text = chat.render(tokenizer, [{"role": "user", "content": prompt}])  # a child process: it may be hostile
        return dict(tokenizer(text, add_special_tokens=False, return_tensors="pt")), True
    return dict(tokenizer(prompt, return_tensors="pt")), False


def check_new_tokens(max_new_tokens: int) -> None:
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise AnatomyError(f"New tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}.")


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, inputs: dict[str, torch.Tensor], *,
             max_new_tokens: int, seed: int, mode: str, use_cache: bool = True) -> list[int]:
    """New token ids after `inputs`; the global torch seed is set first, so equal seeds give equal samples."""
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    torch.manual_seed(seed)
    with cached_casts():  # decoding changes no weight: one cast of each for all the new tokens
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, use_cache=use_cache,
                             pad_token_id=tokenizer.pad_token_id, **MODES[mode])
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def side_by_side(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                 alter: Callable[[], AbstractContextManager], *, max_new_tokens: int = 40, seed: int = 0,
                 use_cache_altered: bool = True, chat_template: bool = True,
                 progress: ProgressCallback | None = None) -> SideBySide:
    """Greedy and sampled generations of the original and the altered model, same prompt and seed.

    `alter()` is entered only around the altered generations; changes that remove layers should pass
    `use_cache_altered=False` (the KV cache is indexed by layer).
    """
    check_new_tokens(max_new_tokens)
    inputs, templated = prompt_inputs(tokenizer, prompt, chat_template)
    ids: dict[str, dict[str, list[int]]] = {}
    steps = [(mode, side) for mode in MODES for side in SIDES]
    for done, (mode, side) in enumerate(steps):
        if progress is not None:
            progress(done, len(steps), f"generating ({mode}, {side})")
        kwargs = dict(max_new_tokens=max_new_tokens, seed=seed, mode=mode)
        if side == "original":
            new = generate(model, tokenizer, inputs, **kwargs)
        else:
            with alter():
                new = generate(model, tokenizer, inputs, use_cache=use_cache_altered, **kwargs)
        ids.setdefault(mode, {})[side] = new
    return SideBySide.of(tokenizer, prompt, templated, inputs["input_ids"][0].tolist(), ids)


def generate_side_by_side(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                          alteration: Alteration, *, max_new_tokens: int = 40, seed: int = 0,
                          chat_template: bool = True, progress: ProgressCallback | None = None) -> SideBySide:
    """`side_by_side` with the altered side described by an `Alteration` (what the CLI and the app give)."""
    check_new_tokens(max_new_tokens)
    alter, use_cache = alteration.on(model)
    return side_by_side(model, tokenizer, prompt, alter, max_new_tokens=max_new_tokens, seed=seed,
                        use_cache_altered=use_cache, chat_template=chat_template, progress=progress)
