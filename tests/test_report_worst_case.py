"""The worst-case headline (issue 12): columns, marks, held-out EER, every format, older runs, and --privacy-by."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from sbpet_bench.api import TIERS
from sbpet_bench.report import build_leaderboard, write_reports
from sbpet_bench.report.tradeoff import describe, tradeoff
from test_report import make_table2_results

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "reports" / "lfw3d-example"


@pytest.fixture(scope="module")
def table2(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("table2")
    return run, make_table2_results(run, n_samples=1)


def _metric(results: dict, pet: str, attacker: str, metric: str, **match) -> dict:
    cond = next(c for c in results["conditions"] if (c["pet"], c["attacker"]) == (pet, attacker))
    return next(m for m in cond["metrics"] if m["metric"] == metric and all(m.get(k) == v for k, v in match.items()))


def test_headline_starts_with_the_worst_case_then_tiers_classifiers_and_identity(table2):
    _, results = table2
    board = build_leaderboard(results)
    head = board.headline
    assert head[0] == "worst_privacy_auc"
    tiers = [k for k in head if k.startswith("tier_privacy_auc")]
    assert tiers == [f"tier_privacy_auc[{t}]" for t in TIERS]  # weakest attacker knowledge first
    assert [k for k in head if k.startswith("privacy_auc@")] == [
        "privacy_auc@faceapi-gender", "privacy_auc@hog-logreg", "privacy_auc@informed:cnn-gender", "privacy_auc@mixed:cnn-gender"]
    assert head.index("heldout_eer") < head.index("worst_eer") < head.index("eer@arcface-heldout[protected-vs-original]")
    ver = head.index("eer@faceapi-resnet[protected-vs-original]")  # FNMR at the clean threshold beside the recalibrated EER
    assert head[ver + 1:ver + 3] == ["fnmr_at_clean_threshold_fmr1e-2@faceapi-resnet[protected-vs-original]",
                                     "fnmr_at_clean_threshold_fmr1e-3@faceapi-resnet[protected-vs-original]"]
    assert "identity-space shift" in board.column("identity_kid@faceapi-resnet").label
    assert {"fid@inception-fid", "kid@inception-fid"} <= set(head)
    assert [c.key for c in board.columns][:len(tiers) + 1] == head[:len(tiers) + 1]  # the full table starts the same way

    # one cell per condition, whoever reached it: value [CI] classifier
    worst = _metric(results, "pridss", "pp-d", "worst_privacy_auc")
    row = next(r for r in board.rows if r.label == "pridss → pp-d")
    cell = row.cells["worst_privacy_auc"]
    assert cell.value == pytest.approx(worst["value"]) and cell.by == worst["evaluator"]
    assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, [01]\.\d{2,3}\]†? \S+", cell.text(interval=True, with_by=True))
    assert cell.text(interval=True, with_by=True).endswith(worst["evaluator"])


def test_chance_and_in_sample_marks_and_in_sample_never_wins(table2):
    _, results = table2
    board = build_leaderboard(results)
    pridss = next(r for r in board.rows if r.label == "pridss")
    hog = pridss.cells["privacy_auc@hog-logreg"]
    assert _metric(results, "pridss", "none", "privacy_auc", evaluator="hog-logreg")["extra"]["distinguishable"] is False
    assert hog.text().startswith("≈") and not hog.in_sample  # chance level, scored by a classifier PriDSS does not use
    assert pridss.cells["privacy_auc@faceapi-gender"].text().endswith("†")  # PriDSS uses faceapi-gender internally
    assert pridss.cells["eer@faceapi-resnet[protected-vs-original]"].in_sample
    assert not pridss.cells["eer@arcface-heldout[protected-vs-original]"].in_sample
    blur = next(r for r in board.rows if r.label == "blur[sigma=3]")
    assert not blur.cells["eer@faceapi-resnet[protected-vs-original]"].in_sample  # in-sample only for the PET that uses it
    assert any(text.startswith("≈") for text in board.legend) and any(text.startswith("†") for text in board.legend)


def test_an_in_sample_value_never_wins_its_column():
    def cond(pet, eer, in_sample):
        return {"pet": pet, "attacker": "none", "status": "ok", "metrics": [
            {"metric": "eer", "value": eer, "evaluator": "ver", "protocol": "protected-vs-original", "higher_is_better": False,
             "extra": {"in_sample": [pet]} if in_sample else {}}]}

    board = build_leaderboard({"conditions": [cond("own", 0.01, True), cond("a", 0.05, False), cond("b", 0.2, False)]})
    best = {r.pet: r.cells["eer@ver[protected-vs-original]"].best for r in board.rows}
    assert best == {"own": False, "a": True, "b": False}  # "own" has the lowest EER, but scored by its own verifier


def _tiny(eers: dict[str, float], in_sample: str | None, given=None) -> dict:
    metrics = [{"metric": "worst_privacy_auc", "value": 0.7, "evaluator": "clf", "higher_is_better": False, "extra": {}}]
    for ver, value in eers.items():
        extra = {"in_sample": ["p"]} if ver == in_sample else {}
        metrics.append({"metric": "eer", "value": value, "evaluator": ver, "protocol": "protected-vs-original", "higher_is_better": False,
                        "ci_low": value - 0.01, "ci_high": value + 0.01, "extra": extra})
    worst = max(eers, key=eers.get)
    metrics.append({"metric": "worst_eer", "value": eers[worst], "evaluator": worst, "protocol": "protected-vs-original",
                    "higher_is_better": False, "extra": {"verifier": worst, **({"heldout_eer": given} if given is not None else {})}})
    return {"conditions": [{"pet": "p", "attacker": "none", "status": "ok", "metrics": metrics}]}


def test_heldout_eer_leaves_out_the_verifiers_the_pet_uses():
    board = build_leaderboard(_tiny({"own": 0.3, "other": 0.1}, in_sample="own"))
    row = board.rows[0]
    assert row.cells["worst_eer"].value == 0.3 and row.cells["worst_eer"].in_sample  # reached by the PET's own verifier
    assert row.cells["heldout_eer"].value == 0.1 and row.cells["heldout_eer"].by == "other" and not row.cells["heldout_eer"].in_sample
    assert board.headline.index("heldout_eer") < board.headline.index("worst_eer")
    given = build_leaderboard(_tiny({"own": 0.3, "other": 0.1}, "own", {"value": 0.12, "ci_low": 0.1, "ci_high": 0.14, "verifier": "other"}))
    assert given.rows[0].cells["heldout_eer"].value == 0.12  # the metric's own figure wins over the report's
    assert "heldout_eer" not in [c.key for c in build_leaderboard(_tiny({"a": 0.3, "b": 0.1}, None)).columns]  # nothing in-sample


def test_every_format_carries_the_headline(table2, tmp_path):
    run, results = table2
    md, csv_path, js, html_path = write_reports(results, tmp_path, run_dir=run)
    board = build_leaderboard(results)
    worst = next(r for r in board.rows if r.label == "noise").cells["worst_privacy_auc"]
    text = worst.text(interval=True, with_by=True)

    md_text = md.read_text()
    assert "## Headline: the worst case" in md_text and "## All metrics" in md_text
    headline_row = next(line for line in md_text.splitlines() if line.startswith("| noise |"))
    assert text in headline_row and "worst privacy AUC ↓" in md_text and "† in-sample" in md_text

    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    noise = next(r for r in rows if (r["pet"], r["attacker"]) == ("noise", "none"))
    assert float(noise["worst_privacy_auc"]) == pytest.approx(worst.value) and noise["worst_privacy_auc:by"] == worst.by
    pridss = next(r for r in rows if (r["pet"], r["attacker"]) == ("pridss", "none"))
    assert pridss["privacy_auc@hog-logreg:distinguishable"] == "false" and pridss["privacy_auc@faceapi-gender:in_sample"] == "true"
    assert pridss["fnmr_at_clean_threshold_fmr1e-3@faceapi-resnet[protected-vs-original]"] != ""

    data = json.loads(js.read_text())
    assert data["headline"][0] == "worst_privacy_auc" and data["legend"]
    cell = next(r for r in data["rows"] if r["pet"] == "noise" and r["attacker"] == "none")["cells"]["worst_privacy_auc"]
    assert cell["by"] == worst.by and cell["value"] == pytest.approx(worst.value)

    html = html_path.read_text()
    assert 'id="headline"' in html and 'id="leaderboard"' in html and "≈" in html and "† in-sample" in html
    assert f">{worst.text(interval=True)}<span class=\"by\">{worst.by}</span>" in html


def test_published_run_without_the_new_metrics_keeps_todays_columns(tmp_path):
    results = json.loads((PUBLISHED / "results.json").read_text())
    published = json.loads((PUBLISHED / "leaderboard.json").read_text())
    board = build_leaderboard(results)
    assert board.headline == [] and board.legend == []
    assert [c.key for c in board.columns] == [c["key"] for c in published["columns"]]
    mine = board.to_dict()["rows"]
    for old, new in zip(published["rows"], mine):
        assert {k: v["value"] for k, v in old["cells"].items()} == {k: v["value"] for k, v in new["cells"].items()}
    md, _, _, html = write_reports(results, tmp_path, run_dir=tmp_path)
    assert "Headline" not in md.read_text() and 'id="headline"' not in html.read_text() and 'id="leaderboard"' in html.read_text()
    assert "kid@faceapi-resnet (identity-space shift)" in md.read_text()  # a verifier's KID is named for what it is


def _cond(pet, worst, clf_auc, eer, attacker="none"):
    return {"pet": pet, "attacker": attacker, "status": "ok", "metrics": [
        {"metric": "worst_privacy_auc", "value": worst, "evaluator": "informed:x", "protocol": "", "higher_is_better": False},
        {"metric": "privacy_auc", "value": clf_auc, "evaluator": "clf", "protocol": "", "higher_is_better": False},
        {"metric": "eer", "value": eer, "evaluator": "ver", "protocol": "protected-vs-original", "higher_is_better": False}]}


def test_tradeoff_and_plot_use_the_worst_case_unless_privacy_by_names_a_classifier(tmp_path):
    from sbpet_bench.report.plots import privacy_utility_figures
    from sbpet_bench.report.writers import to_markdown

    results = {"config": {}, "conditions": [_cond("blur[sigma=1]", 0.95, 0.9, 0.02), _cond("blur[sigma=4]", 0.85, 0.7, 0.2),
                                            _cond("pet", 0.9, 0.65, 0.05)]}
    worst = tradeoff(results)
    assert worst.privacy_name == "worst_privacy_auc" and {p.pet: p.privacy_auc for p in worst.points}["pet"] == 0.9
    assert [c.curve_eer for c in worst.comparisons] == [pytest.approx(0.11)]  # 0.9 lies half-way on the worst-case curve
    by_clf = tradeoff(results, privacy_by="clf")
    assert by_clf.privacy_name == "privacy_auc@clf" and by_clf.comparisons == ()  # 0.65 is outside the clf curve [0.7, 0.9]
    assert "worst-case privacy AUC" in privacy_utility_figures(results)[0][0]
    assert "privacy AUC clf" in privacy_utility_figures(results, privacy_by="clf")[0][0]
    assert "privacy AUC (worst_privacy_auc)" in to_markdown(results)

    results["config"]["privacy_by"] = "clf"  # the run's own choice is the default
    (md,) = write_reports(results, tmp_path, formats=("md",))
    assert "At equal privacy" not in md.read_text()
    with pytest.raises(ValueError, match=r"--privacy-by 'nope'.*\['clf'\]"):
        write_reports(results, tmp_path, formats=("md",), privacy_by="nope")


def test_report_command_privacy_by(tmp_path):
    import typer
    from typer.testing import CliRunner

    from sbpet_bench.report.cli import report_command

    make_table2_results(tmp_path / "run", n_samples=0, pets={"blur[sigma=1]": (0.93, 0.95, 0.02), "pridss": (0.55, 0.82, 0.03)})
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "bad"), "--privacy-by", "nope"])
    assert res.exit_code == 2 and "--privacy-by 'nope'" in res.output and "faceapi-gender" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--privacy-by", "hog-logreg", "--no-images"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["config"]["privacy_by"] == "hog-logreg"
    assert "privacy AUC hog-logreg" in (tmp_path / "rep" / "report.html").read_text()


def test_the_metric_plugins_output_feeds_the_headline(tmp_path):
    """The names the metric plugins write (worst-case, tiers, worst_eer with held-out verifiers, in-sample marks) are
    the ones the report reads: a tiered run of the real plugins on synthetic scores."""
    from test_report import make_results

    results = make_results(tmp_path, pets=("blur", "pridss"), attackers=("pp-d",), n_samples=0, tiers=True)
    board = build_leaderboard(results)
    head = board.headline
    assert head[:4] == ["worst_privacy_auc", "tier_privacy_auc[off-the-shelf]", "tier_privacy_auc[recovery]", "tier_privacy_auc[informed]"]
    assert "privacy_auc@informed:clf" in head and head.index("heldout_eer") < head.index("worst_eer")
    assert "fnmr_at_clean_threshold_fmr1e-2@ver[protected-vs-original]" in head
    rows = {r.label: r for r in board.rows}
    worst = rows["blur"].cells["worst_privacy_auc"]
    assert worst.by in ("clf", "informed:clf", "pp-d→clf") and worst.ci_low <= worst.value <= worst.ci_high
    assert rows["pridss"].cells["eer@ver[protected-vs-original]"].in_sample
    assert not rows["blur"].cells["eer@ver[protected-vs-original]"].in_sample
    assert rows["pridss"].cells["heldout_eer"].by == "ver-heldout"
    assert "≈" not in rows["original"].cells["worst_privacy_auc"].text()  # the originals' gender is plain to see


def test_equal_privacy_is_read_on_a_held_out_verifier_when_the_run_has_one():
    def cond(pet, worst, own_eer, held_eer):
        c = _cond(pet, worst, worst, own_eer)
        c["metrics"][2]["evaluator"] = "a-internal"  # sorts first: the old choice
        c["metrics"] += [{"metric": "eer", "value": held_eer, "evaluator": "b-held", "protocol": "protected-vs-original",
                          "higher_is_better": False},
                         {"metric": "worst_eer", "value": max(own_eer, held_eer), "evaluator": "a-internal", "protocol": "",
                          "higher_is_better": False, "extra": {"heldout_verifiers": ["b-held"], "in_sample_verifiers": ["a-internal"]}}]
        return c

    results = {"config": {}, "conditions": [cond("blur[sigma=1]", 0.95, 0.02, 0.04), cond("blur[sigma=4]", 0.85, 0.2, 0.4),
                                            cond("pet", 0.9, 0.01, 0.30)]}
    t = tradeoff(results)
    assert t.verifier == "b-held" and "eer@b-held[protected-vs-original] (held out" in describe(t)
    (c,) = t.comparisons
    assert (c.eer, c.curve_eer) == (0.30, pytest.approx(0.22)) and not c.dominates  # in-sample it would have "won"
    results["conditions"] = [{**c, "metrics": [m for m in c["metrics"] if m["metric"] != "worst_eer"]} for c in results["conditions"]]
    assert tradeoff(results).verifier == "a-internal"  # no held-out information: the first verifier, as before
