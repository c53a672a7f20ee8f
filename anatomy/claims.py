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
from .inference import bootstrap

HOLDS, FAILS, CONTROL, NOT_COMPARABLE, INCONCLUSIVE = (
    "holds", "does not hold", "explained by a control", "not comparable", "inconclusive")
VERDICTS = (HOLDS, FAILS, CONTROL, NOT_COMPARABLE, INCONCLUSIVE)
"""The one verdict vocabulary of a claim (`Claim`) and of a row of the study's claims table (`findings.Finding`):
`holds` and `does not hold` when the measurement decides the claim as the study made it; `explained by a
control` when the number is reproduced or differs and a control or null says why; `not comparable` when a
condition the claim's number depends on differs from the study's (or nothing measured it); `inconclusive`
when the interval straddles the threshold, or no test rejects after correction."""

RULES_VERSION = 2
"""The rules' version, written in claims.csv (column `rules`) and in every results.json (`rules`). Version 1
(no `conditions` column, verdicts `reproduced`, `not reproduced`, `explained by the control`) is read back
as older rules: its verdicts are mapped to today's words and marked."""
OLDER_VERDICTS = {"reproduced": HOLDS, "not reproduced": FAILS, "explained by the control": CONTROL}


def current_verdict(word: str) -> str:
    """A verdict written under any rules version in today's words (an unknown word is kept, to be shown)."""
    return OLDER_VERDICTS.get(word, word)


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
    rules: int = RULES_VERSION  # the rules version that gave the verdict (1: read back from an older file)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise AnatomyError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}.")

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def bootstrap_mean(values: np.ndarray | list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval (one value: the interval is that value)."""
    return bootstrap(values, np.mean, seed)


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
    rules = int(data.get("rules", 1))  # a file written before rules were versioned holds version 1's verdicts
    return [Claim(**{**{k: (math.nan if v is None else v) for k, v in c.items() if k in names},
                     "verdict": current_verdict(c["verdict"]), "rules": int(c.get("rules", rules))}) for c in raw]
