"""Synthetic degradations (training inputs of the denoiser) and inpainting masks, all batched.

Each image of a batch gets its own randomly drawn degradation and strength, so one
network learns to undo the whole family of perturbations a PET might add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("noise", "blur", "jpeg", "pixelate")


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own ``sigma`` (B,) in pixels: one separable grouped convolution."""
    b, c, h, w = images.shape
    radius = int(torch.ceil(3 * sigma.max()).clamp(min=1).item())
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (taps[None] / sigma.to(images)[:, None].clamp(min=1e-3)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    x = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(x, kernel[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def pixelate(images: torch.Tensor, block: int) -> torch.Tensor:
    """Average ``block`` x ``block`` cells and repeat them (a mosaic), keeping the size."""
    h, w = images.shape[-2:]
    small = F.adaptive_avg_pool2d(images, (max(1, round(h / block)), max(1, round(w / block))))
    return F.interpolate(small, size=(h, w), mode="nearest")


def jpeg(images: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """Round-trip each image through JPEG at its own quality (OpenCV codec, per image; training only)."""
    import cv2
    import numpy as np

    u8 = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = [cv2.imdecode(cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(q)])[1], cv2.IMREAD_UNCHANGED)
               for img, q in zip(u8, quality)]  # channel order is irrelevant to the codec's loss here
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255.0


def random_degradation(images: torch.Tensor, gen: torch.Generator, kinds: tuple[str, ...] = KINDS,
                       max_noise: float = 0.3, max_blur: float = 3.0, max_block: int = 8) -> torch.Tensor:
    """Apply one randomly chosen kind of degradation per image, with a random strength.

    A quarter of the images get a second degradation on top, as PETs may combine them.
    """
    out = images.clone()
    b = images.shape[0]
    for round_ in range(2):
        pick = torch.randint(len(kinds), (b,), generator=gen)
        if round_ == 1:
            pick[torch.rand(b, generator=gen) > 0.25] = -1
        for k, kind in enumerate(kinds):
            idx = (pick == k).nonzero().flatten().to(images.device)
            if idx.numel() == 0:
                continue
            x = out[idx]
            n = idx.numel()
            if kind == "noise":
                sigma = torch.rand(n, 1, 1, 1, generator=gen).to(x) * max_noise
                x = x + sigma * torch.randn(x.shape, generator=gen).to(x)
            elif kind == "blur":
                x = gaussian_blur(x, 0.5 + torch.rand(n, generator=gen) * (max_blur - 0.5))
            elif kind == "jpeg":
                x = jpeg(x, torch.randint(5, 60, (n,), generator=gen).tolist())
            elif kind == "pixelate":
                block = int(torch.randint(2, max_block + 1, (1,), generator=gen))
                x = pixelate(x, block)
            else:
                raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(KINDS)}")
            out[idx] = x.clamp(0, 1)
    return out


def patch_masks(size: int, patch: int, groups: int, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``groups`` complementary masks (groups, 1, size, size): 1 = hidden, each pixel hidden in exactly one.

    The image is tiled into ``patch`` x ``patch`` squares (shifted by ``offset``) and the
    squares are dealt to the masks in an interleaved pattern, so every hidden square is
    surrounded by visible context.
    """
    side = int(round(groups**0.5))
    if side * side != groups:
        raise ValueError(f"pp-i: groups must be a square number (1, 4, 9, ...), got {groups}")
    coords = torch.arange(size)
    cy = ((coords + offset[0]) // patch) % side
    cx = ((coords + offset[1]) // patch) % side
    cell = cy[:, None] * side + cx[None, :]
    return (cell[None] == torch.arange(groups)[:, None, None]).float()[:, None]


def random_masks(b: int, size: int, gen: torch.Generator, patch: int, groups: int) -> torch.Tensor:
    """Training masks (B, 1, size, size): one of the test-time masks at a random offset."""
    masks = []
    for _ in range(b):
        off = tuple(int(v) for v in torch.randint(patch * int(round(groups**0.5)), (2,), generator=gen))
        masks.append(patch_masks(size, patch, groups, off)[int(torch.randint(groups, (1,), generator=gen))])
    return torch.stack(masks)
