"""Warping: how a candidate face is brought onto an original's geometry.

PriDSS keeps the original's identity-bearing features where they are and moves the candidate's
skin under them, so every candidate is first aligned to its original (a similarity over the inner
landmarks, the jaw being the least reliable on tight crops), then warped piecewise-affinely over one
Delaunay triangulation shared by every face (the canonical mean shape's, so triangle topology never
depends on the batch). The same machinery maps faces to the canonical 90x90 frame for the pool
filters, measures how much a warp distorts the cheeks, and carries the candidate's face shape (its
jaw line) into the fusion. Everything is batched torch over ``(N, ...)`` and runs on any device.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import MEAN_SHAPE_90

# Points on a square around the canonical face (90x90 frame, 45 px beyond each side) so
# the triangulation also covers hair and background, which then move rigidly.
BORDER_90 = tuple((x, y) for x in (-45.0, 45.0, 135.0) for y in (-45.0, 45.0, 135.0) if (x, y) != (45.0, 45.0))
# Landmarks used for the similarity alignment: brows, nose, eyes, mouth (the jaw is
# the least reliable on tight crops, where dlib places it at or past the image edge).
INNER = slice(17, 68)


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """Delaunay triangles (T, 3) over the canonical 68 landmarks plus the 8 border points."""
    from scipy.spatial import Delaunay

    return Delaunay(np.array(MEAN_SHAPE_90 + BORDER_90)).simplices.astype(np.int64)


def similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms (Umeyama, no reflection) mapping ``src`` to ``dst``.

    ``(N, K, 2)`` point sets -> ``(N, 2, 3)`` matrices acting on ``(x, y, 1)``.
    """
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    # For 2-D, the optimal rotation+scale is a complex number a + ib.
    a = (s * d).sum((1, 2))
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1)
    norm = (s ** 2).sum((1, 2)).clamp(min=1e-8)
    a, b = a / norm, b / norm
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (N, 2, 2)
    t = mu_d.squeeze(1) - (rot @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], -1)


def apply_transform(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, :, 2].unsqueeze(1)


def with_border(points: torch.Tensor, size: int) -> torch.Tensor:
    """Append the 8 border points, placed by the similarity from the canonical shape to ``points``."""
    canon = torch.tensor(MEAN_SHAPE_90, dtype=points.dtype, device=points.device) * (size / 90.0)
    border = torch.tensor(BORDER_90, dtype=points.dtype, device=points.device) * (size / 90.0)
    m = similarity(canon[INNER].expand(len(points), -1, -1), points[:, INNER])
    return torch.cat([points, apply_transform(m, border.expand(len(points), -1, -1))], 1)


def barycentric_map(points: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every pixel of each destination shape ``(B, V, 2)``: its triangle and barycentric weights.

    Returns ``tri`` (B, H*W) triangle indices and ``lam`` (B, H*W, 3). The
    triangle map is rasterised with OpenCV (one fill per triangle, cheap);
    the weights are then computed for that triangle only, in torch.
    """
    import cv2

    tris_np = triangles()
    fixed = np.round(points.detach().cpu().double().numpy() * 16).astype(np.int32)
    # The border points lie far outside the image, so every pixel gets a triangle.
    index = np.zeros((len(fixed), height, width), np.int32)
    for canvas, pts in zip(index, fixed):
        for t, corners in enumerate(pts[tris_np]):
            cv2.fillConvexPoly(canvas, corners, t, lineType=cv2.LINE_8, shift=4)
    tri = torch.from_numpy(index.reshape(len(fixed), -1).astype(np.int64)).to(points.device)
    tris = torch.as_tensor(tris_np, device=points.device)
    rows = torch.arange(len(points), device=points.device).view(-1, 1, 1)
    corners = points[rows, tris[tri]]  # (B, P, 3, 2)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=points.dtype, device=points.device),
                            torch.arange(width, dtype=points.dtype, device=points.device), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).unsqueeze(0)  # (1, P, 2)
    a, v0, v1 = corners[:, :, 0], corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0]
    det = v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]
    det = torch.where(det.abs() < 1e-9, torch.full_like(det, 1e-9), det)
    rel = pix - a
    l1 = (rel[..., 0] * v1[..., 1] - rel[..., 1] * v1[..., 0]) / det
    l2 = (v0[..., 0] * rel[..., 1] - v0[..., 1] * rel[..., 0]) / det
    return tri, torch.stack([1 - l1 - l2, l1, l2], -1)


def warp_to(sources: torch.Tensor, source_points: torch.Tensor, tri: torch.Tensor, lam: torch.Tensor,
            height: int, width: int, with_coverage: bool = False):
    """Piecewise-affine warp of ``sources`` (N, 3, h, w) with shapes ``source_points`` (N, V, 2)
    onto destination geometries given by ``tri``/``lam`` from :func:`barycentric_map` (N rows).

    With ``with_coverage`` also returns (N, height, width) in [0, 1]: 1 where the pixel was sampled
    at least 2 px inside the source, falling to 0 at its edge and beyond, where the warp can only
    repeat the source's edge pixels (on tight crops: a lower lip at the bottom edge smeared down over
    the chin, cheeks at the sides smeared outwards)."""
    tris = torch.as_tensor(triangles(), device=sources.device)
    vert = tris[tri]  # (N, P, 3) vertex indices per pixel
    n, p = vert.shape[:2]
    src_xy = torch.gather(source_points, 1, vert.reshape(n, -1, 1).expand(-1, -1, 2)).view(n, p, 3, 2)
    xy = (lam.unsqueeze(-1) * src_xy).sum(2)  # (N, P, 2) source pixel positions
    h, w = sources.shape[-2:]
    grid = torch.stack([(xy[..., 0] + 0.5) / w * 2 - 1, (xy[..., 1] + 0.5) / h * 2 - 1], -1).view(n, height, width, 2)
    warped = F.grid_sample(sources, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if not with_coverage:
        return warped
    inside = torch.minimum(torch.minimum(xy[..., 0] + 0.5, w - 0.5 - xy[..., 0]),
                           torch.minimum(xy[..., 1] + 0.5, h - 0.5 - xy[..., 1]))
    return warped, (inside / 2).clamp(0, 1).view(n, height, width)


def to_canonical(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Piecewise-affine warp of (N, 3, H, W) faces with landmarks (N, 68, 2) onto the canonical
    90x90 mean shape, so that fixed windows cover the same part of every face."""
    canon = with_border(torch.tensor(MEAN_SHAPE_90, dtype=torch.float32, device=images.device).unsqueeze(0), 90)
    tri, lam = barycentric_map(canon, 90, 90)
    n = len(images)
    return warp_to(images.float(), with_border(points.float(), images.shape[-1]), tri.expand(n, -1),
                   lam.expand(n, -1, -1), 90, 90)


# Glasses windows in the canonical frame (rows, columns): the bridge over the nose root, and the

def aligned_candidates(original_points: torch.Tensor, candidate_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each original's landmarks repeated per candidate, (B*M, 68, 2), and the candidates' (B, M, 68, 2)
    moved onto them by the similarity over the inner landmarks, (B*M, 68, 2)."""
    m = candidate_points.shape[1]
    own = original_points.float().repeat_interleave(m, 0)
    theirs = candidate_points.reshape(-1, 68, 2).float()
    return own, apply_transform(similarity(theirs[:, INNER], own[:, INNER]), theirs)


def warp_distortion(original_points: torch.Tensor, candidate_points: torch.Tensor) -> torch.Tensor:
    """How far the warp of each candidate onto its original stretches the cheeks: (B, M).

    ``original_points`` (B, 68, 2), ``candidate_points`` (B, M, 68, 2). After the similarity
    alignment of :func:`.fusion.fuse`, every landmark triangle with a jaw vertex (the cheeks and jaw, where
    the candidate's skin goes) maps with some area ratio; the score is the area-weighted mean
    |log ratio|, a flipped triangle counting as 5. On the 160 LFW3D report-grid faces fused with
    their chosen candidates (PriDSS version 7) the median was 0.19 and the 95th percentile 0.42;
    the two pairs above 1 (a half-turned candidate head, an original with misplaced landmarks)
    tore the face apart, and those between 0.55 and 0.7 showed stretched or folded cheeks.
    """
    b, m = candidate_points.shape[:2]
    tris = torch.as_tensor(triangles(), device=original_points.device)
    tris = tris[(tris < 68).all(1) & (tris < 17).any(1)]

    def areas(points: torch.Tensor) -> torch.Tensor:
        c = points[:, tris]  # (N, T, 3, 2)
        v0, v1 = c[:, :, 1] - c[:, :, 0], c[:, :, 2] - c[:, :, 0]
        return v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]

    own, aligned = aligned_candidates(original_points, candidate_points)
    a_own, a_theirs = areas(own), areas(aligned)
    ratio = a_theirs / torch.where(a_own.abs() < 1e-6, torch.full_like(a_own, 1e-6), a_own)
    log_ratio = torch.where(ratio > 0, ratio.clamp(min=1e-6).log().abs(), torch.full_like(ratio, 5.0))
    weight = a_own.abs() / a_own.abs().sum(1, keepdim=True).clamp(min=1e-6)
    return (log_ratio * weight).sum(1).view(b, m)


def jaw_within_frame(points: torch.Tensor, jaw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Limit a new jaw line (N, 17, 2) for faces with landmarks ``points`` (N, 68, 2) so that the
    face-shape warp never needs pixels from outside the image.

    Moving a jaw point inwards shows what lay beyond it; on a tight crop (LFW3D's jaw runs along the
    frame) that is outside the image, and the warp could only repeat the edge pixels: stripes at the
    sides and a cut across the chin. So each point moves inwards (towards the nose) at most as far
    as the image reaches beyond it along that direction; outwards it moves freely.
    """
    own = points[:, :17]
    outward = own - points[:, 30:31]
    outward = outward / outward.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    # Distance from each jaw point along ``outward`` to the image border (0 when already outside it).
    low = torch.tensor([-0.5, -0.5], dtype=own.dtype, device=own.device)
    high = torch.tensor([width - 0.5, height - 0.5], dtype=own.dtype, device=own.device)
    steps = torch.where(outward > 1e-6, (high - own) / outward.clamp(min=1e-6),
                        torch.where(outward < -1e-6, (low - own) / outward.clamp(max=-1e-6),
                                    torch.full_like(own, float("inf"))))
    room = steps.amin(-1).clamp(min=0)
    along = ((jaw - own) * outward).sum(-1)
    return jaw + ((torch.maximum(along, -room) - along).unsqueeze(-1) * outward)
