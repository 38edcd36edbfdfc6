"""PrivacyNet's training cost and what a budget buys, judged by the PET's own internal models (prints numbers; asserts nothing).

Two modes, both on a gender-balanced LFW3D sample:

* ``--time-steps K``: the CPU seconds of K training steps with each ``--precision`` (default fp32 and bf16), measured
  back to back in one process with ``time.process_time`` (robust to a CPU shared with other jobs; ``--threads 1``
  makes it steadier still). No training to the end.
* otherwise: splits the sample into a fitting part and a held-out part, fits PrivacyNet's auxiliary classifiers
  (``resnet-gender-probe``, ``cnn-gender``) and trains PrivacyNet on the fitting part, then prints, on the held-out
  faces, the privacy AUC (max(AUC, 1 - AUC)) of each internal classifier before and after protection and the EER of
  the internal matcher (``faceapi-resnet``) protected-vs-original. The two internal classifiers are biased
  judges (PrivacyNet trains against them), so it also prints an *informed* internal probe: logistic regression on
  ``faceapi-resnet`` embeddings of the protected held-out faces with their gender labels, out-of-fold over a
  5-fold cross-validation grouped by identity (``GroupKFold``), and the same probe fitted on the clean held-out
  faces of the training folds applied to the protected faces of the test fold. The benchmark's reported
  evaluators (faceapi-gender, the human-model panel) are deliberately absent: defaults are never tuned on them.

Run from the repo root:

    .venv/bin/python benchmarks/privacynet_budget.py --time-steps 10 --threads 1
    .venv/bin/python benchmarks/privacynet_budget.py --data ../shared/data/lfw3d [--per-class 200] \
        [--held-out-per-class 100] [--option steps=900 --option precision=fp32 ...]

``--data`` draws the fitting and held-out parts from the harness's training split (identity-disjoint);
without it they are LFW3D samples by file name (the earlier behaviour).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from internal_judges import eer_protected_vs_original, folded_auc, out_of_fold_probes, parse_variant, training_split_parts
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_faceapi.plugin import FaceApiResnet, ResnetGenderProbe
from sbpet_privacynet.plugin import PrivacyNet
from sbpet_privacynet.training import Trainer
from sbpet_weightfree.cnn import CnnGender


def internal_models(work: str, device: str, train, store: ModelStore) -> dict:
    """faceapi-resnet plus the probe and the CNN fitted on ``train``: exactly what PrivacyNet trains against."""
    resnet = FaceApiResnet({}, make_context(work + "/resnet", device=device, model_path=store.path))
    probe = ResnetGenderProbe({}, make_context(work + "/probe", device=device, model_path=store.path,
                                               plugins={"faceapi-resnet": resnet}))
    cnn = CnnGender({}, make_context(work + "/cnn", device=device))
    for name, model in (("resnet-gender-probe", probe), ("cnn-gender", cnn)):
        t0 = time.perf_counter()
        model.fit(train)
        print(f"{name} fitted on {len(train)} faces in {time.perf_counter() - t0:.1f} s")
    return {"faceapi-resnet": resnet, "resnet-gender-probe": probe, "cnn-gender": cnn}


def informed_probe(original: np.ndarray, protected: np.ndarray, genders: np.ndarray, identities: list[str],
                   folds: int = 5) -> dict[str, float]:
    """Privacy AUC of each out-of-fold probe of :func:`internal_judges.out_of_fold_probes`, pooled over the folds."""
    return {k: folded_auc(genders, v) for k, v in out_of_fold_probes(original, protected, genders, identities, folds).items()}


def time_steps(args, options: dict, plugins: dict, train, work: str) -> None:
    """Wall and CPU milliseconds per training step of each variant, interleaved round by round."""
    if args.variant:
        variants = dict(parse_variant(v) for v in args.variant)
    else:
        variants = {f"precision={p}": {"precision": p} for p in (args.precision or ["fp32", "bf16"])}
    threads, pets = {}, {}
    for name, spec in variants.items():
        spec = dict(spec)
        threads[name] = int(spec.pop("threads", 0)) or torch.get_num_threads()
        parsed = {k: PrivacyNet.options[k].parse(v) for k, v in spec.items()}
        pets[name] = PrivacyNet({**options, **parsed}, make_context(f"{work}/pn-{name}", device=args.device, plugins=plugins))
    first = next(iter(pets.values()))
    images, genders = first._decode(train)
    aux = first.aux()
    trainers = {name: Trainer(pet.train_config(), torch.device(args.device)) for name, pet in pets.items()}
    default_threads = torch.get_num_threads()

    def step(name: str) -> None:
        trainer = trainers[name]
        trainer.train_step(*trainer.sample(images, genders), aux)

    for name in trainers:  # warm-up: first passes allocate and pick kernels
        torch.set_num_threads(threads[name])
        step(name)
    wall = {name: [] for name in trainers}
    cpu = {name: [] for name in trainers}
    load_before = os.getloadavg()
    for _ in range(args.rounds):  # interleaved, so that a change in the machine's load hits every variant
        for name in trainers:
            torch.set_num_threads(threads[name])
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.time_steps):
                step(name)
            wall[name].append((time.perf_counter() - t0) / args.time_steps)
            cpu[name].append((time.process_time() - c0) / args.time_steps)
    torch.set_num_threads(default_threads)
    load_after = os.getloadavg()
    base = np.median(wall[next(iter(wall))])
    for name in trainers:
        w, c = np.median(wall[name]), np.median(cpu[name])
        print(f"{name}: {1000 * w:.0f} ms/step wall, {1000 * c:.0f} ms/step CPU ({threads[name]} thread(s); median of "
              f"{args.rounds} rounds of {args.time_steps} steps); {w / base:.2f}x of the first variant's wall time")
    print(f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.2f}' for v in load_after)}; {os.cpu_count()} CPUs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=200, help="faces per gender that fit the aux models and PrivacyNet")
    ap.add_argument("--held-out-per-class", type=int, default=100, help="held-out faces per gender that score it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many steps per precision and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", action="append", help="with --time-steps: precisions to compare (repeatable)")
    ap.add_argument("--variant", action="append", help="with --time-steps: NAME:opt=value,... to compare (repeatable; "
                    "opt is a PrivacyNet option or threads); overrides --precision")
    ap.add_argument("--option", action="append", default=[], help="privacynet option NAME=VALUE")
    ap.add_argument("--data", default=None, help="draw both parts from the harness's training split of this data set "
                    "(default: LFW3D samples by file name, which may share people between the parts)")
    ap.add_argument("--folds", type=int, default=5, help="folds of the informed probe's identity-grouped cross-validation")
    ap.add_argument("--split-per-class", type=int, default=500, help="with --data: the run's --per-class, which decides "
                    "the training split")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    store = ModelStore(None, load_registry().assets)
    work = tempfile.mkdtemp(prefix="sbpet-privacynet-")
    if args.data:
        train, held_out = training_split_parts(args, work)
    else:
        train = load_lfw3d_sample(per_class=args.per_class, seed=0)
        held_out = load_lfw3d_sample(per_class=args.held_out_per_class, seed=0, skip=args.per_class)
    options = {k: PrivacyNet.options[k].parse(v) for k, v in (o.split("=", 1) for o in args.option)}
    plugins = internal_models(work, args.device, train, store)
    if args.time_steps:
        time_steps(args, options, plugins, train, work)
        return

    pet = PrivacyNet(options, make_context(work + "/pn", device=args.device, model_path=store.path, plugins=plugins))
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    pet.fit(train, train)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"trained {pet.steps} steps (batch {pet.batch_size}, precision {pet.opts['precision']}) in {dt:.1f} s wall, "
          f"{dc:.1f} s CPU: {dt / pet.steps:.2f} s/step wall, {dc / pet.steps:.3f} s/step CPU incl. decoding; "
          f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}, after "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs; G's checkpoint in {work}/pn")

    batch = held_out.all(size=pet.input_size)
    y = batch.genders.numpy()
    resnet = plugins["faceapi-resnet"]
    with torch.no_grad():
        out = pet.protect(batch).images
        for name in ("resnet-gender-probe", "cnn-gender"):
            clf = plugins[name]
            before, after = clf.predict_male(batch.images).numpy(), clf.predict_male(out).numpy()
            print(f"{name} (internal): privacy AUC {folded_auc(y, before):.3f} -> {folded_auc(y, after):.3f}")
        original, protected = resnet.embed(batch.images), resnet.embed(out)
    cos = (original * protected).sum(1).numpy()
    print(f"faceapi-resnet (internal): EER protected-vs-original "
          f"{eer_protected_vs_original(protected, original, list(batch.identities)):.3f}; cosine mean {cos.mean():.3f}, "
          f"min {cos.min():.3f}; mean |change| {np.abs((out - batch.images).numpy()).mean():.4f}")
    probe = informed_probe(original.numpy(), protected.numpy(), y, list(batch.identities), folds=args.folds)
    print(f"informed probe (internal; logistic regression on faceapi-resnet embeddings, {args.folds}-fold GroupKFold by "
          f"identity on the {len(y)} held-out faces): privacy AUC clean {probe['clean']:.3f}; protected, fitted on "
          f"protected {probe['informed']:.3f}; protected, fitted on clean {probe['clean->protected']:.3f}")


if __name__ == "__main__":
    main()
