"""A model file is checked against its sha256 before a run uses it; the check is remembered per (path, size, mtime)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from sbpet_bench import modelstore
from sbpet_bench.api import Asset
from sbpet_bench.modelstore import ModelStore, ModelStoreError, VerifiedMemo

PAYLOAD = b"weights " * 1000


def toy_asset(sources=()) -> Asset:
    return Asset(name="toy", filename="sub/toy.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD),
                 licence="MIT", sources=sources)


def flip_a_byte(path: Path, at: int = 100) -> None:
    with open(path, "r+b") as fh:  # same size, different content: the size check cannot see it
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def served(tmp_path: Path) -> Path:
    path = tmp_path / "served.bin"
    path.write_bytes(PAYLOAD)
    return path


def test_tampered_file_is_refused_by_name_and_fetch_repairs_it(tmp_path, served, monkeypatch):
    monkeypatch.setenv("SBPET_HOME", str(tmp_path / "home"))
    store = ModelStore(None, {"toy": toy_asset((served.as_uri(),))})
    path = Path(store.path("toy"))
    assert path.parent.parent == tmp_path / "home" / "models"
    flip_a_byte(path)
    assert store.is_present("toy")  # still the pinned size
    fresh = ModelStore(None, {"toy": toy_asset((served.as_uri(),))})  # a new run: no in-memory state
    with pytest.raises(ModelStoreError) as err:
        fresh.path("toy")
    message = str(err.value)
    assert "model 'toy'" in message and "does not match its sha256" in message and str(path) in message
    assert "sbpet models fetch toy --force" in message and hashlib.sha256(path.read_bytes()).hexdigest() in message
    assert fresh.verify() == [("toy", f"corrupt: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}, "
                                      f"expected {toy_asset().sha256}")]
    fresh.fetch("toy")  # a damaged file is fetched again, without --force
    assert path.read_bytes() == PAYLOAD and fresh.path("toy") == str(path)


def test_a_tampered_copy_of_a_real_model_is_refused(tmp_path, monkeypatch):
    from sbpet_bench.plugins import load_registry

    assets = load_registry().assets
    real = ModelStore(None, assets)
    name = "faceapi-age-gender-manifest"
    if name not in assets or not real.is_present(name):
        pytest.skip(f"{name} is not in the model store (run `sbpet models fetch --default`)")
    monkeypatch.setenv("SBPET_HOME", str(tmp_path))
    copy = ModelStore(None, assets)
    copy.target(name).parent.mkdir(parents=True)
    shutil.copy(real.target(name), copy.target(name))
    assert copy.path(name, fetch=False) == str(copy.target(name))  # an intact copy is accepted
    flip_a_byte(copy.target(name), at=10)
    with pytest.raises(ModelStoreError, match=f"model '{name}' .* does not match its sha256"):
        ModelStore(None, assets).path(name, fetch=False)


def test_verification_is_memoised_by_size_and_mtime(tmp_path, served, monkeypatch):
    hashed: list[str] = []
    real_sha = modelstore.sha256_of
    monkeypatch.setattr(modelstore, "sha256_of", lambda p: hashed.append(str(p)) or real_sha(p))
    store = ModelStore(tmp_path, {"toy": toy_asset((served.as_uri(),))})
    path = Path(store.fetch("toy"))  # hashed while downloading, and remembered
    for _ in range(3):
        assert ModelStore(tmp_path, {"toy": toy_asset()}).path("toy") == str(path)
    assert hashed == []
    memo = json.loads((tmp_path / modelstore.MEMO_NAME).read_text())
    entry = memo["files"][str(path.resolve())]
    assert entry == {"size": len(PAYLOAD), "mtime_ns": path.stat().st_mtime_ns, "sha256": toy_asset().sha256}
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched: hash once more
    ModelStore(tmp_path, {"toy": toy_asset()}).path("toy")
    ModelStore(tmp_path, {"toy": toy_asset()}).path("toy")
    assert hashed == [str(path)]


def _record_many(args: tuple[str, int]) -> None:
    home, worker = args
    memo = VerifiedMemo(Path(home))
    for k in range(15):
        target = Path(home) / f"w{worker}-{k}.bin"
        target.write_bytes(b"x")
        memo.record(target, f"{worker:032x}{k:032x}")


def test_concurrent_writers_keep_every_entry(tmp_path):
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_record_many, [(str(tmp_path), w) for w in range(4)]))
    files = json.loads((tmp_path / modelstore.MEMO_NAME).read_text())["files"]
    assert len(files) == 60  # the lock makes read-merge-write atomic: no writer's entries lost
    assert not list(tmp_path.glob(f".{modelstore.MEMO_NAME}.*.part"))


def test_a_damaged_memo_is_ignored(tmp_path, served):
    store = ModelStore(tmp_path, {"toy": toy_asset((served.as_uri(),))})
    path = Path(store.fetch("toy"))
    (tmp_path / modelstore.MEMO_NAME).write_text("{not json")
    assert store.path("toy") == str(path)  # hashed again instead of trusted
    flip_a_byte(path)
    (tmp_path / modelstore.MEMO_NAME).write_text("{not json")
    with pytest.raises(ModelStoreError, match="does not match"):
        ModelStore(tmp_path, {"toy": toy_asset()}).path("toy")


TOY_PLUGIN = '''
import torch
from sbpet_bench import hookimpl
from sbpet_bench.api import Asset, GenderClassifier

WEIGHTS = Asset(name="toy-weights", filename="toy/weights.bin", sha256="{sha}", size={size}, licence="MIT", sources=())


class ToyClassifier(GenderClassifier):
    name = "toy-clf"
    version = "1"
    models = ("toy-weights",)

    def __init__(self, options, context):
        super().__init__(options, context)
        with open(context.model_path("toy-weights"), "rb") as fh:
            self.level = fh.read()[0] / 255

    def predict_male(self, images):
        return torch.full((images.shape[0],), self.level)


@hookimpl
def sbpet_register_classifiers():
    return [ToyClassifier]


@hookimpl
def sbpet_register_assets():
    return [WEIGHTS]
'''


@pytest.mark.slow
def test_a_run_drops_the_evaluator_of_a_tampered_model_and_names_it(small_data, tmp_path):
    plugin = tmp_path / "toy_plugin.py"
    plugin.write_text(TOY_PLUGIN.format(sha=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD)))
    home = tmp_path / "home"
    weights = home / "models" / "toy" / "weights.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(PAYLOAD)
    flip_a_byte(weights)
    out = tmp_path / "run"
    env = {**os.environ, "SBPET_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "sbpet_bench.cli", "run", "--pets", "identity", "--data", str(small_data), "--plugin", str(plugin),
         "--classifiers", "toy-clf,hog-logreg", "--verifiers", "pca-pixels", "--featurizers", "", "--per-class", "12",
         "--train-per-class", "40", "--pool-per-class", "8", "--batch-size", "8", "--bootstrap", "20", "--out", str(out),
         "--quiet"], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    [error] = [e for e in results["errors"] if e["plugin"] == "toy-clf"]
    assert error["stage"] == "load" and "model 'toy-weights'" in error["message"]
    assert "does not match its sha256" in error["message"] and "sbpet models fetch toy-weights --force" in error["message"]
    assert results["config"]["classifiers"] == ["hog-logreg"]  # the others went on
    assert weights.read_bytes() != PAYLOAD  # nothing overwrote the evidence
