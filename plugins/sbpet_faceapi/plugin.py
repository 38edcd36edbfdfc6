"""The face-api.js evaluators: gender (AgeGenderNet), verification (FaceRecognitionNet) and a gender probe on its embeddings."""

from __future__ import annotations

import json
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import Dependency, FaceSet, GenderClassifier, Option, PluginContext, PluginError, Verifier

from .assets import AGE_GENDER, RECOGNITION
from .nets import AgeGenderNet, FaceRecognitionNet
from .tfjs import load_tfjs_weights

_BATCH = Option(128, "images per forward pass (lower it if memory runs out)")


def _load_weights(context: PluginContext, manifest: str, weights: str) -> dict[str, torch.Tensor]:
    manifest_path, shard = context.model_path(manifest), context.model_path(weights)
    with open(manifest_path) as fh:  # each manifest names one shard: map that name to the stored file
        names = [p for group in json.load(fh) for p in group["paths"]]
    return load_tfjs_weights(manifest_path, {name: shard for name in names})


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """The harness already resizes to ``input_size``; direct callers may not have."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


class FaceApiGender(GenderClassifier):
    """face-api.js AgeGenderNet: the default gender evaluator."""

    name = "faceapi-gender"
    version = "1"
    description = "face-api.js AgeGenderNet (TinyXception, 112x112); P(male) from its gender softmax"
    options = {"batch_size": _BATCH}
    models = AGE_GENDER
    input_size = 112
    evaluator_role = "primary"  # a default evaluator of `sbpet run` when its weights are present

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self.net = AgeGenderNet(_load_weights(context, *AGE_GENDER)).to(self.device).eval()

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(_at_size(images.to(self.device), self.input_size))

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        # Differentiable: PETs may back-propagate through it. Softmax index 0 is male.
        return _chunked(lambda x: self._run(x)[1].softmax(1)[:, 0], images, self.opts["batch_size"])

    def predict_age(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) estimated age in years (not used by the benchmark's metrics)."""
        return _chunked(lambda x: self._run(x)[0], images, self.opts["batch_size"])


class FaceApiResnet(Verifier):
    """face-api.js FaceRecognitionNet (dlib's ResNet-34): the default verifier."""

    name = "faceapi-resnet"
    version = "1"
    description = "face-api.js FaceRecognitionNet (dlib ResNet-34, 150x150), L2-normalised 128-D descriptors"
    options = {"batch_size": _BATCH}
    models = RECOGNITION
    input_size = 150
    evaluator_role = "primary"

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self.net = FaceRecognitionNet(_load_weights(context, *RECOGNITION)).to(self.device).eval()

    def descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 128) raw face-api.js descriptors (not normalised; Euclidean distance 0.6 is face-api's threshold)."""
        return _chunked(lambda x: self.net(_at_size(x.to(self.device), self.input_size)), images, self.opts["batch_size"])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        # No torch.no_grad here: PrivacyNet trains through this network.
        return F.normalize(self.descriptor(images), dim=1)


class ResnetGenderProbe(GenderClassifier):
    """Logistic regression on faceapi-resnet embeddings, trained on the training split.

    PETs that need a differentiable gender classifier of their own use this one,
    so that the default evaluator (faceapi-gender) stays unseen by them.
    """

    name = "resnet-gender-probe"
    version = "1"
    description = "logistic regression on faceapi-resnet embeddings, fitted on the training split"
    options = {"C": Option(1.0, "inverse L2 regularisation strength of the logistic regression"), "batch_size": _BATCH}
    models = RECOGNITION
    input_size = 150
    fits = True

    @classmethod
    def dependencies(cls, options: Mapping) -> list[Dependency]:
        return [Dependency("verifier", FaceApiResnet.name)]

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self.weight: torch.Tensor | None = None  # (128,)
        self.bias: torch.Tensor | None = None  # (1,)
        self._embedder: Verifier | None = None

    @property
    def embedder(self) -> Verifier:
        if self._embedder is None:
            try:  # share the run's instance when the harness has one
                self._embedder = self.context.get_verifier(FaceApiResnet.name)
            except Exception:  # noqa: BLE001 - e.g. a test context without it: build our own below
                self._embedder = None
            if self._embedder is None:
                self._embedder = FaceApiResnet({"batch_size": self.opts["batch_size"]}, self.context)
        return self._embedder

    def fit(self, train: FaceSet) -> None:
        from sklearn.linear_model import LogisticRegression

        feats, labels = [], []
        batches = train.batches(self.opts["batch_size"], size=self.input_size)
        batches = self.context.progress(batches, description=f"{self.name}: embedding the training split",
                                        total=-(-len(train) // self.opts["batch_size"]))
        with torch.no_grad():
            for batch in batches:
                known = batch.genders >= 0
                if known.any():
                    feats.append(self.embedder.embed(batch.images[known]).cpu().numpy())
                    labels.append(batch.genders[known].numpy())
        y = np.concatenate(labels) if labels else np.zeros(0)
        if len(np.unique(y)) < 2:
            raise PluginError(f"{self.name}: the training split needs gender-labelled faces of both genders "
                              f"(got {len(y)} labelled, classes {sorted(set(y.tolist()))})")
        clf = LogisticRegression(C=self.opts["C"], max_iter=2000).fit(np.concatenate(feats), y)
        # classes_ is [0, 1] (FEMALE, MALE): coef_ gives the log-odds of MALE
        self.load_state_dict({"weight": torch.tensor(clf.coef_[0], dtype=torch.float32),
                              "bias": torch.tensor(clf.intercept_, dtype=torch.float32)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.weight is None or self.bias is None:
            return {}
        return {"weight": self.weight.cpu(), "bias": self.bias.cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.weight = torch.as_tensor(state["weight"], dtype=torch.float32).reshape(-1).to(self.device)
        self.bias = torch.as_tensor(state["bias"], dtype=torch.float32).reshape(1).to(self.device)

    def logits_from_embedding(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) log-odds of male from (B, 128) ``embedder.embed`` outputs; differentiable."""
        if self.weight is None or self.bias is None:
            raise PluginError(f"{self.name} is not fitted: call fit(train) or load_state_dict first")
        return embeddings.to(self.weight.device, self.weight.dtype) @ self.weight + self.bias

    def predict_male_from_embedding(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) P(male) from embeddings of :attr:`embedder`: callers that already embedded the
        images with that verifier (e.g. PriDSS's SIM) skip a second pass through the network."""
        return torch.sigmoid(self.logits_from_embedding(embeddings))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) log-odds of male; differentiable with respect to the images."""
        if self.weight is None or self.bias is None:  # before embedding: fail fast
            raise PluginError(f"{self.name} is not fitted: call fit(train) or load_state_dict first")
        return self.logits_from_embedding(self.embedder.embed(images))

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))
