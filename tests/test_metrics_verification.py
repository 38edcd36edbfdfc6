"""Verification against theory: identity bootstrap, deduplicated pairs, the originals' fixed threshold, gender splits, worst EER."""

import warnings

import numpy as np
import pytest

from sbpet_metrics import core
from sbpet_metrics.verification import VerificationMetric

from test_metrics_plugins import make_input
from sbpet_bench.testing import make_context


def by_key(values):
    out = {}
    for v in values:
        key = (v.metric, v.evaluator, v.protocol) + ((v.extra["fmr"],) if v.metric == "fnmr_at_clean_threshold" else ())
        assert key not in out, f"two values for {key}"
        out[key] = v
    return out


def compute(data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VerificationMetric({"n_mated": 300, "n_nonmated": 1000, **options}, make_context()).compute(data)


def test_identity_bootstrap_is_wider_than_the_pair_bootstrap_when_pairs_share_identities():
    # 30 identities, each with 40 mated pairs and a verification quality of its own (a shared random effect):
    # pairs of one identity are not independent, so resampling pairs understates the uncertainty.
    rng = np.random.default_rng(0)
    n_ids, per = 30, 40
    quality = rng.normal(0, 1.0, n_ids)
    gen_ids = np.repeat(np.arange(n_ids), per)
    genuine = 2.0 + quality[gen_ids] + 0.3 * rng.normal(size=len(gen_ids))
    imp_a, imp_b = rng.integers(0, n_ids, (2, 3000))
    keep = imp_a != imp_b
    imp_a, imp_b = imp_a[keep], imp_b[keep]
    impostor = 0.5 * (quality[imp_a] + quality[imp_b]) * 0.5 + 0.5 * rng.normal(size=len(imp_a))
    scores = np.concatenate([genuine, impostor])
    a, b = np.concatenate([gen_ids, imp_a]), np.concatenate([gen_ids, imp_b])
    mated = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    counts = core.resample_counts(np.random.default_rng(1), n_ids, 1000)
    by_identity = core.identity_pair_weights(counts, a, b, mated)
    by_pair = core.pair_bootstrap_weights(mated, 1000, np.random.default_rng(2))
    widths = {}
    for name, w in (("identity", by_identity), ("pair", by_pair)):
        eer = core.weighted_eer(scores[mated], scores[~mated], w[:, mated], w[:, ~mated])
        fnmr = core.weighted_fnmr_at_fmr(scores[mated], scores[~mated], w[:, mated], w[:, ~mated], 0.01)
        low, high = core.percentile_ci(eer)
        flow, fhigh = core.percentile_ci(fnmr)
        widths[name] = (high - low, fhigh - flow)
    assert widths["identity"][0] > 1.5 * widths["pair"][0]
    assert widths["identity"][1] > 1.5 * widths["pair"][1]


def test_identity_weights_follow_the_resampled_identities():
    counts = np.array([[2.0, 0.0, 1.0]])
    a, b = np.array([0, 1, 0, 2]), np.array([0, 1, 2, 1])
    mated = np.array([True, True, False, False])
    assert core.identity_pair_weights(counts, a, b, mated).tolist() == [[2.0, 0.0, 2.0, 0.0]]


def test_the_plugin_identity_interval_is_wider_on_data_with_identity_effects():
    data = make_input(n_ids=40, per_id=6, noise=0.3, bootstrap=400)
    rng = np.random.default_rng(3)
    codes = np.unique(data.identities, return_inverse=True)[1]
    hard = rng.random(40) < 0.3  # some people are hard to verify: all their protected images are noisier
    prot = data.embeddings_original["ver"] + np.where(hard[codes], 1.0, 0.15)[:, None] * rng.normal(size=data.embeddings["ver"].shape)
    data.embeddings["ver"] = prot / np.linalg.norm(prot, axis=1, keepdims=True)
    widths = {}
    for unit in ("identity", "pair"):
        v = by_key(compute(data, bootstrap_unit=unit, same_gender=False, per_probe_gender=False))[("eer", "ver", "protected-vs-other-image")]
        widths[unit] = v.ci_high - v.ci_low
        assert v.ci_low <= v.value <= v.ci_high
    assert widths["identity"] > 1.2 * widths["pair"]


def test_pairs_are_deduplicated_and_randomly_oriented():
    identities = np.repeat([f"p{k}" for k in range(20)], 5)
    a, b, mated = core.sample_pairs(identities, "protected-vs-other-image", 10_000, 3000, core.rng_for(0, "x"))
    assert mated.sum() == 20 * 10  # C(5, 2) unordered pairs per identity, each once
    unordered = {frozenset(p) for p in zip(a[mated], b[mated])}
    assert len(unordered) == mated.sum()
    assert 0 < np.mean(a[mated] < b[mated]) < 1  # either image may be the probe
    assert len({frozenset(p) for p in zip(a[~mated], b[~mated])}) == (~mated).sum()


def test_same_gender_protocol_draws_same_gender_impostors_and_keeps_the_mated_pairs():
    data = make_input()
    genders, identities = data.genders, data.identities
    a, b, mated = core.sample_pairs(identities, "protected-vs-other-image/same-gender", 100, 500, core.rng_for(0, "sg"), genders)
    assert np.all(genders[a[~mated]] == genders[b[~mated]]) and np.all(identities[a[~mated]] != identities[b[~mated]])
    v = by_key(compute(data, n_mated=50))  # fewer mated pairs than there are: a subset is drawn
    for protocol in ("protected-vs-original/same-gender", "protected-vs-other-image/same-gender"):
        variant, base = v[("eer", "ver", protocol)], v[("eer", "ver", protocol.split("/")[0])]
        assert variant.extra["pairs_sha256"] != base.extra["pairs_sha256"]
        va, vb, vm = core.unpack_pairs(variant.extra["pairs"]["data"])
        ba, bb, bm = core.unpack_pairs(base.extra["pairs"]["data"])
        assert vm.sum() == 50 and np.array_equal(va[vm], ba[bm]) and np.array_equal(vb[vm], bb[bm])  # the base's mated pairs
        assert np.all(genders[va[~vm]] == genders[vb[~vm]])


def test_per_probe_gender_values_are_the_subsets_of_the_pairs():
    data = make_input()
    v = by_key(compute(data))
    base = v[("eer", "ver", "protected-vs-original")]
    a, b, mated = core.unpack_pairs(base.extra["pairs"]["data"])
    scores = core.cosine_pairs(data.embeddings["ver"], data.embeddings_original["ver"], a, b)
    for label, code in (("male", 1), ("female", 0)):
        keep = data.genders[a] == code
        value = v[("eer", "ver", f"protected-vs-original@{label}")]
        assert value.extra["probe_gender"] == label
        assert value.value == pytest.approx(core.eer_rows(scores[keep & mated], scores[keep & ~mated])[0][0])
        assert value.extra["n_mated"] + value.extra["n_nonmated"] == keep.sum()
        assert v[("fnmr_fmr1e-2", "ver", f"protected-vs-original@{label}")].extra["probe_gender"] == label


def test_fnmr_at_clean_threshold_uses_the_originals_threshold_unchanged():
    original = by_key(compute(make_input(pet="original")))
    noisy_data = make_input(noise=1.0)
    noisy = by_key(compute(noisy_data))
    for fmr, label in ((1e-2, "fnmr_fmr1e-2"), (1e-3, "fnmr_fmr1e-3")):
        reference = original[(label, "ver", "protected-vs-other-image")]
        # on the originals row the fixed threshold is the row's own: the same threshold and FNMR
        own = original[("fnmr_at_clean_threshold", "ver", "protected-vs-other-image", fmr)]
        assert own.extra["threshold"] == pytest.approx(reference.extra["threshold"])
        assert own.value == pytest.approx(reference.value)
        for protocol in ("protected-vs-original", "protected-vs-other-image", "protected-vs-original@female"):
            fixed = noisy[("fnmr_at_clean_threshold", "ver", protocol, fmr)]
            assert fixed.extra["threshold"] == pytest.approx(reference.extra["threshold"])  # not re-set on the condition
            assert fixed.ci_low <= fixed.value <= fixed.ci_high
    # recompute one by hand from the stored pairs
    fixed = noisy[("fnmr_at_clean_threshold", "ver", "protected-vs-original", 1e-2)]
    a, b, mated = core.unpack_pairs(noisy[("eer", "ver", "protected-vs-original")].extra["pairs"]["data"])
    scores = core.cosine_pairs(noisy_data.embeddings["ver"], noisy_data.embeddings_original["ver"], a, b)
    assert fixed.value == pytest.approx(np.mean(scores[mated] <= fixed.extra["threshold"]))
    assert fixed.extra["condition_fmr"] == pytest.approx(np.mean(scores[~mated] > fixed.extra["threshold"]))
    assert ("fnmr_at_clean_threshold", "ver", "protected-vs-original/same-gender", 1e-2) not in noisy  # same mated pairs as the base


def test_worst_eer_names_the_verifier_and_the_held_out_ones():
    data = make_input(noise=0.2)
    rng = np.random.default_rng(4)
    bad = data.embeddings_original["ver"] + 1.2 * rng.normal(size=data.embeddings["ver"].shape)
    data.embeddings["bad"] = bad / np.linalg.norm(bad, axis=1, keepdims=True)
    data.embeddings_original["bad"] = data.embeddings_original["ver"]
    data.in_sample = {"bad": ["blur"]}
    v = by_key(compute(data))
    worst = v[("worst_eer", "bad", "protected-vs-original")]
    eers = {name: v[("eer", name, "protected-vs-original")].value for name in ("ver", "bad")}
    assert worst.value == max(eers.values()) and worst.extra["verifier"] == "bad"
    assert worst.extra["heldout_verifiers"] == ["ver"] and worst.extra["in_sample_verifiers"] == ["bad"]
    assert worst.extra["heldout_eer"]["value"] == eers["ver"] and worst.extra["heldout_verifier"] == "ver"
    assert worst.extra["in_sample"] == ["blur"]
    # shared resamples: the maximum per resample bounds each verifier's interval from above
    for name in eers:
        assert worst.ci_high >= v[("eer", name, "protected-vs-original")].ci_high - 1e-12
    assert all(x.extra.get("in_sample") == ["blur"] for x in v.values() if x.evaluator == "bad")
    assert not any("in_sample" in x.extra for x in v.values() if x.evaluator == "ver" and x.metric != "worst_eer")
    originals = by_key(compute(make_input(pet="original")))
    worst_original = [x for k, x in originals.items() if k[0] == "worst_eer"]
    assert len(worst_original) == 1 and worst_original[0].protocol == "protected-vs-other-image"
    assert "heldout_eer" not in worst_original[0].extra  # nothing in-sample: the held-out figure is the same


def test_bad_fmr_options_are_refused_clearly():
    from sbpet_bench.api import PluginError

    with pytest.raises(PluginError, match="clean_threshold_fmr"):
        VerificationMetric({"clean_threshold_fmr": "0.01,two"}, make_context()).compute(make_input())
    with pytest.raises(PluginError, match="between 0 and 1"):
        VerificationMetric({"fmr_targets": "0.1,5"}, make_context()).compute(make_input())
