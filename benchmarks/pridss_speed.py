"""Speed of the PriDSS pixel backend, and how often dlib finds LFW3D faces (prints numbers only).

Run from the repo root:

    .venv/bin/python benchmarks/pridss_speed.py [--per-class 8] [--m 10] [--pool-per-class 40]
        [--evaluators real|standin] [--threads 2] [--device cpu]
    .venv/bin/python benchmarks/pridss_speed.py --geometry 500   # detection rate on 2x500 LFW3D faces

``--evaluators real`` scores fusions with the default internal evaluators
(``resnet-gender-probe`` fitted on a small disjoint sample, ``faceapi-resnet``),
whose weights come from the model store; ``standin`` uses two cheap pixel
functions, to time the fusion alone. Times are wall-clock on whatever else the
machine is running: report them with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from sbpet_bench.api import GenderClassifier, Verifier
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_pridss.geometry import FaceGeometry, installed_shape_predictor
from sbpet_pridss.plugin import PriDSS


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


def evaluators(kind: str, work: str, device: str):
    if kind == "standin":
        return {"standin-tone": ToneClassifier(), "standin-grey": GreyVerifier()}, "standin-tone", "standin-grey", None
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=8, help="originals per gender")
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--pool-per-class", type=int, default=40)
    ap.add_argument("--evaluators", choices=("real", "standin"), default="real")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--geometry", type=int, default=0, help="only measure detection on 2xN LFW3D faces")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.geometry:
        geometry_rate(args.geometry)
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
    print(f"fit: {len(pool)} pool faces in {fit_s:.2f} s ({fit_s / len(pool) * 1000:.1f} ms/face, dlib landmarks)")

    batch = load_lfw3d_sample(per_class=args.per_class, seed=3).all()
    pet.protect(FaceBatchSlice(batch, 2))  # warm-up: thread pools, lazy imports
    with torch.no_grad():
        t0 = time.perf_counter()
        parts = pet.fused_candidates(batch)
        t1 = time.perf_counter()
        pet.score(batch.images[parts["rows"]], parts["fused"])
        t2 = time.perf_counter()
        result = pet.protect(batch)
        t3 = time.perf_counter()
        # The fallback path: the classifier embeds each fusion itself (no reuse of the SIM embeddings).
        reuse = pet.shared_embedding_classifier
        pet.shared_embedding_classifier = lambda classifier, verifier: None
        t4 = time.perf_counter()
        pet.score(batch.images[parts["rows"]], parts["fused"])
        t5 = time.perf_counter()
        pet.shared_embedding_classifier = reuse
    n, m = parts["fused"].shape[:2]
    found = sum(d["face_found"] for d in result.diagnostics)
    print(f"{len(batch)} originals ({found} with a face), M={m}, evaluators={args.evaluators}")
    print(f"  landmarks + fusion: {(t1 - t0) / (n * m) * 1000:.1f} ms/candidate")
    reused = reuse(*[plugins[k] for k in (clf, ver)]) is not None
    print(f"  scoring (P(male), SIM): {(t2 - t1) / (n * m) * 1000:.1f} ms/candidate "
          f"({'reusing the SIM embeddings' if reused else 'classifier embeds on its own'}); "
          f"without reuse: {(t5 - t4) / (n * m) * 1000:.1f} ms/candidate")
    print(f"  protect end to end: {(t3 - t2) / (n * m) * 1000:.1f} ms/candidate, {(t3 - t2) / len(batch) * 1000:.0f} ms/image")
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
