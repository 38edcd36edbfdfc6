"""Make the in-the-wild stand-in from LFW3D (see sbpet_bench/standin.py for what it does).

    uv run python benchmarks/make_wild_standin.py --src ../shared/data/lfw3d --out runs/data/lfw3d-wild --seed 0 --per-class 400

The output is in the lfw layout (``sbpet run --data OUT`` reads it) plus ``standin.json`` with
every image's parameters. Never write it inside the repository.
"""

from __future__ import annotations

import argparse
import sys
import time

from sbpet_bench.standin import StandinError, make_standin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="an lfw-layout folder (LFW3D)")
    parser.add_argument("--out", required=True, help="a new or empty folder for the stand-in")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=None, help="images per gender (default: all)")
    args = parser.parse_args(argv)
    if args.per_class is not None and args.per_class < 1:
        parser.error("--per-class must be at least 1")
    start = time.perf_counter()
    try:
        summary = make_standin(args.src, args.out, seed=args.seed, per_class=args.per_class)
    except StandinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    n = summary["males"] + summary["females"]
    print(f"wrote {n} images ({summary['males']} male, {summary['females']} female) to {args.out} "
          f"in {elapsed:.1f} s ({n / elapsed:.0f} img/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
