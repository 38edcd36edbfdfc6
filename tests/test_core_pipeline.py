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
                plugins=[str(FAULTY)], informed=False)
    base.update(kw)
    return RunConfig(**base)


def _metric(results, pet, attacker, metric, evaluator=None):
    for cond in results["conditions"]:
        if cond["pet"] == pet and cond["attacker"] == attacker:
            for m in cond["metrics"]:
                if m["metric"] == metric and (evaluator is None or m["evaluator"] == evaluator):
                    return m["value"]
    raise KeyError((pet, attacker, metric))


@pytest.mark.slow
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


@pytest.mark.slow
def test_cached_rerun_reuses_everything(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "a", pets=["noise"], cache_dir=str(tmp_path / "cache"))
    first = run(cfg, registry=registry)
    second = run(cfg, registry=registry)
    assert second["cache"]["misses"] == 0 and second["cache"]["hits"] > 0
    assert _metric(first, "noise", "none", "auc") == _metric(second, "noise", "none", "auc")
    third = run(_cfg(small_data, tmp_path / "a", pets=["noise"], cache_dir=str(tmp_path / "cache"), refresh=True), registry=registry)
    assert third["cache"]["hits"] == 0


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
            "--verifiers", "pca-pixels", "--featurizers", "", "--plugin", str(slow), "--quiet", "--no-informed"]
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


@pytest.mark.slow
def test_variants_share_a_fit_when_only_other_options_differ(small_data, tmp_path, registry):
    from sbpet_bench.pipeline import Run

    runner = Run(_cfg(small_data, tmp_path / "k", pets=["identity"]), registry=registry)
    host = runner.setup()
    entry, a = host.resolve("classifier", "hog-logreg", {"c": "0.1"})
    _, b = host.resolve("classifier", "hog-logreg", {"c": "1.0"})
    assert host.fit_key(entry, a) != host.fit_key(entry, b)  # fit_options None: every option counts
    pridss, m5 = host.resolve("pet", "pridss", {"m": "5"})
    _, m10 = host.resolve("pet", "pridss", {"m": "10"})
    assert host.key("pet", "pridss", {"m": "5"}) != host.key("pet", "pridss", {"m": "10"})
    assert host.fit_key(pridss, m5) == host.fit_key(pridss, m10)


@pytest.mark.slow
def test_an_option_of_a_plugin_used_inside_a_pet_changes_the_pets_key(small_data, tmp_path, registry):
    """PriDSS chooses candidates with resnet-gender-probe: the probe's options are part of PriDSS's key."""
    from sbpet_bench.pipeline import Run

    runner = Run(_cfg(small_data, tmp_path / "d", pets=["identity"]), registry=registry)
    host = runner.setup()
    pridss, opts = host.resolve("pet", "pridss")
    before_key, before_fit = host.key("pet", "pridss"), host.fit_key(pridss, opts)
    blur_before = host.key("pet", "blur")
    host.user_options = {"resnet-gender-probe": {"C": "0.01"}}
    assert host.key("pet", "pridss") != before_key
    assert host.fit_key(pridss, opts) != before_fit
    assert host.key("pet", "blur") == blur_before  # plugins without that dependency keep their keys
    # A dependency of a dependency counts too: the probe embeds with faceapi-resnet.
    host.user_options = {"faceapi-resnet": {"batch_size": "7"}}
    assert host.key("pet", "pridss") != before_key
    assert ("verifier", "faceapi-resnet") in host.internal_evaluators("pet", "pridss")
    assert ("classifier", "resnet-gender-probe") in host.internal_evaluators("pet", "pridss")


@pytest.mark.slow
def test_the_context_refuses_undeclared_plugins(small_data, tmp_path):
    from sbpet_bench.api import PluginUnavailable
    from sbpet_bench.pipeline import Run

    registry = load_registry([str(FAULTY)])
    runner = Run(_cfg(small_data, tmp_path / "s", pets=["sneaky"]), registry=registry)
    host = runner.setup()
    plugin, _ = host.get("pet", "sneaky")
    with pytest.raises(PluginUnavailable, match="does not declare it"):
        plugin.context.get_classifier("hog-logreg")
    assert plugin.context.get_verifier("pca-pixels") is not None  # declared: served


@pytest.mark.slow
def test_a_hanging_or_exiting_plugin_fails_alone(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "h", pets=["identity", "hangs", "exits"], plugin_timeout=2.0)
    results = run(cfg, registry=registry)
    status = {c["pet"]: c["status"] for c in results["conditions"] if c["attacker"] == "none"}
    assert status == {"original": "ok", "identity": "ok", "hangs": "failed", "exits": "failed"}
    errors = {e["plugin"]: e for e in results["errors"]}
    assert "did not return within 2 s" in errors["hangs"]["message"] and errors["hangs"]["batch"] == 0
    assert "SystemExit" in errors["exits"]["message"]
    assert (tmp_path / "h" / "results.json").exists()


@pytest.mark.slow
def test_a_failing_evaluator_drops_only_its_own_columns(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "e", pets=["identity", "blur"], classifiers=["hog-logreg", "nan-classifier"])
    results = run(cfg, registry=registry)
    assert all(c["status"] == "ok" for c in results["conditions"])
    for cond in results["conditions"]:
        evaluators = {m["evaluator"] for m in cond["metrics"] if m["metric"] == "auc"}
        assert "hog-logreg" in evaluators and "nan-classifier" not in evaluators
    assert any(e["plugin"] == "nan-classifier" and "NaN" in e["message"] for e in results["errors"])


@pytest.mark.slow
def test_an_attacker_runs_through_the_whole_pipeline(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "a", pets=["identity", "blur"], attackers=["pp-d-nlm"])
    results = run(cfg, registry=registry)
    conds = {(c["pet"], c["attacker"]): c for c in results["conditions"]}
    assert set(conds) == {(p, a) for p in ("original", "identity", "blur") for a in ("none", "pp-d-nlm")}
    assert all(c["status"] == "ok" and c["n_images"] == 24 for c in conds.values())
    assert _metric(results, "blur", "pp-d-nlm", "auc") != _metric(results, "blur", "none", "auc")
    assert any(m["metric"] == "detection_auc" for m in conds[("blur", "pp-d-nlm")]["metrics"]) or \
        any(m["metric"].startswith("detection") for m in conds[("blur", "pp-d-nlm")]["metrics"])


@pytest.mark.slow
def test_diagnostics_are_complete_after_a_cached_rerun(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "g", pets=["diagnosing"], cache_dir=str(tmp_path / "cache"))
    for _ in range(2):
        run(cfg, registry=registry)
        lines = [json.loads(line) for line in (tmp_path / "g" / "diagnostics.jsonl").read_text().splitlines()]
        assert sorted(d["id"] for d in lines) == sorted(d["row_id"] for d in lines)
        assert len(lines) == 24 and len({d["id"] for d in lines}) == 24


@pytest.mark.slow
def test_informed_tier_trains_on_protected_images(small_data, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "i", pets=["identity", "blur"], informed=True, informed_classifiers=["hog-logreg"],
               cache_dir=str(tmp_path / "cache"))
    results = run(cfg, registry=registry)
    blur = next(c for c in results["conditions"] if c["pet"] == "blur" and c["attacker"] == "none")
    evaluators = {m["evaluator"] for m in blur["metrics"] if m["metric"] == "privacy_auc"}
    assert {"hog-logreg", "informed:hog-logreg", "mixed:hog-logreg", "informed:probe:pca-pixels",
            "mixed:probe:pca-pixels"} <= evaluators
    original = next(c for c in results["conditions"] if c["pet"] == "original" and c["attacker"] == "none")
    assert "informed:hog-logreg" in {m["evaluator"] for m in original["metrics"] if m["metric"] == "privacy_auc"}
    assert not any(m["evaluator"].startswith("mixed:") for m in original["metrics"])
    assert results["tiers"]["informed_train_images"] == results["dataset"]["n_train"] > 0
    # The informed classifiers are fitted on protected images: another state than the off-the-shelf one.
    trained = [p for p in results["plugins"] if p["name"] == "hog-logreg" and p.get("trained_on")]
    assert len({p["key"] for p in trained}) == 5  # informed on clean; informed and mixed on identity and on blur
    again = run(cfg, registry=registry)  # resumable like any stage: everything from the cache
    assert again["cache"]["misses"] == 0


@pytest.mark.slow
def test_cross_dataset_run_fits_on_one_data_set_and_evaluates_on_another(small_data, lfw3d, tmp_path, registry):
    cfg = _cfg(small_data, tmp_path / "x", pets=["identity", "blur"], train_data=str(lfw3d))
    results = run(cfg, registry=registry)
    train = results["train_dataset"]
    assert train["path"] == str(lfw3d) and train["source"] == "lfw" and train["n_train"] == 80
    assert train["fingerprint"] != results["dataset"]["fingerprint"]
    assert train["identities_comparable"] is False  # the folder copy has one identity per image
    assert results["dataset"]["n_eval"] == 24 and all(c["status"] == "ok" for c in results["conditions"])
    fitted = next(p for p in results["plugins"] if p["name"] == "hog-logreg")
    same = run(_cfg(small_data, tmp_path / "y", pets=["identity", "blur"]), registry=registry)
    assert fitted["key"] != next(p for p in same["plugins"] if p["name"] == "hog-logreg")["key"]


def test_dry_run_prints_the_plan_and_computes_nothing(small_data, tmp_path, registry):
    cache = tmp_path / "cache"
    cfg = _cfg(small_data, tmp_path / "p", pets=["identity", "blur"], cache_dir=str(cache), dry_run=True)
    plan = run(cfg, registry=registry)
    stages = {s["stage"]: s for s in plan["plan"]}
    assert stages["protect"]["tasks"] == 2 * 3 and stages["protect"]["cached"] == 0  # 2 PETs x 3 shards of 8
    # hog-logreg and pca-pixels fit; the dry run lists their fits as to run and fits neither
    assert {t["what"] for t in plan["tasks"] if t["stage"] == "fit"} == {"hog-logreg", "pca-pixels"}
    assert stages["fit"]["to_run"] == 2 and not (cache / "fit").exists()
    assert not (tmp_path / "p" / "results.json").exists() and not (cache / "images").exists()
    results = run(_cfg(small_data, tmp_path / "p", pets=["identity", "blur"], cache_dir=str(cache)), registry=registry)
    again = run(cfg, registry=registry)
    assert all(s["to_run"] == 0 for s in again["plan"])  # fits too: the dry run's fit keys are the run's
    keys = lambda tasks: sorted((t["stage"], t["what"], t.get("shard"), t["key"]) for t in tasks)
    assert keys(again["tasks"]) == keys(plan["tasks"])
    assert {s["stage"]: s["tasks"] for s in results["plan"]} == {s["stage"]: s["tasks"] for s in plan["plan"]}


def test_the_plan_is_printed_before_the_first_fit_with_an_estimate_that_counts_fits(small_data, tmp_path, registry,
                                                                                    monkeypatch):
    from sbpet_bench.pipeline.host import PluginHost
    from sbpet_bench.progress import Reporter

    events: list = []
    monkeypatch.setattr(Reporter, "plan", lambda self, stages, estimate_s, tasks: events.append(("plan", stages, estimate_s)))
    real_fit = PluginHost._fit
    monkeypatch.setattr(PluginHost, "_fit", lambda self, plugin, entry, *a: (events.append(("fit", entry.name)),
                                                                              real_fit(self, plugin, entry, *a))[1])
    cache = tmp_path / "cache"
    run(_cfg(small_data, tmp_path / "a", pets=["identity"], cache_dir=str(cache)), registry=registry)
    assert events[0][0] == "plan" and [e[0] for e in events[1:]].count("plan") == 0  # once, before every fit
    assert {s["stage"]: s["to_run"] for s in events[0][1]}["fit"] == 2 and events[0][2] is None  # no rates yet
    from sbpet_bench.cache import Cache

    rates = Cache(cache).get_json("timing", "rates")  # what the next plan estimates from (the next run updates them)
    events.clear()
    run(_cfg(small_data, tmp_path / "b", pets=["identity"], cache_dir=str(cache), seed=1), registry=registry)
    (_, stages, estimate), first_fit = events[0], events[1]
    assert first_fit[0] == "fit" and {s["stage"]: s["to_run"] for s in stages}["fit"] == 2  # another seed: refit
    fit_part = sum(rate for key, rate in rates.items() if key.startswith("fit:")) * 2 * 40  # 40 + 40 training faces
    assert {"fit:hog-logreg", "fit:pca-pixels"} <= set(rates) and estimate >= fit_part > 0


def test_rates_are_seconds_per_image_computed_so_the_estimate_does_not_scale_with_conditions(small_data, tmp_path, registry):
    from sbpet_bench.cache import Cache

    cache = tmp_path / "cache"
    results = run(_cfg(small_data, tmp_path / "a", pets=["identity", "blur", "noise"], cache_dir=str(cache)), registry=registry)
    n = results["dataset"]["n_eval"]
    rates, timings = Cache(cache).get_json("timing", "rates"), results["timings"]
    # an evaluator scored the originals and three PETs' images; each PET protected the evaluation set once
    # (results.json rounds timings to 4 decimals)
    assert rates["score:hog-logreg"] * 4 * n == pytest.approx(timings["score:hog-logreg"], abs=1e-4)
    assert rates["pet:blur"] * n == pytest.approx(timings["pet:blur"], abs=1e-4)
    # so a dry run of the same work on a fresh seed estimates about what the first run's stages took
    plan = run(_cfg(small_data, tmp_path / "b", pets=["identity", "blur", "noise"], cache_dir=str(cache), seed=1,
                    dry_run=True), registry=registry)
    stage_seconds = sum(v for k, v in timings.items() if k.startswith(("pet:", "score:", "fit:")))
    assert plan["estimate_s"] == pytest.approx(stage_seconds, rel=0.5)


def test_training_split_without_a_gender_stops_before_any_work(small_data, tmp_path, registry):
    # 80 faces per gender, one per identity: a dev and a test sample of 40 per gender leave nobody to train on
    for dry_run in (False, True):
        cfg = _cfg(small_data, tmp_path / "s", pets=["blur"], per_class=40, cache_dir=str(tmp_path / "cache"), dry_run=dry_run)
        with pytest.raises(ConfigError) as err:
            run(cfg, registry=registry)
        message = str(err.value)
        for fragment in ("the training split has 0 male and 0 female images (--train-per-class 40 asked for)",
                         "--per-class 40", "--pool-per-class"):
            assert fragment in message, message
        assert not (tmp_path / "cache" / "fit").exists() and not (tmp_path / "s" / "results.json").exists()


def test_dry_run_fits_nothing_and_prefit_fits_what_the_run_needs(small_data, tmp_path, registry):
    from sbpet_bench.pipeline.run import prefit

    cache = tmp_path / "cache"
    # pp-a trains an autoencoder and hog-logreg a classifier: a dry run must do neither
    cfg = _cfg(small_data, tmp_path / "p", pets=["blur"], attackers=["pp-a"], cache_dir=str(cache), dry_run=True,
               options={"pp-a.steps": 2})
    plan = run(cfg, registry=registry)
    fits = {t["what"]: t for t in plan["tasks"] if t["stage"] == "fit"}
    assert set(fits) == {"pp-a", "hog-logreg", "pca-pixels"} and not any(t["cached"] for t in fits.values())
    assert not (cache / "fit").exists()
    fitted = prefit(_cfg(small_data, tmp_path / "p", pets=["blur"], attackers=["pp-a"], cache_dir=str(cache),
                         options={"pp-a.steps": 2}), registry=registry)
    assert {f["key"] for f in fitted} == {t["key"] for t in fits.values()}
    assert all(t["cached"] for t in run(cfg, registry=registry)["tasks"] if t["stage"] == "fit")


def test_training_split_is_what_plugins_fit_on_and_never_the_evaluation_people(small_data, tmp_path, registry):
    from sbpet_bench.pipeline import training_split

    cfg = _cfg(small_data, tmp_path / "s", pets=["blur"], cache_dir=str(tmp_path / "cache"))
    part = training_split(cfg, registry=registry)
    assert part.train and part.pool and part.eval_identities
    for records in (part.train, part.pool):
        assert {r.gender for r in records} == {0, 1}  # both genders
        assert not {r.identity for r in records} & part.eval_identities  # no evaluation person
    assert not {r.identity for r in part.train} & {r.identity for r in part.pool}
    groups = part.by_identity("train")
    assert list(groups) == sorted(groups) and sum(map(len, groups.values())) == len(part.train)
    assert all({r.identity for r in recs} == {name} for name, recs in groups.items())
    assert part.face_set(part.train[:3]).all().images.shape[-1] == part.image_size
    # the same split as the run's own: a run with this configuration fits on these very faces
    again = training_split(cfg, registry=registry)
    assert [r.id for r in again.train] == [r.id for r in part.train]
    assert not (tmp_path / "s" / "results.json").exists()  # nothing run
