"""Output guard of PriDSS's pixel backend: refactors and speed-ups must not change its outputs.

A fixed LFW3D batch (six faces and one flat grey image, whose face is not found) is protected with
M=10 candidates from a small fixed pool, PriDSS's own internal models choosing among them
(``resnet-gender-probe`` fitted on a fixed disjoint sample, ``faceapi-resnet``). The candidates
drawn and chosen must be the recorded ones exactly, and every fusion and protected image must
equal the recorded one: 15 x 15 px block means (6 x 6 per channel, which a change of one pixel
by 0.01 already moves by 4e-5) within 1e-5.

Why not a hash of the bytes: the split into backends was proved bit-identical by SHA-256 on one
machine, but float results also depend on the CPU's SIMD paths (oneDNN, OpenBLAS, OpenCV): on
another x86-64 machine the same code, at one thread, gave other hashes with a largest pixel
difference of 1.2e-7. The reference (``tests/golden/pridss_pixel_v12.json``) was recorded with
version 13 at ``GOLDEN_OPTIONS`` (version 12's defaults, whose outputs it keeps). When a change is
*meant* to alter the outputs, bump ``PriDSS.version`` and record new values in a commit of their
own, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sbpet_bench.api import FaceBatch
from sbpet_bench.modelstore import ModelStore
from sbpet_bench.testing import load_lfw3d_sample, make_context

from sbpet_pridss import SHAPE_PREDICTOR
from sbpet_pridss.plugin import PriDSS

# Recorded with version 13 at GOLDEN_OPTIONS, whose outputs are version 12's (13 changed only defaults).
RECORDED_VERSION = "12"
SAME_AT_GOLDEN_OPTIONS = ("13",)
REFERENCE = Path(__file__).with_name("golden") / "pridss_pixel_v12.json"
TOLERANCE = 1e-5
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


def _block_means(images: torch.Tensor) -> torch.Tensor:
    """15 x 15 px block means of (..., 3, 90, 90) images, flattened: 6 x 6 per channel."""
    return torch.nn.functional.avg_pool2d(images.reshape(-1, 3, 90, 90).float(), 15).flatten()


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
    reference = json.loads(REFERENCE.read_text())
    for name, got in (("fused_6x6", fused), ("protected_6x6", result.images)):
        want = torch.tensor(reference[name])
        assert (_block_means(got) - want).abs().max().item() < TOLERANCE, name
