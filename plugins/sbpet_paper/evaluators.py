"""The paper's evaluators: deepface's gender classifier, insightface's ArcFace/CosFace, FID's InceptionV3.

Each runs its library's own network class on weights from the model store,
with the library's preprocessing redone in batched torch. Inputs are aligned
face crops, so no detector runs (deepface's ``detector_backend="skip"``;
insightface's recognisers take crops already aligned).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import Featurizer, GenderClassifier, Option, PluginError, Verifier

from .assets import ARCFACE, COSFACE, DEEPFACE_GENDER, INCEPTION


def _model_file(plugin, asset: str) -> str:
    try:
        return plugin.context.model_path(asset)
    except Exception as exc:  # the store's message tells how to add official weights
        raise PluginError(f"{plugin.name} needs model {asset!r}: {exc}") from exc


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a library call, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _letterbox(images: torch.Tensor, size: int) -> torch.Tensor:
    """deepface's resize_image: keep the aspect ratio, scale the long side to ``size``, pad with black."""
    h, w = images.shape[-2:]
    f = min(size / h, size / w)
    nh, nw = int(h * f), int(w * f)
    x = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)  # cv2.resize, INTER_LINEAR
    dh, dw = size - nh, size - nw
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


class DeepFaceGender(GenderClassifier):
    name = "deepface-gender"
    version = "1"
    description = "deepface's gender model (VGG-Face trunk), torch backend, official weights; no detection (aligned crops)"
    options = {"batch_size": Option(32, "images per forward pass")}
    models = (DEEPFACE_GENDER,)
    requires = ("deepface",)
    input_size = 224

    WEIGHTS_NAME = "gender_model_weights.pth"  # the file name deepface looks for under $DEEPFACE_HOME/.deepface/weights

    def __init__(self, options, context):
        super().__init__(options, context)
        self._net = None

    def _home(self) -> Path:
        """A DEEPFACE_HOME holding a link to the store's file, so deepface finds it and never downloads."""
        source = Path(_model_file(self, DEEPFACE_GENDER))
        home = Path(self.context.work_dir) / "deepface_home"
        target = home / ".deepface" / "weights" / self.WEIGHTS_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(source.resolve())
        return home

    @property
    def net(self) -> torch.nn.Module:
        if self._net is None:
            with _env(DEEPFACE_HOME=str(self._home()), DEEPFACE_BACKEND_ENGINE="pytorch"):
                from deepface.models.demography.pytorch import Gender

                try:
                    net = Gender.load_model()
                except (ValueError, RuntimeError) as exc:
                    raise PluginError(f"deepface-gender: cannot load {DEEPFACE_GENDER!r}: {exc}") from exc
                self._labels = list(Gender.labels)
            self._male = self._labels.index("Man")
            self._net = net.to(self.device).eval().requires_grad_(False)
        return self._net

    @torch.no_grad()
    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        net, out = self.net, []
        for x in images.split(int(self.opts["batch_size"])):
            x = _letterbox(x.to(self.device).float().flip(1), 224)  # deepface feeds BGR in [0, 1]
            out.append(net(x)[:, self._male])
        return torch.cat(out) if out else images.new_zeros(0)


class _InsightFaceVerifier(Verifier):
    """insightface's ArcFaceONNX session on a model-store ONNX file; embeddings L2-normalised."""

    options = {"batch_size": Option(64, "images per ONNX run")}
    requires = ("insightface", "onnxruntime")
    input_size = 112
    asset = ""

    def __init__(self, options, context):
        super().__init__(options, context)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from insightface.model_zoo.arcface_onnx import ArcFaceONNX

            path = _model_file(self, self.asset)
            try:
                model = ArcFaceONNX(model_file=path)
            except Exception as exc:  # onnx / onnxruntime raise their own types
                raise PluginError(f"{self.name}: {path} is not a loadable insightface ONNX recogniser: {exc}") from exc
            if self.device.type == "cuda":
                model.session.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
            else:
                model.prepare(ctx_id=-1)  # CPU
            self._model = model
        return self._model

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        model = self.model
        w, h = model.input_size
        out = []
        for x in images.split(int(self.opts["batch_size"])):
            x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            blob = (x.clamp(0, 1) * 255).cpu().numpy().astype(np.float32)  # RGB, 0..255: what get_feat's blob holds
            out.append(torch.from_numpy(np.asarray(model.forward(blob), dtype=np.float32)))
        emb = torch.cat(out) if out else torch.zeros(0, 512)
        return F.normalize(emb, dim=1).to(images.device)


class ArcFace(_InsightFaceVerifier):
    name = "arcface"
    version = "1"
    description = "insightface ArcFace R50 (WebFace600K, ONNX), official weights; 112x112 aligned crops"
    models = (ARCFACE,)
    asset = ARCFACE


class CosFace(_InsightFaceVerifier):
    name = "cosface"
    version = "1"
    description = "insightface CosFace R100 (Glint360K, ONNX), official weights; 112x112 aligned crops"
    models = (COSFACE,)
    asset = COSFACE


class InceptionFID(Featurizer):
    name = "inception-fid"
    version = "1"
    description = "FID features: pytorch-fid's InceptionV3 pool3 (2048-D) with the official FID weights"
    options = {"batch_size": Option(32, "images per forward pass")}
    models = (INCEPTION,)
    requires = ("pytorch_fid",)
    input_size = 299

    def __init__(self, options, context):
        super().__init__(options, context)
        self._net = None

    @property
    def net(self) -> torch.nn.Module:
        if self._net is None:
            from pytorch_fid import inception

            path = _model_file(self, INCEPTION)

            def from_store(*_args, **_kwargs):
                return torch.load(path, map_location="cpu", weights_only=True)

            # pytorch-fid builds its FID variant of InceptionV3 and fetches the weights by URL
            # in one function; hand it the store's file instead of letting it download.
            try:
                with mock.patch.object(inception, "load_state_dict_from_url", from_store):
                    net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                                normalize_input=True, use_fid_inception=True)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise PluginError(f"inception-fid: {path} is not pytorch-fid's FID Inception state dict: {exc}") from exc
            self._net = net.to(self.device).eval().requires_grad_(False)
        return self._net

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        net, out = self.net, []
        for x in images.split(int(self.opts["batch_size"])):
            out.append(net(x.to(self.device).float().clamp(0, 1))[0].flatten(1))
        return torch.cat(out) if out else images.new_zeros(0, 2048)
