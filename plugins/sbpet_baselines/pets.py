"""Identity, Gaussian blur, pixelation and Gaussian noise: batched, on the run's device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sbpet_bench.api import PET, FaceBatch, Option, ProtectResult


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur covering +-3 sigma, with reflected borders."""
    radius = max(1, min(int(3 * sigma + 0.5), min(images.shape[-2:]) // 2 - 1))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class Identity(PET):
    name = "identity"
    version = "1"
    description = "returns the images unchanged (the no-protection reference row)"

    def protect(self, batch: FaceBatch) -> ProtectResult:
        return ProtectResult(batch.images.clone())


class Blur(PET):
    name = "blur"
    version = "1"
    description = "Gaussian blur"
    options = {"sigma": Option(3.0, "standard deviation in pixels of the run's image size (0 = no blur)", min=0.0, max=1000.0)}

    def protect(self, batch: FaceBatch) -> ProtectResult:
        sigma = float(self.opts["sigma"])
        if sigma <= 0:
            return ProtectResult(batch.images.clone())
        return ProtectResult(gaussian_blur(batch.images, sigma))


class Pixelate(PET):
    name = "pixelate"
    version = "1"
    description = "block averaging (mosaic)"
    options = {"block": Option(8, "block size in pixels (1 = unchanged)", min=1, max=4096)}

    def protect(self, batch: FaceBatch) -> ProtectResult:
        block = max(1, int(self.opts["block"]))
        h, w = batch.images.shape[-2:]
        small = F.adaptive_avg_pool2d(batch.images, (max(1, round(h / block)), max(1, round(w / block))))
        return ProtectResult(F.interpolate(small, size=(h, w), mode="nearest"))


class Noise(PET):
    name = "noise"
    version = "1"
    description = "additive Gaussian noise, clipped to [0, 1]"
    options = {"sigma": Option(0.15, "noise standard deviation on the [0, 1] intensity scale", min=0.0, max=10.0)}

    def protect(self, batch: FaceBatch) -> ProtectResult:
        # The harness seeds torch per batch, so the noise is reproducible and resumable.
        noise = torch.randn(batch.images.shape, device=batch.images.device) * float(self.opts["sigma"])
        return ProtectResult((batch.images + noise).clamp(0.0, 1.0))
