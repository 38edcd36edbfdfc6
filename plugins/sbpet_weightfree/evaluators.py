"""A HOG + logistic-regression gender classifier and a PCA-whitened-pixels verifier.

Both fit with scikit-learn on the training split and then run in torch, batched
and on the run's device, from the fitted coefficients.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sbpet_bench.api import FaceSet, GenderClassifier, Option, PluginError, Verifier

from .features import grayscale, hog


def _collect(train: FaceSet, size: int, fn, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for batch in train.batches(batch_size, size):
        keep = batch.genders >= 0
        feats.append(fn(batch.images[keep]).cpu().numpy())
        labels.append(batch.genders[keep].cpu().numpy())
    return np.concatenate(feats), np.concatenate(labels)


class HogLogisticGender(GenderClassifier):
    name = "hog-logreg"
    version = "1"
    description = "HOG features + logistic regression, fitted on the training split (weight-free fallback)"
    input_size = 64
    fits = True
    evaluator_role = "fallback"
    options = {"c": Option(0.1, "inverse regularisation strength of the logistic regression")}

    def fit(self, train: FaceSet) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x, y = _collect(train, self.input_size, hog)
        if len(np.unique(y)) < 2:
            raise PluginError("hog-logreg needs both genders in the training split")
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=float(self.opts["c"]), max_iter=2000).fit(scaler.transform(x), y)
        # Fold the scaler into the linear layer: w.(x - m)/s + b
        w = model.coef_[0] / scaler.scale_
        b = model.intercept_[0] - float(np.dot(w, scaler.mean_))
        self.load_state_dict({"weight": torch.tensor(w, dtype=torch.float32), "bias": torch.tensor([b], dtype=torch.float32)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.cpu(), "bias": self.bias.cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.weight = state["weight"].to(self.device)
        self.bias = state["bias"].to(self.device)

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(hog(images) @ self.weight + self.bias)


class PcaWhitenedPixels(Verifier):
    name = "pca-pixels"
    version = "1"
    description = "PCA-whitened grayscale pixels with cosine similarity, fitted on the training split (weight-free fallback)"
    input_size = 48
    fits = True
    evaluator_role = "fallback"
    options = {"components": Option(128, "number of principal components kept")}

    @staticmethod
    def _pixels(images: torch.Tensor) -> torch.Tensor:
        gray = grayscale(images).flatten(1)
        # Per-image contrast normalisation removes global lighting differences.
        return (gray - gray.mean(1, keepdim=True)) / (gray.std(1, keepdim=True) + 1e-6)

    def fit(self, train: FaceSet) -> None:
        from sklearn.decomposition import PCA

        x, _ = _collect(train, self.input_size, self._pixels)
        k = min(int(self.opts["components"]), x.shape[0] - 1, x.shape[1])
        if k < 2:
            raise PluginError("pca-pixels needs at least 3 training images")
        pca = PCA(n_components=k, whiten=True, random_state=0).fit(x)
        projection = pca.components_.T / np.sqrt(pca.explained_variance_)[None, :]
        self.load_state_dict({"mean": torch.tensor(pca.mean_, dtype=torch.float32),
                              "projection": torch.tensor(projection, dtype=torch.float32)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "projection": self.projection.cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.mean = state["mean"].to(self.device)
        self.projection = state["projection"].to(self.device)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize((self._pixels(images) - self.mean) @ self.projection, dim=1)
