"""The example package installs like any third-party plugin and runs through `sbpet run --pets example`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sbpet-example-pet"


@pytest.mark.slow  # builds and installs a package, then a real-data run
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build and install the example package")
def test_example_package_installs_and_runs(small_data, tmp_path):
    target = tmp_path / "site"
    subprocess.run(["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(target), "--python", sys.executable,
                    str(EXAMPLE)], check=True, timeout=600)
    assert list(target.glob("sbpet_example_pet*.dist-info"))  # installed as a distribution with an entry point
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "sbpet_bench.cli", "list", "pet", "--json"], env=env,
                             capture_output=True, text=True, check=True, timeout=600)
    example = [p for p in json.loads(listing.stdout) if p["name"] == "example"]
    assert example and "sbpet_example_pet" in example[0]["origin"] and "strength" in example[0]["options"]
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "sbpet_bench.cli", "run", "--pets", "example", "--data", str(small_data),
                    "--per-class", "12", "--train-per-class", "30", "--pool-per-class", "4", "--bootstrap", "10", "--no-informed",
                    "--classifiers", "hog-logreg", "--verifiers", "pca-pixels", "--featurizers", "",
                    "--option", "example.strength=1.0", "--out", str(out), "--quiet"], env=env, check=True, timeout=600)
    results = json.loads((out / "results.json").read_text())
    cond = [c for c in results["conditions"] if c["pet"] == "example"][0]
    assert cond["status"] == "ok" and cond["n_images"] == 24
    diag = [json.loads(line) for line in (out / "diagnostics.jsonl").read_text().splitlines()]
    assert len(diag) == 24 and all("input_saturation" in d for d in diag)
