"""Bit-identity guard of PriDSS's pixel backend: refactors and speed-ups must not change its outputs.

A fixed LFW3D batch (six faces and one flat grey image, whose face is not found) is protected with
M=10 candidates from a small fixed pool, PriDSS's own internal models choosing among them
(``resnet-gender-probe`` fitted on a fixed disjoint sample, ``faceapi-resnet``). The SHA-256 of the
float32 bytes of every fusion, of the protected images and the chosen candidates must match the
values recorded with the current PriDSS version (see ``RECORDED_VERSION``).

Float results depend on torch's thread count (reductions are split per thread), so the test runs
with one thread; they may also differ on another CPU family (other SIMD paths). When a change is
*meant* to alter the outputs, bump ``PriDSS.version`` and record new values here in a commit of
their own, with the reason.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from sbpet_bench.api import FaceBatch
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.testing import load_lfw3d_sample, make_context

from sbpet_pridss import SHAPE_PREDICTOR
from sbpet_pridss.plugin import PriDSS

# Recorded with PriDSS version 11 on x86-64 at one torch thread; version 12 pins the fusion to one thread, so
# at one thread its outputs are version 11's.
RECORDED_VERSION = "12"
# Later versions that changed only defaults: their outputs at GOLDEN_OPTIONS are the recorded ones.
SAME_AT_GOLDEN_OPTIONS = ("13",)
FUSED_SHA256 = "bea4953dd3eed0eacde29cb1a273545285bc8746c81b71ac6d998ff4117f91c6"
PROTECTED_SHA256 = "bfdc4f49df58db3f9309475751978126a30a611932bdfa604bf9486b68b16683"
CHOSEN_IDS = ["Salma_Hayek_0005.jpg", "Sarah_Weddington_0001.jpg", "Sarah_Weddington_0001.jpg",
              "Guillermo_Coria_0012.jpg", "Donald_Evans_0001.jpg", "Guillermo_Coria_0012.jpg", None]
FIRST_CANDIDATES = ["Jean_Carnahan_0001.jpg", "Martha_Smith_0001.jpg", "Lucy_Liu_0001.jpg", "Kim_Clijsters_0002.jpg",
                    "Ally_Sheedy_0001.jpg", "Kelly_Ripa_0001.jpg", "Yang_Pao-yu_0001.jpg", "Halle_Berry_0009.jpg",
                    "Salma_Hayek_0005.jpg", "Condoleezza_Rice_0010.jpg"]


# Every pixel-backend option the recorded values were made with, spelled out: a change of PriDSS's defaults
# must not break (or silently re-define) this guard. Version 12's defaults.
GOLDEN_OPTIONS = {"backend": "pixel", "m": 10, "classifier": "resnet-gender-probe", "verifier": "faceapi-resnet",
                  "seed": -1, "face_shape": True, "colour": 1.0, "poisson": 1.0, "feature_margin": 0.02,
                  "eye_margin": -1.0, "forehead": 0.4, "feather": 0.02, "glasses": 3.45, "keep_glasses": 3.45,
                  "max_distortion": 0.55, "tone_limit": 0.0, "chroma": 0.0, "fringe": 0.35, "shape_outlier": 0.0,
                  "pool_max": 2000}


def _sha256(t: torch.Tensor) -> str:
    assert t.dtype == torch.float32
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def internal_models(lfw3d, tmp_path_factory):
    """The context PriDSS runs in, with its internal models from the model store (skip when absent)."""
    from sbpet_faceapi import assets as faceapi_assets
    from sbpet_faceapi.plugin import FaceApiResnet, ResnetGenderProbe

    store = ModelStore(None, {a.name: a for a in (*faceapi_assets.ASSETS, SHAPE_PREDICTOR)})
    needed = (*FaceApiResnet.models, *ResnetGenderProbe.models, SHAPE_PREDICTOR.name)
    missing = [n for n in needed if not store.is_present(n)]
    if missing:
        pytest.skip(f"models {', '.join(missing)} not in the model store: run `sbpet models fetch --default`")
    work = tmp_path_factory.mktemp("pridss-golden")
    model_path = lambda name: str(store.path(name, fetch=False))  # noqa: E731
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        verifier = FaceApiResnet({}, make_context(work, model_path=model_path))
        probe = ResnetGenderProbe({}, make_context(work, model_path=model_path, plugins={verifier.name: verifier}))
        probe.fit(load_lfw3d_sample(per_class=20, seed=9, skip=200))
    finally:
        torch.set_num_threads(before)
    return make_context(work, seed=0, model_path=model_path, plugins={verifier.name: verifier, probe.name: probe})


def test_pixel_backend_outputs_are_bit_identical(internal_models, one_thread):
    # outputs and version change together: record new values in the commit that bumps the version
    assert PriDSS.version in (RECORDED_VERSION, *SAME_AT_GOLDEN_OPTIONS)
    pet = PriDSS(GOLDEN_OPTIONS, internal_models)
    pet.fit(None, load_lfw3d_sample(per_class=20, seed=7, skip=100))
    faces = load_lfw3d_sample(per_class=3, seed=3)
    images = torch.cat([faces.images, torch.full((1, 3, 90, 90), 0.45)])
    batch = FaceBatch(images, torch.cat([faces.genders, torch.tensor([-1])]), faces.identities + ["flat"],
                      faces.ids + ["flat"])
    with torch.no_grad():
        fused = pet.fused_candidates(batch)["fused"]
        result = pet.protect(batch)
    assert fused.shape == (6, 10, 3, 90, 90)
    assert result.diagnostics[0]["candidate_ids"] == FIRST_CANDIDATES
    assert [d.get("chosen_id") for d in result.diagnostics] == CHOSEN_IDS
    assert torch.equal(result.images[6], images[6])  # no face found: passed through
    assert _sha256(fused) == FUSED_SHA256
    assert _sha256(result.images) == PROTECTED_SHA256
