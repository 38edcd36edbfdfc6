"""`sbpet train` feeds `sbpet run`'s cache; `sbpet report --no-images` publishes without faces."""

import json

import pytest
from typer.testing import CliRunner

from sbpet_bench.cli import app
from sbpet_bench.config import RunConfig
from sbpet_bench.pipeline import run
from sbpet_bench.training import train_plugin


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), per_class=10, train_per_class=40, pool_per_class=8, batch_size=8,
                bootstrap=20, classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[], quiet=True)
    return RunConfig(**{**base, **kw})


@pytest.mark.slow  # real-data pipeline runs
def test_trained_state_is_reused_by_run(small_data, tmp_path):
    path = train_plugin("hog-logreg", _cfg(small_data, tmp_path / "run"))
    assert path.exists()
    results = run(_cfg(small_data, tmp_path / "run", pets=["identity"]))
    assert "fit:hog-logreg" not in results["timings"]  # loaded, not fitted again
    assert "fit:pca-pixels" in results["timings"]


@pytest.mark.slow  # real-data pipeline runs
def test_report_without_images_keeps_scores_and_drops_faces(small_data, tmp_path):
    run(_cfg(small_data, tmp_path / "run", pets=["blur"]))
    out = tmp_path / "published"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--out", str(out), "--no-images"])
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "results.json").read_text())
    assert merged["samples"] and all(s["images"] == {} for s in merged["samples"])
    assert not (out / "samples").exists()
    assert "blur" in (out / "leaderboard.md").read_text()
