"""Distribution distances between a condition's features and the originals': Fréchet distance and KID."""

from __future__ import annotations

import numpy as np


def frechet_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians (the FID formula):
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr (S1 S2)^(1/2) is computed as the sum of square roots of the eigenvalues of
    the symmetric S1^(1/2) S2 S1^(1/2) (similar to S1 S2), which stays real and
    stable for the singular covariances of small samples, unlike a general sqrtm.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return frechet_from_moments(x.mean(0), np.atleast_2d(np.cov(x, rowvar=False)), y.mean(0), np.atleast_2d(np.cov(y, rowvar=False)))


def disjoint_subsets(n: int, n_subsets: int, subset_size: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_subsets, m)`` row indices: rounds of one random permutation cut into disjoint blocks of ``m``.

    ``m = min(subset_size, n // 2)``, so every round has at least two disjoint blocks and no subset is
    the whole set (whose spread over subsets would be 0 and say nothing). Blocks of one round share no
    row; different rounds are independent permutations.
    """
    m = min(subset_size, n // 2)
    if m < 2:
        return np.zeros((0, max(m, 0)), int)
    per_round = n // m
    rounds = -(-n_subsets // per_round)
    blocks = [rng.permutation(n)[: per_round * m].reshape(per_round, m) for _ in range(rounds)]
    return np.concatenate(blocks)[:n_subsets]


def kid(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_subsets: int = 100, subset_size: int = 1000,
        gamma: float | None = None) -> tuple[float, float, int]:
    """Kernel Inception Distance of paired rows: unbiased MMD^2 with k(a, b) = (gamma a.b + 1)^3, over subsets.

    ``x[i]`` and ``y[i]`` are the same face (a condition's image and its original), so the cross term
    leaves out the paired k(x_i, y_i) as the within-set terms leave out k(x_i, x_i): the U-statistic
    over pairs of distinct faces i != j,
    h_ij = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i),
    which is unbiased and exactly 0 when x == y. ``gamma`` defaults to 1/d (the KID convention for
    unnormalised features). Subsets come from :func:`disjoint_subsets` and use the same rows of x and y.
    Returns ``(mean, std over subsets, subset size)``; NaN when fewer than 4 rows.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"kid: x and y must be paired row by row, got {len(x)} and {len(y)} rows")
    subsets = disjoint_subsets(len(x), n_subsets, subset_size, rng)
    m = subsets.shape[1]
    if len(subsets) == 0:
        return float("nan"), float("nan"), m
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    chunk = max(1, int(2e7 // (m * m)))  # bound the (chunk, m, m) kernel matrices to ~160 MB

    def off_diagonal_kernel_sum(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        k = A @ B.transpose(0, 2, 1)
        k *= g
        k += 1.0
        cube = k * k  # in place and by multiplication: ``** 3`` goes through pow() per element, several times slower
        cube *= k
        return cube.sum((1, 2)) - np.trace(cube, axis1=1, axis2=2)

    values = []
    for start in range(0, len(subsets), chunk):
        X, Y = x[subsets[start : start + chunk]], y[subsets[start : start + chunk]]
        total = off_diagonal_kernel_sum(X, X) + off_diagonal_kernel_sum(Y, Y) - 2 * off_diagonal_kernel_sum(X, Y)
        values.append(total / (m * (m - 1)))
    v = np.concatenate(values)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), m
