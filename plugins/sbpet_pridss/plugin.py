"""PriDSS: fuse an original's identity-bearing features with opposite-gender faces' global context.

For each original, M candidate faces of the opposite gender are drawn from the
pool; each is fused with the original (see :mod:`.fusion`), every fusion is
scored with an internal gender classifier (P(male)) and face recogniser
(cosine similarity SIM to the original), and the fusion with the lowest
PIC = |2 P(male) - 1| - SIM is kept (:mod:`.selection`).
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import PET, Dependency, FaceBatch, FaceSet, Option, PluginError, ProtectResult

from .fusion import GLASSES_THRESHOLD
from .selection import select_lowest_pic

SHAPE_PREDICTOR_ASSET = "dlib-shape-predictor-68"  # declared in __init__.py

try:  # the latent backend's own options (pridss.truncation, ...); the pixel backend works without them
    from .latent.backend import LATENT_OPTIONS
except ImportError:  # pragma: no cover - only when the latent backend is broken or absent
    LATENT_OPTIONS = {}
# Fused images scored at once: bounds memory whatever the batch size and M.
_SCORE_CHUNK = 256


def _encode_strings(items: list[str]) -> torch.Tensor:
    """Strings as a uint8 tensor (state dicts hold tensors only)."""
    return torch.tensor(list("\n".join(items).encode("utf-8")), dtype=torch.uint8)


def _decode_strings(tensor: torch.Tensor) -> list[str]:
    text = bytes(tensor.tolist()).decode("utf-8")
    return text.split("\n") if text else []


class PriDSS(PET):
    name = "pridss"
    version = "10"
    description = ("PriDSS: fuse each face's eyes, brows, nose, mouth, hair and background with the skin of "
                   "M opposite-gender candidates; keep the fusion with the lowest PIC = |2P(male)-1| - SIM")
    options = {
        "backend": Option("pixel", "fusion backend: pixel (landmark warp + Poisson blending, CPU-friendly) "
                          "or latent (StyleGAN2 style mixing)", choices=("pixel", "latent")),
        "m": Option(10, "number of opposite-gender candidates fused and scored per image"),
        "classifier": Option("resnet-gender-probe", "internal gender classifier for P(male) in the PIC"),
        "verifier": Option("faceapi-resnet", "internal face recogniser for SIM in the PIC"),
        "seed": Option(-1, "seed of the candidate draw; -1 uses the run's seed"),
        "face_shape": Option(True, "pixel backend: also take the candidate's face shape: warp the fused face to its jaw line"),
        "colour": Option(1.0, "pixel backend: colour transfer strength, 1 matches the candidate skin's mean and "
                         "spread to the original's, 0 keeps the candidate's own"),
        "poisson": Option(1.0, "pixel backend: 1 Poisson-blends the candidate skin, 0 pastes it with a feathered "
                          "edge, in between mixes the two"),
        # 0.03 (about 3 px at 90 px) hands the moustache and the brow/cheek rims to the candidate: on 2x50
        # LFW3D faces, faceapi-gender privacy AUC 0.851 -> 0.687 for EER 0.020 -> 0.040 (0.055, 0.03);
        # 0.015 reached 0.558 (EER 0.093) but left jagged lip seams. With the glasses filter and the mouth
        # mask over all lip points (version 6), on 2x200 LFW3D faces (--per-class 200, bootstrap 0):
        # 0.03: privacy AUC 0.774, EER 0.033; 0.02 (2 px): 0.679, EER 0.058, no lip seams on the grid
        # (the noise baseline: 0.680, EER 0.130); 0.025 rounds to the same 2 px.
        "feature_margin": Option(0.02, "pixel backend: how far the kept eyes/brows, nose and mouth reach beyond "
                                 "their landmarks, as a fraction of the image width"),
        "eye_margin": Option(-1.0, "pixel backend: feature_margin for the eyes and brows alone; -1 uses "
                             "feature_margin"),
        "forehead": Option(0.4, "pixel backend: height of the fused forehead above the brows, as a fraction of "
                           "the brow-to-nose-tip height"),
        "feather": Option(0.02, "pixel backend: softness of the skin mask's edges (Gaussian sigma as a fraction "
                          "of the image width)"),
        # see fusion.GLASSES_THRESHOLD for how the default was measured
        "glasses": Option(GLASSES_THRESHOLD, "pixel backend: pool faces whose glasses score (fusion.glasses_score) exceeds "
                          "this are not used as candidates, since their frames would leave rim fragments "
                          "round the fused eyes; 0 disables the filter"),
        # On 2x200 LFW3D faces with feature_margin 0.02: off: privacy AUC 0.679, EER 0.058; 0.6 (drops
        # about 7 % of the pool, mostly fringes and caps, which leave hair or cap blobs on the forehead):
        # 0.653, EER 0.063; 0.35 (drops about 10 %, also lower fringes and white caps): 0.663, EER 0.053.
        # Version 7 kept the whole ear-to-ear band for wearers instead: frames whole, but the detector also
        # flags some bare faces, which then kept their upper cheeks (2x200 LFW3D faces: privacy AUC 0.667 ->
        # 0.710). Laying only the thin frame lines over the fusion (version 8), on 2x200 LFW3D faces
        # (--per-class 200 --bootstrap 0): off: privacy AUC 0.658, EER 0.055; 3.45: 0.680, EER 0.053
        # (frames whole on the grid); 3.8: 0.686, EER 0.053, so the cost comes from the wearers' own
        # frames, not from false alarms.
        "keep_glasses": Option(GLASSES_THRESHOLD, "pixel backend: originals whose glasses score exceeds this keep "
                               "their spectacle frames: the thin lines in the band from the brows to the middle of "
                               "the nose (fusion.frame_lines) are laid over the fusion; 0 disables"),
        # On the same 2x200 faces (version 8): off: privacy AUC 0.685, EER 0.055; 0.55: 0.680, EER 0.053,
        # and the torn faces of half-turned candidates are gone from the grid.
        "max_distortion": Option(0.55, "pixel backend: candidates whose warp onto the original stretches the cheeks "
                                 "more than this (fusion.warp_distortion: area-weighted mean |log area ratio| of the "
                                 "jaw triangles) are not selected (half-turned heads, misplaced landmarks); when "
                                 "every candidate of a face exceeds it the least distorted is used; 0 disables"),
        # On the same 2x200 faces (version 8): off: privacy AUC 0.680, EER 0.053; 2.5: 0.718, EER 0.045;
        # 1.5: 0.745, EER 0.033. Shading is a gender cue (beard shadow, folds), so it stays off by default.
        "tone_limit": Option(0.0, "pixel backend: the fused skin's brightness is held within this many robust "
                             "spreads of its mean, smoothly (fusion.limit_tones), so that a candidate's nose-side "
                             "shadows and smile folds stay shading instead of black streaks; 0 disables"),
        # The global context is skin texture and smoothness, beard and face shape: brightness structure.
        # On 2x200 LFW3D faces (version 9, --per-class 200 --bootstrap 0): 1: privacy AUC 0.666, EER 0.055,
        # KID 5.2e-5, and ruddy or colour-cast candidates leave orange, yellow or purple blotches on the grid;
        # 0: 0.694, EER 0.040, KID 5.2e-5, no blotches; 0.5: 0.704, EER 0.043 (selection noise is about 0.02).
        "chroma": Option(0.0, "pixel backend: share of the candidate skin's own colour kept (fusion.mix_chroma); "
                         "0 takes the original's colour and the candidate's brightness structure (texture, beard "
                         "shadow), which avoids colour blotches from ruddy or colour-cast candidates"),
        "fringe": Option(0.35, "pixel backend: pool faces whose forehead is covered (fusion.forehead_cover: share "
                         "of the forehead band far from the cheeks' colour, by fringes or caps) above this are not "
                         "used as candidates; 0 disables the filter"),
        # On 600 LFW3D faces: median 2.1, 98th percentile 3.8; the faces above 3.8 are eyeballed to be
        # tilted or half-turned heads, wide-open mouths or misplaced landmarks (streaks and stretched skin).
        # Off by default: on 2x200 LFW3D faces 3.8 measured privacy AUC 0.689, EER 0.070 against 0.663,
        # EER 0.053 without the filter; set it for visibly cleaner fusions.
        "shape_outlier": Option(0.0, "pixel backend: pool faces whose landmarks lie further than this (mean "
                                "px in the 90 px canonical frame, fusion.shape_residual) from the mean face "
                                "shape are not used as candidates; 0 disables the filter"),
        "pool_max": Option(2000, "pixel backend: at most this many pool faces are kept (a seeded random subset)"),
        **LATENT_OPTIONS,
    }
    models = (SHAPE_PREDICTOR_ASSET,)
    requires = ("dlib", "scipy", "cv2")
    input_size = None  # works at the batch's size; the pool is resized to it
    fits = True
    # fit only picks and landmarks the pool (pixel) or hands over to the latent backend, so variants
    # that differ in m or the fusion settings share one fitted pool.
    fit_options = ("backend", "seed", "pool_max", "classifier", *LATENT_OPTIONS)

    def __init__(self, options: Mapping[str, Any] | None = None, context=None):
        super().__init__(options, context)
        if int(self.opts["m"]) < 1:
            raise PluginError(f"pridss.m must be at least 1, got {self.opts['m']}")
        for key, low, high in (("colour", 0, 1), ("poisson", 0, 1), ("feature_margin", 0, 0.3),
                               ("forehead", 0, 2), ("feather", 0, 0.2), ("glasses", 0, 100),
                               ("fringe", 0, 1), ("shape_outlier", 0, 100), ("keep_glasses", 0, 100),
                               ("max_distortion", 0, 100), ("tone_limit", 0, 100),
                               ("chroma", 0, 1)):
            if not low <= float(self.opts[key]) <= high:
                raise PluginError(f"pridss.{key} must be between {low} and {high}, got {self.opts[key]}")
        if not (float(self.opts["eye_margin"]) == -1 or 0 <= float(self.opts["eye_margin"]) <= 0.3):
            raise PluginError(f"pridss.eye_margin must be -1 (use feature_margin) or between 0 and 0.3, "
                              f"got {self.opts['eye_margin']}")
        self._geometry = None
        self._latent = None
        self._pool: dict[str, torch.Tensor] | None = None
        self._pool_ids: list[str] = []

    @classmethod
    def dependencies(cls, options) -> list[Dependency]:
        """The internal models that choose candidates (the PIC's P(male) and SIM)."""
        return [Dependency("classifier", options["classifier"]), Dependency("verifier", options["verifier"])]

    # ------------------------------------------------------------------ helpers

    @property
    def seed(self) -> int:
        seed = int(self.opts["seed"])
        return seed if seed >= 0 else (self.context.seed if self.context is not None else 0)

    def geometry(self):
        if self._geometry is None:
            from .geometry import FaceGeometry

            if self.context is None:
                raise PluginError("pridss needs a plugin context to find its dlib model")
            self._geometry = FaceGeometry(self.context.model_path(SHAPE_PREDICTOR_ASSET))
        return self._geometry

    def _evaluators(self):
        try:
            classifier = self.context.get_classifier(self.opts["classifier"])
            verifier = self.context.get_verifier(self.opts["verifier"])
        except (KeyError, PluginError) as exc:
            raise PluginError(f"pridss: internal evaluator unavailable ({exc}); set pridss.classifier / "
                              "pridss.verifier to installed plugins") from exc
        return classifier, verifier

    def _latent_backend(self):
        if self._latent is None:
            from .latent.backend import LatentBackend  # lazy: heavy, and written separately

            self._latent = LatentBackend(self.opts, self.context)
        return self._latent

    # ------------------------------------------------------------------ fitting

    def fit(self, train: FaceSet, pool: FaceSet) -> None:
        """Keep a seeded subset of the pool with its landmarks (pixel backend) or hand over (latent)."""
        if self.opts["backend"] == "latent":
            backend = self._latent_backend()
            if hasattr(backend, "fit"):
                backend.fit(train, pool)
            return
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
                classifier, _ = self._evaluators()
                p = classifier.predict_male(x[unknown].to(self.device)).cpu()
                g = g.clone()
                g[unknown] = (p > 0.5).long()
            images.append((x[found] * 255).round().to(torch.uint8))
            points.append(marks.points[found])
            genders.append(g[found])
            ids += [i for i, f in zip(batch_ids, found.tolist()) if f]
        if not ids:
            raise PluginError("pridss found no face landmarks in any pool image; check the pool images")
        self._pool = {"images": torch.cat(images), "points": torch.cat(points), "genders": torch.cat(genders)}
        self._pool.update(self._pool_scores())
        self._pool_ids = ids
        if self.context is not None:
            self.context.log(f"pridss: {len(ids)} pool faces with landmarks "
                             f"({int((self._pool['genders'] == 1).sum())} male, {int((self._pool['genders'] == 0).sum())} female); "
                             f"{len(no_face)} pool faces without landmarks are not used as candidates"
                             + (f": {', '.join(no_face[:5])}{', ...' if len(no_face) > 5 else ''}" if no_face else "")
                             + f"; of these, {int(self._excluded('glasses').sum())} look like they wear glasses "
                             f"(score > pridss.glasses = {self.opts['glasses']}) and {int(self._excluded('fringe').sum())} "
                             f"have a covered forehead (share > pridss.fringe = {self.opts['fringe']}) and "
                             f"{int(self._excluded('shape').sum())} an unusual shape (> pridss.shape_outlier = "
                             f"{self.opts['shape_outlier']}): "
                             f"{int(self._usable().sum())} remain candidates")

    def _pool_scores(self) -> dict[str, torch.Tensor]:
        """Glasses score and forehead cover of every pool face (chunked: the warps hold a few maps per face)."""
        from .fusion import forehead_cover, glasses_score, shape_residual

        imgs, pts = self._pool["images"], self._pool["points"]
        chunks = [(imgs[i : i + 256].float() / 255.0, pts[i : i + 256]) for i in range(0, len(imgs), 256)]
        if not chunks:
            return {"glasses": torch.zeros(0), "fringe": torch.zeros(0), "shape": torch.zeros(0)}
        return {"glasses": torch.cat([glasses_score(x, p) for x, p in chunks]),
                "fringe": torch.cat([forehead_cover(x, p) for x, p in chunks]),
                "shape": shape_residual(pts)}

    def _excluded(self, key: str) -> torch.Tensor:
        """Pool faces excluded by the ``glasses``, ``fringe`` or ``shape`` filter under this instance's options."""
        threshold = float(self.opts["shape_outlier" if key == "shape" else key])
        return self._pool[key] > threshold if threshold > 0 else torch.zeros(len(self._pool[key]), dtype=torch.bool)

    def _usable(self) -> torch.Tensor:
        return ~(self._excluded("glasses") | self._excluded("fringe") | self._excluded("shape"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.opts["backend"] == "latent":
            backend = self._latent_backend()
            return dict(backend.state_dict()) if hasattr(backend, "state_dict") else {}
        if self._pool is None:
            return {}
        return {"pool_images": self._pool["images"], "pool_points": self._pool["points"],
                "pool_genders": self._pool["genders"], "pool_glasses": self._pool["glasses"],
                "pool_fringe": self._pool["fringe"], "pool_shape": self._pool["shape"],
                "pool_ids": _encode_strings(self._pool_ids)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if self.opts["backend"] == "latent":
            backend = self._latent_backend()
            if hasattr(backend, "load_state_dict"):
                backend.load_state_dict(state)
            return
        self._pool = {"images": state["pool_images"], "points": state["pool_points"].float(),
                      "genders": state["pool_genders"].long()}
        # states saved before the pool filters lack the scores: they are cheap to recompute
        if all(f"pool_{k}" in state for k in ("glasses", "fringe", "shape")):
            self._pool.update({k: state[f"pool_{k}"].float() for k in ("glasses", "fringe", "shape")})
        else:
            self._pool.update(self._pool_scores())
        self._pool_ids = _decode_strings(state["pool_ids"])

    # ------------------------------------------------------------------ protecting

    def candidates_for(self, ids: list[str], genders: torch.Tensor) -> np.ndarray:
        """Pool indices (B, M') of opposite-gender candidates, drawn from a seed per image id.

        Seeding by id makes an image's candidates independent of its batch;
        the draws for a smaller M are a prefix of those for a larger one.
        """
        pool_genders = self._pool["genders"].numpy()
        usable = self._usable().numpy()
        m = int(self.opts["m"])
        by_gender = {g: np.flatnonzero((pool_genders == g) & usable) for g in (0, 1)}
        short = min(len(v) for v in by_gender.values())
        if short == 0:
            missing = "female" if len(by_gender[0]) == 0 else "male"
            raise PluginError(f"pridss: the candidate pool has no {missing} faces with landmarks and without "
                              "glasses, a covered forehead or an unusual shape; use a larger pool or a higher pridss.glasses / "
                              "pridss.fringe / pridss.shape_outlier "
                              "(0 disables a filter)")
        m = min(m, short)
        rows = []
        for image_id, gender in zip(ids, genders.tolist()):
            rng = np.random.default_rng([self.seed, zlib.crc32(image_id.encode("utf-8"))])
            # A prefix of a seeded permutation: the M=5 candidates include the M=2 ones, so an
            # ablation over M adds candidates instead of redrawing them.
            rows.append(by_gender[1 - gender][rng.permutation(len(by_gender[1 - gender]))[:m]])
        return np.stack(rows) if rows else np.zeros((0, m), np.int64)

    def fused_candidates(self, batch: FaceBatch) -> dict[str, Any]:
        """Fusions of every face with its M candidates, before selection (also used by tests).

        Returns ``fused`` (B', M, 3, H, W) for the B' faces with landmarks,
        ``rows`` (their positions in the batch), ``candidates`` (B', M) pool
        indices, ``found`` (B,) and the original genders with their source.
        """
        from .fusion import fuse, warp_distortion

        if self._pool is None:
            raise PluginError("pridss.protect called before fit (or load_state_dict)")
        x = batch.images
        b, _, h, w = x.shape
        marks = self.geometry().landmarks(x.cpu())
        genders = batch.genders.cpu().clone()
        known = genders >= 0
        if not bool(known.all()):
            classifier, _ = self._evaluators()
            p = classifier.predict_male(x[(~known).to(x.device)]).cpu()
            genders[~known] = (p > 0.5).long()
        rows = torch.nonzero(marks.found).flatten()
        cand = self.candidates_for([batch.ids[i] for i in rows.tolist()], genders[rows])
        m = cand.shape[1] if len(rows) else int(self.opts["m"])
        pool_x = self._pool["images"][torch.from_numpy(cand.reshape(-1))].float() / 255.0 if len(rows) else x.new_zeros(0, 3, h, w)
        pool_p = self._pool["points"][torch.from_numpy(cand.reshape(-1))] if len(rows) else x.new_zeros(0, 68, 2)
        if len(rows) and pool_x.shape[-1] != w:  # pool stored at another size: follow the batch
            pool_p = (pool_p + 0.5) * (w / pool_x.shape[-1]) - 0.5
            pool_x = F.interpolate(pool_x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        device = x.device
        frames = None
        if len(rows) and float(self.opts["keep_glasses"]) > 0:
            frames = self.frames(x[rows.to(device)].float(), marks.points[rows].to(device))
        fused = fuse(x[rows.to(device)].float(), marks.points[rows].to(device),
                     pool_x.to(device).view(len(rows), m, 3, h, w), pool_p.to(device).view(len(rows), m, 68, 2),
                     face_shape=bool(self.opts["face_shape"]), colour=float(self.opts["colour"]),
                     poisson=float(self.opts["poisson"]), margin=float(self.opts["feature_margin"]),
                     forehead=float(self.opts["forehead"]), feather=max(0.5, float(self.opts["feather"]) * w),
                     eye_margin=None if float(self.opts["eye_margin"]) < 0 else float(self.opts["eye_margin"]),
                     overlay=frames, tone_limit=float(self.opts["tone_limit"]), chroma=float(self.opts["chroma"])) \
            if len(rows) else x.new_zeros(0, m, 3, h, w)
        distortion = warp_distortion(marks.points[rows].to(device), pool_p.to(device).view(len(rows), m, 68, 2)).cpu() \
            if len(rows) else torch.zeros(0, m)
        return {"fused": fused, "rows": rows, "candidates": cand, "found": marks.found, "genders": genders,
                "gender_from_label": known, "distortion": distortion}

    def frames(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, H, W) overlay of the spectacle frames of the faces the glasses score flags (0 elsewhere)."""
        from .fusion import frame_lines, glasses_score
        from .geometry import soften

        wearers = glasses_score(images, points) > float(self.opts["keep_glasses"])
        lines = frame_lines(images, points) * wearers.to(images.dtype).view(-1, 1, 1)
        # A slight feather hides the lines' stair-steps; the max keeps their cores opaque.
        return torch.maximum(lines, soften(lines, 0, 0.7 * images.shape[-1] / 90))

    @staticmethod
    def shared_embedding_classifier(classifier, verifier):
        """``classifier.predict_male_from_embedding`` when the classifier embeds with this very
        verifier instance (duck-typed, no import of the classifier's plugin), else None."""
        from_embedding = getattr(classifier, "predict_male_from_embedding", None)
        if callable(from_embedding) and getattr(classifier, "embedder", None) is verifier:
            return from_embedding
        return None

    def score(self, originals: torch.Tensor, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P(male) and SIM to the original for (B, M) fusions, in chunks."""
        classifier, verifier = self._evaluators()
        b, m = fused.shape[:2]
        flat = fused.reshape(b * m, *fused.shape[2:])
        chunks = [flat[i : i + _SCORE_CHUNK] for i in range(0, len(flat), _SCORE_CHUNK)]
        from_embedding = self.shared_embedding_classifier(classifier, verifier)
        p_parts, e_parts = [], []
        for c in chunks:
            e_c = verifier.embed(c)
            # A classifier on the verifier's own embeddings (resnet-gender-probe on faceapi-resnet)
            # reuses them: each fusion then goes through the network once instead of twice.
            p_c = from_embedding(e_c) if from_embedding is not None else classifier.predict_male(c)
            p_parts.append(p_c.float().cpu())
            e_parts.append(e_c.float().cpu())
        p, e = torch.cat(p_parts), torch.cat(e_parts)
        e0 = verifier.embed(originals).float().cpu()
        return p.view(b, m), (e.view(b, m, -1) * e0.unsqueeze(1)).sum(-1)

    def protect(self, batch: FaceBatch) -> ProtectResult:
        if self.opts["backend"] == "latent":
            return self._latent_backend().protect(batch)
        out = batch.images.clone()
        parts = self.fused_candidates(batch)
        rows, fused = parts["rows"], parts["fused"]
        if len(rows):
            p_male, sim = self.score(batch.images[rows.to(batch.images.device)], fused)
            distortion = parts["distortion"]
            limit = float(self.opts["max_distortion"])
            # Candidates within the limit compete; a face with none left takes its least distorted one.
            eligible = None if limit <= 0 else distortion <= torch.clamp(distortion.amin(1, keepdim=True), min=limit)
            chosen, pic = select_lowest_pic(p_male, sim, eligible)
            out[rows.to(out.device)] = fused[torch.arange(len(rows), device=fused.device), chosen.to(fused.device)].to(out.dtype)
        diagnostics: list[dict[str, Any]] = []
        where = {int(r): k for k, r in enumerate(rows.tolist())}
        for i in range(len(batch)):
            base = {"backend": "pixel", "original_gender": int(parts["genders"][i]),
                    "gender_source": "label" if bool(parts["gender_from_label"][i]) else "classifier"}
            if i not in where:
                diagnostics.append({**base, "face_found": False, "passed_through": True,
                                    "reason": "dlib found no face; the image is returned unchanged"})
                continue
            k = where[i]
            ids = [self._pool_ids[j] for j in parts["candidates"][k].tolist()]
            c = int(chosen[k])
            diagnostics.append({**base, "face_found": True, "candidate_ids": ids,
                                "p_male": [round(float(v), 6) for v in p_male[k]],
                                "similarity": [round(float(v), 6) for v in sim[k]],
                                "pic": [round(float(v), 6) for v in pic[k]],
                                "distortion": [round(float(v), 4) for v in distortion[k]],
                                "chosen": c, "chosen_id": ids[c]})
        return ProtectResult(out.clamp(0, 1), diagnostics)
