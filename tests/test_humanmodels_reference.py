"""The TF.js graph runner against real TensorFlow: same graph, same inputs, outputs within 1e-4.

The oracle is ``tensorflow-cpu`` from the ``oracle`` dependency group (``uv sync --group oracle``;
CI installs it). It executes the very GraphDef in each model.json, with the fused ops that only
TF.js knows expanded into TensorFlow's primitives (Conv2D + BiasAdd + activation), so our reading
of a fused op is checked against TF's own Conv2D/MatMul, not against the same reading again.
Real models are those of the default model store (`sbpet models fetch --default` puts them there).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from humanmodels_graphs import GraphBuilder, conv_attrs, pool_attrs, strings
from sbpet_bench.modelstore import ModelStore
from sbpet_humanmodels import assets
from sbpet_humanmodels.graph import run_numpy
from sbpet_humanmodels.loader import load_graph

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("the TensorFlow oracle is not installed: `uv sync --group oracle`", allow_module_level=True)

TOLERANCE = 1e-4
# TensorFlow runs in a child process: loaded into the test process it breaks torch (TF's bundled LLVM
# and triton's, loaded by torch.optim, abort when both are in one process).
ORACLE = Path(__file__).with_name("tf_oracle.py")


def tensorflow_outputs(model_json: Path, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    """Run the model.json's GraphDef in TensorFlow (constants from our decoded weights), in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        names = list(feeds)
        np.savez(Path(tmp) / "feeds.npz", *[feeds[n] for n in names])
        request = {"model": str(model_json), "feeds": names, "outputs": outputs, "out": str(Path(tmp) / "out.npz")}
        done = subprocess.run([sys.executable, str(ORACLE), json.dumps(request), str(Path(tmp) / "feeds.npz")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"the TensorFlow oracle failed:\n{done.stderr[-3000:]}"
        with np.load(Path(tmp) / "out.npz") as got:
            return [got[f"arr_{i}"] for i in range(len(outputs))]


def assert_same(model_json: Path, outputs: list[str], x: np.ndarray) -> None:
    placeholder = load_graph(model_json).placeholders[0]
    expected = tensorflow_outputs(model_json, {placeholder: x}, outputs)
    got = run_numpy(load_graph(model_json), outputs, [x])
    for name, a, b in zip(outputs, got, expected):
        assert a.shape == b.shape, f"{model_json.name}:{name}: shape {a.shape} vs TensorFlow's {b.shape}"
        worst = float(np.abs(a - b).max())
        assert worst <= TOLERANCE, f"{model_json.name}:{name}: differs from TensorFlow by {worst:.3g}"


def test_every_supported_op_matches_tensorflow(tmp_path):
    """One synthetic graph with the ops of all the human-models graphs, odd sizes, stride-2 SAME."""
    rng = np.random.default_rng(1)
    g = GraphBuilder((-1, 9, 9, 3))
    c = lambda name, shape, scale=1.0: g.const(name, scale * rng.normal(size=shape))  # noqa: E731
    g.op("sub", "Sub", ["input", g.const("mean", np.float32([0.5]))])
    g.op("pad", "Pad", ["sub", g.const("paddings", np.int32([[0, 0], [1, 1], [1, 1], [0, 0]]))])
    g.op("conv", "Conv2D", ["pad", c("w1", (3, 3, 3, 8))], conv_attrs((1, 2, 2, 1), "SAME"))
    g.op("bn_mul", "Mul", ["conv", c("scale", 8)])
    g.op("bn_add", "Add", ["bn_mul", c("shift", 8)])
    g.op("relu", "Relu", ["bn_add"])
    g.op("min6", "Minimum", ["relu", g.const("six", np.float32(6))])
    g.op("clip", "Maximum", ["min6", g.const("zero", np.float32(0))])
    g.op("prelu_pos", "Maximum", [g.const("zero2", np.float32(0)), "clip"])
    g.op("dw", "FusedDepthwiseConv2dNative", ["clip", c("w2", (3, 3, 8, 1)), c("b2", 8)],
         conv_attrs((1, 2, 2, 1), "SAME", fused_ops=strings(["BiasAdd", "Relu"]), num_args={"i": "1"}))
    g.op("dwplain", "DepthwiseConv2dNative", ["prelu_pos", c("w3", (3, 3, 8, 2))], conv_attrs((1, 1, 1, 1), "VALID"))
    g.op("fconv", "_FusedConv2D", ["dw", c("w4", (1, 1, 8, 6)), c("b4", 6)],
         conv_attrs((1, 1, 1, 1), "SAME", fused_ops=strings(["BiasAdd"]), num_args={"i": "1"}))
    g.op("maxpool", "MaxPool", ["fconv"], pool_attrs((1, 3, 3, 1), (1, 2, 2, 1), "SAME"))
    g.op("avgpool", "AvgPool", ["dwplain"], pool_attrs((1, 2, 2, 1), (1, 2, 2, 1), "VALID"))
    g.op("tanh", "Tanh", ["avgpool"])
    g.op("abs", "Abs", ["fconv"])
    g.op("gmax", "Max", ["abs", g.const("axes", np.int32([1, 2]))], {"keep_dims": {"b": False}})
    g.op("gmean", "Mean", ["maxpool", g.const("axes2", np.int32([1, 2]))], {"keep_dims": {"b": False}})
    g.op("flat", "Reshape", ["tanh", g.const("shape", np.int32([-1, 64]))])
    g.op("dense", "_FusedMatMul", ["flat", c("w5", (64, 6), 0.3), c("b5", 6)],
         {"fused_ops": strings(["BiasAdd", "Relu"]), "num_args": {"i": "1"},
          "transpose_a": {"b": False}, "transpose_b": {"b": False}})
    g.op("mm", "MatMul", ["gmean", c("w6", (6, 6))], {"transpose_a": {"b": False}, "transpose_b": {"b": False}})
    g.op("sum6", "AddV2", ["dense", "mm"])
    g.op("mul6", "Mul", ["sum6", "gmax"])
    g.op("soft", "Softmax", ["mul6"])
    g.op("sig", "Sigmoid", ["sum6"])
    g.op("slice", "StridedSlice", ["sig", g.const("begin", np.int32([0, 2])), g.const("end", np.int32([0, 3])),
                                   g.const("strides", np.int32([1, 1]))],
         {"Index": {"type": "DT_INT32"}, "begin_mask": {"i": "1"}, "end_mask": {"i": "1"}, "shrink_axis_mask": {"i": "2"},
          "ellipsis_mask": {"i": "0"}, "new_axis_mask": {"i": "0"}})
    g.op("expand", "ExpandDims", ["slice", g.const("dim", np.int32(1))], {"Tdim": {"type": "DT_INT32"}})
    g.op("div", "RealDiv", ["expand", g.const("two", np.float32(2))])
    g.op("sq", "Square", ["gmean"])
    g.op("ssum", "Sum", ["sq", g.const("axis1", np.int32([1]))], {"keep_dims": {"b": True}})
    g.op("rsqrt", "Rsqrt", ["ssum"])
    g.op("norm", "Mul", ["gmean", "rsqrt"])
    g.op("squeeze_in", "Reshape", ["norm", g.const("shape3", np.int32([-1, 1, 6]))])
    g.op("squeeze", "Squeeze", ["squeeze_in"], {"squeeze_dims": {"list": {"i": ["1"]}}})
    g.op("ident", "Identity", ["squeeze"])
    for k in g.nodes:  # the TF GraphDef wants the index type on reductions and shapes as TF writes them
        if k["op"] in ("Mean", "Sum", "Max"):
            k["attr"]["Tidx"] = {"type": "DT_INT32"}
        if k["op"] == "Reshape":
            k["attr"]["Tshape"] = {"type": "DT_INT32"}
        if k["op"] == "Pad":
            k["attr"]["Tpaddings"] = {"type": "DT_INT32"}
    path = g.write(tmp_path)
    x = rng.uniform(0, 1, size=(3, 9, 9, 3)).astype(np.float32)
    assert_same(path, ["soft", "div", "ident", "gmax"], x)


def _present(files: assets.GraphFiles) -> tuple[Path, Path] | None:
    store = ModelStore(None, {a.name: a for a in files.assets()})
    if not all(store.is_present(name) for name in files.names):
        return None
    return tuple(store.target(name) for name in files.names)


# every output the plugins read, per model, and the input range the plugins feed
REAL_MODELS = {
    "faceres": (["gender_pred/Sigmoid", "global_pooling/Mean", "age_pred/Softmax"], (-124.0, 152.0)),
    "faceres-deep": (["gender_pred/Sigmoid", "global_pooling/Mean"], (-124.0, 152.0)),
    "gear": (["Identity", "Identity_1", "Identity_2"], (0.0, 1.0)),
    "gender": (["Identity"], (-1.0, 1.0)),
    "gender-ssrnet-imdb": (["Identity"], (0.0, 255.0)),
    "mobileface": (["batchnorm0/add_1"], (0.0, 255.0)),
    "mobilefacenet": (["embeddings"], (-1.0, 1.0)),
    "antispoof": (["StatefulPartitionedCall/sequential/activation_3/Relu", "Identity"], (0.0, 1.0)),
}


@pytest.mark.parametrize("files", assets.MODELS, ids=lambda f: f.stem)
def test_real_graph_matches_tensorflow(files, tmp_path):
    found = _present(files)
    if found is None:
        if files.default:
            pytest.skip(f"{files.stem} is not in the model store: run `sbpet models fetch --default` (CI does)")
        pytest.skip(f"{files.stem} is not in the model store (not a default model: `sbpet models fetch {' '.join(files.names)}`)")
    model_json, weights = found
    # the store keeps NAME.json beside NAME.bin, as the manifest expects; check rather than assume
    assert weights.parent == model_json.parent and weights.name == f"{files.stem}.bin"
    outputs, (low, high) = REAL_MODELS[files.stem]
    spec = json.loads(model_json.read_text())
    dims = next(n for n in spec["modelTopology"]["node"] if n["op"] == "Placeholder")["attr"]["shape"]["shape"]["dim"]
    shape = [2] + [int(d["size"]) for d in dims[1:]]
    x = np.random.default_rng(0).uniform(low, high, size=shape).astype(np.float32)
    assert_same(model_json, outputs, x)
