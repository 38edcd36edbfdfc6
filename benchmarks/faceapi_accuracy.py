"""Accuracy of the face-api.js evaluators on LFW3D (prints the numbers; nothing is asserted).

* gender AUC of ``faceapi-gender`` on every gender-labelled LFW3D image
  (90x90, resized to 112 as the harness does); goal: at least 0.97;
* verification EER of ``faceapi-resnet`` on LFW-style pairs of originals:
  mated = two different images of one person, non-mated = images of two
  different people (sampled with a fixed seed).

Weights come from the model store (fetched from npm when absent). Run from the repo root:

    .venv/bin/python benchmarks/faceapi_accuracy.py [--pairs 3000] [--limit 0] [--device cpu]

``--limit N`` scores only N random labelled images for the AUC (0 = all);
``--pairs`` is the number of mated and of non-mated pairs.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from sbpet_bench.api import FEMALE, MALE
from sbpet_bench.images import load_image, resize, stack_uint8, uint8_to_tensor
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import lfw3d_path, make_context


def labelled_images(root: Path) -> list[tuple[Path, int, str]]:
    """(path, gender, identity) for images in exactly one of the gender lists."""
    males = set((root / "male_names.txt").read_text().split())
    females = set((root / "female_names.txt").read_text().split())
    out = []
    for names, gender in ((males - females, MALE), (females - males, FEMALE)):
        for name in sorted(names):
            identity = name.rsplit("_", 1)[0]
            path = root / "images" / identity / name
            if path.exists():
                out.append((path, gender, identity))
    return out


def score(fn, paths: list[Path], size: int, device: torch.device, batch: int = 256) -> np.ndarray:
    outs = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            images = uint8_to_tensor(stack_uint8([load_image(p) for p in paths[i:i + batch]]), device)
            outs.append(fn(resize(images, size)).cpu().numpy())
            print(f"\r  {min(i + batch, len(paths))}/{len(paths)}", end="", flush=True)
    print()
    return np.concatenate(outs)


def lfw_style_pairs(records: list[tuple[Path, int, str]], n: int, seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    rng = random.Random(seed)
    by_id: dict[str, list[Path]] = defaultdict(list)
    for path, _, identity in records:
        by_id[identity].append(path)
    multi = sorted(i for i, ps in by_id.items() if len(ps) >= 2)
    ids = sorted(by_id)
    mated, non_mated = set(), set()
    while len(mated) < n:
        a, b = rng.sample(by_id[rng.choice(multi)], 2)
        mated.add(tuple(sorted((a, b))))
    while len(non_mated) < n:
        i, j = rng.sample(ids, 2)
        non_mated.add(tuple(sorted((rng.choice(by_id[i]), rng.choice(by_id[j])))))
    return sorted(mated), sorted(non_mated)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate (linearly interpolated where FMR = FNMR) and its threshold."""
    labels = np.r_[np.ones_like(genuine), np.zeros_like(impostor)]
    fmr, tmr, thresholds = roc_curve(labels, np.r_[genuine, impostor])
    fnmr = 1 - tmr
    k = int(np.argmax(fmr >= fnmr))
    if k == 0:
        return float(fmr[0]), float(thresholds[0])
    d0, d1 = fnmr[k - 1] - fmr[k - 1], fnmr[k] - fmr[k]
    t = d0 / (d0 - d1)
    return float(fmr[k - 1] + t * (fmr[k] - fmr[k - 1])), float(thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3000, help="mated and non-mated pairs each (LFW View 2 size: 3000)")
    parser.add_argument("--limit", type=int, default=0, help="score only this many labelled images for the AUC (0 = all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    registry = load_registry()
    store = ModelStore(None, registry.assets)
    context = make_context(tempfile.mkdtemp(prefix="sbpet-bench-"), device=args.device, model_path=store.path)
    gender = registry.get("classifier", "faceapi-gender").create({}, context)
    verifier = registry.get("verifier", "faceapi-resnet").create({}, context)

    records = labelled_images(lfw3d_path())
    scored = records if not args.limit else random.Random(args.seed).sample(records, args.limit)
    print(f"faceapi-gender on {len(scored)} labelled LFW3D images ({device}):")
    start = time.time()
    p_male = score(gender.predict_male, [r[0] for r in scored], gender.input_size, device)
    y = np.array([r[1] for r in scored])
    print(f"  gender AUC = {roc_auc_score(y, p_male):.4f}  (accuracy at 0.5: {np.mean((p_male >= 0.5) == y):.4f}; "
          f"{int(y.sum())} male, {int((1 - y).sum())} female; {time.time() - start:.0f} s)")

    mated, non_mated = lfw_style_pairs(records, args.pairs, args.seed)
    paths = sorted({p for pair in mated + non_mated for p in pair})
    print(f"faceapi-resnet on {len(mated)} mated + {len(non_mated)} non-mated pairs ({len(paths)} images):")
    start = time.time()
    emb = score(verifier.embed, paths, verifier.input_size, device)
    index = {p: i for i, p in enumerate(paths)}

    def similarities(pairs):
        a = emb[[index[p] for p, _ in pairs]]
        b = emb[[index[q] for _, q in pairs]]
        return np.sum(a * b, axis=1)

    rate, threshold = eer(similarities(mated), similarities(non_mated))
    print(f"  verification EER = {rate:.4f} at cosine similarity {threshold:.3f}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
