"""The plan grammar: which decoder layers run in which order, as data and as text.

A plan is a list of steps; a step is one layer index or a group of indices that run in parallel on the
same input, their outputs averaged. `parse_plan` reads the text form (`GRAMMAR`, shown by
`python -m anatomy plans --help`), `str(plan)` writes it back canonically, and `variant_plan` builds the
plans of the "Transformer Layers as Painters" variants (SPEC section 8) over a centred middle block. A
removal or a reorder of layers is a plan of single steps (`Plan.from_order`). Running a plan is
`anatomy.plans.execution`; nothing here touches a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import AnatomyError, shown

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
    def from_order(cls, order: Sequence[int]) -> Plan:
        """The plan that runs these layers one after another: a removal or a reorder (repeats allowed)."""
        return cls(tuple((int(i),) for i in order))

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
            found = shown(token, 32) if token else "the end"  # a token can be a 10,000-digit number
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
            unit: list[Step] = [tuple(sorted(group))]  # a group is a set: the mean of its layers
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
                       "(full grammar: python -m anatomy plans --help).")


# ---- the painters variants

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
