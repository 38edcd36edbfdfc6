"""PrivacyNet's training is a function of its seed: bit-identical weights with the real auxiliary networks.

The plugin's own tests use stand-ins for the auxiliary networks; this one trains against the
face-api networks from the model store (faceapi-resnet as matcher and the resnet-gender-probe
fitted on LFW3D faces), whose convolutions are where bfloat16 autocast and thread-split
reductions could change the last bits.
"""

from __future__ import annotations

import pytest
import torch

from sbpet_bench.modelstore import ModelStore
from sbpet_bench.testing import load_lfw3d_sample, lfw3d_path, make_context
from sbpet_privacynet.plugin import PrivacyNet

TINY = {"size": 32, "ngf": 8, "ndf": 8, "n_res": 1, "batch_size": 4, "steps": 2, "checkpoint_every": 100,
        "classifier": "resnet-gender-probe", "matcher": "faceapi-resnet"}


@pytest.fixture(scope="module")
def internal_models(tmp_path_factory):
    """faceapi-resnet and the gender probe fitted on 8 + 8 LFW3D faces (skip when the models or the data are absent)."""
    from sbpet_faceapi import assets as faceapi_assets
    from sbpet_faceapi.plugin import FaceApiResnet, ResnetGenderProbe

    if not (lfw3d_path() / "male_names.txt").exists():
        pytest.skip("LFW3D is not at ../shared/data/lfw3d (or $SBPET_LFW3D)")
    store = ModelStore(None, {a.name: a for a in faceapi_assets.ASSETS})
    missing = [n for n in (*FaceApiResnet.models, *ResnetGenderProbe.models) if not store.is_present(n)]
    if missing:
        pytest.skip(f"models {', '.join(missing)} not in the model store: run `sbpet models fetch --default`")
    work = tmp_path_factory.mktemp("privacynet-aux")
    model_path = lambda name: str(store.path(name, fetch=False))  # noqa: E731
    resnet = FaceApiResnet({}, make_context(work, model_path=model_path))
    probe = ResnetGenderProbe({}, make_context(work, model_path=model_path, plugins={resnet.name: resnet}))
    faces = load_lfw3d_sample(per_class=8, seed=3)
    probe.fit(faces)
    return {resnet.name: resnet, probe.name: probe}, faces


def train(folder, models, faces, seed: int, threads: int, precision: str) -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pet = PrivacyNet({**TINY, "precision": precision}, make_context(folder, seed=seed, plugins=models))
        pet.fit(faces, faces)
    finally:
        torch.set_num_threads(before)
    return pet.state_dict()


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_same_seed_same_weights_with_the_real_auxiliary_networks(tmp_path, internal_models, precision):
    models, faces = internal_models
    first = train(tmp_path / "a", models, faces, seed=1, threads=1, precision=precision)
    second = train(tmp_path / "b", models, faces, seed=1, threads=2, precision=precision)
    other = train(tmp_path / "c", models, faces, seed=2, threads=1, precision=precision)
    assert first.keys() == second.keys() == other.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not all(torch.equal(first[k], other[k]) for k in first)  # another seed, other weights
