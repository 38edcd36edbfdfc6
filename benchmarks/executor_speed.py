"""Throughput of the shard phase: --executor local vs ray (1 worker), and ray with 2 workers vs 1 (prints numbers only).

Run from the repo root (the Ray extra installed: ``uv sync --extra ray``):

    .venv/bin/python benchmarks/executor_speed.py [--data ../shared/data/lfw3d] [--per-class 100]
        [--shard-size 10] [--light-pets identity,blur,noise] [--cpu-pet pridss] [--work DIR]

Every run uses the weight-free evaluators (hog-logreg, pca-pixels), no featurizers and no informed
tier, and starts from a fresh cache that holds only the fitted states and the split: the plugins
are fitted once (``sbpet_bench.pipeline.run.prefit``: the run's set-up and fits, nothing else, into a
fit cache), and that cache is copied for each timed run, so the timings measure the shards only. One local Ray instance serves
all Ray runs (its start-up is printed once); each Ray run starts its own workers, timed apart
("start") from the shard phase ("shards": first dispatch to last merge, as the local loop).

Figures:
  1. local img/s on the light PETs;
  2. ray with 1 worker / local on the light PETs (goal >= 0.85x on the shard phase);
  3. ray with 2 workers / 1 worker on a CPU-bound PET (goal >= 1.6x on the shard phase).

Workers run the driver's thread counts (for identical floats). Figures 1 and 2 use the default
(torch's: one thread per core). For figure 3 the driver is set to one thread first, so each worker
runs one thread, as ``OMP_NUM_THREADS=1 sbpet run ... --executor ray`` would: two workers with
the default thread count would run more threads than a 2-core machine has cores. For context,
the CPU-bound PET is also timed on one worker with the default thread count.

"busy" is the share of workers x shard time spent inside the shards (decoding, PETs, attackers,
evaluators); the rest went to dispatch, transfer and merging. Times are wall-clock on whatever
else the machine runs: the 1-minute load average is printed beside each figure. Ray runs its
workers at niceness 15 by default (so its own processes stay responsive); on a machine shared with
other work that alone gives them a smaller CPU share than the local run's niceness-0 process. To
time the executor rather than the priority, the benchmark's workers run at the driver's niceness
(``--ray-niceness 0``; pass 15 for Ray's default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from sbpet_bench.config import RunConfig
from sbpet_bench.pipeline import run
from sbpet_bench.pipeline.run import prefit
from sbpet_bench.pipeline.ray_executor import import_ray
from sbpet_bench.testing import lfw3d_path


def config(args: argparse.Namespace, pets: list[str], out: Path, cache: Path, **kw) -> RunConfig:
    return RunConfig(data=str(args.data), out=str(out), cache_dir=str(cache), pets=pets,
                     per_class=args.per_class, train_per_class=args.train_per_class, pool_per_class=args.pool_per_class,
                     shard_size=args.shard_size, classifiers=["hog-logreg"], verifiers=["pca-pixels"], featurizers=[],
                     informed=False, bootstrap=50, samples=0, device="cpu", quiet=True, **kw)


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def timed_run(args: argparse.Namespace, label: str, pets: list[str], fit_cache: Path, **kw) -> dict[str, float]:
    """One run on a fresh copy of the fit cache; the shard phase's seconds and throughput."""
    out = args.work / label
    cache = args.work / f"{label}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(fit_cache, cache)
    load_before = os.getloadavg()[0]
    results = run(config(args, pets, out, cache, **kw))
    t = results["timings"]
    n = results["dataset"]["n_eval"]
    shards = t.get("ray: shards", t["execute"])
    start = t.get("ray: start workers", 0.0)
    # Seconds the workers spent inside the shards (decoding, PETs, attackers, evaluators), over workers x wall time:
    # how little of the shard phase went to dispatch, transfer and merging, whatever the machine's load.
    busy = sum(v for k, v in t.items() if k == "decode" or k.startswith(("pet:", "attacker:", "score:")))
    figures = {"n": n, "shards_s": shards, "start_s": start, "end_to_end_s": t["execute"], "img_s": n / shards,
               "load": (load_before + os.getloadavg()[0]) / 2, "busy": busy / (kw.get("ray_workers", 1) * shards)}
    failed = [c["pet"] for c in results["conditions"] if c["status"] != "ok"]
    if failed or results["errors"]:
        print(f"  warning: {label}: failed conditions {failed}, errors {[e['message'] for e in results['errors']][:3]}")
    print(f"  {label:<22} {n} images  shards {shards:7.1f} s  {figures['img_s']:6.2f} img/s"
          + f"  busy {figures['busy']:4.0%}" + (f"  (+ {start:.1f} s starting workers)" if start else "")
          + f"  [load avg {figures['load']:.1f}]")
    return figures


def single_thread() -> None:
    """This process (the driver, whose thread counts the workers copy) down to one thread everywhere."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=lfw3d_path())
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--pool-per-class", type=int, default=100)
    parser.add_argument("--shard-size", type=int, default=10)
    parser.add_argument("--light-pets", default="identity,blur,noise")
    parser.add_argument("--cpu-pet", default="pridss")
    parser.add_argument("--ray-niceness", type=int, default=0, help="niceness of the Ray workers (Ray's default: 15)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    light, heavy = args.light_pets.split(","), [args.cpu_pet]
    scratch = None
    if args.work is None:
        scratch = tempfile.TemporaryDirectory(prefix="sbpet-executor-speed-")
        args.work = Path(scratch.name)
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    threads = torch.get_num_threads()
    print(f"LFW3D at {args.data}: {args.per_class} per class, shards of {args.shard_size}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, {load()}")

    fit_cache = args.work / "fit-cache"
    t0 = time.perf_counter()
    fits = prefit(config(args, light + heavy, args.work / "prefit", fit_cache))  # every fit and the split, nothing else
    print(f"prefit of {', '.join(light + heavy)} and the evaluators into {fit_cache.name} ({len(fits)} fits): "
          f"{time.perf_counter() - t0:.1f} s")

    os.environ["RAY_worker_niceness"] = str(args.ray_niceness)  # read by every Ray worker process at start
    ray = import_ray()
    import logging

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    print(f"local Ray instance started in {time.perf_counter() - t0:.1f} s, workers at niceness {args.ray_niceness} ({load()})")
    try:
        print(f"light PETs ({', '.join(light)}):")
        local = timed_run(args, "local", light, fit_cache)
        ray1 = timed_run(args, "ray-1", light, fit_cache, executor="ray", ray_workers=1)
        print(f"CPU-bound PET ({args.cpu_pet}):")
        context = timed_run(args, f"ray-1-{threads}-threads", heavy, fit_cache, executor="ray", ray_workers=1)
        single_thread()
        heavy1 = timed_run(args, "ray-1-1-thread", heavy, fit_cache, executor="ray", ray_workers=1)
        heavy2 = timed_run(args, "ray-2-1-thread", heavy, fit_cache, executor="ray", ray_workers=2)
    finally:
        ray.shutdown()
    print()
    print("figures (shard phase; end to end includes starting the workers):")
    print(f"  1. local throughput, light PETs:       {local['img_s']:6.2f} img/s  [load avg {local['load']:.1f}]")
    print(f"  2. ray 1 worker / local, light PETs:    {ray1['img_s'] / local['img_s']:6.2f}x  (goal >= 0.85x; end to end "
          f"{local['end_to_end_s'] / ray1['end_to_end_s']:.2f}x)  [load avg {ray1['load']:.1f}]")
    print(f"  3. ray 2 workers / 1 worker, {args.cpu_pet}:   {heavy2['img_s'] / heavy1['img_s']:6.2f}x  (goal >= 1.6x; end to end "
          f"{heavy1['end_to_end_s'] / heavy2['end_to_end_s']:.2f}x; one thread per worker)  [load avg {heavy2['load']:.1f}]")
    print(f"     against 1 worker with {threads} threads:  {heavy2['img_s'] / context['img_s']:6.2f}x  [load avg {context['load']:.1f}]")
    print("  (against the pre-rewrite pipeline: benchmarks/pipeline_vs_previous.py)")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
