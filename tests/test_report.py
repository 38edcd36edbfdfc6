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
from sbpet_bench.report.writers import json_safe
from sbpet_bench.testing import make_context
from sbpet_metrics.gender import GenderMetric
from sbpet_metrics.pic import PICMetric
from sbpet_metrics.realism import RealismMetric
from sbpet_metrics.verification import VerificationMetric


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_results(run_dir: Path, pets=("blur", "pridss"), attackers=("pp-d",), seed=0, fingerprint="fp-abc", n_mated=200,
                 classifier="clf", verifier="ver", n_samples=3, scale=1.0, tiers=False) -> dict:
    """A realistic results.json (as the pipeline writes it) from the real metric plugins on synthetic scores, plus tiny PNGs.

    With ``tiers``: an informed classifier, a recovery score per attacker, a second (held-out) verifier, PriDSS
    using ``verifier`` internally, and the worst-case metric, as a tiered run feeds them."""
    rng = np.random.default_rng(seed)
    n_ids, per_id = 25, 4
    identities = np.repeat([f"Person_{k}" for k in range(n_ids)], per_id)
    genders = np.repeat(np.arange(n_ids) % 2, per_id)
    ids = np.array([f"{p}_{k % per_id:04d}.png" for k, p in enumerate(identities)])
    orig = _unit(np.repeat(rng.normal(size=(n_ids, 16)), per_id, 0) + 0.4 * rng.normal(size=(len(ids), 16)))
    feats_o = rng.normal(size=(len(ids), 8))
    strength = {"original": 0.0, **{p: scale * (0.4 + 0.4 * i) for i, p in enumerate(pets)}}
    conds = [("original", "none")] + [(p, "none") for p in pets] + [(p, a) for p in pets for a in attackers]
    ctx = make_context()
    metrics = [GenderMetric({}, ctx), VerificationMetric({"n_mated": n_mated, "n_nonmated": 1000}, ctx), PICMetric({}, ctx),
               RealismMetric({"kid_subsets": 5, "kid_subset_size": 50}, ctx)]
    if tiers:
        from sbpet_metrics.worst_case import WorstCaseMetric

        metrics.insert(1, WorstCaseMetric({"permutations": 200}, ctx))
    conditions, cache = [], {}
    for pet, attacker in conds:
        s = strength[pet] * (0.5 if attacker != "none" else 1.0)  # an attack undoes half the protection
        emb = orig if pet == "original" else _unit(orig + s * rng.normal(size=orig.shape))
        p = np.clip(0.5 + (1 - s) * (genders - 0.5) * 0.9 + 0.1 * rng.normal(size=len(ids)), 0, 1)
        cache[(pet, attacker)] = (p, emb)
        data = MetricInput(pet, attacker, genders, identities, ids, {classifier: p}, {classifier: cache[("original", "none")][0]},
                           {verifier: emb}, {verifier: orig}, {"inception-fid": feats_o + s}, {"inception-fid": feats_o}, seed=seed, bootstrap=50)
        if tiers:  # the informed attacker sees through half of the protection; the held-out verifier is a noisier copy
            informed = np.clip(0.5 + (1 - s / 2) * (genders - 0.5) * 0.9 + 0.1 * rng.normal(size=len(ids)), 0, 1)
            data.p_male[f"informed:{classifier}"] = informed
            data.p_male_original[f"informed:{classifier}"] = cache[("original", "none")][0]
            data.classifier_tiers = {f"informed:{classifier}": "informed"}
            data.embeddings[f"{verifier}-heldout"] = _unit(emb + 0.3 * rng.normal(size=emb.shape))
            data.embeddings_original[f"{verifier}-heldout"] = orig
            if attacker == "none" and pet != "original":
                data.p_male_recovered = {a: {classifier: np.clip(p + 0.5 * (cache[("original", "none")][0] - p), 0, 1)} for a in attackers}
            data.in_sample = {verifier: ["pridss"]} if "pridss" in pets else {}
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
    (run_dir / "results.json").write_text(json.dumps(json_safe(results)))  # strict JSON, as the pipeline writes it
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


def test_merge_refuses_runs_on_the_same_data_with_another_protocol_and_says_which_field(tmp_path):
    make_results(tmp_path / "a")
    make_results(tmp_path / "b", n_mated=100)  # same data set (fingerprint), other pair count
    with pytest.raises(MergeError) as err:
        merge_runs([tmp_path / "a", tmp_path / "b"])
    message = str(err.value)
    assert "verification.n_mated" in message and "dataset.fingerprint" not in message and "--force" in message
    merged = merge_runs([tmp_path / "a", tmp_path / "b"], force=True)
    assert any("verification.n_mated" in w for w in merged["warnings"]) and "datasets" not in merged


def test_merge_puts_each_data_set_in_its_own_section(tmp_path):
    from sbpet_bench.report.merge import sections

    make_results(tmp_path / "a", pets=("blur",), attackers=())
    make_results(tmp_path / "b", pets=("pridss",), attackers=(), fingerprint="fp-other", n_mated=100)  # other data: its protocol may differ
    copy = make_results(tmp_path / "c", pets=("pridss",), attackers=())  # a byte-identical copy elsewhere: the same fingerprint
    copy["dataset"]["path"] = "/elsewhere/lfw3d-copy"
    (tmp_path / "c" / "results.json").write_text(json.dumps(json_safe(copy)))
    merged = merge_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    parts = sections(merged)
    assert [p["dataset"]["fingerprint"] for p in parts] == ["fp-abc", "fp-other"]
    assert [[r.label for r in build_leaderboard(p).rows] for p in parts] == [["original", "blur", "pridss"], ["original", "pridss"]]
    assert merged["conditions"] == [] and [r["label"] for r in merged["runs"]] == ["a", "b", "c"]
    paths = write_reports(merged, tmp_path / "out", run_dir=tmp_path / "out")
    md = paths[0].read_text()
    assert md.count("## Data set ") == 2 and "fp-other" in md
    rows = list(csv.DictReader(paths[1].open()))
    assert [r["dataset"] for r in rows] == ["../shared/data/lfw3d (fp-abc)"] * 3 + ["../shared/data/lfw3d (fp-other)"] * 2
    data = json.loads(paths[2].read_text())
    assert [len(d["rows"]) for d in data["datasets"]] == [3, 2]
    html = paths[3].read_text()
    assert 'id="leaderboard"' in html and 'id="leaderboard-2"' in html and html.count('<section id="dataset-') == 2
    (tmp_path / "out" / "results.json").write_text(json.dumps(json_safe(merged)))  # as `sbpet report` publishes it
    again = merge_runs([tmp_path / "out"])  # a merged report merges again, section by section
    assert [p["dataset"]["fingerprint"] for p in sections(again)] == ["fp-abc", "fp-other"]


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
    make_results(tmp_path / "b", pets=("pridss",), attackers=(), n_mated=100)
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)  # more than one command: typer keeps the sub-command name
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and "verification.n_mated" in res.output and not (tmp_path / "rep").exists()
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"), "--force"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "rep"
    assert {p.name for p in out.iterdir()} >= {"results.json", "leaderboard.md", "leaderboard.csv", "leaderboard.json", "report.html", "samples"}
    merged = json.loads((out / "results.json").read_text())
    rel = merged["samples"][0]["images"]["original/none"]
    assert not Path(rel).is_absolute() and (out / rel).is_file()
    assert (out / "samples" / "b").is_dir()
    res = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "rep2")])
    assert res.exit_code == 2 and "missing/results.json: no such file" in res.output


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


# --- A Table-2-like run with the attacker tiers (synthetic scores; no metric plugin involved) -------------------------

TABLE2_PETS = {  # PET -> (off-the-shelf AUC, informed AUC, EER protected-vs-original): the rough shape of Table 2
    "identity": (0.97, 0.97, 0.0), "blur[sigma=1]": (0.93, 0.95, 0.02), "blur[sigma=3]": (0.78, 0.9, 0.18),
    "pixelate": (0.82, 0.91, 0.3), "noise": (0.86, 0.92, 0.12), "pridss": (0.55, 0.82, 0.03), "privacynet": (0.66, 0.85, 0.2)}
TABLE2_ATTACKERS = ("pp-a", "pp-d", "pp-i")
TABLE2_CLASSIFIERS = {"faceapi-gender": "off-the-shelf", "hog-logreg": "off-the-shelf", "informed:cnn-gender": "informed",
                      "mixed:cnn-gender": "mixed"}
TABLE2_VERIFIERS = ("faceapi-resnet", "arcface-heldout")  # PriDSS uses faceapi-resnet and faceapi-gender internally
TABLE2_IN_SAMPLE = {"faceapi-resnet": ["pridss"], "faceapi-gender": ["pridss"]}


def _scores_for_auc(rng, auc: float, n: int):
    """Male/female scores whose ROC AUC is about ``auc`` (equal-variance normals)."""
    from scipy.stats import norm

    d = np.sqrt(2) * norm.ppf(np.clip(auc, 0.5, 0.999))
    y = np.repeat([1, 0], n // 2)
    return y, rng.normal(size=n) + d * y


def _auc_values(rng, clf: str, tier: str, auc_target: float, n: int, in_sample: list[str]) -> tuple[list[dict], float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = _scores_for_auc(rng, auc_target, n)
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    keep = np.unique(np.linspace(0, len(fpr) - 1, 80).astype(int))
    half = 1.96 * np.sqrt(auc * (1 - auc) / (n / 4)) + 0.005
    priv = max(auc, 1 - auc)
    p_value = float(np.exp(-((priv - 0.5) / max(half / 1.96, 1e-6)) ** 2 / 2))  # a stand-in for the permutation test
    extra = {"in_sample": in_sample} if in_sample else {}
    common = {"evaluator": clf, "n": n}
    return [
        {"metric": "auc", "value": auc, "higher_is_better": None, "ci_low": auc - half, "ci_high": auc + half, "protocol": "male-positive",
         "convention": "ROC AUC of P(male), male positive.", "extra": {"roc": {"x": fpr[keep].tolist(), "y": tpr[keep].tolist()}, **extra}, **common},
        {"metric": "privacy_auc", "value": priv, "higher_is_better": False, "ci_low": max(0.5, priv - half), "ci_high": min(1.0, priv + half),
         "protocol": "", "convention": "max(AUC, 1-AUC); 0.5 is perfect privacy.",
         "extra": {"tier": tier, "p_value": p_value, "distinguishable": p_value < 0.05, "raw_auc": auc, **extra}, **common},
    ], priv


def _det(rng, eer_target: float, n_mated: int = 150, n_non: int = 1000):
    from scipy.stats import norm

    d = 2 * norm.ppf(1 - np.clip(eer_target, 1e-3, 0.499))
    mated, non = rng.normal(d, 1, n_mated), rng.normal(0, 1, n_non)
    thr = np.quantile(np.concatenate([mated, non]), np.linspace(0, 1, 150))
    fmr, fnmr = (non[None] >= thr[:, None]).mean(1), (mated[None] < thr[:, None]).mean(1)
    k = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[k] + fnmr[k]) / 2), fmr.tolist(), fnmr.tolist(), mated, non


def make_table2_results(run_dir: Path | None = None, seed: int = 0, fingerprint: str = "fp-table2", n_samples: int = 2,
                        pets: dict | None = None) -> dict:
    """A results.json like `sbpet run benchmarks/privacyprober_table2.toml` with tiers: 7 PETs x (none + 3 attackers)
    plus the originals (32 conditions); every metric name the tiered metrics write, numbers from synthetic scores."""
    rng = np.random.default_rng(seed)
    pets = TABLE2_PETS if pets is None else pets
    n = 400
    conds = [("original", a) for a in ("none", *TABLE2_ATTACKERS)] + [(p, "none") for p in pets] + [(p, a) for p in pets for a in TABLE2_ATTACKERS]
    conditions = []
    for pet, attacker in conds:
        off, informed, eer_main = (0.975, 0.975, 0.0) if pet == "original" else pets[pet]
        if attacker != "none":  # recovery undoes part of the protection and moves identity further
            off, informed, eer_main = off + 0.5 * (0.975 - off), informed, min(0.45, eer_main + 0.1)
        metrics, by_tier = [], {}
        for clf, tier in TABLE2_CLASSIFIERS.items():
            target = off if tier == "off-the-shelf" else informed - (0.03 if tier == "mixed" else 0)
            target = 0.5 if (pet == "pridss" and clf == "hog-logreg") else target + rng.normal(0, 0.01)
            values, priv = _auc_values(rng, clf, tier, target, n, [pet] if pet in TABLE2_IN_SAMPLE.get(clf, []) else [])
            metrics += values
            by_tier.setdefault(tier, []).append((priv, clf, values[1]))
        if attacker == "none" and pet != "original":  # recovery tier: this PET's images after each attack
            for a in TABLE2_ATTACKERS:
                priv = min(0.99, off + 0.5 * (0.975 - off) + rng.normal(0, 0.01))
                by_tier.setdefault("recovery", []).append((priv, f"{a}→faceapi-gender", {"ci_low": priv - 0.03, "ci_high": min(1.0, priv + 0.03)}))
        for tier, entries in by_tier.items():
            priv, who, m = max(entries, key=lambda t: t[0])
            metrics.append({"metric": "tier_privacy_auc", "value": priv, "evaluator": who, "protocol": tier, "higher_is_better": False,
                            "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": n, "convention": "Largest privacy AUC within the tier.",
                            "extra": {"tier": tier, "classifier": who}})
        tier, (priv, who, m) = max(((t, max(e, key=lambda x: x[0])) for t, e in by_tier.items()), key=lambda te: te[1][0])
        metrics.append({"metric": "worst_privacy_auc", "value": priv, "evaluator": who, "protocol": "", "higher_is_better": False,
                        "ci_low": m["ci_low"] - 0.005, "ci_high": m["ci_high"] + 0.005, "n": n,
                        "convention": "Largest privacy AUC over every classifier and tier; CI from shared bootstrap resamples.",
                        "extra": {"tier": tier, "classifier": who.split("→")[-1], "attacker": who.split("→")[0] if "→" in who else "none"}})
        eers = {}
        for ver in TABLE2_VERIFIERS:
            in_sample = {"in_sample": [pet]} if pet in TABLE2_IN_SAMPLE.get(ver, []) else {}
            shift = -0.02 if in_sample else 0.0  # the PET's own verifier is fooled less: in-sample looks better
            protocols = {"protected-vs-other-image": eer_main * 0.8 + 0.08, "protected-vs-other-image/same-gender": eer_main * 0.8 + 0.1}
            if pet != "original":
                protocols["protected-vs-original"] = eer_main
            clean_thr = {0.01: 0.62, 0.001: 0.7}
            for protocol, target in protocols.items():
                eer, fmr, fnmr, mated, non = _det(rng, max(0.0, target + shift + (0.04 if ver == "arcface-heldout" else 0)))
                eers[(ver, protocol)] = eer
                ci = {"ci_low": max(0.0, eer - 0.02), "ci_high": eer + 0.02, "n": len(mated) + len(non)}
                metrics.append({"metric": "eer", "value": eer, "evaluator": ver, "protocol": protocol, "higher_is_better": False,
                                "convention": "EER of cosine similarity.", "extra": {"det": {"fmr": fmr, "fnmr": fnmr}, **in_sample}, **ci})
                for fmr_target in (0.01, 0.001):
                    tag = {0.01: "1e-2", 0.001: "1e-3"}[fmr_target]
                    fnmr_at = float(np.mean(mated < np.quantile(non, 1 - fmr_target)))
                    clean = min(1.0, fnmr_at + 0.1 * (pet != "original"))
                    for name, value, extra in ((f"fnmr_fmr{tag}", fnmr_at, {"fmr_target": fmr_target}),
                                               ("fnmr_at_clean_threshold", clean, {"fmr": fmr_target, "threshold": clean_thr[fmr_target]})):
                        metrics.append({"metric": name, "value": value, "evaluator": ver, "protocol": protocol, "higher_is_better": False,
                                        "ci_low": max(0.0, value - 0.05), "ci_high": min(1.0, value + 0.05), "n": len(mated),
                                        "convention": "FNMR at FMR, threshold recalibrated on this condition." if name.startswith("fnmr_fmr")
                                        else "FNMR at the originals' threshold for this FMR, applied unchanged.", "extra": {**extra, **in_sample}})
                for gender in ("male", "female"):
                    g_eer = max(0.0, eer + (0.01 if gender == "female" else -0.01))
                    metrics.append({"metric": "eer", "value": g_eer, "evaluator": ver, "protocol": f"{protocol}@{gender}",
                                    "higher_is_better": False, "convention": "EER of one probe gender.",
                                    "extra": {"probe_gender": gender, **in_sample}, **ci})
            metrics.append({"metric": "identity_kid", "value": 0.002 + 0.05 * eer_main, "evaluator": ver, "protocol": "", "higher_is_better": False,
                            "ci_low": 0.001, "ci_high": 0.003 + 0.05 * eer_main, "n": n, "convention": "KID on face-verifier embeddings: identity-space shift.",
                            "extra": dict(in_sample)})
        main = "protected-vs-other-image" if pet == "original" else "protected-vs-original"
        worst_ver = max(TABLE2_VERIFIERS, key=lambda v: eers[(v, main)])
        metrics.append({"metric": "worst_eer", "value": eers[(worst_ver, main)], "evaluator": worst_ver, "protocol": main, "higher_is_better": False,
                        "ci_low": max(0.0, eers[(worst_ver, main)] - 0.02), "ci_high": eers[(worst_ver, main)] + 0.02,
                        "convention": "Largest EER over the verifiers.", "extra": {"verifier": worst_ver}})
        fid = 0.0 if pet in ("original", "identity") and attacker == "none" else 5 + 40 * off * max(eer_main, 0.05) + rng.uniform(0, 5)
        metrics += [{"metric": "fid", "value": fid, "evaluator": "inception-fid", "protocol": "", "higher_is_better": False,
                     "convention": "FID (Inception pool features).", "extra": {}},
                    {"metric": "kid", "value": fid / 5000, "evaluator": "inception-fid", "protocol": "", "higher_is_better": False,
                     "ci_low": fid / 6000, "ci_high": fid / 4000, "convention": "KID (Inception pool features).", "extra": {}}]
        conditions.append({"pet": pet, "attacker": attacker, "status": "ok", "n_images": n, "n_failed_images": 0, "errors": [], "metrics": metrics})
    samples = []
    if run_dir is not None:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        for k in range(n_samples):
            images = {}
            for j, (pet, attacker) in enumerate(conds):
                name = f"samples/{k}_{j}.png"
                Image.new("RGB", (12, 12), (37 * j % 255, 90 + 40 * k, 200 - 23 * j % 200)).save(run_dir / name)
                images[f"{pet}/{attacker}"] = name
            samples.append({"id": f"Person_{k}_0001.png", "identity": f"Person_{k}", "gender": k % 2, "images": images,
                            "p_male": {f"{p}/{a}": {"faceapi-gender": 0.5} for p, a in conds}, "similarity": {}, "diagnostics": {}})
    results = {
        "schema": "sbpet-results/1", "sbpet_version": "0.1.0", "created": "2025-01-01T00:00:00+00:00", "command": ["sbpet", "run"], "git_commit": "abc123",
        "packages": {}, "config": {"data": "../shared/data/lfw3d", "per_class": 200, "seed": seed, "image_size": 90, "device": "cpu", "bootstrap": 1000,
                                   "pets": list(pets), "attackers": list(TABLE2_ATTACKERS), "classifiers": ["faceapi-gender", "hog-logreg"],
                                   "verifiers": list(TABLE2_VERIFIERS), "featurizers": ["inception-fid"], "metrics": ["gender", "verification", "realism"]},
        "dataset": {"path": "../shared/data/lfw3d", "source": "lfw", "fingerprint": fingerprint, "n_records": 13233, "n_eval": n, "n_train": 2000,
                    "n_pool": 1000, "image_size": 90, "skipped": []},
        "plugins": [{"kind": "pet", "name": p, "version": "1", "origin": "test", "options": {}, "models": {}} for p in pets],
        "conditions": conditions, "samples": samples, "errors": [], "warnings": [],
    }
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps(results))
    return results
