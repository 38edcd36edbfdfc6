"""The informed tier's plumbing: part-aligned training sets, one decode per shard, its settings and timings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sbpet_bench.api import FaceRecord
from sbpet_bench.config import RunConfig
from sbpet_bench.data import DiskFaceSet
from sbpet_bench.pipeline import run
from sbpet_bench.pipeline import informed
from sbpet_bench.pipeline.informed import ArrayFaceSet, RepeatLoader, informed_options


def _records(n: int, tag: str) -> list[FaceRecord]:
    return [FaceRecord(path=f"{tag}{i}", gender=i % 2, identity=f"p{i}", id=f"{tag}{i}") for i in range(n)]


def test_mixed_set_yields_the_batches_of_its_parts():
    rng = np.random.default_rng(0)
    clean, protected = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    recs = _records(10, "a")
    cpu = torch.device("cpu")
    alone = [b.images for part in (clean, protected) for b in ArrayFaceSet([part], recs, cpu).batches(4)]
    mixed = ArrayFaceSet([clean, protected], [*recs, *recs], cpu)
    together = list(mixed.batches(4))
    assert [len(b) for b in together] == [4, 4, 2, 4, 4, 2]  # no batch straddles the two parts
    assert all(torch.equal(a, b.images) for a, b in zip(alone, together))
    assert together[3].ids == ["a0", "a1", "a2", "a3"] and together[3].genders.tolist() == [0, 1, 0, 1]
    assert torch.equal(mixed.all().images, torch.cat(alone))
    with pytest.raises(ValueError, match="20 images for 10 records"):
        ArrayFaceSet([clean, protected], recs, cpu)


def test_repeat_loader_decodes_a_shard_once():
    calls = []

    def load(records):
        calls.append([r.id for r in records])
        return np.zeros((len(records), 2, 2, 3), np.uint8)

    loader = RepeatLoader(load)
    a, b = _records(3, "a"), _records(3, "b")
    first = loader(a)
    assert loader(a) is first and len(calls) == 1
    loader(b)
    loader(a)
    assert calls == [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["a0", "a1", "a2"]]


def test_informed_settings_stay_below_the_users_options(monkeypatch):
    monkeypatch.setitem(informed.INFORMED_OPTIONS, "cnn-gender", {"holdout": 0.15})
    assert informed_options("cnn-gender", {}) == {"holdout": 0.15}
    assert informed_options("cnn-gender[holdout=0]", {}) == {}
    assert informed_options("cnn-gender", {"cnn-gender": {"holdout": 0.3}}) == {}
    assert informed_options("hog-logreg", {}) == {}


@pytest.mark.slow
def test_informed_tier_times_its_stages_and_decodes_each_training_image_once(small_data, tmp_path, monkeypatch):
    decoded: dict[int, list[str]] = {}  # size of the DiskFaceSet -> ids it decoded
    original = DiskFaceSet.load_uint8

    def counting(self, records):
        decoded.setdefault(len(self.records), []).extend(r.id for r in records)
        return original(self, records)

    monkeypatch.setattr(DiskFaceSet, "load_uint8", counting)
    cfg = RunConfig(data=str(small_data), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), per_class=12,
                    train_per_class=40, pool_per_class=8, batch_size=8, bootstrap=20, classifiers=["hog-logreg"],
                    verifiers=["pca-pixels"], featurizers=[], quiet=True, pets=["blur"], informed=True,
                    informed_per_class=10, informed_classifiers=["hog-logreg", "cnn-gender[epochs=2,width=4]"])
    results = run(cfg)
    timings = results["timings"]
    for key in ("informed pet:blur", "informed score:pca-pixels", "informed decode", "informed fit:probes", "fit:cnn-gender"):
        assert timings.get(key, 0) > 0, key
    assert "pet:blur" in timings  # the evaluation images' stage keeps its own name
    n_train = results["tiers"]["informed_train_images"]
    assert n_train == 20
    # the informed subset (its own DiskFaceSet of 20; the split's are 80, 16 and 24) is decoded once, image by image
    assert sorted(decoded[n_train]) == sorted(set(decoded[n_train])) and len(decoded[n_train]) == n_train
    blur = next(c for c in results["conditions"] if c["pet"] == "blur" and c["attacker"] == "none")
    labels = {m["evaluator"] for m in blur["metrics"] if m["metric"] == "privacy_auc"}
    assert {"informed:cnn-gender[epochs=2,width=4]", "mixed:cnn-gender[epochs=2,width=4]", "informed:probe:pca-pixels"} <= labels
    json.dumps(results)
