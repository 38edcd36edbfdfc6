"""Canonical crops and the similarity transform that takes a face's landmarks onto them.

The tight crop is LFW3D's geometry. Its anchor points are the mean dlib landmarks of
398 of 400 LFW3D faces (seeded sample of male and female names; 2 had no face), measured
on the 90 px crops upscaled to 200 px and written as fractions of the crop's side, pixel
centres at ``(i + 0.5) / side``. Per-face spread (std): eyes 0.015, mouth corners 0.033.
LFW3D's mean eye line is tilted by -1.3 degrees (std 1.1); the anchors keep that tilt, so an
aligned face sits where an LFW3D face sits.
"""

from __future__ import annotations

import numpy as np

from sbpet_bench.api import CROP_CONTEXT, CROP_TIGHT, CROPS

# (x, y) as fractions of the crop side: subject's right eye centre, left eye centre, mouth corners (48, 54).
TIGHT_ANCHORS = np.array([
    (0.2664, 0.3913),
    (0.7359, 0.3804),
    (0.3143, 0.8930),
    (0.7070, 0.8862),
])
# The context crop shows the tight crop as its central CONTEXT_FACE_SHARE of width and height.
CONTEXT_FACE_SHARE = 0.6


def anchors(crop: str, size: int) -> np.ndarray:
    """The four anchor points of ``crop`` in pixels of a ``size x size`` output (pixel centres at integers)."""
    if crop == CROP_TIGHT:
        unit = TIGHT_ANCHORS
    elif crop == CROP_CONTEXT:
        unit = 0.5 + CONTEXT_FACE_SHARE * (TIGHT_ANCHORS - 0.5)
    else:
        raise ValueError(f"unknown crop {crop!r}; crops: {', '.join(CROPS)}")
    return unit * size - 0.5


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """The landmarks' counterparts of the anchors: (B, 68, 2) -> (B, 4, 2)."""
    return np.stack([landmarks[:, 36:42].mean(axis=1), landmarks[:, 42:48].mean(axis=1),
                     landmarks[:, 48], landmarks[:, 54]], axis=1)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarities (rotation, uniform scale, shift) taking ``src`` onto ``dst``.

    (B, K, 2) point sets (or one (K, 2) target for all) -> (B, 2, 3) matrices. In complex numbers a
    similarity is ``z -> a z + t``; centring both sets makes ``a`` a one-line least-squares solution,
    closed form and batched.
    """
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    zs = src[..., 0] + 1j * src[..., 1]
    zd = dst[..., 0] + 1j * dst[..., 1]
    ms, md = zs.mean(axis=1, keepdims=True), zd.mean(axis=1, keepdims=True)
    cs, cd = zs - ms, zd - md
    a = (np.conj(cs) * cd).sum(axis=1) / (np.abs(cs) ** 2).sum(axis=1)
    t = md[:, 0] - a * ms[:, 0]
    return np.stack([np.stack([a.real, -a.imag, t.real], axis=1), np.stack([a.imag, a.real, t.imag], axis=1)], axis=1)


def similarity_parts(matrix: np.ndarray) -> tuple[float, float]:
    """(scale, rotation in degrees, counter-clockwise on screen positive) of a 2x3 similarity."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    return scale, float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp an (H, W, 3) uint8 image by a 2x3 input->output similarity to ``size x size``, border replicated.

    A bilinear warp that shrinks by more than about 2x aliases, so a strong reduction is first done
    by area averaging and the matrix adjusted to start from the reduced image.
    """
    import cv2

    scale, _ = similarity_parts(matrix)
    h, w = image.shape[:2]
    if scale < 0.75:
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        fx, fy = new_w / w, new_h / h
        # reduced pixel -> input pixel, then the original matrix
        back = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        matrix = matrix @ back
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The image's centre square resized to ``size`` (what an unaligned row holds)."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interpolation)
