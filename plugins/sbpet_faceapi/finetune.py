"""``faceapi-gender-ft``: face-api.js AgeGenderNet with its last layers fine-tuned on the training split.

The informed attacker tier needs a deep classifier that adapts to protected images, not only a
linear probe: this one keeps the pretrained TinyXception body frozen up to the depthwise half of the
exit separable convolution and fine-tunes its pointwise half (a 1x1 convolution, 256 -> 512) and the
gender head, both initialised from the pretrained weights. The frozen part runs once over the
training images; the epochs only touch the 7x7 maps (a 1x1 convolution is a matrix product, while
the backward pass of a depthwise convolution is slow on CPUs), so a fit costs one forward pass plus
seconds.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from sbpet_bench.api import FaceSet, GenderClassifier, Option, PluginContext, PluginError

from .assets import AGE_GENDER
from .nets import AgeGenderNet, _same_pad, normalize
from .plugin import _at_size, _chunked, _load_weights


class ExitHead(nn.Module):
    """The trainable tail: the exit conv's pointwise 1x1 + bias, ReLU, 7x7 pool, gender logits."""

    def __init__(self, net: AgeGenderNet):
        super().__init__()
        self.pointwise = nn.Parameter(net.exit_conv.pointwise.clone())
        self.bias = nn.Parameter(net.exit_conv.bias.clone())
        self.gender = nn.Linear(512, 2)
        self.gender.weight.data.copy_(net.gender.weight.data)
        self.gender.bias.data.copy_(net.gender.bias.data)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(maps, self.pointwise, self.bias))
        return self.gender(F.avg_pool2d(x, 7, 2).flatten(1))  # softmax index 0 is male


class FaceApiGenderFinetuned(GenderClassifier):
    name = "faceapi-gender-ft"
    version = "1"
    description = "face-api.js AgeGenderNet, last pointwise conv and gender head fine-tuned on the training split (informed tier)"
    options = {
        "epochs": Option(12, "passes over the training images", min=1),
        "lr": Option(1e-3, "Adam learning rate", min=0.0),
        "weight_decay": Option(1e-4, "L2 penalty", min=0.0),
        "batch_size": Option(64, "images per step and per forward pass", min=1),
    }
    models = AGE_GENDER
    input_size = 112
    fits = True

    def __init__(self, options: Mapping | None = None, context: PluginContext | None = None):
        super().__init__(options, context)
        self.net = AgeGenderNet(_load_weights(context, *AGE_GENDER)).to(self.device).eval()
        self.head = ExitHead(self.net).to(self.device)

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen part: (B, 256, 7, 7), the exit conv's depthwise output."""
        x = _at_size(images.to(self.device), self.input_size)
        with torch.no_grad():
            out = F.relu(self.net.conv_in(normalize(x)))
            out = self.net.exit_block(self.net.middle(self.net.entry(out)))
            depthwise = self.net.exit_conv.depthwise
            return F.conv2d(_same_pad(out, depthwise.shape[-1], 1), depthwise, groups=depthwise.shape[0])

    def fit(self, train: FaceSet) -> None:
        maps, labels = [], []
        for batch in train.batches(self.opts["batch_size"], size=self.input_size):
            known = batch.genders >= 0
            if known.any():  # each face and its mirror image: a face's gender has no side
                faces = batch.images[known]
                maps += [self._maps(faces), self._maps(faces.flip(-1))]
                labels += [batch.genders[known].to(self.device)] * 2
        if not maps:
            raise PluginError(f"{self.name}: the training split has no gender-labelled faces")
        x, y = torch.cat(maps), torch.cat(labels)
        if len(torch.unique(y)) < 2:
            raise PluginError(f"{self.name}: the training split needs faces of both genders")
        target = 1 - y  # softmax index 0 is male (MALE = 1)
        generator = torch.Generator().manual_seed(self.context.seed if self.context else 0)
        opt = torch.optim.Adam(self.head.parameters(), lr=self.opts["lr"], weight_decay=self.opts["weight_decay"])
        bs = self.opts["batch_size"]
        self.head.train()
        with torch.enable_grad():
            for _ in range(self.opts["epochs"]):
                order = torch.randperm(len(x), generator=generator).to(self.device)
                for start in range(0, len(x), bs):
                    idx = order[start:start + bs]
                    loss = F.cross_entropy(self.head(x[idx]), target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.head.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.head.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        self.head.eval()

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return _chunked(lambda x: self.head(self._maps(x)).softmax(1)[:, 0], images, self.opts["batch_size"])
