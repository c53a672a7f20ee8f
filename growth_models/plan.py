"""The growth plan: layer roles, FFN widths and the six developmental phases, as data.

A plan is a dataclass that round-trips through JSON (`--plan FILE`), so a user can change roles,
phases, sources and shares without touching code. `default_plan()` is the study's plan
(SPEC section 7); `plan_from_budget()` derives one from the anatomy engine's `budget` JSON.
Layer indices are 0-based everywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anatomy.errors import AnatomyError

DEFAULT_ROLES = "R C C R C C R M C C M R".split()
DEFAULT_MULTIPLIERS = {"R": 1.0, "M": 2.0, "I": 3.0, "C": 4.0}
ROLE_NAMES = {"R": "redundant", "M": "minor", "I": "important", "C": "critical"}


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
        """Every layer grown exactly once, sources grown before use, shares positive."""
        unknown = sorted({r for r in self.roles} - set(self.multipliers))
        if unknown:
            raise AnatomyError(f"roles {unknown} have no width multiplier; add them to 'multipliers'.")
        grown: set[int] = set()
        for p in self.phases:
            if p.share <= 0:
                raise AnatomyError(f"phase {p.name!r} has share {p.share}; shares must be positive.")
            for layer, src in p.sources.items():
                if not 0 <= layer < self.n_layers:
                    raise AnatomyError(f"phase {p.name!r} grows layer {layer}, outside 0..{self.n_layers - 1}.")
                if layer in grown:
                    raise AnatomyError(f"phase {p.name!r} grows layer {layer} a second time.")
                if src is not None and src not in grown:
                    raise AnatomyError(f"phase {p.name!r} clones layer {layer} from {src}, not grown yet.")
            grown |= set(p.sources)
            absent = set(p.trained_layers(self.n_layers)) - grown
            if absent:
                raise AnatomyError(f"phase {p.name!r} trains layers {sorted(absent)} that are not grown yet.")
        if self.phases and grown != set(range(self.n_layers)):
            raise AnatomyError(f"layers {sorted(set(range(self.n_layers)) - grown)} are never grown.")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> GrowthPlan:
        phases = [Phase(name=p["name"], train=p["train"],
                        sources={int(k): (None if v is None else int(v)) for k, v in p.get("sources", {}).items()},
                        share=float(p.get("share", 1.0)), ffn_scale=float(p.get("ffn_scale", 1.0)))
                  for p in d.get("phases", [])]
        return cls(roles=list(d["roles"]), multipliers={k: float(v) for k, v in d.get("multipliers", DEFAULT_MULTIPLIERS).items()},
                   phases=phases, clone_noise=float(d.get("clone_noise", 0.01)),
                   train_shared=bool(d.get("train_shared", True))).validate()


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
    raise AnatomyError(f"unknown layer class {cls_name!r} in the budget; expected Redundant, Minor, "
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
    if not rows:
        raise AnatomyError("the budget JSON needs a non-empty list 'layers' of "
                           '{"layer": int, "class": str, "ratio": float, "steps": int}.')
    try:
        rows = sorted(rows, key=lambda r: int(r["layer"]))
        kept = [(r, _role_of(str(r["class"]))) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise AnatomyError(f"bad budget row ({exc}); each row needs 'layer', 'class', 'ratio', 'steps'.") from exc
    kept = [(r, role) for r, role in kept if role is not None]
    if not kept:
        raise AnatomyError("every layer in the budget is an anti-layer; nothing to grow.")
    roles = [role for _, role in kept]
    weight = [float(r.get("steps", 0) or 0) for r, _ in kept]
    if sum(weight) <= 0:
        weight = [float(r.get("ratio", 0) or 0) for r, _ in kept]
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
    """The plan a run uses: `--plan` JSON, else `--budget` JSON, else the study's default."""
    if plan_file and budget_file:
        raise AnatomyError("pass either --plan or --budget, not both.")
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
    if plan_file:
        try:
            return GrowthPlan.from_dict(data)
        except AnatomyError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise AnatomyError(f"{p} is not a growth plan ({exc}); see growth_plan.json in any checkpoint.") from exc
    return plan_from_budget(data)
