"""Privacy statistics against theory: the folded AUC interval, permutation tests and the worst case over tiers."""

import numpy as np
import pytest
from scipy.stats import kstest
from sklearn.metrics import roc_auc_score

from sbpet_bench.api import MetricInput
from sbpet_metrics import core
from sbpet_metrics.gender import GenderMetric
from sbpet_metrics.worst_case import WorstCaseMetric
from sbpet_bench.testing import make_context


def labels_and_scores(n: int, signal: float, rng: np.random.Generator, k: int = 1):
    y = np.repeat([0, 1], n // 2)
    return y, rng.random((k, n)) + signal * y


def privacy_input(scores: dict, y: np.ndarray, attacker="none", tiers=None, recovered=None, in_sample=None, bootstrap=300, pet="blur"):
    n = len(y)
    return MetricInput(pet=pet, attacker=attacker, genders=y, identities=np.array([f"id{k // 2}" for k in range(n)]),
                       ids=np.array([f"img{k}" for k in range(n)]), p_male=scores, p_male_original=scores,
                       embeddings={}, embeddings_original={}, features={}, features_original={}, seed=0, bootstrap=bootstrap,
                       classifier_tiers=tiers or {}, p_male_recovered=recovered or {}, in_sample=in_sample or {})


def test_chance_privacy_auc_matches_theory_and_simulation():
    assert core.chance_privacy_auc(200, 200) == pytest.approx(0.523, abs=0.001)
    rng = np.random.default_rng(0)
    y, scores = labels_and_scores(400, 0.0, rng, k=3000)
    folded = core.fold(core.auc_rows(scores, np.broadcast_to(y, scores.shape)))
    assert folded.mean() == pytest.approx(core.chance_privacy_auc(200, 200), abs=0.002)


def test_permutation_null_has_the_mann_whitney_moments():
    rng = np.random.default_rng(1)
    y, scores = labels_and_scores(60, 0.5, rng)
    y = rng.permutation(y)  # any label layout
    null = core.permutation_null_auc(scores, y, 20000, rng, budget=1e5)  # small budget: many chunks
    assert null.shape == (20000, 1)
    n1 = n0 = 30
    assert null.mean() == pytest.approx(0.5, abs=0.003)
    assert null.var() == pytest.approx((n0 + n1 + 1) / (12 * n0 * n1), rel=0.05)
    # each permutation is a plain AUC of the same scores under shuffled labels
    perm_rng = np.random.default_rng(2)
    one = core.permutation_null_auc(scores, y, 1, perm_rng)[0, 0]
    shuffled = np.random.default_rng(2).permuted(np.broadcast_to(y.astype(bool), (1, 60)), axis=1)[0]
    assert one == pytest.approx(roc_auc_score(shuffled, scores[0]))


def test_permutation_p_value_is_uniform_under_the_null_and_tiny_under_a_signal():
    rng = np.random.default_rng(3)
    p_values = []
    for _ in range(300):
        y, scores = labels_and_scores(80, 0.0, rng)
        p_values.append(core.privacy_p_values(scores, y, 199, rng)[0][0])
    p_values = np.array(p_values)
    assert 0.02 <= np.mean(p_values < 0.05) <= 0.09
    assert 0.4 <= np.mean(p_values < 0.5) <= 0.6
    assert kstest(p_values, "uniform").pvalue > 0.01
    y, scores = labels_and_scores(80, 0.8, rng)
    assert core.privacy_p_values(scores, y, 199, rng)[0][0] == pytest.approx(1 / 200)


def test_max_statistic_p_value_holds_its_level_over_many_classifiers():
    rng = np.random.default_rng(4)
    family, smallest = [], []
    for _ in range(200):
        y, scores = labels_and_scores(60, 0.0, rng, k=10)
        per, of_max = core.privacy_p_values(scores, y, 199, rng)
        family.append(of_max)
        smallest.append(per.min())
    assert np.mean(np.array(family) < 0.05) <= 0.09  # the max test keeps its 5 % level...
    assert np.mean(np.array(smallest) < 0.05) > 0.25  # ...which the best of ten separate tests does not (1 - 0.95^10 = 0.40)


def test_folded_ci_of_a_random_classifier_includes_chance():
    rng = np.random.default_rng(5)
    contains, folded_per_resample = [], []
    for trial in range(40):
        y, scores = labels_and_scores(200, 0.0, rng)
        values = GenderMetric({"permutations": 0}, make_context()).compute(privacy_input({"clf": scores[0]}, y, bootstrap=200))
        v = next(x for x in values if x.metric == "privacy_auc")
        contains.append(v.ci_low <= 0.5 <= v.ci_high)
        boot = core.bootstrap_auc(scores[0], y, 200, core.rng_for(trial, "x"))
        folded_per_resample.append(core.percentile_ci(core.fold(boot))[0])
    assert np.mean(contains) >= 0.85  # ~95 % of raw intervals straddle 0.5, and those fold to [0.5, ...]
    assert min(folded_per_resample) > 0.5  # folding each resample first could never include chance


def test_gender_privacy_auc_reports_the_test_and_tier():
    rng = np.random.default_rng(6)
    y, scores = labels_and_scores(200, 0.0, rng)
    strong = rng.random(200) + 0.6 * y
    data = privacy_input({"clf": scores[0], "informed:clf": strong}, y, tiers={"informed:clf": "informed"},
                         in_sample={"clf": ["pridss"]})
    v = {x.evaluator: x for x in GenderMetric({"permutations": 500}, make_context()).compute(data) if x.metric == "privacy_auc"}
    weak, good = v["clf"], v["informed:clf"]
    assert weak.extra["tier"] == "off-the-shelf" and good.extra["tier"] == "informed"
    assert weak.extra["raw_auc"] == pytest.approx(roc_auc_score(y, scores[0]))
    assert good.extra["distinguishable"] is True and good.extra["p_value"] == pytest.approx(1 / 501)
    assert weak.extra["p_value"] > 0.05 and weak.extra["distinguishable"] is False
    assert weak.extra["in_sample"] == ["pridss"] and "in_sample" not in good.extra
    # in a condition with a recovery attack, an unlisted classifier scores recovered images
    attacked = GenderMetric({"permutations": 0}, make_context()).compute(privacy_input({"clf": scores[0]}, y, attacker="pp-d"))
    assert next(x for x in attacked if x.metric == "privacy_auc").extra["tier"] == "recovery"


def test_worst_case_picks_the_maximum_over_tiers_and_names_it():
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], 150)
    off = rng.random(300) + 0.1 * y
    informed = rng.random(300) + 0.4 * y
    flipped_recovery = rng.random(300) - 0.8 * y  # flipped: reveals gender best of all
    data = privacy_input({"faceapi-gender": off, "informed:cnn-gender": informed}, y,
                         tiers={"informed:cnn-gender": "informed"},
                         recovered={"pp-d": {"faceapi-gender": flipped_recovery}},
                         in_sample={"faceapi-gender": ["blur"]})
    values = WorstCaseMetric({"permutations": 300}, make_context()).compute(data)
    worst = next(v for v in values if v.metric == "worst_privacy_auc")
    expected = {"faceapi-gender": roc_auc_score(y, off), "informed:cnn-gender": roc_auc_score(y, informed),
                "pp-d→faceapi-gender": roc_auc_score(y, flipped_recovery)}
    assert worst.evaluator == "pp-d→faceapi-gender"
    assert worst.value == pytest.approx(max(max(a, 1 - a) for a in expected.values()))
    assert worst.extra["tier"] == "recovery" and worst.extra["classifier"] == "faceapi-gender" and worst.extra["attacker"] == "pp-d"
    assert worst.extra["raw_auc"] == pytest.approx(expected["pp-d→faceapi-gender"]) and worst.extra["raw_auc"] < 0.5
    assert worst.extra["per_classifier"] == pytest.approx({k: max(a, 1 - a) for k, a in expected.items()})
    assert worst.extra["distinguishable"] is True
    assert worst.extra["in_sample"] == ["blur"]  # reached through faceapi-gender, which blur uses
    tiers = {v.protocol: v for v in values if v.metric == "tier_privacy_auc"}
    assert set(tiers) == {"off-the-shelf", "recovery", "informed"}
    assert tiers["informed"].evaluator == "informed:cnn-gender"
    assert tiers["informed"].value == pytest.approx(expected["informed:cnn-gender"])
    # shared resamples: the per-resample maximum is >= every tier's value in the same resample
    for tier in tiers.values():
        assert worst.ci_low >= tier.ci_low - 1e-12 and worst.ci_high >= tier.ci_high - 1e-12
    assert worst.ci_low <= worst.value <= worst.ci_high


def test_worst_case_of_an_attacked_condition_has_no_second_recovery():
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1], 50)
    data = privacy_input({"clf": rng.random(100)}, y, attacker="pp-d", recovered={"pp-d": {"clf": rng.random(100) + y}})
    values = WorstCaseMetric({"permutations": 0}, make_context()).compute(data)
    worst = next(v for v in values if v.metric == "worst_privacy_auc")
    assert worst.evaluator == "clf" and worst.extra["tier"] == "recovery" and worst.extra["attacker"] == "pp-d"
    assert worst.extra["n_classifiers"] == 1 and worst.extra["p_value"] is None
