"""The pipeline end to end on small data: results, failures, options, caching and resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sbpet_bench.config import ConfigError, RunConfig
from sbpet_bench.pipeline import run
from sbpet_bench.plugins import PluginLoadError, load_registry

HERE = Path(__file__).parent
FAULTY = HERE / "plugins" / "faulty_pets.py"


@pytest.fixture(scope="module")
def registry():
    return load_registry([str(FAULTY)])


def _cfg(data: Path, out: Path, **kw) -> RunConfig:
    base = dict(data=str(data), out=str(out), per_class=12, train_per_class=40, pool_per_class=8, batch_size=8,
                bootstrap=20, classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], quiet=True,
                plugins=[str(FAULTY)])
    base.update(kw)
    return RunConfig(**base)


def _metric(results, pet, attacker, metric, evaluator=None):
    for cond in results["conditions"]:
        if cond["pet"] == pet and cond["attacker"] == attacker:
            for m in cond["metrics"]:
                if m["metric"] == metric and (evaluator is None or m["evaluator"] == evaluator):
                    return m["value"]
    raise KeyError((pet, attacker, metric))


def test_run_writes_results_and_keeps_working_plugins(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "run", pets=["identity", "blur", "nan-pet", "late-crash", "needs-missing-module"])
    results = run(cfg, registry=registry)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["dataset"]["n_eval"] == 24 and saved["dataset"]["source"] == "folders"
    status = {c["pet"]: c["status"] for c in results["conditions"] if c["attacker"] == "none"}
    assert status == {"original": "ok", "identity": "ok", "blur": "ok", "nan-pet": "failed", "late-crash": "failed",
                      "needs-missing-module": "failed"}
    errors = {e["plugin"]: e for e in results["errors"]}
    assert "NaN" in errors["nan-pet"]["message"] and errors["nan-pet"]["batch"] == 0
    assert errors["late-crash"]["batch"] == 1 and "boom on the second batch" in errors["late-crash"]["message"]
    assert "no_such_module_xyz" in errors["needs-missing-module"]["message"]
    # identity keeps the originals' classifier scores exactly (up to uint8 storage)
    assert _metric(results, "identity", "none", "auc") == pytest.approx(_metric(results, "original", "none", "auc"), abs=0.02)
    # the samples for the report grid exist on disk
    sample = results["samples"][0]
    assert (tmp_path / "run" / sample["images"]["blur/none"]).exists()
    assert "hog-logreg" in sample["p_male"]["blur/none"]
    assert results["config"]["pets"][0] == "identity"
    assert results["timings"]["total"] > 0 and "pet:blur" in results["timings"]


def test_cached_rerun_reuses_everything(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "a", pets=["noise"], cache_dir=str(tmp_path / "cache"))
    first = run(cfg, registry=registry)
    second = run(cfg, registry=registry)
    assert second["cache"]["misses"] == 0 and second["cache"]["hits"] > 0
    assert _metric(first, "noise", "none", "auc") == _metric(second, "noise", "none", "auc")
    third = run(_cfg(small_data, tmp_path / "a", pets=["noise"], cache_dir=str(tmp_path / "cache"), refresh=True), registry=registry)
    assert third["cache"]["hits"] == 0


def test_options_are_checked_and_change_results(small_data, tmp_path, registry):
    with pytest.raises(PluginLoadError, match="valid options: sigma"):
        run(_cfg(small_data, tmp_path / "x", pets=["blur"], options={"blur.radius": "3"}), registry=registry)
    with pytest.raises(ConfigError, match="no plugin named 'blurr'"):
        run(_cfg(small_data, tmp_path / "x", pets=["blur"], options={"blurr.sigma": "3"}), registry=registry)
    with pytest.raises(PluginLoadError, match="unknown pet 'nope'; available: .*blur"):
        run(_cfg(small_data, tmp_path / "x", pets=["nope"]), registry=registry)
    with pytest.raises(PluginLoadError, match="valid options: sigma"):
        run(_cfg(small_data, tmp_path / "x", pets=["blur[radius=3]"]), registry=registry)
    # Inline options make variants of one plugin, each a row of its own.
    both = run(_cfg(small_data, tmp_path / "w", pets=["blur[sigma=0.5]", "blur[sigma=6]"]), registry=registry)
    assert _metric(both, "blur[sigma=0.5]", "none", "eer", "pca-pixels") < _metric(both, "blur[sigma=6]", "none", "eer", "pca-pixels")


def test_duplicate_plugin_names_name_both_origins(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from sbpet_bench import hookimpl\nfrom sbpet_bench.api import PET\n"
        "class Blur(PET):\n    name = 'blur'\n\n"
        "@hookimpl\ndef sbpet_register_pets():\n    return [Blur]\n")
    with pytest.raises(PluginLoadError, match=r"two pet plugins are named 'blur': one from sbpet_baselines.*one from file .*clash.py"):
        load_registry([str(clash)])


def test_corrupt_files_are_listed_and_the_run_finishes(small_data, tmp_path, registry):
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    victims = sorted((data / "male").iterdir())[:3]
    victims[0].write_text("this is not a jpeg")
    victims[1].write_bytes(victims[1].read_bytes()[:200])
    victims[2].write_bytes(b"")
    (data / "female" / "README").write_text("not an image")
    results = run(_cfg(data, tmp_path / "run", pets=["identity"]), registry=registry)
    skipped = {Path(s["path"]).name: s["reason"] for s in results["dataset"]["skipped"]}
    assert {v.name for v in victims} <= set(skipped) and "README" in skipped
    assert all(c["status"] == "ok" for c in results["conditions"])


def test_killed_run_resumes_with_identical_metrics(small_data, tmp_path):
    slow = tmp_path / "slow_pet.py"
    slow.write_text(
        "import time\nfrom sbpet_bench import hookimpl\nfrom sbpet_bench.api import PET, ProtectResult\n"
        "import torch\n"
        "class Slow(PET):\n    name = 'slow-noise'\n"
        "    def protect(self, batch):\n        time.sleep(0.7)\n"
        "        return ProtectResult((batch.images + 0.2 * torch.randn_like(batch.images)).clamp(0, 1))\n"
        "@hookimpl\ndef sbpet_register_pets():\n    return [Slow]\n")
    args = ["--pets", "slow-noise", "--data", str(small_data), "--per-class", "24", "--train-per-class", "40",
            "--pool-per-class", "8", "--batch-size", "4", "--bootstrap", "20", "--classifiers", "hog-logreg",
            "--verifiers", "pca-pixels", "--featurizers", "", "--plugin", str(slow), "--quiet"]
    cmd = [sys.executable, "-m", "sbpet_bench.cli", "run", *args]
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(cmd + ["--out", str(resumed), "--cache-dir", str(tmp_path / "cache-a")], start_new_session=True)
    images = tmp_path / "cache-a" / "images"
    deadline = time.time() + 240
    while time.time() < deadline and (not images.exists() or len(list(images.rglob("*.npz"))) < 4):
        time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(images.rglob("*.npz")))
    assert 4 <= done_before < 12, done_before  # killed half-way: 12 batches in all
    subprocess.run(cmd + ["--out", str(resumed), "--cache-dir", str(tmp_path / "cache-a")], check=True, timeout=600)
    fresh = tmp_path / "fresh"
    subprocess.run(cmd + ["--out", str(fresh), "--cache-dir", str(tmp_path / "cache-b")], check=True, timeout=600)
    a = json.loads((resumed / "results.json").read_text())
    b = json.loads((fresh / "results.json").read_text())
    for metric in ("auc", "eer"):
        assert _metric(a, "slow-noise", "none", metric) == _metric(b, "slow-noise", "none", metric)


def test_variants_share_a_fit_when_only_other_options_differ(small_data, tmp_path, registry):
    from sbpet_bench.pipeline import Run

    runner = Run(_cfg(small_data, tmp_path / "k", pets=["identity"]), registry=registry)
    host = runner.setup()
    entry = registry.get("classifier", "hog-logreg")
    a, b = host.options_for(entry, {"c": "0.1"}), host.options_for(entry, {"c": "1.0"})
    assert host.fit_key(entry, a) != host.fit_key(entry, b)  # fit_options None: every option counts
    pridss = registry.get("pet", "pridss")
    m5, m10 = host.options_for(pridss, {"m": "5"}), host.options_for(pridss, {"m": "10"})
    assert host.plugin_key(pridss, m5) != host.plugin_key(pridss, m10)
    assert host.fit_key(pridss, m5) == host.fit_key(pridss, m10)
