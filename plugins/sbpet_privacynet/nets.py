"""PrivacyNet's generator (StarGAN-style, conditioned on a privacy code) and PatchGAN discriminator.

The privacy code has one bit per soft-biometric attribute (see ``ATTRIBUTES``):
1 means "obfuscate this attribute", 0 means "keep it". Its width is fixed so that
weights trained on gender alone stay loadable once age and race get auxiliary
classifiers of their own.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ATTRIBUTES: tuple[str, ...] = ("gender", "age", "race")


def privacy_code(obfuscate: Sequence[str], batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, len(ATTRIBUTES)) code with ones at the attributes to obfuscate."""
    unknown = sorted(set(obfuscate) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; the privacy code knows {list(ATTRIBUTES)}")
    row = torch.tensor([float(a in obfuscate) for a in ATTRIBUTES], device=device)
    return row.expand(batch, -1).clone()


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """G(x, c): two stride-2 downsamplings, ``n_res`` residual blocks, two upsamplings (nearest + conv).

    As in StarGAN the code is broadcast over space and concatenated to the image.
    Unlike StarGAN, the network predicts a residual added to ``x`` and its last
    layer starts at zero, so G begins as the identity: with the few hundred steps a
    CPU affords, it only has to learn the change, not to redraw the whole face.
    """

    def __init__(self, ngf: int = 32, n_res: int = 3, code_dim: int = len(ATTRIBUTES)):
        super().__init__()
        self.code_dim = code_dim
        layers: list[nn.Module] = [nn.Conv2d(3 + code_dim, ngf, 7, 1, 3, bias=False),
                                   nn.InstanceNorm2d(ngf, affine=True), nn.ReLU(inplace=True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.InstanceNorm2d(ch * 2, affine=True), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(n_res)]
        for _ in range(2):
            # nearest upsampling + conv rather than StarGAN's transposed conv: no checkerboard artefacts
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, 1, 1, bias=False),
                       nn.InstanceNorm2d(ch // 2, affine=True), nn.ReLU(inplace=True)]
            ch //= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 3, 7, 1, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"PrivacyNet's generator needs sides divisible by 4, got {tuple(x.shape[-2:])}")
        c = code.view(code.shape[0], self.code_dim, 1, 1).expand(-1, -1, *x.shape[-2:])
        delta = torch.tanh(self.head(self.body(torch.cat([2 * x - 1, c], dim=1))))  # residual in [-1, 1]
        return (x + delta).clamp(0.0, 1.0)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake logits, one per overlapping patch (70x70 receptive field)."""

    def __init__(self, ndf: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.InstanceNorm2d(out, affine=True),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1)
