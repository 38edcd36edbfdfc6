"""A content-addressed on-disk cache of stage outputs.

Every entry is addressed by a hash of everything that determines it (plugin
name, version, options, model hashes, input fingerprint, seed). Entries are
written to a temporary file and renamed, so a run killed at any moment leaves
either a complete entry or none, and a re-run skips whatever is finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


def stable_hash(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class Cache:
    """Arrays and small JSON documents under ``root/<kind>/<key[:2]>/<key>``."""

    def __init__(self, root: str | Path, refresh: bool = False):
        self.root = Path(root)
        self.refresh = refresh  # when True, reads miss (everything is recomputed) but writes still land
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(kind, key, ".npz")
        if self.refresh or not path.exists():
            self.misses += 1
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                out = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError):
            self.misses += 1  # unreadable entry (e.g. disk trouble): recompute and overwrite
            return None
        self.hits += 1
        return out

    def put_arrays(self, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self._path(kind, key, ".npz"), buf.getvalue())

    def get_json(self, kind: str, key: str) -> Any | None:
        path = self._path(kind, key, ".json")
        if self.refresh or not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put_json(self, kind: str, key: str, value: Any) -> None:
        atomic_write_text(self._path(kind, key, ".json"), json.dumps(value))

    def get_state(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(kind, key, ".pt")
        if self.refresh or not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def put_state(self, kind: str, key: str, state: Mapping[str, torch.Tensor]) -> Path:
        buf = io.BytesIO()
        torch.save({k: (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in state.items()}, buf)
        path = self._path(kind, key, ".pt")
        atomic_write_bytes(path, buf.getvalue())
        return path

    def work_dir(self, key: str) -> Path:
        path = self.root / "work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path
