"""Leaderboard reports: building, writers, HTML escaping, merging runs and `sbpet report`."""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbpet_bench.api import MetricInput
from sbpet_bench.report import MergeError, build_leaderboard, merge_runs, write_reports
from sbpet_metrics.gender import GenderMetric
from sbpet_metrics.pic import PICMetric
from sbpet_metrics.realism import RealismMetric
from sbpet_metrics.verification import VerificationMetric


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_results(run_dir: Path, pets=("blur", "pridss"), attackers=("pp-d",), seed=0, fingerprint="fp-abc", n_mated=200,
                 classifier="clf", verifier="ver", n_samples=3, scale=1.0) -> dict:
    """A realistic results.json (as the pipeline writes it) from the real metric plugins on synthetic scores, plus tiny PNGs."""
    rng = np.random.default_rng(seed)
    n_ids, per_id = 25, 4
    identities = np.repeat([f"Person_{k}" for k in range(n_ids)], per_id)
    genders = np.repeat(np.arange(n_ids) % 2, per_id)
    ids = np.array([f"{p}_{k % per_id:04d}.png" for k, p in enumerate(identities)])
    orig = _unit(np.repeat(rng.normal(size=(n_ids, 16)), per_id, 0) + 0.4 * rng.normal(size=(len(ids), 16)))
    feats_o = rng.normal(size=(len(ids), 8))
    strength = {"original": 0.0, **{p: scale * (0.4 + 0.4 * i) for i, p in enumerate(pets)}}
    conds = [("original", "none")] + [(p, "none") for p in pets] + [(p, a) for p in pets for a in attackers]
    metrics = [GenderMetric(), VerificationMetric({"n_mated": n_mated, "n_nonmated": 1000}), PICMetric(), RealismMetric({"kid_subsets": 5, "kid_subset_size": 50})]
    conditions, cache = [], {}
    for pet, attacker in conds:
        s = strength[pet] * (0.5 if attacker != "none" else 1.0)  # an attack undoes half the protection
        emb = orig if pet == "original" else _unit(orig + s * rng.normal(size=orig.shape))
        p = np.clip(0.5 + (1 - s) * (genders - 0.5) * 0.9 + 0.1 * rng.normal(size=len(ids)), 0, 1)
        cache[(pet, attacker)] = (p, emb)
        data = MetricInput(pet, attacker, genders, identities, ids, {classifier: p}, {classifier: cache[("original", "none")][0]},
                           {verifier: emb}, {verifier: orig}, {"inception-fid": feats_o + s}, {"inception-fid": feats_o}, seed=seed, bootstrap=50)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = [asdict(v) for m in metrics for v in m.compute(data)]
        conditions.append({"pet": pet, "attacker": attacker, "status": "ok", "n_images": len(ids), "n_failed_images": 0, "errors": [], "metrics": values})
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    samples = []
    for k in range(n_samples):
        images, p_male, sim = {}, {}, {}
        for j, (pet, attacker) in enumerate(conds):
            key = f"{pet}/{attacker}"
            name = f"samples/{k}_{j}.png"
            colour = (40 * j % 255, 80 + 20 * k, 200 - 30 * j % 200)
            Image.new("RGB", (12, 12), colour).save(run_dir / name)
            images[key] = name
            p_male[key] = {classifier: float(cache[(pet, attacker)][0][k])}
            if pet != "original":
                sim[key] = {verifier: float(cache[(pet, attacker)][1][k] @ orig[k])}
        samples.append({"id": str(ids[k]), "identity": str(identities[k]), "gender": int(genders[k]), "images": images, "p_male": p_male,
                        "similarity": sim, "diagnostics": {"pridss/none": {"donor": "Other_0001.png", "pic": 0.12}} if "pridss" in pets else {}})
    opts = {m.name: m.opts for m in metrics}
    results = {
        "schema": "sbpet-results/1", "sbpet_version": "0.1.0", "created": "2025-01-01T00:00:00+00:00", "command": ["sbpet", "run"], "git_commit": "abc123",
        "packages": {"numpy": np.__version__},
        "config": {"data": "../shared/data/lfw3d", "source": "lfw3d", "per_class": 50, "seed": seed, "batch_size": 64, "image_size": 90, "device": "cpu",
                   "pets": list(pets), "attackers": list(attackers), "classifiers": [classifier], "verifiers": [verifier], "featurizers": ["inception-fid"],
                   "metrics": [m.name for m in metrics], "options": {}, "bootstrap": 50},
        "dataset": {"path": "../shared/data/lfw3d", "source": "lfw3d", "fingerprint": fingerprint, "n_records": 13233, "n_eval": len(ids), "n_train": 500, "n_pool": 100, "image_size": 90, "skipped": []},
        "plugins": [{"kind": "pet", "name": p, "version": "1", "origin": "sbpet_baselines", "options": {}, "models": {}} for p in pets]
                   + [{"kind": "classifier", "name": classifier, "version": "1", "origin": "test", "options": {}, "models": {}},
                      {"kind": "verifier", "name": verifier, "version": "1", "origin": "test", "options": {}, "models": {}}]
                   + [{"kind": "metric", "name": n, "version": "1", "origin": "sbpet_metrics", "options": o, "models": {}} for n, o in opts.items()],
        "conditions": conditions, "samples": samples, "diagnostics_file": "diagnostics.jsonl", "timings": {"protect": 1.0}, "errors": [], "warnings": ["a warning"],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, allow_nan=True))
    return results


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("run")
    return d, make_results(d)


def test_leaderboard_rows_columns_and_best(run):
    _, results = run
    board = build_leaderboard(results)
    assert [r.label for r in board.rows] == ["original", "blur", "pridss", "blur → pp-d", "pridss → pp-d"]
    keys = [c.key for c in board.columns]
    assert keys[0] == "privacy_auc@clf" and "eer@ver[protected-vs-original]" in keys and "fid@inception-fid" in keys
    col = next(c for c in board.columns if c.key == "privacy_auc@clf")
    assert col.label == "privacy_auc@clf ↓"
    values = {r.label: r.cells["privacy_auc@clf"].value for r in board.rows}
    best = [r.label for r in board.rows if r.cells["privacy_auc@clf"].best]
    assert best == [min((k for k in values if k != "original"), key=values.get)]  # the reference row is never "best"
    assert not any(r.cells["auc@clf[male-positive]"].best for r in board.rows)  # raw AUC has no direction


def test_writers_markdown_csv_json(run, tmp_path):
    run_dir, results = run
    paths = write_reports(results, tmp_path, formats=("md", "csv", "json"), run_dir=run_dir)
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.json"]
    md = paths[0].read_text()
    assert "| condition | N | privacy_auc@clf ↓" in md and "**" in md and "*original*" in md
    rows = list(csv.DictReader(paths[1].open()))
    assert [r["pet"] for r in rows] == ["original", "blur", "pridss", "blur", "pridss"]
    board = build_leaderboard(results)
    assert float(rows[1]["privacy_auc@clf"]) == pytest.approx(board.rows[1].cells["privacy_auc@clf"].value)
    assert float(rows[1]["privacy_auc@clf:ci_low"]) <= float(rows[1]["privacy_auc@clf"])
    assert rows[0]["eer@ver[protected-vs-original]"] == ""  # not measured on the originals
    data = json.loads(paths[2].read_text())  # strict JSON: NaN became null
    assert data["schema"] == "sbpet-leaderboard/1" and len(data["rows"]) == 5
    assert data["rows"][1]["cells"]["fnmr_fmr1e-3@ver[protected-vs-original]"]["value"] is not None
    with pytest.raises(ValueError, match="unknown report format"):
        write_reports(results, tmp_path, formats=("pdf",))


def test_html_is_self_contained_and_has_plots_and_grid(run, tmp_path):
    run_dir, results = run
    (html_path,) = write_reports(results, tmp_path, formats=("html",), run_dir=run_dir)
    html = html_path.read_text()
    assert 'id="leaderboard"' in html and html.count("<tr") > 5
    for title in ("ROC curves, classifier clf", "DET curves, verifier ver", "Privacy-utility"):
        assert title in html
    n_images = html.count('src="data:image/png;base64,')
    assert n_images >= 3 + 3 * 5  # plots + a 3 x 5 image grid
    assert "http://" not in html and "https://" not in html and "src=\"/" not in html
    assert "donor" in html  # PriDSS diagnostics
    assert "Content-Security-Policy" in html


def test_plugin_names_are_escaped_in_html(tmp_path):
    evil = "<script>document.title='pwned'</script>"
    results = make_results(tmp_path / "run", pets=(evil,), attackers=(), classifier="c<b>lf", n_samples=1)
    results["plugins"][0]["options"] = {"x": "<img src=x onerror=alert(1)>"}
    (html_path,) = write_reports(results, tmp_path / "out", formats=("html",), run_dir=tmp_path / "run")
    html = html_path.read_text()
    assert "<script>document" not in html and "<img src=x" not in html and "<b>lf" not in html
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the page's own sorter


def test_html_refuses_images_outside_the_run(tmp_path):
    results = make_results(tmp_path / "run", n_samples=1)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    results["samples"][0]["images"]["original/none"] = "../secret.png"
    (html_path,) = write_reports(results, tmp_path / "out", formats=("html",), run_dir=tmp_path / "run")
    assert 'class="missing"' in html_path.read_text()


def test_merge_refuses_runs_on_different_data_and_says_which_field(tmp_path):
    make_results(tmp_path / "a")
    make_results(tmp_path / "b", fingerprint="fp-other", n_mated=100)
    with pytest.raises(MergeError) as err:
        merge_runs([tmp_path / "a", tmp_path / "b"])
    message = str(err.value)
    assert "dataset.fingerprint" in message and "verification.n_mated" in message and "--force" in message
    merged = merge_runs([tmp_path / "a", tmp_path / "b"], force=True)
    assert any("dataset.fingerprint" in w for w in merged["warnings"])


def test_merge_combines_runs_and_dedupes_identical_conditions(tmp_path):
    make_results(tmp_path / "a", pets=("blur",), attackers=())
    make_results(tmp_path / "a2", pets=("blur",), attackers=())  # the same run again
    make_results(tmp_path / "b", pets=("blur", "pridss"), attackers=(), scale=1.5)  # blur with other settings
    labels = [r.label for r in build_leaderboard(merge_runs([tmp_path / "a", tmp_path / "a2"])).rows]
    assert labels == ["original", "blur"]
    merged = merge_runs([tmp_path / "a", tmp_path / "b"])
    labels = [r.label for r in build_leaderboard(merged).rows]
    assert labels.count("original") == 1 and "pridss" in labels  # same originals: one row
    assert sorted(l for l in labels if l.startswith("blur")) == ["blur [a]", "blur [b]"]  # different numbers: one row per run
    assert merged["config"]["pets"] == ["blur", "pridss"]
    assert any("blur/none differs" in w for w in merged["warnings"])


def test_report_command_writes_everything_and_copies_samples(tmp_path):
    import typer
    from typer.testing import CliRunner

    from sbpet_bench.report.cli import report_command

    make_results(tmp_path / "a", pets=("blur",), attackers=())
    make_results(tmp_path / "b", pets=("pridss",), attackers=(), fingerprint="other")
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)  # more than one command: typer keeps the sub-command name
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and "dataset.fingerprint" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"), "--force"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "rep"
    assert {p.name for p in out.iterdir()} >= {"results.json", "leaderboard.md", "leaderboard.csv", "leaderboard.json", "report.html", "samples"}
    merged = json.loads((out / "results.json").read_text())
    rel = merged["samples"][0]["images"]["original/none"]
    assert not Path(rel).is_absolute() and (out / rel).is_file()
    assert (out / "samples" / "b").is_dir()
    res = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "rep2")])
    assert res.exit_code == 2 and "no results.json" in res.output


def _cond(pet, auc, eer, kid=None, attacker="none"):
    metrics = [{"metric": "privacy_auc", "value": auc, "evaluator": "clf", "protocol": ""},
               {"metric": "eer", "value": eer, "evaluator": "ver", "protocol": "protected-vs-original"}]
    if kid is not None:
        metrics.append({"metric": "kid", "value": kid, "evaluator": "feat", "protocol": ""})
    return {"pet": pet, "attacker": attacker, "status": "ok", "metrics": metrics}


def test_equal_privacy_comparison_interpolates_the_variant_curve():
    from sbpet_bench.report.tradeoff import tradeoff
    from sbpet_bench.report.writers import to_markdown

    results = {"conditions": [
        _cond("original", 0.98, 0.0, 0.0), _cond("blur[sigma=1]", 0.9, 0.02, 1e-3), _cond("blur[sigma=4]", 0.7, 0.2, 3e-3),
        _cond("good", 0.8, 0.05, 5e-4), _cond("leaky", 0.8, 0.15, 5e-4), _cond("blurry", 0.85, 0.03, 4e-3),
        _cond("outside", 0.6, 0.01, 1e-4), _cond("good", 0.95, 0.5, 1e-4, attacker="pp-d")]}
    t = tradeoff(results)
    assert t is not None and t.protocol == "protected-vs-original" and t.realism_metric == "kid"
    assert list(t.curves()) == ["blur"]
    by_pet = {c.pet: c for c in t.comparisons}
    assert set(by_pet) == {"good", "leaky", "blurry"}  # 'outside' is beyond the curve; attacked rows are not PETs
    assert by_pet["good"].curve_eer == pytest.approx(0.11) and by_pet["good"].curve_realism == pytest.approx(2e-3)
    assert by_pet["good"].dominates
    assert not by_pet["leaky"].dominates  # higher EER than blur at the same privacy
    assert by_pet["blurry"].lower_eer and by_pet["blurry"].better_realism is False and not by_pet["blurry"].dominates
    md = to_markdown(results, build_leaderboard(results))
    assert "## At equal privacy" in md and "| good | 0.800 | 0.0500 | blur | 0.110 |" in md


def test_no_equal_privacy_section_without_a_curve(run, tmp_path):
    run_dir, results = run
    write_reports(results, tmp_path / "out", run_dir=run_dir)
    assert "At equal privacy" not in (tmp_path / "out" / "leaderboard.md").read_text()
    assert "No comparison" in (tmp_path / "out" / "report.html").read_text()
