"""The ``stylegan2`` data source: a gender-balanced set of StyleGAN2 samples with their latents.

PriDSS's paper evaluates the latent backend on generated faces, whose latent
codes are known exactly (no inversion error). :func:`synthesize_dataset` samples
faces, labels them with a gender classifier, keeps the first ``per_class`` of
each gender, and writes::

    DIR/stylegan2.json    manifest: settings and one row per image (id, gender, p_male)
    DIR/latents.pt        {"ids": [...], "w": (N, D) truncated w codes}
    DIR/male/NNNNNN.png, DIR/female/NNNNNN.png

:class:`StyleGAN2Source` reads such a folder; give the same folder to the PriDSS
latent backend (``pridss.latents=DIR``) so it fuses the stored codes.
Each sample is its own identity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sbpet_bench.api import FEMALE, MALE, DatasetSource, FaceRecord

from .stylegan2 import Generator, to_unit

MANIFEST = "stylegan2.json"
LATENTS = "latents.pt"


@torch.no_grad()
def synthesize_dataset(out_dir: str | Path, generator: Generator, p_male: Callable[[torch.Tensor], torch.Tensor],
                       per_class: int, *, size: int = 256, seed: int = 0, truncation: float = 0.7,
                       batch_size: int = 16, margin: float = 0.0, max_samples: int | None = None,
                       device: torch.device | str = "cpu") -> Path:
    """Sample until ``per_class`` faces of each gender (P(male) beyond 0.5 +- ``margin``); write the folder.

    ``p_male`` labels images (B, 3, size, size) in [0, 1]; samples are kept in
    draw order, so the set is reproducible from ``seed``.
    """
    out = Path(out_dir)
    device = torch.device(device)
    generator = generator.to(device).eval()
    rng = torch.Generator().manual_seed(seed)
    mean = generator.mean_latent(4096, torch.Generator().manual_seed(seed + 1))
    limit = max_samples or 100 * per_class
    kept: dict[int, list[tuple[int, torch.Tensor, torch.Tensor, float]]] = {MALE: [], FEMALE: []}
    drawn = 0
    while min(len(v) for v in kept.values()) < per_class:
        if drawn >= limit:
            raise RuntimeError(f"only {len(kept[MALE])} male / {len(kept[FEMALE])} female faces after {drawn} samples; "
                               "check the gender classifier or lower the margin")
        z = torch.randn(batch_size, generator.style_dim, generator=rng).to(device)
        w = generator.truncate(generator.mapping(z), truncation, mean)
        images = to_unit(F.interpolate(generator(w=w), size=(size, size), mode="bilinear", antialias=True,
                                       align_corners=False))
        p = p_male(images).float().cpu()
        for k in range(batch_size):
            gender = MALE if p[k] > 0.5 + margin else FEMALE if p[k] < 0.5 - margin else None
            if gender is not None and len(kept[gender]) < per_class:
                kept[gender].append((drawn + k, w[k].cpu(), images[k].cpu(), float(p[k])))
        drawn += batch_size
    rows, ids, codes = [], [], []
    for gender, folder in ((MALE, "male"), (FEMALE, "female")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for index, w, image, p in kept[gender]:
            rel = f"{folder}/{index:06d}.png"
            array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(array).save(out / rel)
            rows.append({"id": rel, "gender": gender, "p_male": round(p, 6)})
            ids.append(rel)
            codes.append(w)
    torch.save({"ids": ids, "w": torch.stack(codes)}, out / LATENTS)
    manifest = {"format": "sbpet-stylegan2/1", "seed": seed, "truncation": truncation, "size": size,
                "generator_size": generator.size, "samples_drawn": drawn, "margin": margin,
                "gender_source": "classifier", "images": rows}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


class StyleGAN2Source(DatasetSource):
    name = "stylegan2"
    version = "1"
    description = "StyleGAN2 samples with stored latents (stylegan2.json + latents.pt), written by PriDSS's synthesizer"

    def detect(self, path: str) -> bool:
        return (Path(path) / MANIFEST).is_file()

    def read(self, path: str) -> tuple[list[FaceRecord], list[dict[str, str]]]:
        root = Path(path)
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{root / MANIFEST}: not a stylegan2 data set manifest ({exc})") from exc
        records, skipped = [], []
        for row in manifest.get("images", []):
            file = root / row["id"]
            if not file.is_file():
                skipped.append({"path": str(file), "reason": "listed in the manifest but missing"})
                continue
            records.append(FaceRecord(path=str(file), gender=int(row["gender"]),
                                      identity=f"stylegan2_{Path(row['id']).stem}", id=row["id"]))
        return records, skipped
