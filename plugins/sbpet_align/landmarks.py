"""Finding one face in an image of any size and placing dlib's 68 landmarks on it.

dlib's HOG frontal detector scans an 80x80 window, so images are first scaled
to a working size (small crops up, large photos down). The detector is trained
on upright faces and misses strongly rolled ones, so an image without a
detection is tried again rotated by each of ``roll_retries`` degrees; the
landmarks found on a rotated copy are mapped back to the input's pixels. A face that is
found rolled is turned level and its landmarks placed once more (see ``FaceFinder._upright``).
Landmark indices follow the iBUG 300-W convention: jaw 0-16, brows 17-26,
nose 27-35, eyes 36-47 (36-41 the subject's right eye, at the image's left),
mouth 48-67.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NO_FACE = "no face detected"
LANDMARKS_FAILED = "landmarks failed"


@dataclass
class FoundFace:
    """The 68 landmarks of the chosen face, in the input image's pixels (pixel centres at integers)."""

    points: np.ndarray  # (68, 2) float64, (x, y)
    box: tuple[float, float, float, float]  # bounds (left, top, right, bottom) of the detector box in input pixels
    score: float  # detector score
    attempt_deg: float  # the rotation of the copy the face was found on (0 = as given)


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right eye, left eye) of the subject, i.e. image-left then image-right for an upright face."""
    return points[36:42].mean(axis=0), points[42:48].mean(axis=0)


def roll_degrees(points: np.ndarray) -> float:
    """Angle of the eye line in degrees, positive when the image-right eye sits lower (clockwise on screen)."""
    a, b = eye_centres(points)
    return float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))


def plausible(points: np.ndarray, box_width: float) -> bool:
    """An upright face in its own frame: brows above eyes above the nose tip above the mouth above the
    chin, and the eyes apart. On non-faces and upside-down faces the shape predictor still returns 68
    points; this rejects them. Measured along the face's own vertical axis, so rolled faces pass."""
    a, b = eye_centres(points)
    across = b - a
    iod = float(np.linalg.norm(across))
    if iod < 0.25 * box_width:
        return False
    down = np.array([-across[1], across[0]]) / iod  # the eye line turned by +90 degrees (y grows downwards)
    depth = points @ down
    brow, eye = depth[17:27].mean(), depth[36:48].mean()
    nose, mouth, chin = depth[33], depth[48:60].mean(), depth[8]
    return bool(brow < eye < nose < mouth < chin)


def _rotation(angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """2x3 matrix rotating by ``angle_deg`` (counter-clockwise on screen) about ``centre``, as cv2 does."""
    import cv2

    return cv2.getRotationMatrix2D(centre, angle_deg, 1.0)


def _invert(m: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.invertAffineTransform(m)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


class FaceFinder:
    """dlib's HOG detector and 68-point shape predictor, one image at a time (dlib has no batch API)."""

    def __init__(self, predictor_path: str | Path, min_side: int = 200, max_side: int = 640, threshold: float = -0.5,
                 roll_retries: tuple[float, ...] = (15.0, -15.0, 30.0, -30.0), level_deg: float = 5.0):
        import dlib

        if not Path(predictor_path).exists():
            raise FileNotFoundError(f"dlib shape predictor not found at {predictor_path}")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))
        self.rectangle = dlib.rectangle
        self.min_side, self.max_side = min_side, max_side
        self.threshold = threshold
        self.roll_retries = tuple(roll_retries)
        self.level_deg = level_deg
        self.calls = 0  # detector runs, for tests that check caching

    def working_scale(self, height: int, width: int) -> float:
        """Scale that brings the short side up to ``min_side`` without the long side passing ``max_side``."""
        scale = self.min_side / min(height, width)
        return min(scale, self.max_side / max(height, width))

    def find(self, image: np.ndarray) -> FoundFace | str:
        """The chosen face of an (H, W, 3) uint8 RGB image, or the reason there is none."""
        import cv2

        h, w = image.shape[:2]
        scale = self.working_scale(h, w)
        work_w, work_h = max(1, round(w * scale)), max(1, round(h * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        work = np.ascontiguousarray(cv2.resize(image, (work_w, work_h), interpolation=interpolation))
        # input pixel -> working pixel, pixel centres at integers
        sx, sy = work_w / w, work_h / h
        to_work = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
        reason = NO_FACE
        for angle in (0.0, *self.roll_retries):
            if angle:
                rot = _rotation(angle, ((work_w - 1) / 2, (work_h - 1) / 2))
                view = cv2.warpAffine(work, rot, (work_w, work_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            else:
                rot = np.array([[1.0, 0, 0], [0, 1.0, 0]])
                view = work
            self.calls += 1
            rects, scores, _ = self.detector.run(view, 0, self.threshold)
            if not rects:
                continue
            best = _choose(rects, work_w, work_h)
            rect = rects[best]
            shape = self.predictor(view, rect)
            pts_view = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            if not plausible(pts_view, rect.width()):
                reason = LANDMARKS_FAILED
                continue
            # view -> working -> input pixels
            back = _compose(_invert(to_work), _invert(rot))
            centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
            points = self._upright(work, _apply(_invert(rot), pts_view), _apply(_invert(rot), centre), rect.width())
            points = _apply(_invert(to_work), points) if points is not None else _apply(back, pts_view)
            corners = _apply(back, np.array([[rect.left(), rect.top()], [rect.right(), rect.top()],
                                             [rect.left(), rect.bottom()], [rect.right(), rect.bottom()]], np.float64))
            box = (*corners.min(axis=0), *corners.max(axis=0))
            return FoundFace(points, tuple(float(v) for v in box), float(scores[best]), float(angle))
        return reason

    def _upright(self, work: np.ndarray, points: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray | None:
        """Landmarks placed again on a copy turned so the face is upright, or None when it already was.

        The shape predictor is trained on upright faces and drifts on rolled ones (the detector
        finds faces up to about 20 degrees off upright, and the retries leave up to 15 degrees),
        so a face that is not level is turned level and its points placed once more, in the same
        box (no second detection). Working-image pixels in and out.
        """
        import cv2

        roll = roll_degrees(points)
        if abs(roll) < self.level_deg:
            return None
        h, w = work.shape[:2]
        rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, 1.0)
        view = cv2.warpAffine(work, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        half = side / 2
        box = self.rectangle(int(round(centre[0] - half)), int(round(centre[1] - half)),
                             int(round(centre[0] + half)), int(round(centre[1] + half)))
        shape = self.predictor(view, box)
        again = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        if not plausible(again, side):
            return None
        return _apply(_invert(rot), again)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map ``outer(inner(x))``."""
    out = outer[:, :2] @ inner[:, :2]
    return np.concatenate([out, (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def _choose(rects, width: int, height: int) -> int:
    """The largest face, discounted by its distance from the image centre (a detector crop's subject is
    central; a bystander at the edge is not), when there are several."""
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    half_diagonal = 0.5 * float(np.hypot(width, height))
    best, best_value = 0, -np.inf
    for i, r in enumerate(rects):
        middle = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        offset = float(np.linalg.norm(middle - centre)) / half_diagonal
        value = r.width() * r.height() * (1.0 - 0.5 * min(offset, 1.0))
        if value > best_value:
            best, best_value = i, value
    return best
