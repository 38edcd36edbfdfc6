"""Report fixes of issue 15: inert CSV and markdown, the page's CSP, DET curves on probit axes, legends beside the plots."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import norm

from sbpet_bench.report import build_leaderboard, write_reports
from sbpet_bench.report.plots import _png, _privacy_utility, det_axes, det_plots, privacy_utility_figures, probit, roc_plots
from sbpet_bench.report.tradeoff import condition_values, family, privacy_key
from sbpet_bench.report.writers import csv_text
from test_report import make_table2_results


def _cond(pet, attacker="none", status="ok", pic=-0.01, metric="pic"):
    return {"pet": pet, "attacker": attacker, "status": status, "n_images": 10,
            "metrics": [{"metric": metric, "value": pic, "evaluator": "clf+ver", "protocol": "", "higher_is_better": False,
                         "ci_low": pic - 0.02, "ci_high": pic + 0.01}]}


def test_csv_neutralises_formula_text_and_keeps_numbers(tmp_path):
    results = {"conditions": [_cond("=HYPERLINK(\"http://x\",\"y\")", attacker="+cmd"), _cond("@SUM(A1)", status="-2+3"),
                              _cond("\tTAB", attacker="\rCR"), _cond("-0.5"), _cond("ok", metric="=evil()")]}
    (path,) = write_reports(results, tmp_path, formats=("csv",))
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    header, body = rows[0], rows[1:]
    assert "'=evil()@clf+ver" in header  # column names come from plugins too
    assert [r[0] for r in body] == ["'=HYPERLINK(\"http://x\",\"y\")", "'@SUM(A1)", "'\tTAB", "-0.5", "ok"]
    assert body[0][1] == "'+cmd" and body[2][1] == "'\rCR" and body[1][3] == "'-2+3"
    pic = header.index("pic@clf+ver")
    assert float(body[0][pic]) == pytest.approx(-0.01) and float(body[0][pic + 1]) == pytest.approx(-0.03)  # negative numbers stay numbers
    assert csv_text(-0.01) == -0.01 and csv_text("-0.01") == "-0.01" and csv_text("-1e-3") == "-1e-3" and csv_text("- x") == "'- x"


def test_markdown_escapes_html_and_table_syntax_in_names(tmp_path):
    evil = "<img src=x onerror=alert(1)>|col`code`*em*[a](http://x)"
    results = {"dataset": {"path": "<b>data</b>", "fingerprint": "f|p"}, "conditions": [_cond("original"), _cond(evil)]}
    (path,) = write_reports(results, tmp_path, formats=("md",))
    md = path.read_text()
    assert "<img" not in md and "<b>" not in md
    row = next(line for line in md.splitlines() if "onerror" in line)
    assert row.startswith("| &lt;img src=x onerror=alert(1)&gt;\\|col\\`code\\`\\*em\\*[a]\\(http://x) |")
    assert row.count(" | ") == len(md.splitlines()[4].split(" | ")) - 1  # the pipe did not add a column
    assert "&lt;b&gt;data&lt;/b&gt;" in md and "f\\|p" in md


def test_html_csp_forbids_base_and_form_targets(tmp_path):
    (path,) = write_reports({"conditions": [_cond("blur")]}, tmp_path, formats=("html",))
    html = path.read_text()
    import html as html_lib

    marker = 'http-equiv="Content-Security-Policy" content="'
    csp = html_lib.unescape(html[html.index(marker) + len(marker):].split('"', 1)[0])
    assert "default-src 'none'" in csp and "base-uri 'none'" in csp and "form-action 'none'" in csp


def test_det_axes_are_probit_with_percent_ticks():
    fig = Figure()
    ax = fig.add_subplot()
    det_axes(ax)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:5] == ["0.1%", "1%", "5%", "20%", "50%"] and [t.get_text() for t in ax.get_yticklabels()] == labels
    assert np.allclose(ax.get_xticks()[:5], norm.ppf([0.001, 0.01, 0.05, 0.2, 0.5]))
    assert np.isfinite(probit([0.0, 1.0])).all()  # perfect and hopeless rates land on the axis edges, not at infinity


@pytest.fixture(scope="module")
def table2():
    return make_table2_results()


def test_det_curves_of_normal_scores_are_straight_on_the_probit_axes(table2):
    """Equal-variance normal scores give a straight DET line on normal-deviate axes (not on log axes)."""
    m = next(m for c in table2["conditions"] if c["pet"] == "noise" and c["attacker"] == "none" for m in c["metrics"]
             if m["metric"] == "eer" and m["evaluator"] == "arcface-heldout" and m["protocol"] == "protected-vs-original")
    fmr, fnmr = np.array(m["extra"]["det"]["fmr"]), np.array(m["extra"]["det"]["fnmr"])
    inside = (fmr > 0.02) & (fmr < 0.98) & (fnmr > 0.02) & (fnmr < 0.98)
    (title, fig), *_ = [p for p in det_plots(table2) if "arcface-heldout, protocol protected-vs-original" in p[0]]
    ax = fig.axes[0]
    line = next(l for l in ax.get_lines() if l.get_label().startswith("noise (EER"))
    x, y = line.get_xdata()[inside], line.get_ydata()[inside]
    assert np.allclose(x, norm.ppf(fmr[inside])) and np.allclose(y, norm.ppf(fnmr[inside]))
    assert abs(np.corrcoef(x, y)[0, 1]) > 0.98  # a straight line through the plotted points
    assert abs(np.corrcoef(np.log(fmr[inside]), np.log(fnmr[inside]))[0, 1]) < abs(np.corrcoef(x, y)[0, 1])


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_plots_of_32_conditions_get_a_panel_per_attacker_whose_legends_cover_no_curve(table2):
    """30 curves in one plot were a tangle: a Table-2 run's ROC and DET plots get a panel per attacker, on one row
    that fits the report's page, each legend below its own panel."""
    plots = roc_plots(table2) + det_plots(table2)
    assert len(plots) == 4 + 2 * 3  # ROC per classifier (4 with the tiers); DET per verifier x protocol, per-gender protocols left out
    for title, fig in plots:
        renderer = FigureCanvasAgg(fig).get_renderer()
        assert [ax.get_title() for ax in fig.axes] == ["no attack", "after pp-a", "after pp-d", "after pp-i"], title
        assert sum(len(ax.get_legend().get_texts()) for ax in fig.axes) >= 28, title  # every condition is named
        assert fig.get_size_inches()[0] * fig.dpi <= 1372  # the page's width, without shrinking the text
        for ax in fig.axes:
            legend = ax.get_legend()
            assert not any(_overlap(legend.get_window_extent(renderer), other.get_window_extent(renderer)) for other in fig.axes), title
            assert min(t.get_fontsize() for t in legend.get_texts()) >= 7
            assert ax.get_window_extent(renderer).width >= 240  # pixels of plotting area
            styles = {(str(l.get_color()), str(l.get_linestyle())) for l in ax.get_lines() if not l.get_label().startswith("_")}
            assert len(styles) == len(legend.get_texts()), title  # no two conditions of a panel look alike


def test_a_plot_of_few_conditions_keeps_one_panel_and_its_legend_beside_it():
    results = make_table2_results(pets={"blur": (0.9, 0.95, 0.05), "noise": (0.8, 0.9, 0.1)})
    results["conditions"] = [c for c in results["conditions"] if c["attacker"] == "none"]
    for title, fig in roc_plots(results) + det_plots(results):
        (ax,) = fig.axes
        renderer = FigureCanvasAgg(fig).get_renderer()
        assert len(ax.get_legend().get_texts()) == (2 if "protected-vs-original" in title else 3)  # the originals have no such EER
        assert not _overlap(ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer))
        with Image.open(io.BytesIO(_png(fig))) as im:
            assert im.size[0] <= 686  # two such plots side by side on the page


def test_recovery_attacks_on_the_privacy_utility_plot_take_their_pets_colour_and_a_marker_each(table2):
    assert any("recovery attacks" in title for title, _ in privacy_utility_figures(table2))
    values = condition_values(table2, ("worst_privacy_auc", "eer"))
    xs, ys = values[privacy_key("")], values[("eer", "arcface-heldout", "protected-vs-original")]
    conds = [k for k in xs if k in ys]
    fig = _privacy_utility(xs, ys, conds, "", "arcface-heldout", "protected-vs-original", family)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"after pp-a", "after pp-d", "after pp-i"} <= set(labels)
    drawn = [c for c in fig.axes[0].collections if c.get_offsets().shape[0]]  # the attacked points
    assert len({tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in drawn}) == 3  # a marker per attack
    assert len({tuple(c.get_facecolors()[0].round(3)) for c in drawn}) >= 6  # coloured by whose images were attacked
    assert not [t for t in fig.axes[0].texts if t.get_text() in ("pp-a", "pp-d", "pp-i")]  # no label per point to overlap


    png = privacy_utility_figures(table2)[0][1]
    with Image.open(io.BytesIO(png)) as im:
        assert 500 <= im.size[0] <= 686 and im.size[1] >= 380  # readable, and two side by side on the page


def test_leaderboard_of_table2_has_a_row_per_condition(table2):
    board = build_leaderboard(table2)
    assert len(board.rows) == 32 and board.rows[0].label == "original"
