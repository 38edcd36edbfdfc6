"""Reading TensorFlow.js weight manifests (``*-weights_manifest.json`` plus ``*.bin`` shards) into torch tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

# bytes per stored value, and the numpy type they are read as (TFJS writes little-endian)
_STORED = {"float32": "<f4", "int32": "<i4", "bool": "u1", "uint8": "u1", "uint16": "<u2", "float16": "<f2"}


def load_tfjs_weights(manifest: str | Path, shards: Mapping[str, str | Path] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a TFJS weights manifest, by name, as float32 (or int32) torch tensors.

    ``shards`` maps the shard names listed in the manifest's ``paths`` to local
    files; by default they are looked up beside the manifest. Quantized tensors
    (``quantization: {dtype: uint8|uint16, scale, min}``) are expanded to
    ``q * scale + min``; float16-quantized ones are cast back to float32.
    """
    manifest = Path(manifest)
    groups = json.loads(manifest.read_text())
    if isinstance(groups, dict):  # a model.json holds the manifest under "weightsManifest"
        groups = groups["weightsManifest"]
    tensors: dict[str, torch.Tensor] = {}
    for group in groups:
        files = [Path(shards[p]) if shards and p in shards else manifest.parent / p for p in group["paths"]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{manifest.name}: weight shard(s) not found: {', '.join(missing)}")
        buffer = b"".join(f.read_bytes() for f in files)
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization")
            stored = quant["dtype"] if quant else spec["dtype"]
            if stored not in _STORED:
                raise ValueError(f"{manifest.name}: tensor {spec['name']} has unsupported dtype {stored!r}")
            count = math.prod(spec["shape"])
            dtype = np.dtype(_STORED[stored])
            end = offset + count * dtype.itemsize
            if end > len(buffer):
                raise ValueError(f"{manifest.name}: shards end before tensor {spec['name']} ({len(buffer)} bytes, need {end})")
            values = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
            offset = end
            if quant and stored in ("uint8", "uint16"):
                values = values.astype(np.float64) * quant["scale"] + quant["min"]
            values = values.astype(np.int32 if spec["dtype"] == "int32" else np.float32)
            tensors[spec["name"]] = torch.from_numpy(values.reshape(spec["shape"]).copy())
        if offset != len(buffer):
            raise ValueError(f"{manifest.name}: {len(buffer) - offset} bytes left over after the last tensor; wrong shard?")
    return tensors
