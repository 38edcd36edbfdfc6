"""PrivacyProber's detection metric on hand-built score arrays."""

import numpy as np
import pytest

from sbpet_bench.api import MetricInput
from sbpet_privacyprober import sbpet_register_metrics
from sbpet_privacyprober.detection import RecoveryDetection, detection_auc
from sbpet_bench.testing import make_context


def _input(before, after, orig, orig_after, pet="noise", attacker="pp-d", bootstrap=0):
    n = len(before)
    empty: dict = {}
    return MetricInput(pet=pet, attacker=attacker, genders=np.arange(n) % 2, identities=np.array([f"p{i}" for i in range(n)]),
                       ids=np.array([f"i{i}" for i in range(n)]), p_male={"clf": np.asarray(after, float)},
                       p_male_original={"clf": np.asarray(orig, float)}, embeddings=empty, embeddings_original=empty,
                       features=empty, features_original=empty, p_male_before_recovery={"clf": np.asarray(before, float)},
                       p_male_original_recovered={"clf": np.asarray(orig_after, float)}, bootstrap=bootstrap)


def test_registered():
    assert [cls.name for cls in sbpet_register_metrics()] == ["recovery-detection"]


def test_perfectly_separable_scores_give_one():
    # Protected images move by 0.4..0.6 under recovery, originals by at most 0.05.
    values = RecoveryDetection({}, make_context()).compute(_input([0.5, 0.4, 0.2, 0.9], [0.9, 0.9, 0.7, 0.3], [0.8, 0.2, 0.6, 0.1], [0.75, 0.2, 0.62, 0.15]))
    assert len(values) == 1
    v = values[0]
    assert v.metric == "detection_auc" and v.evaluator == "clf" and v.value == 1.0 and v.n == 4
    assert v.extra["mean_shift_protected"] == pytest.approx((0.4 + 0.5 + 0.5 + 0.6) / 4)


def test_reversed_and_partial_orders():
    # Originals move more than protected images: AUC 0.
    assert detection_auc([0.5, 0.5], [0.5, 0.51], [0.1, 0.9], [0.9, 0.1])[0] == 0.0
    # Shifts: protected {0.1, 0.3}, originals {0.2, 0.0}: 3 of 4 pairs ordered correctly.
    assert detection_auc([0.5, 0.5], [0.6, 0.8], [0.5, 0.5], [0.7, 0.5])[0] == pytest.approx(0.75)
    # Signs do not matter, only the size of the shift; ties count half.
    assert detection_auc([0.6], [0.4], [0.3], [0.5])[0] == pytest.approx(0.5)


def test_no_value_without_an_attack_or_for_the_originals():
    args = ([0.5, 0.4], [0.9, 0.9], [0.8, 0.2], [0.75, 0.2])
    assert RecoveryDetection({}, make_context()).compute(_input(*args, attacker="none")) == []
    assert RecoveryDetection({}, make_context()).compute(_input(*args, pet="original")) == []


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    orig = rng.random(60)
    before = rng.random(60)
    after = np.clip(before + rng.normal(0, 0.3, 60), 0, 1)
    orig_after = np.clip(orig + rng.normal(0, 0.1, 60), 0, 1)
    (v,) = RecoveryDetection({}, make_context()).compute(_input(before, after, orig, orig_after, bootstrap=200))
    assert 0.5 < v.value < 1.0
    assert v.ci_low < v.value < v.ci_high
