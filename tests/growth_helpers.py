"""Shared helpers for the growth tests: a synthetic training text, so no test needs the network."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the king my lord thou art good morrow what is enter exit to be or not love death night day "
         "sword crown heart fair sweet noble speak hear come go now here there o alas madam sir").split()


def write_text(path: Path, n_lines: int = 2500, seed: int = 0) -> Path:
    """A few thousand lines of pseudo-verse (about 90k characters), deterministic."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 40 == 0:
            lines.append(f"\nACT {i // 40}.\n")
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ".")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
