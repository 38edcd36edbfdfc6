"""encoder4editing (e4e): inverts aligned real faces into StyleGAN2's W+ (Tov et al., 2021).

An IR-SE-50 backbone with a feature pyramid; one head per W+ latent predicts
w_0 and offsets for the other latents, added to the generator's average
latent. Module names follow the official checkpoint (``encoder.input_layer``,
``encoder.body.N.res_layer``, ``encoder.styles.N``, ``encoder.latlayer1/2``)
so its ``state_dict`` loads strictly; the checkpoint's ``decoder.*`` (a
rosinality generator) is not needed, the backend's generator is used.

e4e expects FFHQ-aligned crops at 256x256: faces cropped differently (e.g.
LFW3D's tight frontalised 90x90 crops) invert poorly.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import EqualLinear, Generator


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class BottleneckIRSE(nn.Module):
    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        self.shortcut_layer = nn.MaxPool2d(1, stride) if in_ch == depth else \
            nn.Sequential(nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                                       nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth),
                                       SEModule(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


class GradualStyleBlock(nn.Module):
    def __init__(self, channels: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).view(-1, self.channels))


# IR-SE-50: (in, depth, units) per stage, the first unit of each stage strided.
_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class Encoder4Editing(nn.Module):
    """``stages`` and ``width`` default to the official IR-SE-50 / 512; tests shrink them."""

    def __init__(self, n_latent: int = 18, stages: tuple[tuple[int, int, int], ...] = _STAGES, width: int = 512):
        super().__init__()
        first = stages[0][0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first), nn.PReLU(first))
        units = [(i if k == 0 else d, d, 2 if k == 0 else 1) for i, d, n in stages for k in range(n)]
        self.body = nn.Sequential(*[BottleneckIRSE(*u) for u in units])
        ends = [sum(n for _, _, n in stages[: j + 1]) - 1 for j in range(len(stages))]
        self.taps = (ends[1], ends[2], ends[3])  # official: units 6, 20, 23 (128, 256, 512 channels)
        self.n_latent, self.coarse, self.middle = n_latent, 3, 7
        self.styles = nn.ModuleList([GradualStyleBlock(width, 16 if i < 3 else 32 if i < 7 else 64) for i in range(n_latent)])
        self.latlayer1 = nn.Conv2d(stages[2][1], width, 1)
        self.latlayer2 = nn.Conv2d(stages[1][1], width, 1)

    @staticmethod
    def _up_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images normalised to [-1, 1] at 256x256 -> W+ offsets (B, n_latent, 512) before the average latent."""
        x = self.input_layer(x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self.taps)
        w = self.styles[0](c3)[:, None].repeat(1, self.n_latent, 1)
        p2 = self._up_add(c3, self.latlayer1(c2))
        p1 = self._up_add(p2, self.latlayer2(c1))
        deltas = [self.styles[i](c3 if i < self.coarse else p2 if i < self.middle else p1) for i in range(1, self.n_latent)]
        return w + torch.cat([torch.zeros_like(w[:, :1]), torch.stack(deltas, 1)], 1)


class E4EInverter:
    """Real faces in [0, 1] -> W+ of the backend's generator."""

    def __init__(self, encoder: Encoder4Editing, latent_avg: torch.Tensor, device: torch.device):
        self.encoder = encoder.to(device).eval().requires_grad_(False)
        self.latent_avg = latent_avg.to(device)

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping, device: torch.device, **arch) -> "E4EInverter":
        state = ckpt.get("state_dict", ckpt)
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        n_latent = len({k.split(".")[1] for k in enc if k.startswith("styles.")})
        if not enc or n_latent == 0 or "latent_avg" not in ckpt:
            raise ValueError("not an e4e checkpoint: expected state_dict with encoder.* weights and latent_avg")
        encoder = Encoder4Editing(n_latent, **arch)
        encoder.load_state_dict(enc, strict=True)
        return cls(encoder, ckpt["latent_avg"].float(), device)

    @classmethod
    def load(cls, path: str, generator: Generator, device: torch.device) -> "E4EInverter":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        try:
            inverter = cls.from_checkpoint(ckpt, device)
        except (ValueError, RuntimeError, AttributeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        if inverter.encoder.n_latent != generator.n_latent:
            raise ValueError(f"{path}: e4e predicts {inverter.encoder.n_latent} latents, the generator takes {generator.n_latent}")
        return inverter

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(256, 256), mode="bilinear", antialias=True, align_corners=False)
        codes = self.encoder(x * 2 - 1)
        return codes + self.latent_avg.view(1, -1, codes.shape[-1])
