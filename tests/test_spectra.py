"""The shared spectral math: stable rank, power-law alpha by MLE + KS, batching."""

import math

import torch

from anatomy.spectra import analyze_matrices, fit_power_law, fit_power_law_batch, singular_values, stable_rank


def matrix_with_singular_values(s, rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    k = len(s)
    return (u[:, :k] * torch.tensor(s, dtype=torch.float64)) @ v[:, :k].T


def test_stable_rank_and_norms_of_a_known_spectrum():
    w = matrix_with_singular_values([4.0, 2.0, 2.0, 1.0], 10, 6)
    row = analyze_matrices([w.float()])[0]
    assert math.isclose(row["stable_rank"], (16 + 4 + 4 + 1) / 16, rel_tol=1e-4)
    assert math.isclose(row["spectral_norm"], 4.0, rel_tol=1e-4)
    assert math.isclose(row["frobenius_norm"], 5.0, rel_tol=1e-4)
    assert row["n_eigs"] == 4 and (row["rows"], row["cols"]) == (10, 6)
    assert math.isclose(stable_rank(torch.tensor([3.0, 0.0])), 1.0)


def pareto(alpha, n, xmin=1.0, seed=0):
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return xmin * (1 - u) ** (-1 / (alpha - 1))


def test_alpha_and_xmin_are_recovered_from_a_power_law_tail():
    for alpha in (2.0, 3.5):
        fit = fit_power_law(pareto(alpha, 1200, seed=int(alpha * 10)))
        assert abs(fit["alpha"] - alpha) < 0.2, fit
        assert fit["ks_distance"] < 0.05
    # a power-law tail above a uniform bulk: the KS choice of xmin finds where the tail starts
    bulk = torch.rand(800, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.9 + 0.05
    fit = fit_power_law(torch.cat([bulk, pareto(2.5, 600, xmin=1.0, seed=4)]))
    assert 0.9 <= fit["xmin"] <= 1.6 and abs(fit["alpha"] - 2.5) < 0.25, fit


def test_batched_fits_equal_one_by_one_fits():
    spectra = [pareto(2.0 + i / 4, 300, seed=i) for i in range(5)] + [pareto(3.0, 120, seed=9)]
    batched = fit_power_law_batch(spectra)
    for s, b in zip(spectra, batched):
        single = fit_power_law(s)
        assert single["n_tail"] == b["n_tail"] and math.isclose(single["alpha"], b["alpha"], rel_tol=1e-9)


def test_degenerate_matrices_give_nan_not_errors():
    rows = analyze_matrices([torch.zeros(8, 8), torch.ones(4, 3)])
    assert math.isnan(rows[0]["alpha"]) and rows[0]["n_tail"] == 0
    assert math.isnan(rows[1]["alpha"]) and math.isclose(rows[1]["stable_rank"], 1.0, rel_tol=1e-5)


def test_singular_values_keep_input_order_across_shapes():
    mats = [torch.randn(5, 3), torch.randn(2, 7), torch.randn(5, 3)]
    for m, s in zip(mats, singular_values(mats)):
        torch.testing.assert_close(s.float(), torch.linalg.svdvals(m), atol=1e-5, rtol=1e-5)


def test_random_gaussian_matrices_have_no_heavy_tail():
    """Marchenko-Pastur bulk, no power-law tail: the fitted alpha is large (WeightWatcher reads >6 as untrained)."""
    g = torch.Generator().manual_seed(0)
    rows = analyze_matrices([torch.randn(256, 512, generator=g) for _ in range(3)])
    assert all(r["alpha"] > 4 and r["n_tail"] >= 10 for r in rows), rows
