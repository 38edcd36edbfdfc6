"""A re-run's report: plots come from the run's cache when what they are drawn from is unchanged."""

from __future__ import annotations

import copy

from sbpet_bench.cache import Cache
from sbpet_bench.report.plots import cached_figures, roc_figures
from test_report import make_table2_results


def test_unchanged_results_reuse_the_drawn_plots_and_changed_ones_redraw(tmp_path):
    results = make_table2_results(pets={"blur": (0.9, 0.95, 0.05), "noise": (0.8, 0.9, 0.1)})
    cache = Cache(tmp_path / "cache")
    drawn = []

    def roc(res):  # the name enters the key, as roc_figures' does
        drawn.append(1)
        return roc_figures(res)

    first = cached_figures(cache, roc, results)
    again = cached_figures(cache, roc, copy.deepcopy(results))
    assert len(drawn) == 1 and again == first and first  # the same titles and the same PNG bytes
    assert again == roc_figures(results)  # what a fresh drawing gives

    changed = copy.deepcopy(results)
    changed["conditions"][1]["metrics"][0]["value"] += 0.01
    cached_figures(cache, roc, changed)
    assert len(drawn) == 2
    assert cached_figures(None, roc, results) == first and len(drawn) == 3  # no cache: always drawn
