"""What a PriDSS fusion backend is: the contract between the plugin front and its two backends.

PriDSS is one method with two ways of making fusions: in pixel space (:mod:`.pixel`: landmark warps
and Poisson blending of real pool faces) and in StyleGAN2's style space (:mod:`.latent`: StyleFusion
on generated candidates). Everything around the fusion is the same method and lives in the plugin
front (:mod:`.plugin`): options and seed, the internal models, the originals' genders, one random
generator per image, the PIC scoring and selection (:mod:`.selection`) and the diagnostics. A
backend only draws its candidates from the generators it is handed and fuses them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np
import torch

from sbpet_bench.api import FaceBatch, FaceSet


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The random generator of one image's candidate draw, seeded by (seed, image id).

    Seeding by id makes an image's candidates, and so its output, independent of the batch it is in.
    """
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])


@dataclass
class Draws:
    """Whom a backend fuses in one batch, and the randomness of each image's candidate draw."""

    genders: torch.Tensor  # (B,) the originals' genders: labels, or the internal classifier's where unlabelled
    rngs: list[np.random.Generator]  # (B,) one per image, from image_rng
    m: int  # candidates wanted per image (a backend may give fewer when it has fewer)

    def take(self, rows: list[int]) -> "Draws":
        """The draws of the images at ``rows`` only."""
        return Draws(self.genders[torch.as_tensor(rows, dtype=torch.long)], [self.rngs[i] for i in rows], self.m)


@dataclass
class Fusions:
    """A backend's fusions of one batch, before selection.

    ``rows`` are the positions (in the batch) of the images that were fused; every other image is
    passed through unchanged, with the diagnostics (including a ``reason``) given in ``passed``.
    """

    fused: torch.Tensor  # (B', M, 3, H, W) in [0, 1]
    rows: torch.Tensor  # (B',) int64
    passed: dict[int, dict[str, Any]] = field(default_factory=dict)  # batch position -> diagnostics with "reason"
    candidate_ids: list[list[str]] | None = None  # (B', M) names of the candidates, where they have names
    per_image: list[dict[str, Any]] | None = None  # (B',) JSON-able diagnostics of the fused images' own
    per_candidate: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B', M) numbers
    digits: Mapping[str, int] = field(default_factory=dict)  # decimals per_candidate entries are reported with
    eligible: torch.Tensor | None = None  # (B', M) bool: only these compete (None: all)


class FusionBackend(Protocol):
    """One way of fusing originals with opposite-gender candidates."""

    name: str  # "pixel" or "latent", as in the diagnostics

    def fit(self, train: FaceSet | None, pool: FaceSet) -> None:
        """Prepare the candidates (e.g. landmark and filter the pool)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What :meth:`fit` prepared, as tensors."""

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def fuse(self, batch: FaceBatch, draws: Draws) -> Fusions:
        """Draw each image's candidates with its generator in ``draws`` and fuse them with it."""
