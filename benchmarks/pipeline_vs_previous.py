"""Throughput and peak memory of `sbpet run` against the pipeline before the task-graph rewrite (prints numbers only).

The goal (issue 14): on 2,000 LFW3D images, throughput at least 0.95x the previous pipeline's, and the same
peak memory. "Previous" is the parent of commit c74dc66 ("pipeline as a package along its phases"), the last
revision with the single-module pipeline. Run from the repo root:

    .venv/bin/python benchmarks/pipeline_vs_previous.py [--baseline REV] [--head REV] [--data ../shared/data/lfw3d]
        [--per-class 1000] [--repeats 1] [--keep]

Both revisions are checked out as temporary ``git worktree``s (removed afterwards, unless --keep) and run with
this checkout's interpreter and packages: ``PYTHONPATH`` puts the worktree's ``sbpet_bench`` and ``plugins``
first, so each revision runs its own harness and plugins (plugin modules that only the newer revision has are
found here too, and are merely registered; the run names every plugin it uses). Every run is the same
small-evaluator run, in a fresh cache of its own:

    sbpet run --pets identity,blur,noise --classifiers hog-logreg --verifiers pca-pixels --featurizers ''
        --metrics gender,verification,pic,realism --per-class N --max-per-identity M --device cpu --quiet
        (+ --no-informed on HEAD: the previous pipeline has no informed tier)

``--max-per-identity`` defaults to 0 (no limit) for both: HEAD draws a dev and a test sample of N per gender, and
with 1,000 per gender at 2 images per identity that leaves LFW3D's training split without women (HEAD stops
with an error naming the flags), while the previous pipeline drew one sample only.

each in its own process under ``/usr/bin/time``, which reports its wall time and peak resident memory (the
process's maximum RSS). Throughput is evaluation images (results.json's dataset.n_eval) per wall-clock second
of the whole command, fits and metrics included; the script also prints each run's own phase timings. Times are
wall-clock on whatever else the machine runs: the 1-minute load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "c74dc66^"  # the parent of "pipeline as a package along its phases"
METRICS = "gender,verification,pic,realism"  # the metrics both revisions have


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def has_flag(tree: Path, flag: str) -> bool:
    """Whether the revision's `sbpet run` knows ``flag`` (read from its CLI source: no import of that revision)."""
    return flag.lstrip("-").replace("-", "_") in (tree / "sbpet_bench" / "cli.py").read_text()


def command(tree: Path, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "sbpet_bench.cli", "run", "--data", str(args.data), "--pets", "identity,blur,noise",
           "--classifiers", "hog-logreg", "--verifiers", "pca-pixels", "--featurizers", "", "--metrics", METRICS,
           "--per-class", str(args.per_class), "--max-per-identity", str(args.max_per_identity), "--device", "cpu", "--quiet", "--out", str(out / "run"),
           "--cache-dir", str(out / "cache")]
    if has_flag(tree, "--informed"):
        cmd.append("--no-informed")
    return cmd


def measure(label: str, tree: Path, args: argparse.Namespace, scratch: Path, repeat: int) -> dict[str, float]:
    out = scratch / f"{label}-{repeat}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "plugins")])}
    stats = out / "time.txt"
    load_before = os.getloadavg()[0]
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *command(tree, args, out)], cwd=tree,
                          env=env, capture_output=True, text=True)
    load = (load_before + os.getloadavg()[0]) / 2
    if proc.returncode != 0:
        sys.exit(f"{label}: sbpet run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall, peak_kib = stats.read_text().split()[-2:]
    results = json.loads((out / "run" / "results.json").read_text())
    n = results["dataset"]["n_eval"]
    figures = {"n": n, "wall_s": float(wall), "peak_mib": int(peak_kib) / 1024, "img_s": n / float(wall), "load": load}
    phases = ", ".join(f"{k} {v:.1f}" for k, v in sorted(results.get("timings", {}).items())
                       if not k.startswith(("pet:", "attacker:", "score:", "fit:")) and v >= 0.05)
    failed = [f"{c['pet']}/{c['attacker']}" for c in results["conditions"] if c.get("status", "ok") != "ok"]
    print(f"  {label:<9} {n} images  {figures['wall_s']:7.1f} s  {figures['img_s']:6.2f} img/s  peak RSS "
          f"{figures['peak_mib']:7.0f} MiB  [load avg {load:.1f}]" + (f"  FAILED: {failed}" if failed else ""))
    print(f"            phases (s): {phases}")
    shutil.rmtree(out / "cache", ignore_errors=True)  # thousands of cached arrays: gone once measured
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="revision of the previous pipeline (default: %(default)s)")
    parser.add_argument("--head", default="HEAD", help="revision to compare with it, or '.' for this checkout as it is, "
                        "uncommitted changes included (default: %(default)s, the last commit)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SBPET_LFW3D", REPO.parent / "shared" / "data" / "lfw3d")))
    parser.add_argument("--per-class", type=int, default=1000, help="evaluation images per gender (default: %(default)s)")
    parser.add_argument("--max-per-identity", type=int, default=0, help="evaluation images per identity (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each revision, alternating (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the worktrees and runs (printed) instead of removing them")
    args = parser.parse_args()
    args.data = args.data.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="sbpet-pipeline-vs-previous-"))
    trees: dict[str, Path] = {}
    try:
        for label, rev in (("previous", args.baseline), ("head", args.head)):
            if rev == ".":
                trees[label] = REPO
                print(f"{label}: this checkout, on {git('log', '-1', '--format=%h', 'HEAD')} with uncommitted changes "
                      f"({len(git('status', '--porcelain', '--untracked-files=no').splitlines())} files)")
                continue
            commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
            trees[label] = scratch / label
            git("worktree", "add", "--detach", str(trees[label]), commit)
            print(f"{label}: {rev} = {git('log', '-1', '--format=%h %s', commit)[:100]}")
        print(f"{args.per_class} per class from {args.data}, {os.cpu_count()} CPUs, {args.repeats} run(s) each")
        runs: dict[str, list[dict[str, float]]] = {"previous": [], "head": []}
        for repeat in range(args.repeats):
            for label in ("previous", "head"):
                runs[label].append(measure(label, trees[label], args, scratch, repeat))
        best = {label: max(r, key=lambda f: f["img_s"]) for label, r in runs.items()}
        peak = {label: max(f["peak_mib"] for f in r) for label, r in runs.items()}
        prev, head = best["previous"], best["head"]
        print()
        print("figures (best run of each; whole command, fits and metrics included):")
        print(f"  throughput head / previous:  {head['img_s'] / prev['img_s']:5.2f}x  (goal >= 0.95x; {head['img_s']:.2f} vs "
              f"{prev['img_s']:.2f} img/s)  [load avg {head['load']:.1f} / {prev['load']:.1f}]")
        print(f"  peak RSS head / previous:    {peak['head'] / peak['previous']:5.2f}x  (goal: the same; {peak['head']:.0f} vs "
              f"{peak['previous']:.0f} MiB)")
        if prev["n"] != head["n"]:
            print(f"  note: the revisions evaluated {prev['n']} and {head['n']} images (their splits differ)")
    finally:
        if args.keep:
            print(f"kept: {scratch}")
        else:
            for tree in trees.values():
                if tree == REPO:
                    continue
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


if __name__ == "__main__":
    main()
