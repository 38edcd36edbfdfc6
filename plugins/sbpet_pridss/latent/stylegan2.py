"""A compact StyleGAN2 generator that loads rosinality-format checkpoints and exposes the style space S.

Parameter and buffer names follow rosinality/stylegan2-pytorch's ``Generator``
(``style.N``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.N``,
``to_rgbs.N``, ``noises.noise_N``), so the ``g_ema`` entry of its checkpoints
loads with ``strict=True``. The custom CUDA ops are replaced by plain torch
(``upfirdn2d`` as zero-insertion + padding + depthwise convolution), so it runs
on any device.

The style space S (Wu et al., "StyleSpace analysis") holds, for every
modulated convolution, its per-input-channel styles ``A(w)``. Following
StyleFusion, an S code is a :class:`SCode` of two lists: the styles of the 3x3
convolutions (``conv1``, ``convs.0`` ...) and of the 1x1 ToRGB layers
(``to_rgb1``, ``to_rgbs.0`` ...), each tensor ``(B, C_in)``.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BLUR = (1.0, 3.0, 3.0, 1.0)
DEFAULT_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}  # x multiplier from 64 up


class SCode(NamedTuple):
    """A batch of style-space codes: per-layer styles of the convolutions and of the ToRGB layers."""

    conv: list[torch.Tensor]
    rgb: list[torch.Tensor]

    def map(self, fn) -> "SCode":
        return SCode([fn(t) for t in self.conv], [fn(t) for t in self.rgb])

    def __len__(self) -> int:  # the batch size (a NamedTuple's own length is always 2 otherwise)
        return int(self.conv[0].shape[0])

    @staticmethod
    def cat(codes: list["SCode"]) -> "SCode":
        return SCode([torch.cat(ts) for ts in zip(*(c.conv for c in codes))],
                     [torch.cat(ts) for ts in zip(*(c.rgb for c in codes))])


def _kernel(k: tuple[float, ...]) -> torch.Tensor:
    t = torch.tensor(k, dtype=torch.float32)
    t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, and filter each channel with ``kernel`` (no downsampling needed here)."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``activation`` is rosinality's fused leaky ReLU (x sqrt 2)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale, self.lr_mul, self.activation = 1 / math.sqrt(in_dim) * lr_mul, lr_mul, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.activation else out


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", _kernel(BLUR) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """The skip-branch upsampler of ToRGB: x2 zero insertion + blur."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", _kernel(BLUR) * factor ** 2)
        p = len(BLUR) - factor
        self.factor, self.pad = factor, ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Weight modulation by per-input-channel styles, optional demodulation and x2 transposed-conv upsampling.

    Modulating the input instead of the weight (and demodulating the output) is
    the same linear map as rosinality's grouped convolution, with one shared
    weight for the whole batch.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        if upsample:
            p = (len(BLUR) - 2) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            demod = torch.rsqrt((weight[None] * s[:, None, :, None, None]).pow(2).sum((2, 3, 4)) + 1e-8)
            out = out * demod[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, *x.shape[2:]).normal_()
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, s), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, s: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x, s) + self.bias
        return out if skip is None else out + self.upsample(skip)


class Generator(nn.Module):
    """StyleGAN2 generator (config-f layout) with explicit z -> w -> w+ -> S -> image steps.

    ``channels`` maps resolution to feature channels; by default it is
    rosinality's table (with ``channel_multiplier``). Images come out in [-1, 1].
    """

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channels: Mapping[int, int] | None = None, lr_mlp: float = 0.01):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"generator size must be a power of two >= 4, got {size}")
        self.size, self.style_dim, self.n_mlp = size, style_dim, n_mlp
        self.log_size = int(math.log2(size))
        self.channels = dict(channels) if channels is not None else \
            {r: c * (channel_multiplier if r >= 64 else 1) for r, c in DEFAULT_CHANNELS.items()}
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                                                  for _ in range(n_mlp)])
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], style_dim)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.n_latent = self.log_size * 2 - 2

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "Generator":
        """Build a generator shaped like ``state`` (a rosinality ``g_ema`` dict) and load it strictly."""
        try:
            style_idx = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
            style_dim = int(state["style.1.weight"].shape[0])
            n_convs = len({int(m.group(1)) for k in state if (m := re.fullmatch(r"convs\.(\d+)\.conv\.weight", k))})
            channels = {4: int(state["input.input"].shape[1])}
            for i in range(n_convs // 2):
                channels[2 ** (i + 3)] = int(state[f"convs.{2 * i}.conv.weight"].shape[1])
        except KeyError as exc:
            raise ValueError(f"not a rosinality StyleGAN2 generator state dict: missing {exc}") from None
        size = 2 ** (n_convs // 2 + 2)
        gen = cls(size=size, style_dim=style_dim, n_mlp=len(style_idx), channels=channels)
        gen.load_state_dict(state, strict=True)
        return gen

    @classmethod
    def load(cls, path: str, key: str = "g_ema") -> "Generator":
        """Load a rosinality checkpoint (a dict holding ``g_ema``) or a bare generator state dict."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get(key, ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a rosinality checkpoint dict with {key!r}")
        try:
            return cls.from_state_dict(state)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ latent spaces

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> w (B, D)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean w over ``n`` random z, (1, D): the centre of the truncation trick."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=generator, device="cpu").to(device)
        return self.mapping(z).mean(0, keepdim=True)

    @staticmethod
    def truncate(w: torch.Tensor, psi: float, mean: torch.Tensor | None) -> torch.Tensor:
        if psi >= 1 or mean is None:
            return w
        return mean + psi * (w - mean)

    def w_plus(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, D) or w+ (B, n_latent, D) -> w+."""
        if w.dim() == 2:
            return w[:, None].expand(-1, self.n_latent, -1)
        if w.shape[1] != self.n_latent:
            raise ValueError(f"w+ must have {self.n_latent} latents, got {w.shape[1]}")
        return w

    def styles(self, w: torch.Tensor) -> SCode:
        """w or w+ -> S: each layer's modulation styles.

        Latent indices follow rosinality's synthesis loop: conv1 0, to_rgb1 1,
        convs.i i+1, to_rgbs.j 2j+3. (StyleFusion's S extraction reads 2j+2 for
        to_rgbs.j; that only differs for w+ codes with unequal rows, and we keep
        the generator's own assignment so S from w+ renders what w+ renders.)
        """
        lat = self.w_plus(w)
        conv = [self.conv1.conv.modulation(lat[:, 0])] + [c.conv.modulation(lat[:, i + 1]) for i, c in enumerate(self.convs)]
        rgb = [self.to_rgb1.conv.modulation(lat[:, 1])] + [t.conv.modulation(lat[:, 2 * i + 3]) for i, t in enumerate(self.to_rgbs)]
        return SCode(conv, rgb)

    def s_shapes(self) -> SCode:
        """Channel count of every style (as a code of Python ints)."""
        return SCode([self.conv1.conv.weight.shape[2]] + [c.conv.weight.shape[2] for c in self.convs],
                     [self.to_rgb1.conv.weight.shape[2]] + [t.conv.weight.shape[2] for t in self.to_rgbs])

    # ------------------------------------------------------------------ synthesis

    def synthesize(self, s: SCode, noise_mode: str = "const") -> torch.Tensor:
        """S -> images (B, 3, size, size) in [-1, 1]. ``noise_mode``: const (the stored noise maps), random or none."""
        if noise_mode == "const":
            noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        elif noise_mode == "random":
            noise = [None] * self.num_layers
        elif noise_mode == "none":
            noise = [getattr(self.noises, f"noise_{i}") * 0 for i in range(self.num_layers)]
        else:
            raise ValueError(f"noise_mode must be const, random or none, got {noise_mode!r}")
        b = len(s)
        out = self.conv1(self.input(b), s.conv[0], noise[0])
        skip = self.to_rgb1(out, s.rgb[0], None)
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, s.conv[2 * j + 1], noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, s.conv[2 * j + 2], noise[2 * j + 2])
            skip = to_rgb(out, s.rgb[j + 1], skip)
        return skip

    def forward(self, z: torch.Tensor | None = None, *, w: torch.Tensor | None = None, s: SCode | None = None,
                truncation: float = 1.0, mean: torch.Tensor | None = None, noise_mode: str = "const") -> torch.Tensor:
        """Generate from exactly one of z, w / w+ (``w`` of 2 or 3 dims) or s; truncation applies to z."""
        if sum(v is not None for v in (z, w, s)) != 1:
            raise ValueError("pass exactly one of z, w or s")
        if z is not None:
            w = self.truncate(self.mapping(z), truncation, mean)
        if s is None:
            s = self.styles(w)
        return self.synthesize(s, noise_mode)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1]."""
    return ((images + 1) / 2).clamp(0, 1)
