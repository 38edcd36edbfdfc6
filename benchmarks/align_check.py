"""Alignment throughput, share of faces found, and residual roll after alignment.

    uv run python benchmarks/make_wild_standin.py --src ../shared/data/lfw3d --out runs/data/lfw3d-wild --seed 0 --per-class 400
    uv run python benchmarks/align_check.py --lfw3d ../shared/data/lfw3d --standin runs/data/lfw3d-wild --lfw3d-count 400

For LFW3D and for a stand-in (``sbpet_bench.standin``), every image goes through the aligner at
``--size`` (tight crop). Printed per data set: images per second (detection, landmarks and warp,
one process; also per CPU second of this process), the share with a face found, the reasons for the rest, and two roll residuals:

* ground truth (stand-in only): the aligner's transform composed with the stand-in's known
  LFW3D -> image matrix should be the plain LFW3D -> crop scaling; its rotation is the error;
* re-measured: the eye-line angle that the same landmarks find on the aligned crop, minus the
  canonical crop's own eye-line angle (LFW3D's mean tilt).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sbpet_bench.images import load_image
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import make_context


def make_aligner(options: dict):
    registry = load_registry()
    store = ModelStore(assets=registry.assets)
    entry = registry.get("aligner", "dlib")
    context = make_context(tempfile.mkdtemp(prefix="sbpet-align-check-"), model_path=lambda name: store.path(name, fetch=False))
    return entry.create(options, context)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def rotation_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def measure(aligner, paths: list[Path], size: int, batch: int, truth: dict | None) -> dict:
    from sbpet_align.landmarks import roll_degrees
    from sbpet_align.transform import TIGHT_ANCHORS

    images = [load_image(p) for p in paths]  # decoded first: the timing is the aligner's alone
    start, cpu_start = time.perf_counter(), time.process_time()
    results = [aligner.align(images[i:i + batch], size, "tight") for i in range(0, len(images), batch)]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = [f for r in results for f in r.found]
    reasons = [r_ for r in results for r_ in r.reasons if r_]
    diags = [d for r in results for d in r.diagnostics]
    aligned = np.concatenate([r.images for r in results])
    # per CPU second as well: on a shared machine the wall clock mostly measures the other processes
    out = {"images": len(images), "img_per_s": len(images) / elapsed, "img_per_cpu_s": len(images) / cpu, "found_share": float(np.mean(found)),
           "reasons": {k: reasons.count(k) for k in sorted(set(reasons))}}
    if truth is not None:
        errors, scale_errors = [], []
        for path, ok, diag in zip(paths, found, diags):
            if not ok:
                continue
            total = compose(np.array(diag["transform"]), np.array(truth[path.name]["matrix"]))
            errors.append(rotation_deg(total))
            scale_errors.append(np.hypot(total[0, 0], total[1, 0]) / (size / 90) - 1)
        errors = np.abs(np.array(errors))
        out["truth_roll_error_deg"] = {"mean": float(errors.mean()), "median": float(np.median(errors)),
                                       "p95": float(np.percentile(errors, 95)), "max": float(errors.max())}
        out["truth_scale_error_abs_mean"] = float(np.mean(np.abs(scale_errors)))
    # re-measure on the aligned crops with the same landmarks
    canonical = np.degrees(np.arctan2(TIGHT_ANCHORS[1, 1] - TIGHT_ANCHORS[0, 1], TIGHT_ANCHORS[1, 0] - TIGHT_ANCHORS[0, 0]))
    rolls = []
    for ok, crop in zip(found, aligned):
        if ok:
            face = aligner.finder.find(crop)
            if not isinstance(face, str):
                rolls.append(roll_degrees(face.points) - canonical)
    rolls = np.abs(np.array(rolls))
    out["remeasured_roll_deg"] = {"n": len(rolls), "mean": float(rolls.mean()), "median": float(np.median(rolls)),
                                  "p95": float(np.percentile(rolls, 95))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw3d", type=Path, help="the LFW3D folder")
    parser.add_argument("--lfw3d-count", type=int, default=400, help="LFW3D images (seeded sample)")
    parser.add_argument("--standin", type=Path, help="a stand-in made by benchmarks/make_wild_standin.py")
    parser.add_argument("--size", type=int, default=90)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--option", action="append", default=[], help="aligner option key=value")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    aligner = make_aligner(options)
    report = {}
    if args.lfw3d:
        names = sorted((args.lfw3d / "male_names.txt").read_text().split() + (args.lfw3d / "female_names.txt").read_text().split())
        picks = np.random.default_rng(0).permutation(len(names))[:args.lfw3d_count]
        paths = [args.lfw3d / "images" / names[i].rsplit("_", 1)[0] / names[i] for i in picks]
        report["lfw3d"] = measure(aligner, paths, args.size, args.batch, None)
    if args.standin:
        truth = json.loads((args.standin / "standin.json").read_text())["images"]
        paths = [args.standin / "images" / n.rsplit("_", 1)[0] / n for n in sorted(truth)]
        report["standin"] = measure(aligner, paths, args.size, args.batch, truth)
    if not report:
        parser.error("give --lfw3d and/or --standin")
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
