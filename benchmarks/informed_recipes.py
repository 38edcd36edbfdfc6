"""Training recipes of the informed tier's classifiers: fit time and attacker strength, on the training split.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/informed_recipes.py --data ../shared/data/lfw3d \\
        [--pets blur,noise] [--per-class 1000] [--held-out-per-class 300] [--seeds 0,1]
        [--recipe NAME:classifier:opt=value,...]

Prints numbers only: asserts nothing and changes nothing. The informed tier (``sbpet_bench/pipeline/
informed.py``) trains ``cnn-gender`` and ``faceapi-gender-ft`` on protected training faces; a cheaper recipe
may replace the full one only if the attacker it trains is as strong. Each recipe is fitted, for every PET
and for the originals, as the tier fits it (``informed``: the protected faces; ``mixed``: clean and protected
together) and scored on protected faces of other people.

Data: the harness's training split at ``sbpet run --data DATA --per-class N`` (``--split-per-class``; the
evaluation identities, dev and test, are never in it), cut into an identity-disjoint fitting part
(``--per-class`` faces per gender, the tier's default is 1,000 in the cost goal) and a held-out part
(``--held-out-per-class``). No reported number is computed on the evaluation sample.

Columns: fit seconds (wall, with the load average), then the folded privacy AUC max(AUC, 1 - AUC) on the
held-out protected faces with its bootstrap standard error (faces resampled within each gender). Seeds (``--seeds``) give the
spread that training alone has: a recipe is as strong as another when its AUCs are within that spread.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from internal_judges import folded_auc, parse_variant, training_split_parts
from sbpet_bench.api import FaceBatch
from sbpet_bench.images import tensor_to_uint8
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.pipeline.informed import ArrayFaceSet
from sbpet_bench.plugins import load_registry
from sbpet_bench.testing import make_context
from sbpet_metrics.auc import bootstrap_auc, fold

DEFAULT_RECIPES = (
    "cnn-fp32:cnn-gender:",
    "cnn-bf16:cnn-gender:precision=bfloat16",
    "ft-fp32:faceapi-gender-ft:",
    "ft-bf16:faceapi-gender-ft:precision=bfloat16",
)


def parse_recipe(text: str) -> tuple[str, str, dict[str, str]]:
    """``NAME:classifier:key=value,...`` -> (NAME, classifier, {key: value})."""
    label, _, rest = text.partition(":")
    classifier, options = parse_variant(rest)
    return label, classifier, options


def decoded(faces) -> np.ndarray:
    """(N, H, W, 3) uint8 originals at the run's working size."""
    return np.concatenate([tensor_to_uint8(b.images) for b in faces.batches(256)])


def protected(pet, faces, images: np.ndarray) -> np.ndarray:
    """The PET's output, rounded to uint8 as the harness stores protected images."""
    recs, out = faces.records, []
    for start in range(0, len(images), 64):
        sl = slice(start, start + 64)
        batch = FaceBatch(torch.from_numpy(images[sl]).permute(0, 3, 1, 2).float() / 255.0,
                          torch.tensor([r.gender for r in recs[sl]]), [r.identity for r in recs[sl]], [r.id for r in recs[sl]])
        with torch.no_grad():
            out.append(tensor_to_uint8(pet.protect(batch).images))
    return np.concatenate(out)


def folded_auc_se(y: np.ndarray, p: np.ndarray, n_boot: int = 200) -> tuple[float, float]:
    """Folded AUC and the standard deviation of its class-stratified bootstrap (the metrics plugin's resampling)."""
    return folded_auc(y, p), float(fold(bootstrap_auc(p, y, n_boot, np.random.default_rng(0))).std())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--pets", default="blur,noise")
    ap.add_argument("--per-class", type=int, default=1000, help="fitting faces per gender")
    ap.add_argument("--held-out-per-class", type=int, default=300, help="held-out faces per gender that score a recipe")
    ap.add_argument("--split-per-class", type=int, default=500, help="the run's --per-class, which decides the training split")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--recipe", action="append", help="NAME:classifier:opt=value,... (repeatable; default: "
                    + "; ".join(DEFAULT_RECIPES) + ")")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    registry = load_registry()
    store = ModelStore(None, registry.assets)
    work = tempfile.mkdtemp(prefix="sbpet-informed-recipes-")
    fit_faces, held_faces = training_split_parts(args, work)
    clean_fit, clean_held = decoded(fit_faces), decoded(held_faces)
    fit_recs, held_recs, device = fit_faces.records, held_faces.records, torch.device(args.device)
    y_held = np.array([r.gender for r in held_recs])
    # condition/variant -> (training set, held-out set); the mixed set is the clean part, then the protected
    # part, as the tier builds it (faceapi-gender-ft then reuses both parts' frozen maps)
    sets = {"originals/informed": (ArrayFaceSet([clean_fit], fit_recs, device), ArrayFaceSet([clean_held], held_recs, device))}
    for name in args.pets.split(","):
        entry = registry.get("pet", name)
        pet = entry.create(entry.parse_options({}), make_context(f"{work}/{name}", device=args.device, model_path=store.path))
        prot_fit, prot_held = protected(pet, fit_faces, clean_fit), protected(pet, held_faces, clean_held)
        held = ArrayFaceSet([prot_held], held_recs, device)
        sets[f"{name}/informed"] = (ArrayFaceSet([prot_fit], fit_recs, device), held)
        sets[f"{name}/mixed"] = (ArrayFaceSet([clean_fit, prot_fit], [*fit_recs, *fit_recs], device), held)
    print(f"{len(clean_fit)} fitting and {len(clean_held)} held-out faces; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print("| recipe | seed | set | fit s | AUC +- se | load |")
    print("|---|---|---|---|---|---|")
    for text in args.recipe or DEFAULT_RECIPES:
        label, classifier, raw = parse_recipe(text)
        entry = registry.get("classifier", classifier)
        options = entry.parse_options(raw)
        for seed in (int(s) for s in args.seeds.split(",")):
            for set_name, (train, held) in sets.items():
                ctx = make_context(Path(work) / label / str(seed) / set_name.replace("/", "-"), device=args.device,
                                   seed=seed, model_path=store.path)
                clf = entry.create(options, ctx)
                t0 = time.perf_counter()
                clf.fit(train)
                seconds = time.perf_counter() - t0
                with torch.no_grad():
                    p = clf.predict_male(held.all(size=clf.input_size).images).numpy()
                auc, se = folded_auc_se(y_held, p)
                print(f"| {label} | {seed} | {set_name} | {seconds:.1f} | {auc:.4f} +- {se:.4f} | {os.getloadavg()[0]:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
