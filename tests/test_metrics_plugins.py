"""The metric plugins on synthetic MetricInputs: registration, conventions, values and warnings."""

import json
import warnings

import numpy as np
import pytest

from sbpet_bench.api import MetricInput, MetricValue
from sbpet_metrics import sbpet_register_metrics
from sbpet_metrics import core
from sbpet_metrics.gender import GenderMetric
from sbpet_metrics.pic import PICMetric
from sbpet_metrics.realism import RealismMetric
from sbpet_metrics.verification import VerificationMetric
from sbpet_bench.testing import make_context


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_input(pet="blur", attacker="none", n_ids=30, per_id=4, noise=0.3, leak=1.0, seed=0, bootstrap=100, dim=16):
    """Identities with 4 images each; protected embeddings = originals + noise; P(male) leaks gender by ``leak``."""
    rng = np.random.default_rng(seed)
    identities = np.repeat([f"id{k}" for k in range(n_ids)], per_id)
    genders = np.repeat(rng.permutation(np.arange(n_ids) % 2), per_id)
    centres = rng.normal(size=(n_ids, dim))
    orig = _unit(np.repeat(centres, per_id, axis=0) + 0.4 * rng.normal(size=(n_ids * per_id, dim)))
    prot = orig if pet == "original" else _unit(orig + noise * rng.normal(size=orig.shape))
    p = np.clip(0.5 + leak * (genders - 0.5) * 0.8 + 0.15 * rng.normal(size=len(genders)), 0, 1)
    feats_o = rng.normal(size=(len(genders), 8))
    feats = feats_o if pet == "original" else feats_o + 0.5
    return MetricInput(pet=pet, attacker=attacker, genders=genders, identities=identities,
                       ids=np.array([f"img{k}" for k in range(len(genders))]),
                       p_male={"clf": p}, p_male_original={"clf": p}, embeddings={"ver": prot}, embeddings_original={"ver": orig},
                       features={"inception-fid": feats, "pixels": feats * 2}, features_original={"inception-fid": feats_o, "pixels": feats_o * 2},
                       seed=seed, bootstrap=bootstrap)


def by_key(values: list[MetricValue]) -> dict:
    return {(v.metric, v.evaluator, v.protocol): v for v in values}


def test_registered_and_results_are_json_able():
    classes = sbpet_register_metrics()
    assert {c.name for c in classes} == {"gender", "worst-case", "verification", "pic", "realism"}
    data = make_input()
    for cls in classes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = cls({}, make_context()).compute(data)
        assert values and all(v.convention for v in values)
        json.dumps([v.__dict__ for v in values], allow_nan=True)


def test_gender_metric_values():
    data = make_input()
    v = by_key(GenderMetric({}, make_context()).compute(data))
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(data.genders, data.p_male["clf"])
    assert v[("auc", "clf", "male-positive")].value == pytest.approx(auc)
    pa = v[("privacy_auc", "clf", "")]
    assert pa.value == pytest.approx(max(auc, 1 - auc)) and pa.higher_is_better is False
    assert pa.ci_low <= pa.value <= pa.ci_high
    assert pa.extra["tier"] == "off-the-shelf" and pa.extra["raw_auc"] == pytest.approx(auc)
    assert pa.extra["distinguishable"] is True and pa.extra["p_value"] < 0.01
    assert v[("confidence", "clf", "")].value == pytest.approx(np.abs(2 * data.p_male["clf"] - 1).mean())
    roc = v[("auc", "clf", "male-positive")].extra["roc"]
    assert len(roc["x"]) <= 200 and roc["x"][0] == 0 and roc["y"][-1] == 1
    # a flipped classifier reveals gender just as well
    flipped = make_input()
    flipped.p_male = {"clf": 1 - data.p_male["clf"]}
    vf = by_key(GenderMetric({}, make_context()).compute(flipped))
    assert vf[("auc", "clf", "male-positive")].value == pytest.approx(1 - auc)
    assert vf[("privacy_auc", "clf", "")].value == pytest.approx(pa.value)


def test_verification_protocols_pairs_and_originals_row():
    data = make_input(noise=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = VerificationMetric({"n_mated": 100, "n_nonmated": 500}, make_context()).compute(data)
    v = by_key(values)
    assert {p for (_, _, p) in v} == {f"{base}{variant}" for base in ("protected-vs-original", "protected-vs-other-image")
                                      for variant in ("", "/same-gender", "@male", "@female")}
    eer = v[("eer", "ver", "protected-vs-original")]
    assert eer.extra["n_mated"] == 100 and eer.extra["n_nonmated"] == 500 and eer.n == 600
    assert eer.ci_low <= eer.value <= eer.ci_high
    low, high = eer.extra["eer_interval"]
    assert eer.value == pytest.approx((low + high) / 2)
    # the same pairs in every condition: hash independent of the PET's images
    other = by_key(VerificationMetric({"n_mated": 100, "n_nonmated": 500}, make_context()).compute(make_input(noise=1.0)))
    assert other[("eer", "ver", "protected-vs-original")].extra["pairs_sha256"] == eer.extra["pairs_sha256"]
    assert other[("eer", "ver", "protected-vs-original")].value > eer.value  # more noise, worse verification
    # pairs round-trip and reproduce the EER
    a, b, mated = core.unpack_pairs(eer.extra["pairs"]["data"])
    s = core.cosine_pairs(data.embeddings["ver"], data.embeddings_original["ver"], a, b)
    assert core.eer_rows(s[mated], s[~mated])[0][0] == pytest.approx(eer.value)
    # 500 non-mated pairs cannot resolve FMR 1e-3: NaN with a warning
    assert np.isnan(v[("fnmr_fmr1e-3", "ver", "protected-vs-original")].value)
    assert any("1e-3" in str(w.message) or "0.001" in str(w.message) for w in caught)
    assert 0 <= v[("fnmr_fmr1e-2", "ver", "protected-vs-original")].value <= 1
    orig = by_key(VerificationMetric({}, make_context()).compute(make_input(pet="original")))
    assert {p.split("/")[0].split("@")[0] for (_, _, p) in orig} == {"protected-vs-other-image"}


def test_pic_metric():
    data = make_input()
    v = by_key(PICMetric({}, make_context()).compute(data))
    sim = np.einsum("ij,ij->i", data.embeddings["ver"], data.embeddings_original["ver"])
    pic = v[("pic", "clf+ver", "")]
    assert pic.value == pytest.approx(np.mean(np.abs(2 * data.p_male["clf"] - 1) - sim))
    assert pic.extra["quantiles"]["q50"] == pytest.approx(np.median(np.abs(2 * data.p_male["clf"] - 1) - sim))
    assert sum(pic.extra["histogram"]["counts"]) == len(sim)
    assert v[("similarity", "ver", "")].value == pytest.approx(sim.mean())
    data.in_sample = {"ver": ["pridss"]}
    marked = by_key(PICMetric({}, make_context()).compute(data))
    assert marked[("pic", "clf+ver", "")].extra["in_sample"] == ["pridss"]  # through its verifier
    assert marked[("similarity", "ver", "")].extra["in_sample"] == ["pridss"]


def test_realism_metric():
    values = RealismMetric({"kid_subsets": 10, "kid_subset_size": 50}, make_context()).compute(make_input())
    v = by_key(values)
    assert v[("fid", "inception-fid", "")].value > 0.1
    assert "2000" in v[("fid", "inception-fid", "")].extra["warning"]
    assert ("fid", "pixels", "") not in v and ("frechet_proxy", "pixels", "") in v  # only inception-fid gives FID
    # on face-verifier embeddings the measures have names of their own: identity space, not realism
    assert ("identity_frechet", "ver", "") in v and ("identity_kid", "ver", "") in v and ("kid", "pixels", "") in v
    assert ("kid", "ver", "") not in v and ("frechet_proxy", "ver", "") not in v
    assert "not photo-realism" in v[("identity_kid", "ver", "")].convention
    assert all(x.n == 120 for x in values)
    kid = v[("kid", "pixels", "")]
    assert kid.extra["subset_size"] == 50 and kid.extra["std"] > 0
    assert RealismMetric({}, make_context()).compute(make_input(pet="original")) == []
