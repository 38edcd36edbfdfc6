"""PriDSS's pixel backend: candidates are real faces from the pool, fused by landmark warps and blending.

Fitting keeps a seeded subset of the pool with its dlib landmarks and its pool-filter scores
(:mod:`.pool_filters`); each original then draws M opposite-gender candidates among the usable pool
faces and is fused with each (:func:`.fusion.fuse`). Faces without landmarks cannot be fused: they
are passed through, with the reason in their diagnostics.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import FaceBatch, FaceSet, PluginContext, PluginError

from ..backends import Draws, Fusions
from .fusion import fuse
from .geometry import FaceGeometry, soften
from .pool_filters import forehead_cover, frame_lines, glasses_score, shape_residual
from .warping import warp_distortion

SHAPE_PREDICTOR_ASSET = "dlib-shape-predictor-68"  # declared in the package's __init__.py
NO_FACE_REASON = "dlib found no face; the image is returned unchanged"
# torch threads of the fusion and the pool filters (see PixelBackend.fuse).
FUSION_THREADS = 1
# Pool faces scored at once at fit time: the canonical warps hold a few maps per face.
_FILTER_CHUNK = 256


@contextmanager
def fusion_threads():
    """Run the enclosed torch work at :data:`FUSION_THREADS` threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(FUSION_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_strings(items: list[str]) -> torch.Tensor:
    """Strings as a uint8 tensor (state dicts hold tensors only)."""
    return torch.tensor(list("\n".join(items).encode("utf-8")), dtype=torch.uint8)


def _decode_strings(tensor: torch.Tensor) -> list[str]:
    text = bytes(tensor.tolist()).decode("utf-8")
    return text.split("\n") if text else []


class PixelBackend:
    """Fusion of real pool faces in pixel space (the :class:`..backends.FusionBackend` of ``backend=pixel``)."""

    name = "pixel"

    def __init__(self, opts: Mapping[str, Any], context: PluginContext, seed: int,
                 evaluators: Callable[[], tuple[Any, Any]]):
        self.opts, self.context, self.seed, self.evaluators = opts, context, seed, evaluators
        self._geometry = None
        self.pool: dict[str, torch.Tensor] | None = None
        self.pool_ids: list[str] = []

    def geometry(self):
        if self._geometry is None:
            self._geometry = FaceGeometry(self.context.model_path(SHAPE_PREDICTOR_ASSET))
        return self._geometry

    # ------------------------------------------------------------------ the pool

    def fit(self, train: FaceSet | None, pool: FaceSet) -> None:
        """Keep a seeded subset of the pool with its landmarks and pool-filter scores."""
        if len(pool) == 0:
            raise PluginError("pridss needs a candidate pool of faces, but the pool split is empty; "
                              "use more identities or a lower --per-class")
        rng = np.random.default_rng(self.seed)
        keep = np.zeros(len(pool), bool)
        keep[rng.permutation(len(pool))[: int(self.opts["pool_max"])]] = True
        images, points, genders, ids = [], [], [], []
        start, no_face = 0, []
        for batch in pool.batches(64):
            sel = torch.from_numpy(keep[start : start + len(batch)])
            start += len(batch)
            if not sel.any():
                continue
            x = batch.images.cpu()[sel]
            marks = self.geometry().landmarks(x)
            found = marks.found
            batch_ids = np.array(batch.ids)[sel.numpy()].tolist()
            no_face += [i for i, f in zip(batch_ids, found.tolist()) if not f]
            g = batch.genders.cpu()[sel]
            unknown = g < 0
            if unknown.any():  # label unlabelled pool faces with the internal classifier
                classifier, _ = self.evaluators()
                p = classifier.predict_male(x[unknown].to(self.context.device)).cpu()
                g = g.clone()
                g[unknown] = (p > 0.5).long()
            images.append((x[found] * 255).round().to(torch.uint8))
            points.append(marks.points[found])
            genders.append(g[found])
            ids += [i for i, f in zip(batch_ids, found.tolist()) if f]
        if not ids:
            raise PluginError("pridss found no face landmarks in any pool image; check the pool images")
        self.pool = {"images": torch.cat(images), "points": torch.cat(points), "genders": torch.cat(genders)}
        self.pool.update(self._pool_scores())
        self.pool_ids = ids
        g = self.pool["genders"]
        self.context.log(f"pridss: {len(ids)} pool faces with landmarks ({int((g == 1).sum())} male, "
                         f"{int((g == 0).sum())} female); {len(no_face)} pool faces without landmarks are not used "
                         "as candidates"
                         + (f": {', '.join(no_face[:5])}{', ...' if len(no_face) > 5 else ''}" if no_face else "")
                         + f"; of these, {int(self._excluded('glasses').sum())} look like they wear glasses "
                         f"(score > pridss.glasses = {self.opts['glasses']}) and {int(self._excluded('fringe').sum())} "
                         f"have a covered forehead (share > pridss.fringe = {self.opts['fringe']}) and "
                         f"{int(self._excluded('shape').sum())} an unusual shape (> pridss.shape_outlier = "
                         f"{self.opts['shape_outlier']}): {int(self._usable().sum())} remain candidates")

    def _pool_scores(self) -> dict[str, torch.Tensor]:
        """Glasses score, forehead cover and shape residual of every pool face (at :data:`FUSION_THREADS`
        threads too: a score near a filter's threshold must not depend on the caller's thread count)."""
        with fusion_threads():
            return self._pool_scores_now()

    def _pool_scores_now(self) -> dict[str, torch.Tensor]:
        imgs, pts = self.pool["images"], self.pool["points"]
        chunks = [(imgs[i : i + _FILTER_CHUNK].float() / 255.0, pts[i : i + _FILTER_CHUNK])
                  for i in range(0, len(imgs), _FILTER_CHUNK)]
        if not chunks:
            return {"glasses": torch.zeros(0), "fringe": torch.zeros(0), "shape": torch.zeros(0)}
        return {"glasses": torch.cat([glasses_score(x, p) for x, p in chunks]),
                "fringe": torch.cat([forehead_cover(x, p) for x, p in chunks]),
                "shape": shape_residual(pts)}

    def _excluded(self, key: str) -> torch.Tensor:
        """Pool faces excluded by the ``glasses``, ``fringe`` or ``shape`` filter under these options."""
        threshold = float(self.opts["shape_outlier" if key == "shape" else key])
        return self.pool[key] > threshold if threshold > 0 else torch.zeros(len(self.pool[key]), dtype=torch.bool)

    def _usable(self) -> torch.Tensor:
        return ~(self._excluded("glasses") | self._excluded("fringe") | self._excluded("shape"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.pool is None:
            return {}
        return {"pool_images": self.pool["images"], "pool_points": self.pool["points"],
                "pool_genders": self.pool["genders"], "pool_glasses": self.pool["glasses"],
                "pool_fringe": self.pool["fringe"], "pool_shape": self.pool["shape"],
                "pool_ids": _encode_strings(self.pool_ids)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.pool = {"images": state["pool_images"], "points": state["pool_points"].float(),
                     "genders": state["pool_genders"].long()}
        # states saved before the pool filters lack the scores: they are cheap to recompute
        if all(f"pool_{k}" in state for k in ("glasses", "fringe", "shape")):
            self.pool.update({k: state[f"pool_{k}"].float() for k in ("glasses", "fringe", "shape")})
        else:
            self.pool.update(self._pool_scores())
        self.pool_ids = _decode_strings(state["pool_ids"])

    # ------------------------------------------------------------------ candidates and fusion

    def candidates_for(self, draws: Draws) -> np.ndarray:
        """Pool indices (B, M') of opposite-gender usable candidates, one seeded draw per image.

        The draws for a smaller M are a prefix of those for a larger one.
        """
        pool_genders = self.pool["genders"].numpy()
        usable = self._usable().numpy()
        by_gender = {g: np.flatnonzero((pool_genders == g) & usable) for g in (0, 1)}
        short = min(len(v) for v in by_gender.values())
        if short == 0:
            missing = "female" if len(by_gender[0]) == 0 else "male"
            raise PluginError(f"pridss: the candidate pool has no {missing} faces with landmarks and without "
                              "glasses, a covered forehead or an unusual shape; use a larger pool or a higher "
                              "pridss.glasses / pridss.fringe / pridss.shape_outlier (0 disables a filter)")
        m = min(draws.m, short)
        rows = []
        for rng, gender in zip(draws.rngs, draws.genders.tolist()):
            # A prefix of a seeded permutation: the M=5 candidates include the M=2 ones, so an
            # ablation over M adds candidates instead of redrawing them.
            rows.append(by_gender[1 - gender][rng.permutation(len(by_gender[1 - gender]))[:m]])
        return np.stack(rows) if rows else np.zeros((0, m), np.int64)

    def fuse(self, batch: FaceBatch, draws: Draws) -> Fusions:
        """Fusions (B', M, 3, H, W) of the B' faces with landmarks with their M candidates each.

        Runs at :data:`FUSION_THREADS` torch threads whatever the caller's count: float reductions are
        split per thread, so the fusions (and the candidates PIC picks) would otherwise depend on it;
        and on a shared 2-core machine the small 90 px tensors lose more to thread hand-offs than they
        gain (benchmarks/pridss_speed.py, load average 17-19: 18.9 ms/candidate at 1 thread, 70.3 at 2).
        """
        with fusion_threads():
            return self._fuse(batch, draws)

    def _fuse(self, batch: FaceBatch, draws: Draws) -> Fusions:
        if self.pool is None:
            raise PluginError("pridss.protect called before fit (or load_state_dict)")
        x = batch.images
        b, _, h, w = x.shape
        marks = self.geometry().landmarks(x.cpu())
        rows = torch.nonzero(marks.found).flatten()
        cand = self.candidates_for(draws.take(rows.tolist()))
        m = cand.shape[1] if len(rows) else draws.m
        passed = {i: {"face_found": False, "reason": NO_FACE_REASON}
                  for i in torch.nonzero(~marks.found).flatten().tolist()}
        if not len(rows):
            return Fusions(x.new_zeros(0, m, 3, h, w), rows, passed, [], [], {"distortion": torch.zeros(0, m)},
                           {"distortion": 4})
        pool_x = self.pool["images"][torch.from_numpy(cand.reshape(-1))].float() / 255.0
        pool_p = self.pool["points"][torch.from_numpy(cand.reshape(-1))]
        if pool_x.shape[-1] != w:  # pool stored at another size: follow the batch
            pool_p = (pool_p + 0.5) * (w / pool_x.shape[-1]) - 0.5
            pool_x = F.interpolate(pool_x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        device = x.device
        originals, points = x[rows.to(device)].float(), marks.points[rows].to(device)
        cand_x, cand_p = pool_x.to(device).view(len(rows), m, 3, h, w), pool_p.to(device).view(len(rows), m, 68, 2)
        frames = self.frames(originals, points) if float(self.opts["keep_glasses"]) > 0 else None
        fused = fuse(originals, points, cand_x, cand_p,
                     face_shape=bool(self.opts["face_shape"]), colour=float(self.opts["colour"]),
                     poisson=float(self.opts["poisson"]), margin=float(self.opts["feature_margin"]),
                     forehead=float(self.opts["forehead"]), feather=max(0.5, float(self.opts["feather"]) * w),
                     eye_margin=None if float(self.opts["eye_margin"]) < 0 else float(self.opts["eye_margin"]),
                     overlay=frames, tone_limit=float(self.opts["tone_limit"]), chroma=float(self.opts["chroma"]))
        distortion = warp_distortion(points, cand_p).cpu()
        limit = float(self.opts["max_distortion"])
        # Candidates within the limit compete; a face with none left takes its least distorted one.
        eligible = None if limit <= 0 else distortion <= torch.clamp(distortion.amin(1, keepdim=True), min=limit)
        return Fusions(fused, rows, passed, candidate_ids=[[self.pool_ids[j] for j in r] for r in cand.tolist()],
                       per_image=[{"face_found": True} for _ in range(len(rows))],
                       per_candidate={"distortion": distortion}, digits={"distortion": 4}, eligible=eligible)

    def frames(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, H, W) overlay of the spectacle frames of the faces the glasses score flags (0 elsewhere)."""
        wearers = glasses_score(images, points) > float(self.opts["keep_glasses"])
        lines = frame_lines(images, points) * wearers.to(images.dtype).view(-1, 1, 1)
        # A slight feather hides the lines' stair-steps; the max keeps their cores opaque.
        return torch.maximum(lines, soften(lines, 0, 0.7 * images.shape[-1] / 90))
