"""The TensorFlow oracle of tests/test_humanmodels_reference.py, run in a child process.

argv: a JSON request {"model": model.json, "feeds": [placeholder names], "outputs": [node names],
"out": path.npz} and the feeds' .npz (arr_0, arr_1, ... in the order of "feeds"). Writes the outputs
as arr_0, arr_1, ... of "out". The fused ops that only TF.js knows are expanded into TensorFlow's
primitives (Conv2D + BiasAdd + activation), so our reading of a fused op is checked against TF's own
Conv2D/MatMul, not against the same reading again.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from sbpet_humanmodels.loader import load_graph

_PRIMITIVE = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_FusedMatMul": "MatMul"}
_FUSED_ONLY_ATTRS = {"fused_ops", "num_args", "epsilon", "leakyrelu_alpha", "TArgs", "num_host_args", "filter_format"}


def tensorflow_outputs(model_json: Path, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    spec = json.loads(model_json.read_text())
    constants = load_graph(model_json).constants
    nodes = []
    for raw in copy.deepcopy(spec["modelTopology"]["node"]):
        if raw["op"] in _PRIMITIVE:
            fused = [base64.b64decode(v).decode() for v in raw["attr"]["fused_ops"]["list"]["s"]]
            assert fused[0] == "BiasAdd" and len(fused) <= 2, fused
            attrs = {k: v for k, v in raw["attr"].items() if k not in _FUSED_ONLY_ATTRS}
            x, w, b = raw["input"][:3]
            name, t = raw["name"], {"T": attrs["T"]}
            nodes.append({"name": f"{name}/primitive", "op": _PRIMITIVE[raw["op"]], "input": [x, w], "attr": attrs})
            biased = f"{name}/bias" if len(fused) == 2 else name
            nodes.append({"name": biased, "op": "BiasAdd", "input": [f"{name}/primitive", b], "attr": t})
            if len(fused) == 2:
                nodes.append({"name": name, "op": fused[1], "input": [biased], "attr": t})
            continue
        if raw["op"] == "Const":
            proto = tf.make_tensor_proto(constants[raw["name"]])
            raw["attr"]["value"] = {"tensor": json.loads(json_format.MessageToJson(proto))}
        nodes.append(raw)
    graph_def = json_format.ParseDict({"node": nodes}, tf.compat.v1.GraphDef())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run([f"{o}:0" for o in outputs], {f"{k}:0": v for k, v in feeds.items()})


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    with np.load(sys.argv[2]) as arrays:
        feeds = {name: arrays[f"arr_{i}"] for i, name in enumerate(request["feeds"])}
    np.savez(request["out"], *tensorflow_outputs(Path(request["model"]), feeds, request["outputs"]))
