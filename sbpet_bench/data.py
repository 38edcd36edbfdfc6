"""Face sets on disk: fingerprints, seeded balanced sampling and identity-disjoint splits."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .api import FEMALE, MALE, FaceBatch, FaceRecord
from .images import ImageDecodeError, load_image, uint8_to_tensor


def dataset_fingerprint(records: Sequence[FaceRecord]) -> str:
    """A hash of the file list with sizes, modification times and labels (no image reads)."""
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r.id):
        try:
            st = os.stat(rec.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{rec.id}\t{rec.gender}\t{rec.identity}\t{stamp}\n".encode())
    return h.hexdigest()[:16]


class DiskFaceSet:
    """A FaceSet (see :class:`sbpet_bench.api.FaceSet`) that decodes images lazily from disk."""

    def __init__(self, records: Sequence[FaceRecord], image_size: int, device: torch.device | str = "cpu"):
        self.records = list(records)
        self.image_size = image_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.records)

    def load_uint8(self, records: Sequence[FaceRecord]) -> np.ndarray:
        return np.stack([load_image(r.path, self.image_size) for r in records])

    def _batch(self, records: Sequence[FaceRecord], size: int | None) -> FaceBatch:
        from .images import resize

        images = resize(uint8_to_tensor(self.load_uint8(records), self.device), size)
        genders = torch.tensor([-1 if r.gender is None else r.gender for r in records], dtype=torch.int64, device=self.device)
        return FaceBatch(images, genders, [r.identity for r in records], [r.id for r in records])

    def batches(self, batch_size: int, size: int | None = None) -> Iterator[FaceBatch]:
        for start in range(0, len(self.records), batch_size):
            yield self._batch(self.records[start : start + batch_size], size)

    def all(self, size: int | None = None) -> FaceBatch:
        return self._batch(self.records, size)


@dataclass
class SplitSpec:
    """How to sample the evaluation set and split the rest; part of every cache key."""

    per_class: int | None = 1000  # None: every labelled image of the evaluation identities
    seed: int = 0
    max_per_identity: int = 2  # evaluation images per identity; 0 = no limit
    train_per_class: int = 1000
    pool_per_class: int = 500
    pool_fraction: float = 0.3  # share of the non-evaluation identities that go to the candidate pool


@dataclass
class Splits:
    eval: list[FaceRecord]
    train: list[FaceRecord]
    pool: list[FaceRecord]
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({k: [asdict(r) for r in getattr(self, k)] for k in ("eval", "train", "pool")}
                          | {"skipped": self.skipped, "warnings": self.warnings})

    @classmethod
    def from_json(cls, text: str) -> "Splits":
        raw = json.loads(text)
        return cls(*([FaceRecord(**r) for r in raw[k]] for k in ("eval", "train", "pool")),
                   skipped=raw["skipped"], warnings=raw["warnings"])


def _usable(rec: FaceRecord, skipped: list[dict[str, str]], checked: dict[str, bool]) -> bool:
    """Decode once to make sure the image can be used; failures are listed, not fatal."""
    if rec.id not in checked:
        try:
            load_image(rec.path)
            checked[rec.id] = True
        except ImageDecodeError as exc:
            skipped.append({"path": rec.path, "reason": str(exc)})
            checked[rec.id] = False
    return checked[rec.id]


def _take_balanced(identities: list[str], by_identity: dict[str, list[FaceRecord]], quota: int | None,
                   per_identity: int, rng: np.random.Generator, skipped: list, checked: dict) -> tuple[list[FaceRecord], list[str]]:
    """Walk identities in order, taking up to ``per_identity`` usable images of each class until each quota is met."""
    taken: list[FaceRecord] = []
    used: list[str] = []
    counts = {MALE: 0, FEMALE: 0}
    for identity in identities:
        if quota is not None and all(c >= quota for c in counts.values()):
            break
        recs = by_identity[identity]
        order = rng.permutation(len(recs))
        got = 0
        for i in order:
            rec = recs[i]
            if per_identity and got >= per_identity:
                break
            if quota is not None and counts[rec.gender] >= quota:
                continue
            if _usable(rec, skipped, checked):
                taken.append(rec)
                counts[rec.gender] += 1
                got += 1
        if got:
            used.append(identity)
    return taken, used


def split(records: Sequence[FaceRecord], spec: SplitSpec) -> Splits:
    """Seeded, gender-balanced evaluation sample plus identity-disjoint training and candidate-pool splits."""
    skipped: list[dict[str, str]] = []
    warnings: list[str] = []
    checked: dict[str, bool] = {}
    labelled = [r for r in records if r.gender in (MALE, FEMALE)]
    by_identity: dict[str, list[FaceRecord]] = defaultdict(list)
    for rec in sorted(labelled, key=lambda r: r.id):
        by_identity[rec.identity].append(rec)
    rng = np.random.default_rng(spec.seed)
    identities = sorted(by_identity)
    identities = [identities[i] for i in rng.permutation(len(identities))]

    if spec.per_class is not None:
        eval_recs, eval_ids = _take_balanced(identities, by_identity, spec.per_class, spec.max_per_identity, rng, skipped, checked)
        rest = [i for i in identities if i not in set(eval_ids)]
        n_pool = int(round(len(rest) * spec.pool_fraction))
        pool_ids, train_ids = rest[:n_pool], rest[n_pool:]
        train_recs, _ = _take_balanced(train_ids, by_identity, spec.train_per_class, 0, rng, skipped, checked)
        pool_recs, _ = _take_balanced(pool_ids, by_identity, spec.pool_per_class, 0, rng, skipped, checked)
        for gender, label in ((MALE, "male"), (FEMALE, "female")):
            n = sum(r.gender == gender for r in eval_recs)
            if n < spec.per_class:
                warnings.append(f"only {n} usable {label} images for --per-class {spec.per_class}")
    else:
        # Every labelled image goes to evaluation, except the identities set aside to train and borrow from.
        train_recs, train_ids = _take_balanced(identities, by_identity, spec.train_per_class, 0, rng, skipped, checked)
        rest = [i for i in identities if i not in set(train_ids)]
        pool_recs, pool_ids = _take_balanced(rest, by_identity, spec.pool_per_class, 0, rng, skipped, checked)
        taken = set(train_ids) | set(pool_ids)
        eval_recs = [r for i in identities if i not in taken for r in by_identity[i] if _usable(r, skipped, checked)]
    return Splits(eval_recs, train_recs, pool_recs, skipped, warnings)
