"""face-api.js networks in PyTorch: weight loading, the published reference outputs, and the plugins on LFW3D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from sbpet_bench.modelstore import ModelStore
from sbpet_bench.testing import load_lfw3d_sample, make_context
from sbpet_faceapi import assets as faceapi_assets
from sbpet_faceapi.plugin import FaceApiGender, FaceApiResnet, ResnetGenderProbe
from sbpet_faceapi.tfjs import load_tfjs_weights


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> ModelStore:
    """The face-api weights, fetched once per session through the model store (npm) into a temporary home."""
    store = ModelStore(tmp_path_factory.mktemp("sbpet_home") / "models", {a.name: a for a in faceapi_assets.ASSETS})
    store.fetch_many([a.name for a in faceapi_assets.ASSETS])
    return store


@pytest.fixture(scope="session")
def context(store, tmp_path_factory):
    return make_context(tmp_path_factory.mktemp("work"), model_path=store.path)


@pytest.fixture(scope="session")
def gender(context) -> FaceApiGender:
    return FaceApiGender({}, context)


@pytest.fixture(scope="session")
def resnet(context) -> FaceApiResnet:
    return FaceApiResnet({}, context)


def letterbox(path: Path, size: int) -> torch.Tensor:
    """The reference recipe, done as face-api.js does for tensor inputs: pad to a centred black square,
    then tf.image.resizeBilinear (align_corners=false, half_pixel_centers=false) to ``size``."""
    with Image.open(path) as im:
        x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255.0
    h, w = x.shape[-2:]
    diff = abs(h - w)
    after = round(diff / 2)
    x = F.pad(x, (diff - after, after, 0, 0) if h > w else (0, 0, diff - after, after))
    n = x.shape[-1]
    src = torch.arange(size) * (n / size)  # TF's legacy sampling grid
    lo = src.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    t = src - lo
    x = x[:, lo] * (1 - t)[:, None] + x[:, hi] * t[:, None]  # rows
    x = x[:, :, lo] * (1 - t) + x[:, :, hi] * t  # columns
    return x.unsqueeze(0)


# ------------------------------------------------------------------ TFJS manifests


def test_tfjs_loader_dequantizes_and_reads_float32(tmp_path):
    q = np.array([0, 1, 2, 255, 128, 7], dtype=np.uint8)
    f = np.array([1.5, -2.25], dtype="<f4")
    (tmp_path / "w.bin").write_bytes(q.tobytes() + f.tobytes())
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": "a/filters", "shape": [2, 3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "a/bias", "shape": [2], "dtype": "float32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    weights = load_tfjs_weights(tmp_path / "m.json")
    assert torch.equal(weights["a/filters"], torch.tensor(q.reshape(2, 3) * 0.5 - 1.0, dtype=torch.float32))
    assert weights["a/bias"].tolist() == [1.5, -2.25]
    (tmp_path / "w.bin").write_bytes(q.tobytes())  # truncated shard
    with pytest.raises(ValueError, match="shards end before tensor a/bias"):
        load_tfjs_weights(tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="elsewhere.bin"):
        load_tfjs_weights(tmp_path / "m.json", {"w.bin": tmp_path / "elsewhere.bin"})


def test_real_manifests_load_with_expected_shapes(store):
    manifest = store.path("faceapi-age-gender-manifest")
    weights = load_tfjs_weights(manifest, {"age_gender_model.bin": store.path("faceapi-age-gender-weights")})
    assert weights["fc/gender/weights"].shape == (512, 2) and weights["entry_flow/conv_in/filters"].shape == (3, 3, 3, 32)


# ------------------------------------------------------------------ reference outputs of face-api.js


@pytest.mark.parametrize("image, male, ages, min_prob", [
    ("angry_cropped.jpg", True, (36, 42), 0.9),
    ("surprised_cropped.jpg", False, (24, 28), 0.8),
])
def test_age_gender_matches_reference(gender, faceapi_reference, image, male, ages, min_prob):
    x = letterbox(faceapi_reference / "images" / image, 112)
    p_male = gender.predict_male(x).item()
    age = gender.predict_age(x).item()
    assert (p_male if male else 1 - p_male) >= min_prob
    assert ages[0] <= age <= ages[1]


def test_descriptors_match_reference(resnet, faceapi_reference):
    pairs = [("face1.png", "faceDescriptor1.json"), ("face2.png", "faceDescriptor2.json"),
             ("face_rectangular.png", "faceDescriptorRect.json")]
    x = torch.cat([letterbox(faceapi_reference / "images" / img, 150) for img, _ in pairs])
    reference = torch.tensor([json.loads((faceapi_reference / "descriptors" / d).read_text()) for _, d in pairs])
    with torch.no_grad():
        distances = (resnet.descriptor(x) - reference).norm(dim=1)
    assert distances.max().item() < 0.1, distances


def test_embed_is_unit_norm_batched_and_differentiable(resnet, faceapi_reference):
    x = torch.cat([letterbox(faceapi_reference / "images" / f, 150) for f in ("face1.png", "face2.png")])
    batched = resnet.embed(x).detach()
    assert torch.allclose(batched.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(batched[1], resnet.embed(x[1:]).detach()[0], atol=1e-4)  # rows are independent
    x.requires_grad_(True)
    resnet.embed(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ the plugins on LFW3D


def test_faceapi_gender_separates_lfw3d(gender, lfw3d):
    sample = load_lfw3d_sample(per_class=15, seed=1, root=lfw3d)
    with torch.no_grad():
        p_male = gender.predict_male(sample.all(size=112).images)
    assert p_male.shape == (30,) and ((0 <= p_male) & (p_male <= 1)).all()
    assert roc_auc_score(sample.genders.numpy(), p_male.numpy()) > 0.9


def test_resnet_probe_fits_predicts_and_restores(resnet, context, lfw3d):
    train = load_lfw3d_sample(per_class=30, seed=2, root=lfw3d)
    test = load_lfw3d_sample(per_class=12, seed=2, root=lfw3d, skip=30)
    probe_context = make_context(Path(context.work_dir) / "probe", model_path=context.model_path,
                                 plugins={"faceapi-resnet": resnet})
    probe = ResnetGenderProbe({}, probe_context)
    probe.fit(train)
    assert probe.embedder is resnet  # shares the run's verifier
    with torch.no_grad():
        p_male = probe.predict_male(test.all(size=150).images)
    assert roc_auc_score(test.genders.numpy(), p_male.numpy()) > 0.8
    with torch.no_grad():  # the shortcut for callers that already hold the embeddings gives the same P(male)
        from_emb = probe.predict_male_from_embedding(resnet.embed(test.all(size=150).images))
    assert torch.allclose(from_emb, p_male, atol=1e-6)

    state = probe.state_dict()
    assert set(state) == {"weight", "bias"} and state["weight"].shape == (128,)
    restored = ResnetGenderProbe({}, probe_context)
    restored.load_state_dict(state)
    x = test.all(size=150).images[:4].clone().requires_grad_(True)
    restored_p = restored.predict_male(x)
    assert torch.allclose(restored_p.detach(), p_male[:4], atol=1e-5)
    restored_p.sum().backward()  # PETs train through it
    assert x.grad.abs().sum() > 0


def test_unfitted_probe_says_so(context):
    from sbpet_bench.api import PluginError

    with pytest.raises(PluginError, match="not fitted"):
        ResnetGenderProbe({}, context).predict_male(torch.zeros(1, 3, 150, 150))
