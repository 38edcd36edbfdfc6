"""The paper's evaluators on stand-in weights built here in the official file formats (random weights).

They check the plumbing (loading path, preprocessing, batching, shapes,
ranges), never accuracy. deepface and insightface are optional: their tests
skip when the libraries are not installed.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from sbpet_bench.api import PluginError
from sbpet_bench.testing import make_context
from sbpet_paper.assets import ARCFACE, ASSETS, COSFACE, DEEPFACE_GENDER, INCEPTION


@pytest.fixture(autouse=True)
def few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def context_with(tmp_path, files: dict[str, str]):
    def model_path(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(f"{name} is not in the model store; `sbpet models add {name} FILE`")
        return files[name]
    return make_context(tmp_path / "work", model_path=model_path)


def test_assets_are_official_only_without_invented_checksums():
    assert {a.name for a in ASSETS} == {DEEPFACE_GENDER, ARCFACE, COSFACE, INCEPTION}
    for asset in ASSETS:
        assert asset.official_only and asset.sha256 == "" and asset.sources[0].startswith("https://")


def test_plugins_register_through_hooks():
    import sbpet_paper

    names = {c.name for c in sbpet_paper.sbpet_register_classifiers() + sbpet_paper.sbpet_register_verifiers()
             + sbpet_paper.sbpet_register_featurizers()}
    assert names == {"deepface-gender", "arcface", "cosface", "inception-fid"}


# ----------------------------------------------------------------------------- FID Inception


def test_inception_fid_loads_store_state_dict_without_download(tmp_path):
    from pytorch_fid import inception

    from sbpet_paper.evaluators import InceptionFID

    # the stand-in: pytorch-fid's own FID network with random weights, saved as a state dict
    with mock.patch.object(inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, sd, strict=True: None):
        torch.manual_seed(0)
        reference = inception.fid_inception_v3()
    path = tmp_path / "pt_inception.pth"
    torch.save(reference.state_dict(), path)
    fid = InceptionFID({"batch_size": 2}, context_with(tmp_path, {INCEPTION: str(path)}))
    with mock.patch.object(inception, "load_state_dict_from_url", side_effect=AssertionError("tried to download")):
        net = fid.net
    assert torch.equal(net.blocks[0][0].conv.weight, reference.Conv2d_1a_3x3.conv.weight)
    images = torch.rand(3, 3, 64, 64)
    feats = fid.features(images)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32 and bool((feats >= 0).all())  # post-ReLU avg pool
    torch.testing.assert_close(fid.features(images[2:]), feats[2:], atol=1e-4, rtol=1e-4)  # batch split of 2
    assert not torch.equal(feats[0], feats[1]) and float(feats.std()) > 0
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PluginError, match="bad.pth"):
        InceptionFID({}, context_with(tmp_path, {INCEPTION: str(tmp_path / "bad.pth")})).features(images)
    with pytest.raises(PluginError, match="sbpet models add"):
        InceptionFID({}, context_with(tmp_path, {})).features(images)


# ----------------------------------------------------------------------------- insightface


def _tiny_recogniser_onnx(path, dim: int = 16):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4 * 28 * 28, dim)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    torch.manual_seed(0)
    net = Tiny().eval()
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), str(path), input_names=["input.1"], output_names=["embedding"],
                      dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
    return net


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript ONNX exporter (no onnxscript here)
@pytest.mark.parametrize("name,asset", [("arcface", ARCFACE), ("cosface", COSFACE)])
def test_insightface_recogniser_onnx_from_store(tmp_path, name, asset):
    pytest.importorskip("insightface")
    pytest.importorskip("onnxruntime")
    from sbpet_paper.evaluators import ArcFace, CosFace

    path = tmp_path / "rec.onnx"
    net = _tiny_recogniser_onnx(path)
    cls = ArcFace if name == "arcface" else CosFace
    verifier = cls({"batch_size": 2}, context_with(tmp_path, {asset: str(path)}))
    images = torch.rand(5, 3, 112, 112)
    emb = verifier.embed(images)
    assert emb.shape == (5, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    # insightface's preprocessing for non-mxnet models: (RGB * 255 - 127.5) / 127.5
    with torch.no_grad():
        want = torch.nn.functional.normalize(net((images * 255 - 127.5) / 127.5), dim=1)
    torch.testing.assert_close(emb, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(verifier.embed(images[3:]), emb[3:], atol=1e-5, rtol=1e-5)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(PluginError, match="junk.onnx"):
        cls({}, context_with(tmp_path, {asset: str(tmp_path / "junk.onnx")})).embed(images)


def test_opencv_has_what_deepface_and_insightface_use():
    cv2 = pytest.importorskip("cv2")
    deepface = pytest.importorskip("deepface")  # noqa: F841  (only then does the cascade detector matter)
    assert hasattr(cv2, "CascadeClassifier"), ("deepface's opencv detector needs cv2.CascadeClassifier, which OpenCV 5 "
                                               "ships only in opencv-contrib-python(-headless)")
    assert hasattr(cv2.dnn, "blobFromImages") and hasattr(cv2, "warpAffine")  # insightface get_feat / norm_crop
    face = np.zeros((8, 8, 3), np.uint8)
    assert cv2.dnn.blobFromImages([face], 1 / 127.5, (8, 8), (127.5,) * 3, swapRB=True).shape == (1, 3, 8, 8)
    assert cv2.CascadeClassifier().empty()


# ----------------------------------------------------------------------------- deepface


def test_deepface_gender_loads_through_deepface_home(tmp_path):
    pytest.importorskip("deepface")
    from deepface.models.demography.pytorch.Gender import GenderModel

    from sbpet_paper.evaluators import DeepFaceGender

    torch.manual_seed(0)
    model = GenderModel()
    path = tmp_path / "store" / "gender_model_weights.pth"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    ctx = context_with(tmp_path, {DEEPFACE_GENDER: str(path)})
    clf = DeepFaceGender({"batch_size": 2}, ctx)
    with mock.patch("deepface.commons.weight_utils.gdown.download", side_effect=AssertionError("tried to download")):
        images = torch.rand(3, 3, 90, 90)
        p = clf.predict_male(images)
    assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())
    # the deepface pipeline for an aligned crop: BGR in [0, 1], resized to 224, softmax over (Woman, Man)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(images.flip(1), size=(224, 224), mode="bilinear", align_corners=False)
        want = model.eval()(x)[:, 1]
    torch.testing.assert_close(p, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clf.predict_male(images[2:]), p[2:], atol=1e-5, rtol=1e-4)
    assert "DEEPFACE_HOME" not in __import__("os").environ or __import__("os").environ["DEEPFACE_HOME"] != str(tmp_path)
