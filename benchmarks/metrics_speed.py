"""How fast the metric cores score pairs: cosine similarity, EER, FNMR@FMR and AUC on 10^6 scores.

Run: .venv/bin/python benchmarks/metrics_speed.py [--pairs 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sbpet_metrics import core


def timed(label: str, fn, repeat: int = 3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<48s} {best * 1000:9.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.pairs
    print(f"{n:,} pairs ({n // 2:,} mated + {n - n // 2:,} non-mated), embeddings of dimension {args.dim}")
    emb = core.normalise_rows(rng.normal(size=(20_000, args.dim))).astype(np.float32)
    a, b = rng.integers(0, len(emb), n), rng.integers(0, len(emb), n)
    timed("cosine similarity of the pairs", lambda: core.cosine_pairs(emb, emb, a, b))
    gen, imp = rng.normal(1.5, 1, n // 2), rng.normal(0, 1, n - n // 2)
    eer = timed("EER (all thresholds)", lambda: core.eer_rows(gen, imp))[0][0]
    timed("FNMR at FMR 1e-1, 1e-2, 1e-3", lambda: [core.fnmr_at_fmr_rows(gen, imp, t) for t in (1e-1, 1e-2, 1e-3)])
    scores, labels = np.concatenate([gen, imp]), np.concatenate([np.ones(len(gen)), np.zeros(len(imp))])
    timed("ROC AUC (rank formula)", lambda: core.auc_rows(scores, labels))
    start = time.perf_counter()
    core.cosine_pairs(emb, emb, a, b)
    core.eer_rows(gen, imp)
    [core.fnmr_at_fmr_rows(gen, imp, t) for t in (1e-1, 1e-2, 1e-3)]
    total = time.perf_counter() - start
    print(f"{'total: score + EER + 3 FNMR':<48s} {total * 1000:9.1f} ms  ({'under' if total < 1 else 'OVER'} 1 s)")
    print(f"EER of N(1.5,1) vs N(0,1): {eer:.4f} (theory {0.2266:.4f})")
    g2, i2 = rng.normal(1.5, 1, 1000), rng.normal(0, 1, 1000)
    idx = core.resample_indices(rng, 1000, 1000)
    timed("bootstrap: EER of 1,000 resamples of 2,000 pairs", lambda: core.eer_rows(g2[idx], i2[idx]), repeat=1)


if __name__ == "__main__":
    main()
