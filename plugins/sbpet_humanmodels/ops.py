"""TensorFlow ops as torch modules, with TensorFlow's semantics.

Every tensor keeps TensorFlow's logical layout (NHWC for images), so reshapes, reductions and
slices index exactly as the graph says. Convolutions and pools view their NHWC input as NCHW
through ``permute``, which gives torch a channels_last tensor without copying; their output,
channels_last too, is permuted back to NHWC for free.

TF's 'SAME' padding puts the odd extra row/column at the bottom/right (it matters at stride 2),
and max pooling pads with -inf, average pooling averages over the real pixels only.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedOp(ValueError):
    """A node this runner cannot execute (unknown op or an attribute value it does not implement)."""


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one axis: the extra pixel of an odd total goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial_padding(x: torch.Tensor, padding: str, kernel: Sequence[int], stride: Sequence[int],
                     dilation: Sequence[int] = (1, 1)) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an NHWC input."""
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        top, bottom = same_padding(x.shape[1], kernel[0], stride[0], dilation[0])
        left, right = same_padding(x.shape[2], kernel[1], stride[1], dilation[1])
        return top, bottom, left, right
    raise UnsupportedOp(f"padding {padding!r} is not supported (only SAME and VALID)")


def _hw(values: Sequence[int], what: str) -> tuple[int, int]:
    """The H and W entries of an NHWC attribute such as ``strides``."""
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise UnsupportedOp(f"{what} {list(values)} is not an NHWC spatial {what}")
    return int(values[1]), int(values[2])


# fused activations of _FusedConv2D / _FusedMatMul, as (min, max) clamps where they are clamps
CLAMPS = {"Relu": (0.0, math.inf), "Relu6": (0.0, 6.0)}
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Elu": F.elu,
}


def _fused_path(x: torch.Tensor) -> bool:
    """Whether oneDNN's convolution with the activation fused in can run: CPU float32, no gradient needed.

    The fused op has no backward, so anything that back-propagates takes F.conv2d; without gradients the
    fused op saves a pass over every activation map (and its allocation), which is most of the time
    outside the convolutions themselves.
    """
    return (_HAS_POINTWISE and x.device.type == "cpu" and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and x.requires_grad))


_HAS_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _pointwise_attr(clamp: tuple[float, float] | None) -> tuple[str, list]:
    """The clamp as a oneDNN post-op (exact: a clamp rounds nothing); other activations stay ATen's."""
    if clamp is None:
        return "none", []
    if clamp == (0.0, math.inf):
        return "relu", []
    return "hardtanh", list(clamp)  # oneDNN's clip: infinite bounds clip nothing


def _activate(y: torch.Tensor, clamp: tuple[float, float] | None, activation: str | None) -> torch.Tensor:
    """The clamp and activation after a convolution or dense layer; the clamp in place when autograd does
    not track ``y`` (a fresh output nobody else holds: in place saves an allocation and a pass)."""
    if clamp is not None:
        bounds = [None if math.isinf(v) else v for v in clamp]
        y = y.clamp(*bounds) if y.requires_grad else y.clamp_(*bounds)
    if activation is not None:
        y = ACTIVATIONS[activation](y)
    return y


class Conv2d(nn.Module):
    """Conv2D / DepthwiseConv2dNative (optionally with a folded bias and a clamp) on NHWC tensors."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: tuple[int, int],
                 dilation: tuple[int, int], padding: str, groups: int):
        super().__init__()
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias)
        self.stride, self.dilation, self.padding, self.groups = stride, dilation, padding, groups
        self.clamp: tuple[float, float] | None = None
        self.activation: str | None = None

    @classmethod
    def from_tf(cls, filter_hwio: torch.Tensor, attrs: dict, depthwise: bool) -> "Conv2d":
        if attrs.get("data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"data_format {attrs['data_format']!r} (only NHWC)")
        kh, kw, cin, cout = filter_hwio.shape
        if depthwise:  # [kh, kw, in, multiplier]: output channel c * multiplier + m, one group per input channel
            weight, groups = filter_hwio.reshape(kh, kw, cin * cout).permute(2, 0, 1).unsqueeze(1), cin
        else:
            weight, groups = filter_hwio.permute(3, 2, 0, 1), 1
        return cls(weight, None, stride=_hw(attrs["strides"], "strides"),
                   dilation=_hw(attrs.get("dilations", [1, 1, 1, 1]), "dilations"), padding=attrs["padding"], groups=groups)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = _spatial_padding(x, self.padding, self.weight.shape[2:], self.stride, self.dilation)
        pad = (top, left)
        if top != bottom or left != right:  # TF's odd extra pixel goes after: only an explicit pad can say so
            x, pad = F.pad(x, (0, 0, left, right, top, bottom)), (0, 0)
        x = x.permute(0, 3, 1, 2)
        if _fused_path(x):
            attr, scalars = _pointwise_attr(self.clamp)
            y = torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, list(pad), list(self.stride),
                                                       list(self.dilation), self.groups, attr, scalars, None)
            return _activate(y.permute(0, 2, 3, 1), None, self.activation)
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups).permute(0, 2, 3, 1)
        return _activate(y, self.clamp, self.activation)


class MatMul(nn.Module):
    """MatMul / _FusedMatMul with a constant right-hand side (a dense layer)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight.contiguous())  # [in, out]
        self.register_buffer("bias", bias)
        self.clamp: tuple[float, float] | None = None
        self.activation: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight if self.bias is None else torch.addmm(self.bias, x, self.weight)
        return _activate(y, self.clamp, self.activation)


class Pool(nn.Module):
    """MaxPool / AvgPool on NHWC tensors with TF padding."""

    def __init__(self, kind: str, attrs: dict):
        super().__init__()
        if attrs.get("data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"data_format {attrs['data_format']!r} (only NHWC)")
        self.kind, self.padding = kind, attrs["padding"]
        self.kernel, self.stride = _hw(attrs["ksize"], "ksize"), _hw(attrs["strides"], "strides")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = _spatial_padding(x, self.padding, self.kernel, self.stride)
        padded = top or bottom or left or right
        if padded and top == bottom and left == right and 2 * top <= self.kernel[0] and 2 * left <= self.kernel[1]:
            # torch's own padding has TF's semantics when it is symmetric: max ignores it, and
            # count_include_pad=False averages over the real pixels only; no padded copy is made
            x = x.permute(0, 3, 1, 2)
            if self.kind == "max":
                return F.max_pool2d(x, self.kernel, self.stride, (top, left)).permute(0, 2, 3, 1)
            return F.avg_pool2d(x, self.kernel, self.stride, (top, left), count_include_pad=False).permute(0, 2, 3, 1)
        if self.kind == "max":
            if padded:
                x = F.pad(x, (0, 0, left, right, top, bottom), value=-math.inf)
            return F.max_pool2d(x.permute(0, 3, 1, 2), self.kernel, self.stride).permute(0, 2, 3, 1)
        if not padded:
            return F.avg_pool2d(x.permute(0, 3, 1, 2), self.kernel, self.stride).permute(0, 2, 3, 1)
        # TF averages over the pixels inside the image only: divide the zero-padded sum by the count
        ones = torch.ones_like(x[..., :1])
        sums, counts = (F.avg_pool2d(F.pad(t, (0, 0, left, right, top, bottom)).permute(0, 3, 1, 2), self.kernel, self.stride)
                        for t in (x, ones))
        return (sums / counts).permute(0, 2, 3, 1)


class Lambda(nn.Module):
    """A parameter-free op: ``fn(*inputs)``."""

    def __init__(self, fn: Callable[..., torch.Tensor], label: str):
        super().__init__()
        self.fn, self.label = fn, label

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs)

    def extra_repr(self) -> str:
        return self.label


class Constant(nn.Module):
    """A graph constant used as a runtime tensor (a buffer, so it follows ``.to(device)``)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self) -> torch.Tensor:
        return self.value


BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "RealDiv": torch.div, "Maximum": torch.maximum, "Minimum": torch.minimum,
    "SquaredDifference": lambda a, b: (a - b).square(), "Pow": torch.pow,
}
UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu, "Relu6": lambda x: x.clamp(0.0, 6.0), "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Abs": torch.abs, "Rsqrt": torch.rsqrt, "Sqrt": torch.sqrt, "Square": torch.square, "Exp": torch.exp,
    "Neg": torch.neg, "Elu": F.elu, "Identity": lambda x: x, "Softmax": lambda x: torch.softmax(x, -1),
}
REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "Mean": torch.mean, "Sum": torch.sum, "Prod": lambda x, dim, keepdim: _prod(x, dim, keepdim),
    "Max": lambda x, dim, keepdim: torch.amax(x, dim, keepdim), "Min": lambda x, dim, keepdim: torch.amin(x, dim, keepdim),
}


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=keepdim)
    return x


def reduce_op(op: str, axes: Sequence[int], keep_dims: bool) -> Lambda:
    fn, dims = REDUCE[op], tuple(int(a) for a in axes)
    if not dims:
        return Lambda(lambda x: x, f"{op} over no axes")
    return Lambda(lambda x: fn(x, dim=dims, keepdim=keep_dims), f"{op}(axes={dims}, keep_dims={keep_dims})")


def reshape_op(shape: Sequence[int]) -> Lambda:
    shape = tuple(int(s) for s in shape)
    return Lambda(lambda x: x.reshape(shape), f"Reshape{shape}")


def squeeze_op(dims: Sequence[int]) -> Lambda:
    dims = tuple(int(d) for d in dims)

    def squeeze(x: torch.Tensor) -> torch.Tensor:
        chosen = dims or tuple(i for i, s in enumerate(x.shape) if s == 1)
        return x.squeeze(tuple(d % x.dim() for d in chosen))

    return Lambda(squeeze, f"Squeeze{dims}")


def expand_dims_op(axis: int) -> Lambda:
    return Lambda(lambda x: x.unsqueeze(axis if axis >= 0 else x.dim() + 1 + axis), f"ExpandDims({axis})")


def pad_op(paddings: Sequence[Sequence[int]], value: float = 0.0) -> Lambda:
    flat: list[int] = []
    for before, after in reversed([tuple(int(v) for v in p) for p in paddings]):  # F.pad lists the last axis first
        flat += [before, after]
    return Lambda(lambda x: F.pad(x, flat, value=value), f"Pad{flat}")


def strided_slice_op(begin: Sequence[int], end: Sequence[int], strides: Sequence[int], attrs: dict) -> Lambda:
    """TF StridedSlice with its five bit masks (positive strides only)."""
    masks = {k: int(attrs.get(k, 0)) for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    if any(s <= 0 for s in strides):
        raise UnsupportedOp(f"StridedSlice with strides {list(strides)} (only positive strides)")
    if bin(masks["ellipsis_mask"]).count("1") > 1:
        raise UnsupportedOp("StridedSlice with more than one ellipsis")
    spec = list(zip(begin, end, strides))

    def strided_slice(x: torch.Tensor) -> torch.Tensor:
        index: list[object] = []
        for i, (b, e, s) in enumerate(spec):
            bit = 1 << i
            if masks["ellipsis_mask"] & bit:
                index.append(Ellipsis)
            elif masks["new_axis_mask"] & bit:
                index.append(None)
            elif masks["shrink_axis_mask"] & bit:  # an integer index drops the axis, as TF's shrink does
                index.append(int(b))
            else:
                index.append(slice(None if masks["begin_mask"] & bit else int(b),
                                   None if masks["end_mask"] & bit else int(e), int(s)))
        return x[tuple(index)]

    return Lambda(strided_slice, f"StridedSlice({list(begin)}, {list(end)}, {list(strides)}, {masks})")


def concat_op(axis: int) -> Lambda:
    return Lambda(lambda *xs: torch.cat(xs, dim=axis), f"ConcatV2(axis={axis})")


def transpose_op(perm: Sequence[int]) -> Lambda:
    perm = tuple(int(p) for p in perm)
    return Lambda(lambda x: x.permute(perm), f"Transpose{perm}")


def fused_activation(module: Conv2d | MatMul, fused: Sequence[str], node_name: str) -> None:
    """Attach the activation that follows BiasAdd in a fused op's ``fused_ops`` list."""
    if not fused or fused[0] != "BiasAdd" or len(fused) > 2:
        raise UnsupportedOp(f"{node_name}: fused_ops {list(fused)} (only BiasAdd, optionally with one activation)")
    if len(fused) == 2:
        if fused[1] in CLAMPS:
            module.clamp = CLAMPS[fused[1]]
        elif fused[1] in ACTIVATIONS:
            module.activation = fused[1]
        else:
            raise UnsupportedOp(f"{node_name}: fused activation {fused[1]!r} is not supported")
