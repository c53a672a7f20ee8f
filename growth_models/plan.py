"""The growth plan: layer roles, FFN widths and the six developmental phases, as data.

A plan is a dataclass that round-trips through JSON (`--growth-plan FILE`), so a user can change roles,
phases, sources and shares without touching code. `default_plan()` is the study's plan
(SPEC section 7); `plan_from_budget()` derives one from the anatomy engine's `budget` JSON.
Layer indices are 0-based everywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anatomy.errors import AnatomyError, shown

DEFAULT_ROLES = "R C C R C C R M C C M R".split()
DEFAULT_MULTIPLIERS = {"R": 1.0, "M": 2.0, "I": 3.0, "C": 4.0}
ROLE_NAMES = {"R": "redundant", "M": "minor", "I": "important", "C": "critical"}
MAX_LAYERS = 256  # far beyond any plan this trainer is sized for; bounds what a file can ask for
MULTIPLIER_RANGE = (1 / 16, 64.0)  # FFN width / hidden: at least one neuron at hidden 16, at most 64x


def _number(value: object, what: str, *, low: float = 0.0, low_inclusive: bool = True) -> float:
    """A finite JSON number >= `low` (or > `low`), or a one-line error naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnatomyError(f"{what} must be a number, got {shown(value)}.")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or x < low or (x == low and not low_inclusive):
        raise AnatomyError(f"{what} must be a finite number {'>=' if low_inclusive else '>'} {low:g}, "
                           f"got {shown(value)}.")
    return x


def _index(value: object, what: str) -> int:
    """A layer index from JSON: an integer, or a string of digits (JSON object keys are strings)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise AnatomyError(f"{what} must be a layer index (a whole number), got {shown(value)}.")


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise AnatomyError(f"{what} must be a JSON object, got {shown(value)}.")
    return value


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise AnatomyError(f"{what} must be a JSON list, got {shown(value)}.")
    return value


@dataclass
class Phase:
    """One phase: which layers train, which layers appear (and what they start as), its step share.

    `sources` maps each layer grown in this phase to the layer it is cloned from, or to None for
    a fresh (randomly initialised) layer. `ffn_scale` multiplies a new layer's FFN output.
    `train` is a list of layers or "all".
    """

    name: str
    train: list[int] | str
    sources: dict[int, int | None] = field(default_factory=dict)
    share: float = 1.0
    ffn_scale: float = 1.0

    def trained_layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers)) if self.train == "all" else sorted(self.train)


@dataclass
class GrowthPlan:
    """Roles per layer, width multiplier per role, and the phases in order."""

    roles: list[str] = field(default_factory=lambda: list(DEFAULT_ROLES))
    multipliers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))
    phases: list[Phase] = field(default_factory=list)
    clone_noise: float = 0.01  # std of added noise, relative to each cloned matrix's std
    train_shared: bool = True  # embedding (tied head) and final norm train in every phase

    @property
    def n_layers(self) -> int:
        return len(self.roles)

    def widths(self, hidden: int) -> list[int]:
        """FFN width per layer: multiplier x hidden, rounded to an integer."""
        return [int(round(self.multipliers[r] * hidden)) for r in self.roles]

    def validate(self) -> GrowthPlan:
        """At least one layer, every layer grown exactly once, sources grown before use, finite positive
        shares and multipliers in MULTIPLIER_RANGE (every comparison with nan is False, so it is named)."""
        if not 1 <= self.n_layers <= MAX_LAYERS:
            raise AnatomyError(f"a plan has 1 to {MAX_LAYERS} layers (one role each), got {self.n_layers}.")
        unknown = sorted({r for r in self.roles} - set(self.multipliers))
        if unknown:
            raise AnatomyError(f"roles {shown(unknown)} have no width multiplier; add them to 'multipliers'.")
        low, high = MULTIPLIER_RANGE
        for role, m in self.multipliers.items():
            if not low <= m <= high:
                raise AnatomyError(f"the width multiplier of role {shown(role)} is {m}; use {low:g} to {high:g}.")
        if not math.isfinite(self.clone_noise) or self.clone_noise < 0:
            raise AnatomyError(f"clone_noise is {self.clone_noise}; use a finite number >= 0.")
        grown: set[int] = set()
        for p in self.phases:
            if not (math.isfinite(p.share) and p.share > 0 and math.isfinite(p.ffn_scale)):
                raise AnatomyError(f"phase {shown(p.name)} has share {p.share} and ffn_scale {p.ffn_scale}; "
                                   "shares must be positive and both finite.")
            for layer, src in p.sources.items():
                if not 0 <= layer < self.n_layers:
                    raise AnatomyError(f"phase {shown(p.name)} grows layer {layer}, outside 0..{self.n_layers - 1}.")
                if layer in grown:
                    raise AnatomyError(f"phase {shown(p.name)} grows layer {layer} a second time.")
                if src is not None and src not in grown:
                    raise AnatomyError(f"phase {shown(p.name)} clones layer {layer} from {src}, not grown yet.")
            grown |= set(p.sources)
            absent = set(p.trained_layers(self.n_layers)) - grown
            if absent:
                raise AnatomyError(f"phase {shown(p.name)} trains layers {shown(sorted(absent))} that are not "
                                   "grown yet.")
        if self.phases and grown != set(range(self.n_layers)):
            raise AnatomyError(f"layers {sorted(set(range(self.n_layers)) - grown)} are never grown.")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: object) -> GrowthPlan:
        """A plan from parsed JSON (`to_json`'s shape); any value that cannot make a model is a one-line error."""
        d = _object(d, "a growth plan")
        roles = _list(d.get("roles"), "'roles'")
        if not all(isinstance(r, str) and r for r in roles):
            raise AnatomyError(f"'roles' must be role letters like [\"R\", \"C\"], got {shown(roles)}.")
        multipliers = {str(k): _number(v, f"the multiplier of role {shown(k)}")
                       for k, v in _object(d.get("multipliers", DEFAULT_MULTIPLIERS), "'multipliers'").items()}
        phases = [_phase(_object(p, "a phase")) for p in _list(d.get("phases", []), "'phases'")]
        train_shared = d.get("train_shared", True)
        if not isinstance(train_shared, bool):
            raise AnatomyError(f"'train_shared' must be true or false, got {shown(train_shared)}.")
        return cls(roles=list(roles), multipliers=multipliers, phases=phases,
                   clone_noise=_number(d.get("clone_noise", 0.01), "'clone_noise'"),
                   train_shared=train_shared).validate()


def _phase(p: dict) -> Phase:
    name = p.get("name")
    if not isinstance(name, str) or not name:
        raise AnatomyError(f"every phase needs a 'name' (text), got {shown(name)}.")
    train = p.get("train")
    if train != "all":
        train = [_index(layer, f"a layer in 'train' of phase {shown(name)}")
                 for layer in _list(train, f"'train' of phase {shown(name)} (a list of layers, or \"all\")")]
    sources = {_index(k, f"a grown layer of phase {shown(name)}"):
               (None if v is None else _index(v, f"a source layer of phase {shown(name)}"))
               for k, v in _object(p.get("sources", {}), f"'sources' of phase {shown(name)}").items()}
    return Phase(name=name, train=train, sources=sources,
                 share=_number(p.get("share", 1.0), f"the share of phase {shown(name)}", low_inclusive=False),
                 ffn_scale=_number(p.get("ffn_scale", 1.0), f"the ffn_scale of phase {shown(name)}"))


def default_plan() -> GrowthPlan:
    """The study's plan (SPEC section 7); shares sum to 103 and are normalised by `phase_steps`."""
    phases = [
        Phase("gastrulation", [4, 5], {4: None, 5: None}, 30),
        Phase("neurulation", [1, 2], {1: 4, 2: 5}, 20),
        Phase("organogenesis", [8, 9], {8: 4, 9: 5}, 20),
        Phase("growth", [7, 10], {7: 5, 10: 9}, 12),
        Phase("connective", [0, 3, 6, 11], {0: 1, 3: 2, 6: 5, 11: 10}, 6, ffn_scale=0.5),
        Phase("maturation", "all", {}, 15),
    ]
    return GrowthPlan(phases=phases).validate()


def uniform_width(plan: GrowthPlan, hidden: int) -> int:
    """The one FFN width whose 12 equal layers come closest to the plan's total FFN parameters."""
    return int(round(sum(plan.widths(hidden)) / plan.n_layers))


def phase_steps(shares: list[float], total: int) -> list[int]:
    """Split `total` steps by `shares` (largest remainder), every phase at least one step."""
    if total < len(shares):
        raise AnatomyError(f"{total} steps cannot cover {len(shares)} phases; pass --steps {len(shares)} or more.")
    s = sum(shares)
    exact = [total * x / s for x in shares]
    steps = [max(1, int(e)) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(steps) < total:
        steps[order[i % len(order)]] += 1
        i += 1
    while sum(steps) > total:  # only when the one-step floor overshot
        j = max(range(len(steps)), key=lambda k: steps[k])
        steps[j] -= 1
    return steps


def _role_of(cls_name: str) -> str | None:
    """Map an anatomy class to a role; None for anti-layers, which the study leaves out."""
    c = cls_name.strip().lower()
    for prefix, role in (("anti", None), ("red", "R"), ("min", "M"), ("imp", "I"), ("crit", "C")):
        if c.startswith(prefix):
            return role
    raise AnatomyError(f"unknown layer class {shown(cls_name)} in the budget; expected Redundant, Minor, "
                       "Important, Critical or Anti-layer.")


def plan_from_budget(budget: dict, maturation_share: float = 0.15) -> GrowthPlan:
    """A plan from the anatomy `budget` command's JSON.

    Format read: {"layers": [{"layer": int, "class": str, "ratio": float, "steps": int}, ...]}
    (other keys ignored). Each analysed layer becomes one layer here, in order; anti-layers are
    left out. Roles: Redundant R (x1), Minor M (x2), Important I (x3), Critical C (x4).
    Phases follow the study: critical/important layers of the middle third grow first (fresh),
    then those of the first third, then the last third, then minor, then redundant (FFN x0.5),
    then all train together. A new layer is cloned from the nearest grown layer (the shallower
    one on a tie). Each phase's share is the sum of its layers' budget `steps` (their `ratio`
    where steps are all zero), scaled to 1 - `maturation_share`; maturation gets the rest.
    """
    rows = budget.get("layers") if isinstance(budget, dict) else None
    if not rows or not isinstance(rows, list) or len(rows) > MAX_LAYERS:
        raise AnatomyError(f"the budget JSON needs a non-empty list 'layers' (at most {MAX_LAYERS}) of "
                           '{"layer": int, "class": str, "ratio": float, "steps": int}.')
    parsed = []
    for r in rows:
        if not isinstance(r, dict) or "layer" not in r or not isinstance(r.get("class"), str):
            raise AnatomyError(f"bad budget row {shown(r)}; each row needs 'layer', 'class', 'ratio', 'steps'.")
        parsed.append((_index(r["layer"], "a budget row's 'layer'"), _role_of(r["class"]),
                       _number(r.get("steps") or 0, f"the steps of budget layer {shown(r['layer'])}"),
                       _number(r.get("ratio") or 0, f"the ratio of budget layer {shown(r['layer'])}")))
    kept = [row for row in sorted(parsed, key=lambda row: row[0]) if row[1] is not None]
    if not kept:
        raise AnatomyError("every layer in the budget is an anti-layer; nothing to grow.")
    roles = [role for _, role, _, _ in kept]
    weight = [steps for _, _, steps, _ in kept]
    if sum(weight) <= 0:
        weight = [ratio for _, _, _, ratio in kept]
    n = len(roles)
    third = [0 if i < n / 3 else (1 if i < 2 * n / 3 else 2) for i in range(n)]
    big = [i for i in range(n) if roles[i] in ("C", "I")]
    groups = [
        ("gastrulation", [i for i in big if third[i] == 1] or big[:1] or [n // 2], 1.0),
        ("neurulation", [i for i in big if third[i] == 0], 1.0),
        ("organogenesis", [i for i in big if third[i] == 2], 1.0),
        ("growth", [i for i in range(n) if roles[i] == "M"], 1.0),
        ("connective", [i for i in range(n) if roles[i] == "R"], 0.5),
    ]
    phases, grown = [], []
    for name, layers, scale in groups:
        layers = [i for i in layers if i not in grown]
        if not layers:
            continue
        sources = {i: (min(grown, key=lambda g: (abs(g - i), g)) if grown else None) for i in layers}
        share = sum(weight[i] for i in layers) or 1e-3
        phases.append(Phase(name, layers, sources, share, ffn_scale=scale if grown else 1.0))
        grown += layers
    total = sum(p.share for p in phases)
    for p in phases:
        p.share = (1 - maturation_share) * p.share / total
    phases.append(Phase("maturation", "all", {}, maturation_share))
    return GrowthPlan(roles=roles, phases=phases).validate()


def load_plan(plan_file: str | None = None, budget_file: str | None = None) -> GrowthPlan:
    """The plan a run uses: `--growth-plan` JSON, else `--budget` JSON, else the study's default."""
    if plan_file and budget_file:
        raise AnatomyError("pass either --growth-plan or --budget, not both.")
    path = plan_file or budget_file
    if not path:
        return default_plan()
    p = Path(path)
    if not p.is_file():
        raise AnatomyError(f"{p}: no such file. Pass the path of a JSON file.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnatomyError(f"{p} is not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise AnatomyError(f"{p} is not a UTF-8 JSON file a plan can come from ({type(exc).__name__}).") from exc
    if plan_file:
        return GrowthPlan.from_dict(data)
    return plan_from_budget(data)
