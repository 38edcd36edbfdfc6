"""PrivacyNet's training cost and progress with the real auxiliary networks (prints numbers; asserts nothing).

Fits the auxiliary classifiers (``resnet-gender-probe``, ``cnn-gender``) on a small gender-balanced LFW3D sample, trains
PrivacyNet for ``--steps`` steps on the same faces, and prints seconds per step,
the projected time of the default budget, and the aux probe's and
``faceapi-gender``'s P(male) on held-out faces before and after protection.
Run from the repo root:

    .venv/bin/python benchmarks/privacynet_budget.py [--steps 20] [--per-class 64] [--device cpu] \
        [--option w_id=5 --option target=flip ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_faceapi.plugin import FaceApiGender, FaceApiResnet, ResnetGenderProbe
from sbpet_privacynet.plugin import DEFAULT_STEPS, PrivacyNet
from sbpet_weightfree.cnn import CnnGender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=64, help="training faces per gender")
    ap.add_argument("--test-per-class", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--option", action="append", default=[], help="privacynet option NAME=VALUE")
    args = ap.parse_args()

    registry = load_registry()
    store = ModelStore(None, registry.assets)
    work = tempfile.mkdtemp(prefix="sbpet-privacynet-")
    base = make_context(work + "/aux", device=args.device, model_path=store.path)
    resnet = FaceApiResnet({}, base)
    probe_ctx = make_context(work + "/probe", device=args.device, model_path=store.path, plugins={"faceapi-resnet": resnet})
    probe = ResnetGenderProbe({}, probe_ctx)
    train = load_lfw3d_sample(per_class=args.per_class, seed=0)
    test = load_lfw3d_sample(per_class=args.test_per_class, seed=0, skip=args.per_class)
    t0 = time.perf_counter()
    probe.fit(train)
    print(f"probe fitted on {len(train)} faces in {time.perf_counter() - t0:.1f} s")
    cnn = CnnGender({}, make_context(work + "/cnn", device=args.device))
    t0 = time.perf_counter()
    cnn.fit(train)
    print(f"cnn-gender trained on {len(train)} faces in {time.perf_counter() - t0:.1f} s")

    options = {k: PrivacyNet.options[k].parse(v) for k, v in (o.split("=", 1) for o in args.option)}
    ctx = make_context(work + "/pn", device=args.device, model_path=store.path,
                       plugins={"faceapi-resnet": resnet, "resnet-gender-probe": probe, "cnn-gender": cnn})
    pet = PrivacyNet({**options, "steps": args.steps}, ctx)
    t0 = time.perf_counter()
    pet.fit(train, train)
    dt = time.perf_counter() - t0
    print(f"{args.steps} steps in {dt:.1f} s: {dt / args.steps:.2f} s/step (incl. decoding); "
          f"default budget of {DEFAULT_STEPS} steps ~ {dt / args.steps * DEFAULT_STEPS / 60:.1f} min")

    gender = FaceApiGender({}, base)
    batch = test.all(size=pet.input_size)
    y = test.genders.numpy()
    with torch.no_grad():
        out = pet.protect(batch).images
        for name, clf in (("resnet-gender-probe (aux)", probe), ("cnn-gender (aux)", cnn), ("faceapi-gender (evaluator)", gender)):
            before, after = clf.predict_male(batch.images).numpy(), clf.predict_male(out).numpy()
            print(f"{name}: AUC {roc_auc_score(y, before):.3f} -> {roc_auc_score(y, after):.3f}; "
                  f"mean P(male) men {before[y == 1].mean():.2f} -> {after[y == 1].mean():.2f}, "
                  f"women {before[y == 0].mean():.2f} -> {after[y == 0].mean():.2f}")
        cos = (resnet.embed(batch.images) * resnet.embed(out)).sum(1).numpy()
    print(f"faceapi-resnet cosine(original, protected): mean {cos.mean():.3f}, min {cos.min():.3f}; "
          f"mean |change| {np.abs((out - batch.images).numpy()).mean():.4f}")


if __name__ == "__main__":
    main()
