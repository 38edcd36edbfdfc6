"""What the informed attacker tier adds to a run, against the issue's goal.

    uv run python benchmarks/informed_cost.py [--data ../shared/data/lfw3d] [--pets blur,noise]
        [--informed-per-class 1000] [--per-class 50]

Goal (issue): the informed tier for two PETs on a 2,000-image training split adds at most the cost of
protecting those images plus 3 minutes on this CPU.

One `sbpet run` with the real defaults of the tier (verifiers faceapi-resnet, hm-faceres and
hm-mobileface for the probes; informed classifiers cnn-gender and faceapi-gender-ft; mixed variants)
in a fresh temporary cache. The PETs default to blur and noise: they cost almost nothing, so (a) is
small and the tier's own overhead is what the goal is tested on (an expensive PET would hide it).
The evaluation sample is small (``--per-class``) so that the training split keeps 1,000 faces per
gender; the off-the-shelf panel is faceapi-gender alone and no featurizer runs, since neither
touches the informed tier. Figures come from the run's own timings (results.json):

(a) protecting the informed training images: ``informed pet:<PET>``;
(b) everything the tier adds: the ``informed tier`` phase (decode, protect, embed, fit) plus scoring
    its classifiers on the evaluation images (``score:informed:*``, ``score:mixed:*``).

The machine is shared: the 1-minute load average is sampled through the run and printed beside the
figures (mean and maximum over the run). Under load, absolute seconds inflate; the breakdown and
the ratio (b - a) / 180 s say where the time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sbpet_bench.config import RunConfig
from sbpet_bench.pipeline import Run
from sbpet_bench.testing import lfw3d_path

GOAL_EXTRA_S = 180.0


class LoadSampler:
    """The 1-minute load average every few seconds while a block runs."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def text(self) -> str:
        return f"load avg mean {statistics.mean(self.samples):.1f}, max {max(self.samples):.1f} ({os.cpu_count()} CPUs)"


def informed_run(data: str, pets: list[str], per_class: int, informed_per_class: int, work: Path) -> tuple[dict, LoadSampler]:
    cfg = RunConfig(data=data, out=str(work / "run"), cache_dir=str(work / "cache"), pets=pets, per_class=per_class,
                    train_per_class=max(1000, informed_per_class), informed=True, informed_per_class=informed_per_class,
                    classifiers=["faceapi-gender"], featurizers=[], bootstrap=100, samples=0, quiet=True, device="cpu")
    run = Run(cfg)
    tier_phase = run.informed_tier

    def timed_tier(*args, **kw):  # the tier's CPU seconds: they do not inflate with the machine's load as wall time does
        cpu0, wall0 = process_cpu(), time.perf_counter()
        try:
            return tier_phase(*args, **kw)
        finally:
            run.timings["informed tier cpu"] = process_cpu() - cpu0
            run.timings["informed tier wall"] = time.perf_counter() - wall0

    run.informed_tier = timed_tier
    with LoadSampler() as load:
        results = run.execute()
    return results, load


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(results: dict, load: LoadSampler, wall: float) -> None:
    t = results["timings"]
    pets = [p for p in results["config"]["pets"]]
    verifiers = results["config"]["verifiers"]
    n_train = results["tiers"]["informed_train_images"]
    n_eval = results["dataset"]["n_eval"]
    protect = {p: t.get(f"informed pet:{p}", 0.0) for p in pets}
    embed = {v: t.get(f"informed score:{v}", 0.0) for v in verifiers}
    fits = {k: v for k, v in t.items() if k.startswith("fit:")}
    scoring = {k: v for k, v in t.items() if k.startswith(("score:informed:", "score:mixed:"))}
    tier = t.get("informed tier", 0.0)
    a = sum(protect.values())
    b = tier + sum(scoring.values())
    known = a + sum(embed.values()) + sum(fits.values()) + t.get("informed decode", 0.0) + t.get("informed fit:probes", 0.0)
    lt = load.text()
    print(f"informed tier: {len(pets)} PETs ({', '.join(pets)}), {n_train} training images "
          f"({n_train // 2} per gender), {n_eval} evaluation images; verifiers {', '.join(verifiers)}; "
          f"classifiers {', '.join(results['config']['informed_classifiers'])}")
    print(f"whole run wall time {wall:.0f} s  [{lt}]")
    print(f"(a) protect the training images: {a:8.1f} s  [{lt}]")
    for p, s in protect.items():
        print(f"      {p:<28} {s:8.1f} s  ({s / max(n_train, 1) * 1000:.1f} ms/image)")
    print(f"(b) informed tier, all it adds:  {b:8.1f} s  [{lt}]")
    print(f"      decode training images     {t.get('informed decode', 0.0):8.1f} s")
    print(f"      protect (= a)              {a:8.1f} s")
    n_sets = n_train * (1 + len(pets))
    for v, s in embed.items():
        print(f"      embed {v:<20} {s:8.1f} s  ({s / max(n_sets, 1) * 1000:.1f} ms/image over {n_sets} images)")
    print(f"      fit probes (logistic)      {t.get('informed fit:probes', 0.0):8.1f} s")
    for k, s in sorted(fits.items()):
        print(f"      {k:<26} {s:8.1f} s")
    print(f"      other (caching, copies)    {tier - known:8.1f} s")
    for k, s in sorted(scoring.items()):
        print(f"      {k:<26} {s:8.1f} s  (on {n_eval * (1 + len(pets))} evaluation images)")
    over = b - a
    print(f"(b) - (a) = {over:.1f} s = {over / GOAL_EXTRA_S:.2f} x the goal's {GOAL_EXTRA_S:.0f} s  [{lt}]")
    print(f"goal (b) <= (a) + {GOAL_EXTRA_S:.0f} s: {'met' if b <= a + GOAL_EXTRA_S else 'NOT met'} "
          f"({b:.1f} s vs {a + GOAL_EXTRA_S:.1f} s)")
    print(f"  of which embedding alone: {sum(embed.values()):.1f} s; everything but protecting and embedding: "
          f"{over - sum(embed.values()):.1f} s")
    cpu, wall = t.get("informed tier cpu", 0.0), t.get("informed tier wall", 0.0)
    print(f"informed tier phase (without scoring on the evaluation images): {wall:.0f} s wall, {cpu:.0f} CPU seconds "
          f"({cpu / max(wall, 1e-9):.2f} CPUs busy on average; unloaded, {os.cpu_count()} CPUs need at least "
          f"{cpu / os.cpu_count():.0f} s)  [{lt}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(lfw3d_path()))
    parser.add_argument("--pets", default="blur,noise")
    parser.add_argument("--informed-per-class", type=int, default=1000, help="training images per gender (goal: 1000)")
    parser.add_argument("--per-class", type=int, default=50, help="evaluation images per gender (small: not the tier's cost)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sbpet-informed-cost-") as tmp:
        t0 = time.perf_counter()
        results, load = informed_run(args.data, args.pets.split(","), args.per_class, args.informed_per_class, Path(tmp))
        report(results, load, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
