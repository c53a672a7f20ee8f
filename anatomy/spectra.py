"""Spectral statistics of weight matrices: singular values, stable rank, power-law tail alpha.

One implementation for the whole project (the spectral experiment and the growth trainer's
spectral dynamics both call it). Pure torch; batched over matrices of one shape and over every
candidate xmin at once, so hundreds of matrices take seconds on a laptop CPU.

The eigenvalues of W^T W are the squared singular values of W; only the min(m, n) of them that
can be non-zero are used (a 576 x 1536 matrix has 576), and values below `rel_floor * max` are
dropped as numerically zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

DEFAULT_MIN_TAIL = 10
REL_FLOOR = 1e-10  # eigenvalues below REL_FLOOR x the largest count as zero
# Threads for the batched SVD. Measured on a shared 2-core machine: 30 SVDs of 192 x 576 took 0.35 s on one
# thread and 7-20 s on two (multi-threaded LAPACK spins against other processes); one matrix per thread wins.
SVD_THREADS = 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None: leave as is), restoring the previous count."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def singular_values(matrices: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Singular values (float64, descending) of each matrix; matrices of one shape share one batched SVD."""
    out: list[torch.Tensor | None] = [None] * len(matrices)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, w in enumerate(matrices):
        if w.dim() != 2:
            raise ValueError(f"matrix {i} has shape {tuple(w.shape)}; expected 2-D")
        by_shape.setdefault(tuple(w.shape), []).append(i)
    for idx in by_shape.values():
        batch = torch.stack([matrices[i].detach().to("cpu", torch.float32) for i in idx])
        with torch_threads(SVD_THREADS):
            s = torch.linalg.svdvals(batch).double()  # [k, min(m, n)], descending
        for j, i in enumerate(idx):
            out[i] = s[j]
    return out  # type: ignore[return-value]


def stable_rank(s: torch.Tensor) -> float:
    """||W||_F^2 / ||W||_2^2 from singular values: how many directions carry the energy."""
    return float((s**2).sum() / s[0] ** 2) if s.numel() and s[0] > 0 else float("nan")


def fit_power_law(eigs: torch.Tensor, min_tail: int = DEFAULT_MIN_TAIL) -> dict[str, float]:
    """Continuous power-law fit p(x) ~ x^-alpha to the upper tail of one eigenvalue spectrum.

    For each candidate xmin (every eigenvalue leaving at least `min_tail` values in the tail
    x >= xmin) alpha is the maximum-likelihood estimate alpha = 1 + n / sum(log(x / xmin)), and
    the Kolmogorov-Smirnov distance D = max |S(x) - P(x)| between the tail's empirical CDF and
    the fitted CDF P(x) = 1 - (x / xmin)^(1 - alpha) is computed; the xmin with the smallest D
    is kept (Clauset, Shalizi & Newman 2009, section 3.3). The minimum tail size stops the
    search from picking the last few eigenvalues, where D is small only because n is.
    All candidates are evaluated at once as an [n_candidates, n] masked matrix.
    """
    return fit_power_law_batch([eigs], min_tail)[0]


def fit_power_law_batch(spectra: Sequence[torch.Tensor], min_tail: int = DEFAULT_MIN_TAIL,
                        rel_floor: float = REL_FLOOR) -> list[dict[str, float]]:
    """`fit_power_law` for many spectra; spectra of one length are fitted in one batched pass."""
    results: list[dict[str, float] | None] = [None] * len(spectra)
    cleaned = []
    for e in spectra:
        e = e.detach().double().flatten()
        e = e[e > rel_floor * e.max()] if e.numel() and e.max() > 0 else e[:0]
        cleaned.append(torch.sort(e).values)  # ascending
    by_len: dict[int, list[int]] = {}
    for i, e in enumerate(cleaned):
        by_len.setdefault(e.numel(), []).append(i)
    for n, idx in by_len.items():
        if n < max(min_tail, 2):
            for i in idx:
                results[i] = {"alpha": math.nan, "xmin": math.nan, "ks_distance": math.nan, "n_tail": 0}
            continue
        per_chunk = max(1, 4_000_000 // (n * n))  # bounds the [b, n_cand, n] work arrays
        for start in range(0, len(idx), per_chunk):
            part = idx[start:start + per_chunk]
            for i, fit in zip(part, _fit_equal_length(torch.stack([cleaned[i] for i in part]), min_tail)):
                results[i] = fit
    return results  # type: ignore[return-value]


def _fit_equal_length(x: torch.Tensor, min_tail: int) -> list[dict[str, float]]:
    """x: [b, n] ascending positive eigenvalues. Candidates k = 0 .. n - min_tail (xmin = x[:, k])."""
    b, n = x.shape
    n_cand = n - min_tail + 1
    logx = x.log()  # [b, n]
    # suffix sums: sum_{j >= k} log x_j
    suffix = torch.flip(torch.cumsum(torch.flip(logx, [1]), 1), [1])  # [b, n]
    k = torch.arange(n_cand, dtype=torch.float64)
    n_tail = n - k  # [n_cand]
    log_xmin = logx[:, :n_cand]  # [b, n_cand]
    denom = suffix[:, :n_cand] - n_tail * log_xmin  # sum log(x / xmin) over the tail
    alpha = 1 + n_tail / denom.clamp_min(1e-300)  # [b, n_cand]
    # KS distance for every (matrix, candidate) pair: positions j >= k are the tail.
    j = torch.arange(n, dtype=torch.float64)
    rank = j[None, :] - k[:, None]  # [n_cand, n] 0-based rank of x_j inside the tail
    in_tail = rank >= 0
    emp_hi = (rank + 1) / n_tail[:, None]  # empirical CDF just after x_j
    emp_lo = rank / n_tail[:, None]  # ... just before x_j
    log_ratio = logx[:, None, :] - log_xmin[:, :, None]  # [b, n_cand, n]
    model_cdf = 1 - torch.exp(-(alpha[:, :, None] - 1) * log_ratio.clamp_min(0))
    gap = torch.maximum((emp_hi - model_cdf).abs(), (model_cdf - emp_lo).abs())
    ks = torch.where(in_tail[None], gap, torch.zeros((), dtype=gap.dtype)).amax(-1)  # [b, n_cand]
    ks = torch.where(torch.isfinite(alpha) & (denom > 0), ks, torch.full_like(ks, math.inf))
    best = ks.argmin(-1)  # [b]
    rows = torch.arange(b)
    return [
        {"alpha": float(alpha[r, c]), "xmin": float(x[r, c]), "ks_distance": float(ks[r, c]),
         "n_tail": int(n - c)}
        for r, c in zip(rows.tolist(), best.tolist())
    ]


def analyze_matrices(matrices: Sequence[torch.Tensor], min_tail: int = DEFAULT_MIN_TAIL) -> list[dict[str, float]]:
    """One dict per matrix, ready for `pandas.DataFrame(rows)`.

    Keys: alpha, xmin, ks_distance, n_tail (the power-law fit of the eigenvalues of W^T W),
    n_eigs (eigenvalues above the numerical-zero floor), stable_rank, spectral_norm (largest singular value),
    frobenius_norm, rows, cols.
    """
    return analyze_singular_values(singular_values(matrices), [tuple(w.shape) for w in matrices], min_tail)


def analyze_singular_values(svals: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]],
                            min_tail: int = DEFAULT_MIN_TAIL) -> list[dict[str, float]]:
    """`analyze_matrices` from singular values already computed (callers that also keep the spectra)."""
    fits = fit_power_law_batch([s**2 for s in svals], min_tail)
    rows = []
    for shape, s, fit in zip(shapes, svals, fits):
        rows.append({
            **fit,
            "n_eigs": int((s**2 > REL_FLOOR * s[0] ** 2).sum()) if s.numel() and s[0] > 0 else 0,
            "stable_rank": stable_rank(s),
            "spectral_norm": float(s[0]) if s.numel() else math.nan,
            "frobenius_norm": float(s.pow(2).sum().sqrt()),
            "rows": int(shape[0]),
            "cols": int(shape[1]),
        })
    return rows
