"""Pool filters: which pool faces may serve as candidates.

A candidate gives the fusion its skin, so a pool face whose skin region carries something that is not
skin would paste it onto the original: spectacle frames leave rim fragments round the kept eyes
(:func:`glasses_score`), fringes and caps leave hair or cap blobs on the forehead
(:func:`forehead_cover`), and unusual shapes (half-turned heads, misplaced landmarks) stretch the
skin into streaks (:func:`shape_residual`). The scores are computed once per pool face at fit time;
the options' thresholds decide. :func:`frame_lines` serves the other side: an original's own
frames are traced so that they can be laid back over its fusion.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import BROWS_RIGHT_TO_LEFT, GLASSES_BAND, MEAN_SHAPE_90, forehead_outline, polygon_mask
from .warping import apply_transform, similarity, to_canonical

# ring where frames run (below the eyes, beside them, across the bridge); the lower cheeks are the
# reference for the face's own texture.
_BRIDGE = (slice(24, 46), slice(40, 50))
_RING = ((slice(40, 50), slice(4, 36)), (slice(40, 50), slice(54, 86)), (slice(26, 40), slice(40, 50)),
         (slice(28, 42), slice(2, 9)), (slice(28, 42), slice(81, 88)))
_CHEEKS = (slice(55, 75), slice(15, 75))
# Score above which a face counts as wearing glasses. On 198 LFW3D faces labelled by eye (31 with
# glasses): ROC AUC 0.93; at 3.45 recall 0.9, precision 0.45, 28 % of faces flagged (deep frown
# lines, wrinkles and strong skin texture are the false alarms, faint rimless frames the misses);
# at 3.8 recall 0.8, precision 0.66. Dropping a bare face from the pool costs little, a kept
# frame leaves rim fragments round the fused eyes, so the threshold favours recall.
GLASSES_THRESHOLD = 3.45


def glasses_score(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """How strongly (N, 3, H, W) faces with landmarks (N, 68, 2) look like they wear glasses.

    Two cues in the canonical frame, each scaled by its median on LFW3D (about 1 on a bare face):
    the strongest step between rows of the bridge window's row means (a frame's bridge is a
    horizontal line across the nose root; the nose itself is smooth top to bottom), relative to the
    nose's contrast, and the mean gradient magnitude in the frame ring relative to the cheeks'.
    """
    g = to_canonical(images, points).mean(1)
    prof = g[:, _BRIDGE[0], _BRIDGE[1]].mean(2)
    contrast = g[:, 26:60, 32:58].flatten(1).std(1) + 0.02
    bridge = (prof[:, 1:] - prof[:, :-1]).abs().amax(1) / contrast
    gy = F.pad(g[:, 2:] - g[:, :-2], (0, 0, 1, 1)) / 2
    gx = F.pad(g[:, :, 2:] - g[:, :, :-2], (1, 1)) / 2
    mag = (gx ** 2 + gy ** 2).sqrt()
    ring = torch.cat([mag[:, r, c].flatten(1) for r, c in _RING], 1).mean(1)
    cheeks = mag[:, _CHEEKS[0], _CHEEKS[1]].flatten(1).mean(1) + 0.01
    return bridge / 0.2 + 2 * (ring / cheeks) / 0.67


def frame_lines(images: torch.Tensor, points: torch.Tensor, threshold: float = 0.06) -> torch.Tensor:
    """Thin dark or bright lines (N, H, W) in {0, 1} inside :data:`.geometry.GLASSES_BAND` of (N, 3, H, W)
    faces with landmarks (N, 68, 2): spectacle frames (with brows, lid creases and wrinkles).

    Morphological black-hat and top-hat of the luminance over a window of about 5 px at 90 px: a line
    narrower than the window differs from the window's closing (or opening) by its contrast, broad
    shading does not. ``threshold`` is that contrast (luminance in [0, 1]); at 0.06 the frames of the
    LFW3D wearers on the report grid are traced except where they fade into the skin. Specks smaller
    than a stroke are left out.
    """
    import cv2

    k = max(3, int(round(5 * images.shape[-1] / 90)) | 1)
    lum = images.float().mean(1, keepdim=True)
    dilate = lambda t: F.max_pool2d(t, k, 1, k // 2)  # noqa: E731
    erode = lambda t: -F.max_pool2d(-t, k, 1, k // 2)  # noqa: E731
    dark = (erode(dilate(lum)) - lum)[:, 0] > threshold  # black-hat: dark frames
    bright = (lum - dilate(erode(lum)))[:, 0] > threshold  # top-hat: metal rims, but also highlights
    band = polygon_mask(points[:, list(GLASSES_BAND)].float(), *images.shape[-2:]) > 0
    # Frames are long connected strokes; specks (pores, moles, highlights) are not, and laid over the
    # candidate's smoother skin they show as dots: dark components under about 10 px (at 90 px) go,
    # bright ones under about 25 px (a highlight on a cheekbone is bigger than a pore).
    area = (images.shape[-1] / 90) ** 2
    mask = np.zeros(tuple(dark.shape), np.uint8)
    for lines, min_size in ((dark, max(3, round(10 * area))), (bright, max(3, round(25 * area)))):
        for out, m in zip(mask, (lines & band).cpu().numpy().astype(np.uint8)):  # OpenCV labels one image at a time
            _, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_size)
            out |= np.isin(labels, big[big > 0]).astype(np.uint8)
    return torch.from_numpy(mask).to(device=images.device, dtype=images.dtype)


def forehead_cover(images: torch.Tensor, points: torch.Tensor, lift: float = 0.4) -> torch.Tensor:
    """Share of the fused forehead band (brows up to :func:`.geometry.forehead_outline`) of (N, 3, H, W)
    faces with landmarks (N, 68, 2) whose colour is far from the cheeks' (over 4 cheek spreads from
    their median): fringes, caps, goggles pushed up. About 0.04 on a median LFW3D face; 0.6 and
    up is mostly a fringe or a cap over the forehead."""
    x = to_canonical(images, points)
    canon = torch.tensor(MEAN_SHAPE_90, dtype=x.dtype, device=x.device).unsqueeze(0)
    outline = torch.cat([canon[:, list(BROWS_RIGHT_TO_LEFT[::-1])], forehead_outline(canon, lift)], 1)
    band = polygon_mask(outline, 90, 90)[0] > 0
    cheeks = torch.zeros(90, 90, dtype=torch.bool, device=x.device)
    cheeks[50:65, 12:30] = cheeks[50:65, 60:78] = True
    skin = x[:, :, cheeks]
    median, spread = skin.median(2).values, skin.std(2).mean(1) + 0.03
    dist = (x[:, :, band] - median.unsqueeze(2)).norm(dim=1) / spread.unsqueeze(1)
    return (dist > 4).float().mean(1)


def shape_residual(points: torch.Tensor) -> torch.Tensor:
    """Mean distance (px of the 90x90 canonical frame) of (N, 68, 2) landmarks from the canonical
    mean shape after the best similarity alignment: how unusual a face's shape is. On LFW3D the
    median is 2.1 and the top 2 % (above about 3.8) are tilted or half-turned heads, wide-open
    mouths and misplaced landmarks, whose warps stretch skin into streaks."""
    canon = torch.tensor(MEAN_SHAPE_90, dtype=torch.float32, device=points.device).expand(len(points), -1, -1)
    aligned = apply_transform(similarity(points.float(), canon), points.float())
    return (aligned - canon).norm(dim=-1).mean(1)
