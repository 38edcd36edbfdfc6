"""Blending: how a warped candidate's skin takes the original's place without a visible seam.

The candidate keeps its brightness structure (texture, beard shadow, folds: the global context
PriDSS transfers) while its overall colour and spread follow the original's skin
(:func:`match_colour`, :func:`mix_chroma`), so the kept features do not sit on a skin of another
tone. Poisson blending (:func:`poisson_blend`) then joins the two at the region's edge by solving
for a harmonic correction, and :func:`limit_tones` optionally keeps shadows from turning into streaks.
"""

from __future__ import annotations

import numpy as np
import torch

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


# Right-hand sides solved at once (see poisson_blend).
_SOLVE_CHUNK = 3


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


def _crossing_differences(source: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """For every pixel p of (K, C, H, W) ``source``: the sum over its 4 neighbours q on the other side
    of a ``covered`` (K, H, W) edge of source[p] - source[q], as (K, C, H, W)."""
    out = np.zeros_like(source)
    down = (source[:, :, 1:] - source[:, :, :-1]) * (covered[:, 1:] != covered[:, :-1])[:, None]
    out[:, :, :-1] -= down
    out[:, :, 1:] += down
    right = (source[..., 1:] - source[..., :-1]) * (covered[:, :, 1:] != covered[:, :, :-1])[:, None]
    out[..., :-1] -= right
    out[..., 1:] += right
    return out


def poisson_blend(source: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                  covered: torch.Tensor | None = None) -> torch.Tensor:
    """Seamless cloning: ``source``'s gradients inside ``region``, ``target`` elsewhere.

    ``source``/``target`` are (B, M, 3, H, W): M sources per target image; ``region`` is
    (B, M, H, W) bool, one per source (or (B, H, W), shared by the M sources of a row). Solves for
    the harmonic correction f (Laplace f = 0 in the region, f = target - source on its boundary;
    the image border is free, i.e. Neumann) and returns ``source + f`` inside the region, ``target``
    outside. One sparse LU serves every source with the same region (and its 3 channels). Solved
    on the CPU with SciPy (90x90 systems are small).

    ``covered`` (B, M, H, W) bool, optional: where each source has pixels of its own. The source's
    differences across the edge of ``covered`` are left out of the guidance field, so that the
    solution joins the two sides smoothly instead of keeping the step between them as a gradient.
    A region shared by the M sources of a row, with their own crops given this way, is factorised
    once for all of them (the reason for the option: the LU is most of the fusion's cost).
    """
    bsz, m, ch, h, w = source.shape
    out = target.detach().to("cpu", torch.float64).numpy().copy().reshape(bsz, m, ch, h * w)
    diff = (target - source).detach().to("cpu", torch.float64).numpy().reshape(bsz, m, ch, h * w)
    src = source.detach().to("cpu", torch.float64).numpy().reshape(bsz, m, ch, h * w)
    crossing = None
    if covered is not None:
        crossing = _crossing_differences(src.reshape(bsz * m, ch, h, w), covered.detach().cpu().numpy().reshape(-1, h, w))
        crossing = crossing.reshape(bsz, m, ch, h * w)
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
            if crossing is not None:
                rhs -= crossing[i, members][..., flat].reshape(len(members) * ch, -1).T
            # SuperLU's solve slows down per right-hand side as their number grows (measured: 0.4 ms each
            # for 3, 0.8 ms for 30 on a 5,767-unknown region), so the sources' channels go in threes.
            correction = np.concatenate([lu.solve(np.asfortranarray(rhs[:, k : k + _SOLVE_CHUNK]))
                                         for k in range(0, rhs.shape[1], _SOLVE_CHUNK)], 1)
            correction = correction.T.reshape(len(members), ch, -1)
            block = out[i, members]  # fancy indexing copies: written back below
            block[..., flat] = src[i, members][..., flat] + correction
            out[i, members] = block
    return torch.from_numpy(out.reshape(bsz, m, ch, h, w)).to(device=source.device, dtype=source.dtype)
