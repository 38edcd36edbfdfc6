"""Synthetic face sets whose gender cue is known, for tests of trainable classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sbpet_bench.testing import InMemoryFaceSet


def tinted(n: int, seed: int, people: int | None = None) -> InMemoryFaceSet:
    """Smooth random images; 'males' get a red upper half, 'females' a red lower half.

    ``people`` identities are assigned round-robin (default: every image its own person).
    """
    gen = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(n, 3, 6, 6, generator=gen), size=(48, 48), mode="bilinear", align_corners=False)
    genders = [i % 2 for i in range(n)]
    for i, g in enumerate(genders):
        rows = slice(0, 24) if g else slice(24, 48)
        images[i, 0, rows] = (images[i, 0, rows] + 0.35).clamp(max=1)
    return InMemoryFaceSet(images, genders, [f"p{i % (people or n)}" for i in range(n)])
