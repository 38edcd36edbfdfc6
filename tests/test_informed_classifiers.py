"""The informed tier's trainable classifiers: faceapi-gender-ft's shared frozen maps, early stopping and bfloat16 training of both."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_faceapi import finetune
from sbpet_bench.pipeline.host import keyed_options
from sbpet_bench.plugins import load_registry
from sbpet_faceapi.finetune import ExitHead, FaceApiGenderFinetuned, MapCache, content_key, rows
from sbpet_bench.api import identity_fold
from sbpet_weightfree.cnn import CnnGender
from synthetic_faces import tinted


def test_map_cache_evicts_the_least_recently_used_by_bytes():
    cache = MapCache(max_bytes=3 * 400)  # three (10, 10) float32 tensors
    for name in "abc":
        cache.put(name, torch.zeros(10, 10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(10, 10))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    cache.put("huge", torch.zeros(100, 100))  # bigger than the whole cache: not kept, nothing evicted for it
    assert cache.get("huge") is None and cache.bytes == 3 * 400


def test_content_key_follows_content_and_tag():
    x = torch.rand(2, 3, 8, 8)
    assert content_key(x, "w") == content_key(x.clone(), "w")
    assert content_key(x, "w") != content_key(x, "w", "mirrored")
    y = x.clone()
    y[1, 0, 0, 0] += 1e-3
    assert content_key(x, "w") != content_key(y, "w")


def test_identity_fold_keeps_a_person_in_one_fold():
    names = [f"person{i % 50}" for i in range(500)]
    fold = identity_fold(names, 0.2)
    by_person = {}
    for name, held in zip(names, fold.tolist()):
        by_person.setdefault(name, set()).add(held)
    assert all(len(v) == 1 for v in by_person.values())
    assert 0.05 < fold.float().mean() < 0.4
    assert not identity_fold(names, 0.0).any()


class _Net:
    """The two tensors ExitHead copies from AgeGenderNet."""

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.exit_conv = type("C", (), {"pointwise": torch.randn(512, 256, 1, 1, generator=gen) * 0.05,
                                        "bias": torch.randn(512, generator=gen) * 0.1})()
        self.gender = torch.nn.Linear(512, 2)


def test_exit_head_pools_like_the_network_and_samples_positions():
    head = ExitHead(_Net())
    maps = torch.randn(3, 256, 7, 7)
    reference = head.gender(F.avg_pool2d(F.relu(F.conv2d(maps, head.pointwise, head.bias)), 7, 2).flatten(1))
    assert torch.allclose(head(maps), reference, atol=1e-5)
    every = torch.arange(49)
    assert torch.allclose(head(maps, every), reference, atol=1e-5)
    some = torch.tensor([0, 10, 48])
    picked = F.relu(F.conv2d(maps, head.pointwise, head.bias)).flatten(2)[:, :, some].mean(2)
    assert torch.allclose(head(maps, some), head.gender(picked), atol=1e-5)
    assert torch.equal(head(rows(maps), some), head(maps, some))  # the fit's precomputed layout is the same input
    assert rows(maps)[1, 7 * 2 + 3].tolist() == maps[1, :, 2, 3].tolist()  # row p = map position (p // 7, p % 7)


def test_cnn_holdout_stops_early_and_still_learns(tmp_path, monkeypatch):
    clf = CnnGender({"width": 8, "epochs": 40, "batch_size": 16, "holdout": 0.25, "patience": 1},
                    make_context(tmp_path, seed=1))
    calls = {"n": 0}
    real_eval = torch.nn.Module.eval

    def counting_eval(self):  # the held-out loss is evaluated once per epoch run
        if type(self).__name__ == "GenderCnn":
            calls["n"] += 1
        return real_eval(self)

    monkeypatch.setattr(torch.nn.Module, "eval", counting_eval)
    clf.fit(tinted(160, seed=0))
    monkeypatch.setattr(torch.nn.Module, "eval", real_eval)
    assert 2 <= calls["n"] - 1 < 40  # stopped before the last epoch (the final eval() is the one after training)
    test = tinted(60, seed=5).all()
    assert roc_auc_score(test.genders.numpy(), clf.predict_male(test.images).numpy()) > 0.9


def test_cnn_without_holdout_trains_as_before(tmp_path):
    """holdout 0 is the fixed-epoch recipe: the same state as the options without the new keys."""
    train = tinted(48, seed=0)
    a = CnnGender({"width": 4, "epochs": 2, "batch_size": 16}, make_context(tmp_path / "a", seed=3))
    b = CnnGender({"width": 4, "epochs": 2, "batch_size": 16, "holdout": 0.0, "patience": 5}, make_context(tmp_path / "b", seed=3))
    a.fit(train)
    b.fit(train)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_cnn_trains_in_bfloat16_and_float32_stays_the_default_recipe(tmp_path):
    train, test = tinted(160, seed=0), tinted(60, seed=5).all()
    opts = {"width": 8, "epochs": 6, "batch_size": 16}
    default = CnnGender(opts, make_context(tmp_path / "a", seed=2))
    explicit = CnnGender({**opts, "precision": "float32"}, make_context(tmp_path / "b", seed=2))
    fast = CnnGender({**opts, "precision": "bfloat16"}, make_context(tmp_path / "c", seed=2))
    for clf in (default, explicit, fast):
        clf.fit(train)
    assert all(torch.equal(default.state_dict()[k], explicit.state_dict()[k]) for k in default.state_dict())
    assert any(not torch.equal(default.state_dict()[k], fast.state_dict()[k]) for k in default.state_dict())
    assert all(v.dtype == torch.float32 for v in fast.state_dict().values() if v.is_floating_point())  # weights stay float32
    assert fast.predict_male(test.images).dtype == torch.float32
    assert roc_auc_score(test.genders.numpy(), fast.predict_male(test.images).numpy()) > 0.9


def test_precision_enters_cnn_genders_key_only_away_from_its_default():
    """Added after PrivacyNet's results were cached (PrivacyNet trains against cnn-gender): at float32 every key stays."""
    entry = load_registry().get("classifier", "cnn-gender")
    at_default = keyed_options(entry, entry.parse_options({}))
    assert "precision" not in at_default and "epochs" in at_default  # ordinary options are keyed at their default
    assert keyed_options(entry, entry.parse_options({"precision": "bfloat16"}))["precision"] == "bfloat16"


# ------------------------------------------------------------------ faceapi-gender-ft on LFW3D (needs the weights)


@pytest.fixture(scope="module")
def faceapi_context(tmp_path_factory):
    from sbpet_bench.modelstore import ModelStore
    from sbpet_faceapi import assets as faceapi_assets

    store = ModelStore(tmp_path_factory.mktemp("sbpet_home") / "models", {a.name: a for a in faceapi_assets.ASSETS})
    store.fetch_many(list(faceapi_assets.AGE_GENDER))
    return lambda path, seed=0: make_context(path, seed=seed, model_path=store.path)


def test_finetuned_reuses_frozen_maps_and_learns_gender(faceapi_context, lfw3d, tmp_path, monkeypatch):
    finetune.MAPS = MapCache(1 << 28)
    bodies = []
    real_body = FaceApiGenderFinetuned._body

    def counting_body(self, x):
        bodies.append(len(x))
        return real_body(self, x)

    monkeypatch.setattr(FaceApiGenderFinetuned, "_body", counting_body)
    train = load_lfw3d_sample(per_class=24, seed=0, root=lfw3d)
    test = load_lfw3d_sample(per_class=16, seed=1, root=lfw3d, skip=40)
    opts = {"epochs": 6, "batch_size": 16, "holdout": 0.25}
    first = FaceApiGenderFinetuned(opts, faceapi_context(tmp_path / "a"))
    first.fit(train)
    computed = sum(bodies)
    assert computed == 2 * len(train)  # each face and its mirror image, once
    second = FaceApiGenderFinetuned(opts, faceapi_context(tmp_path / "b"))
    second.fit(train)  # another instance on the same images (the mixed fit's clean part): no body pass
    assert sum(bodies) == computed
    assert all(torch.equal(first.state_dict()[k], second.state_dict()[k]) for k in first.state_dict())
    x = test.all(size=112)
    p = first.predict_male(x.images)
    scored = sum(bodies)
    assert torch.equal(second.predict_male(x.images), p) and sum(bodies) == scored  # the second head reuses the maps
    assert roc_auc_score(x.genders.numpy(), p.numpy()) > 0.9
    restored = FaceApiGenderFinetuned(opts, faceapi_context(tmp_path / "c"))
    restored.load_state_dict(first.state_dict())
    finetune.MAPS = MapCache(1 << 28)  # a cold cache gives the same scores: the cache changes the cost only
    assert torch.allclose(restored.predict_male(x.images), p, atol=1e-6)
    fast = FaceApiGenderFinetuned({**opts, "precision": "bfloat16"}, faceapi_context(tmp_path / "d"))
    fast.fit(train)  # the head's products in bfloat16: a different state, as good a classifier
    assert any(not torch.equal(fast.state_dict()[k], first.state_dict()[k]) for k in first.state_dict())
    assert roc_auc_score(x.genders.numpy(), fast.predict_male(x.images).numpy()) > 0.9
