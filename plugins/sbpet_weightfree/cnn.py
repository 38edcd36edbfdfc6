"""A small convolutional gender classifier trained from scratch on the run's training split.

Its job is to be a *different* differentiable classifier: PETs that train against
an auxiliary classifier (PrivacyNet) transfer better to unseen evaluators when they
fool an ensemble of unlike networks — here a pixel CNN next to a probe on a face
recogniser's embedding — than when they fool one network's blind spots.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sbpet_bench.api import FaceSet, GenderClassifier, Option, PluginContext, PluginError, identity_fold


class GenderCnn(nn.Module):
    """Four stride-2 conv blocks, global average pooling, one logit (male)."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for i in range(4):
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2 * x - 1).mean((2, 3))).squeeze(1)


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/16 of the side: cheap, batched augmentation."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    pad = max(1, h // 16)
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return F.pad(x, (pad,) * 4, mode="replicate")[..., dy:dy + h, dx:dx + w]


PRECISIONS = ("float32", "bfloat16")


def training_precision(name: str, device: torch.device) -> tuple[torch.autocast, torch.memory_format]:
    """The autocast context and memory format of one training step under ``precision`` ``name``."""
    fast = name == "bfloat16"
    return (torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast),
            torch.channels_last if fast else torch.contiguous_format)


class CnnGender(GenderClassifier):
    name = "cnn-gender"
    version = "1"
    description = "small CNN trained from scratch on the training split (a differentiable auxiliary classifier)"
    input_size = 64
    fits = True
    options = {
        "width": Option(16, "channels of the first conv block (doubles at each of the four blocks)"),
        "epochs": Option(12, "passes over the training split"),
        "lr": Option(2e-3, "Adam learning rate"),
        "batch_size": Option(64, "training batch size"),
        # 0 keeps the fixed-epoch training that PrivacyNet's auxiliary ensemble was tuned with; the informed
        # attacker tier sets it, so that a from-scratch network stops when it no longer generalises
        "holdout": Option(0.0, "fraction of the training identities held out to stop training early (0: every epoch)",
                          min=0.0, max=0.5),
        "patience": Option(2, "epochs without a better held-out loss before training stops (with holdout)", min=1),
        # bfloat16 runs the training steps' convolutions in bfloat16 (channels-last, float32 weights and loss):
        # 0.65x the fit time on this CPU's bf16 units (benchmarks/informed_recipes.py); the informed tier uses
        # it. float32 is the recipe PrivacyNet's auxiliary classifier was tuned with, bit for bit: at that
        # default the option stays out of the cache key, so PrivacyNet's cached results keep their keys.
        "precision": Option("float32", "arithmetic of the training steps (scoring is float32 either way)",
                            choices=PRECISIONS, keyed_at_default=False),
    }

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self.net: GenderCnn | None = None

    def fit(self, train: FaceSet) -> None:
        images, labels, held = [], [], []
        for batch in train.batches(256, size=self.input_size):
            known = batch.genders >= 0
            images.append(batch.images[known].cpu())
            labels.append(batch.genders[known].cpu())
            held.append(identity_fold([p for p, k in zip(batch.identities, known.tolist()) if k], float(self.opts["holdout"])))
        x, y, val = torch.cat(images), torch.cat(labels).float(), torch.cat(held)
        if len(torch.unique(y)) < 2:
            raise PluginError(f"{self.name}: the training split needs gender-labelled faces of both genders "
                              f"(got {len(y)} labelled)")
        if val.any() and len(torch.unique(y[val])) == 2 and len(torch.unique(y[~val])) == 2:
            x_val, y_val, x, y = x[val], y[val], x[~val], y[~val]
        else:  # no holdout asked for, or too few identities for a fold with both genders
            x_val = y_val = None
        seed = self.context.seed
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = GenderCnn(int(self.opts["width"])).to(self.device)
        autocast, layout = training_precision(self.opts["precision"], self.device)
        net = net.to(memory_format=layout)
        bs, epochs = int(self.opts["batch_size"]), int(self.opts["epochs"])
        opt = torch.optim.Adam(net.parameters(), lr=float(self.opts["lr"]), weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(self.opts["lr"]), total_steps=epochs * -(-len(x) // bs))
        # LFW is about 3/4 male: weight the classes equally so that the logit is not biased towards male
        pos_weight = ((y == 0).sum() / (y == 1).sum().clamp(min=1)).to(self.device)
        steps = self.context.progress(range(epochs), description=f"{self.name}: training", total=epochs)
        best, best_loss, stale = None, float("inf"), 0
        for _ in steps:
            net.train()
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), bs):
                idx = order[i:i + bs]
                batch = _jitter(x[idx], gen).to(self.device)
                with autocast:
                    logits = net(batch if layout is torch.contiguous_format else batch.contiguous(memory_format=layout))
                loss = F.binary_cross_entropy_with_logits(logits.float(), y[idx].to(self.device), pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if x_val is None:
                continue
            net.eval()
            with torch.no_grad():
                held_loss = float(F.binary_cross_entropy_with_logits(net(x_val.to(self.device)), y_val.to(self.device),
                                                                     pos_weight=pos_weight))
            if held_loss < best_loss - 1e-4:
                best, best_loss, stale = copy.deepcopy(net.state_dict()), held_loss, 0
            else:
                stale += 1
                if stale >= int(self.opts["patience"]):
                    break
        opt.zero_grad(set_to_none=True)
        if best is not None:
            net.load_state_dict(best)
        self.net = net.to(memory_format=torch.contiguous_format).eval().requires_grad_(False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.net is None:
            return {}
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        net = GenderCnn(int(self.opts["width"])).to(self.device)
        net.load_state_dict(dict(state))
        self.net = net.eval().requires_grad_(False)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) log-odds of male; differentiable with respect to the images."""
        if self.net is None:
            raise PluginError(f"{self.name} is not fitted: call fit(train) or load_state_dict first")
        x = images.to(self.device)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return self.net(x)

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))
