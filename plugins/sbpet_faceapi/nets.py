"""The face-api.js networks in PyTorch: AgeGenderNet (TinyXception) and FaceRecognitionNet (dlib ResNet-34).

Weights come as a dict of TFJS tensors (NHWC conventions: conv filters
``[kh, kw, in, out]``, depthwise ``[kh, kw, in, 1]``, dense ``[in, out]``).
The weights are buffers, not parameters: the networks are fixed evaluators,
but every forward pass is differentiable with respect to its input.
Inputs are RGB in [0, 1], already at the network's size.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

MEAN_RGB = (122.782, 117.001, 104.298)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """face-api's input recipe: (255 * x - mean) / 255."""
    mean = torch.tensor(MEAN_RGB, device=images.device, dtype=images.dtype).view(1, 3, 1, 1) / 255.0
    # channels_last from here on: oneDNN's convolutions then run without reordering their inputs
    return images.contiguous(memory_format=torch.channels_last) - mean


def _same_split(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _same_pad(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's 'same' padding: the odd pixel goes after (bottom/right), unlike PyTorch's symmetric padding."""
    (top, bottom), (left, right) = _same_split(x.shape[-2], k, s), _same_split(x.shape[-1], k, s)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


# oneDNN's convolution with a ReLU fused in: one pass over each activation map fewer, but no backward
_HAS_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def tf_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, same: bool = True,
            groups: int = 1, relu: bool = False) -> torch.Tensor:
    """conv2d with TF's padding, optionally followed by a ReLU.

    Symmetric 'same' padding is passed to the convolution (no padded copy); only TF's asymmetric case
    (the odd pixel after) pads explicitly. Without autograd on CPU the ReLU is fused into oneDNN's kernel.
    """
    pad = (0, 0)
    if same:
        k = weight.shape[-1]
        (top, bottom), (left, right) = _same_split(x.shape[-2], k, stride), _same_split(x.shape[-1], k, stride)
        if top == bottom and left == right:
            pad = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
    if (_HAS_POINTWISE and x.device.type == "cpu" and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(pad), [stride, stride], [1, 1], groups,
                                                       "relu" if relu else "none", [], None)
    y = F.conv2d(x, weight, bias, stride, pad, 1, groups)
    return (F.relu(y) if y.requires_grad else y.relu_()) if relu else y


def _add_relu(out: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """relu(out + other), in place in ``out`` (a fresh block output) when autograd does not track it."""
    if out.requires_grad or other.requires_grad:
        return F.relu(out + other)
    return out.add_(other).relu_()


def _filters(w: torch.Tensor) -> torch.Tensor:
    # [kh, kw, in, out] -> [out, in, kh, kw], stored channels_last like the activations (oneDNN's native layout)
    return w.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)


class Conv(nn.Module):
    """conv2d with TF padding semantics; an optional per-channel scale and shift folded into it."""

    def __init__(self, filters: torch.Tensor, bias: torch.Tensor, stride: int = 1, padding: str = "same",
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        super().__init__()
        weight, b = _filters(filters), bias.clone()
        if scale is not None:  # (conv(x) + b) * scale + shift == conv(x; W * scale) + (b * scale + shift)
            weight = weight * scale.view(-1, 1, 1, 1)
            b = b * scale + shift
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", b)
        self.stride, self.padding, self.k = stride, padding, weight.shape[-1]

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        return tf_conv(x, self.weight, self.bias, self.stride, self.padding == "same", relu=relu)


class SeparableConv(nn.Module):
    """tf.separableConv2d (3x3 depthwise, 'same', stride 1) then a 1x1 pointwise conv and a bias."""

    def __init__(self, w: Mapping[str, torch.Tensor], prefix: str):
        super().__init__()
        depthwise = w[f"{prefix}/depthwise_filter"]  # [kh, kw, in, 1]
        self.register_buffer("depthwise", depthwise.permute(2, 3, 0, 1).contiguous(memory_format=torch.channels_last))  # [in, 1, kh, kw]
        self.register_buffer("pointwise", _filters(w[f"{prefix}/pointwise_filter"]))
        self.register_buffer("bias", w[f"{prefix}/bias"].clone())

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """The separable conv's output, or its ReLU (fused into the pointwise conv) when ``relu``."""
        x = tf_conv(x, self.depthwise, None, groups=self.depthwise.shape[0])
        return tf_conv(x, self.pointwise, self.bias, same=False, relu=relu)


class ReductionBlock(nn.Module):
    def __init__(self, w: Mapping[str, torch.Tensor], prefix: str, activate_input: bool = True):
        super().__init__()
        self.activate_input = activate_input
        self.sep0 = SeparableConv(w, f"{prefix}/separable_conv0")
        self.sep1 = SeparableConv(w, f"{prefix}/separable_conv1")
        self.expansion = Conv(w[f"{prefix}/expansion_conv/filters"], w[f"{prefix}/expansion_conv/bias"], stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sep0(F.relu(x) if self.activate_input else x, relu=True)
        out = self.sep1(out)
        out = F.max_pool2d(_same_pad(out, 3, 2, value=float("-inf")), 3, 2)  # TF 'same' max pooling ignores the pad
        shortcut = self.expansion(x)
        return out + shortcut if out.requires_grad or shortcut.requires_grad else out.add_(shortcut)


class MainBlock(nn.Module):
    def __init__(self, w: Mapping[str, torch.Tensor], prefix: str):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(w, f"{prefix}/separable_conv{i}") for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x)  # x itself is the residual: not in place
        for k, conv in enumerate(self.convs):
            out = conv(out, relu=k < len(self.convs) - 1)  # each ReLU fused into the conv before it
        return out + x if out.requires_grad or x.requires_grad else out.add_(x)


class AgeGenderNet(nn.Module):
    """TinyXception (2 middle blocks) + dense age and gender heads; input (B, 3, 112, 112) in [0, 1].

    Returns ``(age, gender_logits)``; softmax index 0 of the gender logits is male.
    """

    input_size = 112

    def __init__(self, w: Mapping[str, torch.Tensor], num_main_blocks: int = 2):
        super().__init__()
        self.conv_in = Conv(w["entry_flow/conv_in/filters"], w["entry_flow/conv_in/bias"], stride=2)
        self.entry = nn.Sequential(ReductionBlock(w, "entry_flow/reduction_block_0", activate_input=False),
                                   ReductionBlock(w, "entry_flow/reduction_block_1"))
        self.middle = nn.Sequential(*(MainBlock(w, f"middle_flow/main_block_{i}") for i in range(num_main_blocks)))
        self.exit_block = ReductionBlock(w, "exit_flow/reduction_block")
        self.exit_conv = SeparableConv(w, "exit_flow/separable_conv")
        self.age = nn.Linear(512, 1)
        self.gender = nn.Linear(512, 2)
        for head, key in ((self.age, "fc/age"), (self.gender, "fc/gender")):
            head.weight.data.copy_(w[f"{key}/weights"].T)
            head.bias.data.copy_(w[f"{key}/bias"])
            head.requires_grad_(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.conv_in(normalize(images), relu=True)
        out = self.middle(self.entry(out))
        return self.exit_conv(self.exit_block(out), relu=True)  # (B, 512, 7, 7)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(images)
        pooled = F.avg_pool2d(feats, 7, 2).flatten(1)  # face-api: 7x7 'valid' average pool, stride 2
        return self.age(pooled).squeeze(1), self.gender(pooled)


class ResidualBlock(nn.Module):
    """dlib's residual unit; ``down`` halves the resolution and doubles the channels of the shortcut."""

    def __init__(self, w: Mapping[str, torch.Tensor], prefix: str, down: bool = False):
        super().__init__()
        self.down = down

        def layer(name: str, stride: int, padding: str) -> Conv:
            p = f"{prefix}/{name}"
            return Conv(w[f"{p}/conv/filters"], w[f"{p}/conv/bias"], stride, padding,
                        scale=w[f"{p}/scale/weights"], shift=w[f"{p}/scale/biases"])

        self.conv1 = layer("conv1", 2, "valid") if down else layer("conv1", 1, "same")
        self.conv2 = layer("conv2", 1, "same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x, relu=True))
        if not self.down:
            return _add_relu(out, x)
        shortcut = F.avg_pool2d(x, 2, 2)
        if shortcut.shape[-2:] != out.shape[-2:]:  # face-api appends one zero row and column to the residual
            out = F.pad(out, (0, 1, 0, 1))
        if shortcut.shape[1] != out.shape[1]:  # and zero channels to the shortcut
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))
        return _add_relu(out, shortcut)


class FaceRecognitionNet(nn.Module):
    """dlib's ResNet-34-like face recogniser as in face-api.js; input (B, 3, 150, 150) in [0, 1], output (B, 128)."""

    input_size = 150
    _LAYOUT = (["conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3",
                "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2", "conv256_down_out"])

    def __init__(self, w: Mapping[str, torch.Tensor]):
        super().__init__()
        self.stem = Conv(w["conv32_down/conv/filters"], w["conv32_down/conv/bias"], 2, "valid",
                         scale=w["conv32_down/scale/weights"], shift=w["conv32_down/scale/biases"])
        self.blocks = nn.Sequential(*(ResidualBlock(w, name, down=name.endswith(("_down", "_down_out")))
                                      for name in self._LAYOUT))
        self.register_buffer("fc", w["fc"].clone())  # [256, 128], no bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(self.stem(normalize(images), relu=True), 3, 2)
        out = self.blocks(out)
        return out.mean(dim=(2, 3)) @ self.fc
