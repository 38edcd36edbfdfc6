"""Fusion: one original's identity-bearing features with each of its candidates' global context.

This is the composition of the pixel backend's steps, in the order the paper's fusion implies:
warp each candidate onto its original (:mod:`.warping`), match its skin's colour to the original's
and blend it in under the original's eyes and brows, nose, mouth, hair and background
(:mod:`.blending`, over the masks of :mod:`.geometry`), lay back an original's spectacle frames,
and finally give the result the candidate's face shape (its jaw line).
"""

from __future__ import annotations

import torch

from .blending import limit_tones, match_colour, mix_chroma, poisson_blend
from .geometry import region_masks
from .warping import aligned_candidates, barycentric_map, jaw_within_frame, warp_to, with_border


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
    :func:`.pool_filters.frame_lines`: an opaque object in front of the face, drawn after the skin is
    blended so that the blend neither sees them nor smears their colour into the candidate's skin);
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
    # The candidate's skin goes where the original's skin is and the candidate has pixels of its own.
    shared = skin > 0.02  # (B, H, W)
    covered = (coverage[:, 0] > 0.5).view(bsz, m, h, w)
    region = shared.unsqueeze(1) & covered
    # Outside the region Poisson returns the target: pasting does the same, so both keep the features.
    pasted = torch.where(region.unsqueeze(2), warped, target)
    # The M candidates are blended over the original's skin region, which they share, so one sparse
    # factorisation serves all of them; where a candidate's crop ends first the original's own pixels
    # guide the blend, and across that edge nothing does, so that the Poisson correction joins the
    # candidate's skin to the original's there instead of keeping the step between the two as a gradient.
    blended = pasted if poisson <= 0 else poisson_blend(pasted, target, shared, covered)
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
