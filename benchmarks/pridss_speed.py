"""Speed of the PriDSS pixel backend, and how often dlib finds LFW3D faces (prints numbers only).

Run from the repo root:

    .venv/bin/python benchmarks/pridss_speed.py [--per-class 8] [--m 10] [--pool-per-class 40]
        [--evaluators real|standin] [--threads 2] [--device cpu] [--repeat 3] [--profile FILE]
    .venv/bin/python benchmarks/pridss_speed.py --geometry 500   # detection rate on 2x500 LFW3D faces
    .venv/bin/python benchmarks/pridss_speed.py --pic-check DATA [--per-class 50] [--pool-per-class 100]
        [--probe-per-class 100] [--split-per-class 500]   # PIC of the chosen fusions, training split of DATA

``--evaluators real`` scores fusions with the default internal evaluators
(``resnet-gender-probe`` fitted on a small disjoint sample, ``faceapi-resnet``),
whose weights come from the model store; ``standin`` uses two cheap pixel
functions, to time the fusion alone. The headline figure is the pixel backend's
"landmarks + fusion" per candidate: dlib alignment of the originals included,
scoring excluded; it is the median of ``--repeat`` passes, the fastest one
printed beside it. Times are wall-clock on whatever else the machine is running:
every figure is printed with the load average at the time, so compare runs made
at the same niceness and thread count. ``--profile FILE`` writes a cProfile of
one fusion pass (read it with ``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from sbpet_bench.api import GenderClassifier, Verifier
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_pridss.plugin import PriDSS

from sbpet_pridss.pixel.geometry import FaceGeometry, installed_shape_predictor


class GreyVerifier(Verifier):
    name = "standin-grey"

    def embed(self, images):
        g = torch.nn.functional.adaptive_avg_pool2d(images.mean(1, keepdim=True), 16).flatten(1)
        return torch.nn.functional.normalize(g - g.mean(1, keepdim=True), dim=1)


class ToneClassifier(GenderClassifier):
    name = "standin-tone"

    def predict_male(self, images):
        return torch.sigmoid(8 * (images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2)) - 0.15))


def geometry_rate(n_per_class: int) -> None:
    faces = load_lfw3d_sample(per_class=n_per_class, seed=5)
    for sizes, threshold in (((90,), 0.0), ((180,), 0.0), ((180,), -0.5), ((180, 135), -0.5)):
        geo = FaceGeometry(installed_shape_predictor(), detect_sizes=sizes, threshold=threshold)
        start = time.perf_counter()
        marks = geo.landmarks(faces.images)
        ms = (time.perf_counter() - start) / len(faces) * 1000
        misses = [faces.ids[i] for i in torch.nonzero(~marks.found).flatten().tolist()]
        print(f"detect sizes={sizes} threshold={threshold}: found {int(marks.found.sum())}/{len(faces)} "
              f"({marks.found.float().mean():.1%}), {ms:.1f} ms/image; missed: {', '.join(misses[:8])}")
    noise = torch.rand(50, 3, 90, 90, generator=torch.Generator().manual_seed(0))
    flat = torch.rand(50, 3, 1, 1, generator=torch.Generator().manual_seed(1)).expand(-1, -1, 90, 90)
    flipped = faces.images[:50].flip(-2)
    geo = FaceGeometry(installed_shape_predictor())
    for label, images in (("noise", noise), ("flat colour", flat), ("upside-down faces", flipped)):
        print(f"false faces in {len(images)} {label} images: {int(geo.landmarks(images).found.sum())}")


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def evaluators(kind: str, work: str, device: str):
    if kind == "standin":
        bare = make_context(work, device=device)
        return ({"standin-tone": ToneClassifier({}, bare), "standin-grey": GreyVerifier({}, bare)}, "standin-tone",
                "standin-grey", None)
    from sbpet_bench.modelstore import ModelStore
    from sbpet_bench.plugins import load_registry

    registry = load_registry()
    store = ModelStore(None, registry.assets)
    ctx = make_context(work, device=device, model_path=store.path)
    verifier = registry.get("verifier", "faceapi-resnet").create({}, ctx)
    ctx = make_context(work, device=device, model_path=store.path, plugins={"faceapi-resnet": verifier})
    probe = registry.get("classifier", "resnet-gender-probe").create({}, ctx)
    probe.fit(load_lfw3d_sample(per_class=60, seed=9, skip=200))
    return {"resnet-gender-probe": probe, "faceapi-resnet": verifier}, "resnet-gender-probe", "faceapi-resnet", store.path


def timed(fn, repeat: int) -> tuple[float, float, float, object]:
    """Median and fastest wall-clock seconds of ``repeat`` calls, the median CPU seconds of this process
    (all its threads; less sensitive to other users of a shared machine than wall-clock), and the last result."""
    times, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), min(times), statistics.median(cpu), result


def training_split_parts(data: str, split_per_class: int, sizes: tuple[int, ...], work: str, device: str) -> list:
    """Identity-disjoint, gender-balanced parts (``sizes`` faces per gender each) of the training split that
    ``sbpet run --data DATA --per-class N`` trains on: the evaluation identities are never in it."""
    import numpy as np

    from sbpet_bench.config import build_config
    from sbpet_bench.pipeline import training_split

    cfg = build_config(None, {"data": data, "per_class": split_per_class, "out": f"{work}/run",
                              "cache_dir": f"{work}/cache", "quiet": True, "device": device})
    split = training_split(cfg)
    by_identity = split.by_identity("train")
    parts: list[list] = [[] for _ in sizes]
    counts = [[0, 0] for _ in sizes]
    for identity in np.random.default_rng(0).permutation(list(by_identity)):
        k = next((k for k, c in enumerate(counts) if min(c) < sizes[k]), None)
        if k is None:
            break
        for rec in by_identity[identity]:  # whole identities go to one part
            if counts[k][rec.gender] < sizes[k]:
                parts[k].append(rec)
                counts[k][rec.gender] += 1
    print(f"training split of {data} at --per-class {split_per_class}: {len(split.train)} faces; parts "
          f"{counts} (female, male), identity-disjoint")
    return [split.face_set(part) for part in parts]


def pic_check(args) -> None:
    """PIC statistics of the chosen fusions with PriDSS's internal models, on the harness's training split."""
    from sbpet_bench.modelstore import ModelStore
    from sbpet_bench.plugins import load_registry

    work = tempfile.mkdtemp(prefix="sbpet-pridss-pic-")
    probe_set, pool, originals = training_split_parts(args.pic_check, args.split_per_class,
                                                      (args.probe_per_class, args.pool_per_class, args.per_class),
                                                      work, args.device)
    registry = load_registry()
    store = ModelStore(None, registry.assets)
    ctx = make_context(work, device=args.device, model_path=store.path)
    verifier = registry.get("verifier", "faceapi-resnet").create({}, ctx)
    ctx = make_context(work, device=args.device, model_path=store.path, plugins={"faceapi-resnet": verifier})
    probe = registry.get("classifier", "resnet-gender-probe").create({}, ctx)
    probe.fit(probe_set)
    ctx = make_context(work, device=args.device, seed=0, model_path=store.path,
                       plugins={"faceapi-resnet": verifier, "resnet-gender-probe": probe})
    pet = PriDSS({"m": args.m}, ctx)
    pet.fit(None, pool)
    diags = []
    start = time.perf_counter()
    with torch.no_grad():
        for batch in originals.batches(32):
            diags += pet.protect(batch).diagnostics
    wall = time.perf_counter() - start
    chosen = [d for d in diags if d["face_found"]]
    pic = torch.tensor([d["pic"][d["chosen"]] for d in chosen])
    p = torch.tensor([d["p_male"][d["chosen"]] for d in chosen])
    sim = torch.tensor([d["similarity"][d["chosen"]] for d in chosen])
    print(f"PriDSS version {PriDSS.version}, M={args.m}: {len(chosen)} of {len(diags)} originals fused "
          f"({len(diags) - len(chosen)} passed through), {wall:.0f} s ({load()})")
    print(f"  chosen PIC mean {pic.mean():.4f}, median {pic.median():.4f}; |2P(male)-1| mean {(2 * p - 1).abs().mean():.4f}; "
          f"SIM mean {sim.mean():.4f}; share with |2P-1| < 0.2: {((2 * p - 1).abs() < 0.2).float().mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=8, help="originals per gender")
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--pool-per-class", type=int, default=40)
    ap.add_argument("--evaluators", choices=("real", "standin"), default="real")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes of each step (median and fastest printed)")
    ap.add_argument("--profile", default="", help="write a cProfile of one fusion pass to this file")
    ap.add_argument("--geometry", type=int, default=0, help="only measure detection on 2xN LFW3D faces")
    ap.add_argument("--pic-check", default="", metavar="DATA", help="instead of timing: PIC statistics of the chosen "
                    "fusions with the internal models (resnet-gender-probe fitted on --probe-per-class, faceapi-resnet), "
                    "originals and pool from the harness's training split of DATA")
    ap.add_argument("--probe-per-class", type=int, default=100, help="with --pic-check: faces per gender fitting the probe")
    ap.add_argument("--split-per-class", type=int, default=500, help="with --pic-check: the run's --per-class, which "
                    "decides the training split")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, niceness {os.nice(0)}, {load()}")
    if args.geometry:
        geometry_rate(args.geometry)
        return
    if args.pic_check:
        pic_check(args)
        return

    work = tempfile.mkdtemp(prefix="sbpet-pridss-")
    plugins, clf, ver, store_path = evaluators(args.evaluators, work, args.device)
    dlib_model = str(installed_shape_predictor())
    ctx = make_context(work, device=args.device, seed=0, plugins=plugins, model_path=lambda name: dlib_model)
    pet = PriDSS({"m": args.m, "classifier": clf, "verifier": ver}, ctx)
    pool = load_lfw3d_sample(per_class=args.pool_per_class, seed=7, skip=100)
    start = time.perf_counter()
    pet.fit(None, pool)
    fit_s = time.perf_counter() - start
    print(f"fit: {len(pool)} pool faces in {fit_s:.2f} s ({fit_s / len(pool) * 1000:.1f} ms/face, dlib landmarks "
          f"and pool filters; {load()})")

    batch = load_lfw3d_sample(per_class=args.per_class, seed=3).all()
    pet.protect(FaceBatchSlice(batch, 2))  # warm-up: thread pools, lazy imports
    with torch.no_grad():
        if args.profile:
            import cProfile

            cProfile.runctx("pet.fused_candidates(batch)", globals(), {"pet": pet, "batch": batch}, args.profile)
        fuse_med, fuse_min, fuse_cpu, parts = timed(lambda: pet.fused_candidates(batch), args.repeat)
        load_fuse = load()
        originals = batch.images[parts["rows"]]
        score_med, _, _, _ = timed(lambda: pet.score(originals, parts["fused"]), args.repeat)
        try:  # the fallback path: the classifier embeds each fusion itself (no reuse of the SIM embeddings)
            alone_med, _, _, _ = timed(lambda: pet.score(originals, parts["fused"], reuse_embeddings=False), args.repeat)
        except TypeError:  # a PriDSS from before the option
            alone_med = float("nan")
        protect_med, _, protect_cpu, result = timed(lambda: pet.protect(batch), args.repeat)
        load_end = load()
    n, m = parts["fused"].shape[:2]
    found = sum(d["face_found"] for d in result.diagnostics)
    print(f"{len(batch)} originals ({found} with a face), M={m}, evaluators={args.evaluators}, repeat={args.repeat}")
    print(f"  landmarks + fusion: {fuse_med / (n * m) * 1000:.1f} ms/candidate (fastest {fuse_min / (n * m) * 1000:.1f}; "
          f"CPU {fuse_cpu / (n * m) * 1000:.1f} ms/candidate; {load_fuse})")
    reused = pet.shared_embedding_classifier(*[plugins[k] for k in (clf, ver)]) is not None
    print(f"  scoring (P(male), SIM): {score_med / (n * m) * 1000:.1f} ms/candidate "
          f"({'reusing the SIM embeddings' if reused else 'classifier embeds on its own'}); "
          f"without reuse: {alone_med / (n * m) * 1000:.1f} ms/candidate")
    print(f"  protect end to end: {protect_med / (n * m) * 1000:.1f} ms/candidate, {protect_med / len(batch) * 1000:.0f} "
          f"ms/image (CPU {protect_cpu / (n * m) * 1000:.1f} ms/candidate; {load_end})")
    pics = [d["pic"][d["chosen"]] for d in result.diagnostics if d["face_found"]]
    p_chosen = [d["p_male"][d["chosen"]] for d in result.diagnostics if d["face_found"]]
    sim_chosen = [d["similarity"][d["chosen"]] for d in result.diagnostics if d["face_found"]]
    print(f"  chosen: mean PIC {sum(pics) / len(pics):.3f}, mean P(male) {sum(p_chosen) / len(p_chosen):.3f}, "
          f"mean SIM {sum(sim_chosen) / len(sim_chosen):.3f}")


def FaceBatchSlice(batch, n):
    from sbpet_bench.api import FaceBatch

    return FaceBatch(batch.images[:n], batch.genders[:n], batch.identities[:n], batch.ids[:n])


if __name__ == "__main__":
    main()
