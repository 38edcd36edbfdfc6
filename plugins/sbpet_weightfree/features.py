"""Batched hand-crafted features in torch (no per-image loops)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def hog(images: torch.Tensor, cell: int = 8, bins: int = 9) -> torch.Tensor:
    """Histogram-of-oriented-gradients features, (B, 3, H, W) -> (B, bins * cells).

    Unsigned orientations with linear interpolation between neighbouring bins,
    magnitude-weighted cell histograms, and L2 normalisation over 2x2 cell blocks.
    """
    gray = grayscale(images)
    gx = F.pad(gray, (1, 1, 0, 0), mode="replicate")
    gy = F.pad(gray, (0, 0, 1, 1), mode="replicate")
    dx = gx[..., :, 2:] - gx[..., :, :-2]
    dy = gy[..., 2:, :] - gy[..., :-2, :]
    magnitude = torch.sqrt(dx**2 + dy**2)
    angle = torch.atan2(dy, dx) % math.pi  # unsigned, [0, pi)
    position = angle / math.pi * bins - 0.5
    lower = torch.floor(position)
    frac = position - lower
    lower_bin = lower.long() % bins
    upper_bin = (lower_bin + 1) % bins
    hist = torch.zeros(gray.shape[0], bins, *gray.shape[-2:], device=images.device, dtype=images.dtype)
    hist.scatter_add_(1, lower_bin, magnitude * (1 - frac))
    hist.scatter_add_(1, upper_bin, magnitude * frac)
    cells = F.avg_pool2d(hist, cell)  # (B, bins, Hc, Wc)
    block_energy = F.avg_pool2d(cells.pow(2).sum(1, keepdim=True), 2, stride=1, padding=1, count_include_pad=False)
    block_energy = F.interpolate(block_energy, size=cells.shape[-2:], mode="nearest")
    normalised = cells / torch.sqrt(block_energy * 4 + 1e-6)
    return normalised.clamp(max=0.2).flatten(1)
