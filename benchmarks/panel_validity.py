"""Validity of the evaluator panel on LFW3D originals (prints a table; nothing is asserted).

For every gender classifier: the AUC on a gender-balanced sample of labelled LFW3D images; for every
verifier: the EER on LFW-style pairs (mated = two images of one person, non-mated = two people,
drawn as in ``faceapi_accuracy.py``); for each, images per second (this machine, batch as set).
The bar for a default (primary) panel member: gender AUC >= 0.90, EER <= 0.20.

Featurizers are checked for what a realism feature must do and an identity embedding must not:
the Fréchet distance between two halves of the originals (small), between originals and blurred,
noised or JPEG-compressed copies (larger), and its verification EER (near 0.5 = no identity).

Weights come from the model store (fetched from npm when absent). Run from the repo root:

    uv run python benchmarks/panel_validity.py [--per-class 1000] [--pairs 1500] [--only hm-gear,faceapi-gender]
        [--set hm-gear.pad=0.3] [--device cpu]
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from scipy import linalg
from sklearn.metrics import roc_auc_score

from faceapi_accuracy import eer, labelled_images, lfw_style_pairs  # same folder: the pairs are drawn the same way
from sbpet_bench.api import FEMALE, MALE, resize
from sbpet_bench.images import load_image, stack_uint8
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import lfw3d_path, make_context

CLASSIFIERS = ["faceapi-gender", "hm-faceres-gender", "hm-faceres-deep-gender", "hm-gear", "hm-ssrnet", "hm-gender"]
VERIFIERS = ["faceapi-resnet", "hm-faceres", "hm-faceres-deep", "hm-mobileface", "hm-mobilefacenet"]
FEATURIZERS = ["hm-antispoof"]
AUC_BAR, EER_BAR = 0.90, 0.20


def run_batched(fn, images: torch.Tensor, size: int | None, device: torch.device, batch: int) -> tuple[np.ndarray, float]:
    """fn over uint8 (N, 3, H, W) images resized as the harness does; returns outputs and images per second."""
    outs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = resize(images[i:i + batch].to(device).float() / 255.0, size)
            outs.append(fn(x).float().cpu().numpy())
    return np.concatenate(outs), len(images) / (time.perf_counter() - start)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(ca @ cb, disp=False)
    return float(mu @ mu + np.trace(ca + cb - 2 * np.real(root)))


def degraded(images: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """uint8 copies: gaussian blur (sigma 1.5 px at 90 px), gaussian noise (sd 12/255) or JPEG quality 10."""
    from torchvision.transforms.functional import gaussian_blur

    if kind == "blur":
        return gaussian_blur(images.float(), kernel_size=9, sigma=1.5).round().clamp(0, 255).to(torch.uint8)
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return (images.float() + 12.0 * torch.randn(images.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
    out = []
    for im in images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=10)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        plugin, dot, option = key.partition(".")
        if not (sep and dot and plugin and option):
            raise SystemExit(f"--set {item!r}: expected PLUGIN.OPTION=VALUE, e.g. hm-gear.pad=0.3")
        options.setdefault(plugin, {})[option] = value
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=1000, help="images per gender for the AUC (0 = all labelled)")
    parser.add_argument("--pairs", type=int, default=1500, help="mated and non-mated pairs each")
    parser.add_argument("--only", default="", help="comma-separated evaluator names (default: the whole panel)")
    parser.add_argument("--set", action="append", default=[], help="PLUGIN.OPTION=VALUE, e.g. hm-gear.pad=0.3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    device = torch.device(args.device)
    registry = load_registry()
    store = ModelStore(None, registry.assets)
    context = make_context(tempfile.mkdtemp(prefix="sbpet-bench-"), device=args.device, model_path=store.path)
    only = {n for n in args.only.split(",") if n}
    sets = parse_sets(args.set)

    def create(kind: str, name: str):
        entry = registry.get(kind, name)
        return entry.create(entry.parse_options(sets.get(name, {})), context)

    records = labelled_images(lfw3d_path())
    rng = random.Random(args.seed)
    sample = []
    for gender in (MALE, FEMALE):
        group = [r for r in records if r[1] == gender]
        sample += group if not args.per_class else rng.sample(group, min(args.per_class, len(group)))
    mated, non_mated = lfw_style_pairs(records, args.pairs, args.seed)
    pair_paths = sorted({p for pair in mated + non_mated for p in pair})
    index = {p: i for i, p in enumerate(pair_paths)}

    def load(paths) -> torch.Tensor:
        return torch.from_numpy(stack_uint8([load_image(p) for p in paths])).permute(0, 3, 1, 2).contiguous()

    gender_images, y = load([r[0] for r in sample]), np.array([r[1] for r in sample])
    print(f"LFW3D originals: {len(sample)} images for the AUC ({int(y.sum())} male, {int((1 - y).sum())} female); "
          f"{len(mated)} mated + {len(non_mated)} non-mated pairs over {len(pair_paths)} images; device {device}; "
          f"batch {args.batch}; torch threads {torch.get_num_threads()}")
    pair_images = load(pair_paths)
    rows = []

    def pair_eer(emb: np.ndarray) -> float:
        sims = [np.sum(emb[[index[a] for a, _ in pairs]] * emb[[index[b] for _, b in pairs]], axis=1) for pairs in (mated, non_mated)]
        return eer(*sims)[0]

    for name in CLASSIFIERS:
        if only and name not in only:
            continue
        model = create("classifier", name)
        p_male, speed = run_batched(model.predict_male, gender_images, model.input_size, device, args.batch)
        auc = roc_auc_score(y, p_male)
        rows.append((name, "gender", f"AUC {auc:.4f}", auc >= AUC_BAR, speed, getattr(model, "evaluator_role", "")))
        print(f"  {name}: gender AUC {auc:.4f} (accuracy at 0.5: {np.mean((p_male >= 0.5) == y):.4f}), {speed:.1f} img/s", flush=True)
    for name in VERIFIERS:
        if only and name not in only:
            continue
        model = create("verifier", name)
        emb, speed = run_batched(model.embed, pair_images, model.input_size, device, args.batch)
        rate = pair_eer(emb)
        rows.append((name, "verification", f"EER {rate:.4f}", rate <= EER_BAR, speed, getattr(model, "evaluator_role", "")))
        print(f"  {name}: verification EER {rate:.4f} ({emb.shape[1]}-D), {speed:.1f} img/s", flush=True)
    for name in FEATURIZERS:
        if only and name not in only:
            continue
        model = create("featurizer", name)
        half = len(gender_images) // 2
        order = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(gender_images)))
        feats, speed = run_batched(model.features, gender_images[order], model.input_size, device, args.batch)
        figures = [f"halves {frechet(feats[:half], feats[half:]):.3g}"]
        for kind in ("blur", "noise", "jpeg"):
            other, _ = run_batched(model.features, degraded(gender_images[order[half:]], kind, args.seed), model.input_size,
                                   device, args.batch)
            figures.append(f"{kind} {frechet(feats[:half], other):.3g}")
        emb, _ = run_batched(lambda x, m=model: torch.nn.functional.normalize(m.features(x), dim=1), pair_images,
                             model.input_size, device, args.batch)
        rate = pair_eer(emb)
        rows.append((name, "realism", "Fréchet " + ", ".join(figures) + f"; identity EER {rate:.3f}", None, speed,
                     getattr(model, "evaluator_role", "")))
        print(f"  {name}: Fréchet distance original half vs: " + ", ".join(figures) + f"; identity EER {rate:.3f}, "
              f"{speed:.1f} img/s", flush=True)

    print("\n| evaluator | task | figure on LFW3D originals | passes the bar | img/s | role |")
    print("|---|---|---|---|---|---|")
    for name, task, figure, passed, speed, role in rows:
        verdict = "–" if passed is None else ("yes" if passed else "no")
        print(f"| {name} | {task} | {figure} | {verdict} | {speed:.1f} | {role or '(none)'} |")


if __name__ == "__main__":
    main()
