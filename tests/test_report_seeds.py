"""Spread over seeds: PET variants that differ only in their seed option, grouped with per-seed values, mean, min, max, spread."""

from __future__ import annotations

import json
from statistics import fmean

import pytest

from sbpet_bench.report import build_leaderboard, write_reports
from sbpet_bench.report.leaderboard import fmt
from sbpet_bench.report.seeds import effective_seed, seed_groups, split_spec, table, without_seed
from sbpet_bench.report.writers import to_markdown

MAIN = "protected-vs-original"
HOSTILE = '<img src=x onerror="alert(1)">'

# pet -> (worst privacy AUC, who reached it, {tier: AUC}, {verifier: EER}, FNMR at the clean threshold (FMR 1e-2) of "ver")
NUMBERS = {
    "pridss[seed=-1]": (0.61, "informed:cnn", {"off-the-shelf": 0.55, "informed": 0.61}, {"own": 0.02, "ver": 0.05}, 0.20),
    "pridss[seed=1]": (0.64, "faceapi-gender", {"off-the-shelf": 0.64, "informed": 0.60}, {"own": 0.03, "ver": 0.08}, 0.26),
    "pridss[seed=2]": (0.58, "informed:cnn", {"off-the-shelf": 0.52, "informed": 0.58}, {"own": 0.01, "ver": 0.04}, 0.17),
    "pridss[seed=3]": (0.99, "informed:cnn", {"off-the-shelf": 0.99, "informed": 0.99}, {"own": 0.4, "ver": 0.4}, 0.9),  # failed
    "blur": (0.9, "faceapi-gender", {"off-the-shelf": 0.9, "informed": 0.85}, {"own": 0.1, "ver": 0.1}, 0.3),
    "blur[sigma=3]": (0.8, "faceapi-gender", {"off-the-shelf": 0.8, "informed": 0.75}, {"own": 0.2, "ver": 0.2}, 0.5),
    f"pridss[seed=1,classifier={HOSTILE}]": (0.7, "informed:cnn", {"off-the-shelf": 0.6, "informed": 0.7}, {"own": 0.1, "ver": 0.1}, 0.3),
    f"pridss[classifier={HOSTILE},seed=2]": (0.72, HOSTILE, {"off-the-shelf": 0.6, "informed": 0.72}, {"own": 0.12, "ver": 0.1}, 0.31),
}
ATTACKED = {"pridss[seed=-1]": 0.81, "pridss[seed=1]": 0.77}  # pp-d recovers gender: worst privacy AUC after the attack


def _cond(pet: str, attacker: str = "none", status: str = "ok", worst: float | None = None) -> dict:
    w, who, tiers, eers, fnmr = NUMBERS[pet]
    w = w if worst is None else worst
    metrics = [{"metric": "worst_privacy_auc", "value": w, "evaluator": who, "protocol": "", "higher_is_better": False,
                "ci_low": w - 0.02, "ci_high": w + 0.02}]
    metrics += [{"metric": "tier_privacy_auc", "value": v, "evaluator": who, "protocol": t, "higher_is_better": False, "extra": {"tier": t}}
                for t, v in tiers.items()]
    for ver, eer in eers.items():  # PriDSS uses "own" internally: its held-out EER is "ver"'s
        metrics.append({"metric": "eer", "value": eer, "evaluator": ver, "protocol": MAIN, "higher_is_better": False,
                        "extra": {"in_sample": [pet]} if ver == "own" else {}})
        metrics.append({"metric": "fnmr_at_clean_threshold", "value": fnmr if ver == "ver" else fnmr / 2, "evaluator": ver, "protocol": MAIN,
                        "higher_is_better": False, "extra": {"fmr": 0.01}})
    worst_ver = max(eers, key=eers.get)
    metrics.append({"metric": "worst_eer", "value": eers[worst_ver], "evaluator": worst_ver, "protocol": MAIN, "higher_is_better": False,
                    "extra": {"verifier": worst_ver}})
    return {"pet": pet, "attacker": attacker, "status": status, "n_images": 100, "metrics": metrics if status == "ok" else []}


def _results() -> dict:
    conds = [_cond(p, status="failed" if p == "pridss[seed=3]" else "ok") for p in NUMBERS]
    conds += [_cond(p, "pp-d", worst=v) for p, v in ATTACKED.items()]
    return {"config": {"seed": 7}, "dataset": {"path": "data", "n_eval": 100}, "conditions": conds}


def _group(groups, pet: str, attacker: str = "none"):
    return next(g for g in groups if (g.pet, g.attacker) == (pet, attacker))


def test_split_spec_reads_specs_like_the_run_and_keeps_an_unreadable_one_whole():
    assert split_spec(" pridss[ m = 5 , seed=1 ]") == ("pridss", {"m": "5", "seed": "1"})
    assert split_spec("pridss[m5]") == ("pridss[m5]", {})  # the run refuses it; a report just shows it
    assert without_seed("pridss[m=5,seed=1,backend=pixel]") == ("pridss[m=5,backend=pixel]", ("pridss", (("backend", "pixel"), ("m", "5"))), "1")
    assert without_seed("pridss") == ("pridss", ("pridss", ()), None)
    assert [effective_seed(s, 7) for s in (None, "-1", "1")] == [7, 7, 1] and effective_seed(None, None) == "run"


def test_the_group_its_seeds_and_every_headline_figure():
    results = _results()
    groups = seed_groups(results)
    g = _group(groups, "pridss")
    assert g.seeds == (1, 2, 7)  # seed=-1 is the run's seed (7); seed=3 failed and is left out
    assert g.pets == ("pridss[seed=1]", "pridss[seed=2]", "pridss[seed=-1]")
    by_key = {s.column.key: s for s in g.spreads}
    order = [NUMBERS[p] for p in g.pets]

    worst = [n[0] for n in order]
    s = by_key["worst_privacy_auc"]
    assert s.values == worst and s.mean == pytest.approx(fmean(worst)) and s.min == min(worst) and s.max == max(worst)
    assert s.spread == pytest.approx(max(worst) - min(worst)) == pytest.approx(0.64 - 0.58)
    assert [c.by for c in s.cells] == [n[1] for n in order]  # the classifier that reached it, per seed

    for tier in ("off-the-shelf", "informed"):
        values = [n[2][tier] for n in order]
        t = by_key[f"tier_privacy_auc[{tier}]"]
        assert t.values == values and t.mean == pytest.approx(fmean(values)) and t.spread == pytest.approx(max(values) - min(values))

    held = [n[3]["ver"] for n in order]  # the held-out verifier's EER, not the in-sample one's
    h = by_key["heldout_eer"]
    assert h.values == held and {c.by for c in h.cells} == {"ver"} and h.mean == pytest.approx(fmean(held))
    assert "worst_eer" not in by_key  # the held-out EER stands for identity when every seed has it

    fnmr = [n[4] for n in order]
    f = by_key[f"fnmr_at_clean_threshold_fmr1e-2@ver[{MAIN}]"]
    assert f.values == fnmr and f.spread == pytest.approx(max(fnmr) - min(fnmr))
    assert f"fnmr_at_clean_threshold_fmr1e-2@own[{MAIN}]" in by_key  # every verifier on the main protocol
    assert [s.column.metric for s in g.spreads][:3] == ["worst_privacy_auc", "tier_privacy_auc", "tier_privacy_auc"]


def test_attackers_apart_no_group_without_seeds_and_options_in_any_order():
    groups = seed_groups(_results())
    attacked = _group(groups, "pridss", "pp-d")
    assert attacked.seeds == (1, 7) and attacked.label == "pridss → pp-d"
    assert _group(groups, "pridss", "pp-d").spreads[0].values == [ATTACKED["pridss[seed=1]"], ATTACKED["pridss[seed=-1]"]]
    assert not any(g.pet.startswith("blur") for g in groups)  # blur and blur[sigma=3] differ in sigma, not seed
    hostile = _group(groups, f"pridss[classifier={HOSTILE}]")
    assert hostile.seeds == (1, 2)
    assert len(groups) == 3


def test_a_failed_seed_is_skipped_and_a_lone_seed_is_no_group():
    results = _results()
    for c in results["conditions"]:
        if c["pet"] == "pridss[seed=2]" and c["attacker"] == "none":
            c["status"], c["metrics"] = "failed", []
    g = _group(seed_groups(results), "pridss")
    assert g.seeds == (1, 7) and g.spreads[0].values == [0.64, 0.61]
    results["conditions"] = [c for c in results["conditions"] if c["pet"] != "pridss[seed=1]"]
    assert not any(g.pet == "pridss" for g in seed_groups(results))


def test_markdown_table_after_the_headline_and_absent_without_groups():
    results = _results()
    md = to_markdown(results)
    assert md.index("## Headline") < md.index("## Spread over seeds") < md.index("## All metrics")
    g = _group(seed_groups(results), "pridss")
    worst = [NUMBERS[p][0] for p in g.pets]
    row = next(line for line in md.splitlines() if line.startswith("| pridss | 1, 2, 7 | worst privacy AUC"))
    assert f"| {fmt(fmean(worst))} | {fmt(min(worst))} | {fmt(max(worst))} | {fmt(max(worst) - min(worst))} |" in row
    assert "1: 0.640 faceapi-gender; 2: 0.580 informed:cnn; 7: 0.610 informed:cnn" in row
    assert "seed=-1 or no seed option is the run's seed (7 here)." in md
    assert "<img" not in md and "&lt;img src=x onerror=" in md  # markdown escapes HTML in names, as elsewhere

    plain = {"config": {"seed": 0}, "conditions": [_cond("blur"), _cond("blur[sigma=3]")]}
    assert seed_groups(plain) == [] and "Spread over seeds" not in to_markdown(plain)


def test_html_escapes_hostile_names_and_json_carries_the_spread(tmp_path):
    results = _results()
    md, js, html = write_reports(results, tmp_path, formats=("md", "json", "html"), run_dir=tmp_path)
    page = html.read_text()
    assert 'id="seeds"' in page and "Spread over seeds" in page
    assert page.index('id="headline"') < page.index('id="seeds"') < page.index('id="leaderboard"')
    assert HOSTILE not in page and "onerror=&quot;alert(1)&quot;" in page
    assert "&lt;img src=x" in page and "<img src=x" not in page
    data = json.loads(js.read_text())
    spread = next(g for g in data["seed_spread"] if (g["pet"], g["attacker"]) == ("pridss", "none"))
    worst = next(m for m in spread["metrics"] if m["key"] == "worst_privacy_auc")
    assert spread["seeds"] == [1, 2, 7] and [p["value"] for p in worst["per_seed"]] == [0.64, 0.58, 0.61]
    assert worst["spread"] == pytest.approx(0.06) and worst["mean"] == pytest.approx(fmean([0.64, 0.58, 0.61]))
    plain = {"config": {"seed": 0}, "conditions": [_cond("blur"), _cond("blur[sigma=3]")]}
    _, js2, html2 = write_reports(plain, tmp_path / "plain", formats=("md", "json", "html"), run_dir=tmp_path)
    assert "seed_spread" not in json.loads(js2.read_text()) and 'id="seeds"' not in html2.read_text()


def test_sbpet_report_on_merged_runs_shows_the_spread(tmp_path):
    import typer
    from typer.testing import CliRunner

    from sbpet_bench.report.cli import report_command
    from test_report import TABLE2_ATTACKERS, make_table2_results

    make_table2_results(tmp_path / "a", n_samples=0, pets={"pridss": (0.55, 0.82, 0.03), "blur[sigma=1]": (0.93, 0.95, 0.02)})
    make_table2_results(tmp_path / "b", n_samples=0, pets={"pridss[seed=1]": (0.6, 0.8, 0.05), "pridss[seed=2]": (0.58, 0.84, 0.04)})
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"), "--no-images"])
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "rep" / "results.json").read_text())
    groups = seed_groups(merged)
    assert [(g.pet, g.attacker) for g in groups] == [("pridss", a) for a in ("none", *TABLE2_ATTACKERS)]
    assert all(g.seeds == (0, 1, 2) for g in groups)  # the runs' seed is 0
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    _, rows = table(groups)
    assert "## Spread over seeds" in md and all(" | ".join(r[:3]) in md for r in rows)
    assert 'id="seeds"' in (tmp_path / "rep" / "report.html").read_text()
    assert json.loads((tmp_path / "rep" / "leaderboard.json").read_text())["seed_spread"]
    build_leaderboard(merged)  # the merged results still build their leaderboard


def test_seed_variants_never_make_a_tradeoff_curve():
    from sbpet_bench.report.tradeoff import Point, curves

    points = (Point("blur[sigma=1]", 0.95, 0.01, None), Point("blur[sigma=5]", 0.80, 0.30, None),
              Point("privacynet", 0.94, 0.005, None), Point("privacynet[seed=1]", 0.95, 0.0, None),
              Point("privacynet[seed=2]", 0.93, 0.005, None), Point("pridss[m=5]", 0.97, 0.03, None),
              Point("pridss", 0.96, 0.03, None), Point("pridss[seed=1]", 0.97, 0.03, None))
    found = curves(points)
    assert [p.pet for p in found["blur"]] == ["blur[sigma=5]", "blur[sigma=1]"]  # sorted by privacy AUC
    assert "privacynet" not in found  # three seeds of one setting: no curve
    assert [p.pet for p in found["pridss"]] == ["pridss", "pridss[m=5]"]  # the sweep, without its seed variant
