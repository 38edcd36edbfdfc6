"""Verification error rates (ISO/IEC 19795-1 FMR, FNMR, EER), plain and with bootstrap weights.

The plain functions take scores with an optional leading axis of resamples. The weighted ones keep the
scores fixed and put the resampling into ``(B, pairs)`` multiplicities instead, so the scores are sorted
once and any resampling unit (pairs, identities) fits: with all weights 1 they equal the plain ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


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


def _eer_from_curve(fmr: np.ndarray, fnmr: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        gap = np.where(valid, np.abs(fmr - fnmr), np.inf)
    k = np.argmin(gap, axis=1)[:, None]
    a, b = np.take_along_axis(fmr, k, 1)[:, 0], np.take_along_axis(fnmr, k, 1)[:, 0]
    low, high = np.minimum(a, b), np.maximum(a, b)
    return (low + high) / 2, low, high, k[:, 0]


def eer_rows(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EER per row at the threshold minimising |FMR - FNMR|.

    Returns ``(eer, low, high, threshold)``: ``[low, high]`` are min/max of FMR and
    FNMR at that threshold and ``eer`` their midpoint.
    """
    thresholds, fmr, fnmr, valid = error_rate_curve(genuine, impostor)
    eer, low, high, k = _eer_from_curve(fmr, fnmr, valid)
    return eer, low, high, np.take_along_axis(thresholds, k[:, None], 1)[:, 0]


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


# --------------------------------------------------------------------------- weighted (bootstrap as multiplicities)


def weighted_eer(genuine: np.ndarray, impostor: np.ndarray, w_gen: np.ndarray, w_imp: np.ndarray, budget: float = 2e7) -> np.ndarray:
    """EER (midpoint convention of :func:`eer_rows`) for each row of weights ``(B, m)``, ``(B, n)``.

    NaN for a row whose mated or non-mated weights sum to 0 (a resample without such pairs). Rows are
    taken in chunks of about ``budget`` elements, which bounds the ``(rows, m + n)`` temporaries.
    """
    w_gen, w_imp = np.atleast_2d(w_gen), np.atleast_2d(w_imp)
    rows = max(1, int(budget // max(w_gen.shape[1] + w_imp.shape[1], 1)))
    if w_gen.shape[0] > rows:
        return np.concatenate([_weighted_eer(genuine, impostor, w_gen[k : k + rows], w_imp[k : k + rows])
                               for k in range(0, w_gen.shape[0], rows)])
    return _weighted_eer(genuine, impostor, w_gen, w_imp)


def _weighted_eer(genuine: np.ndarray, impostor: np.ndarray, w_gen: np.ndarray, w_imp: np.ndarray) -> np.ndarray:
    g, i = np.asarray(genuine, float), np.asarray(impostor, float)
    m = len(g)
    s = np.concatenate([g, i])
    order = np.argsort(s, kind="stable")
    ss = s[order]
    w = np.concatenate([w_gen, w_imp], axis=1)[:, order]
    zeros = np.zeros((w.shape[0], 1))
    all_before = np.concatenate([zeros, np.cumsum(w, axis=1)], axis=1)
    w[:, order >= m] = 0.0  # now the mated weights only
    gen_before = np.concatenate([zeros, np.cumsum(w, axis=1)], axis=1)
    # only distinct thresholds count: the first of a run of ties, and the one above every score
    valid = np.ones(len(ss) + 1, dtype=bool)
    valid[1:-1] = ss[1:] != ss[:-1]
    gen_before, all_before = gen_before[:, valid], all_before[:, valid]
    total_gen, total_imp = gen_before[:, -1:], all_before[:, -1:] - gen_before[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        fnmr = gen_before / total_gen
        fmr = (total_imp - (all_before - gen_before)) / total_imp
    eer = _eer_from_curve(fmr, fnmr, np.ones(fmr.shape, dtype=bool))[0]
    return np.where((total_gen[:, 0] > 0) & (total_imp[:, 0] > 0), eer, np.nan)


def weighted_thresholds_at_fmr(impostor: np.ndarray, w_imp: np.ndarray, targets: Sequence[float]) -> np.ndarray:
    """The thresholds of :func:`fnmr_at_fmr_rows` (accept when score > it), ``(targets, B)``, per row of impostor weights.

    For each target, the lowest impostor score whose weighted share of impostors strictly above it is
    <= target. Sorting and summing once serves every target.
    """
    i = np.asarray(impostor, float)
    order = np.argsort(i, kind="stable")
    w = np.atleast_2d(w_imp)[:, order]
    total = w.sum(axis=1, keepdims=True)
    above = total - np.cumsum(w, axis=1)  # weight of the impostors sorted after each position
    out = np.empty((len(targets), w.shape[0]))
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, target in enumerate(targets):
            first = np.argmax(above <= (target + 1e-9 / max(len(i), 1)) * total, axis=1)  # the last position always qualifies
            out[k] = np.where(total[:, 0] > 0, i[order][first], np.nan)
    return out


def weighted_threshold_at_fmr(impostor: np.ndarray, w_imp: np.ndarray, target: float) -> np.ndarray:
    """:func:`weighted_thresholds_at_fmr` for one target: ``(B,)``."""
    return weighted_thresholds_at_fmr(impostor, w_imp, [target])[0]


def weighted_fnmr_at_threshold(genuine: np.ndarray, w_gen: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Weighted share of mated scores rejected (score <= threshold) per row; threshold shaped ``(B,)``."""
    g = np.asarray(genuine, float)
    w = np.atleast_2d(w_gen)
    rejected = g[None, :] <= np.asarray(threshold, float)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (w * rejected).sum(axis=1) / w.sum(axis=1)
    return np.where(np.isnan(threshold), np.nan, share)


def weighted_fnmr_at_fmr(genuine: np.ndarray, impostor: np.ndarray, w_gen: np.ndarray, w_imp: np.ndarray, target: float) -> np.ndarray:
    """FNMR at FMR ``target`` (convention of :func:`fnmr_at_fmr_rows`) per row of weights."""
    return weighted_fnmr_at_threshold(genuine, w_gen, weighted_threshold_at_fmr(impostor, w_imp, target))
