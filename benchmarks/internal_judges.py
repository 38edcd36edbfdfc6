"""How the PET benchmarks judge a setting with a PET's internal models only (imported by pridss_defaults.py and
privacynet_budget.py and informed_recipes.py; not a script).

Defaults are never tuned on the leaderboard's evaluators, so both benchmarks score protected training faces with
the same three judges built from the PET's own recogniser's embeddings: a folded privacy AUC, logistic-regression
gender probes fitted out-of-fold with folds grouped by identity (the attacker who knows the method, and the one
who does not adapt), and the recogniser's protected-vs-original EER.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import GroupKFold

from sbpet_bench.config import build_config
from sbpet_bench.pipeline import training_split


def folded_auc(genders: np.ndarray, p_male: np.ndarray) -> float:
    """max(AUC, 1 - AUC): how well the scores tell the genders apart, whichever way round."""
    auc = roc_auc_score(genders, p_male)
    return float(max(auc, 1 - auc))


def out_of_fold_probes(original: np.ndarray, protected: np.ndarray, genders: np.ndarray, identities: list[str],
                       folds: int = 5) -> dict[str, np.ndarray]:
    """Out-of-fold P(male) of logistic-regression gender probes on embeddings, folds grouped by identity.

    ``clean``: fitted on clean faces, scored on clean faces (how readable gender is in the embeddings at all);
    ``informed``: fitted on protected faces with their labels, scored on protected faces of other people (an
    attacker who knows the PET and retrains); ``clean->protected``: fitted on clean faces, scored on the protected
    faces of the held-out fold (an attacker who does not adapt).
    """
    oof = {k: np.zeros(len(genders)) for k in ("clean", "informed", "clean->protected")}
    for fit_idx, test_idx in GroupKFold(n_splits=folds).split(original, genders, np.asarray(identities)):
        on_clean = LogisticRegression(max_iter=2000).fit(original[fit_idx], genders[fit_idx])
        on_protected = LogisticRegression(max_iter=2000).fit(protected[fit_idx], genders[fit_idx])
        oof["clean"][test_idx] = on_clean.predict_proba(original[test_idx])[:, 1]
        oof["clean->protected"][test_idx] = on_clean.predict_proba(protected[test_idx])[:, 1]
        oof["informed"][test_idx] = on_protected.predict_proba(protected[test_idx])[:, 1]
    return oof


def eer_protected_vs_original(protected: torch.Tensor, original: torch.Tensor, identities: list[str]) -> float:
    """EER of cosine scores: genuine = (protected i, original i), impostor = (protected i, original j of another person)."""
    scores = (protected @ original.T).numpy()
    ids = np.asarray(identities)
    genuine, impostor = np.diag(scores), scores[ids[:, None] != ids[None, :]]
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(genuine)), np.zeros(len(impostor))], np.r_[genuine, impostor])
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fnr[i] + fpr[i]) / 2)


def training_split_parts(args, work: str):
    """Fitting and held-out parts of the harness's training split, identity-disjoint, gender-balanced.

    The split is the one ``sbpet run --data DATA --per-class N`` trains on (evaluation identities, dev and
    test, are never in it), so the held-out faces judge a setting without touching the evaluation sample.
    """
    cfg = build_config(None, {"data": args.data, "per_class": args.split_per_class, "out": f"{work}/run",
                              "cache_dir": f"{work}/cache", "quiet": True, "device": args.device})
    split = training_split(cfg)
    by_identity = split.by_identity("train")
    order = np.random.default_rng(0).permutation(list(by_identity))
    held, fit = [], []
    counts = {"held": [0, 0], "fit": [0, 0]}
    for identity in order:  # whole identities go to one part: the held-out people are unseen in fitting
        recs = by_identity[identity]
        part = "held" if min(counts["held"]) < args.held_out_per_class else "fit"
        target, quota = (held, args.held_out_per_class) if part == "held" else (fit, args.per_class)
        for rec in recs:
            if counts[part][rec.gender] < quota:
                target.append(rec)
                counts[part][rec.gender] += 1
    print(f"harness training split of {args.data} at --per-class {args.split_per_class}: {len(split.train)} faces; "
          f"fitting part {counts['fit']} and held-out part {counts['held']} (female, male), identity-disjoint")
    return split.face_set(fit), split.face_set(held)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:key=value,key=value`` -> (NAME, {key: value}): a named setting given on a benchmark's command line."""
    name, _, spec = text.partition(":")
    return name, dict(kv.split("=", 1) for kv in spec.split(",") if kv)
