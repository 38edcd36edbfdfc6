"""PrivacyProber's recovery attacks (Rot et al., IEEE TDSC 2023): PP-A, PP-D, PP-I and a classical PP-D.

Every learned attack trains on *clean* training faces only, never on a PET's output:
it models natural faces (PP-A, PP-I) or natural degradations (PP-D), and whatever a
PET added that a face model cannot explain gets removed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbpet_bench.api import Attacker, FaceSet, Option, PluginContext, PluginError

from .degrade import KINDS, patch_masks, random_degradation, random_masks
from .nets import AutoEncoder, UNet


def _resize(images: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if images.shape[-2:] == (h, w):
        return images
    return F.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Per-image std. of additive white noise (Immerkaer 1996), averaged over channels: (B,).

    The 3x3 kernel cancels locally linear image content, leaving mostly noise.
    """
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=images.dtype, device=images.device)
    b, c, h, w = images.shape
    resp = F.conv2d(images.reshape(b * c, 1, h, w), kernel[None, None]).abs()
    return (math.sqrt(math.pi / 2) / 6 * resp.mean(dim=(1, 2, 3))).reshape(b, c).mean(1)


class _LearnedAttacker(Attacker):
    """Shared training loop: random minibatches of clean faces, Adam with a cosine schedule."""

    fits = True
    input_size = 64
    chunk = 128  # images per forward pass in ``recover``
    options: Mapping[str, Option] = {
        "steps": Option(500, "training steps (minibatches); the default takes a few minutes on two CPU cores"),
        "batch_size": Option(32, "training minibatch size"),
        "lr": Option(2e-3, "peak learning rate of Adam (cosine decay to zero)"),
        "width": Option(24, "channels of the first convolution layer (doubles per level)"),
        "max_train": Option(4000, "at most this many training faces are decoded into memory"),
    }

    def __init__(self, options: Mapping[str, Any] | None, context: PluginContext):
        super().__init__(options, context)
        for key in ("steps", "batch_size", "width", "max_train"):
            if self.opts[key] < 1:
                raise PluginError(f"{self.name}: option {key} must be at least 1, got {self.opts[key]}")
        self.seed = self.context.seed
        with torch.random.fork_rng(devices=[]):  # reproducible initial weights without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.net = self.build().to(self.device)
        self.losses: list[float] = []  # training loss per step, for tests and logs
        self.fitted = False

    # -- what each attack defines
    def build(self) -> nn.Module:
        raise NotImplementedError

    def training_loss(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """The recovery on a batch at ``input_size``, already in eval mode under no_grad."""
        raise NotImplementedError

    # -- shared machinery
    def _load_train(self, train: FaceSet) -> torch.Tensor:
        size, limit, parts, have = self.input_size, self.opts["max_train"], [], 0
        total = math.ceil(min(len(train), limit) / 256)
        for batch in self._progress(train.batches(256, size), "decoding training faces", total):
            parts.append((batch.images[: limit - have] * 255).round().to(torch.uint8))
            have += len(parts[-1])
            if have >= limit:
                break
        if not have:
            raise PluginError(f"{self.name}: the training split is empty; it needs clean faces to learn from")
        return torch.cat(parts).to(self.device)

    def _progress(self, iterable, description: str, total: int | None = None):
        return self.context.progress(iterable, description=description, total=total)

    def fit(self, train: FaceSet) -> None:
        faces = self._load_train(train)
        gen = torch.Generator().manual_seed(self.seed)  # all training randomness comes from here
        steps, bs = self.opts["steps"], self.opts["batch_size"]
        opt = torch.optim.Adam(self.net.parameters(), lr=self.opts["lr"])
        warm = max(1, steps // 20)  # short linear warm-up, then cosine decay
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        self.net.train()
        self.losses = []
        for step in self._progress(range(steps), f"training {self.name}", steps):
            idx = torch.randint(len(faces), (bs,), generator=gen).to(self.device)
            clean = faces[idx].float() / 255.0
            flip = (torch.rand(bs, generator=gen) < 0.5).to(self.device)
            clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean)
            loss = self.training_loss(clean, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            self.losses.append(float(loss.detach()))
            if (step + 1) % max(1, steps // 5) == 0:
                self.context.log(f"{self.name}: step {step + 1}/{steps}, loss {np.mean(self.losses[-50:]):.4f}")
        self.net.eval()
        self.fitted = True

    @torch.no_grad()
    def recover(self, images: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise PluginError(f"{self.name}: recover() called before fit() or load_state_dict()")
        self.net.eval()
        h, w = images.shape[-2:]
        size = self.input_size  # the harness already resizes; direct callers may not
        out = [_resize(self.apply(_resize(chunk.to(self.device).float(), size, size)), h, w) for chunk in images.split(self.chunk)]
        return torch.cat(out).clamp(0, 1).to(images.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        try:
            self.net.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        except RuntimeError as exc:
            raise PluginError(f"{self.name}: cached state does not match this configuration ({exc}); "
                              "delete the cache entry or refit") from None
        self.net.eval()
        self.fitted = True


class PPAutoencoder(_LearnedAttacker):
    """PP-A: an autoencoder trained on clean faces; its bottleneck projects any input onto the face manifold."""

    name = "pp-a"
    version = "1"
    description = ("PrivacyProber PP-A: a convolutional autoencoder trained to reconstruct clean faces, "
                   "re-synthesising the input from a low-dimensional code")
    options = {
        **_LearnedAttacker.options,
        "latent": Option(16, "channels of the bottleneck code (at 1/16 of the input size): smaller = stronger projection"),
        "input_noise": Option(0.0, "std. of Gaussian noise added to the clean training inputs (0 = a plain autoencoder)"),
    }

    def build(self) -> nn.Module:
        return AutoEncoder(width=self.opts["width"], latent=self.opts["latent"])

    def training_loss(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = clean
        if self.opts["input_noise"] > 0:
            x = (x + self.opts["input_noise"] * torch.randn(x.shape, generator=gen).to(x)).clamp(0, 1)
        return F.l1_loss(self.net(x), clean)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class PPDenoiser(_LearnedAttacker):
    """PP-D: a residual U-Net trained to map synthetically degraded clean faces back to the clean faces."""

    name = "pp-d"
    version = "1"
    description = ("PrivacyProber PP-D: a U-Net denoiser trained on clean faces with synthetic degradations "
                   "(Gaussian noise, blur, JPEG, pixelation)")
    options = {
        **_LearnedAttacker.options,
        "degradations": Option(",".join(KINDS), f"comma-separated training degradations among {', '.join(KINDS)}"),
        "max_noise": Option(0.3, "largest std. of the training noise (images in [0, 1])"),
        "max_blur": Option(3.0, "largest Gaussian blur sigma of the training degradations, in pixels at input_size"),
        "max_block": Option(8, "largest pixelation block of the training degradations, in pixels at input_size"),
    }

    def __init__(self, options: Mapping[str, Any] | None, context: PluginContext):
        super().__init__(options, context)
        self.kinds = tuple(k.strip() for k in self.opts["degradations"].split(",") if k.strip())
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise PluginError(f"pp-d: option degradations={self.opts['degradations']!r} must list some of "
                              f"{', '.join(KINDS)} (unknown: {', '.join(unknown) or 'none given'})")

    def build(self) -> nn.Module:
        net = UNet(3, 3, width=self.opts["width"])
        nn.init.zeros_(net.out.weight)  # the residual starts at zero: an untrained denoiser is the identity
        nn.init.zeros_(net.out.bias)
        return net

    def training_loss(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noisy = random_degradation(clean, gen, self.kinds, self.opts["max_noise"], self.opts["max_blur"], self.opts["max_block"])
        return F.l1_loss(self.apply(noisy), clean)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.net(images)  # residual: the net predicts the correction


class PPInpainter(_LearnedAttacker):
    """PP-I: hide square patches and re-synthesise them from their context with an inpainting U-Net.

    At recovery time the patches are dealt into ``groups`` complementary masks, so every
    pixel is inpainted once per shift; the ``shifts`` differently offset tilings are averaged.
    """

    name = "pp-i"
    version = "1"
    description = ("PrivacyProber PP-I: masks facial regions (square patches) and fills them with an inpainting "
                   "U-Net trained on clean faces, averaging over several mask tilings")
    options = {
        **_LearnedAttacker.options,
        "patch": Option(8, "side of the hidden squares, in pixels at input_size"),
        "groups": Option(4, "complementary masks per tiling (a square number); each hides 1/groups of the image"),
        "shifts": Option(2, "differently offset tilings whose inpaintings are averaged"),
    }

    def __init__(self, options: Mapping[str, Any] | None, context: PluginContext):
        super().__init__(options, context)
        patch_masks(self.input_size, self.opts["patch"], self.opts["groups"])  # validates groups early
        if self.opts["shifts"] < 1 or self.opts["patch"] < 1:
            raise PluginError(f"pp-i: options patch and shifts must be at least 1, got {self.opts['patch']}, {self.opts['shifts']}")

    def build(self) -> nn.Module:
        return UNet(4, 3, width=self.opts["width"])

    def _inpaint(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        hidden = images * (1 - masks) + 0.5 * masks  # hidden pixels carry no information
        pred = torch.sigmoid(self.net(torch.cat([hidden, masks], dim=1)))
        return images * (1 - masks) + pred * masks

    def training_loss(self, clean: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        masks = random_masks(len(clean), clean.shape[-1], gen, self.opts["patch"], self.opts["groups"]).to(clean)
        filled = self._inpaint(clean, masks)
        return (filled - clean).abs().sum() / (3 * masks.sum()).clamp(min=1)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        b, size = images.shape[0], images.shape[-1]
        groups, shifts, patch = self.opts["groups"], self.opts["shifts"], self.opts["patch"]
        period = patch * int(round(groups**0.5))
        out = torch.zeros_like(images)
        for s in range(shifts):
            off = (s * period) // shifts
            masks = patch_masks(size, patch, groups, (off, off)).to(images)  # (G, 1, S, S), a partition
            rep = images.repeat_interleave(groups, 0)  # (B*G, ...), image-major
            filled = self._inpaint(rep, masks.repeat(b, 1, 1, 1)).view(b, groups, 3, size, size)
            out += (filled * masks[None]).sum(1)  # each pixel from the one mask that hid it
        return out / shifts


class PPNonLocalMeans(Attacker):
    """PP-D without training: OpenCV's fast non-local means, with the strength set from each image's noise."""

    name = "pp-d-nlm"
    version = "1"
    description = "PrivacyProber PP-D, classical variant: non-local means denoising (OpenCV), no training needed"
    requires = ("cv2",)
    options = {
        "h": Option(-1.0, "filter strength on the 0-255 scale; negative = per image, `h_factor` times the estimated noise std."),
        "h_factor": Option(1.2, "multiplier of the estimated noise std. when h is negative"),
        "template": Option(5, "side of the compared patches (odd)"),
        "search": Option(15, "side of the search window (odd)"),
    }

    @torch.no_grad()
    def recover(self, images: torch.Tensor) -> torch.Tensor:
        import cv2

        if self.opts["template"] % 2 == 0 or self.opts["search"] % 2 == 0:
            raise PluginError(f"pp-d-nlm: options template and search must be odd, got {self.opts['template']}, {self.opts['search']}")
        x = images.detach().clamp(0, 1).float().cpu()
        if self.opts["h"] < 0:
            strength = (self.opts["h_factor"] * 255 * noise_sigma(x)).clamp(min=1.0).tolist()
        else:
            strength = [float(self.opts["h"])] * len(x)
        u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = np.empty_like(u8)
        # OpenCV has no batched NLM for independent images; each call takes about a millisecond at 90x90.
        for i, (img, h) in enumerate(zip(u8, strength)):
            out[i] = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(img), None, h, h, self.opts["template"], self.opts["search"])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255.0
