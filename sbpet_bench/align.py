"""The alignment stage: every face of a run through an aligner once, crops cached as PNG files.

An aligned crop lives at ``<cache root>/aligned/<stage key>/<entry>.png`` beside ``<entry>.json``
(found or not, the reason, the aligner's diagnostics). The stage key folds the aligner's key, the
output size and the crop; the entry folds the record's id and a hash of the file's bytes, so an
edited image is aligned again while an unchanged one is never detected twice. The JSON is written
after the PNG and marks the entry complete; faces the aligner could not find are cached too.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from .api import CROPS, Aligner, FaceRecord
from .cache import Cache, atomic_write_bytes, atomic_write_text, stable_hash
from .images import ImageDecodeError, load_image
from .results import json_text

__all__ = ["align_records", "aligned_dir", "AlignStageError"]


class AlignStageError(Exception):
    """The aligner broke its contract (wrong shapes or lengths); the message names it."""


def aligned_dir(cache: Cache, aligner_key: str, size: int, crop: str) -> Path:
    """Where one aligner configuration's crops at one size and crop kind are kept."""
    return cache.root / "aligned" / stable_hash("aligned", aligner_key, size, crop)


def default_aligner_key(aligner: Aligner) -> str:
    """A key from the aligner's name, version and options (the harness passes its own plugin key instead)."""
    return stable_hash(aligner.kind, aligner.name, aligner.version, aligner.opts)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _read_entry(meta_path: Path, png_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "found" not in meta:
        return None
    if meta["found"] and not png_path.exists():
        return None
    return meta


def _check(result: Any, n: int, size: int, who: str) -> None:
    images = getattr(result, "images", None)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != (n, size, size, 3):
        got = f"{type(images).__name__} {getattr(images, 'shape', '')} {getattr(images, 'dtype', '')}".strip()
        raise AlignStageError(f"aligner {who!r} returned images {got}, expected uint8 of shape {(n, size, size, 3)}")
    for field in ("found", "reasons"):
        if len(getattr(result, field, ())) != n:
            raise AlignStageError(f"aligner {who!r} returned {len(getattr(result, field, ()))} {field} for {n} images")


def align_records(records: Sequence[FaceRecord], aligner: Aligner, cache: Cache, size: int, crop: str,
                  batch_size: int = 64, aligner_key: str | None = None,
                  progress: Callable[..., Iterable[Any]] | None = None) -> tuple[list[FaceRecord], list[dict[str, str]]]:
    """Align ``records`` (cached) and return records pointing at the aligned PNGs, plus the faces left out.

    The returned records keep each input's id, gender and identity, in input order, minus the faces
    that could not be decoded or aligned; those come back as ``{"path", "reason"}`` entries.
    ``aligner_key`` identifies the aligner's configuration (the run's plugin key, with model hashes);
    without it, one is made from the aligner's name, version and options.
    """
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; crops: {', '.join(CROPS)}")
    if size < 8:
        raise ValueError(f"alignment size {size} is too small")
    if batch_size < 1:
        raise ValueError(f"alignment batch size must be at least 1, got {batch_size}")
    folder = aligned_dir(cache, aligner_key or default_aligner_key(aligner), size, crop)
    entries: list[tuple[Path, Path]] = []
    metas: list[dict[str, Any] | None] = []
    for rec in records:
        try:
            digest = _file_digest(rec.path)
        except OSError as exc:
            digest = f"unreadable:{exc.strerror}"
        name = stable_hash(rec.id, digest)
        png, meta = folder / f"{name}.png", folder / f"{name}.json"
        entries.append((png, meta))
        metas.append(None if cache.refresh else _read_entry(meta, png))

    decode_failures: dict[int, str] = {}
    todo = [i for i, meta in enumerate(metas) if meta is None]
    starts = range(0, len(todo), batch_size)
    if progress is not None and todo:
        starts = progress(starts, description=f"aligning ({aligner.name})", total=len(starts))
    for start in starts:
        chunk = todo[start:start + batch_size]
        images, rows = [], []
        for i in chunk:
            try:
                images.append(load_image(records[i].path))
                rows.append(i)
            except ImageDecodeError as exc:
                decode_failures[i] = str(exc)  # not cached: cheap to find again, and the file may be fixed
        if not rows:
            continue
        result = aligner.align(images, size, crop)
        _check(result, len(rows), size, aligner.name)
        diagnostics = list(getattr(result, "diagnostics", None) or [{}] * len(rows))
        for j, i in enumerate(rows):
            png, meta_path = entries[i]
            found = bool(result.found[j])
            meta = {"found": found, "reason": "" if found else str(result.reasons[j] or "no face found"),
                    "id": records[i].id, "diagnostics": diagnostics[j] if j < len(diagnostics) else {}}
            if found:
                atomic_write_bytes(png, _png_bytes(result.images[j]))
            atomic_write_text(meta_path, json_text(meta))
            metas[i] = meta

    aligned: list[FaceRecord] = []
    skipped: list[dict[str, str]] = []
    for i, rec in enumerate(records):
        if i in decode_failures:
            skipped.append({"path": rec.path, "reason": decode_failures[i]})
        elif metas[i] is not None and metas[i]["found"]:
            aligned.append(replace(rec, path=str(entries[i][0])))
        else:
            reason = metas[i]["reason"] if metas[i] is not None else "not aligned"
            skipped.append({"path": rec.path, "reason": f"alignment ({aligner.name}): {reason}"})
    return aligned, skipped
