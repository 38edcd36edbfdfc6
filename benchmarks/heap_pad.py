"""A small `sbpet run` from an empty cache with and without the glibc heap pad (sbpet_bench/allocator.py).

    uv run python benchmarks/heap_pad.py [--rounds 2] [--per-class 200] [--pets blur,noise]

Prints numbers only. Each round runs the pipeline twice in fresh processes, pad on then off (the
"off" process replaces ``keep_freed_memory`` by a no-op before the run starts), with the default
panel, no informed tier, a fresh temporary cache each time: wall, user and system CPU seconds, peak
resident memory and the seconds of every scoring stage from results.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(pad: bool, per_class: int, pets: list[str]) -> dict:
    runmod = importlib.import_module("sbpet_bench.pipeline.run")
    if not pad:
        runmod.keep_freed_memory = lambda: False
    from sbpet_bench.config import RunConfig
    from sbpet_bench.testing import lfw3d_path

    tmp = Path(tempfile.mkdtemp(prefix="sbpet-heap-pad-"))
    cfg = RunConfig(data=str(lfw3d_path()), out=str(tmp / "run"), cache_dir=str(tmp / "cache"), pets=pets,
                    per_class=per_class, informed=False, bootstrap=100, samples=0, quiet=True, device="cpu")
    t0 = time.perf_counter()
    results = runmod.Run(cfg).execute()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - t0, "user": usage.ru_utime, "sys": usage.ru_stime,
            "maxrss_mb": usage.ru_maxrss // 1024,
            "scoring": {k: v for k, v in results["timings"].items() if k.startswith("score:")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--pets", default="blur,noise")
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child == "on", args.per_class, args.pets.split(","))))
        return
    for _ in range(args.rounds):
        for mode in ("on", "off"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--per-class", str(args.per_class),
                                  "--pets", args.pets], check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"pad {mode:3s}: wall {r['wall']:.1f} s, user {r['user']:.0f} s, system {r['sys']:.0f} s, "
                  f"peak RSS {r['maxrss_mb']} MB, scoring {sum(r['scoring'].values()):.1f} s "
                  f"({', '.join(f'{k[6:]} {v:.1f}' for k, v in r['scoring'].items())})", flush=True)


if __name__ == "__main__":
    main()
