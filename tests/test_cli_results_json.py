"""results.json and the leaderboards are strict JSON: a metric that yields NaN or infinity is written as null."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

NAN_METRIC = '''
from sbpet_bench import hookimpl
from sbpet_bench.api import Metric, MetricValue


class Undefined(Metric):
    name = "undefined-metric"
    version = "1"

    def compute(self, data):
        # e.g. FNMR at an FMR that too few impostor pairs cannot reach: undefined, not zero
        return [MetricValue("undefined", float("nan"), evaluator="none", ci_low=float("-inf"), ci_high=float("inf"),
                            extra={"curve": [0.5, float("nan")]})]


@hookimpl
def sbpet_register_metrics():
    return [Undefined]
'''


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_strict_parser_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        _strict(json.dumps({"v": math.nan}))  # the check below can fail


@pytest.mark.slow
def test_nan_metric_is_written_as_null(small_data, tmp_path):
    plugin = tmp_path / "nan_metric.py"
    plugin.write_text(NAN_METRIC)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sbpet_bench.cli", "run", "--pets", "identity", "--data", str(small_data), "--plugin", str(plugin),
         "--metrics", "undefined-metric,gender", "--classifiers", "hog-logreg", "--verifiers", "pca-pixels", "--featurizers", "",
         "--per-class", "12", "--train-per-class", "40", "--pool-per-class", "8", "--batch-size", "8", "--bootstrap", "20",
         "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _strict((out / "results.json").read_text())
    values = [m for c in results["conditions"] for m in c["metrics"] if m["metric"] == "undefined"]
    assert values and all(m["value"] is None and m["ci_low"] is None and m["ci_high"] is None for m in values)
    assert all(m["extra"]["curve"] == [0.5, None] for m in values)
    written = sorted(out.glob("*.json"))
    assert out / "results.json" in written
    for path in written:  # the leaderboard JSON too
        _strict(path.read_text())
