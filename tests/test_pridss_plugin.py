"""PriDSS pixel backend: geometry on LFW3D, fusion, PIC selection, batching, pass-through."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
import torch

from sbpet_bench.api import GenderClassifier, Verifier
from sbpet_bench.testing import load_lfw3d_sample, make_context

from sbpet_pridss import SHAPE_PREDICTOR, sbpet_register_assets
from sbpet_pridss.pixel.backend import PixelBackend
from sbpet_pridss.pixel.fusion import fuse
from sbpet_pridss.pixel.geometry import (BROW_EYE_LEFT, BROW_EYE_RIGHT, MOUTH, NOSE, FaceGeometry,
                                         installed_shape_predictor, polygon_mask, region_masks)
from sbpet_pridss.plugin import PriDSS


class MeanGreyVerifier(Verifier):
    """Stand-in recogniser: the mean-centred 16x16 grey image, L2-normalised."""

    name = "test-grey"

    def embed(self, images):
        g = torch.nn.functional.adaptive_avg_pool2d(images.mean(1, keepdim=True), 16).flatten(1)
        return torch.nn.functional.normalize(g - g.mean(1, keepdim=True), dim=1)


class SkinToneClassifier(GenderClassifier):
    """Stand-in gender classifier: darker, redder lower face -> higher P(male)."""

    name = "test-tone"

    def predict_male(self, images):
        lower = images[:, :, images.shape[-2] // 2 :]
        return torch.sigmoid(12 * (lower[:, 0].mean((1, 2)) - lower[:, 2].mean((1, 2)) - 0.15) + 6 * (0.5 - lower.mean((1, 2, 3))))


def drawn_candidates(plugin: PriDSS, faces):
    """Pool indices (B, M) of the pixel backend's candidates for each face of ``faces``."""
    return plugin.backend.candidates_for(plugin.draws(faces.ids, faces.genders))


@pytest.fixture(scope="module")
def faces(lfw3d):
    return load_lfw3d_sample(per_class=6, seed=11)


@pytest.fixture(scope="module")
def geometry():
    return FaceGeometry(installed_shape_predictor())


@pytest.fixture(scope="module")
def pridss(lfw3d, tmp_path_factory):
    work = tmp_path_factory.mktemp("pridss")
    bare = make_context(work)  # the stand-ins' own context
    ctx = make_context(work, seed=3, model_path=lambda name: str(installed_shape_predictor()),
                       plugins={"test-tone": SkinToneClassifier({}, bare), "test-grey": MeanGreyVerifier({}, bare)})
    plugin = PriDSS({"m": 3, "classifier": "test-tone", "verifier": "test-grey"}, ctx)
    plugin.fit(None, load_lfw3d_sample(per_class=8, seed=11, skip=20))
    return plugin


def test_asset_matches_installed_model():
    asset = SHAPE_PREDICTOR
    assert asset.name == PriDSS.models[0] and asset in sbpet_register_assets()
    path = installed_shape_predictor()
    assert os.path.getsize(path) == asset.size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    member = asset.sources[0].split("#sha256=")[0]  # the source pins its archive's hash after the member's path
    assert digest == asset.sha256 and asset.default and member.endswith(path.name)


def test_landmarks_and_masks_on_lfw3d(faces, geometry):
    marks = geometry.landmarks(faces.images)
    assert int(marks.found.sum()) >= len(faces) - 1
    pts = marks.points[marks.found]
    # eyes above the nose tip above the mouth, inside the crop
    assert bool((pts[:, 36:48, 1].mean(1) < pts[:, 33, 1]).all() and (pts[:, 33, 1] < pts[:, 48:60, 1].mean(1)).all())
    assert bool(((pts[:, 17:] > -2) & (pts[:, 17:] < 92)).all())
    masks = region_masks(pts, 90, 90)
    for name, m in masks.items():
        assert m.shape == (len(pts), 90, 90) and float(m.min()) >= 0 and float(m.max()) <= 1, name
    core = {k: masks[k] > 0.5 for k in ("eyes", "nose", "mouth")}
    area = {k: v.float().sum((1, 2)) for k, v in core.items()}
    assert bool((area["eyes"] > 100).all() and (area["mouth"] > 30).all())
    assert float((core["eyes"] & core["mouth"]).float().sum()) == 0
    # grown nose and mouth may touch at the philtrum, but only there
    assert bool(((core["nose"] & core["mouth"]).float().sum((1, 2)) < 0.3 * area["mouth"]).all())
    # skin and features barely overlap; face + hair/background partition the image
    features = torch.maximum(torch.maximum(masks["eyes"], masks["nose"]), masks["mouth"])
    assert float(((masks["skin"] > 0.3) & (features > 0.3)).float().mean()) < 0.1
    assert torch.allclose(masks["face"] + masks["hair_background"], torch.ones(1))
    assert float((masks["skin"] > 0.5).float().mean()) > 0.25


def test_no_face_in_flat_or_noise(geometry):
    images = torch.cat([torch.full((1, 3, 90, 90), 0.5), torch.rand(2, 3, 90, 90, generator=torch.Generator().manual_seed(0))])
    assert not bool(geometry.landmarks(images).found.any())


def test_polygon_mask_fills_square():
    square = torch.tensor([[[2.0, 2.0], [7.0, 2.0], [7.0, 7.0], [2.0, 7.0]]])
    m = polygon_mask(square, 10, 10)
    # pixel centres on the edges count as inside (OpenCV's fill rule)
    assert int(m.sum()) == 36 and m[0, 3, 3] == 1 and m[0, 7, 7] == 1 and m[0, 8, 8] == 0 and m[0, 1, 4] == 0


def test_fusion_keeps_features_and_changes_skin(faces, geometry):
    marks = geometry.landmarks(faces.images)
    idx = torch.nonzero(marks.found).flatten()
    orig, cand = idx[:3], idx[-3:]  # males first, females last in the sample
    args = (faces.images[orig], marks.points[orig], faces.images[cand].unsqueeze(1), marks.points[cand].unsqueeze(1))
    masks = region_masks(marks.points[orig], 90, 90)
    skin = masks["skin"] > 0.9
    diff = (fuse(*args)[:, 0] - faces.images[orig]).abs().mean(1)  # (B, H, W)
    for name in ("eyes", "mouth", "nose", "hair_background"):
        keep = masks[name] > 0.999
        assert float(diff[keep].max()) < 1e-4, name
    assert float(diff[skin].mean()) > 0.02
    # with the candidate's face shape, the inside of the features' own polygons stays untouched
    shaped = (fuse(*args, face_shape=True)[:, 0] - faces.images[orig]).abs().mean(1)
    for idx in (BROW_EYE_LEFT, BROW_EYE_RIGHT, NOSE, MOUTH):
        poly = polygon_mask(marks.points[orig][:, list(idx)], 90, 90).unsqueeze(1)
        core = -torch.nn.functional.max_pool2d(-poly, 3, 1, 1).squeeze(1) > 0  # interior: one pixel in from the edge
        assert float(shaped[core].max()) < 1e-4, idx
    assert float(shaped[skin].mean()) > 0.02
    assert not torch.allclose(shaped, diff, atol=1e-3)  # the jaw line moved


def test_selection_picks_lowest_pic(pridss, faces):
    batch = faces.all()
    parts = pridss.fused_candidates(batch)
    fused, rows = parts["fused"], parts["rows"]
    tone, grey = SkinToneClassifier({}, pridss.context), MeanGreyVerifier({}, pridss.context)
    p = tone.predict_male(fused.flatten(0, 1)).view(fused.shape[:2])
    e = grey.embed(fused.flatten(0, 1)).view(*fused.shape[:2], -1)
    sim = (e * grey.embed(batch.images[rows]).unsqueeze(1)).sum(-1)
    expected = ((2 * p - 1).abs() - sim).argmin(1)
    result = pridss.protect(batch)
    assert torch.allclose(result.images[rows], fused[torch.arange(len(rows)), expected], atol=1e-6)
    for k, r in enumerate(rows.tolist()):
        diag = result.diagnostics[r]
        assert diag["chosen"] == int(expected[k]) and len(diag["candidate_ids"]) == 3
        assert diag["pic"][diag["chosen"]] == min(diag["pic"])
        # candidates are of the opposite gender, from the pool
        assert all(cid not in batch.ids for cid in diag["candidate_ids"])
    genders = dict(zip(pridss.backend.pool_ids, pridss.backend.pool["genders"].tolist()))
    assert all(genders[c] != int(batch.genders[r]) for r in rows.tolist() for c in result.diagnostics[r]["candidate_ids"])


def test_batched_equals_unbatched_and_no_face_passes_through(pridss, faces):
    grey = torch.full((1, 3, 90, 90), 0.4)
    images = torch.cat([faces.images[:2], grey, faces.images[-2:]])
    from sbpet_bench.api import FaceBatch

    ids = faces.ids[:2] + ["flat"] + faces.ids[-2:]
    genders = torch.cat([faces.genders[:2], torch.tensor([-1]), faces.genders[-2:]])
    logged: list[str] = []
    counting = PriDSS(pridss.opts, dataclasses.replace(pridss.context, log=logged.append))
    counting.load_state_dict(pridss.state_dict())
    whole = counting.protect(FaceBatch(images, genders, ["x"] * 5, ids))
    assert torch.equal(whole.images[2], images[2])
    assert whole.diagnostics[2]["face_found"] is False and whole.diagnostics[2]["passed_through"] is True
    assert "no face" in whole.diagnostics[2]["reason"] and "candidate_ids" not in whole.diagnostics[2]
    assert whole.diagnostics[2]["gender_source"] == "classifier"
    # counted, never silent: every diagnostic says whether its image passed through, and the log counts them
    assert [d["passed_through"] for d in whole.diagnostics] == [False, False, True, False, False]
    counting.protect(FaceBatch(images[2:3], genders[2:3], ["x"], ids[2:3]))
    assert counting.passed_through == 2 and len(logged) == 2
    assert "1 of 5 images" in logged[0] and "no face" in logged[0] and logged[1].endswith("2 so far")
    singles = [pridss.protect(FaceBatch(images[i : i + 1], genders[i : i + 1], ["x"], ids[i : i + 1])) for i in range(5)]
    assert torch.allclose(whole.images, torch.cat([s.images for s in singles]), atol=1e-5)
    assert [d.get("candidate_ids") for d in whole.diagnostics] == [s.diagnostics[0].get("candidate_ids") for s in singles]
    assert not torch.allclose(whole.images[0], images[0], atol=0.01)


def test_fusions_do_not_depend_on_the_callers_thread_count(pridss, faces):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pridss.fused_candidates(faces.all())["fused"]
        torch.set_num_threads(2)
        two = pridss.fused_candidates(faces.all())["fused"]
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_state_dict_round_trip(pridss, faces, tmp_path):
    state = pridss.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    clone = PriDSS(pridss.opts, pridss.context)
    clone.load_state_dict(state)
    batch = faces.all()
    assert torch.equal(clone.protect(batch).images, pridss.protect(batch).images)


def test_candidates_nested_across_m(pridss, faces):
    small = PriDSS({**pridss.opts, "m": 2}, pridss.context)
    small.load_state_dict(pridss.state_dict())
    big = drawn_candidates(pridss, faces)
    assert big.shape == (len(faces), 3)
    assert (drawn_candidates(small, faces) == big[:, :2]).all()
    assert len({tuple(r) for r in big.tolist()}) > 1  # different images draw different candidates


def test_latent_backend_is_wired(tmp_path):
    from sbpet_pridss.latent.backend import LATENT_OPTIONS, LatentBackend

    assert set(LATENT_OPTIONS) <= set(PriDSS.options)
    plugin = PriDSS({"backend": "latent", "m": 4}, make_context(tmp_path))
    backend = plugin.backend
    assert isinstance(backend, LatentBackend) and backend.opts["m"] == 4 and backend.name == "latent"
    assert isinstance(PriDSS({}, make_context(tmp_path)).backend, PixelBackend)


def test_context_is_required(tmp_path):
    from sbpet_bench.api import PluginError

    with pytest.raises(TypeError):
        PriDSS({"m": 3})  # the context has no default
    with pytest.raises(TypeError, match="PluginContext"):
        PriDSS({"m": 3}, None)
    with pytest.raises(PluginError, match="pridss.m"):
        PriDSS({"m": 0}, make_context(tmp_path))


class CountingVerifier(MeanGreyVerifier):
    name = "test-grey-counting"
    calls = 0

    def embed(self, images):
        self.calls += len(images)
        return super().embed(images)


class EmbeddingProbe(GenderClassifier):
    """Stand-in for resnet-gender-probe: a logistic model on its embedder's embeddings."""

    name = "test-probe"

    def __init__(self, embedder, context):
        super().__init__({}, context)
        self.embedder = embedder
        self.weight = torch.linspace(-3, 3, 256)

    def predict_male_from_embedding(self, emb):
        return torch.sigmoid(emb @ self.weight)

    def predict_male(self, images):
        return self.predict_male_from_embedding(self.embedder.embed(images))


def test_score_reuses_verifier_embeddings(pridss, faces):
    verifier = CountingVerifier({}, pridss.context)
    probe = EmbeddingProbe(verifier, pridss.context)
    ctx = make_context(pridss.context.work_dir, seed=3, model_path=pridss.context.model_path,
                       plugins={"test-probe": probe, "test-grey-counting": verifier,
                                "test-grey": MeanGreyVerifier({}, pridss.context)})
    shared = PriDSS({**pridss.opts, "classifier": "test-probe", "verifier": "test-grey-counting"}, ctx)
    shared.load_state_dict(pridss.state_dict())
    parts = shared.fused_candidates(faces.all())
    originals, fused = faces.images[parts["rows"]], parts["fused"]
    n = fused.shape[0] * fused.shape[1]
    assert shared.shared_embedding_classifier(probe, verifier) is not None
    p_shared, sim_shared = shared.score(originals, fused)
    assert verifier.calls == n + len(originals)  # each fusion embedded once
    # another verifier instance than the probe's own: the probe must embed the images itself
    other = PriDSS({**pridss.opts, "classifier": "test-probe", "verifier": "test-grey"}, ctx)
    assert other.shared_embedding_classifier(probe, MeanGreyVerifier({}, ctx)) is None
    verifier.calls = 0
    p_fallback, sim_fallback = other.score(originals, fused)
    assert verifier.calls == n
    assert torch.allclose(p_shared, p_fallback, atol=1e-6) and torch.allclose(sim_shared, sim_fallback, atol=1e-6)
    assert float(p_shared.std()) > 0.01  # a real spread, not a constant


def test_an_ensemble_classifier_scores_with_its_members_mean_p_male(pridss, faces):
    from sbpet_bench.api import Dependency, PluginError

    verifier = CountingVerifier({}, pridss.context)
    probe, tone = EmbeddingProbe(verifier, pridss.context), SkinToneClassifier({}, pridss.context)
    ctx = make_context(pridss.context.work_dir, seed=3, model_path=pridss.context.model_path,
                       plugins={"test-probe": probe, "test-tone": tone, "test-grey-counting": verifier})
    options = {**pridss.opts, "classifier": "test-probe+test-tone", "verifier": "test-grey-counting"}
    assert PriDSS.dependencies(options) == [Dependency("classifier", "test-probe"), Dependency("classifier", "test-tone"),
                                            Dependency("verifier", "test-grey-counting")]
    assert PriDSS.dependencies({})[0] == Dependency("classifier", "resnet-gender-probe")  # defaults fill in
    both = PriDSS(options, ctx)
    both.load_state_dict(pridss.state_dict())
    parts = both.fused_candidates(faces.all())
    originals, fused = faces.images[parts["rows"]], parts["fused"]
    b, m = fused.shape[:2]
    verifier.calls = 0
    p, sim = both.score(originals, fused)
    assert verifier.calls == b * m + len(originals)  # the probe member still reuses the SIM embeddings
    flat = fused.reshape(b * m, *fused.shape[2:])
    expected = ((probe.predict_male(flat) + tone.predict_male(flat)) / 2).view(b, m)
    assert torch.allclose(p, expected, atol=1e-6)
    result = both.protect(faces.all())  # selection runs on the mean, batch first
    chosen = [d for d in result.diagnostics if not d["passed_through"]]
    assert chosen and all(len(d["p_male"]) == m for d in chosen)
    with pytest.raises(PluginError, match="empty"):
        PriDSS({**options, "classifier": " + "}, ctx).evaluators()


def test_fusion_settings(faces, geometry):
    from sbpet_pridss.pixel.blending import match_colour

    marks = geometry.landmarks(faces.images)
    idx = torch.nonzero(marks.found).flatten()
    orig, cand = idx[:2], idx[-2:]
    args = (faces.images[orig], marks.points[orig], faces.images[cand].unsqueeze(1), marks.points[cand].unsqueeze(1))
    # colour strength: 1 takes the target's per-channel mean over the region, 0 keeps the source's
    weight = region_masks(marks.points[orig], 90, 90)["skin"]
    src, dst = faces.images[cand], faces.images[orig]
    mean = lambda x: (x * weight.unsqueeze(1)).sum((2, 3)) / weight.sum((1, 2)).unsqueeze(1)  # noqa: E731
    assert torch.allclose(match_colour(src, dst, weight, 0.0), src)
    assert (mean(match_colour(src, dst, weight, 1.0)) - mean(dst)).abs().max() < 0.02
    # poisson=0 pastes the feathered skin: the original's features still stay, the skin still changes
    pasted = fuse(*args, poisson=0.0)[:, 0]
    poisson = fuse(*args)[:, 0]
    masks = region_masks(marks.points[orig], 90, 90)
    for name in ("eyes", "mouth", "hair_background"):
        assert float((pasted - dst).abs()[(masks[name] > 0.999).unsqueeze(1).expand_as(dst)].max()) < 1e-4, name
    assert not torch.allclose(pasted, poisson, atol=1e-2)
    # a narrower feature margin and a taller forehead hand more of the face to the candidate
    changed = lambda out: float(((out - dst).abs().mean(1) > 0.01).float().sum())  # noqa: E731
    assert changed(fuse(*args, margin=0.02)[:, 0]) > changed(poisson)
    assert changed(fuse(*args, forehead=0.8)[:, 0]) > changed(poisson)


def test_bad_fusion_option_is_refused(tmp_path):
    from sbpet_bench.api import PluginError

    with pytest.raises(PluginError, match="pridss.colour"):
        PriDSS({"colour": 1.5}, make_context(tmp_path))


def _draw_glasses(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A dark frame drawn onto one (3, H, W) face: a ring round each eye and a bridge across the nose root."""
    import cv2
    import numpy as np

    arr = np.ascontiguousarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    pts = points.numpy()
    for eye in (slice(36, 42), slice(42, 48)):
        centre = pts[eye].mean(0)
        width = float(np.ptp(pts[eye][:, 0]))
        cv2.ellipse(arr, (int(centre[0]), int(centre[1])), (int(0.9 * width), int(0.7 * width)), 0, 0, 360, (25, 25, 25), 2)
    y = int(pts[27, 1])
    cv2.line(arr, (int(pts[39, 0]), y), (int(pts[42, 0]), y), (25, 25, 25), 2)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def test_glasses_score_flags_a_drawn_frame(faces, geometry):
    from sbpet_pridss.pixel.pool_filters import GLASSES_THRESHOLD, glasses_score

    marks = geometry.landmarks(faces.images)
    x, p = faces.images[marks.found], marks.points[marks.found]
    bare = glasses_score(x, p)
    assert bare.shape == (len(x),) and bool(torch.isfinite(bare).all())
    assert float((bare <= GLASSES_THRESHOLD).float().mean()) >= 0.5  # most faces wear no glasses
    plain = bare.argsort()[:3]  # the three least glasses-like faces
    framed = torch.stack([_draw_glasses(x[i], p[i]) for i in plain.tolist()])
    assert bool((bare[plain] <= GLASSES_THRESHOLD).all())
    assert bool((glasses_score(framed, p[plain]) > GLASSES_THRESHOLD).all())


def test_glasses_wearers_are_not_candidates(pridss, faces):
    clone = PriDSS({**pridss.opts}, pridss.context)
    state = pridss.state_dict()
    assert "pool_glasses" in state and len(state["pool_glasses"]) == len(pridss.backend.pool_ids)
    clone.load_state_dict({**state, "pool_glasses": torch.arange(len(pridss.backend.pool_ids)) % 2 * 10.0})  # odd = glasses
    drawn = drawn_candidates(clone, faces)
    assert drawn.size and bool((drawn % 2 == 0).all())
    off = PriDSS({**pridss.opts, "glasses": 0}, pridss.context)
    off.load_state_dict({**state, "pool_glasses": torch.full((len(pridss.backend.pool_ids),), 10.0)})
    assert bool((drawn_candidates(off, faces) % 2 == 1).any())  # filter off: every face may be drawn
    # a state saved before the filter existed gets its scores recomputed
    old = {k: v for k, v in state.items() if k not in ("pool_glasses", "pool_fringe", "pool_shape")}
    clone.load_state_dict(old)
    assert torch.allclose(clone.backend.pool["glasses"], state["pool_glasses"], atol=1e-4)


def test_candidate_crop_edge_is_not_smeared(faces, geometry):
    """A candidate whose crop ends above the original's chin (an open mouth low in a tight crop)
    must not smear its bottom rows down over the fused chin as vertical streaks."""
    marks = geometry.landmarks(faces.images)
    i = int(torch.nonzero(marks.found).flatten()[0])
    orig, pts = faces.images[i : i + 1], marks.points[i : i + 1]
    cand = orig.clone()
    cand[:, :, -4:, 0::4] = torch.tensor([1.0, 0.1, 0.1]).view(1, 3, 1, 1)  # red and skin stripes in the bottom rows
    shifted = pts + torch.tensor([0.0, 12.0])  # the candidate's face sits 12 px lower: its chin is cut off
    out = fuse(orig, pts, cand.unsqueeze(1), shifted.unsqueeze(1))[:, 0]
    skin = region_masks(pts, 90, 90)["skin"][0] > 0.5
    bottom = skin.clone()
    bottom[:80] = False
    assert int(bottom.sum()) > 20
    streaks = lambda img: float((img[0, :, :, 1:] - img[0, :, :, :-1]).abs().mean(0)[bottom[:, 1:]].mean())  # noqa: E731
    assert streaks(out) < streaks(orig) + 0.03


def test_mouth_mask_covers_an_open_mouth():
    from sbpet_pridss.pixel.geometry import MEAN_SHAPE_90

    pts = torch.tensor(MEAN_SHAPE_90).unsqueeze(0).clone()
    pts[0, 55:60, 1] += 6  # lower outer lip down
    pts[0, 65:68, 1] = pts[0, [63, 62, 61], 1] + 5  # inner lower lip 5 px below the inner upper lip
    # thin closed lips as dlib sometimes marks them: the inner upper lip above the outer one
    crossed = torch.tensor(MEAN_SHAPE_90).unsqueeze(0).clone()
    crossed[0, 61:64, 1] = crossed[0, 50:53, 1] - 3
    for shape in (pts, crossed):
        mouth = region_masks(shape, 90, 90, margin=0.0, feather=0.01)["mouth"] > 0.999
        inner = polygon_mask(shape[:, 60:68], 90, 90) > 0
        assert int(inner.sum()) > 10 and bool(mouth[inner].all())


def test_forehead_cover_flags_a_fringe(faces, geometry):
    from sbpet_pridss.pixel.pool_filters import forehead_cover
    from sbpet_pridss.pixel.geometry import forehead_outline

    marks = geometry.landmarks(faces.images)
    x, p = faces.images[marks.found], marks.points[marks.found]
    bare = forehead_cover(x, p)
    plain = bare.argsort()[:3]
    assert bool((bare[plain] < 0.2).all())
    fringed = x[plain].clone()
    for k, i in enumerate(plain.tolist()):  # dark hair from the top of the crop down to just above the brows
        bottom = int(p[i, 17:27, 1].min()) - 1
        assert int(forehead_outline(p[i : i + 1])[0, :, 1].min()) < bottom
        fringed[k, :, :bottom] = torch.tensor([0.15, 0.1, 0.05]).view(3, 1, 1)
    assert bool((forehead_cover(fringed, p[plain]) > 0.6).all())


def test_fringe_filter_excludes_candidates(pridss, faces):
    state = pridss.state_dict()
    assert "pool_fringe" in state and len(state["pool_fringe"]) == len(pridss.backend.pool_ids)
    cover = (torch.arange(len(pridss.backend.pool_ids)) % 2).float()  # odd = covered forehead
    on = PriDSS({**pridss.opts, "fringe": 0.5}, pridss.context)
    on.load_state_dict({**state, "pool_fringe": cover})
    assert bool((drawn_candidates(on, faces) % 2 == 0).all())
    off = PriDSS({**pridss.opts, "fringe": 0}, pridss.context)
    off.load_state_dict({**state, "pool_fringe": cover})
    assert bool((drawn_candidates(off, faces) % 2 == 1).any())


def test_shape_outliers_are_not_candidates(pridss, faces, geometry):
    from sbpet_pridss.pixel.pool_filters import shape_residual
    from sbpet_pridss.pixel.geometry import MEAN_SHAPE_90

    canon = torch.tensor(MEAN_SHAPE_90).unsqueeze(0)
    moved = canon * 1.3 + torch.tensor([5.0, -3.0])  # a scaled, shifted mean face is still the mean shape
    assert float(shape_residual(moved)) < 1e-3
    odd = moved.clone()
    odd[0, 48:68, 1] += 10  # mouth dropped far below the nose
    assert float(shape_residual(odd)) > 2
    real = shape_residual(geometry.landmarks(faces.images).points[:4])
    assert bool(((real > 0.5) & (real < 3.8)).all())  # real faces: a little off the mean, not outliers
    state = pridss.state_dict()
    assert len(state["pool_shape"]) == len(pridss.backend.pool_ids)
    odd_pool = {**state, "pool_shape": (torch.arange(len(pridss.backend.pool_ids)) % 2) * 10.0}
    clone = PriDSS({**pridss.opts, "shape_outlier": 3.8}, pridss.context)
    clone.load_state_dict(odd_pool)
    assert bool((drawn_candidates(clone, faces) % 2 == 0).all())
    off = PriDSS({**pridss.opts, "shape_outlier": 0}, pridss.context)
    off.load_state_dict(odd_pool)
    assert bool((drawn_candidates(off, faces) % 2 == 1).any())


def test_frame_lines_trace_a_drawn_frame_and_the_overlay_keeps_it(faces, geometry):
    from sbpet_pridss.pixel.pool_filters import frame_lines, glasses_score

    marks = geometry.landmarks(faces.images)
    x, p = faces.images[marks.found], marks.points[marks.found]
    plain = glasses_score(x, p).argsort()[:2]
    bare, pts = x[plain], p[plain]
    framed = torch.stack([_draw_glasses(bare[i], pts[i]) for i in range(2)])
    drawn = (framed - bare).abs().amax(1) > 0.15  # the pixels the frame covers
    lines = frame_lines(framed, pts)
    assert lines.shape == drawn.shape
    assert float(lines[drawn].mean()) > 0.7  # the frame is traced
    cheeks = region_masks(pts, 90, 90)["skin"] > 0.9
    cheeks[:, :55] = False  # below the band (it ends at the middle of the nose): nothing there
    assert float(lines[cheeks].sum()) == 0
    assert float(lines.sum()) < 3 * float(drawn.sum())  # mostly the frame, not the whole band
    # a pore-sized dark speck and a highlight in the band, away from the frame, are not strokes: left out
    band = polygon_mask(pts[:1, [0, *range(17, 27), 16, 15, 29, 1]], 90, 90)[0] > 0
    near = torch.nn.functional.max_pool2d(drawn[:1].float().unsqueeze(1), 9, 1, 4)[0, 0] > 0
    free = band & ~near & (lines[0] == 0)
    free = -torch.nn.functional.max_pool2d(-free.float()[None, None], 5, 1, 2)[0, 0] > 0  # 5x5 room round it
    spots = torch.nonzero(free)
    (y0, x0), (y1, x1) = spots[0].tolist(), spots[-1].tolist()
    specked = framed.clone()
    specked[0, :, y0 : y0 + 2, x0 : x0 + 2] = 0.05
    specked[0, :, y1 - 1 : y1 + 2, x1 - 1 : x1 + 2] = 1.0
    raw = (specked - framed).abs().amax(1)[0] > 0.2
    assert int(raw.sum()) >= 8  # both were drawn
    assert float(frame_lines(specked, pts)[0][raw].sum()) == 0
    # Laid over the fusion, the frame stays whole where the candidate's skin goes
    cand, cand_p = x[-2:].unsqueeze(1), p[-2:].unsqueeze(1)
    plain_fused = fuse(framed, pts, cand, cand_p)[:, 0]
    kept = fuse(framed, pts, cand, cand_p, overlay=lines)[:, 0]
    frame_in_skin = drawn & (lines > 0) & (region_masks(pts, 90, 90)["skin"] > 0.5)
    assert int(frame_in_skin.sum()) > 10
    assert float((kept - framed).abs().amax(1)[frame_in_skin].max()) < 1e-5
    assert float((plain_fused - framed).abs().amax(1)[frame_in_skin].mean()) > 0.05  # without it the rims go


def test_warp_distortion_grows_with_stretch_and_flags_folds():
    from sbpet_pridss.pixel.warping import warp_distortion
    from sbpet_pridss.pixel.geometry import MEAN_SHAPE_90

    own = torch.tensor(MEAN_SHAPE_90).unsqueeze(0)
    nose = own[:, 30:31]
    cands = [own * 1.3 + 5]  # a scaled and shifted copy is the same shape: the alignment removes it
    for factor in (1.2, 1.6):  # wider jaws
        c = own.clone()
        c[:, :17] = nose + (own[:, :17] - nose) * factor
        cands.append(c)
    folded = own.clone()
    folded[:, 1:16, 0] = 2 * nose[:, :, 0] - own[:, 1:16, 0]  # jaw mirrored across the nose: folded triangles
    cands.append(folded)
    d = warp_distortion(own, torch.stack(cands, 1))[0]
    assert d.shape == (4,)
    assert float(d[0]) < 1e-4
    assert 0 < float(d[1]) < float(d[2]) < float(d[3])
    assert float(d[3]) > 2


def test_jaw_moves_inwards_only_as_far_as_the_image_reaches():
    from sbpet_pridss.pixel.warping import jaw_within_frame
    from sbpet_pridss.pixel.geometry import MEAN_SHAPE_90

    tight = torch.tensor(MEAN_SHAPE_90).unsqueeze(0)  # the jaw runs along (and past) the 90 px frame
    nose = tight[:, 30:31]
    narrow = nose + (tight[:, :17] - nose) * 0.8
    wide = nose + (tight[:, :17] - nose) * 1.2
    assert torch.allclose(jaw_within_frame(tight, wide, 90, 90), wide)  # outwards: free
    kept = jaw_within_frame(tight, narrow, 90, 90)
    # inwards only as far as the frame reaches beyond the jaw: what the move uncovers lies inside the image
    back = (tight[:, :17] - kept).norm(dim=-1) > 1e-3
    uncovered = (2 * tight[:, :17] - kept)[back]
    assert int(back.sum()) > 3 and bool(((uncovered >= -0.5 - 1e-3) & (uncovered <= 89.5 + 1e-3)).all())
    assert float((kept - narrow).norm(dim=-1).max()) > 3  # ... which is less than asked
    small = tight * 0.5 + 45  # the same face small in the middle of a larger frame: room all round
    narrow_small = small[:, 30:31] + (small[:, :17] - small[:, 30:31]) * 0.8
    assert torch.allclose(jaw_within_frame(small, narrow_small, 180, 180), narrow_small)


def test_poisson_regions_per_source_match_separate_solves():
    from sbpet_pridss.pixel.blending import poisson_blend

    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 3, 16, 16, generator=g)
    tgt = torch.rand(2, 1, 3, 16, 16, generator=g).expand(-1, 3, -1, -1, -1)
    region = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    region[:, :, 3:12, 3:12] = True
    region[:, 1, 9:12] = False  # the second source's crop ends early
    together = poisson_blend(src, tgt, region)
    for j in range(3):
        alone = poisson_blend(src[:, j : j + 1], tgt[:, j : j + 1], region[:, j])
        assert torch.allclose(together[:, j : j + 1], alone, atol=1e-6)
    assert torch.equal(together[:, 1, :, 10], tgt[:, 1, :, 10])  # outside its region: the target
    assert not torch.allclose(together[:, 0, :, 10], tgt[:, 0, :, 10])


def test_poisson_shared_region_joins_across_the_crop_edge():
    """Sources sharing their row's region, each with its own crop (``covered``): the step at a crop's edge
    is not kept as a gradient, the blend joins the two sides smoothly; without ``covered`` the step stays."""
    from sbpet_pridss.pixel.blending import poisson_blend

    g = torch.Generator().manual_seed(0)
    target = (0.3 + 0.01 * torch.rand(1, 2, 3, 16, 16, generator=g))
    source = target.clone()
    covered = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    covered[:, 0, :, :8] = True  # the first source has pixels left of column 8, the second everywhere
    covered[:, 1] = True
    source[:, 0, :, :, :8] += 0.5  # ... and is brighter there: a step at its crop's edge
    source[:, 1] += 0.2 * torch.rand(3, 16, 16, generator=g)  # the second carries a texture of its own
    region = torch.zeros(1, 16, 16, dtype=torch.bool)
    region[:, 2:14, 2:14] = True
    joined = poisson_blend(source, target, region, covered)
    stepped = poisson_blend(source, target, region)
    jump = lambda x: float((x[0, 0, :, 4:12, 8] - x[0, 0, :, 4:12, 7]).abs().mean())  # noqa: E731
    assert jump(stepped) > 0.3 and jump(joined) < 0.1
    assert torch.equal(joined[..., ~region[0]], target[..., ~region[0]])  # outside the region: the target
    # a source covered everywhere is blended as without ``covered``: its own texture is kept
    assert torch.allclose(joined[:, 1], stepped[:, 1], atol=1e-6)
    assert float((joined[0, 1] - target[0, 1])[:, region[0]].std()) > 0.03


def test_selection_only_among_eligible_candidates():
    from sbpet_pridss.selection import select_lowest_pic

    p = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.9, 0.9]])
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]])
    eligible = torch.tensor([[False, True, True], [False, False, False]])
    chosen, _ = select_lowest_pic(p, sim, eligible)
    assert chosen.tolist() == [1, 0]  # row 0: the best eligible one; row 1: none eligible, so all compete
    assert select_lowest_pic(p, sim)[0].tolist() == [0, 0]


def test_plugin_avoids_distorted_candidates(pridss, faces):
    batch = faces.all()
    parts = pridss.fused_candidates(batch)
    d = parts["distortion"]
    assert d.shape == (len(parts["candidate_ids"]), len(parts["candidate_ids"][0])) and bool((d >= 0).all())
    strict = PriDSS({**pridss.opts, "max_distortion": 1e-6}, pridss.context)
    strict.load_state_dict(pridss.state_dict())
    diags = [x for x in strict.protect(batch).diagnostics if x["face_found"]]
    assert len(diags) == len(d)
    for row, diag in zip(d, diags):  # none is within the limit: each face takes its least distorted candidate
        assert diag["chosen"] == int(row.argmin()) and diag["distortion"] == pytest.approx(row.tolist(), abs=1e-4)


def test_tone_limit_lifts_a_black_streak_and_keeps_shading():
    from sbpet_pridss.pixel.blending import limit_tones

    g = torch.Generator().manual_seed(0)
    skin = 0.6 + 0.03 * torch.randn(1, 1, 40, 40, generator=g)
    skin[..., 10:30, 18:21] = 0.05  # a black streak
    images = skin.expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.8, 0.7]).view(1, 3, 1, 1)
    out = limit_tones(images, torch.ones(1, 40, 40), 2.0)
    lum, lum_out = images.mean(1), out.mean(1)
    spread = float(lum[..., :, :10].std())
    streak = (slice(None), slice(10, 30), slice(18, 21))
    assert float((lum_out[streak] - lum[..., :, :10].mean()).abs().max()) <= 2.0 * spread * 1.2
    assert float(lum_out[streak].min()) > float(lum[streak].max()) + 0.2  # lifted well out of black
    assert float((out - images)[..., :, :10].abs().mean()) < 0.1 * spread  # ordinary skin barely moves
    assert torch.allclose(out[:, 0] - out[:, 1], images[:, 0] - images[:, 1], atol=1e-6)  # chroma kept


def test_chroma_mix_keeps_brightness_and_takes_the_original_colour(faces, geometry):
    from sbpet_pridss.pixel.blending import mix_chroma

    g = torch.Generator().manual_seed(1)
    src, tgt = torch.rand(2, 3, 8, 8, generator=g) * 0.5 + 0.25, torch.rand(2, 3, 8, 8, generator=g) * 0.5 + 0.25
    assert torch.allclose(mix_chroma(src, tgt, 1.0), src, atol=1e-6)
    out = mix_chroma(src, tgt, 0.0)
    assert torch.allclose(out.mean(1), src.mean(1), atol=1e-6)  # the candidate's brightness
    assert torch.allclose(out - out.mean(1, keepdim=True), tgt - tgt.mean(1, keepdim=True), atol=1e-6)  # the original's colour
    # In a fusion, the skin's colour moves towards the original's while its brightness stays the candidate's
    marks = geometry.landmarks(faces.images)
    idx = torch.nonzero(marks.found).flatten()
    orig, cand = idx[:3], idx[-3:]
    args = (faces.images[orig], marks.points[orig], faces.images[cand].unsqueeze(1), marks.points[cand].unsqueeze(1))
    skin = region_masks(marks.points[orig], 90, 90)["skin"] > 0.9
    colour = lambda x: (x - x.mean(1, keepdim=True)).permute(0, 2, 3, 1)[skin]  # noqa: E731
    own, full, none = (colour(faces.images[orig]), colour(fuse(*args)[:, 0]), colour(fuse(*args, chroma=0.0)[:, 0]))
    assert float((none - own).abs().mean()) < 0.5 * float((full - own).abs().mean())
