"""Tiny TF.js graph models written from scratch, for the runner's tests (no model files, no oracle)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np


def s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def ints(values) -> dict:
    return {"list": {"i": [str(int(v)) for v in values]}}


def strings(values) -> dict:
    return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in values]}}


def conv_attrs(strides=(1, 1, 1, 1), padding="SAME", **extra) -> dict:
    return {"T": {"type": "DT_FLOAT"}, "data_format": s("NHWC"), "strides": ints(strides), "padding": s(padding),
            "dilations": ints((1, 1, 1, 1)), **extra}


def pool_attrs(ksize, strides, padding) -> dict:
    return {"T": {"type": "DT_FLOAT"}, "data_format": s("NHWC"), "ksize": ints(ksize), "strides": ints(strides),
            "padding": s(padding)}


class GraphBuilder:
    """Collects nodes and constants, then writes ``model.json`` + ``model.bin`` like the TF.js converter."""

    def __init__(self, input_shape=(-1, 8, 8, 3)):
        self.nodes: list[dict] = [{"name": "input", "op": "Placeholder",
                                   "attr": {"dtype": {"type": "DT_FLOAT"},
                                            "shape": {"shape": {"dim": [{"size": str(d)} for d in input_shape]}}}}]
        self.constants: dict[str, np.ndarray] = {}
        self.quantize: dict[str, str] = {}  # constant name -> "uint8" | "uint16" | "float16"

    def const(self, name: str, value, quantize: str | None = None) -> str:
        value = np.asarray(value)
        value = value.astype(np.int32 if value.dtype.kind in "iu" else np.float32)
        dtype = "DT_INT32" if value.dtype == np.int32 else "DT_FLOAT"
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": dtype}, "value": {"tensor": {
            "dtype": dtype, "tensorShape": {"dim": [{"size": str(d)} for d in value.shape]}}}}})
        self.constants[name] = value
        if quantize:
            self.quantize[name] = quantize
        return name

    def op(self, name: str, op: str, inputs, attrs=None) -> str:
        attrs = dict(attrs or {})
        attrs.setdefault("T", {"type": "DT_FLOAT"})
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attrs})
        return name

    def _manifest(self) -> tuple[list[dict], bytes]:
        entries, chunks = [], []
        for name, value in self.constants.items():
            entry = {"name": name, "shape": list(value.shape), "dtype": "int32" if value.dtype == np.int32 else "float32"}
            kind = self.quantize.get(name)
            if kind == "float16":
                entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
                chunks.append(value.astype("<f2").tobytes())
            elif kind in ("uint8", "uint16"):
                top = 255 if kind == "uint8" else 65535
                lo, hi = float(value.min()), float(value.max())
                scale = (hi - lo) / top if hi > lo else 1.0
                q = np.round((value - lo) / scale).astype("u1" if kind == "uint8" else "<u2")
                entry["quantization"] = {"dtype": kind, "scale": scale, "min": lo}
                chunks.append(q.tobytes())
            else:
                chunks.append(value.astype("<i4" if value.dtype == np.int32 else "<f4").tobytes())
            entries.append(entry)
        return entries, b"".join(chunks)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        entries, blob = self._manifest()
        spec = {"format": "graph-model", "modelTopology": {"node": self.nodes},
                "weightsManifest": [{"paths": ["model.bin"], "weights": entries}]}
        (folder / "model.json").write_text(json.dumps(spec))
        (folder / "model.bin").write_bytes(blob)
        return folder / "model.json"
