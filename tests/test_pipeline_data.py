"""Runs on data beyond LFW3D: aligned in-the-wild stand-ins, unlabelled identities, class-folder synonyms."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sbpet_bench.config import ConfigError, RunConfig
from sbpet_bench.pipeline import run
from sbpet_bench.standin import make_standin


def _cfg(data: Path, out: Path, **kw) -> RunConfig:
    base = dict(data=str(data), out=str(out), per_class=12, train_per_class=30, pool_per_class=6, batch_size=16,
                bootstrap=20, classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], quiet=True,
                informed=False, metrics=["gender", "verification", "worst-case"])
    base.update(kw)
    return RunConfig(**base)


def _dlib_model() -> Path:
    home = Path(os.environ.get("SBPET_HOME", Path.home() / ".cache" / "sbpet"))
    path = home / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.exists():
        pytest.skip("dlib's landmark model is absent (run `sbpet models fetch --default`)")
    return path


@pytest.fixture(scope="module")
def standin(lfw3d, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wild") / "standin"
    make_standin(lfw3d, out, seed=0, per_class=45)
    return out


def test_an_aligned_run_on_the_in_the_wild_standin_counts_faces_not_found(standin, tmp_path):
    _dlib_model()
    results = run(_cfg(standin, tmp_path / "run", pets=["identity", "blur"], align="dlib"))
    alignment = results["alignment"]
    assert alignment["aligner"] == "dlib" and alignment["size"] == 112 == results["config"]["image_size"]
    assert alignment["n_images"] == results["dataset"]["n_eval"] + results["dataset"]["n_train"] + \
        results["dataset"]["n_pool"] + alignment["n_not_found"]
    listed = [s for s in results["dataset"]["skipped"] if "alignment" in s["reason"]]
    assert len(listed) == alignment["n_not_found"] == len(alignment["not_found"])
    assert all(c["status"] == "ok" for c in results["conditions"])
    unaligned = run(_cfg(standin, tmp_path / "raw", pets=["identity"], image_size=112))
    assert unaligned["alignment"] == {"aligner": "none"}
    assert unaligned["dataset"]["fingerprint"] != results["dataset"]["fingerprint"]  # the alignment is part of every key


def test_a_folder_of_man_and_woman_without_identities_runs_end_to_end(lfw3d, tmp_path):
    males = sorted(set((lfw3d / "male_names.txt").read_text().split()) - set((lfw3d / "female_names.txt").read_text().split()))
    females = sorted(set((lfw3d / "female_names.txt").read_text().split()) - set(males))
    data = tmp_path / "crops"
    for sub, names in (("Man", males[::90][:40]), ("woman", females[::30][:40])):
        (data / sub).mkdir(parents=True)
        for k, name in enumerate(names):
            shutil.copy(lfw3d / "images" / name.rsplit("_", 1)[0] / name, data / sub / f"face_{k}.jpg")
    results = run(_cfg(data, tmp_path / "run", pets=["identity", "blur"]))
    assert results["dataset"]["n_eval"] == 24
    assert any("Man" in w and "woman" in w for w in results["warnings"])  # which folders were read as which class
    assert any("its own identity" in w for w in results["warnings"])
    identities = {s["identity"] for s in results["samples"]}
    assert len(identities) == len(results["samples"])
    original = next(c for c in results["conditions"] if c["pet"] == "original")
    # With one image per person the other-image protocol cannot be computed: said, not crashed.
    assert not any(m["protocol"].startswith("protected-vs-other-image") for m in original["metrics"] if m["metric"] == "eer")
    assert any("protected-vs-other-image" in w for w in results["warnings"])


def test_too_small_an_evaluation_set_is_an_error(lfw3d, tmp_path):
    data = tmp_path / "few"
    for sub in ("male", "female"):
        (data / sub).mkdir(parents=True)
    names = sorted((lfw3d / "male_names.txt").read_text().split())[:3]
    for k, name in enumerate(names):
        shutil.copy(lfw3d / "images" / name.rsplit("_", 1)[0] / name, data / "male" / f"face_{k}.jpg")
        shutil.copy(lfw3d / "images" / name.rsplit("_", 1)[0] / name, data / "female" / f"face_{k}.jpg")
    with pytest.raises(ConfigError, match="male"):
        run(_cfg(data, tmp_path / "run", pets=["identity"]))
