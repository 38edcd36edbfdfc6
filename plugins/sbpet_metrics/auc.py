"""Gender-privacy statistics: rank AUC on a leading resample axis, shared bootstraps and permutation tests."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from .stats import resample_indices


def auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (label 1 positive) from average ranks (Mann-Whitney U), ties counted half."""
    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels).astype(bool)
    ranks = rankdata(scores, axis=1)
    n1 = labels.sum(axis=1).astype(float)
    n0 = labels.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(labels, ranks, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def fold(auc: np.ndarray | float) -> np.ndarray:
    """Privacy AUC = max(AUC, 1 - AUC): a classifier whose output is flipped reveals gender just as well."""
    return np.maximum(auc, 1.0 - np.asarray(auc, float))


def stratified_indices(labels: np.ndarray, b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(b, N)`` class-stratified bootstrap indices and the ``(N,)`` labels of their columns.

    Every resample keeps both classes at their sizes, so its AUC is always defined. The same indices
    applied to several classifiers' scores give *shared* resamples (for a maximum over classifiers).
    """
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    idx = np.concatenate([pos[resample_indices(rng, len(pos), b)], neg[resample_indices(rng, len(neg), b)]], axis=1)
    return idx, np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """AUC of ``b`` resamples, stratified by class so every resample keeps both classes."""
    idx, row_labels = stratified_indices(labels, b, rng)
    return auc_rows(scores[idx], np.broadcast_to(row_labels, idx.shape))


def permutation_null_auc(scores: np.ndarray, labels: np.ndarray, permutations: int, rng: np.random.Generator,
                         budget: float = 1e7) -> np.ndarray:
    """``(permutations, K)`` AUCs of ``K`` classifiers (rows of ``scores``) under randomly permuted labels.

    The ranks of the scores do not change when the labels are shuffled, so each permutation's AUC is a
    rank sum over a random set of ``n1`` images: a ``(chunk, N) @ (N, K)`` product, many permutations at
    once. The same permutation is used for every classifier, which a max-statistic test needs.
    """
    ranks = rankdata(np.atleast_2d(scores), axis=1)  # (K, N)
    labels = np.asarray(labels).astype(bool)
    n = labels.size
    n1 = float(labels.sum())
    n0 = n - n1
    chunk = max(1, int(budget // max(n, 1)))
    parts = []
    for start in range(0, permutations, chunk):
        rows = min(chunk, permutations - start)
        shuffled = rng.permuted(np.broadcast_to(labels, (rows, n)), axis=1).astype(np.float64)
        parts.append((shuffled @ ranks.T - n1 * (n1 + 1) / 2) / (n1 * n0))
    return np.concatenate(parts) if parts else np.zeros((0, ranks.shape[0]))


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value (1 + #null >= observed) / (1 + #null); never 0."""
    null = np.asarray(null, float)
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + null.size))


def privacy_p_values(scores: np.ndarray, labels: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Permutation tests of AUC = 0.5 for each classifier and for the maximum over all of them.

    Two-sided on the raw AUC (|AUC - 0.5|, since a flipped classifier counts). The maximum's p-value
    compares the largest |AUC - 0.5| with its permutation distribution (max over classifiers within each
    permutation), which keeps the false-alarm rate at the nominal level however many classifiers are tried.
    Returns ``(p per classifier, p of the maximum)``.
    """
    scores = np.atleast_2d(scores)
    observed = np.abs(auc_rows(scores, np.broadcast_to(labels, scores.shape)) - 0.5)
    null = np.abs(permutation_null_auc(scores, labels, permutations, rng) - 0.5)  # (P, K)
    per = np.array([permutation_p_value(observed[k], null[:, k]) for k in range(scores.shape[0])])
    return per, permutation_p_value(observed.max(), null.max(axis=1))


def chance_privacy_auc(n_male: int, n_female: int) -> float:
    """Expected max(AUC, 1 - AUC) of a classifier that knows nothing.

    Under the null the AUC is approximately normal around 0.5 with variance (n1 + n0 + 1) / (12 n1 n0)
    (the Mann-Whitney U variance, no ties), so E|AUC - 0.5| = sd * sqrt(2 / pi): about 0.523 at 200 + 200.
    """
    if n_male < 1 or n_female < 1:
        return float("nan")
    sd = np.sqrt((n_male + n_female + 1) / (12.0 * n_male * n_female))
    return float(0.5 + sd * np.sqrt(2.0 / np.pi))


def accuracy_at_half(p_male: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy per row when P(male) >= 0.5 is read as male."""
    return ((np.atleast_2d(p_male) >= 0.5) == np.atleast_2d(labels).astype(bool)).mean(axis=1)


def confidence(p_male: np.ndarray) -> np.ndarray:
    """Mean |2 P(male) - 1| per row: 0 when the classifier cannot tell, 1 when certain."""
    return np.abs(2.0 * np.atleast_2d(p_male) - 1.0).mean(axis=1)
