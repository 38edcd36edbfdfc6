"""Shared statistics helpers: seeded generators, percentile intervals, resampling, curve thinning."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by the run's seed and stable string keys (crc32, not Python's salted hash)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(zlib.crc32(k.encode()) for k in keys)])


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval; ``(None, None)`` when there is nothing finite to summarise."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return None, None
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def fold_interval(low: float | None, high: float | None, centre: float = 0.5) -> tuple[float | None, float | None]:
    """An interval for ``x`` mapped through ``centre + |x - centre|`` (the fold of max(AUC, 1 - AUC)).

    An interval that straddles the centre folds to ``[centre, farther end]``: the folded value may be
    exactly the centre, so chance is inside it. Folding each resample first would not allow that.
    """
    if low is None or high is None:
        return None, None
    ends = (centre + abs(low - centre), centre + abs(high - centre))
    if low <= centre <= high:
        return centre, max(ends)
    return min(ends), max(ends)


def resample_indices(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``(b, n)`` bootstrap indices (sampling with replacement)."""
    return rng.integers(0, n, size=(b, n))


def resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``(b, n)`` multiplicities of ``n`` units drawn ``n`` times with replacement (a bootstrap as weights)."""
    if n == 0:
        return np.zeros((b, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)


def downsample_curve(x: np.ndarray, y: np.ndarray, max_points: int = 200, log_ends: bool = False) -> dict[str, list[float]]:
    """At most ``max_points`` points of a curve, keeping both ends.

    ``log_ends`` spaces the kept points geometrically from both ends, which keeps
    detail at low error rates where DET plots (log axes) need it.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n > max_points:
        if log_ends:
            half = np.unique(np.round(np.geomspace(1, n, max_points // 2)).astype(int) - 1)
            keep = np.unique(np.concatenate([half, n - 1 - half]))
        else:
            keep = np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))
        x, y = x[keep], y[keep]
    return {"x": np.round(x, 6).tolist(), "y": np.round(y, 6).tolist()}


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def quantiles(x: np.ndarray, qs: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    return {f"q{int(round(q * 100)):02d}": float(v) for q, v in zip(qs, np.quantile(x, qs))}
