"""How fast the metric cores score pairs (cosine similarity, EER, FNMR@FMR, AUC on 10^6 scores) and resample them.

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
    print(f"{label:<60s} {best * 1000:9.1f} ms")
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
    print(f"{'total: score + EER + 3 FNMR':<60s} {total * 1000:9.1f} ms  ({'under' if total < 1 else 'OVER'} 1 s)")
    print(f"EER of N(1.5,1) vs N(0,1): {eer:.4f} (theory {0.2266:.4f})")
    g2, i2 = rng.normal(1.5, 1, 1000), rng.normal(0, 1, 1000)
    idx = core.resample_indices(rng, 1000, 1000)
    timed("bootstrap: EER of 1,000 resamples of 2,000 pairs", lambda: core.eer_rows(g2[idx], i2[idx]), repeat=1)
    # the metric's own bootstrap: identities resampled, the pairs kept and weighted (scores sorted once)
    ids_a, ids_b = rng.integers(0, 500, 2000), rng.integers(0, 500, 2000)
    mated = np.arange(2000) < 1000
    ids_b[mated] = ids_a[mated]
    weights = core.identity_pair_weights(core.resample_counts(rng, 500, 1000), ids_a, ids_b, mated)
    timed("identity bootstrap: EER, 1,000 x 2,000 weighted pairs", lambda: core.weighted_eer(g2, i2, weights[:, mated], weights[:, ~mated]), repeat=1)
    timed("identity bootstrap: FNMR@FMR 1e-2, same weights", lambda: core.weighted_fnmr_at_fmr(g2, i2, weights[:, mated], weights[:, ~mated], 1e-2), repeat=1)
    y = np.repeat([0, 1], 500)
    p = rng.random((6, 1000)) + 0.1 * y
    timed("permutation test: 6 classifiers x 1,000 images, 1,000 perms", lambda: core.privacy_p_values(p, y, 1000, rng), repeat=1)


if __name__ == "__main__":
    main()
