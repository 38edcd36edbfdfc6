"""The TF.js graph runner on tiny synthetic graphs: TF's padding rules, weight decoding, folding, errors.

References here are written out by hand with numpy (no TensorFlow needed); the comparison with a
real TensorFlow execution is in test_humanmodels_reference.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from humanmodels_graphs import GraphBuilder, conv_attrs, pool_attrs, strings
from sbpet_humanmodels.graph import compile_graph, run_numpy
from sbpet_humanmodels.loader import GraphFormatError, load_graph
from sbpet_humanmodels.ops import UnsupportedOp, same_padding
from sbpet_humanmodels.preprocess import Preprocess

RNG = np.random.default_rng(0)


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """NHWC x HWIO convolution with explicit (top, bottom, left, right) zero padding."""
    top, bottom, left, right = pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(4, 3, 2) == (0, 1)  # TF: out 2, total 1 -> all of it at the bottom/right
    assert same_padding(5, 3, 2) == (1, 1)
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(7, 1, 1) == (0, 0)
    assert same_padding(6, 5, 1) == (2, 2)


@pytest.mark.parametrize("size", [8, 7])
def test_conv_stride2_same_matches_a_hand_padded_reference(tmp_path, size):
    g = GraphBuilder((-1, size, size, 3))
    w = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    g.op("conv", "Conv2D", ["input", g.const("w", w)], conv_attrs((1, 2, 2, 1), "SAME"))
    graph = load_graph(g.write(tmp_path))
    x = RNG.normal(size=(2, size, size, 3)).astype(np.float32)
    (got,) = run_numpy(graph, ["conv"], [x])
    pads = (*same_padding(size, 3, 2), *same_padding(size, 3, 2))
    np.testing.assert_allclose(got, conv_reference(x, w, 2, pads), atol=1e-4)
    if size == 8:  # symmetric padding would give a different answer: the test can tell them apart
        assert not np.allclose(got, conv_reference(x, w, 2, (1, 0, 1, 0)), atol=1e-3)


def test_depthwise_channel_multiplier_order(tmp_path):
    g = GraphBuilder((-1, 5, 5, 2))
    w = RNG.normal(size=(3, 3, 2, 3)).astype(np.float32)  # multiplier 3: output channel c * 3 + m
    g.op("dw", "DepthwiseConv2dNative", ["input", g.const("w", w)], conv_attrs((1, 1, 1, 1), "VALID"))
    x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    (got,) = run_numpy(load_graph(g.write(tmp_path)), ["dw"], [x])
    for c in range(2):
        for m in range(3):
            ref = conv_reference(x[..., c:c + 1], w[:, :, c:c + 1, m:m + 1], 1, (0, 0, 0, 0))
            np.testing.assert_allclose(got[..., c * 3 + m], ref[..., 0], atol=1e-4)


def test_maxpool_same_pads_with_minus_infinity_and_avgpool_counts_real_pixels(tmp_path):
    g = GraphBuilder((-1, 4, 4, 1))
    g.op("max", "MaxPool", ["input"], pool_attrs((1, 3, 3, 1), (1, 2, 2, 1), "SAME"))
    g.op("avg", "AvgPool", ["input"], pool_attrs((1, 3, 3, 1), (1, 2, 2, 1), "SAME"))
    x = -1.0 - np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # all negative: a zero border would win the max
    got_max, got_avg = run_numpy(load_graph(g.write(tmp_path)), ["max", "avg"], [x])
    # SAME at 4 px, k 3, s 2: no padding before, one row/column after; windows rows/cols {0,1,2} and {2,3}
    windows = [(slice(0, 3), slice(0, 3)), (slice(0, 3), slice(2, 4)), (slice(2, 4), slice(0, 3)), (slice(2, 4), slice(2, 4))]
    expect_max = np.array([x[0, r, c, 0].max() for r, c in windows]).reshape(2, 2)
    expect_avg = np.array([x[0, r, c, 0].mean() for r, c in windows]).reshape(2, 2)
    np.testing.assert_allclose(got_max[0, ..., 0], expect_max)
    np.testing.assert_allclose(got_avg[0, ..., 0], expect_avg, rtol=1e-6)
    assert (got_max < 0).all()


@pytest.mark.parametrize("kind, tolerance", [("uint8", 1 / 255), ("uint16", 1 / 65535), ("float16", 1e-3)])
def test_quantised_weights_decode(tmp_path, kind, tolerance):
    g = GraphBuilder((-1, 4))
    value = RNG.uniform(-2.0, 3.0, size=(4, 5)).astype(np.float32)
    g.const("w", value, quantize=kind)
    g.op("mm", "MatMul", ["input", "w"], {"transpose_a": {"b": False}, "transpose_b": {"b": False}})
    path = g.write(tmp_path)
    entry = json.loads(path.read_text())["weightsManifest"][0]["weights"][0]
    assert entry["quantization"]["dtype"] == kind and entry["dtype"] == "float32"
    bytes_per_value = {"uint8": 1, "uint16": 2, "float16": 2}[kind]
    assert (tmp_path / "model.bin").stat().st_size == value.size * bytes_per_value
    decoded = load_graph(path).constants["w"]
    assert decoded.dtype == np.float32 and decoded.shape == value.shape
    np.testing.assert_allclose(decoded, value, atol=5.0 * tolerance)
    (got,) = run_numpy(load_graph(path), ["mm"], [np.eye(4, dtype=np.float32)])
    np.testing.assert_allclose(got, decoded, atol=1e-6)


def test_batchnorm_and_relu6_fold_into_the_convolution(tmp_path):
    g = GraphBuilder((-1, 6, 6, 3))
    g.op("conv", "Conv2D", ["input", g.const("w", RNG.normal(size=(3, 3, 3, 4)))], conv_attrs((1, 2, 2, 1)))
    g.op("bn_mul", "Mul", ["conv", g.const("scale", RNG.uniform(0.5, 2, size=4))])
    g.op("bn_add", "Add", ["bn_mul", g.const("shift", RNG.normal(size=4))])
    g.op("relu", "Relu", ["bn_add"])
    g.op("min6", "Minimum", ["relu", g.const("six", np.float32(6.0))])
    g.op("clip", "Maximum", ["min6", g.const("zero", np.float32(0.0))])
    graph = load_graph(g.write(tmp_path))
    x = 3 * RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
    folded = compile_graph(graph, ["clip"])
    plain = compile_graph(graph, ["clip"], fold=False)
    assert len(folded.layers) == 1 and len(plain.layers) > 5
    with torch.no_grad():
        a, b = folded(torch.from_numpy(x))[0], plain(torch.from_numpy(x))[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.min() == 0 and a.max() == 6  # the clamp is there, both ends reached with these inputs


def test_a_conv_output_used_twice_is_not_folded(tmp_path):
    g = GraphBuilder((-1, 4, 4, 2))
    g.op("conv", "Conv2D", ["input", g.const("w", RNG.normal(size=(1, 1, 2, 2)))], conv_attrs())
    g.op("mul", "Mul", ["conv", g.const("scale", np.float32([2.0, 3.0]))])
    g.op("sum", "AddV2", ["mul", "conv"])  # conv feeds two nodes: folding the Mul would change "sum"
    graph = load_graph(g.write(tmp_path))
    x = RNG.normal(size=(1, 4, 4, 2)).astype(np.float32)
    (folded,), (plain,) = run_numpy(graph, ["sum"], [x]), run_numpy(graph, ["sum"], [x], fold=False)
    np.testing.assert_allclose(folded, plain, atol=1e-6)


def test_fused_ops_reshape_reduce_and_slices(tmp_path):
    g = GraphBuilder((-1, 4, 4, 2))
    w, b = RNG.normal(size=(3, 3, 2, 3)), RNG.normal(size=3)
    g.op("fconv", "_FusedConv2D", ["input", g.const("w", w), g.const("b", b)],
         conv_attrs((1, 1, 1, 1), "SAME", fused_ops=strings(["BiasAdd", "Relu"]), num_args={"i": "1"}))
    g.op("flat", "Reshape", ["fconv", g.const("shape", np.int32([-1, 48]))])
    g.op("mean", "Mean", ["fconv", g.const("axes", np.int32([1, 2]))], {"keep_dims": {"b": False}})
    g.op("slice", "StridedSlice", ["mean", g.const("begin", np.int32([0, 1])), g.const("end", np.int32([0, 2])),
                                   g.const("strides", np.int32([1, 1]))],
         {"begin_mask": {"i": "1"}, "end_mask": {"i": "1"}, "shrink_axis_mask": {"i": "2"}, "ellipsis_mask": {"i": "0"},
          "new_axis_mask": {"i": "0"}})
    g.op("expand", "ExpandDims", ["slice", g.const("axis", np.int32(-1))])
    g.op("pad", "Pad", ["input", g.const("paddings", np.int32([[0, 0], [1, 2], [0, 1], [0, 0]]))])
    x = RNG.normal(size=(3, 4, 4, 2)).astype(np.float32)
    flat, mean, expand, pad = run_numpy(load_graph(g.write(tmp_path)), ["flat", "mean", "expand", "pad"], [x])
    conv = np.maximum(conv_reference(x, w, 1, (1, 1, 1, 1)) + b, 0)
    np.testing.assert_allclose(flat, conv.reshape(3, 48), atol=1e-4)  # NHWC order, as TF flattens
    np.testing.assert_allclose(mean, conv.mean((1, 2)), atol=1e-4)
    np.testing.assert_allclose(expand, conv.mean((1, 2))[:, 1:2], atol=1e-4)
    np.testing.assert_allclose(pad, np.pad(x, ((0, 0), (1, 2), (0, 1), (0, 0))))


def test_unknown_op_and_bad_files_raise_clear_errors(tmp_path):
    g = GraphBuilder((-1, 4))
    g.op("weird", "Cumsum", ["input"])
    with pytest.raises(UnsupportedOp, match="'weird'.*'Cumsum'"):
        compile_graph(load_graph(g.write(tmp_path / "a")), ["weird"])
    with pytest.raises(GraphFormatError, match="no node named 'nope'"):
        compile_graph(load_graph(g.write(tmp_path / "a")), ["nope"])

    g = GraphBuilder((-1, 4))
    g.const("w", np.ones((4, 4)))
    path = g.write(tmp_path / "b")
    (tmp_path / "b" / "model.bin").write_bytes(b"\0" * 10)
    with pytest.raises(GraphFormatError, match="model.json: the shards end before tensor w"):
        load_graph(path)
    (tmp_path / "b" / "model.bin").unlink()
    with pytest.raises(GraphFormatError, match="weight shard.*not found: model.bin"):
        load_graph(path)
    (tmp_path / "c.json").write_text('{"modelTopology": {}}')
    with pytest.raises(GraphFormatError, match="c.json: not a TensorFlow.js graph model"):
        load_graph(tmp_path / "c.json")


def test_graph_runs_batched_on_the_module_device_and_passes_gradients(tmp_path):
    g = GraphBuilder((-1, 6, 6, 3))
    g.op("conv", "Conv2D", ["input", g.const("w", RNG.normal(size=(3, 3, 3, 2)))], conv_attrs((1, 2, 2, 1)))
    g.op("out", "Sigmoid", ["conv"])
    net = compile_graph(load_graph(g.write(tmp_path)), ["out"]).to(torch.float32)
    assert all(not p.requires_grad for p in net.buffers())
    x = torch.randn(5, 6, 6, 3, requires_grad=True)
    (y,) = net(x)
    assert y.shape == (5, 3, 3, 2)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    singles = torch.cat([net(x[i:i + 1])[0] for i in range(5)])
    torch.testing.assert_close(y, singles)  # rows are independent: batching changes nothing


def test_preprocess_pads_the_tight_crop_and_sets_the_range():
    images = torch.rand(2, 3, 40, 40)
    prep = Preprocess(64, colour="bgr", value_range="byte", pad=0.4, pad_mode="replicate")
    assert prep.face_size == 36  # 64 / 1.8
    out = prep(images)
    assert out.shape == (2, 64, 64, 3) and out.is_contiguous()
    face = torch.nn.functional.interpolate(images, size=(36, 36), mode="bilinear", antialias=True, align_corners=False)
    face = face.clamp(0, 1).flip(1).permute(0, 2, 3, 1) * 255
    torch.testing.assert_close(out[:, 14:50, 14:50], face)
    torch.testing.assert_close(out[:, :14, 20], face[:, :1, 6].expand(-1, 14, -1))  # replicated edge rows

    caffe = Preprocess(16, colour="bgr", value_range="caffe", pad=0.25)(torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(caffe[0, 8, 8], torch.tensor([255 - 103.939, 255 - 116.779, 255 - 123.68]))
    torch.testing.assert_close(caffe[0, 0, 0], torch.tensor([-103.939, -116.779, -123.68]))  # zero border, then means
    gray = Preprocess(8, colour="gray", value_range="signed")(torch.ones(1, 3, 8, 8))
    assert gray.shape == (1, 8, 8, 1) and torch.allclose(gray, torch.tensor(0.9998))
    with pytest.raises(ValueError, match="caffe value range is defined on BGR"):
        Preprocess(8, colour="rgb", value_range="caffe")


def test_unfusing_the_relu_of_a_prelu_restores_its_negative_slope(tmp_path):
    from sbpet_humanmodels.plugin import unfuse_prelu_relu

    g = GraphBuilder((-1, 4, 4, 2))
    w, b, alpha = RNG.normal(size=(1, 1, 2, 1)), RNG.normal(size=2), np.float32([0.25, 0.5])
    # the converter's mistake: relu fused into the conv, whose output also feeds PReLU's negative branch
    g.op("dw", "FusedDepthwiseConv2dNative", ["input", g.const("w", w), g.const("b", b)],
         conv_attrs((1, 1, 1, 1), "VALID", fused_ops=strings(["BiasAdd", "Relu"]), num_args={"i": "1"}))
    g.op("abs", "Abs", ["dw"])
    g.op("sub", "Sub", ["dw", "abs"])
    g.op("mul", "Mul", ["sub", g.const("half_alpha", alpha / 2)])
    g.op("prelu", "Add", ["dw", "mul"])
    graph = load_graph(g.write(tmp_path))
    x = RNG.normal(size=(2, 4, 4, 2)).astype(np.float32)
    pre = x * w[0, 0, :, 0] + b
    (broken,) = run_numpy(graph, ["prelu"], [x])
    (repaired,) = run_numpy(unfuse_prelu_relu(graph), ["prelu"], [x])
    np.testing.assert_allclose(broken, np.maximum(pre, 0), atol=1e-5)  # as shipped: a plain ReLU
    np.testing.assert_allclose(repaired, np.where(pre > 0, pre, alpha * pre), atol=1e-5)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_positive_batchnorm_moves_after_the_max_pool_bit_for_bit(tmp_path, padding):
    """conv -> ReLU -> Mul (scale > 0) -> Add -> MaxPool runs as conv -> pool -> Mul -> Add, with identical values;
    a scale with a negative entry (max and the scale no longer commute) stays before the pool (the shift still moves)."""
    for scale, moved in ((RNG.uniform(0.1, 3, size=4), True), (np.float32([1.0, -2.0, 0.5, 3.0]), False)):
        g = GraphBuilder((-1, 7, 7, 3))
        g.op("conv", "Conv2D", ["input", g.const("w", RNG.normal(size=(3, 3, 3, 4)))], conv_attrs())
        g.op("relu", "Relu", ["conv"])
        g.op("bn_mul", "Mul", ["relu", g.const("scale", scale)])
        g.op("bn_add", "AddV2", ["bn_mul", g.const("shift", RNG.normal(size=4))])
        g.op("pool", "MaxPool", ["bn_add"], pool_attrs((1, 2, 2, 1), (1, 2, 2, 1), padding))
        graph = load_graph(g.write(tmp_path))
        net = compile_graph(graph, ["pool"])
        inputs = dict(zip(net.step_names, net.step_inputs))
        assert ("pool/before_affine" in inputs["bn_mul"]) == moved
        x = RNG.normal(size=(2, 7, 7, 3)).astype(np.float32)
        (got,), (plain,) = run_numpy(graph, ["pool"], [x]), run_numpy(graph, ["pool"], [x], fold=False)
        np.testing.assert_array_equal(got, plain)
