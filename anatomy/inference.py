"""The statistics convention of every rule in the claims table, in one place.

- Intervals: 95% percentile bootstrap with 2,000 resamples (`RESAMPLES`), over the units the claim is about
  (layers, task items, evaluation texts).
- Tests: permutation tests with at least 1,000 permutations (`PERMUTATIONS`, 2,000 here), p = (1 + #{as
  extreme}) / (1 + permutations); a p-value read from a bootstrap interval where the experiment kept no
  per-unit values (normal approximation, said so where used).
- Multiple testing: Holm's step-down correction over each family (the components of one claim, the layers of
  a search) at a family-wise error rate of 0.05 (`FWER`).
A rule that neither rejects nor confirms after correction is `inconclusive`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

RESAMPLES, PERMUTATIONS, FWER = 2000, 2000, 0.05
CONVENTION = ("Statistics: 95% percentile-bootstrap intervals with 2,000 resamples; permutation tests with 2,000 "
              "permutations; Holm's correction over each family of tests (the components of one claim, the layers "
              "of a search) at a family-wise 0.05; a rule that neither rejects nor confirms after correction is "
              "`inconclusive`.")


def percentile(draws: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap draws (NaN, NaN when none is finite)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return math.nan, math.nan
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def bootstrap(values: Sequence[float] | np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
              seed: int = 0) -> tuple[float, float, float]:
    """A statistic of `values` and its 95% percentile-bootstrap interval over them (resampled rows: a 2-D
    array resamples its rows together, which pairs the columns)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v).all(axis=tuple(range(1, v.ndim)))] if v.ndim > 1 else v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(v[i]) for i in rng.integers(0, len(v), (RESAMPLES, len(v)))])
    return (float(statistic(v)), *percentile(draws))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (Pearson on average ranks); NaN with fewer than 3 pairs or no spread."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    rx, ry = stats.rankdata(x[keep]), stats.rankdata(y[keep])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho and its 95% bootstrap interval over the pairs (layers)."""
    pairs = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    return bootstrap(pairs, lambda p: spearman(p[:, 0], p[:, 1]), seed)


def permutation_p(x: np.ndarray, y: np.ndarray, side: str = "greater", seed: int = 0) -> float:
    """Permutation p-value of Spearman's rho between x and y (y shuffled over the pairs): `greater` for a
    positive correlation, `less` for a negative one, `two-sided` for either."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    observed = spearman(x, y)
    if not math.isfinite(observed):
        return math.nan
    rng = np.random.default_rng(seed)
    rx, ry = stats.rankdata(x) - (len(x) + 1) / 2, stats.rankdata(y) - (len(y) + 1) / 2  # permuting y permutes its ranks
    shuffled = ry[rng.permuted(np.tile(np.arange(len(y)), (PERMUTATIONS, 1)), axis=1)]
    null = shuffled @ rx / (np.linalg.norm(rx) * np.linalg.norm(ry))
    extreme = {"greater": null >= observed - 1e-12, "less": null <= observed + 1e-12,
               "two-sided": np.abs(null) >= abs(observed) - 1e-12}[side]
    return float((1 + extreme.sum()) / (1 + PERMUTATIONS))


def p_below(value: float, low: float, high: float, threshold: float = 0.0) -> float:
    """One-sided p-value that the true value lies below `threshold`, read from a 95% interval by the normal
    approximation (standard error = interval width / 3.92): for experiments that kept no per-unit values."""
    if not all(map(math.isfinite, (value, low, high))):
        return math.nan
    se = (high - low) / (2 * 1.959964)
    if se <= 0:
        return 0.0 if value < threshold else 1.0
    return float(stats.norm.cdf((value - threshold) / se))


def holm(pvalues: Sequence[float], alpha: float = FWER) -> list[bool]:
    """Holm's step-down rejections at family-wise `alpha` (a NaN p-value is never rejected, and counts)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(np.where(np.isfinite(p), p, np.inf))
    reject = np.zeros(len(p), dtype=bool)
    for rank, index in enumerate(order):
        if not (math.isfinite(p[index]) and p[index] <= alpha / (len(p) - rank)):
            break
        reject[index] = True
    return reject.tolist()
