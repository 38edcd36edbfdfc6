"""An in-the-wild stand-in made from LFW3D: faces the way a face detector's crops come out.

LFW3D's faces are frontalised, tight, 90 px and all in one place; images from a detector are
rolled, off-centre, at varied scales and sizes, on whatever was behind the person, and often
JPEG-compressed or upscaled from a low resolution. Each LFW3D face is pasted with a soft
elliptic mask onto a background (a colour gradient, smooth colour noise, a stripe texture, or
a patch of another LFW3D image enlarged and blurred), under a random similarity, then degraded. Labels
and identities are kept and the output is in the ``lfw`` layout, so the ``lfw`` source reads it.

Each image's randomness comes from ``(seed, its file name)``, so an image does not depend on
which others are generated, and a run is reproducible. ``standin.json`` records each image's
parameters, among them the 2x3 matrix from LFW3D pixels to output pixels (the ground truth an
aligner should invert).
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

BACKGROUNDS = ("gradient", "noise", "stripes", "photo")
SOURCE_SIZE = 90  # LFW3D crops


@dataclass(frozen=True)
class StandinSpec:
    """Ranges every image's parameters are drawn from (uniformly)."""

    max_roll_deg: float = 25.0
    face_share: tuple[float, float] = (0.45, 0.8)  # width of the LFW3D crop as a share of the output width
    max_shift: float = 0.08  # face centre offset from the image centre, as a share of the width
    width: tuple[int, int] = (100, 180)
    aspect: tuple[float, float] = (0.9, 1.2)  # height / width
    jpeg_quality: tuple[int, int] = (35, 95)
    low_res_chance: float = 0.3  # share of images downsampled and upsampled again
    low_res_factor: tuple[float, float] = (0.4, 0.8)
    gain: tuple[float, float] = (0.85, 1.15)  # brightness of the whole image


class StandinError(Exception):
    """The source folder is not LFW3D-like; the message says what is missing."""


def _read_names(src: Path) -> dict[str, int]:
    """File name -> gender (1 male, 0 female), leaving out names in both lists or without an image."""
    lists = {}
    for gender, fname in ((1, "male_names.txt"), (0, "female_names.txt")):
        file = src / fname
        if not file.exists():
            raise StandinError(f"{file} is missing: the source must be in the lfw layout (images/ plus "
                               "male_names.txt and female_names.txt), like LFW3D")
        lists[gender] = {line.strip() for line in file.read_text().splitlines() if line.strip()}
    both = lists[1] & lists[0]
    return {name: g for g in (1, 0) for name in sorted(lists[g] - both) if _source_path(src, name).exists()}


def _source_path(src: Path, name: str) -> Path:
    return src / "images" / name.rsplit("_", 1)[0] / name


def choose_names(names: dict[str, int], seed: int, per_class: int | None) -> dict[str, int]:
    """A seeded sample of ``per_class`` names per gender (all when None), in name order."""
    if per_class is None:
        return names
    rng = np.random.default_rng(seed)
    chosen: dict[str, int] = {}
    for gender in (1, 0):
        pool = sorted(n for n, g in names.items() if g == gender)
        picks = rng.permutation(len(pool))[:per_class]
        chosen.update({pool[i]: gender for i in sorted(picks)})
    return dict(sorted(chosen.items()))


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _background(kind: str, height: int, width: int, rng: np.random.Generator, photo: np.ndarray | None) -> np.ndarray:
    import cv2

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        direction = rng.uniform(0, 2 * np.pi)
        t = (np.cos(direction) * xx / width + np.sin(direction) * yy / height + 1) / 2
        image = a + (b - a) * t[..., None]
    elif kind == "noise":
        cells = rng.uniform(0, 255, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3)).astype(np.float32)
        image = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
        image = image + rng.normal(0, rng.uniform(2, 12), image.shape)
    elif kind == "stripes":
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        direction, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(direction) * xx + np.sin(direction) * yy) / period)
        image = a + (b - a) * t[..., None]
    elif kind == "photo":
        # A patch of another photo (skin, hair, its background), enlarged and blurred: real colours and
        # texture, but never a whole second face larger than the subject's.
        assert photo is not None
        side = int(rng.integers(20, 41))
        top, left = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        patch = np.ascontiguousarray(photo[top:top + side, left:left + side])
        big = cv2.resize(patch, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        image = cv2.GaussianBlur(big, (0, 0), rng.uniform(2, 5))
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(image, 0, 255).astype(np.float32)


def face_mask() -> np.ndarray:
    """A soft ellipse over the LFW3D crop (90x90 float in [0, 1]): the face and a little hair, the
    crop's corners faded out so no square edge survives on the new background."""
    yy, xx = np.mgrid[0:SOURCE_SIZE, 0:SOURCE_SIZE].astype(np.float32)
    centre, radii = (44.5, 47.0), (46.0, 52.0)
    d = np.hypot((xx - centre[0]) / radii[0], (yy - centre[1]) / radii[1])
    return np.clip((1.0 - d) / 0.15, 0.0, 1.0)


def render(face: np.ndarray, rng: np.random.Generator, spec: StandinSpec, photo: np.ndarray | None = None
           ) -> tuple[np.ndarray, dict]:
    """One stand-in image (H, W, 3 uint8) from a 90x90 LFW3D face, and its parameters (before JPEG)."""
    import cv2

    width = int(rng.integers(spec.width[0], spec.width[1] + 1))
    height = int(round(width * rng.uniform(*spec.aspect)))
    roll = float(rng.uniform(-spec.max_roll_deg, spec.max_roll_deg))
    scale = float(rng.uniform(*spec.face_share)) * width / SOURCE_SIZE
    shift = rng.uniform(-spec.max_shift, spec.max_shift, 2) * width
    centre = (SOURCE_SIZE - 1) / 2
    matrix = cv2.getRotationMatrix2D((centre, centre), roll, scale)
    matrix[:, 2] += np.array([(width - 1) / 2, (height - 1) / 2]) + shift - centre
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))] if photo is not None else BACKGROUNDS[int(rng.integers(3))]
    background = _background(kind, height, width, rng, photo)
    warped = cv2.warpAffine(face, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(face_mask(), matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    image = alpha * warped.astype(np.float32) + (1 - alpha) * background
    gain = float(rng.uniform(*spec.gain))
    image = np.clip(image * gain, 0, 255).astype(np.uint8)
    low_res = float(rng.uniform(*spec.low_res_factor)) if rng.uniform() < spec.low_res_chance else 1.0
    if low_res < 1.0:
        small = cv2.resize(image, (max(8, round(width * low_res)), max(8, round(height * low_res))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    params = {"width": width, "height": height, "roll_deg": round(roll, 4), "scale": round(scale, 6),
              "matrix": np.round(matrix, 6).tolist(), "background": kind, "gain": round(gain, 4),
              "low_res": round(low_res, 4)}
    return image, params


def make_standin(src: str | Path, out: str | Path, seed: int = 0, per_class: int | None = None,
                 spec: StandinSpec | None = None, progress: Callable[[Iterable], Iterable] | None = None) -> dict:
    """Write the stand-in of ``src`` (an lfw-layout folder such as LFW3D) to ``out``; returns a summary."""
    src, out = Path(src), Path(out)
    spec = spec or StandinSpec()
    if out.exists() and any(out.iterdir()):
        raise StandinError(f"{out} is not empty; choose a new folder for the stand-in")
    labelled = _read_names(src)
    if not labelled:
        raise StandinError(f"{src}: no labelled images found under images/<Identity>/")
    names = choose_names(labelled, seed, per_class)
    everyone = sorted(labelled)  # background photos come from the whole source
    records = {}
    items = list(names.items())
    for name, gender in (progress(items) if progress else items):
        rng = _rng(seed, name)
        identity = name.rsplit("_", 1)[0]
        other = everyone[int(rng.integers(len(everyone)))]
        photo = _load(_source_path(src, other)) if other != name else None
        image, params = render(_load(_source_path(src, name)), rng, spec, photo)
        quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        target = out / "images" / identity / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buf.getvalue())
        records[name] = {**params, "gender": "male" if gender == 1 else "female", "identity": identity,
                         "jpeg_quality": quality, "background_image": other if photo is not None else None}
    for gender, fname in ((1, "male_names.txt"), (0, "female_names.txt")):
        (out / fname).write_text("".join(f"{n}\n" for n, g in names.items() if g == gender))
    summary = {"source": src.name, "seed": seed, "per_class": per_class, "spec": asdict(spec),
               "males": sum(g == 1 for g in names.values()), "females": sum(g == 0 for g in names.values())}
    (out / "standin.json").write_text(json.dumps({**summary, "images": records}, indent=1))
    return summary
