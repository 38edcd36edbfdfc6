"""The human-models plugins: registration, model-store assets, and the evaluators on a few LFW3D faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_humanmodels import assets
from sbpet_humanmodels.plugin import FEATURIZERS, GENDER_CLASSIFIERS, VERIFIERS, AntispoofFeatures, FaceresGender, FaceresVerifier
from sbpet_humanmodels.shared_forward import SHARED, LastBatch


def test_registered_with_pinned_npm_sources_and_default_panel_members():
    registry = load_registry()
    names = {kind: set(registry.names(kind)) for kind in ("classifier", "verifier", "featurizer")}
    assert {c.name for c in GENDER_CLASSIFIERS} <= names["classifier"]
    assert {v.name for v in VERIFIERS} <= names["verifier"]
    assert {f.name for f in FEATURIZERS} <= names["featurizer"]
    for asset in assets.ASSETS:
        assert registry.assets[asset.name] == asset
        (source,) = asset.sources
        stem_file = asset.filename.removeprefix("humanmodels/")
        assert source == f"npm:{assets.PACKAGE}:models/{stem_file}#sha256={assets.TARBALL_SHA256}"
        assert len(asset.sha256) == 64 and asset.size > 0 and "MIT" in asset.licence
    for cls in (*GENDER_CLASSIFIERS, *VERIFIERS, *FEATURIZERS):
        assert cls.name.startswith("hm-")
        if cls.evaluator_role in ("primary", "when-present"):  # `sbpet models fetch --default` must bring its files
            assert all(registry.assets[m].default for m in cls.models), cls.name
        else:
            assert cls.description, cls.name
    # faceres and faceres-deep share their network's lineage: at most one of them is a default panel member
    faceres_roles = {cls.evaluator_role for cls in (*GENDER_CLASSIFIERS, *VERIFIERS) if "faceres-deep" in cls.name}
    assert faceres_roles == {""}


def test_needs_a_context_with_the_model_store():
    with pytest.raises(TypeError, match="FaceresGender needs a PluginContext"):
        FaceresGender({}, None)
    with pytest.raises(FileNotFoundError, match="test context has no model store"):
        FaceresGender({}, make_context())


@pytest.fixture(scope="module")
def faceres_context(tmp_path_factory):
    store = ModelStore(None, {a.name: a for a in assets.ASSETS})
    missing = [n for n in (*assets.FACERES.names, *assets.ANTISPOOF.names) if not store.is_present(n)]
    if missing:
        pytest.skip(f"models {', '.join(missing)} not in the model store: run `sbpet models fetch --default` (CI does)")
    return make_context(tmp_path_factory.mktemp("hm"), model_path=lambda name: store.path(name, fetch=False))


def test_faceres_gender_and_descriptors_on_lfw3d(lfw3d, faceres_context):
    faces = load_lfw3d_sample(per_class=8, seed=3)
    batch = faces.all(size=FaceresGender.input_size)
    gender = FaceresGender({"batch_size": 16}, faceres_context)
    with torch.no_grad():
        p_male = gender.predict_male(batch.images)
    assert p_male.shape == (16,) and ((p_male >= 0) & (p_male <= 1)).all()
    assert roc_auc_score(batch.genders.numpy(), p_male.numpy()) >= 0.9
    images = batch.images[:2].clone().requires_grad_(True)
    gender.predict_male(images).sum().backward()  # PETs may optimise images against it
    assert images.grad is not None and images.grad.abs().sum() > 0

    verifier = FaceresVerifier({"batch_size": 16}, faceres_context)
    with torch.no_grad():
        emb = verifier.embed(batch.images)
        flipped = verifier.embed(batch.images.flip(-1))
    assert emb.shape == (16, 1024)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(16))
    same = (emb * flipped).sum(1)  # a mirrored photo of the same face vs the other faces
    others = emb @ emb.T - 2 * torch.eye(16)
    assert (same > others.max(1).values).float().mean() >= 0.9


def test_antispoof_features_are_not_an_identity_embedding(lfw3d, faceres_context):
    faces = load_lfw3d_sample(per_class=8, seed=4)
    batch = faces.all(size=AntispoofFeatures.input_size)
    featurizer = AntispoofFeatures({}, faceres_context)
    with torch.no_grad():
        feats = featurizer.features(batch.images)
        p_real = featurizer.p_real(batch.images)
        noisy = featurizer.features((batch.images + 0.2 * torch.randn_like(batch.images)).clamp(0, 1))
    assert feats.shape == (16, 128) and (feats >= 0).all()  # a ReLU layer
    assert ((p_real >= 0) & (p_real <= 1)).all()
    assert not np.allclose(feats.numpy(), noisy.numpy(), atol=1e-3)  # it responds to image degradation


def test_last_batch_reuses_outputs_only_for_identical_inputs():
    calls = []

    def forward(x):
        calls.append(x)
        return (x.sum((1, 2, 3)), x.mean((1, 2, 3)))

    memo = LastBatch()
    images = torch.rand(4, 3, 8, 8)
    first = memo.get_or_run("graph", images, forward)
    again = memo.get_or_run("graph", images.clone(), forward)  # another tensor, the same values: one pass
    assert len(calls) == 1 and memo.hits == 1 and all(a is b for a, b in zip(first, again))
    changed = images.clone()
    changed[3, 2, 7, 7] += 1e-6  # one value in the last image differs: a new pass, the right outputs
    got = memo.get_or_run("graph", changed, forward)
    assert len(calls) == 2 and torch.equal(got[0], changed.sum((1, 2, 3)))
    memo.get_or_run("graph", images[:3], forward)  # a different shape
    memo.get_or_run("other graph", images[:3], forward)  # a different graph
    assert len(calls) == 4
    tracked = images.clone().requires_grad_(True)  # a PET back-propagating: never served from the memo
    out = memo.get_or_run("graph", tracked, forward)
    memo.get_or_run("graph", tracked, forward)
    assert len(calls) == 6 and out[0].requires_grad


def test_faceres_gender_and_verifier_share_one_pass_with_the_same_results(lfw3d, faceres_context):
    batch = load_lfw3d_sample(per_class=4, seed=5).all(size=FaceresGender.input_size)
    gender = FaceresGender({"batch_size": 8}, faceres_context)
    verifier = FaceresVerifier({"batch_size": 8}, faceres_context)
    SHARED.clear()
    with torch.no_grad():
        hits = SHARED.hits
        p_male = gender.predict_male(batch.images)
        emb = verifier.embed(batch.images.clone())  # the harness hands each evaluator its own copy
        assert SHARED.hits == hits + 1
        torch.testing.assert_close(emb, torch.nn.functional.normalize(verifier._forward(batch.images)[1], dim=1))
        torch.testing.assert_close(p_male, gender._forward(batch.images)[0][:, 0])
        flipped = batch.images.flip(-1)  # other images: computed afresh, not served the last batch's outputs
        emb_flipped = verifier.embed(flipped)
        assert SHARED.hits == hits + 1
        torch.testing.assert_close(emb_flipped, torch.nn.functional.normalize(verifier._forward(flipped)[1], dim=1))
        assert not torch.allclose(emb_flipped, emb)
