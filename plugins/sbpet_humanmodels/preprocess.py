"""Input preparation for the human-models graphs: context padding, colour order and value range.

LFW3D's 90 px crops are tight (brows to chin); several of these networks were trained on detector
boxes with more context around the face, so a border is added before the final resize. The harness
hands a plugin its images at ``input_size``: for a padded model that is the size of the face inside
the border, so that adding the border gives the network's input size with one resampling only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sbpet_bench.api import resize

# keras "caffe" preprocessing: BGR in 0-255 minus the ImageNet channel means (B, G, R)
CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)
GRAY_WEIGHTS_RGB = (0.2989, 0.5870, 0.1140)
COLOURS = ("rgb", "bgr", "gray")
RANGES = ("unit", "byte", "signed", "caffe")  # [0, 1], [0, 255], [-1, 1], caffe
PAD_MODES = ("zeros", "replicate")


@dataclass(frozen=True)
class Preprocess:
    """How one network wants its input; ``pad`` is the border on each side as a fraction of the face's side."""

    size: int  # the graph's input side
    colour: str = "rgb"
    value_range: str = "unit"
    pad: float = 0.0
    pad_mode: str = "zeros"

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.value_range not in RANGES or self.pad_mode not in PAD_MODES:
            raise ValueError(f"bad preprocessing {self}: colour in {COLOURS}, value_range in {RANGES}, pad_mode in {PAD_MODES}")
        if not 0.0 <= self.pad < 2.0:
            raise ValueError(f"pad must be in [0, 2) (a fraction of the face's side on each side), got {self.pad}")
        if self.value_range == "caffe" and self.colour != "bgr":
            raise ValueError("the caffe value range is defined on BGR input: use colour='bgr'")

    @property
    def face_size(self) -> int:
        """The side the face itself gets inside the padded input: the plugin's ``input_size``."""
        return max(1, round(self.size / (1.0 + 2.0 * self.pad)))

    def with_pad(self, pad: float, pad_mode: str | None = None) -> "Preprocess":
        return Preprocess(self.size, self.colour, self.value_range, pad, pad_mode or self.pad_mode)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the graph's (B, size, size, C) NHWC input. Differentiable."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        face = self.face_size
        x = resize(images.float(), face)
        border = self.size - face
        if border > 0:
            before = border // 2
            spec = (before, border - before, before, border - before)
            x = F.pad(x, spec, mode="replicate") if self.pad_mode == "replicate" else F.pad(x, spec)
        elif face != self.size:
            x = resize(x, self.size)
        if self.colour == "gray":
            weights = x.new_tensor(GRAY_WEIGHTS_RGB).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True)
        elif self.colour == "bgr":
            x = x.flip(1)
        if self.value_range == "byte":
            x = x * 255.0
        elif self.value_range == "signed":
            x = x * 2.0 - 1.0
        elif self.value_range == "caffe":
            x = x * 255.0 - x.new_tensor(CAFFE_MEANS_BGR).view(1, 3, 1, 1)
        # contiguous NHWC: the graph's convolutions then run channels_last end to end
        return x.permute(0, 2, 3, 1).contiguous()
