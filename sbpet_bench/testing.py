"""Helpers for testing plugins without running the whole harness.

Third-party plugin authors use these too: build a context, an in-memory face
set, and call the plugin's methods directly.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .api import FEMALE, MALE, FaceBatch, FaceRecord, GenderClassifier, PluginContext, PluginUnavailable, Verifier, resize

REPO_ROOT = Path(__file__).resolve().parent.parent


def lfw3d_path() -> Path:
    """Where the LFW3D data lives: ``$SBPET_LFW3D`` or ``../shared/data/lfw3d`` beside the repo."""
    return Path(os.environ.get("SBPET_LFW3D", REPO_ROOT.parent / "shared" / "data" / "lfw3d"))


class InMemoryFaceSet:
    """A FaceSet over tensors already in memory."""

    def __init__(self, images: torch.Tensor, genders: Sequence[int], identities: Sequence[str], ids: Sequence[str] | None = None):
        self.images = images
        self.genders = torch.as_tensor(list(genders), dtype=torch.int64)
        self.identities = list(identities)
        self.ids = list(ids) if ids is not None else [f"img{i}" for i in range(len(images))]
        self.records = [FaceRecord(path=i, gender=int(g), identity=p, id=i) for i, g, p in zip(self.ids, self.genders.tolist(), self.identities)]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int, size: int | None = None) -> Iterator[FaceBatch]:
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield FaceBatch(resize(self.images[sl], size), self.genders[sl], self.identities[sl], self.ids[sl])

    def all(self, size: int | None = None) -> FaceBatch:
        return FaceBatch(resize(self.images, size), self.genders, self.identities, self.ids)


def load_lfw3d_sample(per_class: int = 20, seed: int = 0, root: Path | None = None, skip: int = 0) -> InMemoryFaceSet:
    """A small gender-balanced sample of LFW3D, decoded into memory (tests only).

    ``skip`` drops that many images per class first, so two calls can give disjoint samples.
    """
    root = Path(root or lfw3d_path())
    males = set((root / "male_names.txt").read_text().split())
    females = set((root / "female_names.txt").read_text().split())
    rng = random.Random(seed)
    chosen: list[tuple[str, int]] = []
    for names, gender in ((sorted(males - females), MALE), (sorted(females - males), FEMALE)):
        rng.shuffle(names)
        chosen += [(n, gender) for n in names[skip : skip + per_class]]
    arrays, genders, identities = [], [], []
    for name, gender in chosen:
        identity = name.rsplit("_", 1)[0]
        with Image.open(root / "images" / identity / name) as im:
            arrays.append(np.asarray(im.convert("RGB")))
        genders.append(gender)
        identities.append(identity)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return InMemoryFaceSet(images, genders, identities, [c[0] for c in chosen])


_TEMPORARY_WORK_DIRS: list[tempfile.TemporaryDirectory] = []  # removed when the interpreter exits


def make_context(work_dir: str | Path | None = None, *, device: str = "cpu", seed: int = 0,
                 plugins: dict[str, Any] | None = None, train: Any = None, model_path=None) -> PluginContext:
    """A PluginContext for tests and direct use (every plugin's constructor needs one).

    ``plugins`` maps names to ready classifier/verifier instances; ``work_dir`` None gives a temporary
    folder that is removed when the interpreter exits.
    """
    plugins = plugins or {}
    if work_dir is None:
        _TEMPORARY_WORK_DIRS.append(tempfile.TemporaryDirectory(prefix="sbpet-context-"))
        work_dir = _TEMPORARY_WORK_DIRS[-1].name

    def _get(kind: type):
        def getter(name: str, **_: Any):
            plugin = plugins.get(name)
            if plugin is None or not isinstance(plugin, kind):  # the harness raises the same error
                raise PluginUnavailable(f"test context has no {kind.__name__} named {name!r}")
            return plugin
        return getter

    def _no_models(name: str) -> str:
        raise FileNotFoundError(f"test context has no model store (asked for {name!r})")

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return PluginContext(device=torch.device(device), seed=seed, work_dir=str(work_dir),
                         model_path=model_path or _no_models, get_classifier=_get(GenderClassifier),
                         get_verifier=_get(Verifier), log=lambda msg: None, train=train)
