"""Small convolutional networks for the recovery attacks, sized for a CPU budget of minutes.

* :class:`UNet`: an encoder-decoder with skip connections (denoiser, inpainter). Like
  FFDNet it first folds each 2x2 pixel block into channels (pixel unshuffle), so all
  convolutions run at half resolution: four times cheaper, with little loss for faces.
  Skips keep the details of the input, so it learns a correction rather than a face.
* :class:`AutoEncoder`: strided convolutions down to a narrow code at 1/16 of the input
  size and back, with no skip connection: every output is decoded from that code, a
  projection onto the manifold of faces it was trained on (PrivacyProber's PP-A).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())


def _norm_act(c: int) -> list[nn.Module]:
    # Normalisation lets the deep stack without skips leave the "mean face" plateau within a few hundred steps.
    return [nn.GroupNorm(min(8, c // 4), c), nn.SiLU()]


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


class UNet(nn.Module):
    """A ``depth``-level U-Net at half resolution; sizes that are not multiples of ``2**(depth+1)`` are padded."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, width: int = 32, depth: int = 2):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.multiple = 2 ** (depth + 1)
        self.inc = _block(4 * in_ch, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(chans[0], 4 * out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        skips = [self.inc(F.pixel_unshuffle(_pad_to(x, self.multiple), 2))]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return F.pixel_shuffle(self.out(y), 2)[..., :h, :w]


class AutoEncoder(nn.Module):
    """A convolutional autoencoder: ``size`` -> (``latent`` x size/16 x size/16) -> ``size``."""

    def __init__(self, width: int = 32, latent: int = 16, depth: int = 4):
        super().__init__()
        chans = [3] + [min(width * 2**i, 256) for i in range(depth)]
        enc: list[nn.Module] = []
        for i in range(depth):
            enc += [nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), *_norm_act(chans[i + 1]),
                    nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), *_norm_act(chans[i + 1])]
        enc += [nn.Conv2d(chans[-1], latent, 1)]  # the bottleneck: nothing bypasses it
        dec: list[nn.Module] = [nn.Conv2d(latent, chans[-1], 3, padding=1), *_norm_act(chans[-1])]
        for i in reversed(range(1, depth)):
            dec += [nn.ConvTranspose2d(chans[i + 1], chans[i], 4, stride=2, padding=1), *_norm_act(chans[i]),
                    nn.Conv2d(chans[i], chans[i], 3, padding=1), *_norm_act(chans[i])]
        dec += [nn.ConvTranspose2d(chans[1], chans[1], 4, stride=2, padding=1), *_norm_act(chans[1]), nn.Conv2d(chans[1], 3, 3, padding=1)]
        self.multiple = 2**depth
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return torch.sigmoid(self.decoder(self.encoder(_pad_to(x, self.multiple))))[..., :h, :w]
