"""Reading a TensorFlow.js graph model (``model.json`` plus its ``.bin`` weight shards).

A graph model's ``modelTopology.node`` is a TensorFlow GraphDef written as JSON (protobuf's JSON
mapping: strings base64-encoded, 64-bit integers as strings); every ``Const`` node's value lives in
the weight shards, described by ``weightsManifest``. This module turns both into plain Python and
numpy: :class:`Node` objects with decoded attributes, and a name -> array dict of constants.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# how each stored dtype is laid out in the shards (TF.js writes little-endian)
_STORED = {"float32": "<f4", "int32": "<i4", "bool": "u1", "uint8": "u1", "uint16": "<u2", "float16": "<f2"}
_RESULT = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


class GraphFormatError(ValueError):
    """A model.json or weight shard that this reader cannot make sense of; the message names the file."""


@dataclass
class Node:
    """One GraphDef node: its op, its data inputs (control inputs dropped) and decoded attributes."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfjsGraph:
    """A parsed graph model: nodes in file order, constants by name, and its placeholders."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    source: str  # the model.json it came from, for error messages

    @property
    def placeholders(self) -> list[str]:
        return [n.name for n in self.nodes if n.op == "Placeholder"]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"{self.source}: no node named {name!r}")


def tensor_name(ref: str) -> str:
    """``"conv/Relu:0"`` -> ``"conv/Relu"``; other output indices are refused (no op here has them)."""
    name, _, index = ref.partition(":")
    if index not in ("", "0"):
        raise GraphFormatError(f"input {ref!r} uses output {index} of a multi-output op, which is not supported")
    return name


def _decode_attr(value: Mapping[str, Any]) -> Any:
    """One AttrValue in protobuf-JSON form -> a Python value."""
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(v) for v in items["i"]]
        if "f" in items:
            return [float(v) for v in items["f"]]
        if "s" in items:
            return [base64.b64decode(v).decode() for v in items["s"]]
        if "b" in items:
            return [bool(v) for v in items["b"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return [int(d.get("size", -1)) for d in value["shape"].get("dim", [])]
    return value  # e.g. a Const's "tensor" header: the values themselves are in the shards


def decode_weights(manifest: list[Mapping[str, Any]], shards: Mapping[str, Path], source: str) -> dict[str, np.ndarray]:
    """Every tensor of a weights manifest as a numpy array (float32 or int32).

    Quantised tensors are expanded: uint8/uint16 as ``q * scale + min``; float16 ones (the manifest
    then says dtype float32 with ``quantization.dtype`` float16, two bytes a value) are widened.
    """
    tensors: dict[str, np.ndarray] = {}
    for group in manifest:
        missing = [p for p in group["paths"] if p not in shards or not Path(shards[p]).is_file()]
        if missing:
            raise GraphFormatError(f"{source}: weight shard(s) not found: {', '.join(missing)}")
        buffer = b"".join(Path(shards[p]).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization")
            stored = quant["dtype"] if quant else spec["dtype"]
            result = spec["dtype"]
            if stored not in _STORED or result not in _RESULT:
                raise GraphFormatError(f"{source}: tensor {spec['name']} has unsupported dtype {stored!r} -> {result!r}")
            count = math.prod(spec["shape"])
            dtype = np.dtype(_STORED[stored])
            end = offset + count * dtype.itemsize
            if end > len(buffer):
                raise GraphFormatError(f"{source}: the shards end before tensor {spec['name']} "
                                       f"({len(buffer)} bytes, need {end}); truncated or wrong .bin file?")
            values = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
            offset = end
            if quant and stored in ("uint8", "uint16"):
                values = values.astype(np.float64) * quant["scale"] + quant["min"]
            tensors[spec["name"]] = values.astype(_RESULT[result]).reshape(spec["shape"])
        if offset != len(buffer):
            raise GraphFormatError(f"{source}: {len(buffer) - offset} bytes left over after the last tensor; wrong .bin file?")
    return tensors


def load_graph(model_json: str | Path, shards: Mapping[str, str | Path] | None = None) -> TfjsGraph:
    """Parse ``model_json``; ``shards`` maps the shard names in its manifest to files (default: beside it)."""
    model_json = Path(model_json)
    source = model_json.name
    try:
        spec = json.loads(model_json.read_text())
        raw_nodes = spec["modelTopology"]["node"]
        manifest = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GraphFormatError(f"{model_json}: not a TensorFlow.js graph model ({type(exc).__name__}: {exc})") from None
    if spec.get("format") not in (None, "graph-model"):
        raise GraphFormatError(f"{model_json}: format {spec.get('format')!r} is not a graph model (layers models are not supported)")
    paths = {p: Path(shards[p]) if shards and p in shards else model_json.parent / p
             for group in manifest for p in group["paths"]}
    constants = decode_weights(manifest, paths, source)
    nodes = []
    for raw in raw_nodes:
        attrs = {k: _decode_attr(v) for k, v in raw.get("attr", {}).items()}
        inputs = [tensor_name(i) for i in raw.get("input", []) if not i.startswith("^")]
        nodes.append(Node(raw["name"], raw["op"], inputs, attrs))
        if raw["op"] == "Const" and raw["name"] not in constants:
            raise GraphFormatError(f"{source}: constant {raw['name']!r} has no entry in the weights manifest")
    return TfjsGraph(nodes, constants, source)
