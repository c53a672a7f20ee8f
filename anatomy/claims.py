"""Structured claims: the study's number beside ours, with our interval, the control and the verdict.

Every experiment that tests one of the study's headline numbers puts a `Claim` in its results.json
(`results.claims`), so the study report's claims table is built by reading run folders, never by
copying numbers by hand. A verdict always names the control it rests on: a number that differs from
the study's says little until a control says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnatomyError

VERDICTS = ("reproduced", "not reproduced", "explained by the control")


@dataclass(frozen=True)
class Claim:
    """One finding: `study` is the published number, `ours` the measured one with [`ours_low`, `ours_high`]."""

    finding: str  # short key, e.g. "predictability.gate_proj"
    statement: str  # the study's claim in words
    study: float
    ours: float
    ours_low: float
    ours_high: float
    interval: str  # what the interval is (bootstrap over layers, mean +- 2 sd over seeds, ...)
    control: str  # what the control measures and why it separates the explanations
    control_value: float
    control_low: float
    control_high: float
    verdict: str  # one of VERDICTS
    explanation: str  # one sentence, with the numbers, that says why
    settings: str = ""  # reduced settings, leakage, anything a reader must know before trusting the numbers

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise AnatomyError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}.")

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def bootstrap_mean(values: np.ndarray | list[float], seed: int = 0,
                   resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval (one value: the interval is that value)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(low), float(high)


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """The claims as the report's table: study, ours [interval], control [interval], verdict."""
    def cell(x: float, lo: float, hi: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:.4g} [{lo:.4g}, {hi:.4g}]"
    return pd.DataFrame([{"finding": c.finding, "study": f"{c.study:.4g}",
                          "ours [95%]": cell(c.ours, c.ours_low, c.ours_high),
                          "control": c.control, "control [95%]": cell(c.control_value, c.control_low, c.control_high),
                          "verdict": c.verdict} for c in claims])


def claims_markdown(claims: list[Claim]) -> str:
    """A `### Claims` section: the table, then one line per claim with its explanation and settings."""
    if not claims:
        return ""
    lines = ["### Claims (the study's number, ours, the control, the verdict)",
             claims_table(claims).to_markdown(index=False), ""]
    for c in claims:
        lines.append(f"- **{c.finding}** ({c.interval}): {c.explanation}"
                     + (f" Settings: {c.settings}" if c.settings else ""))
    return "\n".join(lines) + "\n"


def load_claims(run_folder: str | Path) -> list[Claim]:
    """The claims of a run folder's results.json (an experiment's `results.claims` or a growth run's `claims`)."""
    path = Path(run_folder) / "results.json"
    if not path.is_file():
        raise AnatomyError(f"{path}: no such file. Pass a run folder written by an experiment or "
                           "growth_models.compare.")
    data = json.loads(path.read_text(encoding="utf-8"))
    raw = data.get("claims") or (data.get("results") or {}).get("claims") or []
    names = {f.name for f in fields(Claim)}
    return [Claim(**{k: (math.nan if v is None else v) for k, v in c.items() if k in names}) for c in raw]
