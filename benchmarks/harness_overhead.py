"""Harness performance: overhead against direct calls, cached re-run time, and peak memory versus N.

    uv run python benchmarks/harness_overhead.py [--data ../shared/data/lfw3d] [--skip-memory]

Prints three figures (issue goals in brackets):
1. throughput ratio, `sbpet run` (identity PET, weight-free evaluators, 2,000 images) over
   the same computations called directly with the same batch size           [>= 0.8]
2. a fully cached re-run's wall time as a share of the first run's             [<= 5 %]
3. peak memory (max RSS) of a run on ~13,000 images over one on 1,000         [<= 2x]
Fitting the evaluators is excluded from (1) on both sides: it happens once and is cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sbpet_bench.api import FaceBatch
from sbpet_bench.config import RunConfig
from sbpet_bench.data import DiskFaceSet
from sbpet_bench.images import resize, tensor_to_uint8, uint8_to_tensor
from sbpet_bench.pipeline import Run
from sbpet_bench.testing import lfw3d_path

BATCH = 64


def _cfg(data: str, out: Path, cache: Path, **kw) -> RunConfig:
    return RunConfig(data=data, out=str(out), cache_dir=str(cache), pets=["identity"], classifiers=["hog-logreg"],
                     verifiers=["pca-pixels"], featurizers=[], per_class=600, batch_size=BATCH, bootstrap=200,
                     quiet=True, device="cpu", informed=False, **kw)  # the harness's own cost, not the informed tier's


def overhead_and_rerun(data: str, work: Path) -> None:
    # Fit the evaluators once; both sides below reuse the fitted state.
    warm = Run(_cfg(data, work / "warm", work / "cache-warm"))
    warm.execute()

    fresh_cache = work / "cache-fresh"
    shutil.copytree(work / "cache-warm" / "fit", fresh_cache / "fit")
    shutil.copytree(work / "cache-warm" / "split", fresh_cache / "split")
    harness = Run(_cfg(data, work / "run", fresh_cache))
    t0 = time.perf_counter()
    results = harness.execute()
    first_wall = time.perf_counter() - t0
    streamed = results["timings"]["execute"]  # the streaming phase: the same work as the direct loop below

    # The same computations, called directly: decode, protect, score originals and protected images.
    host = harness.setup()
    pet, _ = host.get("pet", "identity")
    clf, _ = host.get("classifier", "hog-logreg")
    ver, _ = host.get("verifier", "pca-pixels")
    eval_set = DiskFaceSet(harness.splits.eval, harness.image_size)
    t0 = time.perf_counter()
    scores = []
    with torch.no_grad():
        for start in range(0, len(eval_set.records), BATCH):
            recs = eval_set.records[start : start + BATCH]
            x = uint8_to_tensor(eval_set.load_uint8(recs))
            protected = pet.protect(FaceBatch(x, torch.tensor([r.gender for r in recs]), [r.identity for r in recs],
                                              [r.id for r in recs])).images
            protected = uint8_to_tensor(tensor_to_uint8(protected))
            for images in (x, protected):
                scores.append(clf.predict_male(resize(images, clf.input_size)).numpy())
                scores.append(ver.embed(resize(images, ver.input_size)).numpy())
    direct = time.perf_counter() - t0
    n = len(eval_set.records)
    print(f"[1] images: {n}; direct: {n / direct:.1f} img/s ({direct:.2f} s); sbpet run: {n / streamed:.1f} img/s "
          f"({streamed:.2f} s streaming, {first_wall:.2f} s with set-up, metrics and reports); throughput ratio = {direct / streamed:.2f} (goal >= 0.8)")

    # A fully cached re-run of a whole first run (with fitting) in a fresh cache.
    # CPU time beside wall time: on a shared machine the CPU ratio is the steadier figure.
    cold_cache = work / "cache-cold"
    load = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    Run(_cfg(data, work / "cold", cold_cache)).execute()
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    rerun = Run(_cfg(data, work / "cold", cold_cache))
    again = rerun.execute()
    hot, hot_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"[2] first run {cold:.2f} s ({cold_cpu:.2f} s CPU), fully cached re-run {hot:.2f} s ({hot_cpu:.2f} s CPU) = "
          f"{100 * hot / cold:.1f} % wall, {100 * hot_cpu / cold_cpu:.1f} % CPU (goal <= 5 %); cache hits {again['cache']['hits']}, "
          f"misses {again['cache']['misses']}; load average {load:.1f} -> {os.getloadavg()[0]:.1f}")


def _peak_rss_mb(data: str, work: Path, name: str, per_class: str, extra: list[str]) -> tuple[float, int]:
    out = work / name
    code = (
        "import resource, sys; from sbpet_bench.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    args = ["run", "--pets", "identity", "--classifiers", "hog-logreg", "--verifiers", "pca-pixels", "--featurizers", "",
            "--data", data, "--per-class", per_class, "--batch-size", str(BATCH), "--bootstrap", "200", "--device", "cpu",
            "--out", str(out), "--cache-dir", str(work / f"cache-{name}"), "--quiet", "--no-informed", *extra]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    peak_kb = int(proc.stdout.strip().split("PEAK")[-1])
    n = json.loads((out / "results.json").read_text())["dataset"]["n_eval"]
    return peak_kb / 1024, n


def memory(data: str, work: Path) -> None:
    small_mb, small_n = _peak_rss_mb(data, work, "mem-small", "500", [])
    # Every labelled image except a small training split: about 13,000 evaluation images.
    big_mb, big_n = _peak_rss_mb(data, work, "mem-big", "all", ["--train-per-class", "100", "--pool-per-class", "0"])
    print(f"[3] peak RSS: {small_n} images {small_mb:.0f} MiB, {big_n} images {big_mb:.0f} MiB; "
          f"ratio = {big_mb / small_mb:.2f} (goal <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(lfw3d_path()))
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="sbpet-bench-") as tmp:
        work = Path(tmp)
        overhead_and_rerun(args.data, work)
        if not args.skip_memory:
            memory(args.data, work)


if __name__ == "__main__":
    main()
