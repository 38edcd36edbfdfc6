"""The numeric cores of the metrics against references and hand-computed answers."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sbpet_metrics import core


def test_auc_matches_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        p = np.round(rng.random(300) * 0.5 + 0.3 * y, 2)  # rounding makes ties
        assert core.auc_rows(p, y)[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_bootstrap_auc_rows_are_stratified_resamples():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    p = rng.random(80) + 0.4 * y
    boot = core.bootstrap_auc(p, y, 5, np.random.default_rng(2))
    assert boot.shape == (5,) and np.ptp(boot) > 0  # resamples differ
    # each row is the AUC of a class-stratified resample: recompute one with sklearn
    rng = np.random.default_rng(2)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    ip, ineg = pos[rng.integers(0, len(pos), (5, len(pos)))], neg[rng.integers(0, len(neg), (5, len(neg)))]
    row = np.concatenate([ip[3], ineg[3]])
    assert boot[3] == pytest.approx(roc_auc_score(y[row], p[row]))


def test_eer_on_hand_built_scores():
    genuine = np.array([0.9, 0.8, 0.7, 0.4])
    impostor = np.array([0.1, 0.2, 0.3, 0.6])
    eer, low, high, thr = (v[0] for v in core.eer_rows(genuine, impostor))
    # at threshold 0.6: one impostor (0.6) accepted, one genuine (0.4) rejected -> 1/4 each
    assert (eer, low, high, thr) == (0.25, 0.25, 0.25, 0.6)
    eer, low, high, _ = (v[0] for v in core.eer_rows([0.9, 0.8], [0.1, 0.2]))
    assert (eer, low, high) == (0.0, 0.0, 0.0)
    # impostors all above genuine: every threshold has FMR + FNMR = 1 at best
    eer, low, high, _ = (v[0] for v in core.eer_rows([0.1, 0.2], [0.8, 0.9]))
    assert eer == 1.0


def test_eer_interval_when_rates_do_not_cross_exactly():
    # 3 genuine, 2 impostor: at threshold 0.5 FMR = 1/2, FNMR = 1/3 -> interval [1/3, 1/2]
    eer, low, high, thr = (v[0] for v in core.eer_rows([0.4, 0.7, 0.9], [0.2, 0.5]))
    assert (low, high) == pytest.approx((1 / 3, 1 / 2))
    assert eer == pytest.approx(5 / 12)


def test_eer_ignores_thresholds_inside_ties():
    eer, *_ = (v[0] for v in core.eer_rows([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]))
    assert eer == 0.5  # accept all (FMR 1, FNMR 0) or none (FMR 0, FNMR 1)


def test_fnmr_at_fmr_on_hand_built_scores():
    impostor = np.arange(100) / 100.0
    genuine = np.array([0.5, 0.895, 0.95, 0.99])
    fnmr, thr = core.fnmr_at_fmr_rows(genuine, impostor, 0.1)
    assert thr[0] == 0.89  # ten impostors (0.90..0.99) above it: FMR = 0.1 exactly
    assert fnmr[0] == 0.25
    fnmr, thr = core.fnmr_at_fmr_rows(genuine, impostor, 0.01)
    assert thr[0] == 0.98 and fnmr[0] == 0.75
    assert not core.enough_nonmated(100, 1e-3) and core.enough_nonmated(1000, 1e-3)


def test_batched_rows_equal_single_rows():
    rng = np.random.default_rng(3)
    g, i = rng.normal(1, 1, (4, 50)), rng.normal(0, 1, (4, 60))
    batched = core.eer_rows(g, i)[0]
    single = [core.eer_rows(g[k], i[k])[0][0] for k in range(4)]
    assert np.allclose(batched, single)
    assert np.allclose(core.fnmr_at_fmr_rows(g, i, 0.1)[0], [core.fnmr_at_fmr_rows(g[k], i[k], 0.1)[0][0] for k in range(4)])


def test_eer_of_gaussians_matches_theory():
    rng = np.random.default_rng(4)
    g, i = rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)
    # equal-variance Gaussians 2 apart cross at 1: EER = Phi(-1) = 0.1587
    assert core.eer_rows(g, i)[0][0] == pytest.approx(0.1587, abs=0.006)


def test_pairs_are_seeded_and_follow_the_protocols():
    ids = np.array([f"im{k}" for k in range(40)])
    identities = np.repeat([f"p{k}" for k in range(10)], 4)
    a, b, mated = core.sample_pairs(identities, "protected-vs-other-image", 30, 50, core.rng_for(0, "x"))
    a2, b2, m2 = core.sample_pairs(identities, "protected-vs-other-image", 30, 50, core.rng_for(0, "x"))
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert mated.sum() == 30 and (~mated).sum() == 50
    assert np.all(identities[a[mated]] == identities[b[mated]]) and np.all(a[mated] != b[mated])
    assert np.all(identities[a[~mated]] != identities[b[~mated]])
    assert len(set(zip(a[~mated], b[~mated]))) == 50  # distinct pairs
    a, b, mated = core.sample_pairs(identities, "protected-vs-original", 1000, 5000, core.rng_for(0, "x"))
    assert mated.sum() == 40 and np.array_equal(a[mated], b[mated])
    # the population is smaller than asked: all of it, each unordered pair of images once
    assert (~mated).sum() == (40 * 40 - 10 * 16) // 2
    assert len({frozenset(p) for p in zip(a[~mated], b[~mated])}) == (~mated).sum()
    assert core.unpack_pairs(core.pack_pairs(a, b, mated))[0].tolist() == a.tolist()
    assert core.pairs_digest(ids, a, b, mated, "p") != core.pairs_digest(ids, b, a, mated, "p")


def test_cosine_pairs():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    a, b = rng.integers(0, 20, 100), rng.integers(0, 20, 100)
    ref = [x[p] @ y[q] / np.linalg.norm(x[p]) / np.linalg.norm(y[q]) for p, q in zip(a, b)]
    assert np.allclose(core.cosine_pairs(x, y, a, b, chunk=7), ref, atol=1e-6)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert core.frechet_from_moments(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-6)
    # 1-D: (mu1-mu2)^2 + (sigma1-sigma2)^2, also from samples
    rng = np.random.default_rng(6)
    x, y = rng.normal(1, 2, (200000, 1)), rng.normal(-1, 1, (200000, 1))
    assert core.frechet_distance(x, y) == pytest.approx(4 + 1, rel=0.02)


def test_frechet_matches_scipy_sqrtm_on_full_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert core.frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(7).normal(size=(300, 64))
    assert abs(core.frechet_distance(x, x)) < 1e-6


def test_kid_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(8)
    x, y, z = rng.normal(size=(400, 32)), rng.normal(size=(400, 32)), rng.normal(0.5, 1, size=(400, 32))
    same, std, m = core.kid(x, y, core.rng_for(0, "k"), 20, 200)
    diff, *_ = core.kid(x, z, core.rng_for(0, "k"), 20, 200)
    assert m == 200
    assert abs(same) < 0.05 * diff
    assert diff > 0.1


def test_kid_of_two_halves_of_one_set_is_zero_with_a_spread():
    rng = np.random.default_rng(11)
    means, stds = [], []
    for trial in range(20):
        data = rng.normal(size=(600, 16))
        x, y = data[:300], data[300:]
        mean, std, m = core.kid(x, y, core.rng_for(trial, "halves"), 20, 1000)
        means.append(mean)
        stds.append(std)
    assert m == 150  # capped at N/2, so subsets differ
    assert min(stds) > 0
    # each value is small against its spread, and unbiased: over independent draws the mean is ~0
    assert np.all(np.abs(means) < 3 * np.array(stds))
    assert abs(np.mean(means)) < 3 * np.std(means) / np.sqrt(len(means))
    shifted, *_ = core.kid(x, y + 0.3, core.rng_for(0, "halves"), 20, 1000)
    assert shifted > 10 * max(stds)


def test_kid_drops_the_paired_terms():
    # a condition that leaves every image as it was: exactly 0, with no spread. Keeping k(x_i, y_i) in the
    # cross term would make it strongly negative, since each image equals its own original.
    x = np.random.default_rng(12).normal(size=(200, 8))
    mean, std, _ = core.kid(x, x.copy(), core.rng_for(0, "same"), 10, 50)
    assert abs(mean) < 1e-9 and std < 1e-9
    X = x[:50]
    d = X.shape[1]
    k = (X @ X.T / d + 1) ** 3
    with_paired_terms = 2 * (k.sum() - np.trace(k)) / (50 * 49) - 2 * k.mean()
    assert with_paired_terms < -0.1  # what the old estimator gave


def test_kid_subsets_are_disjoint_blocks_smaller_than_n():
    subsets = core.disjoint_subsets(100, 7, 1000, np.random.default_rng(0))
    assert subsets.shape == (7, 50)  # N/2
    for start in range(0, 6, 2):  # blocks of one round share no row
        assert not set(subsets[start]) & set(subsets[start + 1])
    assert all(len(set(s)) == 50 for s in subsets)


def test_weighted_rates_with_unit_weights_equal_the_plain_ones():
    rng = np.random.default_rng(13)
    g, i = np.round(rng.normal(1, 1, 300), 1), np.round(rng.normal(0, 1, 2000), 1)  # rounding makes ties
    ones_g, ones_i = np.ones((1, 300)), np.ones((1, 2000))
    assert core.weighted_eer(g, i, ones_g, ones_i)[0] == pytest.approx(core.eer_rows(g, i)[0][0], abs=1e-12)
    for target in (1e-1, 1e-2, 1e-3):
        fnmr, thr = core.fnmr_at_fmr_rows(g, i, target)
        assert core.weighted_threshold_at_fmr(i, ones_i, target)[0] == thr[0]
        assert core.weighted_fnmr_at_fmr(g, i, ones_g, ones_i, target)[0] == pytest.approx(fnmr[0])


def test_weighted_rates_with_integer_weights_equal_repeated_scores():
    rng = np.random.default_rng(14)
    g, i = rng.normal(1, 1, 80), rng.normal(0, 1, 300)
    wg, wi = rng.integers(0, 4, (5, 80)).astype(float), rng.integers(0, 4, (5, 300)).astype(float)
    eer = core.weighted_eer(g, i, wg, wi, budget=400)  # a small budget also exercises the chunking
    for r in range(5):
        gr, ir = np.repeat(g, wg[r].astype(int)), np.repeat(i, wi[r].astype(int))
        assert eer[r] == pytest.approx(core.eer_rows(gr, ir)[0][0], abs=1e-12)
        assert core.weighted_fnmr_at_fmr(g, i, wg[r:r + 1], wi[r:r + 1], 0.05)[0] == pytest.approx(core.fnmr_at_fmr_rows(gr, ir, 0.05)[0][0])
    no_mated = core.weighted_eer(g, i, np.zeros((1, 80)), np.ones((1, 300)))
    assert np.isnan(no_mated[0])


def test_fold_interval():
    assert core.fold_interval(0.45, 0.6) == (0.5, 0.6)  # straddles chance: chance is inside
    assert core.fold_interval(0.3, 0.45) == pytest.approx((0.55, 0.7))  # a flipped classifier
    assert core.fold_interval(0.6, 0.7) == (0.6, 0.7)
    assert core.fold_interval(None, 0.7) == (None, None)


def test_bootstrap_ci_shrinks_with_n():
    widths = []
    for n in (100, 1600):
        rng = np.random.default_rng(9)
        y = np.repeat([0, 1], n // 2)
        p = rng.random(n) * 0.6 + 0.4 * y
        low, high = core.percentile_ci(core.bootstrap_auc(p, y, 400, rng))
        widths.append(high - low)
        g, i = rng.normal(1.5, 1, n), rng.normal(0, 1, n)
        idx = core.resample_indices(rng, n, 400)
        low, high = core.percentile_ci(core.eer_rows(g[idx], i[idx])[0])
        widths.append(high - low)
    auc_small, eer_small, auc_big, eer_big = widths
    # the width of a percentile interval scales like 1/sqrt(N): 16x the data, ~1/4 the width
    assert auc_big < 0.5 * auc_small and eer_big < 0.5 * eer_small


def test_downsample_keeps_ends_and_limits_points():
    x = np.linspace(0, 1, 5000)
    for log_ends in (False, True):
        d = core.downsample_curve(x, x ** 2, 200, log_ends=log_ends)
        assert len(d["x"]) <= 200 and d["x"][0] == 0 and d["x"][-1] == 1
