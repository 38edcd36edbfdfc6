"""Compile a TensorFlow.js graph model into a torch module, once.

:func:`compile_graph` keeps the nodes that the requested outputs depend on, orders them
topologically, folds the unfused batch-norm ``Mul``/``Add`` and the ReLU/ReLU6 clamps that follow a
convolution into that convolution (the converter leaves many of them as separate ops), and turns
every node into a module of :mod:`.ops`. Constants become buffers, so ``.to(device)`` moves the
whole graph. Shape-like inputs (reshape targets, reduction axes, slice bounds) must be constants:
they are read once here. The module is batched and differentiable: PETs can back-propagate through it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import ops
from .loader import GraphFormatError, Node, TfjsGraph

_CONVS = {"Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative"}
_SCALE = {"Mul"}
_SHIFT = {"Add", "AddV2", "BiasAdd", "Sub"}
_CLAMPS = {"Relu", "Relu6", "Minimum", "Maximum"}


class CompiledGraph(nn.Module):
    """The graph as a sequence of modules; ``forward(*inputs)`` returns the requested outputs as a tuple."""

    def __init__(self, steps: list[tuple[str, nn.Module, list[str]]], inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.layers = nn.ModuleList(module for _, module, _ in steps)
        self.step_names = [name for name, _, _ in steps]
        self.step_inputs = [list(i) for _, _, i in steps]
        self.input_names, self.output_names = list(inputs), list(outputs)
        last_use: dict[str, int] = {}
        for k, names in enumerate(self.step_inputs):
            for name in names:
                last_use[name] = k
        # slots to drop after each step: intermediate values free their memory as early as possible
        self._release = [[n for n in set(names) if last_use[n] == k and n not in self.output_names]
                         for k, names in enumerate(self.step_inputs)]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the graph takes {len(self.input_names)} input(s) ({', '.join(self.input_names)}), got {len(inputs)}")
        values: dict[str, torch.Tensor] = dict(zip(self.input_names, inputs))
        for name, layer, names, release in zip(self.step_names, self.layers, self.step_inputs, self._release):
            values[name] = layer(*(values[n] for n in names))
            for n in release:
                del values[n]
        return tuple(values[n] for n in self.output_names)


def _const(graph: TfjsGraph, nodes: dict[str, Node], name: str, user: Node) -> np.ndarray:
    node = nodes.get(name)
    if node is None or node.op != "Const":
        raise ops.UnsupportedOp(f"{user.name} ({user.op}): input {name!r} must be a constant (dynamic shapes are not supported)")
    return graph.constants[name]


def _tensor(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, copy=True))


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts along the last (channel) axis only, as a (channels,) vector; else None."""
    if value.dtype != np.float32 or value.ndim > 4:
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(())), np.float32)
    if value.shape[-1] == channels and value.size == channels:
        return value.reshape(channels)
    return None


def _scalar(value: np.ndarray) -> float | None:
    return float(value.reshape(())) if value.dtype == np.float32 and value.size == 1 else None


def _compose_clamp(current: tuple[float, float], new: tuple[float, float]) -> tuple[float, float]:
    """clamp(clamp(x, a, b), c, d) == clamp(x, clamp(a, c, d), clamp(b, c, d)) (both are monotone)."""
    (a, b), (c, d) = current, new
    return min(max(a, c), d), min(max(b, c), d)


def _build_conv(graph: TfjsGraph, nodes: dict[str, Node], node: Node) -> ops.Conv2d:
    depthwise = "Depthwise" in node.op
    conv = ops.Conv2d.from_tf(_tensor(_const(graph, nodes, node.inputs[1], node)), node.attrs, depthwise)
    if node.op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
        if int(node.attrs.get("num_args", 1)) != 1:
            raise ops.UnsupportedOp(f"{node.name}: fused op with {node.attrs.get('num_args')} extra arguments (only a bias)")
        conv.bias = _tensor(_const(graph, nodes, node.inputs[2], node)).reshape(-1)
        ops.fused_activation(conv, node.attrs.get("fused_ops", []), node.name)
    return conv


def _build_matmul(graph: TfjsGraph, nodes: dict[str, Node], node: Node) -> tuple[nn.Module, list[str]]:
    ta, tb = bool(node.attrs.get("transpose_a", False)), bool(node.attrs.get("transpose_b", False))
    rhs = nodes.get(node.inputs[1])
    if rhs is None or rhs.op != "Const" or ta or node.op == "BatchMatMulV2":
        if node.op == "_FusedMatMul":
            raise ops.UnsupportedOp(f"{node.name}: _FusedMatMul with a non-constant or transposed operand")
        fn = lambda a, b: (a.transpose(-1, -2) if ta else a) @ (b.transpose(-1, -2) if tb else b)  # noqa: E731
        return ops.Lambda(fn, f"{node.op}(transpose_a={ta}, transpose_b={tb})"), node.inputs[:2]
    weight = _tensor(graph.constants[rhs.name])
    layer = ops.MatMul(weight.t() if tb else weight, None)
    if node.op == "_FusedMatMul":
        layer.bias = _tensor(_const(graph, nodes, node.inputs[2], node)).reshape(-1)
        ops.fused_activation(layer, node.attrs.get("fused_ops", []), node.name)
    return layer, node.inputs[:1]


def _build(graph: TfjsGraph, nodes: dict[str, Node], node: Node) -> tuple[nn.Module, list[str]]:
    """One node -> (module, names of its runtime inputs)."""
    op, inputs = node.op, node.inputs
    static = lambda k: _const(graph, nodes, inputs[k], node)  # noqa: E731
    if op in _CONVS:
        return _build_conv(graph, nodes, node), inputs[:1]
    if op in ("MatMul", "_FusedMatMul", "BatchMatMulV2"):
        return _build_matmul(graph, nodes, node)
    if op in ("MaxPool", "AvgPool"):
        return ops.Pool("max" if op == "MaxPool" else "avg", node.attrs), inputs[:1]
    if op == "Const":
        return ops.Constant(_tensor(graph.constants[node.name])), []
    if op in ops.BINARY:
        return ops.Lambda(ops.BINARY[op], op), inputs[:2]
    if op in ops.UNARY:
        return ops.Lambda(ops.UNARY[op], op), inputs[:1]
    if op in ops.REDUCE:
        return ops.reduce_op(op, np.atleast_1d(static(1)).tolist(), bool(node.attrs.get("keep_dims", False))), inputs[:1]
    if op == "Reshape":
        return ops.reshape_op(static(1).reshape(-1).tolist()), inputs[:1]
    if op == "Squeeze":
        return ops.squeeze_op(node.attrs.get("squeeze_dims", [])), inputs[:1]
    if op == "ExpandDims":
        return ops.expand_dims_op(int(static(1).reshape(()))), inputs[:1]
    if op in ("Pad", "PadV2"):
        value = float(static(2).reshape(())) if op == "PadV2" else 0.0
        return ops.pad_op(static(1).tolist(), value), inputs[:1]
    if op == "StridedSlice":
        return ops.strided_slice_op(*(static(k).reshape(-1).tolist() for k in (1, 2, 3)), node.attrs), inputs[:1]
    if op == "ConcatV2":
        return ops.concat_op(int(_const(graph, nodes, inputs[-1], node).reshape(()))), inputs[:-1]
    if op == "Transpose":
        return ops.transpose_op(static(1).tolist()), inputs[:1]
    raise ops.UnsupportedOp(f"{graph.source}: node {node.name!r} uses op {op!r}, which this runner does not implement")


def _fold_chains(graph: TfjsGraph, nodes: dict[str, Node], order: list[str], keep: set[str],
                 consumers: dict[str, list[str]]) -> dict[str, tuple[ops.Conv2d, str]]:
    """Convolutions followed by per-channel Mul/Add and clamps -> one module each.

    Returns {name of the chain's last node: (the folded conv module, the conv's input)}. A chain
    only grows through nodes that are the sole consumer of the previous one and not requested outputs,
    so nothing else reads the values it swallows; Mul/Add fold only before the first clamp.
    """
    fused: dict[str, tuple[ops.Conv2d, str]] = {}
    for name in order:
        node = nodes[name]
        if node.op not in _CONVS:
            continue
        conv = _build_conv(graph, nodes, node)
        if conv.activation is not None:
            continue
        weight = conv.weight.clone()
        bias = conv.bias.clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        clamp = conv.clamp
        tail = name
        while tail not in keep and len(consumers[tail]) == 1:
            nxt = nodes[consumers[tail][0]]
            other = [i for i in nxt.inputs if i != tail]
            value = graph.constants.get(other[0]) if len(other) == 1 and nodes.get(other[0], nxt).op == "Const" else None
            if nxt.op in ("Relu", "Relu6"):
                clamp = _compose_clamp(clamp or (-math.inf, math.inf), ops.CLAMPS[nxt.op])
            elif nxt.op in ("Minimum", "Maximum") and value is not None and _scalar(value) is not None:
                bound = _scalar(value)
                step = (-math.inf, bound) if nxt.op == "Minimum" else (bound, math.inf)
                clamp = _compose_clamp(clamp or (-math.inf, math.inf), step)
            elif clamp is None and value is not None and nxt.op in _SCALE | _SHIFT:
                channel = _per_channel(value, conv.out_channels)
                if channel is None or (nxt.op == "Sub" and nxt.inputs[0] != tail):
                    break
                c = torch.from_numpy(channel.copy())
                if nxt.op == "Mul":
                    weight, bias = weight * c.view(-1, 1, 1, 1), bias * c
                else:
                    bias = bias - c if nxt.op == "Sub" else bias + c
            else:
                break
            tail = nxt.name
        if tail != name:
            conv.weight = weight.contiguous(memory_format=torch.channels_last)
            conv.bias, conv.clamp = bias, clamp
            fused[tail] = (conv, node.inputs[0])
    return fused


def _monotone_affine(graph: TfjsGraph, nodes: dict[str, Node], node: Node) -> str | None:
    """The data input of ``node`` if it is ``x * c`` (c > 0), ``x + c`` or ``x - c`` with a constant ``c``
    that broadcasts along the channel axis only; else None. Such a map rounds monotonically, so it
    commutes exactly (bit for bit) with a max pool."""
    if node.op not in _SCALE | _SHIFT or len(node.inputs) != 2:
        return None
    consts = [i for i in node.inputs if nodes.get(i) is not None and nodes[i].op == "Const"]
    if len(consts) != 1 or (node.op == "Sub" and node.inputs[1] != consts[0]):
        return None
    value = graph.constants[consts[0]]
    if value.dtype != np.float32 or any(d != 1 for d in value.shape[:-1]) or value.ndim > 4:
        return None
    if node.op == "Mul" and not (value > 0).all():
        return None
    return next(i for i in node.inputs if i != consts[0])


def pool_before_affine(graph: TfjsGraph, outputs: Sequence[str]) -> TfjsGraph:
    """Move per-channel scales (positive) and shifts that feed a max pool to after it.

    Keras graphs such as GEAR's run conv -> ReLU -> batch norm -> max pool: moved after the pool, the
    batch norm's multiply and add touch a quarter of the values. The result is bit-identical. Only
    chains nothing else reads are moved; the last affine node takes the pool's name, so the pool's
    consumers read the same value under the same name.
    """
    nodes = {n.name: n for n in graph.nodes}
    consumers: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    replaced: dict[str, list[Node]] = {}  # an original node -> the nodes standing in its place
    dropped: set[str] = set()
    for pool in graph.nodes:
        if pool.op != "MaxPool":
            continue
        chain: list[Node] = []
        source = pool.inputs[0]
        while (source in nodes and source not in outputs and consumers.get(source) == 1 and source not in dropped
               and (x := _monotone_affine(graph, nodes, nodes[source])) is not None):
            chain.insert(0, nodes[source])
            source = x
        if not chain:
            continue
        moved = Node(f"{pool.name}/before_affine", "MaxPool", [source], pool.attrs)
        previous, new_chain = moved.name, []
        for k, node in enumerate(chain):
            data = _monotone_affine(graph, nodes, node)
            name = pool.name if k == len(chain) - 1 else node.name
            new_chain.append(Node(name, node.op, [previous if i == data else i for i in node.inputs], node.attrs))
            previous = name
        dropped.update(n.name for n in chain)
        replaced[pool.name] = [moved, *new_chain]
    if not replaced:
        return graph
    rewritten = [m for n in graph.nodes if n.name not in dropped for m in replaced.get(n.name, [n])]
    return TfjsGraph(rewritten, graph.constants, graph.source)


def _topological(nodes: dict[str, Node], outputs: Sequence[str], source: str) -> list[str]:
    """Nodes the outputs depend on, each after its inputs (iterative DFS: graphs can be deep)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for out in outputs:
        if out not in nodes:
            raise GraphFormatError(f"{source}: no node named {out!r} (outputs must name graph nodes)")
        stack = [(out, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise GraphFormatError(f"{source}: the graph has a cycle through {name!r}")
            if name not in nodes:
                raise GraphFormatError(f"{source}: a node reads {name!r}, which the graph does not define")
            state[name] = 1
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(nodes[name].inputs) if state.get(i) != 2)
    return order


def compile_graph(graph: TfjsGraph, outputs: Sequence[str], *, fold: bool = True) -> CompiledGraph:
    """A torch module computing ``outputs`` (node names) from the graph's placeholders."""
    if fold:
        graph = pool_before_affine(graph, outputs)
    nodes = {n.name: n for n in graph.nodes}
    order = _topological(nodes, outputs, graph.source)
    consumers: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for i in nodes[name].inputs:
            consumers[i].append(name)
    fused = _fold_chains(graph, nodes, order, set(outputs), consumers) if fold else {}
    absorbed: set[str] = set()
    for tail, (_, conv_input) in fused.items():  # walk back from each chain's end to its conv
        name = tail
        while nodes[name].op not in _CONVS or nodes[name].inputs[0] != conv_input:
            name = next(i for i in nodes[name].inputs if nodes[i].op != "Const")
            absorbed.add(name)
    needed: set[str] = set(outputs)  # which nodes a kept step reads at run time
    steps: list[tuple[str, nn.Module, list[str]]] = []
    built: dict[str, tuple[nn.Module, list[str]]] = {}
    for name in reversed(order):
        if name in absorbed or name not in needed or nodes[name].op == "Placeholder":
            continue
        module, runtime_inputs = (fused[name][0], [fused[name][1]]) if name in fused else _build(graph, nodes, nodes[name])
        built[name] = (module, runtime_inputs)
        needed.update(runtime_inputs)
    for name in order:
        if name in built:
            steps.append((name, *built[name]))
    placeholders = [n for n in graph.placeholders if n in needed]
    return CompiledGraph(steps, placeholders, outputs)


def run_numpy(graph: TfjsGraph, outputs: Sequence[str], inputs: Sequence[np.ndarray], fold: bool = True,
              device: str = "cpu") -> list[np.ndarray]:
    """Convenience for tests and scripts: compile, run once on numpy inputs, return numpy outputs."""
    module = compile_graph(graph, outputs, fold=fold).to(device).eval()
    with torch.no_grad():
        result = module(*(torch.as_tensor(np.asarray(x, np.float32), device=device) for x in inputs))
    return [r.cpu().numpy() for r in result]

