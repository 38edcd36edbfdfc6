"""dlib face geometry: detection, 68-point landmarks and soft region masks.

Landmark indices follow the iBUG 300-W convention of dlib's 68-point model:
jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.

LFW3D faces are tight 90x90 frontalised crops, too small for dlib's HOG
detector (80x80 window) at their native size. Measured on 500 LFW3D faces
(``benchmarks/pridss_speed.py --geometry 250``): native size, threshold 0:
62.0 % found; resized to 180 px: 94.6 %; 180 px and accepting detections
down to a score of -0.5: 99.6 %; then retrying the misses at 135 px: 99.8 %
(the default). At these settings no face is found in 50 noise or 50 flat
images, but 5 of 50 upside-down faces pass (the shape predictor then still
places an upright shape). A fixed face box is not needed and not used: the
shape predictor always returns 68 points, so a fixed box could not tell a
face from no face.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

# Polygons (landmark indices, in order) whose union make each feature region.
BROW_EYE_LEFT = (17, 18, 19, 20, 21, 39, 40, 41, 36)
BROW_EYE_RIGHT = (22, 23, 24, 25, 26, 45, 46, 47, 42)
NOSE = (39, 31, 32, 33, 34, 35, 42)  # from the inner eye corners so the bridge is covered
MOUTH = tuple(range(48, 60))  # outer lip contour
MOUTH_ALL = tuple(range(48, 68))  # outer and inner lip contours
JAW = tuple(range(0, 17))
# Ear to ear, brows to the middle of the nose: where a pair of glasses sits.
GLASSES_BAND = (0, *range(17, 27), 16, 15, 29, 1)
BROWS_RIGHT_TO_LEFT = tuple(range(26, 16, -1))

# Mean landmarks of 197 LFW3D faces (90x90 frame): the canonical shape whose Delaunay
# triangulation every warp shares, so triangle topology never depends on the batch.
MEAN_SHAPE_90 = (
    (-0.6, 36.2), (-0.2, 47.5), (1.2, 58.6), (3.1, 69.1), (6.7, 78.8), (13.0, 86.7), (22.2, 91.6), (33.7, 93.9),
    (45.6, 93.9), (57.4, 93.4), (68.7, 90.8), (77.8, 85.6), (84.0, 77.3), (87.4, 67.4), (88.9, 56.6), (89.8, 45.6),
    (89.9, 34.5), (5.8, 26.9), (11.5, 21.8), (19.9, 20.3), (28.5, 21.2), (36.4, 24.1), (52.0, 23.5), (60.1, 20.3),
    (68.5, 18.9), (77.0, 20.1), (82.9, 24.8), (44.5, 33.4), (44.7, 42.3), (44.9, 51.0), (45.1, 59.8), (35.6, 64.3),
    (40.3, 65.9), (45.2, 67.1), (50.0, 65.6), (54.4, 64.0), (15.1, 35.0), (20.2, 32.0), (26.7, 32.1), (32.1, 36.0),
    (26.4, 37.3), (19.9, 37.3), (57.1, 35.4), (62.6, 31.2), (69.0, 30.9), (73.9, 33.6), (69.7, 36.0), (63.4, 36.4),
    (27.7, 79.3), (34.2, 77.0), (40.4, 75.6), (45.2, 76.8), (50.4, 75.4), (56.5, 76.7), (62.7, 78.7), (56.9, 81.1),
    (50.8, 82.1), (45.2, 82.6), (40.2, 82.5), (33.8, 81.8), (30.4, 79.4), (40.4, 79.7), (45.2, 80.0), (50.5, 79.5),
    (59.9, 78.8), (50.4, 76.1), (45.1, 76.6), (40.3, 76.4),
)


def installed_shape_predictor() -> Path:
    """The 68-point model shipped by the ``face_recognition_models`` wheel (tests, benchmarks).

    ``import face_recognition_models`` needs ``pkg_resources``, which new
    environments lack, so the file is located through the import system instead.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face_recognition_models is not installed; the 68-point dlib model comes from it")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / SHAPE_PREDICTOR_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the face_recognition_models installation")
    return path


@dataclass
class Landmarks:
    """68 points per image in pixel coordinates of the input, and whether a face was found."""

    points: torch.Tensor  # (B, 68, 2) float32, (x, y); zeros where no face was found
    found: torch.Tensor  # (B,) bool
    scores: torch.Tensor  # (B,) detector score of the face used; -inf where none


class FaceGeometry:
    """dlib's HOG face detector and 68-point shape predictor over batches of image tensors."""

    def __init__(self, predictor_path: str | Path, detect_sizes: tuple[int, ...] = (180, 135), threshold: float = -0.5):
        import dlib  # lazy: only PriDSS needs it

        if not Path(predictor_path).exists():
            raise FileNotFoundError(f"dlib shape predictor not found at {predictor_path}")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self.detect_sizes = tuple(detect_sizes)
        self.threshold = threshold

    def landmarks(self, images: torch.Tensor) -> Landmarks:
        """Detect the highest-scoring face in each image of ``(B, 3, H, W)`` and place its 68 points.

        Images are tried at each of ``detect_sizes`` in turn; only the ones still
        without a face go on to the next size.
        """
        b, _, h, w = images.shape
        points = np.zeros((b, 68, 2), np.float32)
        found = np.zeros(b, bool)
        scores = np.full(b, -np.inf, np.float32)
        for size in self.detect_sizes:
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            scale = size / max(h, w)
            # One batched resize; dlib itself works image by image (its detector has no batch API).
            big = F.interpolate(images[torch.from_numpy(todo)].float().cpu(), scale_factor=scale, mode="bilinear", align_corners=False)
            arrays = (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
            for i, arr in zip(todo, arrays):
                rects, rect_scores, _ = self.detector.run(arr, 0, self.threshold)
                if not rects:
                    continue
                best = int(np.argmax(rect_scores))
                shape = self.predictor(arr, rects[best])
                # dlib's pixel centres are integers; map back to the input's pixel grid.
                pts = np.array([((p.x + 0.5) / scale - 0.5, (p.y + 0.5) / scale - 0.5) for p in shape.parts()], np.float32)
                if plausible(pts, w):
                    points[i], found[i], scores[i] = pts, True, rect_scores[best]
        return Landmarks(torch.from_numpy(points), torch.from_numpy(found), torch.from_numpy(scores))


def plausible(points: np.ndarray, width: int) -> bool:
    """An upright face: brows above eyes above the nose tip above the mouth, eyes apart.

    Rejects weak detections on upside-down or non-face images, where the
    shape predictor still returns 68 points.
    """
    brow, eye = points[17:27, 1].mean(), points[36:48, 1].mean()
    nose, mouth = points[33, 1], points[48:60, 1].mean()
    iod = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    return bool(brow < eye < nose < mouth and iod > 0.15 * width)


# --------------------------------------------------------------------------- masks


def polygon_mask(vertices: torch.Tensor, height: int, width: int, hull: bool = False) -> torch.Tensor:
    """Binary fill of one polygon per image: ``(B, V, 2)`` vertices -> ``(B, H, W)`` in {0, 1}.

    OpenCV's scan-line fill with 1/16-pixel vertex precision: microseconds per
    polygon, far cheaper than a dense inside-test over every pixel and edge.
    With ``hull`` the convex hull of the vertices is filled instead.
    """
    import cv2

    fixed = np.round(vertices.detach().cpu().double().numpy() * 16).astype(np.int32)
    out = np.zeros((len(fixed), height, width), np.uint8)
    for canvas, poly in zip(out, fixed):
        cv2.fillPoly(canvas, [cv2.convexHull(poly) if hull else poly], 1, lineType=cv2.LINE_8, shift=4)
    return torch.from_numpy(out).to(device=vertices.device, dtype=vertices.dtype)


def soften(mask: torch.Tensor, grow: int, blur: float) -> torch.Tensor:
    """Dilate a (B, H, W) binary mask by ``grow`` pixels, then Gaussian-feather it."""
    m = mask.unsqueeze(1)
    if grow > 0:
        m = F.max_pool2d(m, 2 * grow + 1, stride=1, padding=grow)
    if blur > 0:
        radius = max(1, int(round(3 * blur)))
        t = torch.arange(-radius, radius + 1, dtype=m.dtype, device=m.device)
        k = torch.exp(-0.5 * (t / blur) ** 2)
        k = k / k.sum()
        m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return m.squeeze(1).clamp(0, 1)


def forehead_outline(points: torch.Tensor, lift: float = 0.4) -> torch.Tensor:
    """Brow points lifted by ``lift`` x the brow-to-nose-tip height: the lower forehead, which on tight
    crops stays below most fringes (a higher line pulls candidates' hair into the face)."""
    brows = points[:, list(BROWS_RIGHT_TO_LEFT)]
    lift = lift * (points[:, 33:34, 1:2] - brows[..., 1:2]).clamp(min=0)
    return torch.cat([brows[..., :1], brows[..., 1:2] - lift], dim=-1)


def region_masks(points: torch.Tensor, height: int, width: int, feather: float | None = None,
                 margin: float = 0.055, forehead: float = 0.4, eye_margin: float | None = None) -> dict[str, torch.Tensor]:
    """Soft ``(B, H, W)`` masks in [0, 1] from ``(B, 68, 2)`` landmarks.

    ``eyes`` (with brows), ``nose``, ``mouth``: the identity-bearing features,
    slightly grown. ``face``: jaw line plus forehead. ``skin``: the face minus
    the features (cheeks, forehead, jaw, beard area). ``hair_background``: the
    complement of the face. Margins scale with the image width (inputs are face
    crops, eyes about half the width apart), never with the batch's content, so
    an image gets the same masks in any batch. ``margin``: how far the features
    grow, as a fraction of the width (``eye_margin``, when given, for the eyes and brows
    instead); ``forehead``: see :func:`forehead_outline`;
    ``feather``: the Gaussian sigma of the soft edges in pixels.
    """
    points = points.float()
    grow = max(0, int(round(margin * width)))
    eye_grow = grow if eye_margin is None else max(0, int(round(eye_margin * width)))
    blur = feather if feather is not None else max(0.5, 0.02 * width)

    def fill(idx: tuple[int, ...]) -> torch.Tensor:
        return polygon_mask(points[:, list(idx)], height, width)

    eyes = torch.maximum(fill(BROW_EYE_LEFT), fill(BROW_EYE_RIGHT))
    face = polygon_mask(torch.cat([points[:, list(JAW)], forehead_outline(points, forehead)], dim=1), height, width)
    masks = {
        "eyes": soften(eyes, eye_grow, blur),
        "nose": soften(fill(NOSE), grow, blur),
        # The hull of all 20 lip points, not just the outer contour: on thin closed lips dlib may put
        # the inner-lip points outside the outer ones, and the warp maps a candidate's open mouth
        # (dark, or teeth) between its inner-lip points onto the original's.
        "mouth": soften(polygon_mask(points[:, list(MOUTH_ALL)], height, width, hull=True), grow, blur),
        "face": soften(face, 0, blur),
    }
    features = torch.maximum(torch.maximum(masks["eyes"], masks["nose"]), masks["mouth"])
    masks["skin"] = (masks["face"] * (1 - features)).clamp(0, 1)
    masks["hair_background"] = 1 - masks["face"]
    return masks
