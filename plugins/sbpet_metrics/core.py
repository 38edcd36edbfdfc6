"""Vectorised numpy cores of the metrics (no plugin API here).

Score functions take arrays with an optional leading axis of bootstrap
resamples, shaped ``(B, N)``, and return one value per row: the point estimate
is simply the one-row case, so estimates and confidence intervals share code.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

# --------------------------------------------------------------------------- helpers


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


def resample_indices(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """``(b, n)`` bootstrap indices (sampling with replacement)."""
    return rng.integers(0, n, size=(b, n))


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


# --------------------------------------------------------------------------- gender


def auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (label 1 positive) from average ranks (Mann-Whitney U), ties counted half."""
    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels).astype(bool)
    ranks = rankdata(scores, axis=1)
    n1 = labels.sum(axis=1).astype(float)
    n0 = labels.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(labels, ranks, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """AUC of ``b`` resamples, stratified by class so every resample keeps both classes."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    idx = np.concatenate([pos[resample_indices(rng, len(pos), b)], neg[resample_indices(rng, len(neg), b)]], axis=1)
    row_labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return auc_rows(scores[idx], np.broadcast_to(row_labels, idx.shape))


def accuracy_at_half(p_male: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy per row when P(male) >= 0.5 is read as male."""
    return ((np.atleast_2d(p_male) >= 0.5) == np.atleast_2d(labels).astype(bool)).mean(axis=1)


def confidence(p_male: np.ndarray) -> np.ndarray:
    """Mean |2 P(male) - 1| per row: 0 when the classifier cannot tell, 1 when certain."""
    return np.abs(2.0 * np.atleast_2d(p_male) - 1.0).mean(axis=1)


# --------------------------------------------------------------------------- verification


def error_rate_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FMR and FNMR per row at every distinct threshold (accept when score >= threshold).

    Returns ``(thresholds, fmr, fnmr, valid)`` shaped ``(B, m + n + 1)``; the last
    column is a threshold above every score (FMR 0, FNMR 1). ``valid`` is False
    for positions inside a run of tied scores, which are not distinct thresholds.
    """
    g, i = np.atleast_2d(genuine).astype(float), np.atleast_2d(impostor).astype(float)
    m, n = g.shape[1], i.shape[1]
    s = np.concatenate([g, i], axis=1)
    order = np.argsort(s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    is_gen = order < m
    zeros = np.zeros((s.shape[0], 1))
    gen_before = np.concatenate([zeros, np.cumsum(is_gen, axis=1)], axis=1)  # genuine strictly below
    imp_before = np.arange(m + n + 1)[None, :] - gen_before
    fnmr = gen_before / m
    fmr = (n - imp_before) / n
    thresholds = np.concatenate([ss, np.full_like(zeros, np.inf)], axis=1)
    valid = np.ones_like(thresholds, dtype=bool)
    valid[:, 1:-1] = ss[:, 1:] != ss[:, :-1]
    return thresholds, fmr, fnmr, valid


def eer_rows(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EER per row at the threshold minimising |FMR - FNMR|.

    Returns ``(eer, low, high, threshold)``: ``[low, high]`` are min/max of FMR and
    FNMR at that threshold and ``eer`` their midpoint.
    """
    thresholds, fmr, fnmr, valid = error_rate_curve(genuine, impostor)
    gap = np.where(valid, np.abs(fmr - fnmr), np.inf)
    k = np.argmin(gap, axis=1)[:, None]
    a, b = np.take_along_axis(fmr, k, 1)[:, 0], np.take_along_axis(fnmr, k, 1)[:, 0]
    low, high = np.minimum(a, b), np.maximum(a, b)
    return (low + high) / 2, low, high, np.take_along_axis(thresholds, k, 1)[:, 0]


def fnmr_at_fmr_rows(genuine: np.ndarray, impostor: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """FNMR per row at the lowest threshold whose FMR is at or below ``target``.

    At most ``k = floor(target * n)`` impostor scores may be accepted, so the
    threshold sits just above the (k+1)-th highest impostor score (accept when
    score > it). Returns ``(fnmr, threshold)``.
    """
    g, i = np.atleast_2d(genuine).astype(float), np.atleast_2d(impostor).astype(float)
    n = i.shape[1]
    k = int(np.floor(target * n + 1e-9))
    if k >= n:
        thr = np.full(i.shape[0], -np.inf)
    else:
        thr = np.sort(i, axis=1)[:, n - 1 - k]
    return (g <= thr[:, None]).mean(axis=1), thr


def enough_nonmated(n_nonmated: int, target: float) -> bool:
    """FMR can resolve ``target`` only with at least 1/target non-mated pairs."""
    return n_nonmated * target >= 1.0 - 1e-9


def cosine_pairs(probe: np.ndarray, reference: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cosine similarity of ``probe[a[k]]`` and ``reference[b[k]]`` for every pair k (rows unit-normalised first)."""
    p, r = normalise_rows(probe).astype(np.float32), normalise_rows(reference).astype(np.float32)
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):  # small chunks keep the gathered (chunk, D) copies in cache
        sl = slice(start, start + chunk)
        out[sl] = np.einsum("ij,ij->i", p[a[sl]], r[b[sl]])
    return out.astype(np.float64)


def mated_candidates(identities: np.ndarray, same_image: bool) -> tuple[np.ndarray, np.ndarray]:
    """All mated (probe, reference) index pairs: the same image, or other images of the same identity."""
    n = len(identities)
    if same_image:
        return np.arange(n), np.arange(n)
    _, codes, counts = np.unique(identities, return_inverse=True, return_counts=True)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    a_parts, b_parts = [], []
    for start, size in zip(starts[counts >= 2], counts[counts >= 2]):  # loop over identities, not images
        members = order[start : start + size]
        aa, bb = np.meshgrid(members, members, indexing="ij")
        off = aa != bb
        a_parts.append(aa[off])
        b_parts.append(bb[off])
    if not a_parts:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(a_parts), np.concatenate(b_parts)


def sample_nonmated(identities: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` distinct (probe, reference) pairs of different identities, uniformly."""
    n = len(identities)
    _, codes = np.unique(identities, return_inverse=True)
    possible = n * n - int(np.sum(np.bincount(codes) ** 2))
    if possible <= 4 * count:  # small population: enumerate it exactly
        aa, bb = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        keep = codes[aa] != codes[bb]
        a, b = aa[keep], bb[keep]
        pick = rng.permutation(len(a))[:count]
        return a[pick], b[pick]
    keys = np.zeros(0, dtype=np.int64)
    for _ in range(50):  # rejection sampling; at most 4x oversampling needed since possible > 4*count
        cand = rng.integers(0, n, size=(3 * count, 2))
        cand = cand[codes[cand[:, 0]] != codes[cand[:, 1]]]
        keys = np.concatenate([keys, cand[:, 0].astype(np.int64) * n + cand[:, 1]])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # distinct, in drawing order
        if len(keys) >= count:
            break
    keys = keys[:count]
    return keys // n, keys % n


def sample_pairs(identities: np.ndarray, protocol: str, n_mated: int, n_nonmated: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (probe, reference, mated) pairs for a verification protocol."""
    ma, mb = mated_candidates(identities, same_image=(protocol == "protected-vs-original"))
    pick = rng.permutation(len(ma))[:n_mated]
    na, nb = sample_nonmated(identities, n_nonmated, rng)
    a = np.concatenate([ma[pick], na])
    b = np.concatenate([mb[pick], nb])
    mated = np.concatenate([np.ones(len(pick), bool), np.zeros(len(na), bool)])
    return a, b, mated


def pairs_digest(ids: np.ndarray, a: np.ndarray, b: np.ndarray, mated: np.ndarray, protocol: str) -> str:
    """sha256 of the pairs by image id, comparable across runs and conditions."""
    lines = [protocol] + [f"{ids[x]}\t{ids[y]}\t{int(z)}" for x, y, z in zip(a, b, mated)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pack_pairs(a: np.ndarray, b: np.ndarray, mated: np.ndarray) -> str:
    """Pairs as base64(zlib(int32 little-endian rows of probe, reference, mated))."""
    rows = np.stack([a, b, mated.astype(int)], axis=1).astype("<i4")
    return base64.b64encode(zlib.compress(rows.tobytes(), 9)).decode("ascii")


def unpack_pairs(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i4").reshape(-1, 3)
    return rows[:, 0], rows[:, 1], rows[:, 2].astype(bool)


# --------------------------------------------------------------------------- realism


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


def kid(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_subsets: int = 100, subset_size: int = 1000) -> tuple[float, float, int]:
    """Kernel Inception Distance: unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, averaged over subsets.

    Returns ``(mean, std over subsets, subset size)``; NaN when either set has fewer than 2 rows.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        return float("nan"), float("nan"), m
    d = x.shape[1]
    ix = rng.permuted(np.tile(np.arange(len(x)), (n_subsets, 1)), axis=1)[:, :m]
    iy = rng.permuted(np.tile(np.arange(len(y)), (n_subsets, 1)), axis=1)[:, :m]
    chunk = max(1, int(2e7 // (m * m)))  # bound the (chunk, m, m) kernel matrices to ~160 MB
    values = []
    for start in range(0, n_subsets, chunk):
        X, Y = x[ix[start : start + chunk]], y[iy[start : start + chunk]]
        kxx = (X @ X.transpose(0, 2, 1) / d + 1) ** 3
        kyy = (Y @ Y.transpose(0, 2, 1) / d + 1) ** 3
        kxy = (X @ Y.transpose(0, 2, 1) / d + 1) ** 3
        diag = lambda k: np.trace(k, axis1=1, axis2=2)  # noqa: E731
        values.append((kxx.sum((1, 2)) - diag(kxx)) / (m * (m - 1)) + (kyy.sum((1, 2)) - diag(kyy)) / (m * (m - 1)) - 2 * kxy.mean((1, 2)))
    v = np.concatenate(values)
    return float(v.mean()), float(v.std()), m


def quantiles(x: np.ndarray, qs: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    return {f"q{int(round(q * 100)):02d}": float(v) for q, v in zip(qs, np.quantile(x, qs))}
