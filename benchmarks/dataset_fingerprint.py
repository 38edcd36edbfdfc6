"""Cost of the content fingerprint of a data set: first run (every file hashed) and memoised runs.

    uv run python benchmarks/dataset_fingerprint.py --data ../shared/data/lfw3d

Reads the data set with its source (auto-detected), then times :func:`sbpet_bench.data.dataset_fingerprint`
three ways, each with a fresh or warm memo folder in a temporary directory: the first run hashes
every file's bytes; the memoised run only stats them; and, for scale, the source's read itself.
The operating system's page cache is not dropped, so "first" is a warm-disk figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sbpet_bench.data import dataset_fingerprint
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import make_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    registry = load_registry()
    entry = next(e for e in registry.all_entries("dataset") if e.create({}, make_context()).detect(args.data))
    t0 = time.perf_counter()
    records, skipped = entry.create({}, make_context()).read(args.data)
    read_s = time.perf_counter() - t0
    total_bytes = sum(Path(r.path).stat().st_size for r in records)
    print(f"source {entry.name}: {len(records)} records ({total_bytes / 2**20:.1f} MiB), {len(skipped)} skipped, "
          f"read in {read_s:.2f} s")
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as memo:
            t0 = time.perf_counter()
            first = dataset_fingerprint(records, Path(memo))
            first_s = time.perf_counter() - t0
            memo_kib = sum(p.stat().st_size for p in Path(memo).glob("*.json")) / 1024
            t0 = time.perf_counter()
            again = dataset_fingerprint(records, Path(memo))
            again_s = time.perf_counter() - t0
        assert first == again
        print(f"run {k + 1}: first (hash all bytes) {first_s:.2f} s, memoised {again_s:.2f} s, memo {memo_kib:.0f} KiB, "
              f"fingerprint {first}")


if __name__ == "__main__":
    main()
