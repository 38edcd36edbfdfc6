"""Pixel fusion: warp candidate faces onto an original and Poisson-blend their skin in.

Everything here is batched torch over ``(N, ...)`` pairs and runs on any device.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import MEAN_SHAPE_90, region_masks

# Points on a square around the canonical face (90x90 frame, 45 px beyond each side) so
# the triangulation also covers hair and background, which then move rigidly.
_BORDER_90 = tuple((x, y) for x in (-45.0, 45.0, 135.0) for y in (-45.0, 45.0, 135.0) if (x, y) != (45.0, 45.0))
# Landmarks used for the similarity alignment: brows, nose, eyes, mouth (the jaw is
# the least reliable on tight crops, where dlib places it at or past the image edge).
_INNER = slice(17, 68)


@lru_cache(maxsize=1)
def _triangles() -> np.ndarray:
    """Delaunay triangles (T, 3) over the canonical 68 landmarks plus the 8 border points."""
    from scipy.spatial import Delaunay

    return Delaunay(np.array(MEAN_SHAPE_90 + _BORDER_90)).simplices.astype(np.int64)


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


def _apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :, :2].transpose(1, 2) + matrix[:, :, 2].unsqueeze(1)


def with_border(points: torch.Tensor, size: int) -> torch.Tensor:
    """Append the 8 border points, placed by the similarity from the canonical shape to ``points``."""
    canon = torch.tensor(MEAN_SHAPE_90, dtype=points.dtype, device=points.device) * (size / 90.0)
    border = torch.tensor(_BORDER_90, dtype=points.dtype, device=points.device) * (size / 90.0)
    m = similarity(canon[_INNER].expand(len(points), -1, -1), points[:, _INNER])
    return torch.cat([points, _apply(m, border.expand(len(points), -1, -1))], 1)


def barycentric_map(points: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every pixel of each destination shape ``(B, V, 2)``: its triangle and barycentric weights.

    Returns ``tri`` (B, H*W) triangle indices and ``lam`` (B, H*W, 3). The
    triangle map is rasterised with OpenCV (one fill per triangle, cheap);
    the weights are then computed for that triangle only, in torch.
    """
    import cv2

    tris_np = _triangles()
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
    tris = torch.as_tensor(_triangles(), device=sources.device)
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

    from .geometry import GLASSES_BAND, polygon_mask

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
    from .geometry import BROWS_RIGHT_TO_LEFT, forehead_outline, polygon_mask

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
    aligned = _apply(similarity(points.float(), canon), points.float())
    return (aligned - canon).norm(dim=-1).mean(1)


def aligned_candidates(original_points: torch.Tensor, candidate_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each original's landmarks repeated per candidate, (B*M, 68, 2), and the candidates' (B, M, 68, 2)
    moved onto them by the similarity over the inner landmarks, (B*M, 68, 2)."""
    m = candidate_points.shape[1]
    own = original_points.float().repeat_interleave(m, 0)
    theirs = candidate_points.reshape(-1, 68, 2).float()
    return own, _apply(similarity(theirs[:, _INNER], own[:, _INNER]), theirs)


def warp_distortion(original_points: torch.Tensor, candidate_points: torch.Tensor) -> torch.Tensor:
    """How far the warp of each candidate onto its original stretches the cheeks: (B, M).

    ``original_points`` (B, 68, 2), ``candidate_points`` (B, M, 68, 2). After the similarity
    alignment of :func:`fuse`, every landmark triangle with a jaw vertex (the cheeks and jaw, where
    the candidate's skin goes) maps with some area ratio; the score is the area-weighted mean
    |log ratio|, a flipped triangle counting as 5. On the 160 LFW3D report-grid faces fused with
    their chosen candidates (PriDSS version 7) the median was 0.19 and the 95th percentile 0.42;
    the two pairs above 1 (a half-turned candidate head, an original with misplaced landmarks)
    tore the face apart, and those between 0.55 and 0.7 showed stretched or folded cheeks.
    """
    b, m = candidate_points.shape[:2]
    tris = torch.as_tensor(_triangles(), device=original_points.device)
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


def _weighted_moments(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and spread (at least 1e-3) of (N, C, H, W) ``x`` under (N, 1, H, W) ``weights``."""
    total = weights.sum((2, 3), keepdim=True).clamp(min=1e-6)
    mean = (x * weights).sum((2, 3), keepdim=True) / total
    return mean, (((x - mean) ** 2 * weights).sum((2, 3), keepdim=True) / total).sqrt().clamp(min=1e-3)


def mix_chroma(source: torch.Tensor, target: torch.Tensor, keep: float) -> torch.Tensor:
    """``source``'s brightness (the mean of the channels) with its colour (each channel minus that mean)
    mixed with ``target``'s: ``keep`` of the source's, the rest the target's. (N, 3, H, W) each.

    A candidate's skin colour varies in ways a global colour transfer cannot undo (flushed cheeks on
    a pale forehead, the colour cast of another camera); on the original's photo those show as orange,
    yellow or purple blotches. Brightness carries the candidate's texture, beard shadow and shape.
    """
    s_lum, t_lum = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    return (s_lum + keep * (source - s_lum) + (1 - keep) * (target - t_lum)).clamp(0, 1)


def limit_tones(images: torch.Tensor, weight: torch.Tensor, limit: float) -> torch.Tensor:
    """Pull brightness far outside the skin's own range back towards it, smoothly (tanh).

    (N, 3, H, W) images, (N, H, W) soft skin weights. Each pixel's luminance deviation from the
    robust mean over ``weight`` is squashed to at most ``limit`` robust spreads; chroma is kept.
    """
    lum = images.mean(1, keepdim=True)
    w = weight.unsqueeze(1)
    mean, std = _weighted_moments(lum, w)
    mean, std = _weighted_moments(lum, w * ((lum - mean).abs() <= 2 * std))
    dev = lum - mean
    bound = limit * std
    return images + (bound * torch.tanh(dev / bound) - dev)


def match_colour(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Per-channel mean/std transfer of ``source`` towards ``target`` over the soft region ``weight``.

    ``strength`` 1 takes the target's mean and spread, 0 keeps the source's
    (in between: the mean moves part way, the spread ratio is a power of it).
    """
    w = weight.unsqueeze(1)
    ms, ss = _weighted_moments(source, w)
    mt, st = _weighted_moments(target, w)
    gain = (st / ss).clamp(0.5, 2.0) ** strength
    return ((source - ms) * gain + ms + strength * (mt - ms)).clamp(0, 1)


def _laplacian_system(region: np.ndarray):
    """Sparse LU of the 5-point Laplacian restricted to ``region`` (H, W bool), Neumann at the image border.

    Returns the factorisation, the flat indices of the unknowns and, per
    direction, (unknown rows, neighbour flat indices) of neighbours outside the
    region, whose fixed values feed the right-hand side.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    h, w = region.shape
    flat = np.flatnonzero(region.ravel())
    index = np.full(h * w, -1, np.int64)
    index[flat] = np.arange(len(flat))
    ys, xs = np.divmod(flat, w)
    rows, cols, degree, outside = [], [], np.zeros(len(flat)), []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        degree += ok
        neighbour = np.where(ok, ny * w + nx, 0)
        inner = ok & (index[neighbour] >= 0)
        rows.append(np.flatnonzero(inner))
        cols.append(index[neighbour[inner]])
        fixed = ok & ~inner
        outside.append((np.flatnonzero(fixed), neighbour[fixed]))
    n = len(flat)
    r = np.concatenate([np.arange(n)] + rows)
    c = np.concatenate([np.arange(n)] + cols)
    v = np.concatenate([degree + 1e-8, -np.ones(sum(len(x) for x in rows))])
    # The matrix is symmetric: a symmetric ordering halves the fill of the factor.
    lu = splu(coo_matrix((v, (r, c)), shape=(n, n)).tocsc(), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return lu, flat, outside


def poisson_blend(source: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Seamless cloning: ``source``'s gradients inside ``region``, ``target`` elsewhere.

    ``source``/``target`` are (B, M, 3, H, W): M sources per target image; ``region`` is
    (B, M, H, W) bool, one per source (or (B, H, W), shared by the M sources of a row). Solves for
    the harmonic correction f (Laplace f = 0 in the region, f = target - source on its boundary;
    the image border is free, i.e. Neumann) and returns ``source + f`` inside the region, ``target``
    outside. One sparse LU serves every source with the same region (and its 3 channels). Solved
    on the CPU with SciPy (90x90 systems are small).
    """
    bsz, m, ch, h, w = source.shape
    out = target.detach().to("cpu", torch.float64).numpy().copy().reshape(bsz, m, ch, h * w)
    diff = (target - source).detach().to("cpu", torch.float64).numpy().reshape(bsz, m, ch, h * w)
    src = source.detach().to("cpu", torch.float64).numpy().reshape(bsz, m, ch, h * w)
    masks = region.detach().cpu().numpy()
    if masks.ndim == 3:
        masks = np.broadcast_to(masks[:, None], (bsz, m, h, w))
    for i in range(bsz):
        # Group the row's sources by region: usually a few distinct ones (where candidates' crops end).
        groups: dict[bytes, list[int]] = {}
        for j in range(m):
            if masks[i, j].any():
                groups.setdefault(np.packbits(masks[i, j]).tobytes(), []).append(j)
        for members in groups.values():
            lu, flat, outside = _laplacian_system(masks[i, members[0]])
            d = diff[i, members].reshape(len(members) * ch, h * w)
            rhs = np.zeros((len(flat), len(members) * ch))
            for rows, neighbours in outside:
                np.add.at(rhs, rows, d[:, neighbours].T)
            correction = lu.solve(np.asfortranarray(rhs)).T.reshape(len(members), ch, -1)
            block = out[i, members]  # fancy indexing copies: written back below
            block[..., flat] = src[i, members][..., flat] + correction
            out[i, members] = block
    return torch.from_numpy(out.reshape(bsz, m, ch, h, w)).to(device=source.device, dtype=source.dtype)


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


def fuse(originals: torch.Tensor, original_points: torch.Tensor, candidates: torch.Tensor,
         candidate_points: torch.Tensor, face_shape: bool = False, colour: float = 1.0, poisson: float = 1.0,
         margin: float = 0.055, forehead: float = 0.4, feather: float | None = None,
         eye_margin: float | None = None, overlay: torch.Tensor | None = None, tone_limit: float = 0.0,
         chroma: float = 1.0) -> torch.Tensor:
    """Fuse M candidates into each of B originals.

    ``originals`` (B, 3, H, W) with landmarks (B, 68, 2); ``candidates``
    (B, M, 3, h, w) with landmarks (B, M, 68, 2). Each candidate is aligned to
    its original (similarity on the inner landmarks, then a piecewise-affine
    warp over the shared triangulation); its colour-matched face skin (cheeks,
    forehead, jaw, beard area) replaces the original's through Poisson blending
    feathered by the soft skin mask, while the original's eyes and brows, nose,
    mouth, hair and background stay. With ``face_shape`` the result is then
    warped so that its jaw line follows the candidate's (aligned on the inner
    landmarks), the inner landmarks and the far border staying put: the
    candidate's face shape. Returns (B, M, 3, H, W).

    ``colour``: strength of the colour transfer (:func:`match_colour`);
    ``poisson``: 1 Poisson-blends the skin, 0 pastes the colour-matched skin
    (feathered), in between mixes the two (Poisson's harmonic correction also
    carries the original's shading at the region boundary, e.g. a beard
    shadow round the mouth, into the candidate's skin); ``margin``, ``eye_margin``,
    ``forehead``, ``feather``: the skin region (:func:`.geometry.region_masks`); ``overlay``
    (B, H, W) in [0, 1]: the original's pixels laid over the fusion there (spectacle frames from
    :func:`frame_lines`: an opaque object in front of the face, drawn after the skin is blended so
    that the blend neither sees them nor smears their colour into the candidate's skin);
    ``tone_limit`` > 0: the blended skin's brightness is held within that many robust spreads of its
    mean (:func:`limit_tones`): the candidate's nose-side shadows and smile folds, which the Poisson
    correction from the original's darker feature edges can deepen to black streaks, stay shading;
    ``chroma``: share of the candidate's own colour kept (:func:`mix_chroma`; 1 keeps it, 0 takes the
    original's colour with the candidate's brightness structure).
    """
    bsz, m = candidates.shape[:2]
    _, ch, h, w = originals.shape
    dst = with_border(original_points.float(), w)  # (B, V, 2)
    src = with_border(candidate_points.reshape(bsz * m, 68, 2).float(), candidates.shape[-1])
    tri, lam = barycentric_map(dst, h, w)
    tri = tri.repeat_interleave(m, 0)
    lam = lam.repeat_interleave(m, 0)
    warped, coverage = warp_to(candidates.reshape(bsz * m, *candidates.shape[2:]).float(), src, tri, lam, h, w,
                               with_coverage=True)

    skin = region_masks(original_points.float(), h, w, feather=feather, margin=margin, forehead=forehead,
                        eye_margin=eye_margin)["skin"]
    target = originals.float().unsqueeze(1).expand(-1, m, -1, -1, -1)
    flat_target = target.reshape(bsz * m, ch, h, w)
    warped = match_colour(warped, flat_target, skin.repeat_interleave(m, 0) * coverage, colour)
    if chroma < 1:
        warped = mix_chroma(warped, flat_target, chroma)
    # Where the candidate has no pixels of its own (its crop ends first), the original's pixels stand
    # in: blending the original into itself leaves it as it was instead of a smeared edge.
    coverage = coverage.unsqueeze(1)
    warped = (coverage * warped + (1 - coverage) * flat_target).view(bsz, m, ch, h, w)
    # Each candidate's own region ends where its crop does, so that the Poisson boundary condition
    # joins its skin to the original's there instead of keeping the step between the two as a gradient.
    region = ((skin.repeat_interleave(m, 0) > 0.02) & (coverage[:, 0] > 0.5)).view(bsz, m, h, w)
    # Outside the region Poisson returns the target: pasting does the same, so both keep the features.
    pasted = torch.where(region.unsqueeze(2), warped, target)
    blended = pasted if poisson <= 0 else poisson_blend(warped, target, region)
    if 0 < poisson < 1:
        blended = poisson * blended + (1 - poisson) * pasted
    if tone_limit > 0:
        weight = region.reshape(bsz * m, h, w).float() * skin.repeat_interleave(m, 0)
        blended = limit_tones(blended.reshape(bsz * m, ch, h, w), weight, tone_limit).view_as(blended)
    # Feather the texture hand-over: Poisson already matches the values on the boundary.
    alpha = skin.view(bsz, 1, 1, h, w)
    fused = (alpha * blended + (1 - alpha) * target).clamp(0, 1)
    if overlay is not None:
        keep = overlay.to(fused.dtype).view(bsz, 1, 1, h, w)
        fused = keep * target + (1 - keep) * fused
    if not face_shape:
        return fused
    own, theirs = aligned_candidates(original_points, candidate_points)
    shaped = own.clone()
    shaped[:, :17] = jaw_within_frame(own, theirs[:, :17], h, w)
    # Triangles without a jaw vertex map onto themselves, so the features are not resampled.
    tri, lam = barycentric_map(with_border(shaped, w), h, w)
    return warp_to(fused.reshape(bsz * m, ch, h, w), with_border(own, w), tri, lam, h, w).view(bsz, m, ch, h, w)
